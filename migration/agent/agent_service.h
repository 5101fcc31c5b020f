// AgentService: the vhostmig agent (proto/agent.proto, vhostmig.agent.v1).
//
// It hosts devices — an fs back-end recipe (the operator's configured
// back-end command started on a shared directory, once per guest that
// attaches, since vhost-user-fs daemons serve one front-end and exit when it
// leaves) or an existing back-end socket — and a synthetic guest per device,
// for which it is the VMM (migration/synthetic_vmm.h). It runs both sides
// of migrations: Prepare creates the incoming guest and waits for the
// source agent's Transfer stream; Perform dials the destination agent and
// runs the SourceMigration over a GrpcTransport.
//
// Never both running: the destination starts its guest only when the
// source's Commit arrives on the stream; the source then waits
// (started_timeout) for the destination's Started frame. Without it — the
// link or the destination died after Commit, or Commit's delivery is
// unknown — the source guest stays paused and the migration is IN_DOUBT,
// recorded in the StateStore before Commit is sent so that it survives a
// restart; CreateGuest on that device is refused and Resolve is the only
// way out (resume the source, destroy it, or keep it paused).
//
// Every request is validated (validation.h) and answered with
// INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION or ALREADY_EXISTS
// saying what to do. Back-end processes are started from the operator's
// command only; a request can name a directory or socket, never a program.
//
// Thread-safety: gRPC calls concurrently; each migration runs on its own
// thread. The destructor cancels what still runs and joins everything.
#ifndef VHOSTMIG_MIGRATION_AGENT_AGENT_SERVICE_H_
#define VHOSTMIG_MIGRATION_AGENT_AGENT_SERVICE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migration/agent/connection.h"
#include "migration/agent/state_store.h"
#include "proto/agent.grpc.pb.h"

namespace vhostmig::agent {

struct AgentOptions {
  // Persisted migration records (state_store.h); empty: memory only.
  std::string state_dir;
  // Back-end sockets and logs; short (unix socket paths are <= 107 bytes).
  std::string run_dir;
  // The fs back-end command: argv with {sock} and {dir} placeholders
  // (e.g. {"/usr/bin/vhost-user-fs", "--socket-path={sock}",
  // "--shared-dir={dir}"}). Empty: only attach_socket devices.
  std::vector<std::string> backend_command;
  // Credentials for dialling peer agents (Transfer).
  TlsFiles peer_tls;
  // How long a source waits, after Commit, for the destination's Started.
  absl::Duration started_timeout = absl::Seconds(15);
  // Testing aid (drills of failures): a source migration entering this
  // phase waits `debug_hold` there first, so that a test can cut the link
  // or kill an agent at a known point. PHASE_UNSPECIFIED: off.
  v1::Phase debug_hold_phase = v1::PHASE_UNSPECIFIED;
  absl::Duration debug_hold = absl::ZeroDuration();
  // Diagnostics (one line each); default: stderr.
  std::function<void(const std::string&)> log;
};

class AgentService final : public v1::Agent::Service {
 public:
  static absl::StatusOr<std::unique_ptr<AgentService>> Create(
      AgentOptions options);
  ~AgentService() override;

  grpc::Status StartDevice(grpc::ServerContext*, const v1::StartDeviceRequest*,
                           v1::DeviceInfo*) override;
  grpc::Status StopDevice(grpc::ServerContext*, const v1::StopDeviceRequest*,
                          v1::DeviceInfo*) override;
  grpc::Status CreateGuest(grpc::ServerContext*, const v1::CreateGuestRequest*,
                           v1::DeviceInfo*) override;
  grpc::Status DestroyGuest(grpc::ServerContext*,
                            const v1::DestroyGuestRequest*,
                            v1::DeviceInfo*) override;
  grpc::Status VerifyGuest(grpc::ServerContext*, const v1::VerifyGuestRequest*,
                           v1::VerifyGuestResponse*) override;
  grpc::Status List(grpc::ServerContext*, const v1::ListRequest*,
                    v1::ListResponse*) override;
  grpc::Status Prepare(grpc::ServerContext*, const v1::PrepareRequest*,
                       v1::PrepareResponse*) override;
  grpc::Status Perform(grpc::ServerContext*, const v1::PerformRequest*,
                       v1::MigrationStatus*) override;
  grpc::Status Commit(grpc::ServerContext*, const v1::CommitRequest*,
                      v1::MigrationStatus*) override;
  grpc::Status Confirm(grpc::ServerContext*, const v1::ConfirmRequest*,
                       v1::MigrationStatus*) override;
  grpc::Status Cancel(grpc::ServerContext*, const v1::CancelRequest*,
                      v1::MigrationStatus*) override;
  grpc::Status Status(grpc::ServerContext*, const v1::StatusRequest*,
                      v1::MigrationStatus*) override;
  grpc::Status Watch(grpc::ServerContext*, const v1::WatchRequest*,
                     grpc::ServerWriter<v1::ProgressEvent>*) override;
  grpc::Status Resolve(grpc::ServerContext*, const v1::ResolveRequest*,
                       v1::MigrationStatus*) override;
  grpc::Status Transfer(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::TransferFrame, v1::TransferFrame>*) override;

 private:
  struct Device;
  struct Migration;

  explicit AgentService(AgentOptions options);

  void Log(const std::string& line) const;
  // Starts a fresh back-end for a guest (process devices) and returns the
  // socket to connect to.
  absl::StatusOr<std::string> BackendFor(Device& device)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DeviceInfoLocked(const Device& device, v1::DeviceInfo* out) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<Migration> FindMigration(
      const std::string& id, v1::Role role = v1::ROLE_UNSPECIFIED);
  std::string UnresolvedMigrationFor(const std::string& device)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Persist(const v1::MigrationStatus& status);
  void ReapFinishedThreads();

  void RunSource(std::shared_ptr<Migration> m, v1::PerformRequest request);
  void RunDestination(std::shared_ptr<Migration> m, absl::Duration wait);
  // Resumes a source guest paused by a handed-over (in doubt) migration.
  absl::Status ResumeHandedOver(Migration& m);
  // Releases the device a migration held; `keep_guest` false destroys it.
  void ReleaseDevice(const std::string& device, bool destroy_guest,
                     v1::GuestState state, const std::string& message);

  const AgentOptions options_;
  std::unique_ptr<StateStore> store_;

  mutable absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::unique_ptr<Device>> devices_ ABSL_GUARDED_BY(mu_);
  // Source and destination records may share an id (two agents in one
  // process in tests); the role tells them apart.
  std::vector<std::shared_ptr<Migration>> migrations_ ABSL_GUARDED_BY(mu_);
  // Persisted records from before a restart, by id.
  std::map<std::string, v1::MigrationStatus> restored_ ABSL_GUARDED_BY(mu_);
};

const char* StateName(v1::MigrationState state);

}  // namespace vhostmig::agent

#endif  // VHOSTMIG_MIGRATION_AGENT_AGENT_SERVICE_H_
