#include "guest/virtio_fs_driver.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace vhostmig::guest {
namespace {

constexpr char kErrnoPayload[] = "vhostmig.fuse_errno";
constexpr uint32_t kPathMax = 4096;

template <typename T>
absl::Span<const uint8_t> Bytes(const T& v) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v),
                                   sizeof(T));
}
absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()),
                                   s.size());
}
// A FUSE name: the bytes plus the terminating NUL the protocol requires.
std::string CName(absl::string_view name) {
  std::string s(name);
  s.push_back('\0');
  return s;
}

const char* OpName(uint32_t opcode) {
  switch (opcode) {
    case FUSE_LOOKUP:
      return "FUSE_LOOKUP";
    case FUSE_FORGET:
      return "FUSE_FORGET";
    case FUSE_GETATTR:
      return "FUSE_GETATTR";
    case FUSE_SETATTR:
      return "FUSE_SETATTR";
    case FUSE_READLINK:
      return "FUSE_READLINK";
    case FUSE_SYMLINK:
      return "FUSE_SYMLINK";
    case FUSE_MKNOD:
      return "FUSE_MKNOD";
    case FUSE_MKDIR:
      return "FUSE_MKDIR";
    case FUSE_UNLINK:
      return "FUSE_UNLINK";
    case FUSE_RMDIR:
      return "FUSE_RMDIR";
    case FUSE_RENAME:
      return "FUSE_RENAME";
    case FUSE_LINK:
      return "FUSE_LINK";
    case FUSE_OPEN:
      return "FUSE_OPEN";
    case FUSE_READ:
      return "FUSE_READ";
    case FUSE_WRITE:
      return "FUSE_WRITE";
    case FUSE_STATFS:
      return "FUSE_STATFS";
    case FUSE_RELEASE:
      return "FUSE_RELEASE";
    case FUSE_FSYNC:
      return "FUSE_FSYNC";
    case FUSE_SETXATTR:
      return "FUSE_SETXATTR";
    case FUSE_GETXATTR:
      return "FUSE_GETXATTR";
    case FUSE_LISTXATTR:
      return "FUSE_LISTXATTR";
    case FUSE_REMOVEXATTR:
      return "FUSE_REMOVEXATTR";
    case FUSE_FLUSH:
      return "FUSE_FLUSH";
    case FUSE_INIT:
      return "FUSE_INIT";
    case FUSE_OPENDIR:
      return "FUSE_OPENDIR";
    case FUSE_READDIR:
      return "FUSE_READDIR";
    case FUSE_RELEASEDIR:
      return "FUSE_RELEASEDIR";
    case FUSE_FSYNCDIR:
      return "FUSE_FSYNCDIR";
    case FUSE_ACCESS:
      return "FUSE_ACCESS";
    case FUSE_CREATE:
      return "FUSE_CREATE";
    case FUSE_DESTROY:
      return "FUSE_DESTROY";
    case FUSE_BATCH_FORGET:
      return "FUSE_BATCH_FORGET";
    case FUSE_FALLOCATE:
      return "FUSE_FALLOCATE";
    case FUSE_READDIRPLUS:
      return "FUSE_READDIRPLUS";
    case FUSE_RENAME2:
      return "FUSE_RENAME2";
    case FUSE_LSEEK:
      return "FUSE_LSEEK";
    case FUSE_COPY_FILE_RANGE:
      return "FUSE_COPY_FILE_RANGE";
    case FUSE_SYNCFS:
      return "FUSE_SYNCFS";
    default:
      return "FUSE opcode";
  }
}

absl::Status FuseError(uint32_t opcode, int err) {
  absl::Status status(absl::ErrnoToStatusCode(err),
                      absl::StrCat(OpName(opcode), ": ", std::strerror(err),
                                   " (errno ", err, ")"));
  status.SetPayload(kErrnoPayload, absl::Cord(absl::StrCat(err)));
  return status;
}

}  // namespace

int FuseErrno(const absl::Status& status) {
  auto payload = status.GetPayload(kErrnoPayload);
  if (!payload.has_value()) return 0;
  int err = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &err)) return 0;
  return err;
}

VirtioFsDriver::VirtioFsDriver(GuestRam* ram, Transport* transport,
                               const VirtioFsDriverOptions& options)
    : ram_(ram), transport_(transport), options_(options) {}

VirtioFsDriver::~VirtioFsDriver() {
  // Requests still in flight keep their buffers: the device may yet write
  // them. Rings stay allocated for the same reason; GuestRam dies later.
}

absl::StatusOr<std::unique_ptr<VirtioFsDriver>> VirtioFsDriver::Create(
    GuestRam* ram, Transport* transport, const VirtioFsDriverOptions& options) {
  if (options.num_request_queues == 0) {
    return absl::InvalidArgumentError("virtio-fs needs a request queue");
  }
  if (options.use_indirect && !options.indirect_desc) {
    return absl::InvalidArgumentError(
        "use_indirect requires VIRTIO_RING_F_INDIRECT_DESC");
  }
  std::unique_ptr<VirtioFsDriver> driver(
      new VirtioFsDriver(ram, transport, options));
  const uint32_t n = 1 + options.num_request_queues;
  for (uint32_t q = 0; q < n; ++q) {
    const uint64_t bytes = vhost::DriverQueue::RingBytes(options.queue_size);
    ASSIGN_OR_RETURN(uint64_t gpa, ram->Allocate(bytes, 4096));
    auto queue = std::make_unique<vhost::DriverQueue>();
    RETURN_IF_ERROR(queue->Init(ram->memory(), gpa, options.queue_size,
                                options.event_idx, options.guest_dirty));
    driver->queues_.push_back(std::move(queue));
    driver->ring_gpas_.push_back(gpa);
  }
  driver->by_head_.resize(n);
  driver->completed_.resize(n);
  return driver;
}

absl::StatusOr<VirtioFsDriver::State> VirtioFsDriver::SaveState() const {
  if (!pending_.empty()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "driver state: %d requests in flight", pending_.size()));
  }
  State state;
  for (const auto& q : queues_) state.queues.push_back(q->SaveState());
  state.next_unique = next_unique_;
  state.init_out = init_out_;
  return state;
}

absl::Status VirtioFsDriver::RestoreState(const State& state) {
  if (!pending_.empty()) {
    return absl::FailedPreconditionError("restore with requests in flight");
  }
  if (state.queues.size() != queues_.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("driver state has %d queues, the driver %d",
                        state.queues.size(), queues_.size()));
  }
  for (size_t q = 0; q < queues_.size(); ++q) {
    RETURN_IF_ERROR(queues_[q]->RestoreState(
        ram_->memory(), ring_gpas_[q], options_.queue_size, options_.event_idx,
        state.queues[q], options_.guest_dirty));
  }
  next_unique_ = state.next_unique;
  init_out_ = state.init_out;
  return absl::OkStatus();
}

vhost::VringLayout VirtioFsDriver::QueueLayout(uint32_t q) const {
  vhost::VringLayout layout = queues_[q]->layout();
  layout.indirect_desc = options_.indirect_desc;
  return layout;
}

absl::StatusOr<uint64_t> VirtioFsDriver::Submit(const Request& request) {
  const uint32_t q = request.queue.value_or(RequestQueue());
  if (q >= queues_.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "queue %d out of range (%d queues)", q, queues_.size()));
  }
  vhost::DriverQueue& queue = *queues_[q];
  uint64_t body_len = 0;
  for (const auto& part : request.body) body_len += part.size();
  const uint64_t in_len = sizeof(fuse_in_header) + body_len;
  if (in_len > UINT32_MAX) return absl::InvalidArgumentError("request too big");

  Pending pending;
  pending.queue = q;
  pending.opcode = request.opcode;
  pending.expect_reply = request.expect_reply;
  pending.unique = next_unique_++;
  auto free_owned = [&]() {
    for (uint64_t gpa : pending.owned) ram_->Free(gpa);
  };

  // Readable: header and body in one buffer, then the caller's data.
  ASSIGN_OR_RETURN(uint64_t req_gpa, ram_->Allocate(in_len));
  pending.owned.push_back(req_gpa);
  std::vector<uint8_t> req(in_len);
  fuse_in_header in{};
  in.len = request.header_len.value_or(static_cast<uint32_t>(in_len + [&] {
    uint64_t extra = 0;
    for (const auto& b : request.request_data) extra += b.len;
    return extra;
  }()));
  in.opcode = request.opcode;
  in.unique = pending.unique;
  in.nodeid = request.nodeid;
  in.uid = options_.uid;
  in.gid = options_.gid;
  in.pid = options_.pid;
  std::memcpy(req.data(), &in, sizeof(in));
  size_t at = sizeof(in);
  for (const auto& part : request.body) {
    if (!part.empty()) std::memcpy(req.data() + at, part.data(), part.size());
    at += part.size();
  }
  absl::Status status = queue.WriteGuest(req_gpa, req.data(), req.size());
  if (!status.ok()) {
    free_owned();
    return status;
  }
  std::vector<vhost::GuestBuffer> readable = {
      {req_gpa, static_cast<uint32_t>(in_len)}};
  readable.insert(readable.end(), request.request_data.begin(),
                  request.request_data.end());

  // Writable: out header and reply, then the caller's data buffers.
  std::vector<vhost::GuestBuffer> writable;
  if (request.expect_reply) {
    pending.reply_len = sizeof(fuse_out_header) + request.reply_bytes;
    auto reply_gpa = ram_->Allocate(pending.reply_len);
    if (!reply_gpa.ok()) {
      free_owned();
      return reply_gpa.status();
    }
    pending.reply_gpa = *reply_gpa;
    pending.owned.push_back(*reply_gpa);
    writable.push_back({*reply_gpa, pending.reply_len});
    for (const auto& b : request.reply_data) {
      writable.push_back(b);
      pending.extra_capacity += b.len;
    }
  }

  std::optional<uint64_t> table;
  if (options_.use_indirect) {
    auto table_gpa =
        ram_->Allocate(16 * (readable.size() + writable.size()), 16);
    if (!table_gpa.ok()) {
      free_owned();
      return table_gpa.status();
    }
    pending.owned.push_back(*table_gpa);
    table = *table_gpa;
  }
  absl::StatusOr<uint16_t> head = queue.Add(readable, writable, table);
  if (!head.ok()) {
    free_owned();
    return head.status();
  }
  pending.head = *head;
  const uint64_t id = pending.unique;
  by_head_[q][*head] = id;
  pending_.emplace(id, std::move(pending));
  if (queue.NeedsKick()) RETURN_IF_ERROR(transport_->Kick(q));
  return id;
}

void VirtioFsDriver::Reap(uint32_t q) {
  while (std::optional<vhost::UsedElement> used = queues_[q]->PollUsed()) {
    auto it = by_head_[q].find(used->head);
    if (it == by_head_[q].end()) continue;  // DriverQueue vetted it; defensive
    Pending& p = pending_.at(it->second);
    p.done = true;
    p.used_len = used->len;
    completed_[q].push_back(it->second);
    by_head_[q].erase(it);
  }
}

absl::StatusOr<FuseReply> VirtioFsDriver::Finish(uint64_t id) {
  auto node = pending_.extract(id);
  Pending& p = node.mapped();
  auto& done = completed_[p.queue];
  done.erase(std::find(done.begin(), done.end(), id));
  FuseReply reply;
  reply.unique = id;
  reply.used_len = p.used_len;
  absl::Status status = absl::OkStatus();
  if (p.expect_reply) {
    // The device's reply is untrusted: check it against what we offered.
    fuse_out_header out{};
    if (p.used_len < sizeof(out)) {
      status = absl::DataLossError(absl::StrFormat(
          "%s: device used %d bytes, less than a fuse_out_header",
          OpName(p.opcode), p.used_len));
    } else if (!(status = ram_->memory().Read(p.reply_gpa, &out, sizeof(out)))
                    .ok()) {
    } else if (out.unique != id) {
      status = absl::DataLossError(
          absl::StrFormat("%s: reply unique %d, expected %d", OpName(p.opcode),
                          out.unique, id));
    } else if (out.len < sizeof(out) || out.len > p.used_len ||
               out.len > p.reply_len + p.extra_capacity) {
      status = absl::DataLossError(absl::StrFormat(
          "%s: reply length %d inconsistent (used %d, offered %d)",
          OpName(p.opcode), out.len, p.used_len,
          p.reply_len + p.extra_capacity));
    } else if (out.error > 0 || out.error <= -4096) {
      status = absl::DataLossError(
          absl::StrFormat("%s: reply error %d is not a negative errno",
                          OpName(p.opcode), out.error));
    } else {
      reply.error = out.error;
      const uint32_t in_reply = std::min(out.len, p.reply_len);
      reply.payload.resize(in_reply - sizeof(out));
      status = ram_->memory().Read(p.reply_gpa + sizeof(out),
                                   reply.payload.data(), reply.payload.size());
      reply.extra_len = out.len - in_reply;
    }
  }
  for (uint64_t gpa : p.owned) ram_->Free(gpa);
  if (!status.ok()) return status;
  return reply;
}

absl::StatusOr<FuseReply> VirtioFsDriver::Wait(uint64_t id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) {
    return absl::NotFoundError(absl::StrFormat("no request %d in flight", id));
  }
  const uint32_t q = it->second.queue;
  const absl::Time deadline = absl::Now() + options_.timeout;
  while (true) {
    Reap(q);
    if (pending_.at(id).done) return Finish(id);
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          absl::StrFormat("%s (request %d): no reply on queue %d within %s",
                          OpName(pending_.at(id).opcode), id, q,
                          absl::FormatDuration(options_.timeout)));
    }
    RETURN_IF_ERROR(transport_->WaitForUsed(q, left));
  }
}

absl::StatusOr<FuseReply> VirtioFsDriver::WaitAny(uint32_t q) {
  if (q >= queues_.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queue %d out of range", q));
  }
  const absl::Time deadline = absl::Now() + options_.timeout;
  while (true) {
    Reap(q);
    if (!completed_[q].empty()) return Finish(completed_[q].front());
    if (by_head_[q].empty()) {
      return absl::FailedPreconditionError(
          absl::StrFormat("no request in flight on queue %d", q));
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          absl::StrFormat("no reply on queue %d within %s", q,
                          absl::FormatDuration(options_.timeout)));
    }
    RETURN_IF_ERROR(transport_->WaitForUsed(q, left));
  }
}

absl::StatusOr<FuseReply> VirtioFsDriver::Send(
    uint32_t opcode, uint64_t nodeid, absl::Span<const uint8_t> payload,
    uint32_t reply_bytes, std::optional<uint32_t> queue,
    std::optional<uint32_t> header_len) {
  Request r;
  r.opcode = opcode;
  r.nodeid = nodeid;
  r.body = {payload};
  r.reply_bytes = reply_bytes;
  r.queue = queue;
  r.header_len = header_len;
  ASSIGN_OR_RETURN(uint64_t id, Submit(r));
  return Wait(id);
}

absl::StatusOr<FuseReply> VirtioFsDriver::Call(const Request& request) {
  ASSIGN_OR_RETURN(uint64_t id, Submit(request));
  ASSIGN_OR_RETURN(FuseReply reply, Wait(id));
  if (reply.error != 0) return FuseError(request.opcode, -reply.error);
  return reply;
}

template <typename T>
absl::StatusOr<T> VirtioFsDriver::CallFor(
    uint32_t opcode, uint64_t nodeid,
    std::vector<absl::Span<const uint8_t>> body, size_t min_size) {
  Request r;
  r.opcode = opcode;
  r.nodeid = nodeid;
  r.body = std::move(body);
  r.reply_bytes = sizeof(T);
  ASSIGN_OR_RETURN(FuseReply reply, Call(r));
  if (reply.payload.size() < min_size) {
    return absl::DataLossError(
        absl::StrFormat("%s: reply of %d bytes, expected at least %d",
                        OpName(opcode), reply.payload.size(), min_size));
  }
  T out{};
  std::memcpy(&out, reply.payload.data(),
              std::min(sizeof(T), reply.payload.size()));
  return out;
}

absl::Status VirtioFsDriver::CallNoReply(
    uint32_t opcode, uint64_t nodeid,
    std::vector<absl::Span<const uint8_t>> body) {
  Request r;
  r.opcode = opcode;
  r.nodeid = nodeid;
  r.body = std::move(body);
  r.reply_bytes = 0;
  return Call(r).status();
}

absl::StatusOr<fuse_init_out> VirtioFsDriver::Init(uint32_t flags,
                                                   uint32_t flags2,
                                                   uint32_t max_readahead) {
  fuse_init_in in{};
  in.major = FUSE_KERNEL_VERSION;
  in.minor = FUSE_KERNEL_MINOR_VERSION;
  in.max_readahead = max_readahead;
  in.flags = flags | (flags2 != 0 ? FUSE_INIT_EXT : 0);
  in.flags2 = flags2;
  // Servers older than 7.23 reply with the 24-byte compat struct.
  ASSIGN_OR_RETURN(init_out_,
                   CallFor<fuse_init_out>(FUSE_INIT, 0, {Bytes(in)},
                                          FUSE_COMPAT_22_INIT_OUT_SIZE));
  return init_out_;
}

absl::StatusOr<fuse_entry_out> VirtioFsDriver::Lookup(uint64_t parent,
                                                      absl::string_view name) {
  const std::string n = CName(name);
  return CallFor<fuse_entry_out>(FUSE_LOOKUP, parent, {Bytes(n)});
}

absl::Status VirtioFsDriver::Forget(uint64_t nodeid, uint64_t nlookup) {
  fuse_forget_in in{};
  in.nlookup = nlookup;
  Request r;
  r.opcode = FUSE_FORGET;
  r.nodeid = nodeid;
  r.body = {Bytes(in)};
  r.queue = 0;
  r.expect_reply = false;
  ASSIGN_OR_RETURN(uint64_t id, Submit(r));
  return Wait(id).status();
}

absl::Status VirtioFsDriver::BatchForget(
    const std::vector<fuse_forget_one>& forgets) {
  fuse_batch_forget_in in{};
  in.count = static_cast<uint32_t>(forgets.size());
  Request r;
  r.opcode = FUSE_BATCH_FORGET;
  r.body = {Bytes(in), absl::Span<const uint8_t>(
                           reinterpret_cast<const uint8_t*>(forgets.data()),
                           forgets.size() * sizeof(fuse_forget_one))};
  r.queue = 0;
  r.expect_reply = false;
  ASSIGN_OR_RETURN(uint64_t id, Submit(r));
  return Wait(id).status();
}

absl::StatusOr<fuse_attr_out> VirtioFsDriver::Getattr(
    uint64_t nodeid, std::optional<uint64_t> fh) {
  fuse_getattr_in in{};
  if (fh.has_value()) {
    in.getattr_flags = FUSE_GETATTR_FH;
    in.fh = *fh;
  }
  return CallFor<fuse_attr_out>(FUSE_GETATTR, nodeid, {Bytes(in)});
}

absl::StatusOr<fuse_attr_out> VirtioFsDriver::Setattr(
    uint64_t nodeid, const fuse_setattr_in& in) {
  return CallFor<fuse_attr_out>(FUSE_SETATTR, nodeid, {Bytes(in)});
}

absl::StatusOr<std::string> VirtioFsDriver::Readlink(uint64_t nodeid) {
  Request r;
  r.opcode = FUSE_READLINK;
  r.nodeid = nodeid;
  r.reply_bytes = kPathMax;
  ASSIGN_OR_RETURN(FuseReply reply, Call(r));
  return std::string(reply.payload.begin(), reply.payload.end());
}

absl::StatusOr<fuse_entry_out> VirtioFsDriver::Symlink(
    uint64_t parent, absl::string_view name, absl::string_view target) {
  // Linux order: the new entry's name, then the link target.
  const std::string n = CName(name);
  const std::string t = CName(target);
  return CallFor<fuse_entry_out>(FUSE_SYMLINK, parent, {Bytes(n), Bytes(t)});
}

absl::StatusOr<fuse_entry_out> VirtioFsDriver::Mknod(uint64_t parent,
                                                     absl::string_view name,
                                                     uint32_t mode,
                                                     uint32_t rdev,
                                                     uint32_t umask) {
  fuse_mknod_in in{};
  in.mode = mode;
  in.rdev = rdev;
  in.umask = umask;
  const std::string n = CName(name);
  return CallFor<fuse_entry_out>(FUSE_MKNOD, parent, {Bytes(in), Bytes(n)});
}

absl::StatusOr<fuse_entry_out> VirtioFsDriver::Mkdir(uint64_t parent,
                                                     absl::string_view name,
                                                     uint32_t mode,
                                                     uint32_t umask) {
  fuse_mkdir_in in{};
  in.mode = mode;
  in.umask = umask;
  const std::string n = CName(name);
  return CallFor<fuse_entry_out>(FUSE_MKDIR, parent, {Bytes(in), Bytes(n)});
}

absl::Status VirtioFsDriver::Unlink(uint64_t parent, absl::string_view name) {
  const std::string n = CName(name);
  return CallNoReply(FUSE_UNLINK, parent, {Bytes(n)});
}

absl::Status VirtioFsDriver::Rmdir(uint64_t parent, absl::string_view name) {
  const std::string n = CName(name);
  return CallNoReply(FUSE_RMDIR, parent, {Bytes(n)});
}

absl::Status VirtioFsDriver::Rename(uint64_t olddir, absl::string_view oldname,
                                    uint64_t newdir,
                                    absl::string_view newname) {
  fuse_rename_in in{};
  in.newdir = newdir;
  const std::string o = CName(oldname);
  const std::string n = CName(newname);
  return CallNoReply(FUSE_RENAME, olddir, {Bytes(in), Bytes(o), Bytes(n)});
}

absl::Status VirtioFsDriver::Rename2(uint64_t olddir, absl::string_view oldname,
                                     uint64_t newdir, absl::string_view newname,
                                     uint32_t flags) {
  fuse_rename2_in in{};
  in.newdir = newdir;
  in.flags = flags;
  const std::string o = CName(oldname);
  const std::string n = CName(newname);
  return CallNoReply(FUSE_RENAME2, olddir, {Bytes(in), Bytes(o), Bytes(n)});
}

absl::StatusOr<fuse_entry_out> VirtioFsDriver::Link(uint64_t oldnodeid,
                                                    uint64_t newparent,
                                                    absl::string_view newname) {
  fuse_link_in in{};
  in.oldnodeid = oldnodeid;
  const std::string n = CName(newname);
  return CallFor<fuse_entry_out>(FUSE_LINK, newparent, {Bytes(in), Bytes(n)});
}

absl::StatusOr<fuse_open_out> VirtioFsDriver::Open(uint64_t nodeid,
                                                   uint32_t flags) {
  fuse_open_in in{};
  in.flags = flags;
  return CallFor<fuse_open_out>(FUSE_OPEN, nodeid, {Bytes(in)});
}

absl::StatusOr<size_t> VirtioFsDriver::ReadToGuest(
    uint64_t nodeid, uint64_t fh, uint64_t offset,
    const std::vector<vhost::GuestBuffer>& dst, uint32_t flags) {
  uint64_t size = 0;
  for (const auto& b : dst) size += b.len;
  if (size > UINT32_MAX) return absl::InvalidArgumentError("read too large");
  fuse_read_in in{};
  in.fh = fh;
  in.offset = offset;
  in.size = static_cast<uint32_t>(size);
  in.flags = flags;
  // As Linux does: the out header in its own buffer, the data in the
  // page-cache buffers.
  Request r;
  r.opcode = FUSE_READ;
  r.nodeid = nodeid;
  r.body = {Bytes(in)};
  r.reply_bytes = 0;
  r.reply_data = dst;
  ASSIGN_OR_RETURN(FuseReply reply, Call(r));
  return reply.extra_len;
}

absl::StatusOr<size_t> VirtioFsDriver::Read(uint64_t nodeid, uint64_t fh,
                                            uint64_t offset,
                                            absl::Span<uint8_t> dst,
                                            uint32_t flags) {
  if (dst.empty()) return 0;
  if (dst.size() > UINT32_MAX)
    return absl::InvalidArgumentError("read too large");
  ASSIGN_OR_RETURN(uint64_t buf, ram_->Allocate(dst.size(), 4096));
  absl::StatusOr<size_t> n = ReadToGuest(
      nodeid, fh, offset, {{buf, static_cast<uint32_t>(dst.size())}}, flags);
  if (n.ok()) {
    absl::Status status = ram_->memory().Read(buf, dst.data(), *n);
    if (!status.ok()) n = status;
  }
  ram_->Free(buf);
  return n;
}

absl::StatusOr<uint32_t> VirtioFsDriver::Write(uint64_t nodeid, uint64_t fh,
                                               uint64_t offset,
                                               absl::Span<const uint8_t> data,
                                               uint32_t write_flags,
                                               uint32_t flags) {
  if (data.size() > UINT32_MAX)
    return absl::InvalidArgumentError("write too large");
  fuse_write_in in{};
  in.fh = fh;
  in.offset = offset;
  in.size = static_cast<uint32_t>(data.size());
  in.write_flags = write_flags;
  in.flags = flags;
  Request r;
  r.opcode = FUSE_WRITE;
  r.nodeid = nodeid;
  r.body = {Bytes(in)};
  r.reply_bytes = sizeof(fuse_write_out);
  uint64_t buf = 0;
  if (!data.empty()) {
    // The data in its own descriptor, as Linux sends page-cache pages.
    ASSIGN_OR_RETURN(buf, ram_->Allocate(data.size(), 4096));
    absl::Status status =
        queues_[RequestQueue()]->WriteGuest(buf, data.data(), data.size());
    if (!status.ok()) {
      ram_->Free(buf);
      return status;
    }
    r.request_data = {{buf, static_cast<uint32_t>(data.size())}};
  }
  absl::StatusOr<FuseReply> reply = Call(r);
  if (buf != 0) ram_->Free(buf);
  if (!reply.ok()) return reply.status();
  if (reply->payload.size() < sizeof(fuse_write_out)) {
    return absl::DataLossError("FUSE_WRITE: short fuse_write_out");
  }
  fuse_write_out out;
  std::memcpy(&out, reply->payload.data(), sizeof(out));
  return out.size;
}

absl::StatusOr<fuse_statfs_out> VirtioFsDriver::Statfs(uint64_t nodeid) {
  return CallFor<fuse_statfs_out>(FUSE_STATFS, nodeid, {});
}

absl::Status VirtioFsDriver::Release(uint64_t nodeid, uint64_t fh,
                                     uint32_t flags) {
  fuse_release_in in{};
  in.fh = fh;
  in.flags = flags;
  return CallNoReply(FUSE_RELEASE, nodeid, {Bytes(in)});
}

absl::Status VirtioFsDriver::Fsync(uint64_t nodeid, uint64_t fh,
                                   bool datasync) {
  fuse_fsync_in in{};
  in.fh = fh;
  in.fsync_flags = datasync ? 1 : 0;
  return CallNoReply(FUSE_FSYNC, nodeid, {Bytes(in)});
}

absl::Status VirtioFsDriver::Setxattr(uint64_t nodeid, absl::string_view name,
                                      absl::string_view value, uint32_t flags) {
  fuse_setxattr_in in{};
  in.size = static_cast<uint32_t>(value.size());
  in.flags = flags;
  // The extended struct only if the server agreed to it in INIT.
  const size_t in_size = (init_out_.flags & FUSE_SETXATTR_EXT)
                             ? sizeof(in)
                             : FUSE_COMPAT_SETXATTR_IN_SIZE;
  const std::string n = CName(name);
  return CallNoReply(
      FUSE_SETXATTR, nodeid,
      {Bytes(in).subspan(0, in_size), Bytes(n),
       absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(value.data()),
                                 value.size())});
}

absl::StatusOr<XattrReply> VirtioFsDriver::Getxattr(uint64_t nodeid,
                                                    absl::string_view name,
                                                    uint32_t size) {
  fuse_getxattr_in in{};
  in.size = size;
  const std::string n = CName(name);
  Request r;
  r.opcode = FUSE_GETXATTR;
  r.nodeid = nodeid;
  r.body = {Bytes(in), Bytes(n)};
  r.reply_bytes = size == 0 ? sizeof(fuse_getxattr_out) : size;
  ASSIGN_OR_RETURN(FuseReply reply, Call(r));
  XattrReply out;
  if (size == 0) {
    if (reply.payload.size() < sizeof(fuse_getxattr_out)) {
      return absl::DataLossError("FUSE_GETXATTR: short fuse_getxattr_out");
    }
    fuse_getxattr_out g;
    std::memcpy(&g, reply.payload.data(), sizeof(g));
    out.size = g.size;
  } else {
    out.size = reply.payload.size();
    out.value.assign(reply.payload.begin(), reply.payload.end());
  }
  return out;
}

absl::StatusOr<XattrReply> VirtioFsDriver::Listxattr(uint64_t nodeid,
                                                     uint32_t size) {
  fuse_getxattr_in in{};
  in.size = size;
  Request r;
  r.opcode = FUSE_LISTXATTR;
  r.nodeid = nodeid;
  r.body = {Bytes(in)};
  r.reply_bytes = size == 0 ? sizeof(fuse_getxattr_out) : size;
  ASSIGN_OR_RETURN(FuseReply reply, Call(r));
  XattrReply out;
  if (size == 0) {
    if (reply.payload.size() < sizeof(fuse_getxattr_out)) {
      return absl::DataLossError("FUSE_LISTXATTR: short fuse_getxattr_out");
    }
    fuse_getxattr_out g;
    std::memcpy(&g, reply.payload.data(), sizeof(g));
    out.size = g.size;
  } else {
    out.size = reply.payload.size();
    out.value.assign(reply.payload.begin(), reply.payload.end());
  }
  return out;
}

absl::Status VirtioFsDriver::Removexattr(uint64_t nodeid,
                                         absl::string_view name) {
  const std::string n = CName(name);
  return CallNoReply(FUSE_REMOVEXATTR, nodeid, {Bytes(n)});
}

absl::Status VirtioFsDriver::Flush(uint64_t nodeid, uint64_t fh,
                                   uint64_t lock_owner) {
  fuse_flush_in in{};
  in.fh = fh;
  in.lock_owner = lock_owner;
  return CallNoReply(FUSE_FLUSH, nodeid, {Bytes(in)});
}

absl::StatusOr<fuse_open_out> VirtioFsDriver::Opendir(uint64_t nodeid,
                                                      uint32_t flags) {
  fuse_open_in in{};
  in.flags = flags;
  return CallFor<fuse_open_out>(FUSE_OPENDIR, nodeid, {Bytes(in)});
}

absl::StatusOr<std::vector<DirEntry>> VirtioFsDriver::ParseDirents(
    absl::Span<const uint8_t> data) {
  std::vector<DirEntry> entries;
  size_t at = 0;
  while (at < data.size()) {
    if (data.size() - at < FUSE_NAME_OFFSET) {
      return absl::DataLossError(
          absl::StrFormat("dirent at byte %d: %d bytes left, header needs %d",
                          at, data.size() - at, FUSE_NAME_OFFSET));
    }
    fuse_dirent d;
    std::memcpy(&d, data.data() + at, FUSE_NAME_OFFSET);
    if (d.namelen == 0 || d.namelen > data.size() - at - FUSE_NAME_OFFSET) {
      return absl::DataLossError(absl::StrFormat(
          "dirent at byte %d: name length %d does not fit", at, d.namelen));
    }
    DirEntry e;
    e.ino = d.ino;
    e.off = d.off;
    e.type = d.type;
    e.name.assign(
        reinterpret_cast<const char*>(data.data() + at + FUSE_NAME_OFFSET),
        d.namelen);
    entries.push_back(std::move(e));
    at += std::min<size_t>(FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + d.namelen),
                           data.size() - at);
  }
  return entries;
}

absl::StatusOr<std::vector<DirEntryPlus>> VirtioFsDriver::ParseDirentsPlus(
    absl::Span<const uint8_t> data) {
  constexpr size_t kHeader = sizeof(fuse_entry_out) + FUSE_NAME_OFFSET;
  std::vector<DirEntryPlus> entries;
  size_t at = 0;
  while (at < data.size()) {
    if (data.size() - at < kHeader) {
      return absl::DataLossError(absl::StrFormat(
          "direntplus at byte %d: %d bytes left, header needs %d", at,
          data.size() - at, kHeader));
    }
    DirEntryPlus e;
    std::memcpy(&e.entry, data.data() + at, sizeof(fuse_entry_out));
    fuse_dirent d;
    std::memcpy(&d, data.data() + at + sizeof(fuse_entry_out),
                FUSE_NAME_OFFSET);
    if (d.namelen == 0 || d.namelen > data.size() - at - kHeader) {
      return absl::DataLossError(absl::StrFormat(
          "direntplus at byte %d: name length %d does not fit", at, d.namelen));
    }
    e.dirent.ino = d.ino;
    e.dirent.off = d.off;
    e.dirent.type = d.type;
    e.dirent.name.assign(
        reinterpret_cast<const char*>(data.data() + at + kHeader), d.namelen);
    entries.push_back(std::move(e));
    at += std::min<size_t>(FUSE_DIRENT_ALIGN(kHeader + d.namelen),
                           data.size() - at);
  }
  return entries;
}

absl::StatusOr<std::vector<DirEntry>> VirtioFsDriver::Readdir(uint64_t nodeid,
                                                              uint64_t fh,
                                                              uint64_t offset,
                                                              uint32_t size) {
  fuse_read_in in{};
  in.fh = fh;
  in.offset = offset;
  in.size = size;
  Request r;
  r.opcode = FUSE_READDIR;
  r.nodeid = nodeid;
  r.body = {Bytes(in)};
  r.reply_bytes = size;
  ASSIGN_OR_RETURN(FuseReply reply, Call(r));
  return ParseDirents(reply.payload);
}

absl::StatusOr<std::vector<DirEntryPlus>> VirtioFsDriver::Readdirplus(
    uint64_t nodeid, uint64_t fh, uint64_t offset, uint32_t size) {
  fuse_read_in in{};
  in.fh = fh;
  in.offset = offset;
  in.size = size;
  Request r;
  r.opcode = FUSE_READDIRPLUS;
  r.nodeid = nodeid;
  r.body = {Bytes(in)};
  r.reply_bytes = size;
  ASSIGN_OR_RETURN(FuseReply reply, Call(r));
  return ParseDirentsPlus(reply.payload);
}

absl::Status VirtioFsDriver::Releasedir(uint64_t nodeid, uint64_t fh) {
  fuse_release_in in{};
  in.fh = fh;
  return CallNoReply(FUSE_RELEASEDIR, nodeid, {Bytes(in)});
}

absl::Status VirtioFsDriver::Fsyncdir(uint64_t nodeid, uint64_t fh,
                                      bool datasync) {
  fuse_fsync_in in{};
  in.fh = fh;
  in.fsync_flags = datasync ? 1 : 0;
  return CallNoReply(FUSE_FSYNCDIR, nodeid, {Bytes(in)});
}

absl::Status VirtioFsDriver::Access(uint64_t nodeid, uint32_t mask) {
  fuse_access_in in{};
  in.mask = mask;
  return CallNoReply(FUSE_ACCESS, nodeid, {Bytes(in)});
}

absl::StatusOr<CreateReply> VirtioFsDriver::Create(uint64_t parent,
                                                   absl::string_view name,
                                                   uint32_t flags,
                                                   uint32_t mode,
                                                   uint32_t umask) {
  fuse_create_in in{};
  in.flags = flags;
  in.mode = mode;
  in.umask = umask;
  const std::string n = CName(name);
  struct Reply {
    fuse_entry_out entry;
    fuse_open_out open;
  };
  ASSIGN_OR_RETURN(Reply reply,
                   CallFor<Reply>(FUSE_CREATE, parent, {Bytes(in), Bytes(n)}));
  return CreateReply{reply.entry, reply.open};
}

absl::Status VirtioFsDriver::Fallocate(uint64_t nodeid, uint64_t fh,
                                       uint64_t offset, uint64_t length,
                                       uint32_t mode) {
  fuse_fallocate_in in{};
  in.fh = fh;
  in.offset = offset;
  in.length = length;
  in.mode = mode;
  return CallNoReply(FUSE_FALLOCATE, nodeid, {Bytes(in)});
}

absl::StatusOr<uint64_t> VirtioFsDriver::Lseek(uint64_t nodeid, uint64_t fh,
                                               uint64_t offset,
                                               uint32_t whence) {
  fuse_lseek_in in{};
  in.fh = fh;
  in.offset = offset;
  in.whence = whence;
  ASSIGN_OR_RETURN(fuse_lseek_out out,
                   CallFor<fuse_lseek_out>(FUSE_LSEEK, nodeid, {Bytes(in)}));
  return out.offset;
}

absl::StatusOr<uint32_t> VirtioFsDriver::CopyFileRange(
    uint64_t nodeid_in, uint64_t fh_in, uint64_t off_in, uint64_t nodeid_out,
    uint64_t fh_out, uint64_t off_out, uint64_t len, uint64_t flags) {
  fuse_copy_file_range_in in{};
  in.fh_in = fh_in;
  in.off_in = off_in;
  in.nodeid_out = nodeid_out;
  in.fh_out = fh_out;
  in.off_out = off_out;
  in.len = len;
  in.flags = flags;
  ASSIGN_OR_RETURN(
      fuse_write_out out,
      CallFor<fuse_write_out>(FUSE_COPY_FILE_RANGE, nodeid_in, {Bytes(in)}));
  return out.size;
}

absl::Status VirtioFsDriver::Syncfs(uint64_t nodeid) {
  fuse_syncfs_in in{};
  return CallNoReply(FUSE_SYNCFS, nodeid, {Bytes(in)});
}

absl::Status VirtioFsDriver::Destroy() {
  return CallNoReply(FUSE_DESTROY, 0, {});
}

}  // namespace vhostmig::guest
