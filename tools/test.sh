#!/usr/bin/env bash
# The project's test command (README, CI's .ci/run): installs what is
# missing, fetches the real peers, runs the whole Bazel suite, then the
# sanitizer and fuzzing passes, and counts real results from the JUnit XML.
#
# Usage: tools/test.sh [--quick]
#   --quick   only the plain `bazel test //...` (no sanitizers, no fuzzing)
#
# Phases (each skipped, with a note, once the time budget is running out):
#   1. bazel test //...                        every test, GCC
#   2. --config=asan_ubsan, small/medium tests the unit tests under ASan+UBSan
#   3. --config=tsan, tests tagged "tsan"      threaded tests under TSan, linked
#                                              against an abseil built with TSan
#                                              (tools/tsan_absl.sh, cached),
#                                              gRPC internals suppressed
#                                              (tools/tsan_grpc.supp)
#   4. --config=fuzz, each *_libfuzzer target  a short libFuzzer run (clang)
#
# Environment:
#   VHOSTMIG_TEST_BUDGET_S   seconds the whole run should stay under (1500)
#   VHOSTMIG_FUZZ_SECONDS    libFuzzer time per target (20; all targets 240 max)
#   VHOSTMIG_BAZEL_STARTUP   Bazel startup options (e.g. --output_base=DIR)
#   VHOSTMIG_BAZEL_ARGS      extra options for every bazel test/build/info
#   VHOSTMIG_TEST_TARGETS    target patterns instead of //... (space-separated)
#
# Ends with exactly one line `N passed, N failed, N skipped`; exits non-zero
# when anything failed or did not build. A phase left out (time budget, a
# missing tool) prints `[PHASE] skipped phase: REASON` and counts as one
# skipped test, so it shows in that line.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_DIR
readonly BUDGET_S="${VHOSTMIG_TEST_BUDGET_S:-1500}"
readonly FUZZ_SECONDS="${VHOSTMIG_FUZZ_SECONDS:-20}"
readonly FUZZ_TOTAL_S=240
readonly START_S="${SECONDS}"
# shellcheck disable=SC2206
readonly TARGETS=(${VHOSTMIG_TEST_TARGETS:-//...})

# Shared by every Bazel command: 2 cores, plain output for logs.
BAZEL_COMMON=(--jobs=2 --color=no --curses=no --show_progress_rate_limit=30)
# shellcheck disable=SC2206  # word splitting of the user's extra args is wanted
BAZEL_COMMON+=(${VHOSTMIG_BAZEL_ARGS:-})
TEST_COMMON=(-k --local_test_jobs=2 --test_output=errors --test_summary=short)

total_passed=0
total_failed=0
total_skipped=0

log() { printf '\n=== test.sh: %s\n' "$*" >&2; }
elapsed() { echo $((SECONDS - START_S)); }

# True when less than $1 percent of the budget has been used.
within_budget() { (($(elapsed) * 100 < BUDGET_S * $1)); }

# shellcheck disable=SC2206  # word splitting of the user's options is wanted
BAZEL_STARTUP=(${VHOSTMIG_BAZEL_STARTUP:-})
bazel() { command bazel "${BAZEL_STARTUP[@]}" "$@"; }

python() {
  if [[ -x /usr/bin/python3 ]]; then /usr/bin/python3 "$@"; else python3 "$@"; fi
}

# Adds "P F S" (from count_results.py) to the totals.
add_counts() {
  local p f s
  read -r p f s <<<"$1"
  total_passed=$((total_passed + p))
  total_failed=$((total_failed + f))
  total_skipped=$((total_skipped + s))
}

# Runs `bazel test` with the given config args and target pattern, then counts
# its results. Arguments: phase name, then bazel arguments.
bazel_test_phase() {
  local phase="$1"
  shift
  local out status=0 testlogs
  out="$(mktemp)"
  bazel test "${BAZEL_COMMON[@]}" "${TEST_COMMON[@]}" "$@" 2>&1 | tee "${out}" ||
    status="${PIPESTATUS[0]}"
  # 4: nothing matched the filters. Not a failure, nothing to count.
  if ((status == 4)); then
    log "${phase}: no tests matched"
    rm -f "${out}"
    return 0
  fi
  # Config-only flags (not the target patterns) pick the testlogs folder.
  local config_args=()
  for a in "$@"; do
    [[ "${a}" == --config=* ]] && config_args+=("${a}")
  done
  testlogs="$(bazel info "${BAZEL_COMMON[@]}" "${config_args[@]}" bazel-testlogs 2>/dev/null)"
  local counts
  counts="$(python "${REPO_DIR}/tools/count_results.py" --log "${out}" \
    --testlogs "${testlogs}" --exit-code "${status}" --phase "${phase}")"
  local p f s
  read -r p f s <<<"${counts}"
  log "${phase}: ${p} passed, ${f} failed, ${s} skipped (bazel exit ${status}, $(elapsed)s so far)"
  add_counts "${counts}"
  rm -f "${out}"
}

# Records that a whole phase was left out: prints why and counts one skip.
# Arguments: phase name, reason.
skip_phase() {
  log "$1 left out: $2"
  echo "[$1] skipped phase: $2" >&2
  add_counts "0 0 1"
}

# The TSan pass: threaded tests, linked against Debian's abseil rebuilt with
# -fsanitize=thread (tools/tsan_absl.sh; built once per machine and cached),
# so that absl::Mutex synchronisation is visible to TSan.
tsan_phase() {
  local flags=() out start="${SECONDS}"
  if ! out="$(bash "${REPO_DIR}/tools/tsan_absl.sh" --bazel-flags)"; then
    skip_phase tsan "no TSan-instrumented abseil (tools/tsan_absl.sh failed, see above); without it absl::Mutex is invisible to TSan and its reports are not trustworthy"
    return 0
  fi
  mapfile -t flags <<<"${out}"
  log "tsan: instrumented abseil ready after $((SECONDS - start))s"
  # .bazelrc's TSAN_OPTIONS plus the suppressions for Debian's uninstrumented
  # gRPC, protobuf and OpenSSL (tools/tsan_grpc.supp says why and how
  # narrowly); an absolute path, so the agents and daemons a test starts
  # find it too.
  flags+=("--test_env=TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=${REPO_DIR}/tools/tsan_grpc.supp")
  bazel_test_phase tsan --config=tsan "${flags[@]}" --build_tests_only \
    --test_tag_filters=tsan "${TARGETS[@]}"
}

# Short libFuzzer runs of every cc_fuzz_target (tools/fuzz.bzl); each counts
# as one test.
fuzz_phase() {
  if ! command -v clang >/dev/null; then
    skip_phase fuzz "clang not installed (tools/setup.sh installs it)"
    return 0
  fi
  local targets=()
  local universe
  universe="$(printf ' + %s' "${TARGETS[@]}")"
  mapfile -t targets < <(bazel query --keep_going \
    "attr(tags, '\blibfuzzer\b', ${universe:3})" --output=label 2>/dev/null || true)
  if ((${#targets[@]} == 0)); then
    log "fuzz: no libFuzzer targets"
    return 0
  fi
  # cc_fuzz_target (tools/fuzz.bzl) adds NAME_corpus_list; a hand-written
  # libFuzzer binary without one starts from an empty corpus.
  local corpus_lists=()
  mapfile -t corpus_lists < <(bazel query --keep_going \
    "attr(name, '_corpus_list\$', kind(genrule, ${universe:3}))" \
    --output=label 2>/dev/null || true)
  local per=$((FUZZ_TOTAL_S / ${#targets[@]}))
  ((per > FUZZ_SECONDS)) && per="${FUZZ_SECONDS}"
  ((per < 5)) && per=5
  log "fuzz: building ${#targets[@]} libFuzzer targets with clang (${per}s each)"
  local bin_dir work build_status
  work="$(mktemp -d)"
  # gold's "Cannot export local symbol '__asan_...'" warnings are harmless
  # and number in the thousands.
  {
    rc=0
    bazel build "${BAZEL_COMMON[@]}" -k --config=fuzz "${targets[@]}" \
      "${corpus_lists[@]}" 2>&1 || rc=$?
    echo "${rc}" >"${work}/build.status"
  } | grep -v "warning: Cannot export local symbol" || true
  build_status="$(cat "${work}/build.status")"
  if ((build_status != 0)); then
    log "fuzz: build failed (the targets that built still run)"
  fi
  bin_dir="$(bazel info "${BAZEL_COMMON[@]}" --config=fuzz bazel-bin 2>/dev/null)"
  local p=0 f=0
  for t in "${targets[@]}"; do
    local pkg="${t#//}" name
    pkg="${pkg%%:*}"
    name="${t##*:}"
    local bin="${bin_dir}/${pkg}/${name}"
    local list="${bin_dir}/${pkg}/${name%_libfuzzer}_corpus.txt"
    if [[ ! -x "${bin}" ]]; then
      echo "[fuzz] failed  ${t}: did not build" >&2
      f=$((f + 1))
      continue
    fi
    # libFuzzer adds what it finds to the first corpus dir: use a scratch
    # copy so the checked-in corpus stays as it is.
    local corpus="${work}/${name}/corpus" artifacts="${work}/${name}/artifacts"
    mkdir -p "${corpus}" "${artifacts}"
    local seeds=()
    if [[ -f "${list}" ]]; then
      mapfile -t seeds <"${list}"
    else
      # Hand-written target: borrow the data files of its replay test
      # (NAME for NAME_libfuzzer), if there is one.
      mapfile -t seeds < <(bazel query --keep_going \
        "kind('source file', labels(data, ${t%_libfuzzer}))" --output=label 2>/dev/null |
        sed -E 's|^//||; s|:|/|' || true)
    fi
    for seed in "${seeds[@]}"; do
      if [[ -f "${REPO_DIR}/${seed}" ]]; then
        cp "${REPO_DIR}/${seed}" "${corpus}/"
      fi
    done
    if (cd "${work}/${name}" && "${bin}" -max_total_time="${per}" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="${artifacts}/" \
      "${corpus}" >"${work}/${name}/fuzz.log" 2>&1); then
      echo "[fuzz] passed  ${t}: $(grep -a -m1 -o 'Done [0-9]* runs.*' "${work}/${name}/fuzz.log" || true)" >&2
      p=$((p + 1))
    else
      echo "[fuzz] failed  ${t}: crash input kept in ${artifacts}" >&2
      tail -n 30 "${work}/${name}/fuzz.log" >&2
      f=$((f + 1))
    fi
  done
  log "fuzz: ${p} passed / ${f} failed"
  add_counts "${p} ${f} 0"
}

main() {
  local quick=0
  while (($#)); do
    case "$1" in
      --quick) quick=1; shift ;;
      *) echo "usage: tools/test.sh [--quick]" >&2; exit 2 ;;
    esac
  done
  cd "${REPO_DIR}"

  log "setup"
  bash tools/setup.sh

  log "peers (best effort: tests that need a missing peer skip)"
  bash tools/peers/fetch.sh || log "some peers are missing; their tests will skip"

  log "phase 1: bazel test ${TARGETS[*]}"
  bazel_test_phase test "${TARGETS[@]}"

  if ((quick)); then
    log "--quick: sanitizer and fuzz passes left out"
  else
    if within_budget 45; then
      log "phase 2: unit tests under ASan+UBSan"
      bazel_test_phase asan_ubsan --config=asan_ubsan --build_tests_only \
        --test_size_filters=small,medium --test_tag_filters=-guest,-no_sanitizer \
        "${TARGETS[@]}"
    else
      skip_phase asan_ubsan "time budget: $(elapsed)s of ${BUDGET_S}s used (phase 2 starts only below 45%)"
    fi
    if within_budget 60; then
      log "phase 3: tests tagged tsan under TSan"
      tsan_phase
    else
      skip_phase tsan "time budget: $(elapsed)s of ${BUDGET_S}s used (phase 3 starts only below 60%)"
    fi
    if within_budget 75; then
      log "phase 4: libFuzzer"
      fuzz_phase
    else
      skip_phase fuzz "time budget: $(elapsed)s of ${BUDGET_S}s used (phase 4 starts only below 75%)"
    fi
  fi

  log "done in $(elapsed)s"
  echo "${total_passed} passed, ${total_failed} failed, ${total_skipped} skipped"
  ((total_failed == 0))
}

main "$@"
