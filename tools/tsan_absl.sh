#!/usr/bin/env bash
# Builds abseil with ThreadSanitizer for the TSan pass of tools/test.sh.
#
# Debian's libabsl is not instrumented, so TSan cannot see absl::Mutex lock
# and unlock (they happen inside libabsl_synchronization.so) and reports
# accesses made under one absl::Mutex as races. This script builds the very
# same abseil (the source package of the installed libabsl-dev, Debian's
# patches applied, so the inline namespace and ABSL_OPTION_* match the
# headers in /usr/include) with -fsanitize=thread as shared libraries with
# the system sonames, into a cache folder:
#
#   ${VHOSTMIG_CACHE_DIR:-~/.cache/vhostmig}/absl-tsan/lib/libabsl_*.so*
#
# On top of Debian's patches, tools/tsan_absl/*.patch are applied: TSan-only
# annotation fixes backported from upstream abseil (each says why), which
# compile to nothing without -fsanitize=thread.
#
# The source comes from Debian's archive through `apt-get source
# --download-only` under a temporary apt configuration (its own lists and
# cache; deb-src entries with the same URIs, suites and keyrings as the
# machine's own Debian sources), so the machine's apt state is never touched;
# the downloaded source files are kept in absl-tsan-src/ next to the build.
# A stamp records the package version, the compiler, the patches and this
# script's build recipe; the build is redone only when one of them changes.
#
# Usage: tools/tsan_absl.sh [--bazel-flags]
#   Prints the library directory on stdout (progress on stderr), or with
#   --bazel-flags the options to add to `bazel test --config=tsan`, one per
#   line: -L<dir> so the link resolves -labsl_* there, and the same <dir> as
#   DT_RPATH (not RUNPATH: RPATH also applies to the libraries' own
#   dependencies, so gRPC's and protobuf's abseil is the instrumented one
#   too). tools/test.sh does this; by hand:
#     bazel test --config=tsan $(tools/tsan_absl.sh --bazel-flags) //...
# Exit status: 0 with the directory printed, non-zero when the instrumented
# abseil cannot be had (the caller skips the TSan pass and says why).
set -euo pipefail

readonly CACHE_ROOT="${VHOSTMIG_CACHE_DIR:-${HOME:-/root}/.cache/vhostmig}"
readonly OUT="${CACHE_ROOT}/absl-tsan"
readonly SRC_CACHE="${CACHE_ROOT}/absl-tsan-src"
PATCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tsan_absl"
readonly PATCH_DIR
# Bump when the build recipe below changes, so caches are rebuilt.
readonly RECIPE=1

log() { printf 'tsan_absl: %s\n' "$*" >&2; }

# Prints "SOURCE_PACKAGE VERSION" of the installed libabsl-dev.
installed_source() {
  dpkg-query -W -f='${source:Package} ${source:Version}\n' libabsl-dev 2>/dev/null
}

compiler_id() {
  "${CXX:-g++}" --version | head -n1
}

# Prints one-line deb-src entries for the machine's Debian sources of its own
# release (suites CODENAME and CODENAME-*), from the deb822 *.sources files
# and the legacy *.list files: same URIs, suites, components and keyring.
machine_deb_src_lines() {
  local codename
  # shellcheck disable=SC1091
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
  local default_key=/usr/share/keyrings/debian-archive-keyring.gpg
  shopt -s nullglob
  local files=(/etc/apt/sources.list.d/*.sources)
  if ((${#files[@]})); then
    awk -v want="${codename}" -v key="${default_key}" '
      function flush(   n, s, i, suite) {
        if (types ~ /(^| )deb( |$)/ && uris != "") {
          n = split(suites, s, " ")
          for (i = 1; i <= n; i++) {
            suite = s[i]
            if (suite == want || index(suite, want "-") == 1) {
              print "deb-src [signed-by=" (signed != "" ? signed : key) "] " \
                uris_one " " suite " " comps
            }
          }
        }
        types = uris = uris_one = suites = comps = signed = ""
      }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]*#/ { next }
      {
        field = tolower($1); $1 = ""; sub(/^ +/, "")
        if (field == "types:") types = $0
        else if (field == "uris:") { uris = $0; split($0, u, " "); uris_one = u[1] }
        else if (field == "suites:") suites = $0
        else if (field == "components:") comps = $0
        else if (field == "signed-by:") signed = $0
      }
      END { flush() }
    ' "${files[@]}"
  fi
  files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
  local f
  for f in "${files[@]}"; do
    [[ -f "${f}" ]] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -E 's/\[[^]]*\]//' "${f}" |
      awk -v want="${codename}" -v key="${default_key}" '
        $1 == "deb" && ($3 == want || index($3, want "-") == 1) {
          line = "deb-src [signed-by=" key "] " $2 " " $3
          for (i = 4; i <= NF; i++) line = line " " $i
          print line
        }'
  done
  shopt -u nullglob
}

# Prints the .dsc of source package $1 at version $2 in $SRC_CACHE, if there.
cached_dsc() {
  local f="${SRC_CACHE}/${1}_${2#*:}.dsc"
  [[ -f "${f}" ]] && echo "${f}"
}

# Downloads the source package $1 at version $2 into $SRC_CACHE.
download_source() {
  local pkg="$1" version="$2" apt_tmp
  apt_tmp="$(mktemp -d)"
  # shellcheck disable=SC2064  # expand now: the variable is local
  trap "rm -rf '${apt_tmp}'" RETURN
  mkdir -p "${apt_tmp}/lists/partial" "${apt_tmp}/cache/archives/partial" \
    "${apt_tmp}/parts" "${apt_tmp}/prefs"
  machine_deb_src_lines | sort -u >"${apt_tmp}/sources.list"
  if [[ ! -s "${apt_tmp}/sources.list" ]]; then
    log "no Debian archive found in /etc/apt/sources.list{,.d}"
    return 1
  fi
  cat >"${apt_tmp}/apt.conf" <<EOF
Dir::State::Lists "${apt_tmp}/lists";
Dir::State::status "${apt_tmp}/status";
Dir::Cache "${apt_tmp}/cache";
Dir::Etc::SourceList "${apt_tmp}/sources.list";
Dir::Etc::SourceParts "${apt_tmp}/parts";
Dir::Etc::PreferencesParts "${apt_tmp}/prefs";
APT::Get::List-Cleanup "false";
Acquire::Languages "none";
Acquire::IndexTargets::deb::Packages::DefaultEnabled "false";
EOF
  : >"${apt_tmp}/status"
  log "reading the source index ($(wc -l <"${apt_tmp}/sources.list") deb-src entries)"
  APT_CONFIG="${apt_tmp}/apt.conf" apt-get -q update >"${apt_tmp}/update.log" 2>&1 || {
    cat "${apt_tmp}/update.log" >&2
    return 1
  }
  rm -rf "${SRC_CACHE}"
  mkdir -p "${SRC_CACHE}"
  log "downloading source package ${pkg} ${version}"
  (cd "${SRC_CACHE}" &&
    APT_CONFIG="${apt_tmp}/apt.conf" apt-get -q source --download-only \
      "${pkg}=${version}") >"${apt_tmp}/source.log" 2>&1 || {
    cat "${apt_tmp}/source.log" >&2
    return 1
  }
  cached_dsc "${pkg}" "${version}" >/dev/null || {
    log "apt-get source left no ${pkg}_${version#*:}.dsc"
    return 1
  }
}

# Unpacks the source package $1 at version $2 into $3/src, with Debian's
# patches and then ours applied.
unpack_source() {
  local pkg="$1" version="$2" dest="$3" dsc
  if ! dsc="$(cached_dsc "${pkg}" "${version}")"; then
    download_source "${pkg}" "${version}"
    dsc="$(cached_dsc "${pkg}" "${version}")"
  else
    log "using the cached source files in ${SRC_CACHE}"
  fi
  # apt checked the files against the signed index when it downloaded them;
  # --no-check skips only the .dsc's own OpenPGP signature check.
  dpkg-source --no-check -x "${dsc}" "${dest}/src" >"${dest}/unpack.log" 2>&1 || {
    cat "${dest}/unpack.log" >&2
    return 1
  }
  local patch
  for patch in "${PATCH_DIR}"/*.patch; do
    [[ -f "${patch}" ]] || continue
    log "applying $(basename "${patch}")"
    patch -d "${dest}/src" -p1 --forward --quiet <"${patch}" >&2
  done
}

build() {
  local pkg="$1" version="$2" work="$3"
  local src="${work}/src" bld="${work}/build" prefix="${work}/install"
  # Debian's own configuration (debian/rules): shared libraries, C++17,
  # the system soname scheme (libabsl_X.so.20220623). Instrumented with
  # -fsanitize=thread; -O1 and frame pointers as in .bazelrc's tsan config.
  local flags="-fsanitize=thread -fno-omit-frame-pointer -O1 -g1 -fPIC"
  log "configuring (cmake, ${CXX:-g++})"
  cmake -S "${src}" -B "${bld}" -G Ninja \
    -DCMAKE_BUILD_TYPE=None \
    -DCMAKE_CXX_COMPILER="${CXX:-g++}" \
    -DCMAKE_C_COMPILER="${CC:-gcc}" \
    -DCMAKE_CXX_STANDARD=17 \
    -DCMAKE_CXX_FLAGS="${flags}" \
    -DCMAKE_C_FLAGS="${flags}" \
    -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" \
    -DBUILD_SHARED_LIBS=ON \
    -DBUILD_TESTING=OFF \
    -DABSL_PROPAGATE_CXX_STD=ON \
    -DCMAKE_INSTALL_PREFIX="${prefix}" \
    -DCMAKE_INSTALL_LIBDIR=lib >"${work}/cmake.log" 2>&1 || {
    tail -n 40 "${work}/cmake.log" >&2
    return 1
  }
  log "building (ninja -j${VHOSTMIG_ABSL_JOBS:-2})"
  ninja -C "${bld}" -j"${VHOSTMIG_ABSL_JOBS:-2}" install >"${work}/build.log" 2>&1 || {
    tail -n 40 "${work}/build.log" >&2
    return 1
  }
  # The headers we compile against are /usr/include's: they must be the
  # same as the ones this library was built from (inline namespace,
  # ABSL_OPTION_*), or the two would not link or, worse, disagree on layouts.
  if ! diff -q "${prefix}/include/absl/base/options.h" \
    /usr/include/absl/base/options.h >/dev/null; then
    log "the built absl/base/options.h differs from /usr/include's; refusing"
    return 1
  fi
}

# Prints the result: the directory, or the Bazel flags that use it.
emit() {
  local dir="$1"
  if ((BAZEL_FLAGS)); then
    printf '%s\n' "--linkopt=-L${dir}" "--linkopt=-Wl,-rpath,${dir}" \
      "--linkopt=-Wl,--disable-new-dtags"
  else
    echo "${dir}"
  fi
}

main() {
  BAZEL_FLAGS=0
  case "${1:-}" in
    --bazel-flags) BAZEL_FLAGS=1 ;;
    "") ;;
    *)
      echo "usage: tools/tsan_absl.sh [--bazel-flags]" >&2
      return 2
      ;;
  esac
  local pkg version stamp_want
  read -r pkg version < <(installed_source) || true
  if [[ -z "${pkg:-}" ]]; then
    log "libabsl-dev is not installed"
    return 1
  fi
  local patches
  patches="$(cat "${PATCH_DIR}"/*.patch 2>/dev/null | sha256sum | cut -c1-16)"
  stamp_want="${pkg} ${version} | $(compiler_id) | patches ${patches} | recipe ${RECIPE}"
  if [[ -f "${OUT}/.stamp" && "$(cat "${OUT}/.stamp")" == "${stamp_want}" ]]; then
    log "cached (${stamp_want}; built in $(cat "${OUT}/build-seconds" 2>/dev/null || echo '?')s)"
    emit "${OUT}/lib"
    return 0
  fi
  for tool in cmake ninja dpkg-source patch "${CXX:-g++}"; do
    command -v "${tool}" >/dev/null || {
      log "${tool} is not installed"
      return 1
    }
  done
  local start="${SECONDS}"
  local work="${OUT}.new"
  rm -rf "${work}"
  mkdir -p "${work}"
  unpack_source "${pkg}" "${version}" "${work}"
  build "${pkg}" "${version}" "${work}"
  # Keep only the libraries and the record of what they are.
  rm -rf "${OUT}"
  mkdir -p "${OUT}"
  mv "${work}/install/lib" "${OUT}/lib"
  rm -rf "${OUT}/lib/cmake" "${OUT}/lib/pkgconfig"
  rm -rf "${work}"
  echo "$((SECONDS - start))" >"${OUT}/build-seconds"
  echo "${stamp_want}" >"${OUT}/.stamp"
  log "built ${pkg} ${version} with -fsanitize=thread in $((SECONDS - start))s"
  emit "${OUT}/lib"
}

main "$@"
