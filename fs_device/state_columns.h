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
// into records. The input is untrusted: column lengths that do not match
// the kind bits, an unknown type code, a name prefix longer than the
// previous name, an unterminated name or one longer than NAME_MAX fail with
// InvalidArgument naming the chunk's record index (memory stays bounded by
// the frame's size). Values are not validated beyond that (the
// loader checks ids, names, parents and flags the same way for format 1
// and 2 records).
//
// Not thread-safe (one user per object).
#ifndef VHOSTMIG_FS_DEVICE_STATE_COLUMNS_H_
#define VHOSTMIG_FS_DEVICE_STATE_COLUMNS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
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
uint32_t TypeOfKind(uint32_t kind);  // 0 for the unknown code

// One inode record as the loader checks it, whichever format it came in.
struct InodeFields {
  uint64_t node_id = 0;
  uint64_t lookups = 0;
  uint32_t file_type = 0;  // S_IFMT bits
  InodeIdentity identity;
  bool root = false;
  bool has_path = false;
  uint64_t parent = 0;
  std::string name;
  bool has_handle = false;
  int32_t handle_type = 0;
  std::string handle;
  uint64_t handle_mount_id = 0;
};

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
    return blocks_[size_ / kBlock][size_++ % kBlock];
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

// Appends the chunk's records to *out (see the file comment for errors).
// `chunk` names the chunk in messages.
absl::Status DecodeInodeColumns(const fs_state::v1::InodeColumns& columns,
                                const InodeIdentity& source_root,
                                uint64_t chunk, StableVector<InodeFields>* out);
absl::Status DecodeHandleColumns(const fs_state::v1::HandleColumns& columns,
                                 uint64_t chunk,
                                 StableVector<HandleFields>* out);

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_STATE_COLUMNS_H_
