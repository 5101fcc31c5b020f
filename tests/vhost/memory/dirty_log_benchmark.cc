// DirtyLog harvest rate against a plain scan of the same bitmap.
//
// Harvest does a relaxed peek per word and an atomic exchange only for
// non-zero words; the baseline reads and clears words with plain loads and
// stores (what a non-atomic harvester, which could lose concurrent marks,
// would cost). Arguments: log size in guest GiB, dirty pages per 1024.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "vhost/memory/dirty_log.h"

namespace vhostmig::vhost {
namespace {

void MarkFraction(DirtyLog& log, uint64_t pages, int64_t per_1024,
                  std::vector<uint64_t>* plain) {
  std::mt19937_64 rng(42);
  for (uint64_t p = 0; p < pages; ++p) {
    if (static_cast<int64_t>(rng() % 1024) < per_1024) {
      log.MarkRange(p * kDirtyPageSize, 1);
      if (plain != nullptr) (*plain)[p / 64] |= 1ull << (p % 64);
    }
  }
}

void BM_DirtyLogHarvest(benchmark::State& state) {
  const uint64_t guest = static_cast<uint64_t>(state.range(0)) << 30;
  const uint64_t pages = guest / kDirtyPageSize;
  auto log = *DirtyLog::Create(guest);
  uint64_t harvested = 0;
  for (auto _ : state) {
    state.PauseTiming();
    MarkFraction(*log, pages, state.range(1), nullptr);
    state.ResumeTiming();
    harvested += log->Harvest([](uint64_t p) { benchmark::DoNotOptimize(p); });
  }
  state.SetBytesProcessed(state.iterations() * log->size_bytes());
  state.counters["dirty_pages"] =
      benchmark::Counter(harvested, benchmark::Counter::kAvgIterations);
}

void BM_DirtyLogHarvestInto(benchmark::State& state) {
  const uint64_t guest = static_cast<uint64_t>(state.range(0)) << 30;
  const uint64_t pages = guest / kDirtyPageSize;
  auto log = *DirtyLog::Create(guest);
  std::vector<uint64_t> out;
  for (auto _ : state) {
    state.PauseTiming();
    MarkFraction(*log, pages, state.range(1), nullptr);
    std::fill(out.begin(), out.end(), 0);
    state.ResumeTiming();
    benchmark::DoNotOptimize(log->HarvestInto(&out));
  }
  state.SetBytesProcessed(state.iterations() * log->size_bytes());
}

void BM_PlainBitmapScan(benchmark::State& state) {
  const uint64_t guest = static_cast<uint64_t>(state.range(0)) << 30;
  const uint64_t pages = guest / kDirtyPageSize;
  auto log = *DirtyLog::Create(guest);  // only to mark the same pattern
  std::vector<uint64_t> bitmap((pages + 63) / 64);
  for (auto _ : state) {
    state.PauseTiming();
    MarkFraction(*log, pages, state.range(1), &bitmap);
    state.ResumeTiming();
    uint64_t count = 0;
    for (uint64_t w = 0; w < bitmap.size(); ++w) {
      uint64_t bits = bitmap[w];
      if (bits == 0) continue;
      bitmap[w] = 0;
      while (bits != 0) {
        benchmark::DoNotOptimize(w * 64 + __builtin_ctzll(bits));
        bits &= bits - 1;
        ++count;
      }
    }
    benchmark::DoNotOptimize(count);
  }
  state.SetBytesProcessed(state.iterations() * bitmap.size() * 8);
}

// Guest sizes 1 and 16 GiB; 0, 1/1024 and 64/1024 of pages dirty.
#define DIRTY_ARGS \
  ArgsProduct({{1, 16}, {0, 1, 64}})->Unit(benchmark::kMicrosecond)
BENCHMARK(BM_DirtyLogHarvest)->DIRTY_ARGS;
BENCHMARK(BM_DirtyLogHarvestInto)->DIRTY_ARGS;
BENCHMARK(BM_PlainBitmapScan)->DIRTY_ARGS;

}  // namespace
}  // namespace vhostmig::vhost

BENCHMARK_MAIN();
