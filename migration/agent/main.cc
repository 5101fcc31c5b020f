// vhostmig-agent: one per host. Serves the agent API (proto/agent.proto) and
// gRPC's health service, hosts devices and synthetic guests, and runs both
// sides of migrations. docs/operations.md explains how to run and secure it.
//
//   vhostmig-agent [--listen 127.0.0.1:7345] [--state-dir DIR]
//                  [--fs-backend PATH | --backend-cmd 'CMD {sock} {dir}']
//                  [--tls-cert F --tls-key F --tls-ca F] [--port-file F]
//
// SIGTERM / SIGINT: stop accepting calls, cancel what runs, exit.
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "migration/agent/agent_service.h"
#include "migration/agent/connection.h"
#include "migration/agent/dashed_flags.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7345",
          "address to serve on (loopback by default; port 0 picks a free one, "
          "see --port-file)");
ABSL_FLAG(std::string, port_file, "",
          "write the port actually bound to this file once serving");
ABSL_FLAG(
    std::string, state_dir, "",
    "where to keep migration records that must survive a restart "
    "(default /var/lib/vhostmig-agent when root, else ~/.vhostmig-agent)");
ABSL_FLAG(std::string, run_dir, "",
          "back-end sockets and logs (default: a new /tmp/vhostmig-agent-*)");
ABSL_FLAG(std::string, fs_backend, "",
          "the vhost-user-fs daemon to start for fs devices (default: "
          "vhost-user-fs next to this binary, if present)");
ABSL_FLAG(std::string, backend_cmd, "",
          "instead of --fs-backend: a back-end command line with {sock} and "
          "{dir} placeholders, split on spaces, e.g. '/usr/libexec/virtiofsd "
          "--socket-path={sock} --shared-dir={dir}'");
ABSL_FLAG(std::string, debug_hold_phase, "",
          "testing aid: a source migration waits --debug-hold-ms when it "
          "enters this phase (SETUP, PRE_COPY, SAVE_STATE, HANDOVER, ...)");
ABSL_FLAG(int, debug_hold_ms, 0, "testing aid: see --debug-hold-phase");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate (enables mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA that client and peer-agent certificates must chain to");

namespace vhostmig::agent {
namespace {

std::string SelfDir() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "." : self.parent_path().string();
}

absl::StatusOr<std::vector<std::string>> BackendCommand() {
  const std::string cmd = absl::GetFlag(FLAGS_backend_cmd);
  if (!cmd.empty()) {
    std::vector<std::string> argv =
        absl::StrSplit(cmd, ' ', absl::SkipWhitespace());
    if (cmd.find("{sock}") == std::string::npos) {
      return absl::InvalidArgumentError(
          "--backend-cmd must contain {sock} (where the back-end listens)");
    }
    return argv;
  }
  std::string path = absl::GetFlag(FLAGS_fs_backend);
  if (path.empty()) {
    const std::string next_to_us = SelfDir() + "/vhost-user-fs";
    if (access(next_to_us.c_str(), X_OK) == 0) path = next_to_us;
    // Under `bazel run` / in tests, the daemon sits in the runfiles.
    const std::string runfiles =
        SelfDir() + "/vhostmig-agent.runfiles/vhostmig/fs_device/vhost-user-fs";
    if (path.empty() && access(runfiles.c_str(), X_OK) == 0) path = runfiles;
  }
  if (path.empty()) return std::vector<std::string>{};
  return std::vector<std::string>{path, "--socket-path={sock}",
                                  "--shared-dir={dir}", "--tag=vhostmig"};
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "vhostmig-agent --listen ADDR [--state-dir DIR] [--fs-backend PATH | "
      "--backend-cmd CMD] [--tls-cert F --tls-key F --tls-ca F]");
  ParseDashedCommandLine(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  // SIGTERM/SIGINT are taken by sigwait below; blocked before any thread
  // starts so that every thread inherits the mask.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  AgentOptions options;
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  if (options.state_dir.empty()) {
    const char* home = getenv("HOME");
    options.state_dir =
        geteuid() == 0 ? "/var/lib/vhostmig-agent"
                       : std::string(home ? home : "/tmp") + "/.vhostmig-agent";
  }
  options.run_dir = absl::GetFlag(FLAGS_run_dir);
  if (options.run_dir.empty()) {
    char tmpl[] = "/tmp/vhostmig-agent-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      std::perror("vhostmig-agent: mkdtemp");
      return 1;
    }
    options.run_dir = tmpl;
  }
  if (const std::string hold = absl::GetFlag(FLAGS_debug_hold_phase);
      !hold.empty()) {
    v1::Phase phase;
    if (!v1::Phase_Parse(hold, &phase)) {
      std::fprintf(stderr,
                   "vhostmig-agent: --debug-hold-phase %s is no Phase\n",
                   hold.c_str());
      return 2;
    }
    options.debug_hold_phase = phase;
    options.debug_hold = absl::Milliseconds(absl::GetFlag(FLAGS_debug_hold_ms));
  }
  auto backend = BackendCommand();
  if (!backend.ok()) {
    std::fprintf(stderr, "vhostmig-agent: %s\n",
                 std::string(backend.status().message()).c_str());
    return 2;
  }
  options.backend_command = *backend;
  TlsFiles tls{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
               absl::GetFlag(FLAGS_tls_ca), ""};
  options.peer_tls = tls;
  auto credentials = MakeServerCredentials(tls);
  if (!credentials.ok()) {
    std::fprintf(stderr, "vhostmig-agent: %s\n",
                 std::string(credentials.status().message()).c_str());
    return 2;
  }
  auto service = AgentService::Create(options);
  if (!service.ok()) {
    std::fprintf(stderr, "vhostmig-agent: %s\n",
                 std::string(service.status().message()).c_str());
    return 1;
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  builder.AddListeningPort(listen, *credentials, &port);
  ConfigureAgentServer(&builder);
  builder.RegisterService(service->get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr,
                 "vhostmig-agent: cannot listen on %s (in use? a valid "
                 "HOST:PORT?)\n",
                 listen.c_str());
    return 1;
  }
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty()) {
    std::ofstream(port_file + ".tmp") << port << "\n";
    std::filesystem::rename(port_file + ".tmp", port_file);
  }
  std::fprintf(stderr,
               "vhostmig-agent: serving on %s (port %d)%s, state in %s, "
               "back-end %s\n",
               listen.c_str(), port, tls.enabled() ? " with mutual TLS" : "",
               options.state_dir.c_str(),
               options.backend_command.empty()
                   ? "none (attach only)"
                   : options.backend_command[0].c_str());

  int sig = 0;
  sigwait(&stop, &sig);
  std::fprintf(stderr, "vhostmig-agent: signal %d, shutting down\n", sig);
  server->GetHealthCheckService()->SetServingStatus(false);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  service->reset();
  return 0;
}

}  // namespace
}  // namespace vhostmig::agent

int main(int argc, char** argv) { return vhostmig::agent::Main(argc, argv); }
