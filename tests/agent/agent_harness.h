// Agents for tests: an AgentService served by a gRPC server on
// 127.0.0.1:<free port> inside the test process (optionally with mutual
// TLS), starting our vhost-user-fs daemon (a data dependency) for its fs
// devices, plus helpers to set up a device with a running guest. The CLI's
// own client library (migration/cli/agent_client.h) drives migrations, so
// the tests exercise what operators run.
//
// Work directories live under /tmp (unix socket paths must fit in 108
// bytes; $TEST_TMPDIR is deeper) and are removed by the destructor.
#ifndef VHOSTMIG_TESTS_AGENT_AGENT_HARNESS_H_
#define VHOSTMIG_TESTS_AGENT_AGENT_HARNESS_H_

#include <memory>
#include <string>

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
