// What the agent subcommands of `vhostmig` share (migrate, cancel, status,
// watch, resolve, drill, demo): connecting to an agent (TLS flags, a health
// check first so that an unreachable agent is reported as such), running and
// following one migration (Prepare on the destination, Perform on the
// source, Watch until it settles, Confirm), the progress bar, and output as
// text or JSON.
//
// Errors say what failed and what to do; they are printed by the
// subcommands, which exit non-zero.
//
// Thread-safety: one thread (a CLI).
#ifndef VHOSTMIG_MIGRATION_CLI_AGENT_CLIENT_H_
#define VHOSTMIG_MIGRATION_CLI_AGENT_CLIENT_H_

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"
#include "proto/agent.grpc.pb.h"

ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(std::string, agent);
ABSL_DECLARE_FLAG(std::string, id);
ABSL_DECLARE_FLAG(std::string, source);
ABSL_DECLARE_FLAG(std::string, destination);
ABSL_DECLARE_FLAG(std::string, destination_peer);
ABSL_DECLARE_FLAG(std::string, device);

namespace vhostmig::cli {

namespace v1 = ::vhostmig::agent::v1;

struct AgentConnection {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Agent::Stub> stub;
};

// Dials `address` with the --tls-* flags and asks its health service
// (grpc.health.v1) within `timeout`.
absl::StatusOr<AgentConnection> ConnectAgent(
    const std::string& address, absl::Duration timeout = absl::Seconds(5));

// A context with a deadline, for unary calls.
std::unique_ptr<grpc::ClientContext> CallContext(
    absl::Duration timeout = absl::Seconds(30));

// "Perform on SOURCE: NOT_FOUND: no device fs0 ..." as an absl::Status.
absl::Status CallError(const std::string& what, const grpc::Status& status);

struct MigrateArgs {
  std::string device;
  v1::MigrationOptions options;
  // How the source agent reaches the destination (default: its address).
  std::string destination_peer;
  bool progress_bar = false;  // live bar on stderr
  bool confirm = true;        // release the source guest once handed over
  absl::Duration timeout = absl::Minutes(10);
  // How long the prepared destination waits for the source's stream before
  // it tears itself down (a source that died before connecting); zero means
  // the agent's default of 60 s.
  absl::Duration wait_for_source = absl::ZeroDuration();
};

// Prepare + Perform; returns the source's first status (id set).
absl::StatusOr<v1::MigrationStatus> StartMigration(AgentConnection& source,
                                                   AgentConnection& destination,
                                                   const MigrateArgs& args);

// Follows a migration with Watch until it settles (progress bar optional).
absl::StatusOr<v1::MigrationStatus> FollowMigration(AgentConnection& agent,
                                                    const std::string& id,
                                                    bool progress_bar,
                                                    absl::Duration timeout);

// Start, follow, confirm. The status is the source's final one.
absl::StatusOr<v1::MigrationStatus> Migrate(AgentConnection& source,
                                            AgentConnection& destination,
                                            const MigrateArgs& args);

// The device's guest spec on `agent` (for Prepare).
absl::StatusOr<v1::DeviceInfo> FindDevice(AgentConnection& agent,
                                          const std::string& device);

// Waits until the destination's record of `id` settles.
absl::StatusOr<v1::MigrationStatus> AwaitSettled(AgentConnection& agent,
                                                 const std::string& id,
                                                 absl::Duration timeout);

const char* PhaseLabel(v1::Phase phase);
const char* StateLabel(v1::MigrationState state);
// "[#########.......]  45%  pre-copy  round 2  ..."
std::string ProgressLine(const v1::MigrationStatus& status);
// A human summary of a settled migration (several lines).
std::string DescribeMigration(const v1::MigrationStatus& status);
std::string ToJson(const google::protobuf::Message& message);
// `text` as a JSON string literal, quotes included.
std::string JsonQuote(const std::string& text);
// Parses "pre-copy", "save-state", ... (the source phases before handover).
bool ParsePhase(const std::string& text, v1::Phase* phase);
std::string Bytes(uint64_t bytes);

// Cancel-and-resume drills (drill.cc): each iteration starts a migration
// that the source cancels at `cancel_at` (or a random phase before
// handover), then checks that the source resumed (migration cancelled,
// workload verified through its open handles and still progressing) and
// that the destination tore down (record settled, device free).
struct DrillIteration {
  int number = 0;
  v1::Phase cancel_at = v1::PHASE_UNSPECIFIED;
  bool ok = false;
  std::string failure;  // what did not hold
  std::string migration_id;
  uint64_t total_ms = 0;
  uint64_t steps_before = 0;
  uint64_t steps_after = 0;
  uint64_t blocks_verified = 0;
};
// `cancel_at`: a phase label (ParsePhase) or "random".
std::vector<DrillIteration> RunDrills(AgentConnection& source,
                                      AgentConnection& destination,
                                      const MigrateArgs& args, int iterations,
                                      const std::string& cancel_at,
                                      bool print_progress);

}  // namespace vhostmig::cli

#endif  // VHOSTMIG_MIGRATION_CLI_AGENT_CLIENT_H_
