#include "migration/agent/agent_service.h"

#include <sys/random.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "base/socket_server_process.h"
#include "guest/synthetic_guest.h"
#include "migration/agent/grpc_transport.h"
#include "migration/agent/validation.h"
#include "migration/destination_migration.h"
#include "migration/device_control.h"
#include "migration/source_migration.h"
#include "migration/synthetic_vmm.h"
#include "vhost/protocol/features.h"

namespace vhostmig::agent {

using v1::MigrationStatus;

// ------------------------------------------------------------------ types

struct AgentService::Device {
  std::string name;
  bool attached = false;
  std::string shared_dir;     // fs-backend devices
  std::string attach_socket;  // attached devices
  uint64_t generation = 0;    // back-ends started so far
  std::string socket;         // the current back-end's socket
  std::unique_ptr<SocketServerProcess> backend;
  std::unique_ptr<guest::SyntheticGuest> guest;
  v1::GuestSpec spec;
  v1::GuestState state = v1::GUEST_STATE_UNSPECIFIED;
  std::string migration_id;  // holding the device
  bool creating = false;     // a guest is being created
  std::string message;
};

struct AgentService::Migration {
  std::string id;
  std::string token;
  std::string device;
  v1::Role role = v1::ROLE_UNSPECIFIED;
  absl::Time started = absl::Now();

  mutable absl::Mutex mu;
  MigrationStatus status ABSL_GUARDED_BY(mu);
  uint64_t seq ABSL_GUARDED_BY(mu) = 1;  // bumped on every change
  bool cancel_requested ABSL_GUARDED_BY(mu) = false;
  // While the migration runs: the coordinator and its transport.
  migration::SourceMigration* source ABSL_GUARDED_BY(mu) = nullptr;
  migration::DestinationMigration* destination ABSL_GUARDED_BY(mu) = nullptr;
  GrpcTransport* transport ABSL_GUARDED_BY(mu) = nullptr;
  bool expired ABSL_GUARDED_BY(mu) = false;  // destination: no stream came

  // Source: kept after Run for Resolve (ring bases, log mapping).
  guest::SyntheticGuest* source_guest = nullptr;  // owned by the device
  std::unique_ptr<migration::SyntheticSourceVmm> source_vmm;
  std::unique_ptr<migration::SourceMigration> source_owned;
  // Destination: the incoming guest until it runs.
  std::unique_ptr<migration::SyntheticDestinationVmm> destination_vmm;
  uint64_t destination_hash = 0;
  bool committed = false;   // destination: Commit arrived
  absl::Notification done;  // the migration thread is finished with
                            // the transport
  std::thread thread;
  std::atomic<bool> finished{false};  // the thread is about to return
  absl::Mutex join_mu;

  // Several handlers (Confirm, Resolve, the destructor) may wait for the
  // migration thread; std::thread::join must happen once.
  void Join() {
    absl::MutexLock lock(&join_mu);
    if (thread.joinable()) thread.join();
  }

  void Update(const std::function<void(MigrationStatus&)>& change) {
    absl::MutexLock lock(&mu);
    change(status);
    ++seq;
  }
  MigrationStatus Snapshot() const {
    absl::MutexLock lock(&mu);
    MigrationStatus s = status;
    if (transport != nullptr && transport->ready_waiting()) {
      s.set_state(v1::AWAITING_COMMIT);
    }
    return s;
  }
};

namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

grpc::Status Error(grpc::StatusCode code, const std::string& message) {
  return grpc::Status(code, message);
}

std::string RandomHex(size_t bytes) {
  // Tokens authorise a Transfer stream: they must not be guessable.
  std::string raw(bytes, '\0');
  size_t done = 0;
  while (done < bytes) {
    ssize_t n = getrandom(raw.data() + done, bytes - done, 0);
    if (n > 0) done += n;
  }
  return absl::BytesToHexString(raw);
}

bool ConstantTimeEqual(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

v1::Phase ToPhase(migration::SourcePhase p) {
  switch (p) {
    case migration::SourcePhase::kSetup:
      return v1::SETUP;
    case migration::SourcePhase::kLogStart:
      return v1::LOG_START;
    case migration::SourcePhase::kPreCopy:
      return v1::PRE_COPY;
    case migration::SourcePhase::kStop:
      return v1::STOP;
    case migration::SourcePhase::kFinalSync:
      return v1::FINAL_SYNC;
    case migration::SourcePhase::kSaveState:
      return v1::SAVE_STATE;
    case migration::SourcePhase::kCheck:
      return v1::CHECK;
    case migration::SourcePhase::kHandover:
      return v1::HANDOVER;
    case migration::SourcePhase::kCancelling:
      return v1::CANCELLING;
    case migration::SourcePhase::kDone:
      return v1::DONE;
  }
  return v1::PHASE_UNSPECIFIED;
}

v1::Phase ToPhase(migration::DestinationPhase p) {
  switch (p) {
    case migration::DestinationPhase::kPrepare:
      return v1::PREPARE;
    case migration::DestinationPhase::kReceivePages:
      return v1::RECEIVE_PAGES;
    case migration::DestinationPhase::kLoadState:
      return v1::LOAD_STATE;
    case migration::DestinationPhase::kCheck:
      return v1::DESTINATION_CHECK;
    case migration::DestinationPhase::kStart:
      return v1::START;
    case migration::DestinationPhase::kTornDown:
      return v1::TORN_DOWN;
    case migration::DestinationPhase::kDone:
      return v1::DONE;
  }
  return v1::PHASE_UNSPECIFIED;
}

bool IsFinal(v1::MigrationState s) {
  return s == v1::COMPLETED || s == v1::CONFIRMED || s == v1::CANCELLED ||
         s == v1::FAILED || s == v1::IN_DOUBT || s == v1::RESOLVED;
}

// Adapters from gRPC's sync streams to FrameStream.
class ClientFrameStream : public FrameStream {
 public:
  ClientFrameStream(
      grpc::ClientReaderWriter<v1::TransferFrame, v1::TransferFrame>* stream,
      grpc::ClientContext* context)
      : stream_(stream), context_(context) {}
  bool Read(v1::TransferFrame* f) override { return stream_->Read(f); }
  bool Write(const v1::TransferFrame& f) override { return stream_->Write(f); }
  void WritesDone() override { stream_->WritesDone(); }
  void Cancel() override { context_->TryCancel(); }

 private:
  grpc::ClientReaderWriter<v1::TransferFrame, v1::TransferFrame>* stream_;
  grpc::ClientContext* context_;
};

class ServerFrameStream : public FrameStream {
 public:
  ServerFrameStream(
      grpc::ServerReaderWriter<v1::TransferFrame, v1::TransferFrame>* stream,
      grpc::ServerContext* context)
      : stream_(stream), context_(context) {}
  bool Read(v1::TransferFrame* f) override { return stream_->Read(f); }
  bool Write(const v1::TransferFrame& f) override { return stream_->Write(f); }
  void Cancel() override { context_->TryCancel(); }

 private:
  grpc::ServerReaderWriter<v1::TransferFrame, v1::TransferFrame>* stream_;
  grpc::ServerContext* context_;
};

void FillProgress(const migration::SourceProgress& p, uint64_t pages_total,
                  absl::Time started, v1::Progress* out) {
  out->set_round(p.round);
  out->set_pages_total(pages_total);
  out->set_pages_sent(p.pages_sent);
  out->set_page_bytes_sent(p.page_bytes_sent);
  out->set_pages_remaining(p.pages_remaining);
  out->set_dirty_pages_per_second(p.dirty_pages_per_second);
  out->set_bandwidth_bytes_per_second(p.bandwidth_bytes_per_second);
  out->set_expected_downtime_ms(absl::ToInt64Milliseconds(p.expected_downtime));
  out->set_state_bytes(p.state_bytes);
  out->set_guest_paused_ms(absl::ToInt64Milliseconds(p.guest_paused_for));
  out->set_elapsed_ms(absl::ToInt64Milliseconds(absl::Now() - started));
}

}  // namespace

const char* StateName(v1::MigrationState state) {
  switch (state) {
    case v1::PREPARED:
      return "prepared";
    case v1::ACTIVE:
      return "active";
    case v1::AWAITING_COMMIT:
      return "awaiting-commit";
    case v1::COMPLETED:
      return "completed";
    case v1::CONFIRMED:
      return "confirmed";
    case v1::CANCELLED:
      return "cancelled";
    case v1::FAILED:
      return "failed";
    case v1::IN_DOUBT:
      return "in-doubt";
    case v1::RESOLVED:
      return "resolved";
    default:
      return "unknown";
  }
}

// --------------------------------------------------------------- lifecycle

absl::StatusOr<std::unique_ptr<AgentService>> AgentService::Create(
    AgentOptions options) {
  std::unique_ptr<AgentService> agent(new AgentService(std::move(options)));
  auto store = StateStore::Open(agent->options_.state_dir);
  if (!store.ok()) return store.status();
  agent->store_ = *std::move(store);
  absl::MutexLock lock(&agent->mu_);
  for (MigrationStatus record : agent->store_->records()) {
    // Whatever was running died with the previous agent process (the
    // synthetic guests live in it); say so, but keep IN_DOUBT as it is:
    // only an operator may settle that.
    if (record.state() == v1::ACTIVE || record.state() == v1::PREPARED ||
        record.state() == v1::AWAITING_COMMIT) {
      record.set_state(v1::FAILED);
      record.set_message(absl::StrCat(
          "the agent restarted during this migration (",
          v1::Phase_Name(record.phase()), "); its guest was lost with it",
          record.role() == v1::DESTINATION && record.phase() == v1::START
              ? " after Commit arrived: the guest may have run here"
              : ""));
      (void)agent->store_->Put(record);
    }
    agent->restored_[record.id()] = record;
  }
  return agent;
}

AgentService::AgentService(AgentOptions options)
    : options_(std::move(options)) {}

AgentService::~AgentService() {
  std::vector<std::shared_ptr<Migration>> migrations;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    migrations = migrations_;
  }
  for (auto& m : migrations) {
    absl::MutexLock lock(&m->mu);
    m->cancel_requested = true;
    if (m->source != nullptr) m->source->Cancel();
    if (m->destination != nullptr) m->destination->Cancel();
  }
  for (auto& m : migrations) {
    m->Join();
  }
  // Coordinators (they reference guests) before the guests.
  for (auto& m : migrations) {
    m->source_owned.reset();
    m->source_vmm.reset();
    m->destination_vmm.reset();
  }
  absl::MutexLock lock(&mu_);
  devices_.clear();
}

void AgentService::Log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "vhostmig-agent: %s\n", line.c_str());
  }
}

void AgentService::Persist(const MigrationStatus& status) {
  absl::Status s = store_->Put(status);
  if (!s.ok())
    Log(absl::StrCat("cannot persist migration ", status.id(), ": ",
                     s.ToString()));
}

absl::StatusOr<std::string> AgentService::BackendFor(Device& device) {
  if (device.attached) {
    device.socket = device.attach_socket;
    return device.socket;
  }
  if (options_.backend_command.empty()) {
    return absl::FailedPreconditionError(
        "this agent has no fs back-end configured (start it with --fs-backend "
        "or --backend-cmd), so it can only attach to existing sockets");
  }
  ++device.generation;
  const std::string stem =
      absl::StrCat(options_.run_dir, "/", device.name, "-", device.generation);
  device.socket = stem + ".sock";
  std::vector<std::string> argv;
  for (const std::string& arg : options_.backend_command) {
    argv.push_back(absl::StrReplaceAll(
        arg, {{"{sock}", device.socket}, {"{dir}", device.shared_dir}}));
  }
  device.backend.reset();
  auto process = SocketServerProcess::Start(argv, device.socket, stem + ".log");
  if (!process.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "starting the fs back-end for device ", device.name, " failed: ",
        process.status().message(), " (its output: ", stem, ".log)"));
  }
  device.backend = *std::move(process);
  return device.socket;
}

void AgentService::DeviceInfoLocked(const Device& d,
                                    v1::DeviceInfo* out) const {
  out->set_name(d.name);
  out->set_kind(d.attached ? "attached" : "fs-backend");
  out->set_shared_dir(d.shared_dir);
  out->set_socket(d.attached ? d.attach_socket : d.socket);
  out->set_guest_state(d.state);
  *out->mutable_guest() = d.spec;
  out->set_migration_id(d.migration_id);
  out->set_message(d.message);
  if (d.guest != nullptr) {
    // Read without pausing: a counter, possibly a step behind.
    out->set_workload_steps(d.guest->workload().counts().steps);
  }
}

void AgentService::ReapFinishedThreads() {
  std::vector<std::shared_ptr<Migration>> migrations;
  {
    absl::MutexLock lock(&mu_);
    migrations = migrations_;
  }
  // A finished thread still holds its stack until joined; drills start
  // many migrations.
  for (auto& m : migrations) {
    if (m->finished) m->Join();
  }
}

std::shared_ptr<AgentService::Migration> AgentService::FindMigration(
    const std::string& id, v1::Role role) {
  absl::MutexLock lock(&mu_);
  for (auto& m : migrations_) {
    if (m->id == id && (role == v1::ROLE_UNSPECIFIED || m->role == role)) {
      return m;
    }
  }
  return nullptr;
}

std::string AgentService::UnresolvedMigrationFor(const std::string& device) {
  for (auto& [id, record] : restored_) {
    if (record.device() == device && record.state() == v1::IN_DOUBT) return id;
  }
  for (auto& m : migrations_) {
    if (m->device == device && m->role == v1::SOURCE &&
        m->Snapshot().state() == v1::IN_DOUBT) {
      return m->id;
    }
  }
  return "";
}

void AgentService::ReleaseDevice(const std::string& name, bool destroy_guest,
                                 v1::GuestState state,
                                 const std::string& message) {
  std::unique_ptr<guest::SyntheticGuest> guest;
  std::unique_ptr<SocketServerProcess> backend;
  {
    absl::MutexLock lock(&mu_);
    auto it = devices_.find(name);
    if (it == devices_.end()) return;
    Device& d = *it->second;
    d.migration_id.clear();
    d.state = state;
    d.message = message;
    if (destroy_guest) {
      guest = std::move(d.guest);
      backend = std::move(d.backend);
      d.state = v1::GUEST_STATE_UNSPECIFIED;
    }
  }
  // Outside the lock: stopping a vCPU and a daemon takes a moment. The
  // guest first, so the daemon sees its front-end leave.
  guest.reset();
  backend.reset();
}

// ----------------------------------------------------------------- devices

grpc::Status AgentService::StartDevice(grpc::ServerContext*,
                                       const v1::StartDeviceRequest* request,
                                       v1::DeviceInfo* response) {
  if (absl::Status s = ValidateName("name", request->name()); !s.ok()) {
    return ToGrpc(s);
  }
  auto device = std::make_unique<Device>();
  device->name = request->name();
  switch (request->backend_case()) {
    case v1::StartDeviceRequest::kSharedDir: {
      if (absl::Status s =
              ValidateAbsolutePath("shared_dir", request->shared_dir());
          !s.ok()) {
        return ToGrpc(s);
      }
      std::error_code ec;
      if (!std::filesystem::is_directory(request->shared_dir(), ec)) {
        return Error(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("shared_dir: ", QuoteForMessage(request->shared_dir()),
                         " is not an existing directory"));
      }
      if (options_.backend_command.empty()) {
        return Error(grpc::StatusCode::FAILED_PRECONDITION,
                     "this agent has no fs back-end configured (start it with "
                     "--fs-backend or --backend-cmd); attach_socket works");
      }
      device->shared_dir = request->shared_dir();
      break;
    }
    case v1::StartDeviceRequest::kAttachSocket: {
      if (absl::Status s = ValidateAbsolutePath("attach_socket",
                                                request->attach_socket(), 107);
          !s.ok()) {
        return ToGrpc(s);
      }
      std::error_code ec;
      if (!std::filesystem::is_socket(request->attach_socket(), ec)) {
        return Error(grpc::StatusCode::INVALID_ARGUMENT,
                     absl::StrCat("attach_socket: ",
                                  QuoteForMessage(request->attach_socket()),
                                  " is not a unix socket (is the back-end "
                                  "running?)"));
      }
      device->attached = true;
      device->attach_socket = request->attach_socket();
      break;
    }
    default:
      return Error(grpc::StatusCode::INVALID_ARGUMENT,
                   "one of shared_dir or attach_socket is required");
  }
  absl::MutexLock lock(&mu_);
  if (devices_.count(device->name)) {
    return Error(grpc::StatusCode::ALREADY_EXISTS,
                 absl::StrCat("device ", device->name,
                              " exists already (vhostmig list shows it)"));
  }
  if (devices_.size() >= 64) {
    return Error(grpc::StatusCode::RESOURCE_EXHAUSTED,
                 "this agent hosts 64 devices already");
  }
  DeviceInfoLocked(*device, response);
  devices_[device->name] = std::move(device);
  return grpc::Status::OK;
}

grpc::Status AgentService::StopDevice(grpc::ServerContext*,
                                      const v1::StopDeviceRequest* request,
                                      v1::DeviceInfo* response) {
  if (absl::Status s = ValidateName("name", request->name()); !s.ok()) {
    return ToGrpc(s);
  }
  std::unique_ptr<Device> gone;
  {
    absl::MutexLock lock(&mu_);
    auto it = devices_.find(request->name());
    if (it == devices_.end()) {
      return Error(grpc::StatusCode::NOT_FOUND,
                   absl::StrCat("no device ", request->name()));
    }
    Device& d = *it->second;
    if (!d.migration_id.empty() || d.creating || d.guest != nullptr) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("device ", d.name,
                                " is in use (destroy its guest first)"));
    }
    DeviceInfoLocked(d, response);
    gone = std::move(it->second);
    devices_.erase(it);
  }
  return grpc::Status::OK;
}

grpc::Status AgentService::CreateGuest(grpc::ServerContext*,
                                       const v1::CreateGuestRequest* request,
                                       v1::DeviceInfo* response) {
  if (absl::Status s = ValidateName("device", request->device()); !s.ok()) {
    return ToGrpc(s);
  }
  if (request->warmup_steps() > 100000) {
    return Error(grpc::StatusCode::INVALID_ARGUMENT,
                 "warmup_steps: at most 100000");
  }
  v1::GuestSpec spec = request->spec();
  auto options = GuestOptionsFromSpec(&spec);
  if (!options.ok()) return ToGrpc(options.status());
  std::string socket;
  Device* d = nullptr;
  {
    absl::MutexLock lock(&mu_);
    auto it = devices_.find(request->device());
    if (it == devices_.end()) {
      return Error(
          grpc::StatusCode::NOT_FOUND,
          absl::StrCat("no device ", request->device(), " (start it first)"));
    }
    d = it->second.get();
    if (d->guest != nullptr || d->creating || !d->migration_id.empty()) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("device ", d->name, " has a guest already"));
    }
    if (std::string m = UnresolvedMigrationFor(d->name); !m.empty()) {
      return Error(
          grpc::StatusCode::FAILED_PRECONDITION,
          absl::StrCat("device ", d->name, " was handed over by migration ", m,
                       " whose destination is unknown; decide first with "
                       "`vhostmig resolve --id ",
                       m, "`"));
    }
    auto s = BackendFor(*d);
    if (!s.ok()) return ToGrpc(s.status());
    socket = *s;
    d->creating = true;
  }
  auto build = [&]() -> absl::StatusOr<std::unique_ptr<guest::SyntheticGuest>> {
    auto g = guest::SyntheticGuest::Create(socket, *options);
    if (!g.ok()) return g.status();
    if (absl::Status s = (*g)->RunSteps(request->warmup_steps()); !s.ok()) {
      return s;
    }
    if (absl::Status s = (*g)->StartVcpu(); !s.ok()) return s;
    return g;
  };
  auto g = build();
  absl::MutexLock lock(&mu_);
  d->creating = false;
  if (!g.ok()) {
    d->backend.reset();
    return Error(grpc::StatusCode::FAILED_PRECONDITION,
                 absl::StrCat("creating the guest on device ", d->name,
                              " failed: ", g.status().ToString()));
  }
  d->guest = *std::move(g);
  d->spec = spec;
  d->state = v1::GUEST_RUNNING;
  d->message.clear();
  DeviceInfoLocked(*d, response);
  return grpc::Status::OK;
}

grpc::Status AgentService::DestroyGuest(grpc::ServerContext*,
                                        const v1::DestroyGuestRequest* request,
                                        v1::DeviceInfo* response) {
  if (absl::Status s = ValidateName("device", request->device()); !s.ok()) {
    return ToGrpc(s);
  }
  {
    absl::MutexLock lock(&mu_);
    auto it = devices_.find(request->device());
    if (it == devices_.end()) {
      return Error(grpc::StatusCode::NOT_FOUND,
                   absl::StrCat("no device ", request->device()));
    }
    Device& d = *it->second;
    if (!d.migration_id.empty() || d.creating) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("device ", d.name, " is used by migration ",
                                d.migration_id,
                                "; cancel, confirm or resolve it first"));
    }
  }
  ReleaseDevice(request->device(), /*destroy_guest=*/true,
                v1::GUEST_STATE_UNSPECIFIED, "");
  absl::MutexLock lock(&mu_);
  auto it = devices_.find(request->device());
  if (it != devices_.end()) DeviceInfoLocked(*it->second, response);
  return grpc::Status::OK;
}

grpc::Status AgentService::VerifyGuest(grpc::ServerContext*,
                                       const v1::VerifyGuestRequest* request,
                                       v1::VerifyGuestResponse* response) {
  if (absl::Status s = ValidateName("device", request->device()); !s.ok()) {
    return ToGrpc(s);
  }
  guest::SyntheticGuest* g = nullptr;
  {
    absl::MutexLock lock(&mu_);
    auto it = devices_.find(request->device());
    if (it == devices_.end()) {
      return Error(grpc::StatusCode::NOT_FOUND,
                   absl::StrCat("no device ", request->device()));
    }
    Device& d = *it->second;
    if (d.guest == nullptr || d.state != v1::GUEST_RUNNING ||
        !d.migration_id.empty() || d.creating) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("device ", d.name,
                                " has no running guest that is not migrating"));
    }
    // Hold the device while checking so no migration starts meanwhile.
    d.creating = true;
    g = d.guest.get();
  }
  absl::Status status = g->Pause();
  if (status.ok()) status = g->vcpu_status();
  if (status.ok()) status = g->workload().VerifyAll();
  const guest::WorkloadCounts counts = g->workload().counts();
  response->set_workload_steps(counts.steps);
  response->set_blocks_verified(counts.blocks_verified);
  response->set_memory_hash(g->HashMemory());
  absl::Status resumed = g->Resume();
  if (status.ok()) status = resumed;
  response->set_ok(status.ok());
  response->set_message(status.ok() ? "" : status.ToString());
  absl::MutexLock lock(&mu_);
  auto it = devices_.find(request->device());
  if (it != devices_.end()) it->second->creating = false;
  return grpc::Status::OK;
}

grpc::Status AgentService::List(grpc::ServerContext*, const v1::ListRequest*,
                                v1::ListResponse* response) {
  std::vector<std::shared_ptr<Migration>> migrations;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, d] : devices_) {
      DeviceInfoLocked(*d, response->add_devices());
    }
    migrations = migrations_;
    for (auto& [id, record] : restored_) {
      bool live = false;
      for (auto& m : migrations_) live |= m->id == id;
      if (!live) *response->add_migrations() = record;
    }
  }
  for (auto& m : migrations) *response->add_migrations() = m->Snapshot();
  return grpc::Status::OK;
}

// -------------------------------------------------------------- migrations

grpc::Status AgentService::Prepare(grpc::ServerContext*,
                                   const v1::PrepareRequest* request,
                                   v1::PrepareResponse* response) {
  if (absl::Status s = ValidateName("device", request->device()); !s.ok()) {
    return ToGrpc(s);
  }
  if (request->wait_for_source_ms() > 3600000) {
    return Error(grpc::StatusCode::INVALID_ARGUMENT,
                 "wait_for_source_ms: at most 3600000");
  }
  v1::GuestSpec spec = request->spec();
  auto options = GuestOptionsFromSpec(&spec);
  if (!options.ok()) return ToGrpc(options.status());
  ReapFinishedThreads();
  auto m = std::make_shared<Migration>();
  m->id = RandomHex(8);
  m->token = RandomHex(16);
  m->device = request->device();
  m->role = v1::DESTINATION;
  std::string socket;
  Device* d = nullptr;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      return Error(grpc::StatusCode::UNAVAILABLE, "the agent is shutting down");
    }
    auto it = devices_.find(request->device());
    if (it == devices_.end()) {
      return Error(grpc::StatusCode::NOT_FOUND,
                   absl::StrCat("no device ", request->device(),
                                " on the destination (start it there first)"));
    }
    d = it->second.get();
    if (d->guest != nullptr || d->creating || !d->migration_id.empty()) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("device ", d->name,
                                " on the destination is in use (a guest or a "
                                "migration)"));
    }
    auto s = BackendFor(*d);
    if (!s.ok()) return ToGrpc(s.status());
    socket = *s;
    d->migration_id = m->id;
  }
  auto incoming = guest::SyntheticGuest::CreateIncoming(socket, *options);
  if (!incoming.ok()) {
    ReleaseDevice(request->device(), true, v1::GUEST_STATE_UNSPECIFIED, "");
    return Error(grpc::StatusCode::FAILED_PRECONDITION,
                 absl::StrCat("creating the incoming guest failed: ",
                              incoming.status().ToString()));
  }
  m->destination_vmm = std::make_unique<migration::SyntheticDestinationVmm>(
      *std::move(incoming));
  m->Update([&](MigrationStatus& s) {
    s.set_id(m->id);
    s.set_role(v1::DESTINATION);
    s.set_device(m->device);
    s.set_state(v1::PREPARED);
    s.set_phase(v1::PREPARE);
    s.mutable_progress()->set_pages_total(
        m->destination_vmm->memory().end_gpa() / migration::kPageSize);
  });
  {
    absl::MutexLock lock(&mu_);
    d->state = v1::GUEST_INCOMING;
    d->spec = spec;
    migrations_.push_back(m);
  }
  const absl::Duration wait =
      request->wait_for_source_ms() == 0
          ? absl::Seconds(60)
          : absl::Milliseconds(request->wait_for_source_ms());
  m->thread = std::thread([this, m, wait] { RunDestination(m, wait); });
  response->set_migration_id(m->id);
  response->set_token(m->token);
  Log(absl::StrCat("prepared migration ", m->id, " into device ", m->device));
  return grpc::Status::OK;
}

void AgentService::RunDestination(std::shared_ptr<Migration> m,
                                  absl::Duration wait) {
  GrpcTransport* transport = nullptr;
  bool cancelled = false;
  {
    absl::MutexLock lock(&m->mu);
    auto arrived = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(m->mu) {
      return m->transport != nullptr || m->cancel_requested;
    };
    m->mu.AwaitWithTimeout(absl::Condition(&arrived), wait);
    transport = m->transport;
    cancelled = m->cancel_requested;
    if (transport == nullptr) m->expired = true;
  }
  if (transport == nullptr) {
    m->destination_vmm->Teardown();
    ReleaseDevice(m->device, true, v1::GUEST_STATE_UNSPECIFIED, "");
    m->Update([&](MigrationStatus& s) {
      s.set_state(cancelled ? v1::CANCELLED : v1::FAILED);
      s.set_phase(v1::TORN_DOWN);
      s.set_message(cancelled ? "cancelled before the source connected"
                              : absl::StrCat("no source connected within ",
                                             absl::FormatDuration(wait),
                                             "; the incoming guest was torn "
                                             "down"));
    });
    Persist(m->Snapshot());
    m->done.Notify();
    m->finished = true;
    return;
  }
  migration::DestinationOptions options;
  Migration* raw = m.get();
  options.observer = [this, raw](const migration::DestinationProgress& p) {
    if (p.phase == migration::DestinationPhase::kStart && !raw->committed) {
      // Commit arrived: the guest is about to run here. RAM is hashed
      // before any ring runs, to compare with the paused source's.
      raw->committed = true;
      if (raw->destination_vmm->guest() != nullptr) {
        raw->destination_hash = raw->destination_vmm->guest()->HashMemory();
      }
    }
    raw->Update([&](MigrationStatus& s) {
      s.set_state(v1::ACTIVE);
      s.set_phase(ToPhase(p.phase));
      s.mutable_progress()->set_pages_received(p.pages_received);
      s.mutable_progress()->set_state_bytes(p.state_bytes);
      s.mutable_progress()->set_elapsed_ms(
          absl::ToInt64Milliseconds(absl::Now() - raw->started));
    });
    if (p.phase == migration::DestinationPhase::kStart) {
      MigrationStatus record = raw->Snapshot();
      record.set_message("Commit received: the guest starts here");
      Persist(record);
    }
  };
  migration::DestinationMigration destination(m->destination_vmm.get(),
                                              transport, options);
  {
    absl::MutexLock lock(&m->mu);
    m->destination = &destination;
    if (m->cancel_requested) destination.Cancel();
  }
  absl::Status status = destination.Run();
  {
    absl::MutexLock lock(&m->mu);
    m->destination = nullptr;
  }
  if (status.ok()) {
    std::unique_ptr<guest::SyntheticGuest> g = m->destination_vmm->TakeGuest();
    {
      absl::MutexLock lock(&mu_);
      Device& d = *devices_.at(m->device);
      d.guest = std::move(g);
      d.state = v1::GUEST_RUNNING;
      d.migration_id.clear();
      d.message.clear();
    }
    v1::TransferFrame started;
    started.mutable_started()->set_memory_hash(m->destination_hash);
    (void)transport->SendControl(std::move(started));
    m->Update([&](MigrationStatus& s) {
      s.set_state(v1::COMPLETED);
      s.set_phase(v1::DONE);
      s.set_message("the guest runs here");
      s.mutable_result()->set_destination_memory_hash(m->destination_hash);
      s.mutable_result()->set_total_ms(
          absl::ToInt64Milliseconds(absl::Now() - m->started));
    });
  } else if (m->committed) {
    // After Commit nothing is torn down: the source stays paused (it gets
    // StartFailed) and an operator decides.
    v1::TransferFrame failed;
    failed.mutable_start_failed()->set_reason(status.ToString());
    (void)transport->SendControl(std::move(failed));
    std::unique_ptr<guest::SyntheticGuest> g = m->destination_vmm->TakeGuest();
    {
      absl::MutexLock lock(&mu_);
      Device& d = *devices_.at(m->device);
      d.guest = std::move(g);
      d.state = v1::GUEST_FAILED;
      d.migration_id.clear();
      d.message = status.ToString();
    }
    m->Update([&](MigrationStatus& s) {
      s.set_state(v1::FAILED);
      s.set_message(absl::StrCat("starting the guest after Commit failed: ",
                                 status.ToString()));
    });
  } else {
    // The coordinator tore the incoming guest down; stop its back-end too.
    ReleaseDevice(m->device, true, v1::GUEST_STATE_UNSPECIFIED, "");
    const bool cancelled = absl::IsCancelled(status) || absl::IsAborted(status);
    m->Update([&](MigrationStatus& s) {
      s.set_state(cancelled ? v1::CANCELLED : v1::FAILED);
      s.set_phase(v1::TORN_DOWN);
      s.set_message(absl::StrCat("torn down: ", status.ToString()));
    });
  }
  Persist(m->Snapshot());
  Log(absl::StrCat("destination migration ", m->id, ": ",
                   StateName(m->Snapshot().state()), " ", status.ToString()));
  m->done.Notify();
  m->finished = true;
}

grpc::Status AgentService::Transfer(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::TransferFrame, v1::TransferFrame>* stream) {
  v1::TransferFrame open;
  if (!stream->Read(&open)) {
    return Error(grpc::StatusCode::CANCELLED,
                 "the stream ended before opening");
  }
  if (!open.has_open()) {
    return Error(grpc::StatusCode::INVALID_ARGUMENT,
                 "the first Transfer frame must be `open`");
  }
  if (absl::Status s =
          ValidateHexId("open.migration_id", open.open().migration_id());
      !s.ok()) {
    return ToGrpc(s);
  }
  if (absl::Status s = ValidateHexId("open.token", open.open().token());
      !s.ok()) {
    return ToGrpc(s);
  }
  std::shared_ptr<Migration> m =
      FindMigration(open.open().migration_id(), v1::DESTINATION);
  if (m == nullptr) {
    return Error(grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("no prepared migration ",
                              open.open().migration_id(), " on this agent"));
  }
  if (!ConstantTimeEqual(m->token, open.open().token())) {
    return Error(grpc::StatusCode::PERMISSION_DENIED,
                 "wrong token for this migration (use the one Prepare "
                 "returned)");
  }
  ServerFrameStream frames(stream, context);
  GrpcTransportOptions options;
  const uint64_t window = open.open().window_bytes();
  options.peer_window_bytes =
      window == 0 ? options.peer_window_bytes
                  : std::clamp<uint64_t>(window, 64 << 10, 64ull << 20);
  auto transport = std::make_unique<GrpcTransport>(&frames, options);
  {
    absl::MutexLock lock(&m->mu);
    if (m->expired || m->transport != nullptr || m->cancel_requested) {
      transport.reset();
      return Error(grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("migration ", m->id,
                                " is not waiting for a source any more"));
    }
    // Accepted: a zero credit is the first frame the source sees.
    v1::TransferFrame accept;
    accept.set_credit(0);
    (void)transport->SendControl(std::move(accept));
    m->transport = transport.get();
  }
  m->done.WaitForNotification();
  {
    absl::MutexLock lock(&m->mu);
    m->transport = nullptr;
  }
  transport->Close();
  transport.reset();
  return grpc::Status::OK;
}

grpc::Status AgentService::Perform(grpc::ServerContext*,
                                   const v1::PerformRequest* request,
                                   v1::MigrationStatus* response) {
  for (absl::Status s : {ValidateName("device", request->device()),
                         ValidateAddress("destination", request->destination()),
                         ValidateHexId("migration_id", request->migration_id()),
                         ValidateHexId("token", request->token()),
                         ValidateMigrationOptions(request->options())}) {
    if (!s.ok()) return ToGrpc(s);
  }
  if (FindMigration(request->migration_id(), v1::SOURCE) != nullptr) {
    return Error(grpc::StatusCode::ALREADY_EXISTS,
                 absl::StrCat("migration ", request->migration_id(),
                              " is already running from this agent"));
  }
  ReapFinishedThreads();
  auto m = std::make_shared<Migration>();
  m->id = request->migration_id();
  m->token = request->token();
  m->device = request->device();
  m->role = v1::SOURCE;
  uint64_t pages = 0;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) {
      return Error(grpc::StatusCode::UNAVAILABLE, "the agent is shutting down");
    }
    auto it = devices_.find(request->device());
    if (it == devices_.end()) {
      return Error(
          grpc::StatusCode::NOT_FOUND,
          absl::StrCat("no device ", request->device(), " on the source"));
    }
    Device& d = *it->second;
    if (d.guest == nullptr || d.state != v1::GUEST_RUNNING || d.creating ||
        !d.migration_id.empty()) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("device ", d.name,
                                " has no running guest free to migrate"));
    }
    d.migration_id = m->id;
    m->source_guest = d.guest.get();
    pages = d.guest->ram().memory().end_gpa() / migration::kPageSize;
    m->Update([&](MigrationStatus& s) {
      s.set_id(m->id);
      s.set_role(v1::SOURCE);
      s.set_device(m->device);
      s.set_peer(request->destination());
      s.set_state(v1::ACTIVE);
      s.set_phase(v1::SETUP);
      s.mutable_progress()->set_pages_total(pages);
    });
    migrations_.push_back(m);
  }
  m->thread = std::thread([this, m, r = *request] { RunSource(m, r); });
  *response = m->Snapshot();
  Log(absl::StrCat("performing migration ", m->id, " of device ", m->device,
                   " to ", request->destination()));
  return grpc::Status::OK;
}

void AgentService::RunSource(std::shared_ptr<Migration> m,
                             v1::PerformRequest request) {
  const v1::MigrationOptions& o = request.options();
  // Failures before any page moved: the guest never stopped.
  auto fail_early = [&](const std::string& message) {
    ReleaseDevice(m->device, false, v1::GUEST_RUNNING, "");
    m->Update([&](MigrationStatus& s) {
      s.set_state(v1::FAILED);
      s.set_phase(v1::DONE);
      s.set_source_resumed(true);
      s.set_message(message);
    });
    Persist(m->Snapshot());
    Log(absl::StrCat("source migration ", m->id, ": ", message));
    m->finished = true;
  };
  auto channel = DialAgent(request.destination(), options_.peer_tls);
  if (!channel.ok()) return fail_early(channel.status().ToString());
  if (!(*channel)->WaitForConnected(
          absl::ToChronoTime(absl::Now() + absl::Seconds(10)))) {
    return fail_early(absl::StrCat(
        "cannot connect to the destination agent at ", request.destination(),
        " within 10s: is it running and reachable from this host, and do "
        "both agents use the same TLS CA?"));
  }
  auto stub = v1::Agent::NewStub(*channel);
  grpc::ClientContext context;
  auto stream = stub->Transfer(&context);
  v1::TransferFrame open;
  open.mutable_open()->set_migration_id(m->id);
  open.mutable_open()->set_token(m->token);
  open.mutable_open()->set_window_bytes(GrpcTransportOptions().window_bytes);
  v1::TransferFrame accept;
  bool opened;
  {
    // The destination answers at once; a silent one is cut off.
    absl::Notification answered;
    std::thread guard([&] {
      if (!answered.WaitForNotificationWithTimeout(absl::Seconds(10))) {
        context.TryCancel();
      }
    });
    opened = stream->Write(open) && stream->Read(&accept) &&
             accept.kind_case() == v1::TransferFrame::kCredit;
    answered.Notify();
    guard.join();
  }
  if (!opened) {
    // The stream already ended (refused, or cut off by the guard): Finish
    // returns the destination's reason.
    grpc::Status s = stream->Finish();
    return fail_early(
        absl::StrCat("the destination agent refused the "
                     "transfer: ",
                     s.error_message().empty() ? "no answer within 10s"
                                               : s.error_message()));
  }

  ClientFrameStream frames(stream.get(), &context);
  GrpcTransportOptions transport_options;
  transport_options.max_bandwidth_bytes_per_second =
      o.max_bandwidth_mib_s() * 1048576.0;
  auto transport = std::make_unique<GrpcTransport>(&frames, transport_options);
  if (o.manual_commit()) transport->HoldReady();

  m->source_vmm =
      std::make_unique<migration::SyntheticSourceVmm>(m->source_guest);
  migration::SourceOptions options;
  if (o.downtime_limit_ms() > 0) {
    options.downtime_budget = absl::Milliseconds(o.downtime_limit_ms());
  }
  if (o.max_rounds() > 0) options.max_rounds = o.max_rounds();
  if (o.manual_commit()) options.ready_timeout = absl::Minutes(10);
  const uint64_t pages_total =
      m->source_guest->ram().memory().end_gpa() / migration::kPageSize;
  Migration* raw = m.get();
  const v1::Phase cancel_at = o.cancel_at();
  options.observer = [this, raw, pages_total,
                      cancel_at](const migration::SourceProgress& p) {
    const v1::Phase phase = ToPhase(p.phase);
    raw->Update([&](MigrationStatus& s) {
      s.set_phase(phase);
      FillProgress(p, pages_total, raw->started, s.mutable_progress());
    });
    if (phase == v1::STOP) {
      {
        absl::MutexLock lock(&mu_);
        devices_.at(raw->device)->state = v1::GUEST_PAUSED;
      }
      // The bandwidth limit protects a running guest's host; once the guest
      // is paused it would only lengthen the downtime (QEMU lifts its rate
      // limit for the completion stage too).
      absl::MutexLock lock(&raw->mu);
      if (raw->transport != nullptr) raw->transport->SetPacing(false);
    }
    if (phase == v1::HANDOVER) {
      // Recorded before Commit is sent: if this agent dies from here on,
      // the restarted agent must not treat the device as free.
      MigrationStatus record = raw->Snapshot();
      record.set_state(v1::IN_DOUBT);
      record.set_message(
          "Commit was being sent when the agent stopped; the destination may "
          "run the guest. Check it, then `vhostmig resolve`");
      Persist(record);
    }
    if (phase == options_.debug_hold_phase) {
      Log(absl::StrCat("holding migration ", raw->id, " in ",
                       v1::Phase_Name(phase), " for ",
                       absl::FormatDuration(options_.debug_hold)));
      absl::SleepFor(options_.debug_hold);
    }
    if (cancel_at != v1::PHASE_UNSPECIFIED && phase == cancel_at) {
      absl::MutexLock lock(&raw->mu);
      if (raw->source != nullptr) raw->source->Cancel();
    }
  };
  m->source_owned = std::make_unique<migration::SourceMigration>(
      m->source_vmm.get(), transport.get(), options);
  {
    absl::MutexLock lock(&m->mu);
    m->source = m->source_owned.get();
    m->transport = transport.get();
    if (m->cancel_requested) m->source->Cancel();
  }
  absl::Status status = m->source_owned->Run();
  const migration::SourceProgress final_progress = m->source_owned->progress();
  const migration::TransportCounters counters = transport->sent();

  if (status.ok() || absl::IsDataLoss(status)) {
    // Committed (or maybe): the source stays paused for good unless an
    // operator decides otherwise. Hash RAM while nothing writes it.
    const uint64_t source_hash = m->source_guest->HashMemory();
    absl::StatusOr<v1::TransferFrame> verdict =
        status.ok() ? transport->AwaitStarted(options_.started_timeout)
                    : absl::StatusOr<v1::TransferFrame>(status);
    const bool started = verdict.ok() && verdict->has_started();
    m->Update([&](MigrationStatus& s) {
      v1::MigrationResult* r = s.mutable_result();
      r->set_downtime_ms(
          absl::ToInt64Milliseconds(final_progress.guest_paused_for));
      r->set_total_ms(absl::ToInt64Milliseconds(absl::Now() - m->started));
      r->set_rounds(final_progress.round);
      r->set_pages_sent(counters.pages);
      r->set_page_bytes_sent(counters.page_data_bytes);
      r->set_state_bytes(counters.state_bytes);
      r->set_source_memory_hash(source_hash);
      s.set_phase(v1::DONE);
      s.set_source_resumed(false);
      if (started) {
        r->set_destination_memory_hash(verdict->started().memory_hash());
        r->set_memory_verified(verdict->started().memory_hash() == source_hash);
        s.set_state(v1::COMPLETED);
        s.set_message(r->memory_verified()
                          ? "handed over; destination memory equals the "
                            "source's"
                          : "handed over, but destination memory differs "
                            "from the source's");
      } else {
        s.set_state(v1::IN_DOUBT);
        s.set_message(absl::StrCat(
            "the source stays paused: after Commit the destination did not "
            "confirm that its guest started (",
            verdict.ok() ? verdict->start_failed().reason()
                         : std::string(verdict.status().message()),
            "). Ask the destination (`vhostmig status --agent DEST --id ",
            m->id, "`), then `vhostmig resolve --agent SOURCE --id ", m->id,
            " --resume-source|--destroy-source`"));
      }
    });
    {
      absl::MutexLock lock(&mu_);
      Device& d = *devices_.at(m->device);
      d.state = v1::GUEST_HANDED_OVER;
      d.message = started ? "" : "migration in doubt: resolve it";
    }
  } else {
    const bool cancelled = absl::IsCancelled(status);
    ReleaseDevice(m->device, false, v1::GUEST_RUNNING, "");
    m->Update([&](MigrationStatus& s) {
      s.set_phase(v1::DONE);
      s.set_state(cancelled ? v1::CANCELLED : v1::FAILED);
      s.set_source_resumed(true);
      s.set_message(absl::StrCat("the source runs again: ", status.ToString()));
      s.mutable_result()->set_total_ms(
          absl::ToInt64Milliseconds(absl::Now() - m->started));
      s.mutable_result()->set_rounds(final_progress.round);
      s.mutable_result()->set_pages_sent(counters.pages);
      s.mutable_result()->set_state_bytes(counters.state_bytes);
    });
  }
  {
    absl::MutexLock lock(&m->mu);
    m->source = nullptr;
    m->transport = nullptr;
  }
  transport->Close();
  transport.reset();
  context.TryCancel();
  (void)stream->Finish();
  Persist(m->Snapshot());
  Log(absl::StrCat("source migration ", m->id, ": ",
                   StateName(m->Snapshot().state()), " ", status.ToString()));
  m->finished = true;
}

grpc::Status AgentService::Commit(grpc::ServerContext*,
                                  const v1::CommitRequest* request,
                                  v1::MigrationStatus* response) {
  if (absl::Status s = ValidateHexId("migration_id", request->migration_id());
      !s.ok()) {
    return ToGrpc(s);
  }
  auto m = FindMigration(request->migration_id(), v1::SOURCE);
  if (m == nullptr) {
    return Error(grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("no migration ", request->migration_id(),
                              " from this agent"));
  }
  {
    absl::MutexLock lock(&m->mu);
    if (m->transport == nullptr) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("migration ", m->id, " is ",
                                StateName(m->status.state()),
                                ", not awaiting a commit"));
    }
    m->transport->ReleaseReady();
  }
  *response = m->Snapshot();
  return grpc::Status::OK;
}

grpc::Status AgentService::Confirm(grpc::ServerContext*,
                                   const v1::ConfirmRequest* request,
                                   v1::MigrationStatus* response) {
  if (absl::Status s = ValidateHexId("migration_id", request->migration_id());
      !s.ok()) {
    return ToGrpc(s);
  }
  auto m = FindMigration(request->migration_id(), v1::SOURCE);
  if (m == nullptr) {
    return Error(grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("no migration ", request->migration_id(),
                              " from this agent"));
  }
  const v1::MigrationState state = m->Snapshot().state();
  if (state == v1::CONFIRMED) {
    *response = m->Snapshot();
    return grpc::Status::OK;
  }
  if (state != v1::COMPLETED) {
    return Error(grpc::StatusCode::FAILED_PRECONDITION,
                 absl::StrCat("migration ", m->id, " is ", StateName(state),
                              "; only a completed migration can be confirmed"));
  }
  m->Join();
  m->source_owned.reset();
  m->source_vmm.reset();
  m->source_guest = nullptr;
  ReleaseDevice(m->device, true, v1::GUEST_STATE_UNSPECIFIED, "");
  m->Update([](MigrationStatus& s) {
    s.set_state(v1::CONFIRMED);
    s.set_message("handed over; the source guest was released");
  });
  Persist(m->Snapshot());
  *response = m->Snapshot();
  return grpc::Status::OK;
}

grpc::Status AgentService::Cancel(grpc::ServerContext*,
                                  const v1::CancelRequest* request,
                                  v1::MigrationStatus* response) {
  if (absl::Status s = ValidateHexId("migration_id", request->migration_id());
      !s.ok()) {
    return ToGrpc(s);
  }
  auto m = FindMigration(request->migration_id());
  if (m == nullptr) {
    return Error(grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("no migration ", request->migration_id(),
                              " on this agent"));
  }
  {
    absl::MutexLock lock(&m->mu);
    if (IsFinal(m->status.state())) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("migration ", m->id, " is already ",
                                StateName(m->status.state())));
    }
    bool accepted = true;
    if (m->source != nullptr) accepted = m->source->Cancel();
    if (m->destination != nullptr) accepted = m->destination->Cancel();
    if (!accepted) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("too late to cancel migration ", m->id,
                                ": Commit was sent; the destination decides "
                                "now (watch it, or resolve if it is lost)"));
    }
    m->cancel_requested = true;
  }
  *response = m->Snapshot();
  return grpc::Status::OK;
}

grpc::Status AgentService::Status(grpc::ServerContext*,
                                  const v1::StatusRequest* request,
                                  v1::MigrationStatus* response) {
  if (absl::Status s = ValidateHexId("migration_id", request->migration_id());
      !s.ok()) {
    return ToGrpc(s);
  }
  if (auto m = FindMigration(request->migration_id()); m != nullptr) {
    *response = m->Snapshot();
    return grpc::Status::OK;
  }
  absl::MutexLock lock(&mu_);
  auto it = restored_.find(request->migration_id());
  if (it == restored_.end()) {
    return Error(grpc::StatusCode::NOT_FOUND,
                 absl::StrCat("no migration ", request->migration_id(),
                              " on this agent"));
  }
  *response = it->second;
  return grpc::Status::OK;
}

grpc::Status AgentService::Watch(
    grpc::ServerContext* context, const v1::WatchRequest* request,
    grpc::ServerWriter<v1::ProgressEvent>* writer) {
  if (absl::Status s = ValidateHexId("migration_id", request->migration_id());
      !s.ok()) {
    return ToGrpc(s);
  }
  auto m = FindMigration(request->migration_id());
  if (m == nullptr) {
    v1::StatusRequest status_request;
    status_request.set_migration_id(request->migration_id());
    v1::ProgressEvent event;
    grpc::Status s = Status(context, &status_request, event.mutable_status());
    if (!s.ok()) return s;
    event.set_sequence(1);
    event.set_final(true);
    writer->Write(event);
    return grpc::Status::OK;
  }
  uint64_t sent_seq = 0;
  v1::MigrationState sent_state = v1::MIGRATION_STATE_UNSPECIFIED;
  for (;;) {
    if (context->IsCancelled()) return grpc::Status::CANCELLED;
    uint64_t seq;
    {
      absl::MutexLock lock(&m->mu);
      auto changed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(m->mu) {
        return m->seq != sent_seq;
      };
      // Polled, so a state computed on read (awaiting-commit) and a
      // client that went away are noticed too.
      m->mu.AwaitWithTimeout(absl::Condition(&changed),
                             absl::Milliseconds(250));
      seq = m->seq;
    }
    v1::ProgressEvent event;
    *event.mutable_status() = m->Snapshot();
    const v1::MigrationState state = event.status().state();
    if (seq == sent_seq && state == sent_state) continue;
    event.set_sequence(seq);
    event.set_final(IsFinal(state));
    if (!writer->Write(event)) return grpc::Status::CANCELLED;
    sent_seq = seq;
    sent_state = state;
    if (event.final()) return grpc::Status::OK;
  }
}

absl::Status AgentService::ResumeHandedOver(Migration& m) {
  guest::SyntheticGuest* g = m.source_guest;
  vhost::Frontend& f = g->device().frontend();
  const std::vector<migration::RingConfig> rings = m.source_vmm->rings();
  const std::map<uint32_t, uint16_t> bases = m.source_owned->ring_bases();
  // As the coordinator's own restore (docs/migration.md, "Cancel
  // semantics"): rings at the bases they stopped at, the guest, then
  // LOG_ALL cleared and the LOG flag dropped.
  for (const migration::RingConfig& ring : rings) {
    auto it = bases.find(ring.index);
    if (it == bases.end()) continue;
    absl::Status s = migration::StartRing(f, ring.size, ring.addr, it->second,
                                          ring.kick_fd, ring.call_fd,
                                          /*log=*/true);
    if (!s.ok()) return s;
  }
  if (absl::Status s = g->Resume(); !s.ok()) return s;
  if (absl::Status s = f.SetFeatures(f.acked_features() & ~vhost::kLogAllMask);
      !s.ok()) {
    return s;
  }
  for (const migration::RingConfig& ring : rings) {
    if (absl::Status s = migration::SetRingAddr(f, ring.addr, /*log=*/false);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

grpc::Status AgentService::Resolve(grpc::ServerContext*,
                                   const v1::ResolveRequest* request,
                                   v1::MigrationStatus* response) {
  if (absl::Status s = ValidateHexId("migration_id", request->migration_id());
      !s.ok()) {
    return ToGrpc(s);
  }
  const v1::Resolution how = request->resolution();
  if (how != v1::RESUME_SOURCE && how != v1::DESTROY_SOURCE &&
      how != v1::KEEP_PAUSED) {
    return Error(grpc::StatusCode::INVALID_ARGUMENT,
                 "resolution: one of RESUME_SOURCE, DESTROY_SOURCE, "
                 "KEEP_PAUSED is required");
  }
  auto m = FindMigration(request->migration_id(), v1::SOURCE);
  if (m == nullptr) {
    // A record from before a restart: the guest died with the old agent,
    // so resuming and destroying both just settle the record.
    absl::MutexLock lock(&mu_);
    auto it = restored_.find(request->migration_id());
    if (it == restored_.end() || it->second.role() != v1::SOURCE) {
      return Error(grpc::StatusCode::NOT_FOUND,
                   absl::StrCat("no source migration ", request->migration_id(),
                                " on this agent"));
    }
    MigrationStatus& record = it->second;
    if (record.state() != v1::IN_DOUBT) {
      return Error(grpc::StatusCode::FAILED_PRECONDITION,
                   absl::StrCat("migration ", record.id(), " is ",
                                StateName(record.state()), ", not in doubt"));
    }
    if (how != v1::KEEP_PAUSED) {
      record.set_state(v1::RESOLVED);
      record.set_message(
          how == v1::RESUME_SOURCE
              ? "resolved: resume the source (its guest did not survive the "
                "agent restart; start it again from its disk)"
              : "resolved: the destination keeps the guest");
      (void)store_->Put(record);
    }
    *response = record;
    return grpc::Status::OK;
  }
  if (m->Snapshot().state() != v1::IN_DOUBT) {
    return Error(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("migration ", m->id, " is ",
                     StateName(m->Snapshot().state()), ", not in doubt"));
  }
  m->Join();
  if (how == v1::KEEP_PAUSED) {
    *response = m->Snapshot();
    return grpc::Status::OK;
  }
  if (how == v1::RESUME_SOURCE) {
    absl::Status s = ResumeHandedOver(*m);
    if (!s.ok()) {
      return Error(grpc::StatusCode::INTERNAL,
                   absl::StrCat("resuming the source failed: ", s.ToString(),
                                "; it stays paused"));
    }
    m->source_owned.reset();
    m->source_vmm.reset();
    ReleaseDevice(m->device, false, v1::GUEST_RUNNING, "");
    m->Update([](MigrationStatus& s) {
      s.set_state(v1::RESOLVED);
      s.set_source_resumed(true);
      s.set_message("resolved: the source runs again");
    });
  } else {
    m->source_owned.reset();
    m->source_vmm.reset();
    m->source_guest = nullptr;
    ReleaseDevice(m->device, true, v1::GUEST_STATE_UNSPECIFIED, "");
    m->Update([](MigrationStatus& s) {
      s.set_state(v1::RESOLVED);
      s.set_message("resolved: the source guest was destroyed");
    });
  }
  Persist(m->Snapshot());
  *response = m->Snapshot();
  return grpc::Status::OK;
}

}  // namespace vhostmig::agent
