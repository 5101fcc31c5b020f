#include "fs_device/file_handle.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

namespace vhostmig::fs {

int FileHandle::FromFd(int fd, FileHandle* out) {
  // MAX_HANDLE_SZ is 128 bytes: one stack buffer always suffices.
  alignas(file_handle) unsigned char buf[sizeof(file_handle) + MAX_HANDLE_SZ];
  auto* fh = reinterpret_cast<file_handle*>(buf);
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (name_to_handle_at(fd, "", fh, &mount_id, AT_EMPTY_PATH) != 0) {
    return errno;
  }
  out->type = fh->handle_type;
  out->bytes.assign(reinterpret_cast<const char*>(fh->f_handle),
                    fh->handle_bytes);
  out->mount_id = static_cast<uint64_t>(mount_id);
  return 0;
}

int MountFds::Remember(uint64_t mount_id, int dir_fd) {
  absl::MutexLock lock(&mu_);
  if (fds_.contains(mount_id)) return 0;
  int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  fds_.emplace(mount_id, UniqueFd(fd));
  return 0;
}

bool MountFds::Knows(uint64_t mount_id) const {
  absl::MutexLock lock(&mu_);
  return fds_.contains(mount_id);
}

int MountFds::Open(const FileHandle& handle, int flags, UniqueFd* out) const {
  alignas(file_handle) unsigned char buf[sizeof(file_handle) + MAX_HANDLE_SZ];
  if (handle.bytes.size() > MAX_HANDLE_SZ) return ESTALE;
  auto* fh = reinterpret_cast<file_handle*>(buf);
  fh->handle_bytes = handle.bytes.size();
  fh->handle_type = handle.type;
  std::memcpy(fh->f_handle, handle.bytes.data(), handle.bytes.size());
  int mount_fd;
  {
    absl::MutexLock lock(&mu_);
    auto it = fds_.find(handle.mount_id);
    if (it == fds_.end()) return ESTALE;
    mount_fd = it->second.get();
    // Entries are never removed: the fd outlives the lock.
  }
  int fd = open_by_handle_at(mount_fd, fh, flags | O_CLOEXEC);
  if (fd < 0) return errno;
  out->reset(fd);
  return 0;
}

}  // namespace vhostmig::fs
