#include "guest/fs_workload.h"

#include <fcntl.h>
#include <linux/fuse.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace vhostmig::guest {
namespace {

constexpr uint64_t kKernelMagic = 0x6c656e72656b6d76;  // "vmkernel"
constexpr uint64_t kBlockMagic = 0x6b636f6c62677376;   // "vsgblock"
constexpr uint64_t kCacheBytesPerRegion = 512 << 10;

struct BlockHeader {
  uint64_t magic;
  uint64_t seq;
  uint32_t file;
  uint32_t block;
  uint64_t checksum;  // of the payload
};
static_assert(sizeof(BlockHeader) == 32);

struct Record {
  uint64_t seq;
  uint32_t file;
  uint32_t block;
  uint64_t checksum;
  uint64_t magic;
};
static_assert(sizeof(Record) == FsWorkload::kRecordBytes);

uint64_t SplitMix(uint64_t* x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Checksum(const char* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<uint8_t>(p[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace

struct FsWorkload::Kernel {
  uint64_t magic = kKernelMagic;
  uint32_t files = 0;
  uint32_t max_blocks = 0;
  uint32_t read_every = 0;
  uint32_t reserved = 0;
  uint64_t seed = 0;
  uint64_t steps = 0;
  uint64_t journal_nodeid = 0;
  uint64_t journal_fh = 0;
  uint64_t nodeid[kMaxFiles] = {};
  uint64_t fh[kMaxFiles] = {};
};

absl::StatusOr<std::unique_ptr<FsWorkload>> FsWorkload::Reserve(
    GuestRam* ram, std::shared_ptr<vhost::DirtyLog> guest_dirty) {
  std::unique_ptr<FsWorkload> w(new FsWorkload(ram, std::move(guest_dirty)));
  ASSIGN_OR_RETURN(w->kernel_gpa_, ram->Allocate(4096, 4096));
  const auto& regions = ram->memory().regions();
  for (size_t i = 1; i < regions.size() && i <= kMaxCacheParts; ++i) {
    const uint64_t bytes = std::min(regions[i]->size(), kCacheBytesPerRegion);
    RETURN_IF_ERROR(ram->AllocateAt(regions[i]->gpa(), bytes));
    w->cache_parts_.push_back(regions[i]->gpa());
    w->cache_part_bytes_.push_back(bytes);
  }
  if (w->cache_parts_.empty()) {  // one region: the cache shares it
    ASSIGN_OR_RETURN(uint64_t gpa, ram->Allocate(kCacheBytesPerRegion, 4096));
    w->cache_parts_.push_back(gpa);
    w->cache_part_bytes_.push_back(kCacheBytesPerRegion);
  }
  for (uint64_t b : w->cache_part_bytes_) w->cache_slots_ += b / kBlockBytes;
  return w;
}

uint64_t FsWorkload::CacheSlotGpa(uint64_t slot) const {
  for (size_t i = 0; i < cache_parts_.size(); ++i) {
    const uint64_t n = cache_part_bytes_[i] / kBlockBytes;
    if (slot < n) return cache_parts_[i] + slot * kBlockBytes;
    slot -= n;
  }
  return 0;  // unreachable for slot < cache_slots_
}

absl::Status FsWorkload::WriteGuest(uint64_t gpa, const void* src,
                                    uint64_t len) {
  RETURN_IF_ERROR(ram_->memory().Write(gpa, src, len));
  // Mark after writing (dirty_log.h): a harvester that sees the bit sees
  // the bytes.
  if (guest_dirty_) guest_dirty_->MarkRange(gpa, len);
  return absl::OkStatus();
}

absl::StatusOr<FsWorkload::Kernel> FsWorkload::ReadKernel() const {
  Kernel k;
  RETURN_IF_ERROR(ram_->memory().Read(kernel_gpa_, &k, sizeof(k)));
  if (k.magic != kKernelMagic || k.files == 0 || k.files > kMaxFiles ||
      k.max_blocks == 0) {
    return absl::DataLossError(absl::StrFormat(
        "guest-kernel area at 0x%x is not valid (magic 0x%x, %d files)",
        kernel_gpa_, k.magic, k.files));
  }
  return k;
}

absl::Status FsWorkload::Setup(VirtioFsDriver* driver,
                               const FsWorkloadOptions& options) {
  if (options.files == 0 || options.files > kMaxFiles ||
      options.max_blocks == 0 || options.read_every == 0) {
    return absl::InvalidArgumentError("workload options out of range");
  }
  driver_ = driver;
  options_ = options;
  Kernel k;
  k.files = options.files;
  k.max_blocks = options.max_blocks;
  k.read_every = options.read_every;
  k.seed = options.seed;
  for (uint32_t f = 0; f < options.files; ++f) {
    ASSIGN_OR_RETURN(
        CreateReply c,
        driver->Create(FUSE_ROOT_ID, absl::StrCat("wl", options.seed, "-f", f),
                       O_RDWR | O_CREAT | O_TRUNC, 0644));
    k.nodeid[f] = c.entry.nodeid;
    k.fh[f] = c.open.fh;
  }
  ASSIGN_OR_RETURN(
      CreateReply j,
      driver->Create(FUSE_ROOT_ID, absl::StrCat("wl", options.seed, "-journal"),
                     O_RDWR | O_CREAT | O_TRUNC | O_APPEND, 0644));
  k.journal_nodeid = j.entry.nodeid;
  k.journal_fh = j.open.fh;
  RETURN_IF_ERROR(WriteGuest(kernel_gpa_, &k, sizeof(k)));
  return Attach(driver);
}

absl::Status FsWorkload::Attach(VirtioFsDriver* driver) {
  driver_ = driver;
  ASSIGN_OR_RETURN(Kernel k, ReadKernel());
  options_.files = k.files;
  options_.max_blocks = k.max_blocks;
  options_.read_every = k.read_every;
  options_.seed = k.seed;
  nodeids_.assign(k.nodeid, k.nodeid + k.files);
  fhs_.assign(k.fh, k.fh + k.files);
  journal_nodeid_ = k.journal_nodeid;
  journal_fh_ = k.journal_fh;
  steps_ = k.steps;
  return absl::OkStatus();
}

std::string FsWorkload::MakeBlock(uint64_t seq, uint32_t file,
                                  uint32_t block) const {
  std::string b(kBlockBytes, '\0');
  uint64_t x = options_.seed * 0x100000001ull + seq;
  for (size_t i = sizeof(BlockHeader); i < b.size(); i += 8) {
    const uint64_t v = SplitMix(&x);
    std::memcpy(&b[i], &v, std::min<size_t>(8, b.size() - i));
  }
  BlockHeader h{kBlockMagic, seq, file, block, 0};
  h.checksum = Checksum(b.data() + sizeof(h), b.size() - sizeof(h));
  std::memcpy(b.data(), &h, sizeof(h));
  return b;
}

absl::Status FsWorkload::CheckBlock(const std::string& bytes, uint64_t seq,
                                    uint32_t file, uint32_t block,
                                    const char* where) const {
  const std::string want = MakeBlock(seq, file, block);
  if (bytes == want) return absl::OkStatus();
  BlockHeader h{};
  if (bytes.size() >= sizeof(h)) std::memcpy(&h, bytes.data(), sizeof(h));
  size_t first = 0;
  while (first < std::min(bytes.size(), want.size()) &&
         bytes[first] == want[first]) {
    ++first;
  }
  return absl::DataLossError(absl::StrFormat(
      "%s: file %d block %d should hold seq %d; found %d bytes with seq %d "
      "file %d block %d, first difference at byte %d",
      where, file, block, seq, bytes.size(), h.seq, h.file, h.block, first));
}

uint64_t FsWorkload::ExpectedSeq(uint32_t file, uint32_t block,
                                 uint64_t steps) const {
  const uint64_t files = options_.files;
  if (steps <= file) return 0;
  const uint64_t writes = (steps - file - 1) / files + 1;  // to this file
  if (writes <= block) return 0;
  const uint64_t k = block + ((writes - 1 - block) / options_.max_blocks) *
                                 options_.max_blocks;
  return k * files + file + 1;
}

absl::Status FsWorkload::ReadBlock(uint32_t file, uint32_t block,
                                   std::string* out) {
  std::vector<uint8_t> buf(kBlockBytes);
  ASSIGN_OR_RETURN(size_t n, driver_->Read(nodeids_[file], fhs_[file],
                                           uint64_t{block} * kBlockBytes,
                                           absl::MakeSpan(buf)));
  out->assign(reinterpret_cast<const char*>(buf.data()), n);
  return absl::OkStatus();
}

absl::Status FsWorkload::Step() {
  if (driver_ == nullptr) return absl::FailedPreconditionError("no driver");
  const uint64_t seq = steps_ + 1;
  const uint32_t file = (seq - 1) % options_.files;
  const uint32_t block = ((seq - 1) / options_.files) % options_.max_blocks;
  const std::string b = MakeBlock(seq, file, block);
  RETURN_IF_ERROR(
      WriteGuest(CacheSlotGpa((seq - 1) % cache_slots_), b.data(), b.size()));
  ASSIGN_OR_RETURN(
      uint32_t n,
      driver_->Write(nodeids_[file], fhs_[file], uint64_t{block} * kBlockBytes,
                     absl::MakeSpan(reinterpret_cast<const uint8_t*>(b.data()),
                                    b.size())));
  if (n != b.size()) {
    return absl::DataLossError(
        absl::StrFormat("step %d: WRITE of file %d block %d wrote %d bytes",
                        seq, file, block, n));
  }
  BlockHeader h;
  std::memcpy(&h, b.data(), sizeof(h));
  Record r{seq, file, block, h.checksum, kBlockMagic};
  ASSIGN_OR_RETURN(
      n, driver_->Write(
             journal_nodeid_, journal_fh_, (seq - 1) * kRecordBytes,
             absl::MakeSpan(reinterpret_cast<const uint8_t*>(&r), sizeof(r))));
  if (n != sizeof(r)) {
    return absl::DataLossError(
        absl::StrFormat("step %d: journal WRITE wrote %d bytes", seq, n));
  }
  if (seq % options_.read_every == 0) {
    // Read back a block written earlier (deterministic choice).
    uint64_t x = options_.seed ^ (seq * 0x9e3779b97f4a7c15ull);
    const uint64_t back = SplitMix(&x) % seq;  // 0..seq-1 steps back
    const uint64_t s = seq - back;
    const uint32_t f = (s - 1) % options_.files;
    const uint32_t bl = ((s - 1) / options_.files) % options_.max_blocks;
    std::string got;
    RETURN_IF_ERROR(ReadBlock(f, bl, &got));
    RETURN_IF_ERROR(
        CheckBlock(got, ExpectedSeq(f, bl, seq), f, bl, "read-back"));
    ++verified_;
  }
  steps_ = seq;
  // The step is complete only when the guest kernel says so: a migration
  // between the requests above and this write resumes the step... which
  // cannot happen: the vCPU parks only between steps.
  return WriteGuest(kernel_gpa_ + offsetof(Kernel, steps), &seq, sizeof(seq));
}

absl::Status FsWorkload::VerifyAll() {
  ASSIGN_OR_RETURN(Kernel k, ReadKernel());
  if (k.steps != steps_) {
    return absl::DataLossError(
        absl::StrFormat("guest-kernel area says %d steps, the workload %d",
                        k.steps, steps_.load()));
  }
  for (uint32_t f = 0; f < options_.files; ++f) {
    ASSIGN_OR_RETURN(fuse_attr_out attr, driver_->Getattr(nodeids_[f]));
    uint64_t blocks = 0;
    for (uint32_t b = 0; b < options_.max_blocks; ++b) {
      const uint64_t seq = ExpectedSeq(f, b, steps_);
      if (seq == 0) break;
      blocks = b + 1;
      std::string got;
      RETURN_IF_ERROR(ReadBlock(f, b, &got));
      RETURN_IF_ERROR(CheckBlock(got, seq, f, b, "verify"));
      ++verified_;
    }
    if (attr.attr.size != blocks * kBlockBytes) {
      return absl::DataLossError(
          absl::StrFormat("file %d is %d bytes, expected %d", f, attr.attr.size,
                          blocks * kBlockBytes));
    }
  }
  // The journal: exactly one record per step, in order. A WRITE executed
  // twice appends twice (O_APPEND) and shows here.
  ASSIGN_OR_RETURN(fuse_attr_out jattr, driver_->Getattr(journal_nodeid_));
  if (jattr.attr.size != steps_ * kRecordBytes) {
    return absl::DataLossError(absl::StrFormat(
        "journal is %d bytes, expected %d for %d steps (a request lost or "
        "executed twice)",
        jattr.attr.size, steps_ * kRecordBytes, steps_.load()));
  }
  std::vector<uint8_t> buf(64 << 10);
  for (uint64_t off = 0; off < jattr.attr.size; off += buf.size()) {
    ASSIGN_OR_RETURN(size_t n, driver_->Read(journal_nodeid_, journal_fh_, off,
                                             absl::MakeSpan(buf)));
    for (size_t i = 0; i + kRecordBytes <= n; i += kRecordBytes) {
      Record r;
      std::memcpy(&r, buf.data() + i, sizeof(r));
      const uint64_t seq = (off + i) / kRecordBytes + 1;
      const uint32_t f = (seq - 1) % options_.files;
      const uint32_t bl = ((seq - 1) / options_.files) % options_.max_blocks;
      if (r.seq != seq || r.file != f || r.block != bl ||
          r.magic != kBlockMagic) {
        return absl::DataLossError(absl::StrFormat(
            "journal record %d: seq %d file %d block %d, expected seq %d "
            "file %d block %d",
            seq - 1, r.seq, r.file, r.block, seq, f, bl));
      }
    }
  }
  // The page cache: each slot holds the last block the guest put there.
  for (uint64_t slot = 0; slot < cache_slots_ && slot < steps_; ++slot) {
    const uint64_t seq =
        slot + 1 + ((steps_ - 1 - slot) / cache_slots_) * cache_slots_;
    std::string got(kBlockBytes, '\0');
    RETURN_IF_ERROR(
        ram_->memory().Read(CacheSlotGpa(slot), got.data(), got.size()));
    const uint32_t f = (seq - 1) % options_.files;
    const uint32_t bl = ((seq - 1) / options_.files) % options_.max_blocks;
    RETURN_IF_ERROR(CheckBlock(got, seq, f, bl, "page cache"));
  }
  return absl::OkStatus();
}

WorkloadCounts FsWorkload::counts() const {
  return {steps_.load(), verified_.load()};
}

}  // namespace vhostmig::guest
