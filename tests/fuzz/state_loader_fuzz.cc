// state_loader_fuzz: arbitrary bytes as a device-state stream, loaded by a
// fresh VirtioFsDevice serving a scratch directory (fs_device/
// state_loader.h). The loader must reject or accept without crashing,
// leaking or touching the disk; an accepted stream's inodes and handles
// are then re-opened (what the first guest requests would do). Seeds:
// tests/fuzz/state_seeds.py. The byte sum picks the error policy and
// --migration-verify, so the abort checks, the eager re-open during the
// load and the lazy re-open on first use all run; every input is loaded
// once as is and once with its frame checksums repaired, so that mutated
// payloads get past the checksum to the decoders.
#include <endian.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "base/crc32c.h"
#include "fs_device/state_frame.h"
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

// Loads `bytes` into a fresh device configured by `variant` (0: abort,
// verify on first use; 1: abort, verify during the load; 2: guest-error)
// and checks what a load promises.
void LoadOnce(const std::string& bytes, int variant) {
  using namespace vhostmig::fs;
  FsConfig config;
  config.shared_dir = *g_dir;
  config.migration_on_error = variant == 2 ? MigrationErrorPolicy::kGuestError
                                           : MigrationErrorPolicy::kAbort;
  config.migration_verify =
      variant == 1 ? MigrationVerify::kDuringLoad : MigrationVerify::kFirstUse;
  auto device = VirtioFsDevice::Create(config, VirtioFsOptions{});
  if (!device.ok()) abort();
  int fd = memfd_create("state", MFD_CLOEXEC);
  if (fd < 0) abort();
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + off, bytes.size() - off);
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
    return;
  }
  for (const auto& e : fs.inodes().Snapshot()) fs.GetInode(e.inode->node_id);
  for (const auto& [fh, file] : fs.handles().Snapshot()) {
    std::shared_ptr<OpenFile> opened;
    fs.AnyOpenFileFor(fh, file->node_id, &opened);
  }
}

// `bytes` with every complete frame's checksum recomputed, so mutations of
// a payload reach the protobuf and column decoders instead of stopping at
// the checksum.
std::string WithChecksumsFixed(std::string bytes) {
  size_t off = 0;
  while (off + vhostmig::fs::kFrameHeaderBytes <= bytes.size()) {
    uint32_t length;
    std::memcpy(&length, bytes.data() + off, 4);
    length = le32toh(length);
    const size_t start = off + vhostmig::fs::kFrameHeaderBytes;
    if (length > bytes.size() - start) break;
    const uint32_t crc =
        htole32(vhostmig::Crc32c(bytes.data() + start, length));
    std::memcpy(bytes.data() + off + 4, &crc, 4);
    off = start + length;
  }
  return bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!g_dir) MakeScratch();
  const std::string raw(reinterpret_cast<const char*>(data), size);
  // The configuration comes from the bytes without spending any of them
  // (every byte of a stream is length, checksum or payload).
  uint32_t sum = 0;
  for (size_t i = 0; i < size; ++i) sum += data[i];
  const int variant = static_cast<int>(sum % 3);
  LoadOnce(raw, variant);
  const std::string fixed = WithChecksumsFixed(raw);
  if (fixed != raw) LoadOnce(fixed, variant);
  return 0;
}
