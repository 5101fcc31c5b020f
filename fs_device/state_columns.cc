#include "fs_device/state_columns.h"

#include <limits.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace vhostmig::fs {
namespace {

namespace pb = fs_state::v1;

constexpr uint32_t kTypes[] = {S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR,
                               S_IFBLK, S_IFIFO, S_IFSOCK};

using columns_internal::Apply;
using columns_internal::Bad;
using columns_internal::Delta;

}  // namespace

namespace columns_internal {

absl::Status Bad(uint64_t chunk, size_t record, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      "device state rejected: chunk ", chunk, " record ", record, ": ", what));
}

}  // namespace columns_internal

uint32_t KindOfType(uint32_t file_type) {
  for (uint32_t i = 0; i < std::size(kTypes); ++i) {
    if (kTypes[i] == file_type) return i;
  }
  return kKindTypeMask;
}

void InodeColumnEncoder::Add(uint64_t node_id, uint64_t lookups,
                             uint32_t file_type, const InodeIdentity& identity,
                             bool root, bool has_path, uint64_t parent,
                             absl::string_view name, const FileHandle* handle) {
  uint32_t kind = KindOfType(file_type);
  if (root) kind |= kKindRoot;
  if (has_path) kind |= kKindPath;
  if (handle) kind |= kKindHandle;
  if (lookups == 1) kind |= kKindOneLookup;
  const bool own_device =
      identity.dev != root_.dev || identity.mount_id != root_.mount_id;
  if (own_device) kind |= kKindOwnDevice;

  out_->add_node_delta(node_id - prev_node_);
  prev_node_ = node_id;
  out_->add_kind(kind);
  if (lookups != 1) out_->add_lookups(lookups);
  if (has_path) {
    out_->add_parent_delta(Delta(parent, prev_parent_));
    prev_parent_ = parent;
    const size_t limit = std::min(name.size(), prev_name_.size());
    size_t shared = 0;
    while (shared < limit && name[shared] == prev_name_[shared]) ++shared;
    out_->add_name_shared(static_cast<uint32_t>(shared));
    std::string* suffixes = out_->mutable_name_suffixes();
    suffixes->append(name.data() + shared, name.size() - shared);
    suffixes->push_back('\0');
    prev_name_.assign(name.data(), name.size());
  }
  out_->add_ino_delta(Delta(identity.ino, prev_ino_));
  prev_ino_ = identity.ino;
  if (own_device) {
    out_->add_dev(identity.dev);
    out_->add_mount_id(identity.mount_id);
  }
  if (handle) {
    pb::FileHandleLocation* h = out_->add_file_handles();
    h->set_handle_type(handle->type);
    h->set_handle(handle->bytes);
    h->set_mount_id(handle->mount_id);
  }
  ++records_;
}

void HandleColumnEncoder::Add(uint64_t fh, uint64_t node_id, int32_t flags,
                              bool is_dir) {
  out_->add_fh_delta(fh - prev_fh_);
  prev_fh_ = fh;
  out_->add_node_delta(Delta(node_id, prev_node_));
  prev_node_ = node_id;
  out_->add_flags_dir((uint64_t{static_cast<uint32_t>(flags)} << 1) |
                      (is_dir ? 1 : 0));
  ++records_;
}

absl::Status DecodeInodeColumns(
    const pb::InodeColumns& c, const InodeIdentity& source_root, uint64_t chunk,
    absl::FunctionRef<absl::Status(const InodeView&)> sink) {
  return ForEachInode(c, source_root, chunk, sink);
}

absl::Status DecodeHandleColumns(
    const pb::HandleColumns& c, uint64_t chunk,
    absl::FunctionRef<absl::Status(const HandleFields&)> sink) {
  const size_t n = c.fh_delta_size();
  if (c.node_delta_size() != static_cast<int>(n) ||
      c.flags_dir_size() != static_cast<int>(n)) {
    return Bad(chunk, 0, "handle column lengths differ");
  }
  uint64_t fh = 0, node = 0;
  HandleFields h;
  for (size_t i = 0; i < n; ++i) {
    fh += c.fh_delta(i);
    node = Apply(node, c.node_delta(i));
    const uint64_t flags_dir = c.flags_dir(i);
    if (flags_dir >> 33) return Bad(chunk, i, "handle flags out of range");
    h.fh = fh;
    h.node_id = node;
    h.flags = static_cast<int32_t>(static_cast<uint32_t>(flags_dir >> 1));
    h.is_dir = flags_dir & 1;
    if (absl::Status s = sink(h); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status DecodeInodeColumns(const pb::InodeColumns& c,
                                const InodeIdentity& source_root,
                                uint64_t chunk,
                                StableVector<InodeFields>* out) {
  return DecodeInodeColumns(c, source_root, chunk,
                            [out](const InodeView& v) -> absl::Status {
                              InodeFields& f = out->emplace_back();
                              f.node_id = v.node_id;
                              f.lookups = v.lookups;
                              f.file_type = v.file_type;
                              f.identity = v.identity;
                              f.root = v.root;
                              f.has_path = v.has_path;
                              f.parent = v.parent;
                              f.name.assign(v.name.data(), v.name.size());
                              f.has_handle = v.has_handle;
                              f.handle_type = v.handle_type;
                              f.handle.assign(v.handle.data(), v.handle.size());
                              f.handle_mount_id = v.handle_mount_id;
                              return absl::OkStatus();
                            });
}

absl::Status DecodeHandleColumns(const pb::HandleColumns& c, uint64_t chunk,
                                 StableVector<HandleFields>* out) {
  return DecodeHandleColumns(c, chunk,
                             [out](const HandleFields& h) -> absl::Status {
                               out->push_back(h);
                               return absl::OkStatus();
                             });
}

}  // namespace vhostmig::fs
