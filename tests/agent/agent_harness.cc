#include "tests/agent/agent_harness.h"

#include <signal.h>
#include <stdlib.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "grpcpp/health_check_service_interface.h"

namespace vhostmig::agent::testing {

std::string FsDaemonPath() {
  // Tests run in the workspace's runfiles directory.
  return std::filesystem::absolute("fs_device/vhost-user-fs").string();
}

ScratchDir::ScratchDir() {
  char tmpl[] = "/tmp/vhm-agent-XXXXXX";
  path_ = mkdtemp(tmpl) != nullptr ? tmpl : "/tmp";
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  if (path_ != "/tmp") std::filesystem::remove_all(path_, ec);
}

absl::StatusOr<std::unique_ptr<LocalAgent>> LocalAgent::Start(
    const std::string& dir, const TlsFiles& tls, v1::Phase hold_phase,
    absl::Duration hold) {
  // Back-ends write device-state pipes.
  signal(SIGPIPE, SIG_IGN);
  std::filesystem::create_directories(dir + "/run");
  std::unique_ptr<LocalAgent> agent(new LocalAgent());
  agent->tls_ = tls;
  AgentOptions options;
  options.state_dir = dir + "/state";
  options.run_dir = dir + "/run";
  options.backend_command = {FsDaemonPath(), "--socket-path={sock}",
                             "--shared-dir={dir}", "--tag=test"};
  options.peer_tls = tls;
  options.log = [](const std::string&) {};
  options.debug_hold_phase = hold_phase;
  options.debug_hold = hold;
  auto service = AgentService::Create(options);
  if (!service.ok()) return service.status();
  agent->service_ = *std::move(service);
  auto credentials = MakeServerCredentials(tls);
  if (!credentials.ok()) return credentials.status();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", *credentials, &port);
  ConfigureAgentServer(&builder);
  builder.RegisterService(agent->service_.get());
  agent->server_ = builder.BuildAndStart();
  if (agent->server_ == nullptr || port == 0) {
    return absl::InternalError("the test agent could not listen");
  }
  agent->address_ = absl::StrCat("127.0.0.1:", port);
  return agent;
}

LocalAgent::~LocalAgent() { Stop(); }

void LocalAgent::Stop() {
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(5));
    server_.reset();
  }
  service_.reset();
}

std::unique_ptr<v1::Agent::Stub> LocalAgent::Stub() const {
  auto channel = DialAgent(address_, tls_);
  return v1::Agent::NewStub(*channel);
}

absl::Status StartFsDevice(v1::Agent::Stub& agent, const std::string& name,
                           const std::string& shared_dir) {
  v1::StartDeviceRequest request;
  request.set_name(name);
  request.set_shared_dir(shared_dir);
  v1::DeviceInfo info;
  grpc::Status s = agent.StartDevice(cli::CallContext().get(), request, &info);
  return s.ok() ? absl::OkStatus() : cli::CallError("StartDevice", s);
}

absl::Status CreateGuest(v1::Agent::Stub& agent, const std::string& device,
                         const v1::GuestSpec& spec) {
  v1::CreateGuestRequest request;
  request.set_device(device);
  *request.mutable_spec() = spec;
  request.set_warmup_steps(16);
  v1::DeviceInfo info;
  grpc::Status s = agent.CreateGuest(cli::CallContext(absl::Seconds(60)).get(),
                                     request, &info);
  return s.ok() ? absl::OkStatus() : cli::CallError("CreateGuest", s);
}

absl::StatusOr<v1::VerifyGuestResponse> VerifyGuest(v1::Agent::Stub& agent,
                                                    const std::string& device) {
  v1::VerifyGuestRequest request;
  request.set_device(device);
  v1::VerifyGuestResponse response;
  grpc::Status s = agent.VerifyGuest(cli::CallContext(absl::Seconds(60)).get(),
                                     request, &response);
  if (!s.ok()) return cli::CallError("VerifyGuest", s);
  return response;
}

absl::StatusOr<v1::DeviceInfo> Device(v1::Agent::Stub& agent,
                                      const std::string& device) {
  v1::ListResponse list;
  grpc::Status s = agent.List(cli::CallContext().get(), {}, &list);
  if (!s.ok()) return cli::CallError("List", s);
  for (const v1::DeviceInfo& d : list.devices()) {
    if (d.name() == device) return d;
  }
  return absl::NotFoundError(device);
}

}  // namespace vhostmig::agent::testing
