// Data requests through the synthetic guest: OPEN, READ, WRITE and the rest
// of the open-file family, including batching of a queue pass's transfers.
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>

#include <fstream>

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

// True when `dir`'s file system can try a read without blocking.
bool SupportsNowaitReads(const std::string& dir) {
  const std::string path = dir + "/probe";
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  char byte = 0;
  iovec iov{&byte, 1};
  const bool ok = fd.valid() && preadv2(fd.get(), &iov, 1, 0, RWF_NOWAIT) >= 0;
  unlink(path.c_str());
  return ok;
}

std::vector<DataTransfer*> Pointers(std::vector<DataTransfer>& v) {
  std::vector<DataTransfer*> p;
  for (DataTransfer& t : v) p.push_back(&t);
  return p;
}

TEST(UringDataPathTest, CachedReadsCompleteInOneSubmission) {
  auto path = UringDataPath::Create(64);
  if (!path.ok()) GTEST_SKIP() << "io_uring unavailable: " << path.status();
  TempDir dir;
  if (!SupportsNowaitReads(dir.path())) {
    GTEST_SKIP() << dir.path() << " cannot read without blocking";
  }
  const std::string file = dir.path() + "/f";
  const std::string content(8 * 100, 'c');
  {
    std::ofstream(file, std::ios::binary) << content;  // in the page cache
  }
  auto open_file = std::make_shared<OpenFile>();
  open_file->fd.reset(open(file.c_str(), O_RDONLY));
  ASSERT_TRUE(open_file->fd.valid());
  std::vector<DataTransfer> reads(8);
  std::vector<std::string> bufs(8, std::string(100, '\0'));
  for (int i = 0; i < 8; ++i) {
    reads[i].file = open_file;
    reads[i].offset = 100 * i;
    reads[i].iov = {iovec{bufs[i].data(), bufs[i].size()}};
  }
  (*path)->Run(Pointers(reads));
  EXPECT_EQ((*path)->submit_calls(), 1u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(reads[i].result, 100) << i;
    EXPECT_EQ(bufs[i], std::string(100, 'c')) << i;
  }
  EXPECT_EQ(open_file->nowait_read.load(), 1);
}

// tmpfs cannot try without blocking, so io_uring would hand every request
// to a worker thread: after the first batch the file's transfers run
// inline, with no submission at all.
TEST(UringDataPathTest, FileSystemWithoutNowaitIsServedInline) {
  auto path = UringDataPath::Create(64);
  if (!path.ok()) GTEST_SKIP() << "io_uring unavailable: " << path.status();
  struct statfs fs {};
  if (statfs("/dev/shm", &fs) != 0 || fs.f_type != TMPFS_MAGIC) {
    GTEST_SKIP() << "no tmpfs at /dev/shm";
  }
  char tmpl[] = "/dev/shm/uring-test.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  if (SupportsNowaitReads(dir)) {
    rmdir(dir.c_str());
    GTEST_SKIP() << "this kernel's tmpfs reads without blocking";
  }
  const std::string file = dir + "/f";
  auto open_file = std::make_shared<OpenFile>();
  open_file->fd.reset(open(file.c_str(), O_RDWR | O_CREAT, 0644));
  unlink(file.c_str());
  rmdir(dir.c_str());
  ASSERT_TRUE(open_file->fd.valid());
  for (int batch = 0; batch < 2; ++batch) {
    std::vector<DataTransfer> writes(4);
    std::vector<std::string> chunks(4, std::string(50, 'a' + batch));
    for (int i = 0; i < 4; ++i) {
      writes[i].kind = DataTransfer::Kind::kWrite;
      writes[i].file = open_file;
      writes[i].offset = 50 * i;
      writes[i].iov = {iovec{chunks[i].data(), chunks[i].size()}};
    }
    (*path)->Run(Pointers(writes));
    for (const DataTransfer& t : writes) EXPECT_EQ(t.result, 50);
    std::vector<DataTransfer> reads(1);
    std::string back(200, '\0');
    reads[0].file = open_file;
    reads[0].iov = {iovec{back.data(), back.size()}};
    (*path)->Run(Pointers(reads));
    EXPECT_EQ(reads[0].result, 200);
    EXPECT_EQ(back, std::string(200, 'a' + batch));
  }
  // Only the first batch's writes and its read tried io_uring.
  EXPECT_EQ((*path)->submit_calls(), 2u);
  EXPECT_EQ(open_file->nowait_read.load(), -1);
  EXPECT_EQ(open_file->nowait_write.load(), -1);
}

TEST(UringDataPathTest, ReadAcrossTheEndOfFileReturnsTheTail) {
  auto path = UringDataPath::Create(64);
  if (!path.ok()) GTEST_SKIP() << "io_uring unavailable: " << path.status();
  TempDir dir;
  const std::string file = dir.path() + "/f";
  { std::ofstream(file, std::ios::binary) << "0123456789"; }
  auto open_file = std::make_shared<OpenFile>();
  open_file->fd.reset(open(file.c_str(), O_RDONLY));
  ASSERT_TRUE(open_file->fd.valid());
  std::vector<DataTransfer> reads(2);
  std::string a(100, '\0');
  std::string b(100, '\0');
  reads[0].file = open_file;
  reads[0].offset = 4;
  reads[0].iov = {iovec{a.data(), 3}, iovec{a.data() + 3, 97}};
  reads[1].file = open_file;
  reads[1].offset = 50;
  reads[1].iov = {iovec{b.data(), b.size()}};
  (*path)->Run(Pointers(reads));
  EXPECT_EQ(reads[0].result, 6);
  EXPECT_EQ(a.substr(0, 6), "456789");
  EXPECT_EQ(reads[1].result, 0);
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
