#include "migration/agent/state_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "base/errno_status.h"
#include "google/protobuf/text_format.h"

namespace vhostmig::agent {

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(
    const std::string& dir) {
  if (dir.empty()) return std::unique_ptr<StateStore>(new StateStore(""));
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create the state directory ", dir, ": ", ec.message()));
  }
  std::unique_ptr<StateStore> store(
      new StateStore(dir + "/agent-state.textproto"));
  std::ifstream in(store->path_);
  if (in) {
    std::stringstream text;
    text << in.rdbuf();
    absl::MutexLock lock(&store->mu_);
    if (!google::protobuf::TextFormat::ParseFromString(text.str(),
                                                       &store->state_)) {
      return absl::DataLossError(absl::StrCat(
          "the agent state file ", store->path_,
          " is corrupt; it may record a migration in doubt. Inspect it, then "
          "move it away to start fresh"));
    }
  }
  return store;
}

std::vector<v1::MigrationStatus> StateStore::records() const {
  absl::MutexLock lock(&mu_);
  return {state_.migrations().begin(), state_.migrations().end()};
}

absl::Status StateStore::Put(const v1::MigrationStatus& record) {
  absl::MutexLock lock(&mu_);
  bool replaced = false;
  for (v1::MigrationStatus& m : *state_.mutable_migrations()) {
    if (m.id() == record.id() && m.role() == record.role()) {
      m = record;
      replaced = true;
    }
  }
  if (!replaced) *state_.add_migrations() = record;
  // Evict the oldest settled records.
  auto* list = state_.mutable_migrations();
  for (int i = 0; list->size() > kMaxRecords && i < list->size();) {
    if (list->Get(i).state() != v1::IN_DOUBT) {
      list->DeleteSubrange(i, 1);
    } else {
      ++i;
    }
  }
  return WriteLocked();
}

absl::Status StateStore::WriteLocked() {
  if (path_.empty()) return absl::OkStatus();
  std::string text;
  google::protobuf::TextFormat::PrintToString(state_, &text);
  const std::string tmp = path_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return LastErrnoStatus(absl::StrCat("open ", tmp));
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status s = LastErrnoStatus(absl::StrCat("write ", tmp));
      ::close(fd);
      return s;
    }
    done += n;
  }
  if (::fsync(fd) != 0) {
    absl::Status s = LastErrnoStatus(absl::StrCat("fsync ", tmp));
    ::close(fd);
    return s;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    return LastErrnoStatus(absl::StrCat("rename ", tmp));
  }
  const std::string dir = std::filesystem::path(path_).parent_path();
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace vhostmig::agent
