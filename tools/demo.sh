#!/usr/bin/env bash
# The README's main job: installs what is missing (tools/setup.sh), builds
# the CLI, the agent and our vhost-user-fs daemon, then runs `vhostmig demo`:
# two agents on loopback, a synthetic guest with a running file workload
# migrated from one to the other with a live progress bar, a cancel drill,
# and the way back, every step verified. Ends with a summary table.
#
# Usage: tools/demo.sh [vhostmig demo flags, e.g. --json or
#                       --backend-cmd '/path/virtiofsd --socket-path={sock} --shared-dir={dir}']
#   VHOSTMIG_BAZEL_STARTUP: Bazel startup options (e.g. --output_base=DIR)
# Exit status: vhostmig demo's (0 = everything verified).
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_DIR

# shellcheck disable=SC2206  # word splitting of the user's options is wanted
BAZEL_STARTUP=(${VHOSTMIG_BAZEL_STARTUP:-})
bazel() { command bazel "${BAZEL_STARTUP[@]}" "$@"; }

main() {
  cd "${REPO_DIR}"
  printf '\n== installing what is missing (tools/setup.sh)\n' >&2
  bash tools/setup.sh
  printf '\n== building the CLI, the agent and the fs daemon\n' >&2
  bazel build //migration:vhostmig //migration:vhostmig-agent \
    //fs_device:vhost-user-fs
  local bin
  bin="$(bazel info bazel-bin 2>/dev/null)"
  printf '\n== vhostmig demo\n' >&2
  # The real binaries (not the aliases); vhostmig finds the agent and the
  # daemon next to it in bazel-bin.
  exec "${bin}/migration/cli/vhostmig" demo \
    --agent-binary="${bin}/migration/agent/vhostmig-agent" \
    --fs-backend="${bin}/fs_device/vhost-user-fs" "$@"
}

main "$@"
