#!/usr/bin/env bash
# `vhostmig demo --json` end to end (the README's main job), bounded: two
# agents, a guest migrated there and back, a cancel drill; the JSON summary
# must report every step verified, and the exit status must agree.
set -euo pipefail
out="${TEST_TMPDIR:-/tmp}/demo.json"
status=0
timeout 240 migration/cli/vhostmig demo --json \
  --agent-binary="${PWD}/migration/agent/vhostmig-agent" \
  --fs-backend="${PWD}/fs_device/vhost-user-fs" >"${out}" || status=$?
cat "${out}"
if ((status == 124)); then
  echo "FAIL: vhostmig demo did not finish within 240 s"
  exit 1
fi
if ((status != 0)); then
  echo "FAIL: vhostmig demo exited ${status}"
  exit 1
fi
grep -q '"verified":true' "${out}" || {
  echo "FAIL: the summary does not say verified"
  exit 1
}
steps="$(grep -o '"ok":true' "${out}" | wc -l)"
if ((steps != 4)); then
  echo "FAIL: expected 4 verified steps, got ${steps}"
  exit 1
fi
echo "PASS: demo verified (${steps} steps)"
