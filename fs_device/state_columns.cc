#include "fs_device/state_columns.h"

#include <limits.h>
#include <sys/stat.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace vhostmig::fs {
namespace {

namespace pb = fs_state::v1;

constexpr uint32_t kTypes[] = {S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR,
                               S_IFBLK, S_IFIFO, S_IFSOCK};

// Differences are taken modulo 2^64 and carried as signed values, so any
// pair of ids round-trips (no signed overflow on either side).
int64_t Delta(uint64_t now, uint64_t before) {
  return static_cast<int64_t>(now - before);
}
uint64_t Apply(uint64_t before, int64_t delta) {
  return before + static_cast<uint64_t>(delta);
}

absl::Status Bad(uint64_t chunk, size_t record, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      "device state rejected: chunk ", chunk, " record ", record, ": ", what));
}

}  // namespace

uint32_t KindOfType(uint32_t file_type) {
  for (uint32_t i = 0; i < std::size(kTypes); ++i) {
    if (kTypes[i] == file_type) return i;
  }
  return kKindTypeMask;
}

uint32_t TypeOfKind(uint32_t kind) {
  const uint32_t code = kind & kKindTypeMask;
  return code < std::size(kTypes) ? kTypes[code] : 0;
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

absl::Status DecodeInodeColumns(const pb::InodeColumns& c,
                                const InodeIdentity& source_root,
                                uint64_t chunk,
                                StableVector<InodeFields>* out) {
  const size_t n = c.kind_size();
  if (c.node_delta_size() != static_cast<int>(n) ||
      c.ino_delta_size() != static_cast<int>(n)) {
    return Bad(chunk, 0,
               absl::StrCat("column lengths differ (", n, " kinds, ",
                            c.node_delta_size(), " node ids, ",
                            c.ino_delta_size(), " inode numbers)"));
  }
  int lookups = 0, paths = 0, devices = 0, handles = 0;
  size_t suffix_at = 0;
  uint64_t node = 0, parent = 0, ino = 0;
  std::string prev_name;
  const std::string& suffixes = c.name_suffixes();
  for (size_t i = 0; i < n; ++i) {
    const uint32_t kind = c.kind(i);
    if (kind & ~kKindAll) return Bad(chunk, i, "unknown kind bits");
    InodeFields& f = out->emplace_back();
    node += c.node_delta(i);
    f.node_id = node;
    f.file_type = TypeOfKind(kind);
    if (f.file_type == 0) return Bad(chunk, i, "unknown file type code");
    f.root = kind & kKindRoot;
    if (kind & kKindOneLookup) {
      f.lookups = 1;
    } else {
      if (lookups >= c.lookups_size()) return Bad(chunk, i, "lookups missing");
      f.lookups = c.lookups(lookups++);
    }
    if (kind & kKindPath) {
      if (paths >= c.parent_delta_size() || paths >= c.name_shared_size()) {
        return Bad(chunk, i, "path columns too short");
      }
      parent = Apply(parent, c.parent_delta(paths));
      const uint32_t shared = c.name_shared(paths++);
      if (shared > prev_name.size()) {
        return Bad(chunk, i, "name shares more than the previous name");
      }
      const size_t end = suffixes.find('\0', suffix_at);
      if (end == std::string::npos) return Bad(chunk, i, "name unterminated");
      // Checked here, not only with the other record checks: names share
      // prefixes, so one long name could otherwise be copied into every
      // following record of the chunk before anything looks at it.
      if (shared + (end - suffix_at) > NAME_MAX) {
        return Bad(chunk, i, "name longer than NAME_MAX");
      }
      f.has_path = true;
      f.parent = parent;
      f.name.reserve(shared + (end - suffix_at));
      f.name.assign(prev_name, 0, shared);
      f.name.append(suffixes, suffix_at, end - suffix_at);
      suffix_at = end + 1;
      prev_name = f.name;
    }
    ino = Apply(ino, c.ino_delta(i));
    f.identity = source_root;
    f.identity.ino = ino;
    if (kind & kKindOwnDevice) {
      if (devices >= c.dev_size() || devices >= c.mount_id_size()) {
        return Bad(chunk, i, "device columns too short");
      }
      f.identity.dev = c.dev(devices);
      f.identity.mount_id = c.mount_id(devices++);
    }
    if (kind & kKindHandle) {
      if (handles >= c.file_handles_size()) {
        return Bad(chunk, i, "file handle missing");
      }
      const pb::FileHandleLocation& h = c.file_handles(handles++);
      f.has_handle = true;
      f.handle_type = h.handle_type();
      f.handle = h.handle();
      f.handle_mount_id = h.mount_id();
    }
  }
  if (lookups != c.lookups_size() || paths != c.parent_delta_size() ||
      paths != c.name_shared_size() || suffix_at != suffixes.size() ||
      devices != c.dev_size() || devices != c.mount_id_size() ||
      handles != c.file_handles_size()) {
    return Bad(chunk, n, "columns hold more values than the kinds use");
  }
  return absl::OkStatus();
}

absl::Status DecodeHandleColumns(const pb::HandleColumns& c, uint64_t chunk,
                                 StableVector<HandleFields>* out) {
  const size_t n = c.fh_delta_size();
  if (c.node_delta_size() != static_cast<int>(n) ||
      c.flags_dir_size() != static_cast<int>(n)) {
    return Bad(chunk, 0, "handle column lengths differ");
  }
  uint64_t fh = 0, node = 0;
  for (size_t i = 0; i < n; ++i) {
    HandleFields& h = out->emplace_back();
    fh += c.fh_delta(i);
    node = Apply(node, c.node_delta(i));
    const uint64_t flags_dir = c.flags_dir(i);
    if (flags_dir >> 33) return Bad(chunk, i, "handle flags out of range");
    h.fh = fh;
    h.node_id = node;
    h.flags = static_cast<int32_t>(static_cast<uint32_t>(flags_dir >> 1));
    h.is_dir = flags_dir & 1;
  }
  return absl::OkStatus();
}

}  // namespace vhostmig::fs
