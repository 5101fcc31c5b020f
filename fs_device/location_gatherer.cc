#include "fs_device/location_gatherer.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <utility>

#include "fs_device/state_writer.h"

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
    prepared_.reset();
    pass_done_ = false;
  }
  changed_.clear();
  recounted_.clear();
  all_changed_ = false;
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
  changed_.clear();
  recounted_.clear();
  all_changed_ = false;
  absl::MutexLock l(&mu_);
  prepared_.reset();
  pass_done_ = false;
}

GatheredLocations LocationGatherer::Collect() {
  absl::MutexLock lock(&thread_mu_);
  GatheredLocations out;
  if (!started_) return out;
  if (thread_.joinable()) thread_.join();
  InodeTable::Changes changes = fs_->inodes().TakeChanges();
  changed_.insert(changes.relocated.begin(), changes.relocated.end());
  recounted_.insert(changes.recounted.begin(), changes.recounted.end());
  all_changed_ |= changes.all;
  {
    absl::MutexLock l(&mu_);
    out.prepared = prepared_;
  }
  out.all_changed = all_changed_ || out.prepared == nullptr;
  out.changed.assign(changed_.begin(), changed_.end());
  std::sort(out.changed.begin(), out.changed.end());
  for (uint64_t id : recounted_) {
    if (!changed_.contains(id)) out.recounted.push_back(id);
  }
  std::sort(out.recounted.begin(), out.recounted.end());
  return out;
}

bool LocationGatherer::WaitForPass(absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&pass_done_), timeout);
}

void LocationGatherer::Pass(std::vector<InodeTable::EntrySnapshot> entries) {
  // Ascending node ids: the order the writer emits, so its differences
  // stay small.
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return a.inode->node_id < b.inode->node_id;
  });
  auto set = std::make_shared<PreparedSet>();
  set->locations.reserve(entries.size());
  set->ids.reserve(entries.size());
  for (const auto& entry : entries) {
    if (cancel_.load(std::memory_order_relaxed)) return;
    PreparedLocation& p = set->locations.emplace_back();
    Locate(*fs_, mode_, entry, &p);
    set->ids.push_back(p.node_id);
  }
  if (cancel_.load(std::memory_order_relaxed)) return;
  // An encoding failure (a frame over the limit, which the chunk size
  // rules out) publishes nothing: the save then locates everything itself.
  if (!StateWriter::EncodePrepared(fs_->inodes().Get(kRootNodeId)->identity,
                                   set.get())
           .ok()) {
    set.reset();
  }
  absl::MutexLock l(&mu_);
  prepared_ = std::move(set);
  pass_done_ = true;
}

void LocationGatherer::Locate(PassthroughFs& fs, MigrationMode mode,
                              const InodeTable::EntrySnapshot& entry,
                              PreparedLocation* out) {
  const Inode& inode = *entry.inode;
  out->inode = entry.inode;
  out->node_id = inode.node_id;
  out->lookups = entry.lookups;
  if (inode.node_id == kRootNodeId) {
    out->root = true;
    return;
  }
  if (inode.error != 0) return;  // a migrated inode that failed: unlocated
  if (mode == MigrationMode::kFileHandles) {
    if (inode.handle) {
      out->handle = *inode.handle;
    } else {
      int err = 0;
      InodeFd fd = fs.PathFd(entry.inode, &err);
      FileHandle handle;
      if (err == 0 && FileHandle::FromFd(fd.get(), &handle) == 0) {
        out->handle = std::move(handle);
      }
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
  out->has_path = true;
  out->parent = where.parent;
  out->name = where.name;
}

}  // namespace vhostmig::fs
