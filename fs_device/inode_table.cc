#include "fs_device/inode_table.h"

#include <sys/stat.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "fs_device/migrated_tables.h"

namespace vhostmig::fs {

struct InodeTable::Slab {
  explicit Slab(size_t n)
      : inodes(std::make_shared<std::vector<Inode>>()),
        locations(std::make_shared<std::vector<MigratedLocation>>()) {
    inodes->reserve(n);
    locations->reserve(n);
  }
  // Reserved up front: elements never move, so aliasing shared_ptrs to
  // them stay valid; each array lives until its last element is dropped.
  std::shared_ptr<std::vector<Inode>> inodes;
  std::shared_ptr<std::vector<MigratedLocation>> locations;
};

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
  const Entry* entry = FindLocked(node_id);
  return entry ? entry->inode : nullptr;
}

InodeTable::Entry* InodeTable::FindLocked(uint64_t node_id) const {
  auto it = entries_.find(node_id);
  if (it != entries_.end()) return &it->second;
  if (!overlay_) return nullptr;
  const size_t r = overlay_->records->Find(node_id);
  if (r == MigratedInodes::kNotFound || overlay_->is_promoted(r)) {
    return nullptr;  // never migrated, or promoted and gone since
  }
  return &PromoteLocked(r, nullptr);
}

InodeTable::Entry& InodeTable::PromoteLocked(size_t r, Slab* slab) const {
  const MigratedInodes& m = *overlay_->records;
  Overlay& o = *overlay_;
  o.promoted[r / 64] |= uint64_t{1} << (r % 64);
  --o.unpromoted;
  std::shared_ptr<MigratedLocation> location;
  std::shared_ptr<Inode> inode;
  if (slab != nullptr) {
    location = std::shared_ptr<MigratedLocation>(
        slab->locations, &slab->locations->emplace_back());
    inode = std::shared_ptr<Inode>(slab->inodes, &slab->inodes->emplace_back());
  } else {
    location = std::make_shared<MigratedLocation>();
    inode = std::make_shared<Inode>();
  }
  m.FillLocation(r, location.get());
  inode->node_id = m.node_id[r];
  inode->identity = location->identity;
  inode->type = m.type(r);
  Entry& entry = entries_[inode->node_id];
  entry.lookups = m.lookups[r];
  entry.opens = m.opens[r];
  entry.location.parent = location->parent;
  entry.location.name = location->name;
  inode->migrated = std::move(location);
  entry.inode = std::move(inode);
  return entry;
}

void InodeTable::IndexLocked(size_t limit) const {
  Overlay& o = *overlay_;
  const MigratedInodes& m = *o.records;
  for (size_t r = o.indexed; r < limit; ++r) {
    const uint64_t id = m.node_id[r];
    InodeIdentity key;
    if (o.is_promoted(r)) {
      auto it = entries_.find(id);
      if (it == entries_.end()) continue;  // forgotten since
      const Inode& inode = *it->second.inode;
      if (inode.error != 0) continue;  // failed inodes stay out (Replace)
      key = inode.identity;
    } else {
      key = m.identity(r);
    }
    // The newest entry with an identity names it: records come in
    // ascending node ids, and a ReplaceInode may have indexed a record
    // ahead of this pass.
    auto [slot, inserted] = by_identity_.try_emplace(key, id);
    if (!inserted && slot->second < id) slot->second = id;
  }
  o.indexed = std::max(o.indexed, limit);
}

void InodeTable::PromoteRangeLocked(size_t limit) const {
  Overlay& o = *overlay_;
  if (o.merged >= limit) return;
  Slab slab(limit - o.merged);
  for (size_t r = o.merged; r < limit; ++r) {
    if (!o.is_promoted(r)) PromoteLocked(r, &slab);
  }
  o.merged = limit;
}

std::shared_ptr<const Inode> InodeTable::Ref(Inode candidate,
                                             InodeLocation where) {
  absl::MutexLock lock(&mu_);
  IndexAllLocked();
  auto idx = by_identity_.find(candidate.identity);
  Entry* found = idx != by_identity_.end() ? FindLocked(idx->second) : nullptr;
  if (found != nullptr) {
    Entry& entry = *found;
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
        } else {
          MarkRecounted(existing.node_id);
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
  Entry* entry = FindLocked(node_id);
  if (entry == nullptr) return;
  entry->lookups = nlookup >= entry->lookups ? 0 : entry->lookups - nlookup;
  if (entry->lookups > 0 || entry->opens > 0) {
    MarkRecounted(node_id);
  } else {
    MaybeRemove(node_id);
  }
}

bool InodeTable::AddOpen(uint64_t node_id) {
  absl::MutexLock lock(&mu_);
  Entry* entry = FindLocked(node_id);
  if (entry == nullptr) return false;
  ++entry->opens;
  return true;
}

void InodeTable::ReleaseOpen(uint64_t node_id) {
  absl::MutexLock lock(&mu_);
  Entry* entry = FindLocked(node_id);
  if (entry == nullptr || entry->opens == 0) return;
  --entry->opens;
  MaybeRemove(node_id);
}

void InodeTable::SetLocation(uint64_t node_id, InodeLocation where) {
  absl::MutexLock lock(&mu_);
  if (node_id == kRootNodeId) return;
  Entry* entry = FindLocked(node_id);
  if (entry != nullptr) {
    entry->location = std::move(where);
    MarkChanged(node_id);
  }
}

std::optional<uint64_t> InodeTable::FindByIdentity(
    const InodeIdentity& id) const {
  absl::MutexLock lock(&mu_);
  IndexAllLocked();
  auto it = by_identity_.find(id);
  if (it == by_identity_.end()) return std::nullopt;
  return it->second;
}

void InodeTable::ClearExceptRoot() {
  absl::MutexLock lock(&mu_);
  ClearLocked();
  if (tracking_) all_changed_ = true;
}

void InodeTable::ClearLocked() {
  overlay_.reset();
  Entry root = std::move(entries_.at(kRootNodeId));
  entries_.clear();
  by_identity_.clear();
  by_identity_.emplace(root.inode->identity, kRootNodeId);
  entries_.emplace(kRootNodeId, std::move(root));
}

std::optional<InodeTable::EntryInfo> InodeTable::Info(uint64_t node_id) const {
  absl::MutexLock lock(&mu_);
  const Entry* entry = FindLocked(node_id);
  if (entry == nullptr) return std::nullopt;
  return EntryInfo{entry->lookups, entry->opens, entry->location};
}

size_t InodeTable::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size() + (overlay_ ? overlay_->unpromoted : 0);
}

size_t InodeTable::unmerged_migrated() const {
  absl::MutexLock lock(&mu_);
  return overlay_ ? overlay_->unpromoted : 0;
}

uint64_t InodeTable::next_node_id() const {
  absl::MutexLock lock(&mu_);
  return next_node_id_;
}

void InodeTable::MarkChanged(uint64_t node_id) {
  if (tracking_) changed_.insert(node_id);
}

void InodeTable::MarkRecounted(uint64_t node_id) {
  if (tracking_) recounted_.insert(node_id);
}

std::vector<InodeTable::EntrySnapshot> InodeTable::Snapshot() const {
  absl::MutexLock lock(&mu_);
  PromoteAllLocked();
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
    const Entry* entry = FindLocked(id);
    if (entry == nullptr) {
      out->push_back(EntryState{});
    } else {
      out->push_back(EntryState{entry->inode.get(), entry->lookups});
    }
  }
}

std::vector<InodeTable::EntrySnapshot> InodeTable::SnapshotOf(
    absl::Span<const uint64_t> ids) const {
  absl::MutexLock lock(&mu_);
  std::vector<EntrySnapshot> out;
  out.reserve(ids.size());
  for (uint64_t id : ids) {
    const Entry* e = FindLocked(id);
    if (e == nullptr) continue;
    out.push_back(EntrySnapshot{e->inode, e->lookups, e->opens, e->location});
  }
  return out;
}

void InodeTable::StartChangeTracking() {
  absl::MutexLock lock(&mu_);
  tracking_ = true;
  all_changed_ = false;
  changed_.clear();
  recounted_.clear();
}

InodeTable::Changes InodeTable::TakeChanges() {
  absl::MutexLock lock(&mu_);
  Changes out;
  out.all = all_changed_;
  all_changed_ = false;
  out.relocated.assign(changed_.begin(), changed_.end());
  for (uint64_t id : recounted_) {
    if (!changed_.contains(id)) out.recounted.push_back(id);
  }
  changed_.clear();
  recounted_.clear();
  return out;
}

void InodeTable::StopChangeTracking() {
  absl::MutexLock lock(&mu_);
  tracking_ = false;
  all_changed_ = false;
  changed_.clear();
  recounted_.clear();
}

absl::Status InodeTable::InstallMigrated(
    std::shared_ptr<const MigratedInodes> records, uint64_t next_node_id) {
  absl::MutexLock lock(&mu_);
  if (entries_.size() != 1 || overlay_ || next_node_id_ != kRootNodeId + 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot load device state: the inode table is in use (",
        entries_.size() - 1 + (overlay_ ? overlay_->unpromoted : 0),
        " inodes besides the root)"));
  }
  const size_t n = records->size();
  if (n == 0 || records->node_id[0] != kRootNodeId || !records->is_root(0)) {
    return absl::InternalError("InstallMigrated: record 0 is not the root");
  }
  entries_.at(kRootNodeId).opens = records->opens[0];
  auto overlay = std::make_unique<Overlay>();
  overlay->size = n;
  overlay->promoted.assign((n + 63) / 64, 0);
  overlay->promoted[0] = 1;  // the root is the table's own entry
  overlay->unpromoted = n - 1;
  overlay->indexed = 1;
  overlay->merged = 1;
  overlay->records = std::move(records);
  overlay_ = std::move(overlay);
  next_node_id_ = next_node_id;
  return absl::OkStatus();
}

bool InodeTable::MergeMigrated(size_t max_records) {
  absl::MutexLock lock(&mu_);
  if (!overlay_) return true;
  Overlay& o = *overlay_;
  if (o.indexed < o.size) {
    IndexLocked(std::min(o.size, o.indexed + max_records));
    return false;
  }
  PromoteRangeLocked(std::min(o.size, o.merged + max_records));
  if (o.merged < o.size) return false;
  overlay_.reset();  // everything is in the hash tables now
  return true;
}

std::shared_ptr<const Inode> InodeTable::ReplaceInode(
    uint64_t node_id, const std::shared_ptr<const Inode>& expected,
    std::shared_ptr<const Inode> replacement) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(node_id);
  if (it == entries_.end()) return nullptr;
  if (it->second.inode != expected) return it->second.inode;
  MarkChanged(node_id);  // a save must locate the re-opened inode anew
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
