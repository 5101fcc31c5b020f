#include "tests/reliability/reliability_fixture.h"

#include <signal.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/errno_status.h"
#include "base/status_macros.h"

namespace vhostmig::reliability {
namespace {

// The daemon is a data dependency; tests run in the workspace's runfiles
// directory.
constexpr char kDaemon[] = "fs_device/vhost-user-fs";

// FsWorkload's on-disk format (guest/fs_workload.cc), restated so the files
// can be checked without any back-end.
constexpr uint64_t kBlockMagic = 0x6b636f6c62677376;  // "vsgblock"
constexpr uint32_t kBlockBytes = guest::FsWorkload::kBlockBytes;
struct BlockHeader {
  uint64_t magic;
  uint64_t seq;
  uint32_t file;
  uint32_t block;
  uint64_t checksum;  // FNV-1a of the payload
};
struct Record {
  uint64_t seq;
  uint32_t file;
  uint32_t block;
  uint64_t checksum;
  uint64_t magic;
};
static_assert(sizeof(Record) == guest::FsWorkload::kRecordBytes);

uint64_t Fnv1a(const char* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<uint8_t>(p[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

// Which block step `seq` writes.
void StepTarget(const guest::FsWorkloadOptions& w, uint64_t seq, uint32_t* file,
                uint32_t* block) {
  *file = (seq - 1) % w.files;
  *block = ((seq - 1) / w.files) % w.max_blocks;
}

// The step that last wrote (file, block) after `steps` steps (0: none).
uint64_t ExpectedSeq(const guest::FsWorkloadOptions& w, uint32_t file,
                     uint32_t block, uint64_t steps) {
  if (steps <= file) return 0;
  const uint64_t writes = (steps - file - 1) / w.files + 1;
  if (writes <= block) return 0;
  const uint64_t k =
      block + ((writes - 1 - block) / w.max_blocks) * w.max_blocks;
  return k * w.files + file + 1;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<FsDaemon>> FsDaemon::Start(
    const std::string& shared_dir, const std::string& socket_path) {
  ASSIGN_OR_RETURN(auto process,
                   SocketServerProcess::Start(
                       {kDaemon, "--socket-path=" + socket_path,
                        "--shared-dir=" + shared_dir, "--cache=never"},
                       socket_path, socket_path + ".log"));
  return std::unique_ptr<FsDaemon>(new FsDaemon(std::move(process)));
}

absl::Status FsDaemon::Kill() {
  if (::kill(process_->pid(), SIGKILL) != 0) {
    return LastErrnoStatus("kill the daemon");
  }
  return process_->WaitForExit(absl::Seconds(5)).status();
}

std::string FsDaemon::Log() const {
  absl::StatusOr<std::string> log = ReadFile(process_->log_path());
  return log.ok() ? *log : std::string(log.status().message());
}

absl::Status CheckWorkloadFilesOnHost(const std::string& shared_dir,
                                      const guest::FsWorkloadOptions& w,
                                      uint64_t steps) {
  const std::string prefix = absl::StrCat(shared_dir, "/wl", w.seed);
  ASSIGN_OR_RETURN(std::string journal, ReadFile(prefix + "-journal"));
  const uint64_t records = journal.size() / sizeof(Record);
  if (journal.size() % sizeof(Record) != 0 || records < steps ||
      records > steps + 1) {
    return absl::DataLossError(absl::StrFormat(
        "journal is %d bytes: expected %d records for %d acknowledged steps "
        "(or one more in flight)",
        journal.size(), steps, steps));
  }
  std::vector<uint64_t> checksums(records + 1);
  for (uint64_t i = 0; i < records; ++i) {
    Record r;
    std::memcpy(&r, journal.data() + i * sizeof(r), sizeof(r));
    uint32_t f, b;
    StepTarget(w, i + 1, &f, &b);
    if (r.seq != i + 1 || r.file != f || r.block != b ||
        r.magic != kBlockMagic) {
      return absl::DataLossError(absl::StrFormat(
          "journal record %d: seq %d file %d block %d, expected seq %d file "
          "%d block %d",
          i, r.seq, r.file, r.block, i + 1, f, b));
    }
    checksums[i + 1] = r.checksum;
  }
  // The step in flight (if any) may or may not have reached its block.
  uint32_t inflight_file = 0, inflight_block = 0;
  StepTarget(w, steps + 1, &inflight_file, &inflight_block);
  for (uint32_t f = 0; f < w.files; ++f) {
    ASSIGN_OR_RETURN(std::string data, ReadFile(absl::StrCat(prefix, "-f", f)));
    for (uint32_t b = 0; b < w.max_blocks; ++b) {
      const uint64_t want = ExpectedSeq(w, f, b, steps);
      const bool inflight = f == inflight_file && b == inflight_block;
      if (want == 0 && !inflight) break;
      if (data.size() < uint64_t{b + 1} * kBlockBytes) {
        if (want == 0) break;  // the in-flight step never wrote it
        return absl::DataLossError(absl::StrFormat(
            "file %d is %d bytes: block %d (step %d) is missing", f,
            data.size(), b, want));
      }
      const char* block = data.data() + uint64_t{b} * kBlockBytes;
      BlockHeader h;
      std::memcpy(&h, block, sizeof(h));
      const bool acceptable = h.seq == want || (inflight && h.seq == steps + 1);
      if (h.magic != kBlockMagic || !acceptable || h.file != f ||
          h.block != b ||
          h.checksum != Fnv1a(block + sizeof(h), kBlockBytes - sizeof(h))) {
        return absl::DataLossError(absl::StrFormat(
            "file %d block %d: found seq %d (magic %x, file %d, block %d), "
            "expected seq %d after %d acknowledged steps, or a bad checksum",
            f, b, h.seq, h.magic, h.file, h.block, want, steps));
      }
      if (h.seq < checksums.size() && checksums[h.seq] != 0 &&
          checksums[h.seq] != h.checksum) {
        return absl::DataLossError(absl::StrFormat(
            "file %d block %d: checksum differs from journal record %d", f, b,
            h.seq));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace vhostmig::reliability
