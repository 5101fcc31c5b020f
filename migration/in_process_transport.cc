#include "migration/in_process_transport.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace vhostmig::migration {

struct InProcessTransport::Shared {
  struct Direction {
    std::deque<MigrationMessage> queue;
    uint64_t queued_bytes = 0;
    TransportCounters counters;
  };
  explicit Shared(uint64_t window) : window_bytes(window) {}
  const uint64_t window_bytes;
  absl::Mutex mu;
  bool closed ABSL_GUARDED_BY(mu) = false;
  Direction to[2] ABSL_GUARDED_BY(mu);  // to[i]: messages for side i
};

std::pair<std::unique_ptr<InProcessTransport>,
          std::unique_ptr<InProcessTransport>>
InProcessTransport::CreatePair(uint64_t window_bytes) {
  auto shared = std::make_shared<Shared>(window_bytes);
  return {
      std::unique_ptr<InProcessTransport>(new InProcessTransport(shared, 0)),
      std::unique_ptr<InProcessTransport>(new InProcessTransport(shared, 1))};
}

absl::Status InProcessTransport::Send(MigrationMessage message,
                                      absl::Duration timeout) {
  const uint64_t bytes = MessageBytes(message);
  Shared& s = *shared_;
  absl::MutexLock lock(&s.mu);
  Shared::Direction& d = s.to[1 - side_];
  auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    return s.closed || d.queue.empty() ||
           d.queued_bytes + bytes <= s.window_bytes;
  };
  if (!s.mu.AwaitWithTimeout(absl::Condition(&room), timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat("sending ", MessageName(message),
                     ": the receiver did not drain its window in ",
                     absl::FormatDuration(timeout)));
  }
  if (s.closed) {
    return absl::UnavailableError(absl::StrCat("sending ", MessageName(message),
                                               ": the transport is closed"));
  }
  TransportCounters& c = d.counters;
  ++c.messages;
  if (const auto* batch = std::get_if<PageBatch>(&message)) {
    for (const PageExtent& e : batch->extents) {
      ++c.page_extents;
      c.pages += e.page_count;
      c.page_data_bytes += e.data.size();
    }
  } else if (const auto* chunk = std::get_if<DeviceStateChunk>(&message)) {
    c.state_bytes += chunk->bytes.size();
  }
  d.queued_bytes += bytes;
  d.queue.push_back(std::move(message));
  return absl::OkStatus();
}

absl::StatusOr<MigrationMessage> InProcessTransport::Receive(
    absl::Duration timeout) {
  Shared& s = *shared_;
  absl::MutexLock lock(&s.mu);
  Shared::Direction& d = s.to[side_];
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    return s.closed || !d.queue.empty();
  };
  if (!s.mu.AwaitWithTimeout(absl::Condition(&ready), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "no message from the peer in ", absl::FormatDuration(timeout)));
  }
  // Messages sent before a close are still delivered.
  if (d.queue.empty()) {
    return absl::UnavailableError("the transport is closed");
  }
  MigrationMessage m = std::move(d.queue.front());
  d.queue.pop_front();
  d.queued_bytes -= MessageBytes(m);
  return m;
}

void InProcessTransport::Close() {
  absl::MutexLock lock(&shared_->mu);
  shared_->closed = true;
}

TransportCounters InProcessTransport::sent() const {
  absl::MutexLock lock(&shared_->mu);
  return shared_->to[1 - side_].counters;
}

}  // namespace vhostmig::migration
