#!/usr/bin/env bash
# Runs a real Linux guest against a virtio-fs back-end, end to end:
# starts the back-end on a fresh shared directory, builds the initramfs with
# the workload, boots QEMU (tools/guest/run_qemu.sh), then runs the host-side
# check over the shared directory.
#
# Usage: run_fs_guest.sh --backend c|rs|PATH [--workload FILE]
#                        [--host-check FILE] [--file SRC:DEST]...
#                        [--workdir DIR] [--accel auto|kvm|tcg] [--timeout S]
#   --backend  c:    the C virtiofsd (qemu-system-common)
#              rs:   virtiofsd 1.13 from Debian 13 (tools/peers/fetch.sh)
#              PATH: our daemon (//fs_device:vhost-user-fs), run as
#                    PATH --socket-path=S --shared-dir=D --tag=T
#                    --cache=auto --xattr
#   --workload   guest script (default tests/guest_boot/fs_workload.sh)
#   --host-check host script given the shared dir (default
#                tests/guest_boot/fs_host_check.sh; "none" to skip)
#
# Peers come from $VHOSTMIG_PEERS_DIR/peers.env (tools/peers/fetch.sh).
# Exit status: 0 pass, 1 fail, 77 skipped (a peer is missing; the reason is
# printed on a line starting with "SKIPPED:").
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
REPO_DIR="$(cd "${SCRIPT_DIR}/../.." && pwd)"
readonly REPO_DIR
readonly PEERS_DIR="${VHOSTMIG_PEERS_DIR:-${HOME:-/root}/.cache/vhostmig/peers}"
readonly TAG=vhostmig

log() { printf 'run_fs_guest: %s\n' "$*" >&2; }
skip() {
  echo "SKIPPED: $*"
  exit 77
}

usage() {
  sed -n '/^# Usage/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

backend_pid=""
cleanup() {
  if [[ -n "${backend_pid}" ]] && kill -0 "${backend_pid}" 2>/dev/null; then
    kill "${backend_pid}" 2>/dev/null || true
    wait "${backend_pid}" 2>/dev/null || true
  fi
}

# Starts the back-end in the background, logging to $1; sets backend_pid.
start_backend() {
  local log_file="$1" cmd=()
  case "${backend}" in
    c)
      [[ -n "${VIRTIOFSD_C:-}" && -x "${VIRTIOFSD_C}" ]] ||
        skip "C virtiofsd not available (tools/peers/fetch.sh virtiofsd-c)"
      cmd=("${VIRTIOFSD_C}" "--socket-path=${socket}" -o "source=${shared}"
        -o cache=auto -o xattr)
      ;;
    rs)
      [[ -n "${VIRTIOFSD_RS:-}" && -x "${VIRTIOFSD_RS}" ]] ||
        skip "virtiofsd 1.13 not available (tools/peers/fetch.sh virtiofsd-rs)"
      cmd=("${VIRTIOFSD_RS}" "--socket-path=${socket}" "--shared-dir=${shared}"
        --cache=auto --xattr)
      ;;
    *)
      [[ -x "${backend}" ]] || skip "back-end ${backend} not built"
      # --cache=auto --xattr: the options the peers above run with.
      cmd=("${backend}" "--socket-path=${socket}" "--shared-dir=${shared}"
        "--tag=${TAG}" --cache=auto --xattr)
      ;;
  esac
  log "back-end: ${cmd[*]}"
  "${cmd[@]}" >"${log_file}" 2>&1 &
  backend_pid=$!
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -S "${socket}" ]] && return 0
    kill -0 "${backend_pid}" 2>/dev/null || break
    sleep 0.1
  done
  log "back-end did not create ${socket}; its log:"
  cat "${log_file}" >&2
  return 1
}

main() {
  backend="" 
  local workload="${REPO_DIR}/tests/guest_boot/fs_workload.sh"
  local host_check="${REPO_DIR}/tests/guest_boot/fs_host_check.sh"
  local workdir="" accel=auto timeout_s=600 files=()
  while (($#)); do
    case "$1" in
      --backend) backend="$2"; shift 2 ;;
      --workload) workload="$2"; shift 2 ;;
      --host-check) host_check="$2"; shift 2 ;;
      --file) files+=(--file "$2"); shift 2 ;;
      --workdir) workdir="$2"; shift 2 ;;
      --accel) accel="$2"; shift 2 ;;
      --timeout) timeout_s="$2"; shift 2 ;;
      *) usage ;;
    esac
  done
  [[ -n "${backend}" ]] || usage
  ((EUID == 0)) || skip "needs root (virtiofsd sandboxing, shared guest memory)"
  command -v qemu-system-x86_64 >/dev/null ||
    skip "qemu-system-x86_64 not installed (tools/setup.sh)"
  [[ -f "${PEERS_DIR}/peers.env" ]] ||
    skip "no peers in ${PEERS_DIR} (run tools/peers/fetch.sh)"
  # shellcheck source=/dev/null
  source "${PEERS_DIR}/peers.env"
  [[ -n "${GUEST_KERNEL:-}" && -f "${GUEST_KERNEL}" ]] ||
    skip "no guest kernel (tools/peers/fetch.sh kernel)"

  if [[ -z "${workdir}" ]]; then
    workdir="$(mktemp -d)"
  fi
  mkdir -p "${workdir}"
  shared="${workdir}/shared"
  socket="${workdir}/vhost-fs.sock"
  rm -rf "${shared}" "${socket}"
  mkdir -p "${shared}"
  trap cleanup EXIT

  "${SCRIPT_DIR}/build_initramfs.sh" --modules "${GUEST_MODULES}" \
    --workload "${workload}" --out "${workdir}/initrd.gz" "${files[@]}"
  start_backend "${workdir}/backend.log"

  local status=0 summary
  summary="$("${SCRIPT_DIR}/run_qemu.sh" --kernel "${GUEST_KERNEL}" \
    --initrd "${workdir}/initrd.gz" --log "${workdir}/guest.log" \
    --socket "${socket}" --tag "${TAG}" --accel "${accel}" \
    --timeout "${timeout_s}")" || status=$?
  echo "guest: ${summary}"
  # The guest's own step lines, then the back-end's fate.
  grep -aE '^(ok|FAIL|SKIP) |^workload:|^vhostmig-init:' "${workdir}/guest.log" |
    tr -d '\r' || true

  # A back-end exits once QEMU disconnects; give it a moment, then stop it.
  local i
  for ((i = 0; i < 50; i++)); do
    kill -0 "${backend_pid}" 2>/dev/null || break
    sleep 0.1
  done
  cleanup
  if ((status != 0)); then
    echo "--- guest console (tail) ---"
    tail -n 40 "${workdir}/guest.log" | tr -d '\r'
    echo "--- back-end log (tail) ---"
    tail -n 20 "${workdir}/backend.log"
    echo "FAIL: guest run (status ${status})"
    return 1
  fi
  if [[ "${host_check}" != none ]]; then
    bash "${host_check}" "${shared}" || {
      echo "FAIL: host-side check"
      return 1
    }
  fi
  echo "PASS: ${backend} back-end, ${summary}"
}

main "$@"
