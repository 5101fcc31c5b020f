// EchoDevice: a small Device for tests. Each chain's readable bytes are
// copied into its writable buffers (as many as fit) and the chain completes
// with the number of bytes copied. It counts what the framework asks of it,
// can hold a chain "in flight" until the test releases it, and saves/loads
// a byte string as its internal state.
#ifndef VHOSTMIG_TESTS_VHOST_BACKEND_ECHO_DEVICE_H_
#define VHOSTMIG_TESTS_VHOST_BACKEND_ECHO_DEVICE_H_

#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "vhost/backend/device.h"

namespace vhostmig::vhost::testing {

class EchoDevice : public Device {
 public:
  static constexpr uint32_t kNumQueues = 2;
  // virtio-fs style config: 36-byte tag, then u32 num_request_queues.
  static constexpr char kTag[] = "echo-tag";

  uint64_t Features() const override;
  uint64_t ProtocolFeatures() const override;
  uint32_t NumQueues() const override { return kNumQueues; }
  uint16_t MaxQueueSize() const override { return 256; }
  absl::StatusOr<std::vector<uint8_t>> ReadConfig(uint32_t offset,
                                                  uint32_t size) override;
  void ProcessQueue(Vring& vring) override;
  void OnLogAllChanged(bool enabled) override;
  absl::Status SaveState(int fd) override;
  absl::Status LoadState(int fd) override;
  void Reset() override;

  // The next chain popped waits in ProcessQueue until ReleaseHeld().
  void HoldNextChain();
  // Waits (bounded) until a held chain is in flight.
  bool WaitHeld(absl::Duration timeout);
  void ReleaseHeld();

  // Waits (bounded) until Reset() was called at least `n` times.
  bool WaitResets(int n, absl::Duration timeout);

  int processed() const;
  std::vector<bool> log_all_changes() const;
  void set_state(std::string state);
  std::string state() const;
  void set_fail_load(bool fail);

 private:
  mutable absl::Mutex mu_;
  bool hold_next_ ABSL_GUARDED_BY(mu_) = false;
  bool holding_ ABSL_GUARDED_BY(mu_) = false;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
  int processed_ ABSL_GUARDED_BY(mu_) = 0;
  int resets_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<bool> log_all_changes_ ABSL_GUARDED_BY(mu_);
  std::string state_ ABSL_GUARDED_BY(mu_);
  bool fail_load_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vhostmig::vhost::testing

#endif  // VHOSTMIG_TESTS_VHOST_BACKEND_ECHO_DEVICE_H_
