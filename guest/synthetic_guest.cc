#include "guest/synthetic_guest.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace vhostmig::guest {
namespace {

constexpr uint32_t kStateMagic = 0x67737476;  // "vtsg"

template <typename T>
void Put(std::string* out, const T& v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

template <typename T>
bool Get(absl::string_view* in, T* v) {
  if (in->size() < sizeof(T)) return false;
  std::memcpy(v, in->data(), sizeof(T));
  in->remove_prefix(sizeof(T));
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SyntheticGuest>> SyntheticGuest::Build(
    const std::string& socket_path, const SyntheticGuestOptions& options,
    bool configure) {
  std::unique_ptr<SyntheticGuest> g(new SyntheticGuest());
  g->options_ = options;
  ASSIGN_OR_RETURN(g->ram_, GuestRam::Create(options.ram));
  ASSIGN_OR_RETURN(g->guest_dirty_,
                   vhost::DirtyLog::Create(g->ram_->memory().end_gpa()));
  constexpr uint32_t kQueues = 2;  // hiprio + one request queue
  ASSIGN_OR_RETURN(g->transport_, VhostUserTransport::Create(kQueues));
  ASSIGN_OR_RETURN(g->device_, VhostUserDevice::Connect(
                                   socket_path, g->ram_.get(),
                                   g->transport_.get(), options.device));
  // The same allocation order on both sides gives the same guest layout.
  ASSIGN_OR_RETURN(g->workload_,
                   FsWorkload::Reserve(g->ram_.get(), g->guest_dirty_));
  VirtioFsDriverOptions d;
  d.num_request_queues = kQueues - 1;
  d.queue_size = options.queue_size;
  d.event_idx = g->device_->event_idx();
  d.indirect_desc = g->device_->indirect_desc();
  d.timeout = options.timeout;
  d.guest_dirty = g->guest_dirty_;
  ASSIGN_OR_RETURN(g->driver_, VirtioFsDriver::Create(g->ram_.get(),
                                                      g->transport_.get(), d));
  if (configure) {
    RETURN_IF_ERROR(g->device_->Configure());
    RETURN_IF_ERROR(g->device_->StartRings(g->Layouts()));
  }
  return g;
}

absl::StatusOr<std::unique_ptr<SyntheticGuest>> SyntheticGuest::Create(
    const std::string& socket_path, const SyntheticGuestOptions& options) {
  ASSIGN_OR_RETURN(auto g, Build(socket_path, options, /*configure=*/true));
  RETURN_IF_ERROR(g->driver_->Init().status());
  RETURN_IF_ERROR(g->workload_->Setup(g->driver_.get(), options.workload));
  return g;
}

absl::StatusOr<std::unique_ptr<SyntheticGuest>> SyntheticGuest::CreateIncoming(
    const std::string& socket_path, const SyntheticGuestOptions& options) {
  return Build(socket_path, options, /*configure=*/false);
}

SyntheticGuest::~SyntheticGuest() { (void)StopVcpu(); }

std::vector<vhost::VringLayout> SyntheticGuest::Layouts() const {
  std::vector<vhost::VringLayout> layouts;
  for (uint32_t q = 0; q < driver_->num_queues(); ++q) {
    layouts.push_back(driver_->QueueLayout(q));
  }
  return layouts;
}

absl::Status SyntheticGuest::RunSteps(uint64_t n) {
  for (uint64_t i = 0; i < n; ++i) RETURN_IF_ERROR(workload_->Step());
  return absl::OkStatus();
}

absl::Status SyntheticGuest::StartVcpu() {
  if (vcpu_.joinable()) {
    return absl::FailedPreconditionError("the vCPU already runs");
  }
  {
    absl::MutexLock lock(&mu_);
    pause_requested_ = false;
    stop_requested_ = false;
    parked_ = false;
  }
  vcpu_ = std::thread([this] { VcpuLoop(); });
  return absl::OkStatus();
}

void SyntheticGuest::VcpuLoop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (pause_requested_ || stop_requested_) {
        parked_ = true;
        auto go = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return !pause_requested_ || stop_requested_;
        };
        mu_.Await(absl::Condition(&go));
        if (stop_requested_) return;
        parked_ = false;
      }
    }
    // A step is the unit a pause waits for: between steps no request is in
    // flight and the guest-kernel area is consistent.
    absl::Status s = workload_->Step();
    if (!s.ok()) {
      absl::MutexLock lock(&mu_);
      vcpu_status_ = s;
      parked_ = true;
      return;
    }
  }
}

absl::Status SyntheticGuest::Pause() {
  absl::MutexLock lock(&mu_);
  pause_requested_ = true;
  if (!vcpu_.joinable()) return absl::OkStatus();
  auto parked = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return parked_; };
  if (!mu_.AwaitWithTimeout(absl::Condition(&parked),
                            options_.timeout + absl::Seconds(5))) {
    return absl::DeadlineExceededError(
        "the vCPU did not reach a safe point (a request is stuck)");
  }
  return vcpu_status_;
}

absl::Status SyntheticGuest::Resume() {
  absl::MutexLock lock(&mu_);
  if (!vcpu_status_.ok()) return vcpu_status_;
  pause_requested_ = false;
  return absl::OkStatus();
}

absl::Status SyntheticGuest::StopVcpu() {
  {
    absl::MutexLock lock(&mu_);
    stop_requested_ = true;
  }
  if (vcpu_.joinable()) vcpu_.join();
  return vcpu_status();
}

absl::Status SyntheticGuest::vcpu_status() const {
  absl::MutexLock lock(&mu_);
  return vcpu_status_;
}

bool SyntheticGuest::paused() const {
  absl::MutexLock lock(&mu_);
  return parked_;
}

absl::StatusOr<std::string> SyntheticGuest::SaveState() {
  ASSIGN_OR_RETURN(VirtioFsDriver::State s, driver_->SaveState());
  std::string out;
  Put(&out, kStateMagic);
  Put(&out, static_cast<uint32_t>(s.queues.size()));
  for (const auto& q : s.queues) {
    if (!q.in_flight_heads.empty()) {
      return absl::FailedPreconditionError("a ring has requests in flight");
    }
    Put(&out, q.next_avail);
    Put(&out, q.last_used);
  }
  Put(&out, s.next_unique);
  Put(&out, s.init_out);
  return out;
}

absl::Status SyntheticGuest::Rebuild(absl::string_view state) {
  VirtioFsDriver::State s;
  uint32_t magic = 0;
  uint32_t queues = 0;
  bool ok = Get(&state, &magic) && magic == kStateMagic &&
            Get(&state, &queues) && queues == driver_->num_queues();
  for (uint32_t q = 0; ok && q < queues; ++q) {
    vhost::DriverQueue::State qs;
    ok = Get(&state, &qs.next_avail) && Get(&state, &qs.last_used);
    s.queues.push_back(qs);
  }
  ok = ok && Get(&state, &s.next_unique) && Get(&state, &s.init_out) &&
       state.empty();
  if (!ok) {
    return absl::InvalidArgumentError(
        "synthetic guest state: malformed or for another queue count");
  }
  RETURN_IF_ERROR(driver_->RestoreState(s));
  return workload_->Attach(driver_.get());
}

uint64_t SyntheticGuest::HashMemory() const {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const auto& region : ram_->memory().regions()) {
    const uint64_t* p = reinterpret_cast<const uint64_t*>(region->host());
    for (uint64_t i = 0; i < region->size() / 8; ++i) {
      h ^= p[i];
      h *= 0x100000001b3ull;
    }
  }
  return h;
}

}  // namespace vhostmig::guest
