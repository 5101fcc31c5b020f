// state_loader_fuzz: arbitrary bytes as a device-state stream, loaded by a
// fresh VirtioFsDevice serving a scratch directory (fs_device/
// state_loader.h). The loader must reject or accept without crashing,
// leaking or touching the disk; an accepted stream's inodes and handles
// are then re-opened (what the first guest requests would do). Seeds:
// tests/fuzz/state_seeds.py. The first input byte picks the error policy,
// so both the eager (abort) and the lazy (guest-error) paths run.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "fs_device/virtio_fs_device.h"

namespace {

std::string* g_dir = nullptr;

void MakeScratch() {
  const char* base = getenv("TEST_TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/statefuzz.XXXXXX";
  if (!mkdtemp(tmpl.data())) abort();
  g_dir = new std::string(tmpl);
  // What the seeds name: file (ino varies), dir/, dir/inner.
  mkdir((tmpl + "/dir").c_str(), 0755);
  for (const char* f : {"/file", "/dir/inner"}) {
    FILE* fp = fopen((tmpl + f).c_str(), "w");
    if (fp) {
      fputs("data", fp);
      fclose(fp);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!g_dir) MakeScratch();
  using namespace vhostmig::fs;
  FsConfig config;
  config.shared_dir = *g_dir;
  config.migration_on_error = (size > 0 && (data[0] & 1))
                                  ? MigrationErrorPolicy::kGuestError
                                  : MigrationErrorPolicy::kAbort;
  auto device = VirtioFsDevice::Create(config, VirtioFsOptions{});
  if (!device.ok()) abort();
  int fd = memfd_create("state", MFD_CLOEXEC);
  if (fd < 0) abort();
  size_t off = 0;
  while (off < size) {
    ssize_t n = write(fd, data + off, size - off);
    if (n <= 0) abort();
    off += static_cast<size_t>(n);
  }
  lseek(fd, 0, SEEK_SET);
  const bool ok = (*device)->LoadState(fd).ok();
  close(fd);
  PassthroughFs& fs = (*device)->fs();
  if (!ok) {
    // A failed load leaves fresh tables.
    if (fs.inodes().size() != 1 || fs.handles().size() != 0) abort();
    return 0;
  }
  for (const auto& e : fs.inodes().Snapshot()) fs.GetInode(e.inode->node_id);
  for (const auto& [fh, file] : fs.handles().Snapshot()) {
    std::shared_ptr<OpenFile> opened;
    fs.AnyOpenFileFor(fh, file->node_id, &opened);
  }
  return 0;
}
