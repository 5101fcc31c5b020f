// GrpcTransport: a MemoryTransport (migration/memory_transport.h) over the
// agents' Transfer stream (proto/agent.proto), so a SourceMigration in one
// agent and a DestinationMigration in another talk as they would in one
// process.
//
// Flow control and bounded memory: gRPC's own HTTP/2 window bounds bytes in
// the kernel and the library, but not what a receiver queues before the
// coordinator consumes it. So each end grants its peer an application-level
// window (`window_bytes`, MessageBytes units): the sender blocks in Send
// while the bytes it sent minus the credits it got back would exceed the
// peer's window, and the receiver returns a credit frame for every message
// the coordinator takes. A peer that overruns the window breaks the stream
// (a protocol violation, not a reason to buffer more).
//
// Failure detection: a cut link or dead peer ends the gRPC stream (keepalive
// pings, agent_channel.h), which makes every blocked and later Send/Receive
// fail with Unavailable naming the cause; a peer that stays connected but
// silent is bounded by the coordinators' own message timeouts.
//
// Besides the coordinator's messages the stream carries the agents' own
// frames after handover: the destination's Started / StartFailed, which the
// source agent awaits with AwaitStarted. With HoldReady, a Ready from the
// destination is withheld from the coordinator until ReleaseReady (manual
// commit), while Cancel still works.
//
// Threading: one reader and one writer thread per transport; Send, Receive
// and the control calls from any thread. The FrameStream must stay valid
// until the transport is destroyed (its destructor joins both threads).
#ifndef VHOSTMIG_MIGRATION_AGENT_GRPC_TRANSPORT_H_
#define VHOSTMIG_MIGRATION_AGENT_GRPC_TRANSPORT_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migration/agent/wire.h"
#include "migration/in_process_transport.h"
#include "migration/memory_transport.h"

namespace vhostmig::agent {

// One end of a bidirectional gRPC stream of TransferFrames (client or
// server side). Read and Write block; Cancel makes both fail promptly.
class FrameStream {
 public:
  virtual ~FrameStream() = default;
  virtual bool Read(pb::TransferFrame* frame) = 0;
  virtual bool Write(const pb::TransferFrame& frame) = 0;
  // Half-close our sending direction (client side); no-op on a server.
  virtual void WritesDone() {}
  virtual void Cancel() = 0;
};

struct GrpcTransportOptions {
  // What this end lets its peer have outstanding (MessageBytes units).
  uint64_t window_bytes = 4ull << 20;
  // The peer's window (it says so in TransferOpen, or both use the default).
  uint64_t peer_window_bytes = 4ull << 20;
  // Page data rate limit; 0 = unlimited.
  double max_bandwidth_bytes_per_second = 0;
  // How long Close waits for queued frames to go out before cancelling.
  absl::Duration close_grace = absl::Seconds(2);
  // Called (on the reader thread) whenever a frame arrives: liveness for
  // the caller's watchdogs.
  std::function<void()> on_frame;
};

class GrpcTransport : public migration::MemoryTransport {
 public:
  GrpcTransport(FrameStream* stream, GrpcTransportOptions options);
  ~GrpcTransport() override;
  GrpcTransport(const GrpcTransport&) = delete;
  GrpcTransport& operator=(const GrpcTransport&) = delete;

  absl::Status Send(migration::MigrationMessage message,
                    absl::Duration timeout) override;
  absl::StatusOr<migration::MigrationMessage> Receive(
      absl::Duration timeout) override;
  // Flushes what is queued (bounded by close_grace), then ends the stream.
  void Close() override;

  // Agent frames outside the coordinator's protocol (started,
  // start_failed); not subject to the window.
  absl::Status SendControl(pb::TransferFrame frame);
  // The destination's verdict after Commit: its Started or StartFailed
  // frame; Unavailable when the stream ended without one, DeadlineExceeded.
  absl::StatusOr<pb::TransferFrame> AwaitStarted(absl::Duration timeout);

  // Turns the bandwidth limit on or off (it starts on when configured).
  void SetPacing(bool on);

  void HoldReady();
  void ReleaseReady();
  // True while a Ready is withheld.
  bool ready_waiting() const;

  // Why the stream ended (OK while it runs).
  absl::Status stream_status() const;
  migration::TransportCounters sent() const;

 private:
  void ReaderLoop();
  void WriterLoop();
  void Break(absl::Status why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Enqueue(pb::TransferFrame frame) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  FrameStream* const stream_;
  const GrpcTransportOptions options_;

  mutable absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;     // Close() called
  bool broken_ ABSL_GUARDED_BY(mu_) = false;     // stream ended or failed
  bool peer_done_ ABSL_GUARDED_BY(mu_) = false;  // peer ended its side
  absl::Status stream_status_ ABSL_GUARDED_BY(mu_);
  std::deque<pb::TransferFrame> outgoing_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t unacked_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<migration::MigrationMessage> incoming_ ABSL_GUARDED_BY(mu_);
  uint64_t incoming_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<pb::TransferFrame> started_ ABSL_GUARDED_BY(mu_);
  bool hold_ready_ ABSL_GUARDED_BY(mu_) = false;
  bool pacing_ ABSL_GUARDED_BY(mu_) = true;
  absl::Time next_send_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  migration::TransportCounters counters_ ABSL_GUARDED_BY(mu_);

  std::thread reader_;
  std::thread writer_;
};

}  // namespace vhostmig::agent

#endif  // VHOSTMIG_MIGRATION_AGENT_GRPC_TRANSPORT_H_
