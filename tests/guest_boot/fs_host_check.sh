#!/usr/bin/env bash
# Host-side half of the guest virtio-fs workload (fs_workload.sh): after the
# guest powered off, checks that what it wrote through the back-end is what
# the shared directory really holds.
#
# Usage: fs_host_check.sh SHARED_DIR
# Prints `ok`/`FAIL` per check; exits non-zero if any check failed.
set -euo pipefail

readonly W="$1/work"
failures=0

expect() {
  local step="$1" want="$2" got="$3"
  if [[ "${want}" == "${got}" ]]; then
    echo "ok host-${step}"
  else
    echo "FAIL host-${step}: want '${want}', got '${got}'"
    failures=$((failures + 1))
  fi
}

main() {
  if [[ ! -d "${W}" ]]; then
    echo "FAIL host: ${W} missing (the workload never ran)"
    return 1
  fi
  expect guest-failures 0 "$(cat "${W}/guest-failures" 2>/dev/null || echo missing)"
  expect hello "hello from the guest" "$(head -n1 "${W}/hello.txt")"
  expect big-md5 "$(cat "${W}/big.md5")" "$(md5sum <"${W}/big.bin" | cut -d' ' -f1)"
  expect rename-old-gone no "$([[ -e "${W}/before" || -e "${W}/after" ]] && echo yes || echo no)"
  expect rename moving "$(cat "${W}/sub/moved")"
  expect readdir-2000 2000 "$(find "${W}/many" -mindepth 1 -maxdepth 1 | wc -l)"
  expect unlink no "$([[ -e "${W}/unlink-me" || -e "${W}/open-unlinked" ]] && echo yes || echo no)"
  expect rmdir "a" "$(cd "${W}" && find a | tr '\n' ' ' | sed 's/ $//')"
  expect symlink hello.txt "$(readlink "${W}/link")"
  expect hardlink "2 $(stat -c %i "${W}/hello.txt")" "$(stat -c '%h %i' "${W}/hard")"
  expect truncate 5000 "$(stat -c %s "${W}/trunc")"
  expect truncate-zero-fill 0 "$(tail -c 4000 "${W}/trunc" | tr -d '\0' | wc -c)"
  expect chmod 600 "$(stat -c %a "${W}/mode")"
  if [[ -e "${W}/xattr.set" ]]; then
    expect xattr guest-value "$(python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], "user.vhostmig").decode())' "${W}/xattr" 2>&1)"
  else
    echo "SKIP host-xattr: the guest did not set one"
  fi
  expect parallel 400 "$(find "${W}/parallel" -type f | wc -l)"
  expect parallel-content "job 4 file 99" "$(cat "${W}/parallel/j4-99")"
  echo "host check: ${failures} failure(s)"
  ((failures == 0))
}

main
