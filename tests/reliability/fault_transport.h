// FaultTransport: a MemoryTransport that forwards to another one and
// injects faults into what passes through it, for fault-injection tests and
// drills (tests/reliability/fault_matrix_test.cc; docs/reliability.md).
//
// Wrap the end whose traffic should suffer: the source's end to damage what
// travels to the destination (Send is where outgoing messages are changed),
// the destination's end to make the destination slow to consume (Receive is
// where throttling happens). Every fault is off unless set in FaultPlan;
// injected() says what actually fired, so a test can check that the fault
// it asked for happened rather than passing vacuously.
//
// Faults:
//   corrupt_state_chunk   flip bits in one byte of the n-th DeviceStateChunk
//                         (0-based) at `corrupt_offset` (mod its size).
//   CorruptNextPageBatch  (a call, for faults tied to a phase: make it from
//                         the source's progress observer when the phase is
//                         entered) flip bits in one byte of the next
//                         PageBatch that carries page data: in its first
//                         data extent, at `corrupt_offset` (mod the data
//                         size). The extent's digest is left as the source
//                         computed it, as a damaged wire would.
//   truncate_state_at     forward only the first N device-state bytes (the
//                         chunk holding byte N is cut, later chunks are
//                         dropped); with rewrite_state_total the
//                         DeviceStateEnd (total and digest) is made
//                         consistent with the cut, so only the back-end's
//                         own framing can notice it.
//   receive_bytes_per_s   Receive hands out at most this many message bytes
//                         (migration/messages.h MessageBytes) per second: a
//                         destination slow to consume. It sleeps by design.
//   close_after_messages  after forwarding N messages (either direction)
//                         the inner transport is closed: the link dies.
//
// Thread-safety: as MemoryTransport (Send and Receive from different
// threads; Close and injected() from any thread).
#ifndef VHOSTMIG_TESTS_RELIABILITY_FAULT_TRANSPORT_H_
#define VHOSTMIG_TESTS_RELIABILITY_FAULT_TRANSPORT_H_

#include <cstdint>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migration/memory_transport.h"

namespace vhostmig::reliability {

struct FaultPlan {
  std::optional<uint32_t> corrupt_state_chunk;
  uint32_t corrupt_offset = 0;
  uint8_t corrupt_xor = 0x5a;
  std::optional<uint64_t> truncate_state_at;
  bool rewrite_state_total = false;
  uint64_t receive_bytes_per_s = 0;  // 0: unthrottled
  std::optional<uint64_t> close_after_messages;
};

// What a FaultTransport did so far.
struct FaultsInjected {
  uint32_t state_chunks_corrupted = 0;
  uint32_t page_extents_corrupted = 0;
  // The damaged extent: its batch's round and its first page.
  uint32_t corrupted_page_round = 0;
  uint64_t corrupted_first_page = 0;
  uint64_t state_bytes_dropped = 0;
  bool state_total_rewritten = false;
  absl::Duration throttled_for;
  bool closed = false;
  uint64_t messages = 0;  // forwarded, both directions
};

class FaultTransport : public migration::MemoryTransport {
 public:
  // `inner` must outlive this object.
  FaultTransport(migration::MemoryTransport* inner, FaultPlan plan)
      : inner_(inner), plan_(plan) {}

  absl::Status Send(migration::MigrationMessage message,
                    absl::Duration timeout) override;
  absl::StatusOr<migration::MigrationMessage> Receive(
      absl::Duration timeout) override;
  void Close() override;

  // Arms the page-data fault (see the file comment); the next PageBatch
  // with page data that passes through Send is damaged.
  void CorruptNextPageBatch();

  FaultsInjected injected() const;

 private:
  // Counts a forwarded message; closes the link when the plan says so.
  void Forwarded();

  migration::MemoryTransport* const inner_;
  const FaultPlan plan_;

  mutable absl::Mutex mu_;
  FaultsInjected injected_ ABSL_GUARDED_BY(mu_);
  bool corrupt_next_page_batch_ ABSL_GUARDED_BY(mu_) = false;
  uint32_t state_chunks_seen_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t state_bytes_seen_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t state_bytes_forwarded_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t state_crc_forwarded_ ABSL_GUARDED_BY(mu_) = 0;
  // Throttle: when the next message may be handed out.
  absl::Time next_receive_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace vhostmig::reliability

#endif  // VHOSTMIG_TESTS_RELIABILITY_FAULT_TRANSPORT_H_
