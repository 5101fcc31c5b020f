#include "fs_device/handle_table.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace vhostmig::fs {

uint64_t HandleTable::Insert(std::shared_ptr<OpenFile> file) {
  absl::MutexLock lock(&mu_);
  const uint64_t fh = next_fh_++;
  files_.emplace(fh, std::move(file));
  return fh;
}

std::shared_ptr<OpenFile> HandleTable::Get(uint64_t fh) const {
  absl::MutexLock lock(&mu_);
  auto it = files_.find(fh);
  return it == files_.end() ? nullptr : it->second;
}

std::shared_ptr<OpenFile> HandleTable::Remove(uint64_t fh) {
  absl::MutexLock lock(&mu_);
  auto it = files_.find(fh);
  if (it == files_.end()) return nullptr;
  auto file = std::move(it->second);
  files_.erase(it);
  return file;
}

std::vector<std::shared_ptr<OpenFile>> HandleTable::Clear() {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<OpenFile>> out;
  out.reserve(files_.size());
  for (auto& [fh, file] : files_) out.push_back(std::move(file));
  files_.clear();
  return out;
}

size_t HandleTable::size() const {
  absl::MutexLock lock(&mu_);
  return files_.size();
}

uint64_t HandleTable::next_fh() const {
  absl::MutexLock lock(&mu_);
  return next_fh_;
}

std::vector<std::pair<uint64_t, std::shared_ptr<OpenFile>>>
HandleTable::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return {files_.begin(), files_.end()};
}

absl::Status HandleTable::InstallMigrated(
    std::vector<std::pair<uint64_t, std::shared_ptr<OpenFile>>> files,
    uint64_t next_fh) {
  absl::MutexLock lock(&mu_);
  if (!files_.empty() || next_fh_ != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot load device state: the handle table is in use (",
                     files_.size(), " open handles, next fh ", next_fh_, ")"));
  }
  for (auto& [fh, file] : files) files_.emplace(fh, std::move(file));
  next_fh_ = next_fh;
  return absl::OkStatus();
}

std::shared_ptr<OpenFile> HandleTable::Replace(
    uint64_t fh, const std::shared_ptr<OpenFile>& expected,
    std::shared_ptr<OpenFile> replacement) {
  absl::MutexLock lock(&mu_);
  auto it = files_.find(fh);
  if (it == files_.end()) return nullptr;
  if (it->second == expected) it->second = std::move(replacement);
  return it->second;
}

void HandleTable::ResetToFresh() {
  absl::MutexLock lock(&mu_);
  files_.clear();
  next_fh_ = 1;
}

}  // namespace vhostmig::fs
