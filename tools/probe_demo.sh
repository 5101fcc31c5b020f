#!/usr/bin/env bash
# Probes real vhost-user-fs back-ends (documented in the README next to its
# main job, tools/demo.sh): installs what is missing, builds the CLI, starts
# real vhost-user-fs back-ends on temporary directories and asks
# `vhostmig probe` what each one negotiates (features, protocol features,
# queues, DEVICE_STATE support):
#
#   1. Debian's C virtiofsd (always)
#   2. virtiofsd 1.13 from Debian 13 (when tools/peers/fetch.sh could get it)
#   3. our own //fs_device:vhost-user-fs (when it builds)
#
# Usage: tools/probe_demo.sh   (VHOSTMIG_BAZEL_STARTUP: Bazel startup options)
# Exits non-zero if the CLI does not build or the C virtiofsd probe fails.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_DIR
readonly PEERS_DIR="${VHOSTMIG_PEERS_DIR:-${HOME:-/root}/.cache/vhostmig/peers}"

say() { printf '\n== %s\n' "$*"; }

# Bazel startup options from the environment (e.g. --output_base=DIR).
# shellcheck disable=SC2206
BAZEL_STARTUP=(${VHOSTMIG_BAZEL_STARTUP:-})
bazel() { command bazel "${BAZEL_STARTUP[@]}" "$@"; }

work=""
backend_pid=""
cleanup() {
  stop_backend
  [[ -z "${work}" ]] || rm -rf "${work}"
}

stop_backend() {
  if [[ -n "${backend_pid}" ]] && kill -0 "${backend_pid}" 2>/dev/null; then
    kill "${backend_pid}" 2>/dev/null || true
    wait "${backend_pid}" 2>/dev/null || true
  fi
  backend_pid=""
}

# probe NAME COMMAND...: starts the back-end (the socket path is the
# placeholder @SOCKET@, the shared directory @DIR@), probes it, stops it.
probe() {
  local name="$1"
  shift
  local dir="${work}/${name}" socket="${work}/${name}.sock"
  mkdir -p "${dir}"
  local cmd=("${@//@SOCKET@/${socket}}")
  cmd=("${cmd[@]//@DIR@/${dir}}")
  say "${name}: ${cmd[*]}"
  "${cmd[@]}" >"${work}/${name}.log" 2>&1 &
  backend_pid=$!
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -S "${socket}" ]] && break
    sleep 0.1
  done
  if [[ ! -S "${socket}" ]]; then
    echo "${name} did not create ${socket}:"
    cat "${work}/${name}.log"
    stop_backend
    return 1
  fi
  local status=0
  "${vhostmig}" probe --socket "${socket}" || status=$?
  stop_backend
  return "${status}"
}

main() {
  cd "${REPO_DIR}"
  say "installing what is missing (tools/setup.sh)"
  bash tools/setup.sh
  bash tools/peers/fetch.sh virtiofsd-c virtiofsd-rs ||
    echo "(virtiofsd 1.13 unavailable; probing the C virtiofsd only)"

  say "building //migration:vhostmig"
  bazel build //migration:vhostmig
  local bin label
  bin="$(bazel info bazel-bin 2>/dev/null)"
  # //migration:vhostmig may be an alias; the binary sits at its target's path.
  label="$(bazel query --output=label 'labels(actual, //migration:vhostmig)' 2>/dev/null |
    head -n1 || true)"
  label="${label:-//migration:vhostmig}"
  label="${label#//}"
  vhostmig="${bin}/${label%%:*}/${label##*:}"
  local ours=""
  if bazel build //fs_device:vhost-user-fs 2>/dev/null; then
    ours="${bin}/fs_device/vhost-user-fs"
  else
    echo "(//fs_device:vhost-user-fs does not build yet; skipping it)"
  fi

  work="$(mktemp -d)"
  trap cleanup EXIT
  probe c-virtiofsd /usr/lib/qemu/virtiofsd --socket-path=@SOCKET@ \
    -o source=@DIR@ -o cache=auto

  local status=0
  if [[ -x "${PEERS_DIR}/virtiofsd-rs" ]]; then
    probe virtiofsd-1.13 "${PEERS_DIR}/virtiofsd-rs" --socket-path=@SOCKET@ \
      --shared-dir=@DIR@ || status=1
  fi
  if [[ -n "${ours}" ]]; then
    probe vhost-user-fs "${ours}" --socket-path=@SOCKET@ --shared-dir=@DIR@ \
      --tag=vhostmig || status=1
  fi
  return "${status}"
}

main "$@"
