// BackendRing: one virtqueue as the back-end framework runs it. It holds the
// ring's configuration from the front-end (size, addresses, base, kick/call/
// err fds), its two independent states (started/stopped and enabled/
// disabled, vhost-user.rst "Ring states"), the DeviceQueue, and the worker
// thread that waits for kicks and calls Device::ProcessQueue.
//
// Lifecycle: configured while stopped; Start() sets the queue up in guest
// memory and launches the worker, which processes the ring once at once (so
// requests made available before a migration or a cancel do not wait for a
// kick that never comes) and then once per kick. Stop() lets the current
// ProcessQueue call finish and joins the worker: afterwards no request is in
// flight and next_avail() is what GET_VRING_BASE reports. Pause()/Resume()
// do the same around reconfiguration of a started ring (new addresses, new
// memory table, new kick fd) without leaving the started state.
//
// A started but disabled ring is not processed: its requests wait until it
// is enabled, which is the "no side effects" the spec asks of a disabled
// ring, and enabling wakes the worker for a pass.
//
// Thread-safety: configuration calls come from the connection's message
// thread only. SetEnabled, SetLog and the call fd may change while the
// worker runs; everything else requires the worker to be stopped or
// paused (the methods do that themselves where noted).
#ifndef VHOSTMIG_VHOST_BACKEND_RING_H_
#define VHOSTMIG_VHOST_BACKEND_RING_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "base/unique_fd.h"
#include "vhost/backend/device.h"
#include "vhost/memory/dirty_log.h"
#include "vhost/memory/guest_memory.h"
#include "vhost/protocol/payloads.h"
#include "vhost/virtqueue/device_queue.h"

namespace vhostmig::vhost {

class BackendRing final : public Vring {
 public:
  BackendRing(int index, Device* device);
  ~BackendRing() override;
  BackendRing(const BackendRing&) = delete;
  BackendRing& operator=(const BackendRing&) = delete;

  // Vring (used by the device on the worker thread).
  int index() const override { return index_; }
  DeviceQueue& queue() override { return queue_; }
  const GuestMemoryMap& memory() const override { return memory_; }
  void NotifyIfNeeded() override;

  // --- Configuration (message thread) ---
  void set_size(uint16_t size) { size_ = size; }
  uint16_t size() const { return size_; }
  // Takes effect at once on a started ring (paused and re-set-up).
  absl::Status SetAddr(const VhostUserVringAddr& addr,
                       const GuestMemoryMap& memory, uint64_t features);
  bool has_addr() const { return addr_.has_value(); }
  void set_base(uint16_t base) { queue_.set_next_avail(base); }
  uint16_t next_avail() const { return queue_.next_avail(); }
  // Replaces the kick fd; on a started ring the worker is paused around it.
  void SetKickFd(UniqueFd fd);
  bool has_kick() const { return kick_.valid(); }
  void SetCallFd(UniqueFd fd);
  void SetErrFd(UniqueFd fd) { err_ = std::move(fd); }

  // --- States ---
  bool started() const { return started_; }
  bool enabled() const { return enabled_.load(std::memory_order_acquire); }
  // Enabling a started ring wakes its worker for a pass.
  void SetEnabled(bool enabled);

  // Sets the queue up in `memory` (translating the front-end addresses) with
  // the ring features in `features`, attaches `log`, and launches the
  // worker. Needs a size, addresses and a kick fd.
  absl::Status Start(const GuestMemoryMap& memory, uint64_t features,
                     std::shared_ptr<DirtyLog> log);
  // Stops a started ring after its current pass (no-op when stopped) and
  // drops the kick fd, which the front-end sends again on restart.
  void Stop();

  // Swaps the memory table under a started ring (paused around it); on a
  // stopped ring only records it for the next Start.
  absl::Status UpdateMemory(const GuestMemoryMap& memory, uint64_t features);

  // Attaches or detaches the dirty log; safe while the worker runs.
  void SetLog(std::shared_ptr<DirtyLog> log) { queue_.SetLog(std::move(log)); }

  // Stop, then forget all configuration (RESET_DEVICE, disconnect).
  void Reset();

 private:
  absl::Status SetUpQueue(const GuestMemoryMap& memory, uint64_t features);
  void LaunchWorker();
  void JoinWorker();
  void WorkerLoop();
  void ProcessPass();
  void Wake();

  const int index_;
  Device* const device_;
  DeviceQueue queue_;
  GuestMemoryMap memory_;  // the snapshot the queue was set up with
  uint16_t size_ = 0;
  std::optional<VhostUserVringAddr> addr_;
  UniqueFd kick_;
  UniqueFd err_;
  UniqueFd wake_;  // eventfd: stop request or "enabled, have a look"
  absl::Mutex call_mu_;
  UniqueFd call_ ABSL_GUARDED_BY(call_mu_);
  bool started_ = false;
  std::atomic<bool> enabled_{false};
  std::atomic<bool> stop_requested_{false};
  std::thread worker_;
};

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_BACKEND_RING_H_
