#include "migration/agent/grpc_transport.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace vhostmig::agent {

using migration::MigrationMessage;

GrpcTransport::GrpcTransport(FrameStream* stream, GrpcTransportOptions options)
    : stream_(stream), options_(std::move(options)) {
  reader_ = std::thread([this] { ReaderLoop(); });
  writer_ = std::thread([this] { WriterLoop(); });
}

GrpcTransport::~GrpcTransport() {
  Close();
  // Close cancels the stream unless the peer already ended it; either way
  // both threads return promptly now.
  stream_->Cancel();
  reader_.join();
  writer_.join();
}

void GrpcTransport::Break(absl::Status why) {
  if (broken_) return;
  broken_ = true;
  if (stream_status_.ok()) stream_status_ = std::move(why);
}

void GrpcTransport::Enqueue(pb::TransferFrame frame) {
  outgoing_.push_back(std::move(frame));
}

void GrpcTransport::ReaderLoop() {
  for (;;) {
    pb::TransferFrame frame;
    if (!stream_->Read(&frame)) {
      absl::MutexLock lock(&mu_);
      peer_done_ = true;
      Break(absl::UnavailableError(
          closed_ ? "the Transfer stream was closed"
                  : "the peer agent ended the Transfer stream (link lost, "
                    "peer gone or peer finished)"));
      return;
    }
    if (options_.on_frame) options_.on_frame();
    absl::Status violation;
    {
      absl::MutexLock lock(&mu_);
      switch (frame.kind_case()) {
        case pb::TransferFrame::kCredit:
          unacked_bytes_ -= std::min(unacked_bytes_, frame.credit());
          break;
        case pb::TransferFrame::kStarted:
        case pb::TransferFrame::kStartFailed:
          started_ = std::move(frame);
          break;
        default: {
          if (!IsMigrationFrame(frame)) {
            violation = absl::InvalidArgumentError(
                absl::StrCat("unexpected Transfer frame kind ",
                             frame.kind_case(), " mid-stream"));
            break;
          }
          absl::StatusOr<MigrationMessage> m = DecodeMessage(frame);
          if (!m.ok()) {
            violation = m.status();
            break;
          }
          const uint64_t bytes = migration::MessageBytes(*m);
          // One message may exceed the window alone (as the in-process
          // pair allows); more than that means the peer ignores credits.
          if (!incoming_.empty() &&
              incoming_bytes_ + bytes > options_.window_bytes) {
            violation = absl::ResourceExhaustedError(absl::StrCat(
                "the peer overran its window: ", incoming_bytes_ + bytes,
                " bytes outstanding, window ", options_.window_bytes));
            break;
          }
          incoming_bytes_ += bytes;
          incoming_.push_back(*std::move(m));
        }
      }
      if (!violation.ok()) Break(violation);
    }
    if (!violation.ok()) {
      stream_->Cancel();
      return;
    }
  }
}

void GrpcTransport::WriterLoop() {
  for (;;) {
    pb::TransferFrame frame;
    {
      absl::MutexLock lock(&mu_);
      auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return broken_ || closed_ || !outgoing_.empty();
      };
      mu_.Await(absl::Condition(&work));
      if (broken_ || outgoing_.empty()) return;
      frame = std::move(outgoing_.front());
      outgoing_.pop_front();
      writing_ = true;
    }
    const bool ok = stream_->Write(frame);
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      Break(absl::UnavailableError(
          "writing to the peer agent failed: the Transfer stream ended"));
      return;
    }
  }
}

absl::Status GrpcTransport::Send(MigrationMessage message,
                                 absl::Duration timeout) {
  const uint64_t bytes = migration::MessageBytes(message);
  const char* name = migration::MessageName(message);
  const absl::Time deadline = absl::Now() + timeout;
  const auto* batch = std::get_if<migration::PageBatch>(&message);
  pb::TransferFrame frame;
  EncodeMessage(message, &frame);

  absl::MutexLock lock(&mu_);
  auto gone = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return broken_ || closed_;
  };
  if (batch != nullptr && pacing_ &&
      options_.max_bandwidth_bytes_per_second > 0) {
    // Pacing: each batch may start once the previous ones have had their
    // share of time at the configured rate.
    const absl::Time start = std::max(absl::Now(), next_send_);
    next_send_ =
        start + absl::Seconds(bytes / options_.max_bandwidth_bytes_per_second);
    if (start > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("sending ", name,
                       ": the bandwidth limit delays it past the timeout"));
    }
    mu_.AwaitWithDeadline(absl::Condition(&gone), start);
  }
  auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return broken_ || closed_ || unacked_bytes_ == 0 ||
           unacked_bytes_ + bytes <= options_.peer_window_bytes;
  };
  if (!mu_.AwaitWithDeadline(absl::Condition(&room), deadline)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "sending ", name, ": the peer agent granted no window for ",
        absl::FormatDuration(timeout), " (", unacked_bytes_,
        " bytes unacknowledged)"));
  }
  if (broken_ || closed_) {
    return absl::UnavailableError(absl::StrCat("sending ", name, ": ",
                                               stream_status_.ok()
                                                   ? "the transport is closed"
                                                   : stream_status_.message()));
  }
  ++counters_.messages;
  if (batch != nullptr) {
    for (const migration::PageExtent& e : batch->extents) {
      ++counters_.page_extents;
      counters_.pages += e.page_count;
      counters_.page_data_bytes += e.data.size();
    }
  } else if (const auto* chunk =
                 std::get_if<migration::DeviceStateChunk>(&message)) {
    counters_.state_bytes += chunk->bytes.size();
  }
  unacked_bytes_ += bytes;
  Enqueue(std::move(frame));
  return absl::OkStatus();
}

absl::StatusOr<MigrationMessage> GrpcTransport::Receive(
    absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto deliverable = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !incoming_.empty() &&
           !(hold_ready_ &&
             std::holds_alternative<migration::Ready>(incoming_.front()));
  };
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return deliverable() || broken_ || closed_;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "no message from the peer agent in ", absl::FormatDuration(timeout)));
  }
  // What arrived before the stream ended is still delivered.
  if (!deliverable()) {
    return absl::UnavailableError(stream_status_.ok()
                                      ? "the transport is closed"
                                      : std::string(stream_status_.message()));
  }
  MigrationMessage m = std::move(incoming_.front());
  incoming_.pop_front();
  const uint64_t bytes = migration::MessageBytes(m);
  incoming_bytes_ -= bytes;
  if (!broken_ && !closed_) {
    pb::TransferFrame credit;
    credit.set_credit(bytes);
    Enqueue(std::move(credit));
  }
  return m;
}

void GrpcTransport::Close() {
  {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    closed_ = true;
    // Let the writer flush what the coordinator sent last (an Abort, the
    // Commit, Started), bounded.
    auto flushed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return broken_ || (outgoing_.empty() && !writing_);
    };
    mu_.AwaitWithTimeout(absl::Condition(&flushed), options_.close_grace);
  }
  stream_->WritesDone();
  {
    // The peer ends its side once it is done too; waiting for that lets
    // gRPC deliver our last frames before the stream is torn down.
    absl::MutexLock lock(&mu_);
    auto peer_done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return peer_done_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&peer_done), options_.close_grace);
  }
  stream_->Cancel();
}

absl::Status GrpcTransport::SendControl(pb::TransferFrame frame) {
  absl::MutexLock lock(&mu_);
  if (broken_ || closed_) {
    return absl::UnavailableError(
        absl::StrCat("the Transfer stream ended: ", stream_status_.message()));
  }
  Enqueue(std::move(frame));
  return absl::OkStatus();
}

absl::StatusOr<pb::TransferFrame> GrpcTransport::AwaitStarted(
    absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return started_.has_value() || broken_;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&done), timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat("the destination did not report that its guest started "
                     "within ",
                     absl::FormatDuration(timeout)));
  }
  if (started_.has_value()) return *started_;
  return absl::UnavailableError(absl::StrCat(
      "the Transfer stream ended before the destination reported its guest "
      "started: ",
      stream_status_.message()));
}

void GrpcTransport::SetPacing(bool on) {
  absl::MutexLock lock(&mu_);
  pacing_ = on;
}

void GrpcTransport::HoldReady() {
  absl::MutexLock lock(&mu_);
  hold_ready_ = true;
}

void GrpcTransport::ReleaseReady() {
  absl::MutexLock lock(&mu_);
  hold_ready_ = false;
}

bool GrpcTransport::ready_waiting() const {
  absl::MutexLock lock(&mu_);
  return hold_ready_ && !incoming_.empty() &&
         std::holds_alternative<migration::Ready>(incoming_.front());
}

absl::Status GrpcTransport::stream_status() const {
  absl::MutexLock lock(&mu_);
  return stream_status_;
}

migration::TransportCounters GrpcTransport::sent() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

}  // namespace vhostmig::agent
