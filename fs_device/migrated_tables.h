// The tables a device-state load installs (state_loader.h), as flat arrays
// rather than hash-table entries: MigratedInodes for the inode table,
// MigratedHandles for the handle table. A load writes them sequentially as
// the stream arrives (the stream is in node-id / fh order), checks them in
// linear passes and hands them over whole; the tables consult them on a
// miss and merge them into their hash tables lazily (first use) and in the
// background (PassthroughFs::StartMigrationMerge). So the stopped phase
// costs no hash insert and no object per record.
//
// Immutable once installed: every reader holds a shared_ptr to const.
// Record 0 of MigratedInodes is always the root (node 1).
#ifndef VHOSTMIG_FS_DEVICE_MIGRATED_TABLES_H_
#define VHOSTMIG_FS_DEVICE_MIGRATED_TABLES_H_

#include <sys/stat.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/strings/string_view.h"
#include "fs_device/inode_table.h"

namespace vhostmig::fs {

// A growable array of trivially copyable values in one malloc'd block. It
// grows with realloc, which the C library serves with mremap once a block
// is large (mmap'd): growing then neither copies the values nor touches
// their pages again. Terminates on allocation failure, as std::vector
// does without exceptions.
template <typename T>
class PodArray {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  PodArray() = default;
  PodArray(const PodArray&) = delete;
  PodArray& operator=(const PodArray&) = delete;
  PodArray(PodArray&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        capacity_(std::exchange(o.capacity_, 0)) {}
  PodArray& operator=(PodArray&& o) noexcept {
    if (this != &o) {
      std::free(data_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      capacity_ = std::exchange(o.capacity_, 0);
    }
    return *this;
  }
  ~PodArray() { std::free(data_); }

  void push_back(T value) {
    if (size_ == capacity_) Grow(size_ + 1);
    data_[size_++] = value;
  }
  void append(const T* values, size_t n) {
    if (n == 0) return;
    if (capacity_ - size_ < n) Grow(size_ + n);
    std::memcpy(data_ + size_, values, n * sizeof(T));
    size_ += n;
  }
  // `n` zero values, replacing the contents (calloc: pages the caller never
  // writes are never touched).
  void AssignZeros(size_t n) {
    std::free(data_);
    data_ = nullptr;
    size_ = capacity_ = 0;
    if (n == 0) return;
    data_ = static_cast<T*>(std::calloc(n, sizeof(T)));
    if (data_ == nullptr) OutOfMemory();
    size_ = capacity_ = n;
  }
  // Sets the size to `n` (growing leaves the new values uninitialized).
  void ResizeUninitialized(size_t n) {
    if (n > capacity_) Grow(n);
    size_ = n;
  }

  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }

 private:
  void Grow(size_t at_least) {
    size_t capacity = capacity_ < 512 ? 512 : capacity_ * 2;
    if (capacity < at_least) capacity = at_least;
    if (capacity > std::numeric_limits<size_t>::max() / sizeof(T)) {
      OutOfMemory();
    }
    void* grown = std::realloc(data_, capacity * sizeof(T));
    if (grown == nullptr) OutOfMemory();
    data_ = static_cast<T*>(grown);
    capacity_ = capacity;
  }
  [[noreturn]] static void OutOfMemory() { std::abort(); }

  T* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// MigratedInodes::kind: S_IFMT >> 12 in bits 0-3, then flags.
inline constexpr uint8_t kMigratedTypeMask = 0x0f;
inline constexpr uint8_t kMigratedRoot = 1u << 4;
inline constexpr uint8_t kMigratedPath = 1u << 5;
inline constexpr uint8_t kMigratedHandle = 1u << 6;
inline constexpr uint8_t kMigratedOwnDevice = 1u << 7;

struct MigratedInodes {
  static constexpr size_t kNotFound = std::numeric_limits<size_t>::max();

  // Per record, in ascending node-id order (unique; record 0 is the root).
  PodArray<uint64_t> node_id;
  PodArray<uint8_t> kind;
  PodArray<uint64_t> lookups;
  PodArray<uint32_t> opens;  // open handles on the record (from the load)
  PodArray<uint64_t> ino;
  PodArray<uint64_t> parent;    // node id; 0 without a path
  PodArray<uint32_t> name_end;  // record r's name: names[name_end[r-1],
                                // name_end[r]) (from 0 for r = 0)
  PodArray<char> names;

  // Records with kMigratedOwnDevice / kMigratedHandle, ascending record.
  struct Device {
    uint32_t record = 0;
    uint64_t dev = 0;
    uint64_t mount_id = 0;
  };
  PodArray<Device> devices;
  struct Handle {
    uint32_t record = 0;
    int32_t type = 0;
    uint64_t mount_id = 0;  // already translated to this daemon's mount ids
    uint32_t begin = 0;     // in handle_bytes
    uint32_t size = 0;
  };
  PodArray<Handle> handles;
  PodArray<char> handle_bytes;

  // The st_dev and mount id of records without kMigratedOwnDevice (the
  // source's root), and whether those mean the same here.
  uint64_t source_dev = 0;
  uint64_t source_mount_id = 0;
  bool identity_comparable = false;

  size_t size() const { return node_id.size(); }
  // The record of `id`, or kNotFound (binary search).
  size_t Find(uint64_t id) const;

  mode_t type(size_t r) const {
    return static_cast<mode_t>(kind[r] & kMigratedTypeMask) << 12;
  }
  bool is_root(size_t r) const { return kind[r] & kMigratedRoot; }
  bool has_path(size_t r) const { return kind[r] & kMigratedPath; }
  bool has_handle(size_t r) const { return kind[r] & kMigratedHandle; }
  absl::string_view name(size_t r) const {
    const uint32_t begin = r == 0 ? 0 : name_end[r - 1];
    return absl::string_view(names.data() + begin, name_end[r] - begin);
  }
  InodeIdentity identity(size_t r) const;
  const Handle* handle(size_t r) const;  // nullptr without one
  // How the destination finds record r again.
  void FillLocation(size_t r, MigratedLocation* out) const;
};

struct MigratedHandles {
  static constexpr size_t kNotFound = std::numeric_limits<size_t>::max();

  // Per handle, in ascending fh order (unique).
  PodArray<uint64_t> fh;
  PodArray<uint64_t> node_id;
  PodArray<int32_t> flags;
  PodArray<uint8_t> is_dir;

  size_t size() const { return fh.size(); }
  size_t Find(uint64_t fh) const;
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_MIGRATED_TABLES_H_
