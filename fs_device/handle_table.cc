#include "fs_device/handle_table.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "fs_device/migrated_tables.h"

namespace vhostmig::fs {

HandleTable::Map::iterator HandleTable::FindLocked(uint64_t fh) const {
  auto it = files_.find(fh);
  if (it != files_.end() || !overlay_) return it;
  const size_t i = overlay_->files->Find(fh);
  if (i == MigratedHandles::kNotFound ||
      ((overlay_->promoted[i / 64] >> (i % 64)) & 1)) {
    return files_.end();  // never migrated, or promoted and gone since
  }
  return PromoteLocked(i);
}

HandleTable::Map::iterator HandleTable::PromoteLocked(size_t i) const {
  const MigratedHandles& m = *overlay_->files;
  overlay_->promoted[i / 64] |= uint64_t{1} << (i % 64);
  --overlay_->unpromoted;
  auto file = std::make_shared<OpenFile>();
  file->node_id = m.node_id[i];
  file->flags = m.flags[i];
  file->is_dir = m.is_dir[i] != 0;
  file->migrated = true;
  return files_.emplace(m.fh[i], std::move(file)).first;
}

void HandleTable::PromoteAllLocked() const {
  if (!overlay_) return;
  for (size_t i = overlay_->merged; i < overlay_->size; ++i) {
    if (!((overlay_->promoted[i / 64] >> (i % 64)) & 1)) PromoteLocked(i);
  }
  overlay_.reset();
}

uint64_t HandleTable::Insert(std::shared_ptr<OpenFile> file) {
  absl::MutexLock lock(&mu_);
  const uint64_t fh = next_fh_++;
  files_.emplace(fh, std::move(file));
  return fh;
}

std::shared_ptr<OpenFile> HandleTable::Get(uint64_t fh) const {
  absl::MutexLock lock(&mu_);
  auto it = FindLocked(fh);
  return it == files_.end() ? nullptr : it->second;
}

std::shared_ptr<OpenFile> HandleTable::Remove(uint64_t fh) {
  absl::MutexLock lock(&mu_);
  auto it = FindLocked(fh);
  if (it == files_.end()) return nullptr;
  auto file = std::move(it->second);
  files_.erase(it);
  return file;
}

std::vector<std::shared_ptr<OpenFile>> HandleTable::Clear() {
  absl::MutexLock lock(&mu_);
  PromoteAllLocked();
  std::vector<std::shared_ptr<OpenFile>> out;
  out.reserve(files_.size());
  for (auto& [fh, file] : files_) out.push_back(std::move(file));
  files_.clear();
  return out;
}

size_t HandleTable::size() const {
  absl::MutexLock lock(&mu_);
  return files_.size() + (overlay_ ? overlay_->unpromoted : 0);
}

uint64_t HandleTable::next_fh() const {
  absl::MutexLock lock(&mu_);
  return next_fh_;
}

std::vector<std::pair<uint64_t, std::shared_ptr<OpenFile>>>
HandleTable::Snapshot() const {
  absl::MutexLock lock(&mu_);
  PromoteAllLocked();
  return {files_.begin(), files_.end()};
}

absl::Status HandleTable::InstallMigrated(
    std::shared_ptr<const MigratedHandles> files, uint64_t next_fh) {
  absl::MutexLock lock(&mu_);
  if (!files_.empty() || overlay_ || next_fh_ != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load device state: the handle table is in use (",
                     files_.size(), " open handles, next fh ", next_fh_, ")"));
  }
  next_fh_ = next_fh;
  if (files->size() == 0) return absl::OkStatus();
  auto overlay = std::make_unique<Overlay>();
  overlay->size = files->size();
  overlay->promoted.assign((overlay->size + 63) / 64, 0);
  overlay->unpromoted = overlay->size;
  overlay->files = std::move(files);
  overlay_ = std::move(overlay);
  return absl::OkStatus();
}

bool HandleTable::MergeMigrated(size_t max_files) {
  absl::MutexLock lock(&mu_);
  if (!overlay_) return true;
  Overlay& o = *overlay_;
  const size_t limit = std::min(o.size, o.merged + max_files);
  for (; o.merged < limit; ++o.merged) {
    const size_t i = o.merged;
    if (!((o.promoted[i / 64] >> (i % 64)) & 1)) PromoteLocked(i);
  }
  if (o.merged < o.size) return false;
  overlay_.reset();
  return true;
}

std::shared_ptr<OpenFile> HandleTable::Replace(
    uint64_t fh, const std::shared_ptr<OpenFile>& expected,
    std::shared_ptr<OpenFile> replacement) {
  absl::MutexLock lock(&mu_);
  auto it = FindLocked(fh);
  if (it == files_.end()) return nullptr;
  if (it->second == expected) it->second = std::move(replacement);
  return it->second;
}

void HandleTable::ResetToFresh() {
  absl::MutexLock lock(&mu_);
  overlay_.reset();
  files_.clear();
  next_fh_ = 1;
}

}  // namespace vhostmig::fs
