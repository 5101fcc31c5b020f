// Helpers for the device-state tests: a pair of VirtioFsDevices (source and
// destination) on one shared directory, each behind its own synthetic guest
// (guest/loopback.h), and a migration between them through a pipe with
// SaveState and LoadState on two threads, as the back-end framework runs
// them.
#ifndef VHOSTMIG_TESTS_FS_DEVICE_STATE_TEST_UTIL_H_
#define VHOSTMIG_TESTS_FS_DEVICE_STATE_TEST_UTIL_H_

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "absl/status/status.h"
#include "fs_device/file_handle.h"
#include "fs_device/virtio_fs_device.h"
#include "tests/fs_device/fs_test_fixture.h"

namespace vhostmig::fs {

// Empty when name_to_handle_at + open_by_handle_at work under `dir`,
// otherwise why not (file-handle tests skip then).
inline std::string FileHandlesUnavailable(const std::string& dir) {
  int fd = open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return "cannot open temp dir";
  FileHandle h;
  int err = FileHandle::FromFd(fd, &h);
  if (err != 0) {
    close(fd);
    return std::string("name_to_handle_at: ") + std::strerror(err);
  }
  MountFds mounts;
  mounts.Remember(h.mount_id, fd);
  close(fd);
  UniqueFd reopened;
  err = mounts.Open(h, O_PATH, &reopened);
  if (err != 0) return std::string("open_by_handle_at: ") + std::strerror(err);
  return "";
}

struct MigrationResult {
  absl::Status save;
  absl::Status load;
};

// Saves `source` into a pipe on one thread while `destination` loads from
// the other end on this one. Bounded: both sides finish when the pipe's
// writer closes (save done) or its reader closes (load gave up).
inline MigrationResult MigrateState(vhost::Device& source,
                                    vhost::Device& destination) {
  int p[2];
  MigrationResult result;
  if (pipe2(p, O_CLOEXEC) != 0) {
    result.save = absl::InternalError("pipe2 failed");
    return result;
  }
  UniqueFd read_end(p[0]);
  UniqueFd write_end(p[1]);
  std::thread saver([&source, &result, w = std::move(write_end)]() mutable {
    result.save = source.SaveState(w.get());
    w.reset();
  });
  result.load = destination.LoadState(read_end.get());
  read_end.reset();  // a saver blocked on a full pipe gets EPIPE
  saver.join();
  return result;
}

// `bytes` in a memfd positioned at 0, for LoadState.
inline UniqueFd BytesFd(const std::string& bytes) {
  UniqueFd fd(memfd_create("state", MFD_CLOEXEC));
  if (!fd.valid()) return fd;
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = write(fd.get(), bytes.data() + off, bytes.size() - off);
    if (n <= 0) return UniqueFd();
    off += static_cast<size_t>(n);
  }
  lseek(fd.get(), 0, SEEK_SET);
  return fd;
}

// Everything `fd` (a memfd or file) holds from offset 0.
inline std::string FdBytes(int fd) {
  std::string out;
  lseek(fd, 0, SEEK_SET);
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, n);
  return out;
}

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_TESTS_FS_DEVICE_STATE_TEST_UTIL_H_
