#include "tests/agent/agent_harness.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "grpcpp/health_check_service_interface.h"

namespace vhostmig::agent::testing {

std::string FsDaemonPath() {
  // Tests run in the workspace's runfiles directory.
  return std::filesystem::absolute("fs_device/vhost-user-fs").string();
}

std::string AgentPath() {
  return std::filesystem::absolute("migration/agent/vhostmig-agent").string();
}

absl::Status AgentProcess::Start() {
  if (pid_ > 0) return absl::FailedPreconditionError("the agent runs already");
  std::filesystem::create_directories(options_.dir + "/run");
  const std::string port_file = options_.dir + "/port";
  std::filesystem::remove(port_file);
  std::vector<std::string> args;
  if (!options_.netns.empty()) {
    args = {"/usr/sbin/ip", "netns", "exec", options_.netns};
  }
  args.insert(
      args.end(),
      {AgentPath(), "--listen=" + options_.listen, "--port-file=" + port_file,
       "--state-dir=" + options_.dir + "/state",
       "--run-dir=" + options_.dir + "/run", "--fs-backend=" + FsDaemonPath()});
  args.insert(args.end(), options_.flags.begin(), options_.flags.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = options_.dir + "/agent.log";
  const pid_t parent = getpid();
  pid_ = fork();
  if (pid_ < 0) return absl::InternalError("fork failed");
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  // The port it bound (written once it serves).
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  int port = 0;
  while (port == 0) {
    std::ifstream in(port_file);
    std::string text;
    if (in && std::getline(in, text) &&
        absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &port)) {
      break;
    }
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::FailedPreconditionError(
          absl::StrCat("the agent exited at start: ", Log()));
    }
    if (absl::Now() > deadline) {
      Kill(SIGKILL);
      return absl::DeadlineExceededError(
          absl::StrCat("the agent did not serve within 30s: ", Log()));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  const size_t colon = options_.listen.rfind(':');
  address_ = absl::StrCat(options_.listen.substr(0, colon), ":", port);
  auto c = cli::ConnectAgent(address_, absl::Seconds(15));
  return c.ok() ? absl::OkStatus() : c.status();
}

void AgentProcess::Kill(int sig) {
  if (pid_ <= 0) return;
  kill(pid_, sig);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string AgentProcess::Log() const {
  std::ifstream in(options_.dir + "/agent.log");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string SanitizerReportsIn(const std::string& dir) {
  static constexpr const char* kMarkers[] = {
      "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
      "WARNING: ThreadSanitizer", "runtime error:"};
  std::string reports;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->path().extension() != ".log") continue;
    std::ifstream in(it->path());
    std::stringstream text;
    text << in.rdbuf();
    const std::string log = text.str();
    for (const char* marker : kMarkers) {
      const size_t at = log.find(marker);
      if (at != std::string::npos) {
        absl::StrAppend(&reports, it->path().string(), ":\n",
                        log.substr(at, 4000), "\n");
        break;
      }
    }
  }
  return reports;
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
