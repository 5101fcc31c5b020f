// The column coding of device-state format 2 (proto/fs_state.proto,
// InodeColumns and HandleColumns; docs/state-format.md): records go into a
// chunk column by column as varint differences from the previous record,
// names front-coded against the previous name, so that a record costs a few
// bytes and a chunk parses into flat arrays without an object per record.
//
// InodeColumnEncoder / HandleColumnEncoder append records to one chunk's
// columns; start a new encoder (or Reset) for every chunk, since the
// differences are relative to the previous record of the same chunk. They
// expect ascending ids (any order is correct, but costs bytes).
//
// DecodeInodeColumns / DecodeHandleColumns turn one chunk's columns back
// into records: each record to a sink as a view (the loader's way: no
// object per record), or appended to a StableVector. The input is untrusted:
// column lengths that do not match the kind bits, an unknown type code, a name
// prefix longer than the previous name, an unterminated name or one longer than
// NAME_MAX fail with InvalidArgument naming the chunk's record index (memory
// stays bounded by the frame's size). Values are not validated beyond that (the
// loader checks ids, names, parents and flags the same way for format 1
// and 2 records).
//
// Not thread-safe (one user per object).
#ifndef VHOSTMIG_FS_DEVICE_STATE_COLUMNS_H_
#define VHOSTMIG_FS_DEVICE_STATE_COLUMNS_H_

#include <limits.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "fs_device/file_handle.h"
#include "fs_device/inode_table.h"
#include "proto/fs_state.pb.h"

namespace vhostmig::fs {

// InodeColumns.kind: bits 0-2 are the file type code (KindOfType), then
// flags. Values below 128 take one varint byte; only records on another
// device than the shared directory's root need the top bit.
inline constexpr uint32_t kKindTypeMask = 0x7;
inline constexpr uint32_t kKindRoot = 1u << 3;
inline constexpr uint32_t kKindPath = 1u << 4;
inline constexpr uint32_t kKindHandle = 1u << 5;
inline constexpr uint32_t kKindOneLookup = 1u << 6;
inline constexpr uint32_t kKindOwnDevice = 1u << 7;
inline constexpr uint32_t kKindAll = 0xff;

// S_IFMT bits <-> type code; 7 (kKindTypeMask) for an unknown type.
uint32_t KindOfType(uint32_t file_type);
inline uint32_t TypeOfKind(uint32_t kind) {  // 0 for the unknown code
  constexpr uint32_t kTypes[] = {S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR,
                                 S_IFBLK, S_IFIFO, S_IFSOCK};
  const uint32_t code = kind & kKindTypeMask;
  return code < std::size(kTypes) ? kTypes[code] : 0;
}

// One inode record, whichever format it came in. InodeFields owns its
// bytes (as the loader checks a record); InodeView's `name` and `handle`
// point into the decoder's buffers or the chunk and are valid only during
// the sink call.
template <typename Bytes>
struct BasicInodeFields {
  uint64_t node_id = 0;
  uint64_t lookups = 0;
  uint32_t file_type = 0;  // S_IFMT bits
  InodeIdentity identity;
  bool root = false;
  bool has_path = false;
  uint64_t parent = 0;
  Bytes name;
  bool has_handle = false;
  int32_t handle_type = 0;
  Bytes handle;
  uint64_t handle_mount_id = 0;
};
using InodeFields = BasicInodeFields<std::string>;
using InodeView = BasicInodeFields<absl::string_view>;

struct HandleFields {
  uint64_t fh = 0;
  uint64_t node_id = 0;
  int32_t flags = 0;
  bool is_dir = false;
};

// An append-only array whose elements never move (blocks of kBlock), so
// the loader's staging of a million records grows without copying them and
// references to elements stay valid.
template <typename T>
class StableVector {
 public:
  static constexpr size_t kBlock = 4096;
  T& emplace_back() {
    if (size_ % kBlock == 0) blocks_.push_back(std::make_unique<T[]>(kBlock));
    const size_t i = size_++;
    return blocks_[i / kBlock][i % kBlock];
  }
  void push_back(T value) { emplace_back() = std::move(value); }
  T& operator[](size_t i) { return blocks_[i / kBlock][i % kBlock]; }
  const T& operator[](size_t i) const {
    return blocks_[i / kBlock][i % kBlock];
  }
  size_t size() const { return size_; }

 private:
  std::vector<std::unique_ptr<T[]>> blocks_;
  size_t size_ = 0;
};

class InodeColumnEncoder {
 public:
  // `source_root`: the header's source_root; records with its dev and mount
  // id carry none of their own.
  InodeColumnEncoder(const InodeIdentity& source_root,
                     fs_state::v1::InodeColumns* out)
      : root_(source_root), out_(out) {}

  // Appends one record. `name` must not contain NUL (no file name does);
  // `handle` may be null.
  void Add(uint64_t node_id, uint64_t lookups, uint32_t file_type,
           const InodeIdentity& identity, bool root, bool has_path,
           uint64_t parent, absl::string_view name, const FileHandle* handle);
  size_t records() const { return records_; }

 private:
  InodeIdentity root_;
  fs_state::v1::InodeColumns* out_;
  size_t records_ = 0;
  uint64_t prev_node_ = 0;
  uint64_t prev_parent_ = 0;
  uint64_t prev_ino_ = 0;
  std::string prev_name_;
};

class HandleColumnEncoder {
 public:
  explicit HandleColumnEncoder(fs_state::v1::HandleColumns* out) : out_(out) {}
  void Add(uint64_t fh, uint64_t node_id, int32_t flags, bool is_dir);
  size_t records() const { return records_; }

 private:
  fs_state::v1::HandleColumns* out_;
  size_t records_ = 0;
  uint64_t prev_fh_ = 0;
  uint64_t prev_node_ = 0;
};

// Hands the chunk's records to `sink` in order (see the file comment for
// errors; a sink's error stops the decoding and is returned). `chunk` names
// the chunk in messages. ForEachInode is the same with the sink inlined
// (the loader's per-record path).
template <typename Sink>
absl::Status ForEachInode(const fs_state::v1::InodeColumns& columns,
                          const InodeIdentity& source_root, uint64_t chunk,
                          Sink&& sink);
absl::Status DecodeInodeColumns(
    const fs_state::v1::InodeColumns& columns, const InodeIdentity& source_root,
    uint64_t chunk, absl::FunctionRef<absl::Status(const InodeView&)> sink);
absl::Status DecodeHandleColumns(
    const fs_state::v1::HandleColumns& columns, uint64_t chunk,
    absl::FunctionRef<absl::Status(const HandleFields&)> sink);
// The same, appending the records to *out.
absl::Status DecodeInodeColumns(const fs_state::v1::InodeColumns& columns,
                                const InodeIdentity& source_root,
                                uint64_t chunk, StableVector<InodeFields>* out);
absl::Status DecodeHandleColumns(const fs_state::v1::HandleColumns& columns,
                                 uint64_t chunk,
                                 StableVector<HandleFields>* out);

// Implementation details.
namespace columns_internal {

// InvalidArgument "device state rejected: chunk N record M: what".
absl::Status Bad(uint64_t chunk, size_t record, absl::string_view what);

// Differences are taken modulo 2^64 and carried as signed values, so any
// pair of ids round-trips (no signed overflow on either side).
inline int64_t Delta(uint64_t now, uint64_t before) {
  return static_cast<int64_t>(now - before);
}
inline uint64_t Apply(uint64_t before, int64_t delta) {
  return before + static_cast<uint64_t>(delta);
}

}  // namespace columns_internal

template <typename Sink>
absl::Status ForEachInode(const fs_state::v1::InodeColumns& c,
                          const InodeIdentity& source_root, uint64_t chunk,
                          Sink&& sink) {
  using columns_internal::Apply;
  using columns_internal::Bad;
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
  // The current name, built over the previous one (front coding).
  char name[NAME_MAX + 1];
  size_t name_size = 0;
  const std::string& suffixes = c.name_suffixes();
  InodeView f;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t kind = c.kind(i);
    if (kind & ~kKindAll) return Bad(chunk, i, "unknown kind bits");
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
    f.has_path = kind & kKindPath;
    f.parent = 0;
    f.name = absl::string_view();
    if (f.has_path) {
      if (paths >= c.parent_delta_size() || paths >= c.name_shared_size()) {
        return Bad(chunk, i, "path columns too short");
      }
      parent = Apply(parent, c.parent_delta(paths));
      const uint32_t shared = c.name_shared(paths++);
      if (shared > name_size) {
        return Bad(chunk, i, "name shares more than the previous name");
      }
      const char* at = suffixes.data() + suffix_at;
      const void* nul = std::memchr(at, '\0', suffixes.size() - suffix_at);
      if (nul == nullptr) return Bad(chunk, i, "name unterminated");
      const size_t suffix =
          static_cast<size_t>(static_cast<const char*>(nul) - at);
      // Checked here, not only with the other record checks: names share
      // prefixes, so one long name could otherwise be copied into every
      // following record of the chunk before anything looks at it.
      if (shared + suffix > NAME_MAX) {
        return Bad(chunk, i, "name longer than NAME_MAX");
      }
      std::memcpy(name + shared, at, suffix);
      name_size = shared + suffix;
      suffix_at += suffix + 1;
      f.parent = parent;
      f.name = absl::string_view(name, name_size);
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
    f.has_handle = kind & kKindHandle;
    f.handle_type = 0;
    f.handle = absl::string_view();
    f.handle_mount_id = 0;
    if (f.has_handle) {
      if (handles >= c.file_handles_size()) {
        return Bad(chunk, i, "file handle missing");
      }
      const fs_state::v1::FileHandleLocation& h = c.file_handles(handles++);
      f.handle_type = h.handle_type();
      f.handle = h.handle();
      f.handle_mount_id = h.mount_id();
    }
    if (absl::Status s = sink(f); !s.ok()) return s;
  }
  if (lookups != c.lookups_size() || paths != c.parent_delta_size() ||
      paths != c.name_shared_size() || suffix_at != suffixes.size() ||
      devices != c.dev_size() || devices != c.mount_id_size() ||
      handles != c.file_handles_size()) {
    return Bad(chunk, n, "columns hold more values than the kinds use");
  }
  return absl::OkStatus();
}

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_STATE_COLUMNS_H_
