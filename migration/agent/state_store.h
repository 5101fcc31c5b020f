// StateStore: the agent's small persistent record (--state-dir) of
// migrations whose outcome matters after a restart. The never-both-running
// rule needs it: a source that committed and never heard that the
// destination started is IN_DOUBT, and stays so — refusing a new guest on
// that device — until an operator resolves it, even if the agent restarts
// in between; a restarted destination can still say whether it started the
// guest, which is what the operator needs to decide.
//
// The file is AgentState in protobuf text format, replaced atomically
// (write to a temporary file, fsync, rename, fsync the directory), so a
// crash leaves either the old or the new record. At most kMaxRecords are
// kept; IN_DOUBT records are never evicted.
//
// Thread-safety: all methods are thread-safe.
#ifndef VHOSTMIG_MIGRATION_AGENT_STATE_STORE_H_
#define VHOSTMIG_MIGRATION_AGENT_STATE_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "proto/agent.pb.h"

namespace vhostmig::agent {

class StateStore {
 public:
  static constexpr int kMaxRecords = 200;

  // `dir` empty: nothing is persisted (records live in memory only).
  // Creates `dir` if needed; a corrupt file is an error (it is not
  // silently replaced: it may hold an IN_DOUBT record).
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(
      const std::string& dir);

  std::vector<v1::MigrationStatus> records() const;
  // Inserts or replaces the record with the same id and writes the file.
  absl::Status Put(const v1::MigrationStatus& record);
  const std::string& path() const { return path_; }

 private:
  explicit StateStore(std::string path) : path_(std::move(path)) {}
  absl::Status WriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  mutable absl::Mutex mu_;
  v1::AgentState state_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vhostmig::agent

#endif  // VHOSTMIG_MIGRATION_AGENT_STATE_STORE_H_
