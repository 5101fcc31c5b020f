// InProcessTransport: a connected pair of MemoryTransport ends inside one
// process, for tests and for embedders that run source and destination in
// the same process. Each direction is a queue bounded by a byte window
// (MessageBytes), so a slow receiver slows the sender the way a network
// stream's flow control would. Counters let tests assert what crossed.
//
// Thread-safety: as MemoryTransport.
#ifndef VHOSTMIG_MIGRATION_IN_PROCESS_TRANSPORT_H_
#define VHOSTMIG_MIGRATION_IN_PROCESS_TRANSPORT_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "migration/memory_transport.h"

namespace vhostmig::migration {

struct TransportCounters {
  uint64_t messages = 0;
  uint64_t page_extents = 0;
  uint64_t pages = 0;
  uint64_t page_data_bytes = 0;
  uint64_t state_bytes = 0;
};

class InProcessTransport : public MemoryTransport {
 public:
  // Two connected ends; `window_bytes` bounds each direction's queue (a
  // message larger than the window is still sent, alone).
  static std::pair<std::unique_ptr<InProcessTransport>,
                   std::unique_ptr<InProcessTransport>>
  CreatePair(uint64_t window_bytes = 8ull << 20);

  absl::Status Send(MigrationMessage message, absl::Duration timeout) override;
  absl::StatusOr<MigrationMessage> Receive(absl::Duration timeout) override;
  void Close() override;

  // What this end has sent so far.
  TransportCounters sent() const;

 private:
  struct Shared;
  InProcessTransport(std::shared_ptr<Shared> shared, int side)
      : shared_(std::move(shared)), side_(side) {}

  std::shared_ptr<Shared> shared_;
  int side_;
};

}  // namespace vhostmig::migration

#endif  // VHOSTMIG_MIGRATION_IN_PROCESS_TRANSPORT_H_
