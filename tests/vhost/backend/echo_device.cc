#include "tests/vhost/backend/echo_device.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "vhost/protocol/features.h"

namespace vhostmig::vhost::testing {

uint64_t EchoDevice::Features() const { return FeatureMask(kFeatureVersion1); }

uint64_t EchoDevice::ProtocolFeatures() const {
  return FeatureMask(ProtocolFeature::kConfig) |
         FeatureMask(ProtocolFeature::kDeviceState);
}

absl::StatusOr<std::vector<uint8_t>> EchoDevice::ReadConfig(uint32_t offset,
                                                            uint32_t size) {
  std::vector<uint8_t> config(40, 0);
  std::memcpy(config.data(), kTag, sizeof(kTag));
  const uint32_t queues = kNumQueues - 1;
  std::memcpy(config.data() + 36, &queues, sizeof(queues));
  if (offset > config.size() || size > config.size() - offset) {
    return absl::InvalidArgumentError("config access out of range");
  }
  return std::vector<uint8_t>(config.begin() + offset,
                              config.begin() + offset + size);
}

void EchoDevice::ProcessQueue(Vring& vring) {
  DeviceQueue& queue = vring.queue();
  while (std::optional<DescriptorChain> chain = queue.Pop()) {
    uint32_t copied = 0;
    if (chain->status.ok()) {
      std::vector<uint8_t> bytes(
          std::min(chain->readable_len, chain->writable_len));
      chain->CopyFromReadable(0, bytes.data(), bytes.size());
      copied = chain->CopyToWritable(0, bytes.data(), bytes.size());
    }
    {
      absl::MutexLock lock(&mu_);
      if (hold_next_) {
        hold_next_ = false;
        holding_ = true;
        // Bounded so that a failing test cannot hang the worker forever.
        mu_.AwaitWithTimeout(absl::Condition(&released_), absl::Seconds(30));
        holding_ = false;
        released_ = false;
      }
      ++processed_;
    }
    queue.PushUsed(*chain, copied);
  }
  vring.NotifyIfNeeded();
}

void EchoDevice::OnLogAllChanged(bool enabled) {
  absl::MutexLock lock(&mu_);
  log_all_changes_.push_back(enabled);
}

absl::Status EchoDevice::SaveState(int fd) {
  std::string state;
  {
    absl::MutexLock lock(&mu_);
    state = state_;
  }
  size_t done = 0;
  while (done < state.size()) {
    const ssize_t n = ::write(fd, state.data() + done, state.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "write state");
    }
    done += n;
  }
  return absl::OkStatus();
}

absl::Status EchoDevice::LoadState(int fd) {
  std::string state;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, "read state");
    }
    state.append(buf, n);
  }
  absl::MutexLock lock(&mu_);
  if (fail_load_) return absl::DataLossError("state rejected by the test");
  state_ = std::move(state);
  return absl::OkStatus();
}

void EchoDevice::Reset() {
  absl::MutexLock lock(&mu_);
  ++resets_;
}

void EchoDevice::HoldNextChain() {
  absl::MutexLock lock(&mu_);
  hold_next_ = true;
}

bool EchoDevice::WaitHeld(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&holding_), timeout);
}

void EchoDevice::ReleaseHeld() {
  absl::MutexLock lock(&mu_);
  released_ = true;
}

bool EchoDevice::WaitResets(int n, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return resets_ >= n;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
}

int EchoDevice::processed() const {
  absl::MutexLock lock(&mu_);
  return processed_;
}

std::vector<bool> EchoDevice::log_all_changes() const {
  absl::MutexLock lock(&mu_);
  return log_all_changes_;
}

void EchoDevice::set_state(std::string state) {
  absl::MutexLock lock(&mu_);
  state_ = std::move(state);
}

std::string EchoDevice::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

void EchoDevice::set_fail_load(bool fail) {
  absl::MutexLock lock(&mu_);
  fail_load_ = fail;
}

}  // namespace vhostmig::vhost::testing
