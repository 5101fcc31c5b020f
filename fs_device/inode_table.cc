#include "fs_device/inode_table.h"

#include <sys/stat.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace vhostmig::fs {

InodeTable::InodeTable(Inode root) {
  root.node_id = kRootNodeId;
  const InodeIdentity id = root.identity;
  Entry entry;
  entry.inode = std::make_shared<const Inode>(std::move(root));
  entries_.emplace(kRootNodeId, std::move(entry));
  by_identity_.emplace(id, kRootNodeId);
}

std::shared_ptr<const Inode> InodeTable::Get(uint64_t node_id) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(node_id);
  if (it == entries_.end()) return nullptr;
  return it->second.inode;
}

std::shared_ptr<const Inode> InodeTable::Ref(Inode candidate,
                                             InodeLocation where) {
  absl::MutexLock lock(&mu_);
  auto idx = by_identity_.find(candidate.identity);
  if (idx != by_identity_.end()) {
    Entry& entry = entries_.at(idx->second);
    const Inode& existing = *entry.inode;
    const bool same_file = existing.type == candidate.type &&
                           (!existing.handle || !candidate.handle ||
                            *existing.handle == *candidate.handle);
    if (same_file) {
      if (existing.node_id != kRootNodeId) {
        ++entry.lookups;
        if (entry.location.parent != where.parent ||
            entry.location.name != where.name) {
          MarkChanged(existing.node_id);
        }
        entry.location = std::move(where);
      }
      // `candidate` (and its fd) is discarded on return.
      return entry.inode;
    }
    // Same inode number, different file: the old one is gone and its
    // number was reused. The old entry lives on under its own node id
    // until the guest forgets it; the identity now names the new file.
  }
  const uint64_t node_id = next_node_id_++;
  candidate.node_id = node_id;
  Entry entry;
  entry.inode = std::make_shared<const Inode>(std::move(candidate));
  entry.lookups = 1;
  entry.location = std::move(where);
  by_identity_[entry.inode->identity] = node_id;
  auto result = entry.inode;
  entries_.emplace(node_id, std::move(entry));
  MarkChanged(node_id);
  return result;
}

void InodeTable::MaybeRemove(uint64_t node_id) {
  if (node_id == kRootNodeId) return;
  auto it = entries_.find(node_id);
  if (it == entries_.end()) return;
  if (it->second.lookups > 0 || it->second.opens > 0) return;
  auto idx = by_identity_.find(it->second.inode->identity);
  if (idx != by_identity_.end() && idx->second == node_id) {
    by_identity_.erase(idx);
  }
  entries_.erase(it);
  MarkChanged(node_id);
}

void InodeTable::Forget(uint64_t node_id, uint64_t nlookup) {
  absl::MutexLock lock(&mu_);
  if (node_id == kRootNodeId) return;
  auto it = entries_.find(node_id);
  if (it == entries_.end()) return;
  Entry& entry = it->second;
  entry.lookups = nlookup >= entry.lookups ? 0 : entry.lookups - nlookup;
  MaybeRemove(node_id);
}

bool InodeTable::AddOpen(uint64_t node_id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(node_id);
  if (it == entries_.end()) return false;
  ++it->second.opens;
  return true;
}

void InodeTable::ReleaseOpen(uint64_t node_id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(node_id);
  if (it == entries_.end() || it->second.opens == 0) return;
  --it->second.opens;
  MaybeRemove(node_id);
}

void InodeTable::SetLocation(uint64_t node_id, InodeLocation where) {
  absl::MutexLock lock(&mu_);
  if (node_id == kRootNodeId) return;
  auto it = entries_.find(node_id);
  if (it != entries_.end()) {
    it->second.location = std::move(where);
    MarkChanged(node_id);
  }
}

std::optional<uint64_t> InodeTable::FindByIdentity(
    const InodeIdentity& id) const {
  absl::MutexLock lock(&mu_);
  auto it = by_identity_.find(id);
  if (it == by_identity_.end()) return std::nullopt;
  return it->second;
}

void InodeTable::ClearExceptRoot() {
  absl::MutexLock lock(&mu_);
  Entry root = std::move(entries_.at(kRootNodeId));
  entries_.clear();
  by_identity_.clear();
  by_identity_.emplace(root.inode->identity, kRootNodeId);
  entries_.emplace(kRootNodeId, std::move(root));
  if (tracking_) all_changed_ = true;
}

std::optional<InodeTable::EntryInfo> InodeTable::Info(uint64_t node_id) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(node_id);
  if (it == entries_.end()) return std::nullopt;
  return EntryInfo{it->second.lookups, it->second.opens, it->second.location};
}

size_t InodeTable::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

uint64_t InodeTable::next_node_id() const {
  absl::MutexLock lock(&mu_);
  return next_node_id_;
}

void InodeTable::MarkChanged(uint64_t node_id) {
  if (tracking_) changed_.insert(node_id);
}

std::vector<InodeTable::EntrySnapshot> InodeTable::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::vector<EntrySnapshot> out;
  out.reserve(entries_.size());
  for (const auto& [id, e] : entries_) {
    out.push_back(EntrySnapshot{e.inode, e.lookups, e.opens, e.location});
  }
  return out;
}

void InodeTable::StatesOf(absl::Span<const uint64_t> ids,
                          std::vector<EntryState>* out) const {
  out->clear();
  out->reserve(ids.size());
  absl::MutexLock lock(&mu_);
  for (uint64_t id : ids) {
    auto it = entries_.find(id);
    if (it == entries_.end()) {
      out->push_back(EntryState{});
    } else {
      out->push_back(EntryState{it->second.inode.get(), it->second.lookups});
    }
  }
}

std::vector<InodeTable::EntrySnapshot> InodeTable::SnapshotOf(
    absl::Span<const uint64_t> ids) const {
  absl::MutexLock lock(&mu_);
  std::vector<EntrySnapshot> out;
  out.reserve(ids.size());
  for (uint64_t id : ids) {
    auto it = entries_.find(id);
    if (it == entries_.end()) continue;
    const Entry& e = it->second;
    out.push_back(EntrySnapshot{e.inode, e.lookups, e.opens, e.location});
  }
  return out;
}

void InodeTable::StartChangeTracking() {
  absl::MutexLock lock(&mu_);
  tracking_ = true;
  all_changed_ = false;
  changed_.clear();
}

std::vector<uint64_t> InodeTable::TakeChanged(bool* all) {
  absl::MutexLock lock(&mu_);
  *all = all_changed_;
  all_changed_ = false;
  std::vector<uint64_t> out(changed_.begin(), changed_.end());
  changed_.clear();
  return out;
}

void InodeTable::StopChangeTracking() {
  absl::MutexLock lock(&mu_);
  tracking_ = false;
  all_changed_ = false;
  changed_.clear();
}

absl::Status InodeTable::InstallMigrated(
    size_t count, absl::FunctionRef<void(size_t, EntrySnapshot*)> fill,
    uint32_t root_opens, uint64_t next_node_id) {
  absl::MutexLock lock(&mu_);
  if (entries_.size() != 1 || next_node_id_ != kRootNodeId + 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load device state: the inode table is in use (",
                     entries_.size() - 1, " inodes besides the root)"));
  }
  entries_.reserve(count + 1);
  by_identity_.reserve(count + 1);
  EntrySnapshot e;
  for (size_t i = 0; i < count; ++i) {
    fill(i, &e);
    const uint64_t id = e.inode->node_id;
    auto [it, inserted] = entries_.try_emplace(id);
    if (id == kRootNodeId || !inserted) {
      Entry root = std::move(entries_.at(kRootNodeId));
      entries_.clear();
      by_identity_.clear();
      by_identity_.emplace(root.inode->identity, kRootNodeId);
      entries_.emplace(kRootNodeId, std::move(root));
      return absl::InternalError(
          absl::StrCat("InstallMigrated: duplicate node id ", id));
    }
    by_identity_[e.inode->identity] = id;
    Entry& entry = it->second;
    entry.inode = std::move(e.inode);
    entry.lookups = e.lookups;
    entry.opens = e.opens;
    entry.location = std::move(e.location);
  }
  entries_.at(kRootNodeId).opens = root_opens;
  next_node_id_ = next_node_id;
  return absl::OkStatus();
}

std::shared_ptr<const Inode> InodeTable::ReplaceInode(
    uint64_t node_id, const std::shared_ptr<const Inode>& expected,
    std::shared_ptr<const Inode> replacement) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(node_id);
  if (it == entries_.end()) return nullptr;
  if (it->second.inode != expected) return it->second.inode;
  auto idx = by_identity_.find(expected->identity);
  if (idx != by_identity_.end() && idx->second == node_id) {
    by_identity_.erase(idx);
  }
  // A failed inode stays out of the index: a fresh lookup of whatever the
  // name holds now must get a new node id, never the failed one.
  if (replacement->error == 0) by_identity_[replacement->identity] = node_id;
  it->second.inode = std::move(replacement);
  return it->second.inode;
}

void InodeTable::ResetToFresh() {
  ClearExceptRoot();
  absl::MutexLock lock(&mu_);
  entries_.at(kRootNodeId).opens = 0;
  next_node_id_ = kRootNodeId + 1;
}

}  // namespace vhostmig::fs
