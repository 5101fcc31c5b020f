#!/usr/bin/env bash
# Builds the test guest's initramfs: busybox-static, the kernel modules
# prepared by tools/peers/fetch.sh (in load order), tools/guest/init.sh as
# /init, a workload script as /workload.sh and any extra files.
#
# Usage: build_initramfs.sh --modules DIR --workload FILE --out FILE.cpio.gz
#                           [--file SRC:DEST]...
#   --modules   folder with *.ko and load-order (peers.env: GUEST_MODULES)
#   --workload  busybox sh script run as `sh /workload.sh /mnt`
#   --file      copies SRC to DEST inside the image (e.g. a static helper)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR

usage() {
  sed -n '/^# Usage/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

main() {
  local modules="" workload="" out="" extras=()
  while (($#)); do
    case "$1" in
      --modules) modules="$2"; shift 2 ;;
      --workload) workload="$2"; shift 2 ;;
      --out) out="$2"; shift 2 ;;
      --file) extras+=("$2"); shift 2 ;;
      *) usage ;;
    esac
  done
  [[ -n "${modules}" && -n "${workload}" && -n "${out}" ]] || usage
  local busybox
  busybox="$(command -v busybox || true)"
  if [[ -z "${busybox}" ]] || ! file_is_static "${busybox}"; then
    busybox=/bin/busybox
  fi
  [[ -x "${busybox}" ]] || { echo "build_initramfs: busybox-static missing" >&2; exit 1; }
  [[ -f "${modules}/load-order" ]] || { echo "build_initramfs: ${modules}/load-order missing" >&2; exit 1; }

  root=""  # global: the EXIT trap needs it after main returns
  root="$(mktemp -d)"
  trap 'rm -rf "${root}"' EXIT
  mkdir -p "${root}"/{bin,dev,proc,sys,tmp,mnt,lib/modules}
  cp "${busybox}" "${root}/bin/busybox"
  ln -s busybox "${root}/bin/sh"
  cp "${SCRIPT_DIR}/init.sh" "${root}/init"
  cp "${workload}" "${root}/workload.sh"
  chmod 755 "${root}/init" "${root}/workload.sh"
  cp "${modules}/load-order" "${root}/lib/modules/"
  while IFS= read -r m; do
    cp "${modules}/${m}.ko" "${root}/lib/modules/"
  done <"${modules}/load-order"
  for spec in "${extras[@]}"; do
    local src="${spec%%:*}" dest="${spec#*:}"
    mkdir -p "${root}/$(dirname "${dest}")"
    cp -L "${src}" "${root}/${dest}"
  done
  # No device nodes: /init mounts devtmpfs and reopens /dev/console itself,
  # so building the image needs no root.
  mkdir -p "$(dirname "${out}")"
  (cd "${root}" && find . -print | LC_ALL=C sort |
    "${busybox}" cpio -o -H newc 2>/dev/null) | gzip -1 >"${out}.tmp"
  mv "${out}.tmp" "${out}"
}

# busybox-static installs /bin/busybox; a dynamically linked busybox on PATH
# would not run inside the guest.
file_is_static() {
  ! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'INTERP'
}

main "$@"
