#include "fs_device/migrated_tables.h"

#include <algorithm>

namespace vhostmig::fs {
namespace {

// The index of `value` in the ascending `values`, or `not_found`.
size_t Search(const PodArray<uint64_t>& values, uint64_t value,
              size_t not_found) {
  const uint64_t* it = std::lower_bound(values.begin(), values.end(), value);
  if (it == values.end() || *it != value) return not_found;
  return static_cast<size_t>(it - values.begin());
}

}  // namespace

size_t MigratedInodes::Find(uint64_t id) const {
  return Search(node_id, id, kNotFound);
}

InodeIdentity MigratedInodes::identity(size_t r) const {
  InodeIdentity id{source_dev, ino[r], source_mount_id};
  if (kind[r] & kMigratedOwnDevice) {
    const Device* d = std::lower_bound(
        devices.begin(), devices.end(), r,
        [](const Device& a, size_t record) { return a.record < record; });
    if (d != devices.end() && d->record == r) {
      id.dev = d->dev;
      id.mount_id = d->mount_id;
    }
  }
  return id;
}

const MigratedInodes::Handle* MigratedInodes::handle(size_t r) const {
  if (!has_handle(r)) return nullptr;
  const Handle* h = std::lower_bound(
      handles.begin(), handles.end(), r,
      [](const Handle& a, size_t record) { return a.record < record; });
  return h != handles.end() && h->record == r ? h : nullptr;
}

void MigratedInodes::FillLocation(size_t r, MigratedLocation* out) const {
  if (has_path(r)) {
    out->parent = parent[r];
    const absl::string_view n = name(r);
    out->name.assign(n.data(), n.size());
  }
  if (const Handle* h = handle(r)) {
    FileHandle fh;
    fh.type = h->type;
    fh.bytes.assign(handle_bytes.data() + h->begin, h->size);
    fh.mount_id = h->mount_id;
    out->handle = std::move(fh);
  }
  out->identity = identity(r);
  out->identity_comparable = identity_comparable;
}

size_t MigratedHandles::Find(uint64_t value) const {
  return Search(fh, value, kNotFound);
}

}  // namespace vhostmig::fs
