// Data requests through the synthetic guest: OPEN, READ, WRITE and the rest
// of the open-file family, including batching of a queue pass's transfers.
#include <sys/stat.h>

#include "fs_device/uring_data_path.h"
#include "tests/fs_device/fs_test_fixture.h"

namespace vhostmig::fs {
namespace {

using DataTest = FsDeviceTest;

TEST_F(DataTest, ReadReturnsFileContentsAndStopsAtEof) {
  WriteHostFile("f", "hello world");
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  auto o = driver().Open(f, O_RDONLY);
  ASSERT_TRUE(o.ok()) << o.status();
  std::vector<uint8_t> buf(64);
  auto n = driver().Read(f, o->fh, 6, absl::MakeSpan(buf));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(std::string(buf.begin(), buf.begin() + *n), "world");
  n = driver().Read(f, o->fh, 100, absl::MakeSpan(buf));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0u);
}

TEST_F(DataTest, LargeWriteAndReadRoundTripThroughGuestMemory) {
  auto c = driver().Create(FUSE_ROOT_ID, "big", O_RDWR, 0644);
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<uint8_t> data(512 * 1024);
  for (size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<uint8_t>(i * 7);
  auto w = driver().Write(c->entry.nodeid, c->open.fh, 4096, data);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(*w, data.size());
  std::vector<uint8_t> back(data.size());
  auto r =
      driver().Read(c->entry.nodeid, c->open.fh, 4096, absl::MakeSpan(back));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(*r, data.size());
  EXPECT_EQ(back, data);
  struct stat st;
  ASSERT_EQ(stat(HostPath("big").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(4096 + data.size()));
}

TEST_F(DataTest, OpenWithTruncEmptiesTheFile) {
  WriteHostFile("f", "old contents");
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  auto o = driver().Open(f, O_WRONLY | O_TRUNC);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(ReadHostFile("f"), "");
}

TEST_F(DataTest, OpenOfADirectoryFailsWithEisdir) {
  ASSERT_EQ(mkdir(HostPath("d").c_str(), 0755), 0);
  EXPECT_EQ(
      guest::FuseErrno(
          driver().Open(MustLookup(FUSE_ROOT_ID, "d"), O_RDONLY).status()),
      EISDIR);
}

TEST_F(DataTest, ReleaseClosesTheHandle) {
  WriteHostFile("f", "x");
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  auto o = driver().Open(f, O_RDONLY);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(fs().handles().size(), 1u);
  ASSERT_TRUE(driver().Release(f, o->fh).ok());
  EXPECT_EQ(fs().handles().size(), 0u);
  std::vector<uint8_t> buf(4);
  EXPECT_EQ(guest::FuseErrno(
                driver().Read(f, o->fh, 0, absl::MakeSpan(buf)).status()),
            EBADF);
  EXPECT_EQ(guest::FuseErrno(driver().Release(f, o->fh)), EBADF);
}

TEST_F(DataTest, FlushFsyncAndFdatasyncSucceedOnAnOpenFile) {
  auto c = driver().Create(FUSE_ROOT_ID, "f", O_RDWR, 0644);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(driver().Flush(c->entry.nodeid, c->open.fh).ok());
  EXPECT_TRUE(driver().Fsync(c->entry.nodeid, c->open.fh, false).ok());
  EXPECT_TRUE(driver().Fsync(c->entry.nodeid, c->open.fh, true).ok());
}

TEST_F(DataTest, FallocateExtendsTheFile) {
  auto c = driver().Create(FUSE_ROOT_ID, "f", O_RDWR, 0644);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(driver().Fallocate(c->entry.nodeid, c->open.fh, 0, 65536).ok());
  struct stat st;
  ASSERT_EQ(stat(HostPath("f").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 65536);
}

TEST_F(DataTest, LseekFindsDataAndHoles) {
  auto c = driver().Create(FUSE_ROOT_ID, "f", O_RDWR, 0644);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(
      driver().Write(c->entry.nodeid, c->open.fh, 1 << 20, Bytes("x")).ok());
  auto data = driver().Lseek(c->entry.nodeid, c->open.fh, 0, SEEK_DATA);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_GT(*data, 0u);
  auto hole = driver().Lseek(c->entry.nodeid, c->open.fh, 0, SEEK_HOLE);
  ASSERT_TRUE(hole.ok()) << hole.status();
  EXPECT_EQ(*hole, 0u);
  EXPECT_EQ(
      guest::FuseErrno(
          driver().Lseek(c->entry.nodeid, c->open.fh, 0, SEEK_CUR).status()),
      EINVAL);
}

TEST_F(DataTest, CopyFileRangeCopiesBetweenHandles) {
  WriteHostFile("src", "copy me please");
  const uint64_t src = MustLookup(FUSE_ROOT_ID, "src");
  auto in = driver().Open(src, O_RDONLY);
  ASSERT_TRUE(in.ok());
  auto out = driver().Create(FUSE_ROOT_ID, "dst", O_RDWR, 0644);
  ASSERT_TRUE(out.ok());
  auto n = driver().CopyFileRange(src, in->fh, 5, out->entry.nodeid,
                                  out->open.fh, 0, 100);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 9u);
  EXPECT_EQ(ReadHostFile("dst"), "me please");
}

TEST_F(DataTest, ConcurrentRequestsOfOnePassAreAllCompletedCorrectly) {
  // Eight files written and read back with all requests in flight at once:
  // the loopback runs the device once for the whole batch.
  constexpr int kFiles = 8;
  std::vector<guest::CreateReply> files;
  for (int i = 0; i < kFiles; ++i) {
    auto c =
        driver().Create(FUSE_ROOT_ID, "f" + std::to_string(i), O_RDWR, 0644);
    ASSERT_TRUE(c.ok()) << c.status();
    files.push_back(*c);
  }
  std::vector<std::string> contents;
  std::vector<fuse_write_in> writes(kFiles);
  std::vector<uint64_t> ids;
  for (int i = 0; i < kFiles; ++i) {
    contents.push_back(std::string(1000 + i, static_cast<char>('a' + i)));
    writes[i].fh = files[i].open.fh;
    writes[i].size = contents[i].size();
    guest::VirtioFsDriver::Request req;
    req.opcode = FUSE_WRITE;
    req.nodeid = files[i].entry.nodeid;
    req.body = {
        absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&writes[i]),
                                  sizeof(writes[i])),
        absl::Span<const uint8_t>(
            reinterpret_cast<const uint8_t*>(contents[i].data()),
            contents[i].size())};
    req.reply_bytes = sizeof(fuse_write_out);
    auto id = driver().Submit(req);
    ASSERT_TRUE(id.ok()) << id.status();
    ids.push_back(*id);
  }
  for (int i = 0; i < kFiles; ++i) {
    auto r = driver().Wait(ids[i]);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->error, 0);
    fuse_write_out out{};
    ASSERT_GE(r->payload.size(), sizeof(out));
    std::memcpy(&out, r->payload.data(), sizeof(out));
    EXPECT_EQ(out.size, contents[i].size());
  }
  for (int i = 0; i < kFiles; ++i) {
    EXPECT_EQ(ReadHostFile("f" + std::to_string(i)), contents[i]);
  }
}

TEST_F(DataTest, UsedLengthIsExactlyTheReplyBytes) {
  WriteHostFile("f", "12345");
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  auto o = driver().Open(f, O_RDONLY);
  ASSERT_TRUE(o.ok());
  fuse_read_in in{};
  in.fh = o->fh;
  in.size = 4096;
  auto r = driver().Send(FUSE_READ, f, StructBytes(in), 4096);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->error, 0);
  EXPECT_EQ(r->used_len, sizeof(fuse_out_header) + 5);
}

TEST(UringDataPathTest, OneSubmissionCarriesAWholeBatch) {
  auto path = UringDataPath::Create(64);
  if (!path.ok()) GTEST_SKIP() << "io_uring unavailable: " << path.status();
  TempDir dir;
  const std::string file = dir.path() + "/f";
  auto open_file = std::make_shared<OpenFile>();
  open_file->fd.reset(open(file.c_str(), O_RDWR | O_CREAT, 0644));
  ASSERT_TRUE(open_file->fd.valid());
  std::vector<std::string> chunks;
  std::vector<DataTransfer> transfers(10);
  std::vector<DataTransfer*> ptrs;
  for (int i = 0; i < 10; ++i) {
    chunks.push_back(std::string(100, static_cast<char>('0' + i)));
    transfers[i].kind = DataTransfer::Kind::kWrite;
    transfers[i].file = open_file;
    transfers[i].offset = 100 * i;
    transfers[i].iov = {iovec{chunks[i].data(), chunks[i].size()}};
    ptrs.push_back(&transfers[i]);
  }
  (*path)->Run(ptrs);
  EXPECT_EQ((*path)->submit_calls(), 1u);
  for (const DataTransfer& t : transfers) EXPECT_EQ(t.result, 100);
  // More transfers than ring entries: ring-sized rounds, all completed.
  std::vector<DataTransfer> many(150);
  std::vector<DataTransfer*> many_ptrs;
  std::vector<std::vector<char>> bufs(150, std::vector<char>(10));
  for (int i = 0; i < 150; ++i) {
    many[i].kind = DataTransfer::Kind::kRead;
    many[i].file = open_file;
    many[i].offset = i;
    many[i].iov = {iovec{bufs[i].data(), bufs[i].size()}};
    many_ptrs.push_back(&many[i]);
  }
  (*path)->Run(many_ptrs);
  for (int i = 0; i < 150; ++i) EXPECT_EQ(many[i].result, 10) << i;
  EXPECT_EQ(std::string(bufs[105].begin(), bufs[105].end()),
            std::string(10, '1'));
}

class SyncDataPathDeviceTest : public FsDeviceTest {
 protected:
  FsConfig Config() override {
    FsConfig c = FsDeviceTest::Config();
    c.use_io_uring = false;
    return c;
  }
};

TEST_F(SyncDataPathDeviceTest, WriteAndReadWorkWithoutIoUring) {
  auto c = driver().Create(FUSE_ROOT_ID, "f", O_RDWR, 0644);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(
      driver().Write(c->entry.nodeid, c->open.fh, 0, Bytes("sync")).ok());
  std::vector<uint8_t> buf(8);
  auto n = driver().Read(c->entry.nodeid, c->open.fh, 0, absl::MakeSpan(buf));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf.begin(), buf.begin() + *n), "sync");
}

}  // namespace
}  // namespace vhostmig::fs
