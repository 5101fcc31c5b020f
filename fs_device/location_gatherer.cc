#include "fs_device/location_gatherer.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <utility>

namespace vhostmig::fs {

LocationGatherer::LocationGatherer(PassthroughFs* fs, MigrationMode mode)
    : fs_(fs), mode_(mode) {}

LocationGatherer::~LocationGatherer() { Cancel(); }

void LocationGatherer::StopThread() {
  cancel_.store(true, std::memory_order_relaxed);
  if (thread_.joinable()) thread_.join();
  cancel_.store(false, std::memory_order_relaxed);
}

void LocationGatherer::Start() {
  absl::MutexLock lock(&thread_mu_);
  StopThread();
  {
    absl::MutexLock l(&mu_);
    prepared_.clear();
    pass_done_ = false;
  }
  // Tracking first, snapshot second: whatever changes after the snapshot
  // was taken is in the changed set.
  fs_->inodes().StartChangeTracking();
  started_ = true;
  thread_ =
      std::thread(&LocationGatherer::Pass, this, fs_->inodes().Snapshot());
}

void LocationGatherer::Cancel() {
  absl::MutexLock lock(&thread_mu_);
  StopThread();
  if (started_) fs_->inodes().StopChangeTracking();
  started_ = false;
  absl::MutexLock l(&mu_);
  prepared_.clear();
  pass_done_ = false;
}

GatheredLocations LocationGatherer::Collect() {
  absl::MutexLock lock(&thread_mu_);
  GatheredLocations out;
  if (!started_) return out;
  if (thread_.joinable()) thread_.join();
  {
    absl::MutexLock l(&mu_);
    out.prepared = prepared_;  // kept: a failed save may be retried
  }
  bool all = false;
  for (uint64_t id : fs_->inodes().TakeChanged(&all)) out.changed.insert(id);
  out.all_changed = all;
  // What changed is examined by this save; keep those for a retry too.
  if (!all) {
    absl::MutexLock l(&mu_);
    for (uint64_t id : out.changed) prepared_.erase(id);
  } else {
    absl::MutexLock l(&mu_);
    prepared_.clear();
  }
  return out;
}

bool LocationGatherer::WaitForPass(absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&pass_done_), timeout);
}

void LocationGatherer::Pass(std::vector<InodeTable::EntrySnapshot> entries) {
  for (const auto& entry : entries) {
    if (cancel_.load(std::memory_order_relaxed)) return;
    PreparedLocation p;
    p.inode = entry.inode;
    Locate(*fs_, mode_, entry, &p.record);
    absl::MutexLock l(&mu_);
    prepared_.insert_or_assign(entry.inode->node_id, std::move(p));
  }
  absl::MutexLock l(&mu_);
  pass_done_ = true;
}

void LocationGatherer::Locate(PassthroughFs& fs, MigrationMode mode,
                              const InodeTable::EntrySnapshot& entry,
                              fs_state::v1::InodeRecord* record) {
  const Inode& inode = *entry.inode;
  if (inode.node_id == kRootNodeId) {
    record->set_root(true);
    return;
  }
  if (inode.error != 0) return;  // a migrated inode that failed: unlocated
  if (mode == MigrationMode::kFileHandles) {
    FileHandle handle;
    bool have = false;
    if (inode.handle) {
      handle = *inode.handle;
      have = true;
    } else {
      int err = 0;
      InodeFd fd = fs.PathFd(entry.inode, &err);
      have = err == 0 && FileHandle::FromFd(fd.get(), &handle) == 0;
    }
    if (have) {
      auto* fh = record->mutable_file_handle();
      fh->set_handle_type(handle.type);
      fh->set_handle(handle.bytes);
      fh->set_mount_id(handle.mount_id);
    }
  }
  // The path: verified, never trusted as recorded.
  const InodeLocation& where = entry.location;
  if (where.parent == 0 || where.name.empty()) return;
  auto parent = fs.inodes().Get(where.parent);
  if (!parent || !parent->is_dir()) return;
  int err = 0;
  InodeFd dir = fs.PathFd(parent, &err);
  if (err != 0) return;
  struct statx st {};
  if (statx(dir.get(), where.name.c_str(), AT_SYMLINK_NOFOLLOW,
            STATX_BASIC_STATS | STATX_MNT_ID, &st) != 0) {
    return;
  }
  if (!(IdentityOf(st) == inode.identity) ||
      (st.stx_mode & S_IFMT) != inode.type) {
    return;
  }
  auto* path = record->mutable_path();
  path->set_parent(where.parent);
  path->set_name(where.name);
}

}  // namespace vhostmig::fs
