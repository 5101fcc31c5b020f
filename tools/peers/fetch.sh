#!/usr/bin/env bash
# Provides the real peers the integration and guest-boot tests run against,
# all from Debian's archive and nothing built from source (see DESIGN.md,
# "Real peers"):
#
#   virtiofsd-c    the C virtiofsd shipped in bookworm's qemu-system-common
#   virtiofsd-rs   virtiofsd 1.13 (Rust) from Debian 13 "trixie", run through
#                  trixie's own dynamic loader and libraries
#   kernel         Debian 12's stock kernel: vmlinuz, the uncompressed vmlinux
#                  (PVH entry, boots ~2x faster under TCG) and the virtio/fuse
#                  modules, decompressed and listed in load order
#
# Usage: tools/peers/fetch.sh [all|virtiofsd-c|virtiofsd-rs|kernel]...
#
# Results land in $VHOSTMIG_PEERS_DIR (default ~/.cache/vhostmig/peers), which
# survives between runs on one machine and is rebuilt on a new one. Each peer is
# done once: a stamp file records the package version it was built from. The
# file peers.env there lists what is available, as shell assignments:
#   VIRTIOFSD_C=...  VIRTIOFSD_RS=...  GUEST_KERNEL=...  GUEST_VMLINUZ=...
#   GUEST_MODULES=... (directory holding *.ko and load-order)
# A peer that cannot be had is reported and left out of peers.env; the exit
# status is non-zero only if a requested peer failed.
set -euo pipefail

readonly PEERS_DIR="${VHOSTMIG_PEERS_DIR:-${HOME:-/root}/.cache/vhostmig/peers}"
readonly TRIXIE_PACKAGES=(virtiofsd libc6 libgcc-s1 libcap-ng0 libseccomp2)
# Modules the guest needs, by module name; dependencies are added
# automatically from each module's own "depends=" field.
readonly GUEST_MODULES=(virtio_pci virtio_mmio fuse virtiofs)

log() { printf 'peers: %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------
# Temporary apt configuration for Debian 13, pointing at the same mirrors the
# machine itself uses.

# Prints the URIs of the machine's configured Debian archive (the entries whose
# suite is the machine's release codename), one per line, from both the
# deb822 *.sources files and the legacy one-line *.list format.
machine_debian_uris() {
  local codename files
  # shellcheck disable=SC1091
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
  shopt -s nullglob
  files=(/etc/apt/sources.list.d/*.sources)
  if ((${#files[@]})); then
    awk -v want="${codename}" '
      function flush() {
        if (uris != "" && (" " suites " ") ~ (" " want " ")) print uris
        uris = ""; suites = ""
      }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]*#/ { next }
      tolower($1) == "uris:" { $1 = ""; uris = $0 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      END { flush() }
    ' "${files[@]}" | tr ' ' '\n'
  fi
  files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
  for f in "${files[@]}"; do
    [[ -f "${f}" ]] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -E 's/\[[^]]*\]//' "${f}" |
      awk -v want="${codename}" '$1 == "deb" && $3 == want { print $2 }'
  done
  shopt -u nullglob
}

# Sets up $APT_TMP with a trixie-only apt configuration and prints the apt-get
# option list (one per line) that selects it.
trixie_apt_setup() {
  local uris keyring
  mapfile -t uris < <(machine_debian_uris | sed '/^$/d' | sort -u)
  if ((${#uris[@]} == 0)); then
    log "no Debian archive found in /etc/apt/sources.list{,.d}"
    return 1
  fi
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  mkdir -p "${APT_TMP}/lists/partial" "${APT_TMP}/cache/archives/partial" \
    "${APT_TMP}/parts" "${APT_TMP}/prefs"
  : >"${APT_TMP}/sources.list"
  for uri in "${uris[@]}"; do
    echo "deb [signed-by=${keyring}] ${uri} trixie main" >>"${APT_TMP}/sources.list"
  done
  cat >"${APT_TMP}/apt.conf" <<EOF
Dir::State::Lists "${APT_TMP}/lists";
Dir::State::status "${APT_TMP}/status";
Dir::Cache "${APT_TMP}/cache";
Dir::Etc::SourceList "${APT_TMP}/sources.list";
Dir::Etc::SourceParts "${APT_TMP}/parts";
Dir::Etc::PreferencesParts "${APT_TMP}/prefs";
APT::Get::List-Cleanup "false";
Acquire::Languages "none";
EOF
  : >"${APT_TMP}/status"
}

trixie_apt() { APT_CONFIG="${APT_TMP}/apt.conf" apt-get -q "$@"; }

# ---------------------------------------------------------------------------
# (a) The C virtiofsd: a plain link to the packaged binary.

fetch_virtiofsd_c() {
  local bin=/usr/lib/qemu/virtiofsd
  if [[ ! -x "${bin}" ]]; then
    log "virtiofsd-c: ${bin} missing (install qemu-system-common: tools/setup.sh)"
    return 1
  fi
  ln -sfn "${bin}" "${PEERS_DIR}/virtiofsd-c"
  log "virtiofsd-c: ${bin}"
}

# ---------------------------------------------------------------------------
# (b) virtiofsd 1.13 from trixie, with trixie's loader and libraries.

fetch_virtiofsd_rs() {
  local dir="${PEERS_DIR}/virtiofsd-rs.d" stamp version
  stamp="${dir}/.stamp"
  if [[ -f "${stamp}" && -x "${PEERS_DIR}/virtiofsd-rs" ]] &&
    "${PEERS_DIR}/virtiofsd-rs" --version >/dev/null 2>&1; then
    log "virtiofsd-rs: cached ($(cat "${stamp}"))"
    return 0
  fi
  trixie_apt_setup
  log "virtiofsd-rs: reading Debian 13 package index"
  trixie_apt update >"${APT_TMP}/update.log" 2>&1 || {
    cat "${APT_TMP}/update.log" >&2
    return 1
  }
  rm -rf "${dir}.new"
  mkdir -p "${dir}.new/debs" "${dir}.new/root"
  log "virtiofsd-rs: downloading ${TRIXIE_PACKAGES[*]}"
  (cd "${dir}.new/debs" && trixie_apt download "${TRIXIE_PACKAGES[@]}") \
    >"${APT_TMP}/download.log" 2>&1 || {
    cat "${APT_TMP}/download.log" >&2
    return 1
  }
  for deb in "${dir}.new/debs"/*.deb; do
    dpkg -x "${deb}" "${dir}.new/root"
  done
  version="$(dpkg-deb -f "${dir}.new/debs"/virtiofsd_*.deb Version)"
  rm -rf "${dir}.new/debs"
  rm -rf "${dir}"
  mv "${dir}.new" "${dir}"

  # The wrapper runs the binary through trixie's loader, so the machine's
  # older glibc is never mixed in. Paths are resolved at run time relative to
  # the wrapper, so the cache folder may move.
  cat >"${PEERS_DIR}/virtiofsd-rs" <<'EOF'
#!/bin/sh
# virtiofsd (Rust) from Debian 13, run with Debian 13's loader and libraries.
root="$(dirname "$(readlink -f "$0")")/virtiofsd-rs.d/root"
libs="$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu"
exec "$root/@LOADER@" --library-path "$libs" "$root/@BINARY@" "$@"
EOF
  # Debian 13 is merged-/usr: the loader lives in usr/lib64 there.
  local loader binary
  loader="$(cd "${dir}/root" && find . -name ld-linux-x86-64.so.2 | sed 's|^\./||' | head -n1)"
  binary="$(cd "${dir}/root" && find . -name virtiofsd -type f | sed 's|^\./||' | head -n1)"
  if [[ -z "${loader}" || -z "${binary}" ]]; then
    log "virtiofsd-rs: loader or binary missing from the unpacked packages"
    return 1
  fi
  sed -i -e "s|@LOADER@|${loader}|" -e "s|@BINARY@|${binary}|" "${PEERS_DIR}/virtiofsd-rs"
  chmod +x "${PEERS_DIR}/virtiofsd-rs"
  local got
  got="$("${PEERS_DIR}/virtiofsd-rs" --version 2>&1 | head -n1)"
  if [[ "${got}" != *" 1.13."* ]]; then
    log "virtiofsd-rs: expected version 1.13.x, got: ${got}"
    return 1
  fi
  "${PEERS_DIR}/virtiofsd-rs" --print-capabilities >/dev/null
  echo "${version}" >"${stamp}"
  log "virtiofsd-rs: ${got} (package ${version})"
}

# ---------------------------------------------------------------------------
# (c) The guest kernel.

# Prints the byte offset and length of the compressed payload in a bzImage,
# from its setup header (Documentation/x86/boot.rst: setup_sects at 0x1f1,
# payload_offset at 0x248 and payload_length at 0x24c, relative to the start
# of the protected-mode code).
bzimage_payload() {
  local image="$1" sects off len
  u8() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
  u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
  sects="$(u8 "${image}" $((0x1f1)))"
  ((sects == 0)) && sects=4
  off="$(u32 "${image}" $((0x248)))"
  len="$(u32 "${image}" $((0x24c)))"
  echo "$(((sects + 1) * 512 + off)) ${len}"
}

# Writes the uncompressed ELF vmlinux from a bzImage; fails unless the result
# is an ELF with a PVH entry note (Xen ELF note 18, XEN_ELFNOTE_PHYS32_ENTRY),
# which is what lets QEMU boot it directly.
extract_vmlinux() {
  local image="$1" out="$2" off len magic
  read -r off len < <(bzimage_payload "${image}")
  magic="$(od -An -tx1 -j "${off}" -N4 "${image}" | tr -d ' \n')"
  local decompress
  case "${magic}" in
    fd377a58) decompress=(xz -dc) ;;
    28b52ffd) decompress=(zstd -dcq) ;;
    1f8b08*) decompress=(gzip -dc) ;;
    5d000000 | 5d00*) decompress=(xz --format=lzma -dc) ;;
    *)
      log "kernel: unknown bzImage payload compression (magic ${magic})"
      return 1
      ;;
  esac
  # The payload ends with the uncompressed size (u32, mkpiggy's trailer);
  # the decompressor may complain about it, the size check below decides.
  tail -c +"$((off + 1))" "${image}" | head -c "${len}" |
    "${decompress[@]}" >"${out}.tmp" 2>/dev/null || true
  local want_size
  want_size="$(od -An -tu4 -j "$((off + len - 4))" -N4 "${image}" | tr -d ' ')"
  if [[ "$(head -c4 "${out}.tmp" | od -An -tx1 | tr -d ' \n')" != "7f454c46" ||
    "$(stat -c %s "${out}.tmp")" != "${want_size}" ]]; then
    log "kernel: payload did not decompress to a complete ELF"
    rm -f "${out}.tmp"
    return 1
  fi
  if ! has_pvh_note "${out}.tmp"; then
    log "kernel: vmlinux has no PVH entry note; QEMU cannot boot it directly"
    rm -f "${out}.tmp"
    return 1
  fi
  mv "${out}.tmp" "${out}"
}

# True when the ELF file carries a Xen note of type 18 (PHYS32_ENTRY), the
# PVH entry point. readelf comes with binutils, which the compiler needs.
has_pvh_note() {
  readelf -n "$1" 2>/dev/null | grep -Eq '^[[:space:]]+Xen[[:space:]]+0x[0-9a-f]+[[:space:]]+.*(0x00000012|PHYS32)'
}

# Decompresses one module file (.ko, .ko.xz, .ko.zst, .ko.gz) to $2.
unpack_module() {
  case "$1" in
    *.ko.xz) xz -dc "$1" >"$2" ;;
    *.ko.zst) zstd -dcq "$1" >"$2" ;;
    *.ko.gz) gzip -dc "$1" >"$2" ;;
    *) cp "$1" "$2" ;;
  esac
}

# Prints the versioned kernel package linux-image-amd64 depends on.
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# The machine's package lists may be missing or older than the archive (a
# 404 on download); refresh them once.
refresh_apt_lists() {
  [[ -z "${APT_REFRESHED:-}" ]] || return 1
  APT_REFRESHED=1
  log "refreshing the machine's package lists"
  local sudo=()
  ((EUID == 0)) || sudo=(sudo -n)
  "${sudo[@]}" apt-get -q update >"${APT_TMP}/refresh.log" 2>&1 || {
    cat "${APT_TMP}/refresh.log" >&2
    return 1
  }
}

fetch_kernel() {
  local dir="${PEERS_DIR}/kernel" pkg version stamp
  pkg="$(kernel_package)"
  if [[ -z "${pkg}" ]] && refresh_apt_lists; then
    pkg="$(kernel_package)"
  fi
  if [[ -z "${pkg}" ]]; then
    log "kernel: linux-image-amd64 unknown to apt"
    return 1
  fi
  version="$(apt-cache policy "${pkg}" | awk '/Candidate:/ { print $2 }')"
  stamp="${dir}/.stamp"
  if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${pkg} ${version}" ]]; then
    log "kernel: cached (${pkg} ${version})"
    return 0
  fi
  rm -rf "${dir}.new"
  mkdir -p "${dir}.new/modules"
  log "kernel: downloading ${pkg} ${version}"
  if ! (cd "${APT_TMP}" && apt-get -q download "${pkg}") >"${APT_TMP}/kernel.log" 2>&1; then
    if refresh_apt_lists; then
      # The lists moved on: the current kernel may be a newer package.
      pkg="$(kernel_package)"
      version="$(apt-cache policy "${pkg}" | awk '/Candidate:/ { print $2 }')"
      log "kernel: retrying with ${pkg} ${version}"
    fi
    (cd "${APT_TMP}" && apt-get -q download "${pkg}") >"${APT_TMP}/kernel.log" 2>&1 || {
      cat "${APT_TMP}/kernel.log" >&2
      return 1
    }
  fi
  local x="${APT_TMP}/kernel-root"
  dpkg -x "${APT_TMP}/${pkg}"_*.deb "${x}"
  local kver
  kver="$(basename "$(find "${x}/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")"
  cp "${x}/boot/vmlinuz-${kver}" "${dir}.new/vmlinuz"
  if extract_vmlinux "${dir}.new/vmlinuz" "${dir}.new/vmlinux"; then
    log "kernel: extracted vmlinux with PVH entry"
  else
    log "kernel: no usable vmlinux; guests will boot vmlinuz (slower under TCG)"
  fi

  # Resolve the module list depth-first so every module follows the modules
  # it depends on (the order modules.dep implies); built-ins are skipped.
  local mroot="${x}/lib/modules/${kver}"
  local -A path_of=() done_=()
  while IFS= read -r f; do
    local name="${f##*/}"
    name="${name%%.ko*}"
    path_of["${name//-/_}"]="${f}"
  done < <(find "${mroot}/kernel" -name '*.ko*')
  local order=()
  visit() {
    local m="${1//-/_}" dep deps
    [[ -n "${done_[${m}]:-}" ]] && return 0
    done_["${m}"]=1
    if [[ -z "${path_of[${m}]:-}" ]]; then
      if grep -Eq "/${m//_/[-_]}\.ko\$" "${mroot}/modules.builtin"; then
        return 0
      fi
      log "kernel: module ${m} is neither a module nor built in"
      return 1
    fi
    unpack_module "${path_of[${m}]}" "${dir}.new/modules/${m}.ko"
    # The .modinfo section is NUL-separated key=value strings.
    deps="$(tr '\0' '\n' <"${dir}.new/modules/${m}.ko" |
      sed -n 's/^depends=//p' | head -n1)"
    for dep in ${deps//,/ }; do
      visit "${dep}" || return 1
    done
    order+=("${m}")
  }
  for m in "${GUEST_MODULES[@]}"; do
    visit "${m}"
  done
  printf '%s\n' "${order[@]}" >"${dir}.new/modules/load-order"
  echo "${kver}" >"${dir}.new/release"
  echo "${pkg} ${version}" >"${dir}.new/.stamp"
  rm -rf "${dir}"
  mv "${dir}.new" "${dir}"
  log "kernel: ${kver}; modules in load order: ${order[*]}"
}

# ---------------------------------------------------------------------------

write_env() {
  local env="${PEERS_DIR}/peers.env"
  {
    echo "# Written by tools/peers/fetch.sh; lists the peers available here."
    [[ -x "${PEERS_DIR}/virtiofsd-c" ]] &&
      echo "VIRTIOFSD_C=${PEERS_DIR}/virtiofsd-c"
    [[ -f "${PEERS_DIR}/virtiofsd-rs.d/.stamp" ]] &&
      echo "VIRTIOFSD_RS=${PEERS_DIR}/virtiofsd-rs"
    if [[ -f "${PEERS_DIR}/kernel/.stamp" ]]; then
      if [[ -f "${PEERS_DIR}/kernel/vmlinux" ]]; then
        echo "GUEST_KERNEL=${PEERS_DIR}/kernel/vmlinux"
      else
        echo "GUEST_KERNEL=${PEERS_DIR}/kernel/vmlinuz"
      fi
      echo "GUEST_VMLINUZ=${PEERS_DIR}/kernel/vmlinuz"
      echo "GUEST_MODULES=${PEERS_DIR}/kernel/modules"
    fi
  } >"${env}.tmp"
  mv "${env}.tmp" "${env}"
}

main() {
  local what=("$@") status=0
  ((${#what[@]})) || what=(all)
  [[ "${what[*]}" == all ]] && what=(virtiofsd-c virtiofsd-rs kernel)
  mkdir -p "${PEERS_DIR}"
  APT_TMP="$(mktemp -d)"
  trap 'rm -rf "${APT_TMP}"' EXIT
  for peer in "${what[@]}"; do
    case "${peer}" in
      virtiofsd-c) fetch_virtiofsd_c || status=1 ;;
      virtiofsd-rs) fetch_virtiofsd_rs || status=1 ;;
      kernel) fetch_kernel || status=1 ;;
      *)
        log "unknown peer '${peer}' (want all, virtiofsd-c, virtiofsd-rs, kernel)"
        status=2
        ;;
    esac
  done
  write_env
  log "available: $(grep -v '^#' "${PEERS_DIR}/peers.env" | cut -d= -f1 | tr '\n' ' ')"
  return "${status}"
}

main "$@"
