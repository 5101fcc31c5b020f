#!/usr/bin/env bash
# Installs everything vhostmig needs on Debian 12, from Debian's archive only:
# the offline Bazel, the system libraries the build links against, the
# toolchains for sanitizers and fuzzing, and the real peers' packages (QEMU,
# the C virtiofsd, busybox for guest initramfs images).
#
# Idempotent and quick when nothing is missing: dpkg-query decides, and
# `apt-get update` runs only when a package has to be installed. Needs root
# (or sudo without a password); non-interactive.
#
# Usage: tools/setup.sh
set -euo pipefail

readonly PACKAGES=(
  # Build: Bazel 4.2 from Debian, with the rules it insists on.
  bazel-bootstrap
  bazel-rules-java
  g++
  binutils
  # Libraries (see third_party/BUILD.bazel).
  libabsl-dev
  libprotobuf-dev
  protobuf-compiler
  libgrpc++-dev
  protobuf-compiler-grpc
  liburing-dev
  libgtest-dev
  libgmock-dev
  libbenchmark-dev
  # Fuzzing (libFuzzer) and formatting.
  clang
  libclang-rt-14-dev
  clang-format
  # Real peers: QEMU and the C virtiofsd, the guest's userland, test hosts.
  qemu-system-x86
  qemu-system-common
  busybox-static
  iproute2
  # Agent TLS tests generate certificates at test time.
  openssl
  # Unpacking the Debian kernel and the test runner's report.
  xz-utils
  zstd
  python3
)

log() { printf 'setup: %s\n' "$*" >&2; }

# Prints the packages from $@ that are not fully installed.
missing_packages() {
  local pkg status
  for pkg in "$@"; do
    status="$(dpkg-query -W -f='${db:Status-Abbrev}' "${pkg}" 2>/dev/null || true)"
    [[ "${status}" == "ii " ]] || echo "${pkg}"
  done
}

main() {
  local missing sudo=()
  mapfile -t missing < <(missing_packages "${PACKAGES[@]}")
  if ((${#missing[@]} == 0)); then
    log "all ${#PACKAGES[@]} packages present"
    return 0
  fi
  if ((EUID != 0)); then
    sudo=(sudo -n)
  fi
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get -q update
  "${sudo[@]}" apt-get -q install -y --no-install-recommends "${missing[@]}"
  mapfile -t missing < <(missing_packages "${PACKAGES[@]}")
  if ((${#missing[@]})); then
    log "still missing after install: ${missing[*]}"
    return 1
  fi
  log "done"
}

main "$@"
