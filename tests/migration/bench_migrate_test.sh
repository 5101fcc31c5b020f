#!/usr/bin/env bash
# `vhostmig bench migrate` still runs and verifies its migrations: one small
# run per back-end (virtiofsd 1.13 too when the peers are there and we are
# root). Only that every run verified is checked; figures are not (the
# suite asserts no timings).
set -euo pipefail
out="${TEST_TMPDIR:-/tmp}/bench_migrate.json"
peers=(--no-virtiofsd)
expect=1
peers_dir="${VHOSTMIG_PEERS_DIR:-$(getent passwd "$(id -u)" | cut -d: -f6)/.cache/vhostmig/peers}"
if [[ "$(id -u)" == 0 ]] && grep -qs '^VIRTIOFSD_RS=' "${peers_dir}/peers.env"; then
  peers=()
  expect=2
else
  echo "note: virtiofsd 1.13 not available here (needs root and tools/peers/fetch.sh); ours only"
fi
status=0
timeout 120 migration/cli/vhostmig bench migrate --json --runs=1 \
  --guest-mib=16 --inodes=50 --daemon="${PWD}/fs_device/vhost-user-fs" \
  "${peers[@]}" >"${out}" || status=$?
cat "${out}"
if ((status != 0)); then
  echo "FAIL: vhostmig bench migrate exited ${status}"
  exit 1
fi
ok="$(grep -o '"runs_ok": 1' "${out}" | wc -l)"
if ((ok != expect)); then
  echo "FAIL: expected ${expect} back-end(s) with a verified run, got ${ok}"
  exit 1
fi
echo "PASS: ${ok} back-end(s) migrated and verified"
