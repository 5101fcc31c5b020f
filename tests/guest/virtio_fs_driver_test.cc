// The synthetic guest's virtio-fs driver over the in-process loopback,
// against a small fake FUSE device.
#include "guest/virtio_fs_driver.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fuse.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "guest/loopback.h"
#include "tests/guest/fake_fs_device.h"

namespace vhostmig::guest {
namespace {

using testing::FakeFsDevice;
using testing::SeenRequest;

struct Params {
  bool event_idx;
  bool indirect;
};

class VirtioFsDriverTest : public ::testing::TestWithParam<Params> {
 protected:
  void SetUp() override {
    LoopbackFsOptions options;
    // Two regions with a hole, to exercise translation across both.
    options.ram.region_sizes = {4 << 20, 4 << 20};
    options.want_event_idx = GetParam().event_idx;
    options.want_indirect_desc = GetParam().indirect;
    options.driver.use_indirect = GetParam().indirect;
    options.driver.num_request_queues = 2;
    options.driver.queue_size = 64;
    auto fs = LoopbackFs::Create(&device_, options);
    ASSERT_TRUE(fs.ok()) << fs.status();
    fs_ = *std::move(fs);
    baseline_bytes_ = fs_->ram().allocated_bytes();
  }

  VirtioFsDriver& d() { return fs_->driver(); }
  const SeenRequest& last() { return device_.seen.back(); }

  FakeFsDevice device_;
  std::unique_ptr<LoopbackFs> fs_;
  uint64_t baseline_bytes_ = 0;
};

INSTANTIATE_TEST_SUITE_P(
    RingFeatures, VirtioFsDriverTest,
    ::testing::Values(Params{false, false}, Params{true, false},
                      Params{true, true}),
    [](const auto& info) {
      return std::string(info.param.event_idx ? "EventIdx" : "NoEventIdx") +
             (info.param.indirect ? "Indirect" : "Direct");
    });

TEST_P(VirtioFsDriverTest, CreateNegotiatesRingFeaturesWithTheDevice) {
  EXPECT_EQ(d().num_queues(), 3u);
  EXPECT_TRUE(device_.acked & (1ull << 32));
  EXPECT_EQ(d().options().event_idx, GetParam().event_idx);
  EXPECT_EQ(d().QueueLayout(1).indirect_desc, GetParam().indirect);
}

TEST_P(VirtioFsDriverTest, InitRecordsNegotiatedFlagsAndMaxWrite) {
  auto init = d().Init(FUSE_ASYNC_READ | FUSE_POSIX_LOCKS);
  ASSERT_TRUE(init.ok()) << init.status();
  EXPECT_EQ(init->major, 7u);
  EXPECT_EQ(d().max_write(), 128u * 1024);
  EXPECT_EQ(d().init_out().flags, static_cast<uint32_t>(FUSE_ASYNC_READ));
  const auto in = *reinterpret_cast<const fuse_init_in*>(last().body.data());
  EXPECT_EQ(in.major, static_cast<uint32_t>(FUSE_KERNEL_VERSION));
  EXPECT_EQ(in.minor, static_cast<uint32_t>(FUSE_KERNEL_MINOR_VERSION));
  EXPECT_EQ(last().header.opcode, static_cast<uint32_t>(FUSE_INIT));
  EXPECT_EQ(last().queue, 1);
}

TEST_P(VirtioFsDriverTest, LookupReturnsTheEntry) {
  device_.file = "12345";
  auto e = d().Lookup(FUSE_ROOT_ID, "hello");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->nodeid, 2u);
  EXPECT_EQ(e->attr.size, 5u);
  EXPECT_EQ(last().header.nodeid, FUSE_ROOT_ID);
  EXPECT_EQ(std::string(last().body.begin(), last().body.end()),
            std::string("hello\0", 6));
}

TEST_P(VirtioFsDriverTest, FuseErrorBecomesStatusCarryingTheErrno) {
  auto e = d().Lookup(FUSE_ROOT_ID, "missing");
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(FuseErrno(e.status()), ENOENT);
  EXPECT_NE(e.status().message().find("FUSE_LOOKUP"), std::string::npos);
  EXPECT_EQ(FuseErrno(absl::NotFoundError("not from FUSE")), 0);
  EXPECT_EQ(fs_->ram().allocated_bytes(), baseline_bytes_);
}

TEST_P(VirtioFsDriverTest, WriteThenReadRoundTripsData) {
  std::string data(300 * 1024, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  auto n = d().Write(
      2, 7, 0,
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()),
                          data.size()));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, data.size());
  EXPECT_EQ(device_.file, data);
  // Header + write_in in one buffer, the data in its own descriptor(s).
  EXPECT_GE(last().readable_buffers, 2u);

  std::vector<uint8_t> back(400 * 1024);
  auto r = d().Read(2, 7, 1000, absl::MakeSpan(back));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(*r, data.size() - 1000);
  EXPECT_EQ(std::memcmp(back.data(), data.data() + 1000, *r), 0);
  EXPECT_EQ(fs_->ram().allocated_bytes(), baseline_bytes_);
}

TEST_P(VirtioFsDriverTest, ReadToGuestPlacesDataInCallerBuffers) {
  device_.file = std::string(10000, 'z');
  auto a = fs_->ram().Allocate(4096, 4096);
  auto b = fs_->ram().Allocate(8192, 4096);
  ASSERT_TRUE(a.ok() && b.ok());
  auto n = d().ReadToGuest(2, 7, 0, {{*a, 4096}, {*b, 8192}});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 10000u);
  std::string got(10000 - 4096, '\0');
  ASSERT_TRUE(fs_->ram().memory().Read(*b, got.data(), got.size()).ok());
  EXPECT_EQ(got, std::string(10000 - 4096, 'z'));
  fs_->ram().Free(*a);
  fs_->ram().Free(*b);
}

TEST_P(VirtioFsDriverTest, ForgetsGoToTheHiprioQueueWithoutReply) {
  ASSERT_TRUE(d().Forget(5, 3).ok());
  EXPECT_EQ(last().queue, 0);
  EXPECT_EQ(last().header.opcode, static_cast<uint32_t>(FUSE_FORGET));
  EXPECT_EQ(last().writable_len, 0u);
  ASSERT_TRUE(d().BatchForget({{5, 1}, {6, 2}}).ok());
  EXPECT_EQ(last().queue, 0);
  EXPECT_EQ(last().body.size(),
            sizeof(fuse_batch_forget_in) + 2 * sizeof(fuse_forget_one));
  EXPECT_EQ(fs_->ram().allocated_bytes(), baseline_bytes_);
}

TEST_P(VirtioFsDriverTest, ReaddirAndReaddirplusAreParsed) {
  auto entries = d().Readdir(1, 7, 0);
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].name, ".");
  EXPECT_EQ((*entries)[1].name, "hello");
  EXPECT_EQ((*entries)[1].ino, 2u);
  EXPECT_EQ((*entries)[1].type, static_cast<uint32_t>(DT_REG));
  EXPECT_EQ((*entries)[1].off, 2u);

  auto plus = d().Readdirplus(1, 7, 1);
  ASSERT_TRUE(plus.ok()) << plus.status();
  ASSERT_EQ(plus->size(), 1u);
  EXPECT_EQ((*plus)[0].dirent.name, "hello");
  EXPECT_EQ((*plus)[0].entry.nodeid, 2u);
}

TEST_P(VirtioFsDriverTest, XattrSizeProbeAndValue) {
  auto size = d().Getxattr(2, "user.x", 0);
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->size, 5u);
  auto value = d().Getxattr(2, "user.x", 64);
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(value->value, "value");
  EXPECT_EQ(FuseErrno(d().Getxattr(2, "user.x", 2).status()), ERANGE);
  auto list = d().Listxattr(2, 64);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->value, std::string("user.a\0user.b\0", 14));
}

// Every operation reaches the device with its opcode and a request body of
// the right shape.
TEST_P(VirtioFsDriverTest, EveryOperationSendsItsOpcode) {
  struct Case {
    uint32_t opcode;
    size_t body_size;  // bytes after fuse_in_header
    std::function<absl::Status()> call;
  };
  auto st = [](auto&& v) { return v.status(); };
  const std::vector<Case> cases = {
      {FUSE_GETATTR, sizeof(fuse_getattr_in),
       [&] { return st(d().Getattr(2)); }},
      {FUSE_SETATTR, sizeof(fuse_setattr_in),
       [&] { return st(d().Setattr(2, fuse_setattr_in{})); }},
      {FUSE_READLINK, 0, [&] { return st(d().Readlink(2)); }},
      {FUSE_SYMLINK, 4 + 7,
       [&] { return st(d().Symlink(1, "abc", "target")); }},
      {FUSE_MKNOD, sizeof(fuse_mknod_in) + 2,
       [&] { return st(d().Mknod(1, "n", S_IFIFO | 0600, 0)); }},
      {FUSE_MKDIR, sizeof(fuse_mkdir_in) + 2,
       [&] { return st(d().Mkdir(1, "d", 0755)); }},
      {FUSE_UNLINK, 2, [&] { return d().Unlink(1, "u"); }},
      {FUSE_RMDIR, 2, [&] { return d().Rmdir(1, "r"); }},
      {FUSE_RENAME, sizeof(fuse_rename_in) + 2 + 3,
       [&] { return d().Rename(1, "a", 1, "bb"); }},
      {FUSE_RENAME2, sizeof(fuse_rename2_in) + 2 + 3,
       [&] { return d().Rename2(1, "a", 1, "bb", 1); }},
      {FUSE_LINK, sizeof(fuse_link_in) + 2,
       [&] { return st(d().Link(2, 1, "l")); }},
      {FUSE_OPEN, sizeof(fuse_open_in),
       [&] { return st(d().Open(2, O_RDWR)); }},
      {FUSE_STATFS, 0, [&] { return st(d().Statfs(1)); }},
      {FUSE_RELEASE, sizeof(fuse_release_in),
       [&] { return d().Release(2, 7); }},
      {FUSE_FSYNC, sizeof(fuse_fsync_in),
       [&] { return d().Fsync(2, 7, true); }},
      {FUSE_SETXATTR, FUSE_COMPAT_SETXATTR_IN_SIZE + 7 + 3,
       [&] { return d().Setxattr(2, "user.x", "val"); }},
      {FUSE_REMOVEXATTR, 7, [&] { return d().Removexattr(2, "user.x"); }},
      {FUSE_FLUSH, sizeof(fuse_flush_in), [&] { return d().Flush(2, 7); }},
      {FUSE_OPENDIR, sizeof(fuse_open_in), [&] { return st(d().Opendir(1)); }},
      {FUSE_RELEASEDIR, sizeof(fuse_release_in),
       [&] { return d().Releasedir(1, 7); }},
      {FUSE_FSYNCDIR, sizeof(fuse_fsync_in),
       [&] { return d().Fsyncdir(1, 7); }},
      {FUSE_ACCESS, sizeof(fuse_access_in), [&] { return d().Access(2, 4); }},
      {FUSE_CREATE, sizeof(fuse_create_in) + 2,
       [&] { return st(d().Create(1, "c", O_RDWR, 0600)); }},
      {FUSE_FALLOCATE, sizeof(fuse_fallocate_in),
       [&] { return d().Fallocate(2, 7, 0, 4096); }},
      {FUSE_LSEEK, sizeof(fuse_lseek_in),
       [&] { return st(d().Lseek(2, 7, 9, 3)); }},
      {FUSE_COPY_FILE_RANGE, sizeof(fuse_copy_file_range_in),
       [&] { return st(d().CopyFileRange(2, 7, 0, 4, 8, 0, 100)); }},
      {FUSE_SYNCFS, sizeof(fuse_syncfs_in), [&] { return d().Syncfs(1); }},
      {FUSE_DESTROY, 0, [&] { return d().Destroy(); }},
  };
  for (const Case& c : cases) {
    absl::Status status = c.call();
    EXPECT_TRUE(status.ok()) << c.opcode << ": " << status;
    EXPECT_EQ(last().header.opcode, c.opcode);
    EXPECT_EQ(last().body.size(), c.body_size) << "opcode " << c.opcode;
    EXPECT_EQ(last().header.len, last().readable_len) << "opcode " << c.opcode;
  }
  EXPECT_EQ(*d().Lseek(2, 7, 9, 3), 10u);
  EXPECT_EQ(*d().CopyFileRange(2, 7, 0, 4, 8, 0, 100), 100u);
  EXPECT_EQ(*d().Readlink(2), "target");
  EXPECT_EQ(d().Create(1, "c", O_RDWR, 0600)->open.fh, 8u);
  EXPECT_EQ(fs_->ram().allocated_bytes(), baseline_bytes_);
}

TEST_P(VirtioFsDriverTest, ManyRequestsInFlightCompleteAndFreeTheirBuffers) {
  std::vector<uint64_t> ids;
  const std::string data = "x";
  for (int i = 0; i < 32; ++i) {
    VirtioFsDriver::Request r;
    r.opcode = FUSE_GETATTR;
    r.nodeid = 100 + i;
    static const fuse_getattr_in in{};
    r.body = {
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(&in), sizeof(in))};
    r.reply_bytes = sizeof(fuse_attr_out);
    auto id = d().Submit(r);
    ASSERT_TRUE(id.ok()) << "request " << i << ": " << id.status();
    ids.push_back(*id);
  }
  EXPECT_EQ(d().in_flight(), 32u);
  // Reap half by id (out of order), the rest with WaitAny.
  for (int i = 31; i >= 16; --i) {
    auto reply = d().Wait(ids[i]);
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(reply->unique, ids[i]);
    fuse_attr_out a;
    std::memcpy(&a, reply->payload.data(), sizeof(a));
    EXPECT_EQ(a.attr.ino, 100u + i);
  }
  for (int i = 0; i < 16; ++i) {
    auto reply = d().WaitAny(1);
    ASSERT_TRUE(reply.ok()) << reply.status();
  }
  EXPECT_EQ(d().in_flight(), 0u);
  EXPECT_EQ(d().WaitAny(1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(fs_->ram().allocated_bytes(), baseline_bytes_);
}

TEST_P(VirtioFsDriverTest, SendRawRequestWithLyingHeaderLength) {
  const uint8_t junk[3] = {1, 2, 3};
  auto reply = d().Send(FUSE_GETATTR, 2, junk, 64, std::nullopt, 9999);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->error, -EINVAL) << "raw Send keeps the FUSE error raw";
  EXPECT_EQ(last().header.len, 9999u);
  auto unknown = d().Send(999, 0, {}, 0);
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->error, -ENOSYS);
}

TEST_P(VirtioFsDriverTest, DeviceCompletingNothingGivesDeadlineExceeded) {
  device_.misbehave = FakeFsDevice::Misbehave::kIgnoreKicks;
  auto e = d().Lookup(1, "hello");
  EXPECT_EQ(e.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(e.status().message().find("completed nothing"), std::string::npos);
}

TEST_P(VirtioFsDriverTest, HostileRepliesAreDataLoss) {
  for (auto m : {FakeFsDevice::Misbehave::kWrongUnique,
                 FakeFsDevice::Misbehave::kLenBeyondUsed,
                 FakeFsDevice::Misbehave::kPositiveError,
                 FakeFsDevice::Misbehave::kShortReply}) {
    device_.misbehave = m;
    auto e = d().Getattr(2);
    EXPECT_EQ(e.status().code(), absl::StatusCode::kDataLoss)
        << static_cast<int>(m) << ": " << e.status();
  }
  EXPECT_EQ(fs_->ram().allocated_bytes(), baseline_bytes_);
}

TEST(DirentParsingTest, RejectsTruncatedAndOversizedNames) {
  std::vector<uint8_t> buf(FUSE_NAME_OFFSET + 8, 0);
  fuse_dirent d{};
  d.ino = 1;
  d.namelen = 100;  // more than what follows
  std::memcpy(buf.data(), &d, FUSE_NAME_OFFSET);
  EXPECT_EQ(VirtioFsDriver::ParseDirents(buf).status().code(),
            absl::StatusCode::kDataLoss);
  d.namelen = 0;
  std::memcpy(buf.data(), &d, FUSE_NAME_OFFSET);
  EXPECT_FALSE(VirtioFsDriver::ParseDirents(buf).ok());
  EXPECT_FALSE(
      VirtioFsDriver::ParseDirents(absl::MakeConstSpan(buf).subspan(0, 5))
          .ok());
  EXPECT_FALSE(VirtioFsDriver::ParseDirentsPlus(buf).ok());
  EXPECT_TRUE(VirtioFsDriver::ParseDirents({}).ok());
}

TEST(LoopbackTest, DeviceWritesAreLoggedAndDriverWritesGoToGuestLog) {
  FakeFsDevice device;
  LoopbackFsOptions options;
  options.ram.region_sizes = {2 << 20};
  auto guest_dirty = *vhost::DirtyLog::Create(2 << 20);
  options.driver.guest_dirty = guest_dirty;
  auto fs = LoopbackFs::Create(&device, options);
  ASSERT_TRUE(fs.ok()) << fs.status();
  auto device_log = *vhost::DirtyLog::Create(2 << 20);
  (*fs)->loopback().SetLog(device_log);
  guest_dirty->Harvest([](uint64_t) {});

  device.file = std::string(8192, 'q');
  auto buf = (*fs)->ram().Allocate(8192, 4096);
  ASSERT_TRUE(buf.ok());
  auto n = (*fs)->driver().ReadToGuest(2, 7, 0, {{*buf, 8192}});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_TRUE(device_log->IsPageDirty(*buf / 4096));
  EXPECT_TRUE(device_log->IsPageDirty(*buf / 4096 + 1));
  const uint64_t used_page = (*fs)->driver().QueueLayout(1).used_gpa / 4096;
  EXPECT_TRUE(device_log->IsPageDirty(used_page));
  EXPECT_FALSE(guest_dirty->IsPageDirty(*buf / 4096))
      << "the device, not the guest, wrote the data";
  const uint64_t avail_page = (*fs)->driver().QueueLayout(1).avail_gpa / 4096;
  EXPECT_TRUE(guest_dirty->IsPageDirty(avail_page));
}

TEST(LoopbackTest, CountsInterruptsThroughNotifyIfNeeded) {
  FakeFsDevice device;
  auto fs = LoopbackFs::Create(&device);
  ASSERT_TRUE(fs.ok()) << fs.status();
  ASSERT_TRUE((*fs)->driver().Getattr(1).ok());
  EXPECT_EQ((*fs)->loopback().interrupts(1), 1u);
  EXPECT_GE((*fs)->loopback().process_calls(1), 1u);
}

TEST(LoopbackTest, CreateRejectsDeviceWithoutRequestQueue) {
  FakeFsDevice device;
  device.queues = 1;
  EXPECT_EQ(LoopbackFs::Create(&device).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vhostmig::guest
