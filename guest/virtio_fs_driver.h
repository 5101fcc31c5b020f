// VirtioFsDriver: the synthetic guest's virtio-fs driver (virtio 1.2, 5.11
// "File System Device"), speaking FUSE (linux/fuse.h) over split rings in
// guest memory.
//
// It owns one DriverQueue per virtio-fs queue: queue 0 is the high-priority
// queue (FORGET and BATCH_FORGET go there, as in Linux), queues 1..N carry
// requests. A request is one chain: the readable part (fuse_in_header, the
// op struct, names or data) followed by the writable part (fuse_out_header
// and the reply). Buffers come from GuestRam and are returned when the
// request completes.
//
// The driver never talks to a device directly: it kicks and waits through a
// Transport (an in-process loopback, an eventfd pair to a real back-end, a
// VMM model). Synchronous methods submit one request and wait for it;
// Submit/Wait allow many requests in flight per queue (benchmarks at depth
// 32).
//
// Errors: transport and protocol problems (timeout, malformed reply) are
// statuses with their own codes; a FUSE error reply becomes a status whose
// code follows the errno and which carries the errno (FuseErrno()).
//
// Thread-safety: one thread at a time.
#ifndef VHOSTMIG_GUEST_VIRTIO_FS_DRIVER_H_
#define VHOSTMIG_GUEST_VIRTIO_FS_DRIVER_H_

#include <linux/fuse.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "guest/guest_ram.h"
#include "vhost/memory/dirty_log.h"
#include "vhost/virtqueue/driver_queue.h"

namespace vhostmig::guest {

// How the driver reaches its device.
class Transport {
 public:
  virtual ~Transport() = default;
  // Notify the device that queue `queue` has new available buffers.
  virtual absl::Status Kick(uint32_t queue) = 0;
  // Block until the device may have used buffers on `queue` (an interrupt,
  // or for in-process transports: run the device). The driver polls the
  // used ring afterwards, so a spurious return is harmless. Returns
  // DeadlineExceeded if nothing can happen within `timeout`.
  virtual absl::Status WaitForUsed(uint32_t queue, absl::Duration timeout) = 0;
};

// The errno of a FUSE error status (positive, e.g. ENOENT), or 0 if the
// status does not come from a FUSE error reply.
int FuseErrno(const absl::Status& status);

struct VirtioFsDriverOptions {
  uint32_t num_request_queues = 1;
  uint16_t queue_size = 128;
  // Ring features the device negotiated.
  bool event_idx = false;
  bool indirect_desc = false;
  // Write every chain as an indirect table (requires indirect_desc).
  bool use_indirect = false;
  // Largest reply the driver allocates for variable-size replies (READ,
  // READDIR, GETXATTR, ...) when the caller does not say.
  uint32_t max_reply_bytes = 1 << 20;
  absl::Duration timeout = absl::Seconds(10);
  // Credentials placed in every fuse_in_header.
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t pid = 1;
  // Records the driver's own writes to guest memory (as KVM would).
  std::shared_ptr<vhost::DirtyLog> guest_dirty;
};

// A raw reply: the out header's error (0 or -errno) and the bytes after the
// header.
struct FuseReply {
  uint64_t unique = 0;
  int32_t error = 0;
  uint32_t used_len = 0;  // what the device reported in the used element
  // Reply bytes after fuse_out_header that fit the reply buffer...
  std::vector<uint8_t> payload;
  // ...and how many more went to the caller's Request::reply_data buffers.
  uint32_t extra_len = 0;
};

struct DirEntry {
  uint64_t ino = 0;
  uint64_t off = 0;
  uint32_t type = 0;
  std::string name;
};

struct DirEntryPlus {
  fuse_entry_out entry{};
  DirEntry dirent;
};

struct CreateReply {
  fuse_entry_out entry{};
  fuse_open_out open{};
};

// GETXATTR/LISTXATTR: with size 0 the server returns only the size needed.
struct XattrReply {
  uint32_t size = 0;
  std::string value;  // empty when asked with size 0
};

class VirtioFsDriver {
 public:
  // Lays out 1 + num_request_queues rings in `ram` and initializes them.
  // `ram` and `transport` must outlive the driver.
  static absl::StatusOr<std::unique_ptr<VirtioFsDriver>> Create(
      GuestRam* ram, Transport* transport,
      const VirtioFsDriverOptions& options);
  ~VirtioFsDriver();

  uint32_t num_queues() const { return queues_.size(); }
  // The ring layout of queue `q`, to configure the device side with (its
  // indirect_desc bit reflects the options).
  vhost::VringLayout QueueLayout(uint32_t q) const;
  vhost::DriverQueue& queue(uint32_t q) { return *queues_[q]; }
  GuestRam& ram() { return *ram_; }
  const VirtioFsDriverOptions& options() const { return options_; }

  // ---- Migration ----

  // What the driver keeps outside guest memory: per-queue ring bookkeeping,
  // the next FUSE unique and the negotiated session. Taken at a quiescent
  // point (no request in flight: FailedPrecondition otherwise).
  struct State {
    std::vector<vhost::DriverQueue::State> queues;
    uint64_t next_unique = 1;
    fuse_init_out init_out{};
  };
  absl::StatusOr<State> SaveState() const;
  // Rebuilds the queues from the rings already in guest memory (the same
  // layout Create chose, e.g. on a migration destination whose RAM was
  // filled with the source's pages) and `state`. Writes no guest memory.
  absl::Status RestoreState(const State& state);

  // ---- Raw requests ----

  // One request of `opcode` on `queue` whose body (after fuse_in_header) is
  // the concatenation of `body`; `reply_bytes` is the writable space after
  // fuse_out_header. The header's len is computed unless `header_len`
  // overrides it (for malformed-request tests).
  absl::StatusOr<FuseReply> Send(
      uint32_t opcode, uint64_t nodeid, absl::Span<const uint8_t> payload,
      uint32_t reply_bytes = 4096, std::optional<uint32_t> queue = std::nullopt,
      std::optional<uint32_t> header_len = std::nullopt);

  // Asynchronous requests. Submit returns an id; Wait blocks until that
  // request completes (reaping others meanwhile); WaitAny returns the
  // next completed request of `queue`. Submit fails with ResourceExhausted
  // when the ring is full: complete some first.
  struct Request {
    uint32_t opcode = 0;
    uint64_t nodeid = 0;
    std::vector<absl::Span<const uint8_t>> body;  // after fuse_in_header
    // Extra readable guest buffers after the body (WRITE data in its own
    // descriptors, as Linux sends it); not freed by the driver.
    std::vector<vhost::GuestBuffer> request_data;
    uint32_t reply_bytes = 4096;  // after fuse_out_header
    // Extra writable guest buffers after the reply (READ into the caller's
    // guest buffers); they are not freed by the driver.
    std::vector<vhost::GuestBuffer> reply_data;
    std::optional<uint32_t> queue;  // default: request queue 1
    std::optional<uint32_t> header_len;
    bool expect_reply = true;  // false for FORGET/BATCH_FORGET
  };
  absl::StatusOr<uint64_t> Submit(const Request& request);
  absl::StatusOr<FuseReply> Wait(uint64_t id);
  absl::StatusOr<FuseReply> WaitAny(uint32_t queue);
  // Requests submitted and not yet returned by Wait/WaitAny.
  size_t in_flight() const { return pending_.size(); }

  // ---- FUSE operations (requests go to queue 1 unless noted) ----

  // FUSE_INIT: records the reply (negotiated minor, flags, max_write).
  absl::StatusOr<fuse_init_out> Init(uint32_t flags = 0, uint32_t flags2 = 0,
                                     uint32_t max_readahead = 128 * 1024);
  const fuse_init_out& init_out() const { return init_out_; }
  uint32_t max_write() const { return init_out_.max_write; }

  absl::StatusOr<fuse_entry_out> Lookup(uint64_t parent,
                                        absl::string_view name);
  // FORGET and BATCH_FORGET go to the high-priority queue and have no reply;
  // they return once the device has used the chain.
  absl::Status Forget(uint64_t nodeid, uint64_t nlookup);
  absl::Status BatchForget(const std::vector<fuse_forget_one>& forgets);
  absl::StatusOr<fuse_attr_out> Getattr(uint64_t nodeid,
                                        std::optional<uint64_t> fh = {});
  absl::StatusOr<fuse_attr_out> Setattr(uint64_t nodeid,
                                        const fuse_setattr_in& in);
  absl::StatusOr<std::string> Readlink(uint64_t nodeid);
  absl::StatusOr<fuse_entry_out> Symlink(uint64_t parent,
                                         absl::string_view name,
                                         absl::string_view target);
  absl::StatusOr<fuse_entry_out> Mknod(uint64_t parent, absl::string_view name,
                                       uint32_t mode, uint32_t rdev,
                                       uint32_t umask = 0);
  absl::StatusOr<fuse_entry_out> Mkdir(uint64_t parent, absl::string_view name,
                                       uint32_t mode, uint32_t umask = 0);
  absl::Status Unlink(uint64_t parent, absl::string_view name);
  absl::Status Rmdir(uint64_t parent, absl::string_view name);
  absl::Status Rename(uint64_t olddir, absl::string_view oldname,
                      uint64_t newdir, absl::string_view newname);
  absl::Status Rename2(uint64_t olddir, absl::string_view oldname,
                       uint64_t newdir, absl::string_view newname,
                       uint32_t flags);
  absl::StatusOr<fuse_entry_out> Link(uint64_t oldnodeid, uint64_t newparent,
                                      absl::string_view newname);
  absl::StatusOr<fuse_open_out> Open(uint64_t nodeid, uint32_t flags);
  // Reads up to dst.size() bytes into caller memory; returns the count.
  absl::StatusOr<size_t> Read(uint64_t nodeid, uint64_t fh, uint64_t offset,
                              absl::Span<uint8_t> dst, uint32_t flags = 0);
  // Reads into guest buffers the caller allocated (as a guest page cache
  // would); returns the count of bytes the device placed there.
  absl::StatusOr<size_t> ReadToGuest(uint64_t nodeid, uint64_t fh,
                                     uint64_t offset,
                                     const std::vector<vhost::GuestBuffer>& dst,
                                     uint32_t flags = 0);
  absl::StatusOr<uint32_t> Write(uint64_t nodeid, uint64_t fh, uint64_t offset,
                                 absl::Span<const uint8_t> data,
                                 uint32_t write_flags = 0, uint32_t flags = 0);
  absl::StatusOr<fuse_statfs_out> Statfs(uint64_t nodeid);
  absl::Status Release(uint64_t nodeid, uint64_t fh, uint32_t flags = 0);
  absl::Status Fsync(uint64_t nodeid, uint64_t fh, bool datasync = false);
  absl::Status Setxattr(uint64_t nodeid, absl::string_view name,
                        absl::string_view value, uint32_t flags = 0);
  absl::StatusOr<XattrReply> Getxattr(uint64_t nodeid, absl::string_view name,
                                      uint32_t size);
  absl::StatusOr<XattrReply> Listxattr(uint64_t nodeid, uint32_t size);
  absl::Status Removexattr(uint64_t nodeid, absl::string_view name);
  absl::Status Flush(uint64_t nodeid, uint64_t fh, uint64_t lock_owner = 0);
  absl::StatusOr<fuse_open_out> Opendir(uint64_t nodeid, uint32_t flags = 0);
  absl::StatusOr<std::vector<DirEntry>> Readdir(uint64_t nodeid, uint64_t fh,
                                                uint64_t offset,
                                                uint32_t size = 4096);
  absl::StatusOr<std::vector<DirEntryPlus>> Readdirplus(uint64_t nodeid,
                                                        uint64_t fh,
                                                        uint64_t offset,
                                                        uint32_t size = 4096);
  absl::Status Releasedir(uint64_t nodeid, uint64_t fh);
  absl::Status Fsyncdir(uint64_t nodeid, uint64_t fh, bool datasync = false);
  absl::Status Access(uint64_t nodeid, uint32_t mask);
  absl::StatusOr<CreateReply> Create(uint64_t parent, absl::string_view name,
                                     uint32_t flags, uint32_t mode,
                                     uint32_t umask = 0);
  absl::Status Fallocate(uint64_t nodeid, uint64_t fh, uint64_t offset,
                         uint64_t length, uint32_t mode = 0);
  absl::StatusOr<uint64_t> Lseek(uint64_t nodeid, uint64_t fh, uint64_t offset,
                                 uint32_t whence);
  absl::StatusOr<uint32_t> CopyFileRange(uint64_t nodeid_in, uint64_t fh_in,
                                         uint64_t off_in, uint64_t nodeid_out,
                                         uint64_t fh_out, uint64_t off_out,
                                         uint64_t len, uint64_t flags = 0);
  absl::Status Syncfs(uint64_t nodeid);
  absl::Status Destroy();

  // Parsers for directory replies (exposed for tests of hostile replies).
  static absl::StatusOr<std::vector<DirEntry>> ParseDirents(
      absl::Span<const uint8_t> data);
  static absl::StatusOr<std::vector<DirEntryPlus>> ParseDirentsPlus(
      absl::Span<const uint8_t> data);

 private:
  struct Pending {
    uint32_t queue = 0;
    uint16_t head = 0;
    uint32_t opcode = 0;
    bool expect_reply = true;
    bool done = false;
    uint32_t used_len = 0;
    uint64_t unique = 0;
    uint64_t reply_gpa = 0;
    uint32_t reply_len = 0;       // fuse_out_header + reply_bytes
    uint64_t extra_capacity = 0;  // bytes of Request::reply_data
    std::vector<uint64_t> owned;  // guest buffers to free on completion
  };

  VirtioFsDriver(GuestRam* ram, Transport* transport,
                 const VirtioFsDriverOptions& options);

  uint32_t RequestQueue() const { return 1; }
  // Moves used elements of `queue` into pending_ (done = true).
  void Reap(uint32_t queue);
  // Builds the reply of a done request and frees its buffers.
  absl::StatusOr<FuseReply> Finish(uint64_t id);
  // Submit + Wait, turning a FUSE error into a status.
  absl::StatusOr<FuseReply> Call(const Request& request);
  template <typename T>
  absl::StatusOr<T> CallFor(uint32_t opcode, uint64_t nodeid,
                            std::vector<absl::Span<const uint8_t>> body,
                            size_t min_size = sizeof(T));
  absl::Status CallNoReply(uint32_t opcode, uint64_t nodeid,
                           std::vector<absl::Span<const uint8_t>> body);

  GuestRam* ram_;
  Transport* transport_;
  VirtioFsDriverOptions options_;
  std::vector<std::unique_ptr<vhost::DriverQueue>> queues_;
  std::vector<uint64_t> ring_gpas_;
  uint64_t next_unique_ = 1;
  absl::flat_hash_map<uint64_t, Pending> pending_;
  // Per queue: head -> request id.
  std::vector<absl::flat_hash_map<uint16_t, uint64_t>> by_head_;
  // Per queue: ids completed by the device, in completion order, not yet
  // returned by Wait/WaitAny.
  std::vector<std::deque<uint64_t>> completed_;
  fuse_init_out init_out_{};
};

}  // namespace vhostmig::guest

#endif  // VHOSTMIG_GUEST_VIRTIO_FS_DRIVER_H_
