#!/usr/bin/env bash
# Bazel wrapper around tools/guest/run_fs_guest.sh: boots the guest against
# the back-end given by --backend and reports the outcome as JUnit XML in
# $XML_OUTPUT_FILE, so a skip (no QEMU, no kernel, not root) is counted as
# skipped by tools/test.sh rather than passing silently.
#
# Usage (from BUILD.bazel): guest_boot_test.sh --backend c|rs|PATH
set -euo pipefail

readonly RUNFILES="${TEST_SRCDIR:-$(pwd)/..}/${TEST_WORKSPACE:-vhostmig}"

# Writes a one-testcase JUnit file: $1 = passed|failed|skipped, $2 = message.
write_xml() {
  [[ -n "${XML_OUTPUT_FILE:-}" ]] || return 0
  local name="${TEST_TARGET:-guest_boot}" body=""
  local msg="${2//&/&amp;}"
  msg="${msg//</&lt;}"
  msg="${msg//>/&gt;}"
  msg="${msg//\"/&quot;}"
  case "$1" in
    failed) body="<failure message=\"${msg}\"/>" ;;
    skipped) body="<skipped message=\"${msg}\"/>" ;;
  esac
  cat >"${XML_OUTPUT_FILE}" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="${name}" tests="1" failures="$([[ $1 == failed ]] && echo 1 || echo 0)" skipped="$([[ $1 == skipped ]] && echo 1 || echo 0)">
    <testcase name="${name}" status="run" result="$1">${body}</testcase>
  </testsuite>
</testsuites>
XML
}

work=""
keep_logs() {
  local dest="${TEST_UNDECLARED_OUTPUTS_DIR:-}"
  [[ -n "${dest}" && -n "${work}" ]] || return 0
  cp "${work}"/guest/*.log "${dest}/" 2>/dev/null || true
}

main() {
  # Peers live in the invoking user's cache, not in the test's $HOME.
  if [[ -z "${VHOSTMIG_PEERS_DIR:-}" ]]; then
    local home
    home="$(getent passwd "$(id -u)" | cut -d: -f6)"
    export VHOSTMIG_PEERS_DIR="${home:-/root}/.cache/vhostmig/peers"
  fi
  # A back-end given as a runfiles-relative path ($(location ...)).
  local args=("$@") i
  for ((i = 0; i < ${#args[@]}; i++)); do
    if [[ "${args[i]}" == --backend && -e "${args[i + 1]:-}" ]]; then
      args[i + 1]="$(realpath "${args[i + 1]}")"
    fi
  done
  # The work folder holds the vhost-user socket, whose path must fit in
  # sun_path (108 bytes): $TEST_TMPDIR is too deep, so use /tmp and keep the
  # logs as undeclared outputs.
  work="$(mktemp -d /tmp/vhostmig-guest.XXXXXX)"
  trap 'keep_logs; rm -rf "${work}"' EXIT
  local out status=0
  out="${work}/run_fs_guest.out"
  bash "${RUNFILES}/tools/guest/run_fs_guest.sh" "${args[@]}" \
    --file "${RUNFILES}/tests/guest_boot/xattr_tool_static:bin/xattr_tool" \
    --workdir "${work}/guest" 2>&1 | tee "${out}" ||
    status="${PIPESTATUS[0]}"
  case "${status}" in
    0) write_xml passed "" ;;
    77)
      write_xml skipped "$(sed -n 's/^SKIPPED: //p' "${out}" | head -n1)"
      status=0
      ;;
    *) write_xml failed "$(grep -E '^FAIL' "${out}" | head -n3 | tr '\n' ' ')" ;;
  esac
  return "${status}"
}

main "$@"
