// DatapathClient: the driver side of the data-path benchmark. It attaches
// the synthetic guest to a vhost-user-fs back-end over its real socket, as
// a VMM does (GuestRam + VhostUserTransport + VhostUserDevice), speaks FUSE
// through VirtioFsDriver on one request queue, and runs one timed workload
// at a time against a test file in the shared directory.
//
// Every back-end sees exactly the same requests: the same buffer layout as
// Linux's virtio-fs driver (READ: the fuse_out_header in its own descriptor,
// the data in separate page-aligned guest buffers; WRITE: the data in its own
// descriptor after fuse_write_in), the same offsets (a fixed-seed PRNG) and
// the same queue depth. Depth D keeps D requests in flight on the request
// queue (Submit, then WaitAny and resubmit).
//
// Each workload first runs untimed for a warm-up, then counts the requests
// that complete within the timed window; every reply is checked (error,
// byte count), so a back-end that fails requests produces an error, never a
// figure. Verify() compares a READ against the host file once per attach.
//
// Thread-safety: one thread. The back-end process must outlive the client.
#ifndef VHOSTMIG_BENCH_DATAPATH_CLIENT_H_
#define VHOSTMIG_BENCH_DATAPATH_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "guest/guest_ram.h"
#include "guest/vhost_user_device.h"
#include "guest/vhost_user_transport.h"
#include "guest/virtio_fs_driver.h"
#include "vhost/memory/dirty_log.h"

namespace vhostmig::bench {

// What a timed workload achieved.
struct WorkloadResult {
  uint64_t requests = 0;  // completed in the timed window
  uint64_t bytes = 0;     // data moved by them (0 for metadata)
  absl::Duration elapsed;
  // FUSE requests of the whole call (warm-up and drain included, RELEASE
  // and FORGET too), to divide a daemon's CPU time by.
  uint64_t all_requests = 0;
  // Over the same span, on the client's side: notifications sent to the
  // daemon (kick eventfd writes), interrupts received (call eventfd
  // signals) and the client thread's own CPU time.
  uint64_t kicks = 0;
  uint64_t interrupts = 0;
  absl::Duration client_cpu;
  double PerSecond(uint64_t n) const {
    return elapsed > absl::ZeroDuration()
               ? static_cast<double>(n) / absl::ToDoubleSeconds(elapsed)
               : 0;
  }
  double MiBPerSecond() const { return PerSecond(bytes) / (1 << 20); }
};

struct DatapathClientOptions {
  uint16_t queue_size = 256;
  absl::Duration warmup = absl::Milliseconds(200);
  absl::Duration timeout = absl::Seconds(10);  // per request
  // After attaching, turn on dirty logging as a migration's pre-copy does:
  // VhostUserDevice::StartLogging with a DirtyLog sized for the guest RAM
  // (LOG_SHMFD log, LOG_ALL, ring addresses with the LOG flag).
  bool log_all = false;
};

class DatapathClient {
 public:
  // Connects to `socket_path`, negotiates and starts hiprio + one request
  // queue, sends FUSE_INIT (with the flags Linux sends that matter for
  // transfer sizes) and opens `file_name` (in the shared directory's root)
  // read-write.
  static absl::StatusOr<std::unique_ptr<DatapathClient>> Attach(
      const std::string& socket_path, const std::string& file_name,
      const DatapathClientOptions& options = {});
  ~DatapathClient();

  // The negotiated max_write (also used as the ceiling of READ sizes).
  uint32_t max_write() const { return driver_->max_write(); }
  uint64_t file_size() const { return file_size_; }

  // One READ of `len` bytes at `offset`, compared with `expected`.
  absl::Status Verify(uint64_t offset, const std::string& expected);

  // `block`-sized READs (or WRITEs) at random block-aligned offsets of the
  // file, `depth` in flight, for `duration` after the warm-up.
  absl::StatusOr<WorkloadResult> RandomIo(bool write, uint32_t block,
                                          uint32_t depth,
                                          absl::Duration duration,
                                          uint64_t seed);
  // `block`-sized READs (or WRITEs) one after another through the file,
  // wrapping at its end, one in flight.
  absl::StatusOr<WorkloadResult> SequentialIo(bool write, uint32_t block,
                                              absl::Duration duration);
  // Cycles of CREATE, GETATTR, RELEASE, UNLINK on fresh names in the root
  // (plus a BATCH_FORGET on the high-priority queue every 64 cycles, as
  // Linux would forget the dead inodes). `requests` counts CREATE, GETATTR
  // and UNLINK: three per cycle.
  absl::StatusOr<WorkloadResult> Metadata(absl::Duration duration,
                                          const std::string& prefix);

 private:
  explicit DatapathClient(const DatapathClientOptions& options)
      : options_(options) {}
  absl::StatusOr<WorkloadResult> MetadataCycles(absl::Duration duration,
                                                const std::string& prefix);
  // Runs `workload` and adds the client-side counters to its result.
  template <typename Workload>
  absl::StatusOr<WorkloadResult> Measured(Workload workload);

  DatapathClientOptions options_;
  // Destroyed in reverse order: the driver first, then the device (closing
  // the socket, on which the daemons exit), the notifiers and RAM last.
  std::unique_ptr<guest::GuestRam> ram_;
  std::unique_ptr<guest::VhostUserTransport> transport_;
  std::unique_ptr<guest::VhostUserDevice> device_;
  std::unique_ptr<guest::VirtioFsDriver> driver_;
  std::shared_ptr<vhost::DirtyLog> log_;  // with options_.log_all
  uint64_t nodeid_ = 0;
  uint64_t fh_ = 0;
  uint64_t file_size_ = 0;
};

}  // namespace vhostmig::bench

#endif  // VHOSTMIG_BENCH_DATAPATH_CLIENT_H_
