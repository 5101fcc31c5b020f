#include "tests/reliability/fault_transport.h"

#include <algorithm>
#include <utility>
#include <variant>

#include "absl/time/clock.h"
#include "base/crc32c.h"

namespace vhostmig::reliability {

using migration::DeviceStateChunk;
using migration::DeviceStateEnd;
using migration::MigrationMessage;
using migration::PageBatch;
using migration::PageExtent;

absl::Status FaultTransport::Send(MigrationMessage message,
                                  absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    if (auto* batch = std::get_if<PageBatch>(&message)) {
      for (PageExtent& e : batch->extents) {
        if (!corrupt_next_page_batch_ || e.data.empty()) continue;
        const size_t at = plan_.corrupt_offset % e.data.size();
        e.data[at] = static_cast<char>(static_cast<uint8_t>(e.data[at]) ^
                                       plan_.corrupt_xor);
        corrupt_next_page_batch_ = false;
        ++injected_.page_extents_corrupted;
        injected_.corrupted_page_round = batch->round;
        injected_.corrupted_first_page = e.first_page;
      }
    } else if (auto* chunk = std::get_if<DeviceStateChunk>(&message)) {
      const uint64_t first = state_bytes_seen_;
      state_bytes_seen_ += chunk->bytes.size();
      if (plan_.corrupt_state_chunk.has_value() &&
          *plan_.corrupt_state_chunk == state_chunks_seen_ &&
          !chunk->bytes.empty()) {
        const size_t at = plan_.corrupt_offset % chunk->bytes.size();
        chunk->bytes[at] = static_cast<char>(
            static_cast<uint8_t>(chunk->bytes[at]) ^ plan_.corrupt_xor);
        ++injected_.state_chunks_corrupted;
      }
      ++state_chunks_seen_;
      if (plan_.truncate_state_at.has_value()) {
        const uint64_t keep =
            *plan_.truncate_state_at > first
                ? std::min<uint64_t>(*plan_.truncate_state_at - first,
                                     chunk->bytes.size())
                : 0;
        injected_.state_bytes_dropped += chunk->bytes.size() - keep;
        if (keep == 0) return absl::OkStatus();  // lost in transit
        chunk->bytes.resize(keep);
      }
      state_bytes_forwarded_ += chunk->bytes.size();
      state_crc_forwarded_ = Crc32cExtend(
          state_crc_forwarded_, chunk->bytes.data(), chunk->bytes.size());
    } else if (auto* end = std::get_if<DeviceStateEnd>(&message)) {
      if (plan_.truncate_state_at.has_value() && plan_.rewrite_state_total &&
          end->total_bytes != state_bytes_forwarded_) {
        end->total_bytes = state_bytes_forwarded_;
        end->crc32c = state_crc_forwarded_;
        injected_.state_total_rewritten = true;
      }
    }
  }
  absl::Status status = inner_->Send(std::move(message), timeout);
  if (status.ok()) Forwarded();
  return status;
}

absl::StatusOr<MigrationMessage> FaultTransport::Receive(
    absl::Duration timeout) {
  if (plan_.receive_bytes_per_s > 0) {
    // Not before the previous message has "drained" at the throttled rate.
    absl::Time not_before;
    {
      absl::MutexLock lock(&mu_);
      not_before = next_receive_;
    }
    const absl::Duration wait = not_before - absl::Now();
    if (wait > timeout) {
      absl::SleepFor(timeout);
      return absl::DeadlineExceededError("throttled receive: no message yet");
    }
    if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
  }
  absl::StatusOr<MigrationMessage> m = inner_->Receive(timeout);
  if (!m.ok()) return m;
  if (plan_.receive_bytes_per_s > 0) {
    const absl::Duration cost =
        absl::Seconds(static_cast<double>(migration::MessageBytes(*m)) /
                      plan_.receive_bytes_per_s);
    absl::MutexLock lock(&mu_);
    next_receive_ = absl::Now() + cost;
    injected_.throttled_for += cost;
  }
  Forwarded();
  return m;
}

void FaultTransport::Forwarded() {
  bool close = false;
  {
    absl::MutexLock lock(&mu_);
    ++injected_.messages;
    if (plan_.close_after_messages.has_value() && !injected_.closed &&
        injected_.messages >= *plan_.close_after_messages) {
      injected_.closed = true;
      close = true;
    }
  }
  if (close) inner_->Close();
}

void FaultTransport::Close() { inner_->Close(); }

void FaultTransport::CorruptNextPageBatch() {
  absl::MutexLock lock(&mu_);
  corrupt_next_page_batch_ = true;
}

FaultsInjected FaultTransport::injected() const {
  absl::MutexLock lock(&mu_);
  return injected_;
}

}  // namespace vhostmig::reliability
