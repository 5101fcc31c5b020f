// Progress of a migration, as events delivered to an observer callback.
//
// Events are delivered synchronously on the thread running the migration,
// at each phase entry and after each unit of work (a page batch, a state
// chunk, a pre-copy round). An observer may call Cancel() on the migration
// from inside the callback; it must not block for long, since the guest
// may be paused.
#ifndef VHOSTMIG_MIGRATION_PROGRESS_H_
#define VHOSTMIG_MIGRATION_PROGRESS_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/time/time.h"

namespace vhostmig::migration {

enum class SourcePhase {
  kSetup,       // capability check, Hello
  kLogStart,    // SET_LOG_BASE, SET_FEATURES(+LOG_ALL), SET_VRING_ADDR(LOG)
  kPreCopy,     // rounds of harvest + send while the guest runs
  kStop,        // pause guest, SET_VRING_ENABLE(0), GET_VRING_BASE
  kFinalSync,   // last harvest, last pages
  kSaveState,   // SET_DEVICE_STATE_FD(save), stream the pipe
  kCheck,       // CHECK_DEVICE_STATE, wait for the destination's Ready
  kHandover,    // Commit sent: the source never runs again
  kCancelling,  // restoring the running source
  kDone,
};

enum class DestinationPhase {
  kPrepare,  // Hello: layout and capability check
  kReceivePages,
  kLoadState,  // SET_DEVICE_STATE_FD(load), write the stream
  kCheck,      // CHECK_DEVICE_STATE, memory complete, guest rebuilt
  kStart,      // on Commit: features, memory table, rings, resume
  kTornDown,
  kDone,
};

const char* PhaseName(SourcePhase phase);
const char* PhaseName(DestinationPhase phase);

struct SourceProgress {
  SourcePhase phase = SourcePhase::kSetup;
  uint32_t round = 0;            // pre-copy round (1-based); 0 before
  uint64_t pages_sent = 0;       // over all rounds, zero pages included
  uint64_t page_bytes_sent = 0;  // page data bytes (zero pages cost none)
  uint64_t pages_remaining = 0;  // dirty pages known not yet sent
  double dirty_pages_per_second = 0;
  double bandwidth_bytes_per_second = 0;
  absl::Duration expected_downtime = absl::ZeroDuration();
  uint64_t state_bytes = 0;  // device state bytes streamed so far
  absl::Duration guest_paused_for = absl::ZeroDuration();  // since Stop
};

struct DestinationProgress {
  DestinationPhase phase = DestinationPhase::kPrepare;
  uint64_t pages_received = 0;
  uint64_t state_bytes = 0;
};

using SourceObserver = std::function<void(const SourceProgress&)>;
using DestinationObserver = std::function<void(const DestinationProgress&)>;

}  // namespace vhostmig::migration

#endif  // VHOSTMIG_MIGRATION_PROGRESS_H_
