// Agents for tests: an AgentService served by a gRPC server on
// 127.0.0.1:<free port> inside the test process (optionally with mutual
// TLS), starting our vhost-user-fs daemon (a data dependency) for its fs
// devices; the agent binary as a killable process (AgentProcess); plus
// helpers to set up a device with a running guest. The CLI's
// own client library (migration/cli/agent_client.h) drives migrations, so
// the tests exercise what operators run.
//
// Work directories live under /tmp (unix socket paths must fit in 108
// bytes; $TEST_TMPDIR is deeper) and are removed by the destructor.
#ifndef VHOSTMIG_TESTS_AGENT_AGENT_HARNESS_H_
#define VHOSTMIG_TESTS_AGENT_AGENT_HARNESS_H_

#include <signal.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "migration/agent/agent_service.h"
#include "migration/agent/connection.h"
#include "migration/cli/agent_client.h"

namespace vhostmig::agent::testing {

namespace v1 = ::vhostmig::agent::v1;

// The vhost-user-fs daemon in the runfiles.
std::string FsDaemonPath();

// A fresh directory under /tmp, removed with the object.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class LocalAgent {
 public:
  // `tls` enabled: the server requires client certificates from its CA,
  // and the agent dials peers with the same files.
  // `hold_phase`: AgentOptions::debug_hold_phase (for `hold`).
  static absl::StatusOr<std::unique_ptr<LocalAgent>> Start(
      const std::string& dir, const TlsFiles& tls = {},
      v1::Phase hold_phase = v1::PHASE_UNSPECIFIED,
      absl::Duration hold = absl::ZeroDuration());
  ~LocalAgent();

  const std::string& address() const { return address_; }
  AgentService& service() { return *service_; }
  // An unchecked client (no health check), with the harness's TLS files.
  std::unique_ptr<v1::Agent::Stub> Stub() const;
  // Stops serving and destroys the service (what a crash loses).
  void Stop();

 private:
  LocalAgent() = default;
  std::unique_ptr<AgentService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  TlsFiles tls_;
};

// An agent as a process of its own (//migration/agent:vhostmig-agent from
// the runfiles, a data dependency of this library), so that a test can
// SIGKILL it: state, run directory and log under `dir`, our fs daemon as its
// back-end. By default on 127.0.0.1 with a port it picks (read from
// --port-file, so a restart may change address()); with `netns`, inside
// that network namespace (`ip netns exec`) on the fixed `listen` address.
// The agent dies with the test process (PR_SET_PDEATHSIG).
class AgentProcess {
 public:
  struct Options {
    std::string dir;
    std::string netns;  // empty: this process's namespace
    std::string listen = "127.0.0.1:0";
    std::vector<std::string> flags;  // extra agent flags
  };
  explicit AgentProcess(Options options) : options_(std::move(options)) {}
  ~AgentProcess() { Kill(SIGKILL); }
  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;

  // Starts (or restarts, on the same directory) and waits until it serves.
  absl::Status Start();
  // Sends `sig` and reaps it (`ip netns exec` execs the agent, so the pid
  // is the agent's).
  void Kill(int sig);
  const std::string& address() const { return address_; }
  const std::string& dir() const { return options_.dir; }
  // The agent's output so far (for failure messages).
  std::string Log() const;

 private:
  const Options options_;
  std::string address_;
  pid_t pid_ = -1;
};

// The agent binary in the runfiles.
std::string AgentPath();

// Sanitizer reports (ASan, LSan, UBSan, TSan) in the *.log files under
// `dir`, recursively: what agents and daemons started as processes wrote,
// which the test's own log does not show. Empty when there are none.
std::string SanitizerReportsIn(const std::string& dir);

// StartDevice(name, shared_dir) on `agent`.
absl::Status StartFsDevice(v1::Agent::Stub& agent, const std::string& name,
                           const std::string& shared_dir);
// CreateGuest on `device` with a running workload.
absl::Status CreateGuest(v1::Agent::Stub& agent, const std::string& device,
                         const v1::GuestSpec& spec = {});
absl::StatusOr<v1::VerifyGuestResponse> VerifyGuest(v1::Agent::Stub& agent,
                                                    const std::string& device);
absl::StatusOr<v1::DeviceInfo> Device(v1::Agent::Stub& agent,
                                      const std::string& device);

}  // namespace vhostmig::agent::testing

#endif  // VHOSTMIG_TESTS_AGENT_AGENT_HARNESS_H_
