#include "bench/datapath_client.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <time.h>

#include <cstring>
#include <functional>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace vhostmig::bench {
namespace {

constexpr uint32_t kRequestQueue = 1;
constexpr uint64_t kRootNodeId = FUSE_ROOT_ID;
// Linux's fuse_mount of a virtio-fs: what it asks for that shapes the data
// path (asynchronous reads, writes larger than a page, up to 256 pages).
constexpr uint32_t kInitFlags =
    FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES | FUSE_PARALLEL_DIROPS;

template <typename T>
absl::Span<const uint8_t> Bytes(const T& v) {
  return {reinterpret_cast<const uint8_t*>(&v), sizeof(T)};
}

// Guest buffers for the requests in flight, freed on every exit path.
class GuestBuffers {
 public:
  explicit GuestBuffers(guest::GuestRam* ram) : ram_(ram) {}
  ~GuestBuffers() {
    for (uint64_t gpa : gpas_) ram_->Free(gpa);
  }
  absl::Status Allocate(size_t count, uint32_t len) {
    for (size_t i = 0; i < count; ++i) {
      ASSIGN_OR_RETURN(uint64_t gpa, ram_->Allocate(len, 4096));
      gpas_.push_back(gpa);
    }
    return absl::OkStatus();
  }
  uint64_t operator[](size_t i) const { return gpas_[i]; }

 private:
  guest::GuestRam* ram_;
  std::vector<uint64_t> gpas_;
};

absl::Status CheckIoReply(const guest::FuseReply& reply, bool write,
                          uint32_t len) {
  const char* op = write ? "WRITE" : "READ";
  if (reply.error != 0) {
    return absl::InternalError(
        absl::StrCat(op, " failed: ", std::strerror(-reply.error)));
  }
  uint32_t moved = reply.extra_len;
  if (write) {
    fuse_write_out out{};
    if (reply.payload.size() < sizeof(out)) {
      return absl::DataLossError("WRITE: short fuse_write_out");
    }
    std::memcpy(&out, reply.payload.data(), sizeof(out));
    moved = out.size;
  }
  if (moved != len) {
    return absl::DataLossError(
        absl::StrCat(op, " moved ", moved, " bytes, expected ", len));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<DatapathClient>> DatapathClient::Attach(
    const std::string& socket_path, const std::string& file_name,
    const DatapathClientOptions& options) {
  auto client = std::unique_ptr<DatapathClient>(new DatapathClient(options));
  // Rings, 32 x 4 KiB, 1 MiB and the request/reply headers fit easily.
  ASSIGN_OR_RETURN(client->ram_, guest::GuestRam::Create(guest::GuestRamOptions{
                                     .region_sizes = {64ull << 20}}));
  constexpr uint32_t kQueues = 2;  // hiprio + one request queue
  ASSIGN_OR_RETURN(client->transport_,
                   guest::VhostUserTransport::Create(kQueues));
  guest::VhostUserDeviceOptions device_options;
  device_options.reply_timeout = options.timeout;
  ASSIGN_OR_RETURN(client->device_,
                   guest::VhostUserDevice::Connect(
                       socket_path, client->ram_.get(),
                       client->transport_.get(), device_options));
  guest::VirtioFsDriverOptions driver_options;
  driver_options.num_request_queues = kQueues - 1;
  driver_options.queue_size = options.queue_size;
  driver_options.event_idx = client->device_->event_idx();
  driver_options.indirect_desc = client->device_->indirect_desc();
  driver_options.timeout = options.timeout;
  ASSIGN_OR_RETURN(
      client->driver_,
      guest::VirtioFsDriver::Create(client->ram_.get(),
                                    client->transport_.get(), driver_options));
  RETURN_IF_ERROR(client->device_->Configure());
  std::vector<vhost::VringLayout> layouts;
  for (uint32_t q = 0; q < kQueues; ++q) {
    layouts.push_back(client->driver_->QueueLayout(q));
  }
  RETURN_IF_ERROR(client->device_->StartRings(layouts));
  if (options.log_all) {
    ASSIGN_OR_RETURN(client->log_,
                     vhost::DirtyLog::Create(client->ram_->memory().end_gpa()));
    RETURN_IF_ERROR(client->device_->StartLogging(client->log_));
  }
  RETURN_IF_ERROR(client->driver_->Init(kInitFlags).status());

  ASSIGN_OR_RETURN(fuse_entry_out entry,
                   client->driver_->Lookup(kRootNodeId, file_name));
  client->nodeid_ = entry.nodeid;
  client->file_size_ = entry.attr.size;
  ASSIGN_OR_RETURN(fuse_open_out open,
                   client->driver_->Open(entry.nodeid, O_RDWR));
  client->fh_ = open.fh;
  return client;
}

DatapathClient::~DatapathClient() {
  if (driver_ != nullptr && fh_ != 0) {
    driver_->Release(nodeid_, fh_).IgnoreError();
  }
}

absl::Status DatapathClient::Verify(uint64_t offset,
                                    const std::string& expected) {
  GuestBuffers buf(ram_.get());
  const uint32_t len = static_cast<uint32_t>(expected.size());
  RETURN_IF_ERROR(buf.Allocate(1, len));
  ASSIGN_OR_RETURN(size_t n,
                   driver_->ReadToGuest(nodeid_, fh_, offset, {{buf[0], len}}));
  std::string got(n, '\0');
  RETURN_IF_ERROR(ram_->memory().Read(buf[0], got.data(), n));
  if (got != expected) {
    return absl::DataLossError(
        absl::StrCat("READ of ", len, " bytes at ", offset, " returned ", n,
                     " bytes that differ from the host file"));
  }
  return absl::OkStatus();
}

namespace {

// Keeps `depth` READs or WRITEs of `block` bytes in flight, at the offsets
// `next_offset` yields, and counts those that complete inside the timed
// window [start + warmup, start + warmup + duration).
absl::StatusOr<WorkloadResult> RunIo(guest::VirtioFsDriver& driver,
                                     guest::GuestRam& ram, uint64_t nodeid,
                                     uint64_t fh, bool write, uint32_t block,
                                     uint32_t depth, absl::Duration warmup,
                                     absl::Duration duration,
                                     const std::function<uint64_t()>& next) {
  GuestBuffers bufs(&ram);
  RETURN_IF_ERROR(bufs.Allocate(depth, block));
  // (request id, slot) of the requests in flight; depth is small.
  std::vector<std::pair<uint64_t, uint32_t>> in_flight;
  auto submit = [&](uint32_t slot) -> absl::Status {
    guest::VirtioFsDriver::Request r;
    r.nodeid = nodeid;
    fuse_read_in rin{};
    fuse_write_in win{};
    if (write) {
      win.fh = fh;
      win.offset = next();
      win.size = block;
      r.opcode = FUSE_WRITE;
      r.body = {Bytes(win)};
      r.request_data = {{bufs[slot], block}};
      r.reply_bytes = sizeof(fuse_write_out);
    } else {
      rin.fh = fh;
      rin.offset = next();
      rin.size = block;
      r.opcode = FUSE_READ;
      r.body = {Bytes(rin)};
      r.reply_bytes = 0;  // the out header alone, the data in the slot
      r.reply_data = {{bufs[slot], block}};
    }
    ASSIGN_OR_RETURN(uint64_t id, driver.Submit(r));
    in_flight.emplace_back(id, slot);
    return absl::OkStatus();
  };

  const absl::Time start = absl::Now();
  const absl::Time window_start = start + warmup;
  const absl::Time window_end = window_start + duration;
  WorkloadResult result;
  result.elapsed = duration;
  for (uint32_t slot = 0; slot < depth; ++slot) RETURN_IF_ERROR(submit(slot));
  while (!in_flight.empty()) {
    ASSIGN_OR_RETURN(guest::FuseReply reply, driver.WaitAny(kRequestQueue));
    auto it = in_flight.begin();
    while (it != in_flight.end() && it->first != reply.unique) ++it;
    if (it == in_flight.end()) {
      return absl::InternalError("reply to a request not in flight");
    }
    const uint32_t slot = it->second;
    in_flight.erase(it);
    RETURN_IF_ERROR(CheckIoReply(reply, write, block));
    ++result.all_requests;
    const absl::Time now = absl::Now();
    if (now >= window_start && now < window_end) {
      ++result.requests;
      result.bytes += block;
    }
    if (now < window_end) RETURN_IF_ERROR(submit(slot));
  }
  return result;
}

absl::Duration ThreadCpu() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return absl::DurationFromTimespec(ts);
}

}  // namespace

template <typename Workload>
absl::StatusOr<WorkloadResult> DatapathClient::Measured(Workload workload) {
  auto kicks = [&] { return transport_->kicks(0) + transport_->kicks(1); };
  auto interrupts = [&] {
    return transport_->interrupts(0) + transport_->interrupts(1);
  };
  const uint64_t kicks_before = kicks();
  const uint64_t interrupts_before = interrupts();
  const absl::Duration cpu_before = ThreadCpu();
  absl::StatusOr<WorkloadResult> r = workload();
  if (!r.ok()) return r;
  r->kicks = kicks() - kicks_before;
  r->interrupts = interrupts() - interrupts_before;
  r->client_cpu = ThreadCpu() - cpu_before;
  return r;
}

absl::StatusOr<WorkloadResult> DatapathClient::RandomIo(bool write,
                                                        uint32_t block,
                                                        uint32_t depth,
                                                        absl::Duration duration,
                                                        uint64_t seed) {
  if (block == 0 || file_size_ < block || depth == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "random I/O of ", block, " bytes on a ", file_size_, "-byte file"));
  }
  std::mt19937_64 rng(seed);
  const uint64_t blocks = file_size_ / block;
  return Measured([&] {
    return RunIo(*driver_, *ram_, nodeid_, fh_, write, block, depth,
                 options_.warmup, duration,
                 [&] { return (rng() % blocks) * block; });
  });
}

absl::StatusOr<WorkloadResult> DatapathClient::SequentialIo(
    bool write, uint32_t block, absl::Duration duration) {
  if (block == 0 || file_size_ < block) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sequential I/O of ", block, " bytes on a ", file_size_, "-byte file"));
  }
  const uint64_t end = file_size_ / block * block;
  uint64_t offset = 0;
  return Measured([&] {
    return RunIo(*driver_, *ram_, nodeid_, fh_, write, block, 1,
                 options_.warmup, duration, [&] {
                   const uint64_t at = offset;
                   offset = offset + block >= end ? 0 : offset + block;
                   return at;
                 });
  });
}

absl::StatusOr<WorkloadResult> DatapathClient::Metadata(
    absl::Duration duration, const std::string& prefix) {
  return Measured([&] { return MetadataCycles(duration, prefix); });
}

absl::StatusOr<WorkloadResult> DatapathClient::MetadataCycles(
    absl::Duration duration, const std::string& prefix) {
  constexpr size_t kForgetBatch = 64;
  std::vector<fuse_forget_one> forgets;
  const absl::Time window_start = absl::Now() + options_.warmup;
  const absl::Time window_end = window_start + duration;
  WorkloadResult result;
  result.elapsed = duration;
  for (uint64_t i = 0;; ++i) {
    const absl::Time now = absl::Now();
    if (now >= window_end) break;
    const std::string name = absl::StrCat(prefix, i);
    // What Linux sends for open(O_CREAT|O_EXCL|O_RDWR, 0644): the file type
    // is part of the mode.
    ASSIGN_OR_RETURN(
        guest::CreateReply created,
        driver_->Create(kRootNodeId, name, O_RDWR | O_CREAT | O_EXCL,
                        S_IFREG | 0644, 022));
    const uint64_t node = created.entry.nodeid;
    RETURN_IF_ERROR(driver_->Getattr(node).status());
    RETURN_IF_ERROR(driver_->Release(node, created.open.fh));
    RETURN_IF_ERROR(driver_->Unlink(kRootNodeId, name));
    forgets.push_back(fuse_forget_one{node, 1});
    result.all_requests += 4;
    if (forgets.size() == kForgetBatch) {
      RETURN_IF_ERROR(driver_->BatchForget(forgets));
      forgets.clear();
      ++result.all_requests;
    }
    if (now >= window_start) result.requests += 3;
  }
  if (!forgets.empty()) {
    RETURN_IF_ERROR(driver_->BatchForget(forgets));
    ++result.all_requests;
  }
  return result;
}

}  // namespace vhostmig::bench
