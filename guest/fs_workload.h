// FsWorkload: what the synthetic guest's "applications" do on virtio-fs, in
// a form that checks itself and survives migration.
//
// The workload keeps files open (one handle each, opened once) and, step
// by step, writes self-verifying 4 KiB blocks into them: a header (magic,
// sequence number, file, block index, checksum) and a payload derived from
// the sequence number, so every byte can be recomputed and checked. Step n
// (n = 1, 2, ...) writes block (n-1)/files mod max_blocks of file
// (n-1) mod files, copies the block into a "page cache" slot in guest RAM
// (so the guest dirties memory the way a real one would), appends a 32-byte
// record to a journal file opened with O_APPEND (a request executed twice
// would append twice: the journal's size and sequence catch it), and every
// `read_every` steps reads back an earlier block and verifies it.
//
// Everything the workload needs to continue lives in guest memory, in a
// small "guest kernel" area: the step counter, the node ids and handles of
// the open files, where the page cache is. So a destination guest rebuilt
// from migrated memory continues where the source stopped, with handles
// the source opened. The area is written only through WriteGuest, which
// marks the guest's own dirty log.
//
// Thread-safety: one thread at a time (the guest's vCPU).
#ifndef VHOSTMIG_GUEST_FS_WORKLOAD_H_
#define VHOSTMIG_GUEST_FS_WORKLOAD_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "guest/guest_ram.h"
#include "guest/virtio_fs_driver.h"
#include "vhost/memory/dirty_log.h"

namespace vhostmig::guest {

struct FsWorkloadOptions {
  uint32_t files = 4;        // at most kMaxFiles
  uint32_t max_blocks = 64;  // per file; later steps overwrite from block 0
  uint32_t read_every = 4;
  uint64_t seed = 1;  // names the files and seeds the payloads
};

struct WorkloadCounts {
  uint64_t steps = 0;
  uint64_t blocks_verified = 0;
};

class FsWorkload {
 public:
  static constexpr uint32_t kMaxFiles = 8;
  static constexpr uint32_t kBlockBytes = 4096;
  static constexpr uint32_t kRecordBytes = 32;
  static constexpr uint32_t kMaxCacheParts = 8;

  // Reserves the guest-kernel area and the page cache in `ram` (always in
  // the same order, so an incoming guest with the same RAM layout gets the
  // same addresses). The page cache takes every region after the first
  // whole, so pages in each region of the guest change.
  static absl::StatusOr<std::unique_ptr<FsWorkload>> Reserve(
      GuestRam* ram, std::shared_ptr<vhost::DirtyLog> guest_dirty);

  // Source: creates and opens the files (driver after FUSE_INIT) and
  // writes the guest-kernel area.
  absl::Status Setup(VirtioFsDriver* driver, const FsWorkloadOptions& options);
  // Destination: reads the guest-kernel area from (migrated) memory.
  absl::Status Attach(VirtioFsDriver* driver);

  // One step (see the class comment).
  absl::Status Step();
  // Reads back every block, the whole journal and the page cache, and
  // checks each byte against what the steps so far must have written.
  absl::Status VerifyAll();

  WorkloadCounts counts() const;
  uint64_t kernel_gpa() const { return kernel_gpa_; }

 private:
  struct Kernel;  // the guest-kernel area's layout

  FsWorkload(GuestRam* ram, std::shared_ptr<vhost::DirtyLog> guest_dirty)
      : ram_(ram), guest_dirty_(std::move(guest_dirty)) {}
  absl::StatusOr<Kernel> ReadKernel() const;
  absl::Status WriteGuest(uint64_t gpa, const void* src, uint64_t len);
  std::string MakeBlock(uint64_t seq, uint32_t file, uint32_t block) const;
  absl::Status CheckBlock(const std::string& bytes, uint64_t seq, uint32_t file,
                          uint32_t block, const char* where) const;
  // The sequence number block `block` of `file` holds after `steps` steps
  // (0: never written).
  uint64_t ExpectedSeq(uint32_t file, uint32_t block, uint64_t steps) const;
  absl::Status ReadBlock(uint32_t file, uint32_t block, std::string* out);
  uint64_t CacheSlotGpa(uint64_t slot) const;

  GuestRam* ram_;
  std::shared_ptr<vhost::DirtyLog> guest_dirty_;
  VirtioFsDriver* driver_ = nullptr;
  uint64_t kernel_gpa_ = 0;
  std::vector<uint64_t> cache_parts_;  // gpa of each page-cache part
  std::vector<uint64_t> cache_part_bytes_;
  uint64_t cache_slots_ = 0;
  // Cached copy of the guest-kernel area's fixed fields.
  FsWorkloadOptions options_;
  std::vector<uint64_t> nodeids_;
  std::vector<uint64_t> fhs_;
  uint64_t journal_nodeid_ = 0;
  uint64_t journal_fh_ = 0;
  // Written by the thread running the steps; atomic because counts() is
  // read from others while it runs (the agent's List).
  std::atomic<uint64_t> steps_{0};
  std::atomic<uint64_t> verified_{0};
};

}  // namespace vhostmig::guest

#endif  // VHOSTMIG_GUEST_FS_WORKLOAD_H_
