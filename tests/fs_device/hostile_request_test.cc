// Malformed and hostile FUSE requests, built by hand (no rings) so that
// every size and split is exact. The dispatcher must answer with an errno,
// never write past the writable buffers, and keep serving.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "fs_device/passthrough_fs.h"
#include "gtest/gtest.h"
#include "tests/fs_device/raw_fuse.h"

namespace vhostmig::fs {
namespace {

std::vector<uint8_t> Name(const std::string& s) {
  std::vector<uint8_t> v(s.begin(), s.end());
  v.push_back(0);
  return v;
}

std::vector<uint8_t> Cat(std::vector<uint8_t> a,
                         const std::vector<uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class HostileRequestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = getenv("TEST_TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/hostile.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ + "/file") << "0123456789";
    FsConfig config;
    config.shared_dir = dir_;
    config.xattr = true;
    auto fs = PassthroughFs::Create(config);
    ASSERT_TRUE(fs.ok()) << fs.status();
    fs_ = *std::move(fs);
    raw_ = std::make_unique<RawFuse>(fs_.get());
    raw_->Init();
  }
  void TearDown() override {
    raw_.reset();
    fs_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // The daemon still answers ordinary requests.
  void ExpectStillServing() {
    RawReply r = raw_->Send(FUSE_LOOKUP, FUSE_ROOT_ID, Name("file"));
    EXPECT_EQ(r.header.error, 0);
    EXPECT_EQ(r.payload.size(), sizeof(fuse_entry_out));
  }

  uint64_t LookupFile() {
    RawReply r = raw_->Send(FUSE_LOOKUP, FUSE_ROOT_ID, Name("file"));
    EXPECT_EQ(r.header.error, 0);
    fuse_entry_out e{};
    if (r.payload.size() >= sizeof(e))
      std::memcpy(&e, r.payload.data(), sizeof(e));
    return e.nodeid;
  }

  uint64_t OpenFile(uint64_t node, uint32_t flags) {
    fuse_open_in in{};
    in.flags = flags;
    RawReply r = raw_->Send(FUSE_OPEN, node, RawFuse::Struct(in));
    EXPECT_EQ(r.header.error, 0);
    fuse_open_out o{};
    if (r.payload.size() >= sizeof(o))
      std::memcpy(&o, r.payload.data(), sizeof(o));
    return o.fh;
  }

  std::string dir_;
  std::unique_ptr<PassthroughFs> fs_;
  std::unique_ptr<RawFuse> raw_;
};

TEST_F(HostileRequestTest, ChainShorterThanAHeaderGetsEinvalWithUniqueZero) {
  RawReply r = raw_->SendBytes(std::vector<uint8_t>(10, 0), {4096});
  EXPECT_EQ(r.header.error, -EINVAL);
  EXPECT_EQ(r.header.unique, 0u);
  ExpectStillServing();
}

TEST_F(HostileRequestTest, HeaderLengthBeyondTheChainFailsWithEinval) {
  RawReply r = raw_->Send(FUSE_LOOKUP, FUSE_ROOT_ID, Name("file"), {4096}, 0,
                          /*header_len=*/4096);
  EXPECT_EQ(r.header.error, -EINVAL);
  ExpectStillServing();
}

TEST_F(HostileRequestTest, HeaderLengthBelowTheHeaderSizeFailsWithEinval) {
  RawReply r =
      raw_->Send(FUSE_GETATTR, FUSE_ROOT_ID, std::vector<uint8_t>(16, 0),
                 {4096}, 0, /*header_len=*/8);
  EXPECT_EQ(r.header.error, -EINVAL);
}

TEST_F(HostileRequestTest, OversizedArgumentsFailWithE2big) {
  RawReply r =
      raw_->Send(FUSE_LOOKUP, FUSE_ROOT_ID, std::vector<uint8_t>(200000, 'a'));
  EXPECT_EQ(r.header.error, -E2BIG);
  ExpectStillServing();
}

TEST_F(HostileRequestTest, RequestsBeforeInitFailWithEio) {
  FsConfig config;
  config.shared_dir = dir_;
  auto fresh = PassthroughFs::Create(config);
  ASSERT_TRUE(fresh.ok());
  RawFuse raw(fresh->get());
  EXPECT_EQ(raw.Send(FUSE_LOOKUP, FUSE_ROOT_ID, Name("file")).header.error,
            -EIO);
}

TEST_F(HostileRequestTest, InitWithAnOldMajorVersionFailsWithEproto) {
  fuse_init_in in{};
  in.major = 5;
  EXPECT_EQ(raw_->Send(FUSE_INIT, 0, RawFuse::Struct(in)).header.error,
            -EPROTO);
}

TEST_F(HostileRequestTest, InitWithATruncatedStructFailsWithEinval) {
  EXPECT_EQ(raw_->Send(FUSE_INIT, 0, std::vector<uint8_t>(6, 7)).header.error,
            -EINVAL);
}

TEST_F(HostileRequestTest, UnsupportedAndUnknownOpcodesFailWithEnosys) {
  for (uint32_t op : std::initializer_list<uint32_t>{
           FUSE_GETLK, FUSE_SETLK, FUSE_SETLKW, FUSE_IOCTL, FUSE_POLL,
           FUSE_BMAP, FUSE_SETUPMAPPING, FUSE_REMOVEMAPPING, 4000u, 0u}) {
    RawReply r = raw_->Send(op, FUSE_ROOT_ID, std::vector<uint8_t>(64, 0));
    EXPECT_EQ(r.header.error, -ENOSYS) << "opcode " << op;
  }
  ExpectStillServing();
}

TEST_F(HostileRequestTest, NameWithoutTerminatorFailsWithEinval) {
  EXPECT_EQ(raw_->Send(FUSE_LOOKUP, FUSE_ROOT_ID,
                       std::vector<uint8_t>{'f', 'i', 'l', 'e'})
                .header.error,
            -EINVAL);
}

TEST_F(HostileRequestTest, NameWithAnEmbeddedNulFailsWithEinval) {
  EXPECT_EQ(raw_->Send(FUSE_LOOKUP, FUSE_ROOT_ID,
                       std::vector<uint8_t>{'f', 0, 'x', 0})
                .header.error,
            -EINVAL);
}

TEST_F(HostileRequestTest, NamesWithSlashesAreRefused) {
  for (const char* n : {"a/b", "/etc", "../file", "x/"}) {
    EXPECT_EQ(raw_->Send(FUSE_LOOKUP, FUSE_ROOT_ID, Name(n)).header.error,
              -EINVAL)
        << n;
    fuse_mkdir_in in{};
    in.mode = 0755;
    EXPECT_EQ(
        raw_->Send(FUSE_MKDIR, FUSE_ROOT_ID, Cat(RawFuse::Struct(in), Name(n)))
            .header.error,
        -EINVAL)
        << n;
  }
}

TEST_F(HostileRequestTest, EmptyNameIsRefused) {
  EXPECT_EQ(raw_->Send(FUSE_LOOKUP, FUSE_ROOT_ID, Name("")).header.error,
            -EINVAL);
}

TEST_F(HostileRequestTest, OverlongNameFailsWithEnametoolong) {
  EXPECT_EQ(raw_->Send(FUSE_LOOKUP, FUSE_ROOT_ID, Name(std::string(256, 'a')))
                .header.error,
            -ENAMETOOLONG);
}

TEST_F(HostileRequestTest, DotNamesCannotBeCreatedOrRemoved) {
  for (const char* n : {".", ".."}) {
    fuse_mkdir_in in{};
    in.mode = 0755;
    EXPECT_EQ(
        raw_->Send(FUSE_MKDIR, FUSE_ROOT_ID, Cat(RawFuse::Struct(in), Name(n)))
            .header.error,
        -EINVAL);
    EXPECT_EQ(raw_->Send(FUSE_UNLINK, FUSE_ROOT_ID, Name(n)).header.error,
              -EINVAL);
    EXPECT_EQ(raw_->Send(FUSE_RMDIR, FUSE_ROOT_ID, Name(n)).header.error,
              -EINVAL);
  }
}

TEST_F(HostileRequestTest, TruncatedOpArgumentsFailWithEinval) {
  for (uint32_t op : std::initializer_list<uint32_t>{
           FUSE_GETATTR, FUSE_SETATTR, FUSE_OPEN, FUSE_READ, FUSE_WRITE,
           FUSE_MKDIR, FUSE_RENAME, FUSE_CREATE, FUSE_RELEASE, FUSE_FSYNC,
           FUSE_LSEEK, FUSE_COPY_FILE_RANGE, FUSE_FALLOCATE}) {
    RawReply r = raw_->Send(op, FUSE_ROOT_ID, std::vector<uint8_t>(3, 0));
    EXPECT_EQ(r.header.error, -EINVAL) << "opcode " << op;
  }
  ExpectStillServing();
}

TEST_F(HostileRequestTest, ReplyThatDoesNotFitFailsWithErangeWithinBounds) {
  // A LOOKUP reply needs 16 + 128 bytes; offer 16 + 20.
  RawReply r = raw_->Send(FUSE_LOOKUP, FUSE_ROOT_ID, Name("file"), {16 + 20});
  EXPECT_EQ(r.header.error, -ERANGE);
  EXPECT_EQ(r.written, sizeof(fuse_out_header));
  EXPECT_TRUE(r.guard_intact);
  // The failed reply took no lookup reference: only the root is held.
  EXPECT_EQ(fs_->inodes().size(), 1u);
}

TEST_F(HostileRequestTest, WritableBufferTooSmallForAHeaderGetsNoBytes) {
  RawReply r =
      raw_->Send(FUSE_GETATTR, FUSE_ROOT_ID,
                 std::vector<uint8_t>(sizeof(fuse_getattr_in), 0), {8});
  EXPECT_EQ(r.written, 0u);
  EXPECT_TRUE(r.guard_intact);
  ExpectStillServing();
}

TEST_F(HostileRequestTest, NoWritableBufferAtAllGetsNoBytes) {
  RawReply r = raw_->Send(FUSE_GETATTR, FUSE_ROOT_ID,
                          std::vector<uint8_t>(sizeof(fuse_getattr_in), 0), {});
  EXPECT_EQ(r.written, 0u);
}

TEST_F(HostileRequestTest, ReadIsClampedToTheWritableBuffers) {
  const uint64_t node = LookupFile();
  const uint64_t fh = OpenFile(node, O_RDONLY);
  fuse_read_in in{};
  in.fh = fh;
  in.size = 0xffffffff;
  // Header buffer plus a 4-byte data buffer split across two descriptors.
  RawReply r = raw_->Send(FUSE_READ, node, RawFuse::Struct(in), {16, 3, 1});
  EXPECT_EQ(r.header.error, 0);
  EXPECT_EQ(r.written, 16u + 4u);
  EXPECT_EQ(std::string(r.payload.begin(), r.payload.end()), "0123");
  EXPECT_TRUE(r.guard_intact);
}

TEST_F(HostileRequestTest, WriteClaimingMoreDataThanTheChainHoldsFailsEinval) {
  const uint64_t node = LookupFile();
  const uint64_t fh = OpenFile(node, O_RDWR);
  fuse_write_in in{};
  in.fh = fh;
  in.size = 100;
  RawReply r =
      raw_->Send(FUSE_WRITE, node,
                 Cat(RawFuse::Struct(in), std::vector<uint8_t>(10, 'x')));
  EXPECT_EQ(r.header.error, -EINVAL);
  std::ifstream f(dir_ + "/file");
  std::string content;
  f >> content;
  EXPECT_EQ(content, "0123456789");
}

TEST_F(HostileRequestTest, UnknownFileHandleFailsWithEbadf) {
  const uint64_t node = LookupFile();
  fuse_read_in in{};
  in.fh = 424242;
  in.size = 10;
  EXPECT_EQ(raw_->Send(FUSE_READ, node, RawFuse::Struct(in)).header.error,
            -EBADF);
  fuse_release_in rel{};
  rel.fh = 424242;
  EXPECT_EQ(raw_->Send(FUSE_RELEASE, node, RawFuse::Struct(rel)).header.error,
            -EBADF);
}

TEST_F(HostileRequestTest, FileHandleUsedWithAnotherNodeFailsWithEbadf) {
  const uint64_t node = LookupFile();
  const uint64_t fh = OpenFile(node, O_RDONLY);
  fuse_read_in in{};
  in.fh = fh;
  in.size = 10;
  EXPECT_EQ(
      raw_->Send(FUSE_READ, FUSE_ROOT_ID, RawFuse::Struct(in)).header.error,
      -EBADF);
  // A file handle is not a directory handle.
  EXPECT_EQ(raw_->Send(FUSE_READDIR, node, RawFuse::Struct(in)).header.error,
            -EBADF);
}

TEST_F(HostileRequestTest, WriteThroughAReadOnlyHandleFailsWithEbadf) {
  const uint64_t node = LookupFile();
  const uint64_t fh = OpenFile(node, O_RDONLY);
  fuse_write_in in{};
  in.fh = fh;
  in.size = 1;
  EXPECT_EQ(raw_->Send(FUSE_WRITE, node, Cat(RawFuse::Struct(in), {'x'}))
                .header.error,
            -EBADF);
}

TEST_F(HostileRequestTest, OverlyLargeWriteFailsWithEinval) {
  const uint64_t node = LookupFile();
  const uint64_t fh = OpenFile(node, O_RDWR);
  fuse_write_in in{};
  in.fh = fh;
  in.size = 0x7fffffff;
  EXPECT_EQ(raw_->Send(FUSE_WRITE, node, RawFuse::Struct(in)).header.error,
            -EINVAL);
}

TEST_F(HostileRequestTest,
       BatchForgetWithAnOverstatedCountUsesOnlyWhatIsThere) {
  const uint64_t node = LookupFile();
  fuse_batch_forget_in in{};
  in.count = 1000000;
  fuse_forget_one one{};
  one.nodeid = node;
  one.nlookup = 1;
  RawReply r = raw_->Send(FUSE_BATCH_FORGET, 0,
                          Cat(RawFuse::Struct(in), RawFuse::Struct(one)), {});
  EXPECT_EQ(r.written, 0u);
  EXPECT_FALSE(fs_->inodes().Info(node).has_value());
  ExpectStillServing();
}

TEST_F(HostileRequestTest, ForgetOfUnknownNodesIsHarmless) {
  fuse_forget_in in{};
  in.nlookup = 5;
  EXPECT_EQ(raw_->Send(FUSE_FORGET, 987654, RawFuse::Struct(in), {}).written,
            0u);
  ExpectStillServing();
}

TEST_F(HostileRequestTest, RequestSplitIntoOneByteBuffersIsParsedTheSame) {
  RawReply r = raw_->Send(FUSE_LOOKUP, FUSE_ROOT_ID, Name("file"), {4096},
                          /*in_split=*/1);
  EXPECT_EQ(r.header.error, 0);
  EXPECT_EQ(r.payload.size(), sizeof(fuse_entry_out));
}

TEST_F(HostileRequestTest, SetxattrWithAValueSizeMismatchFailsWithEinval) {
  fuse_setxattr_in in{};
  in.size = 100;
  // The 8-byte compat form: one copy of the struct, cut. (Two calls to
  // Struct() would be two temporaries, and a range spanning both undefined.)
  const std::vector<uint8_t> whole = RawFuse::Struct(in);
  std::vector<uint8_t> body(whole.begin(),
                            whole.begin() + FUSE_COMPAT_SETXATTR_IN_SIZE);
  body = Cat(Cat(body, Name("user.x")), {'v'});
  EXPECT_EQ(raw_->Send(FUSE_SETXATTR, FUSE_ROOT_ID, body).header.error,
            -EINVAL);
}

TEST_F(HostileRequestTest, SymlinkWithAnUnterminatedTargetFailsWithEinval) {
  EXPECT_EQ(raw_->Send(FUSE_SYMLINK, FUSE_ROOT_ID,
                       Cat(Name("l"), std::vector<uint8_t>{'/', 'e', 't', 'c'}))
                .header.error,
            -EINVAL);
  struct stat st;
  EXPECT_NE(lstat((dir_ + "/l").c_str(), &st), 0);
}

TEST_F(HostileRequestTest, ReaddirWithABogusOffsetDoesNotCrash) {
  fuse_open_in open{};
  RawReply o = raw_->Send(FUSE_OPENDIR, FUSE_ROOT_ID, RawFuse::Struct(open));
  ASSERT_EQ(o.header.error, 0);
  fuse_open_out oo{};
  std::memcpy(&oo, o.payload.data(), sizeof(oo));
  fuse_read_in in{};
  in.fh = oo.fh;
  in.offset = 0x7ffffffffffffff0ull;
  in.size = 4096;
  RawReply r = raw_->Send(FUSE_READDIR, FUSE_ROOT_ID, RawFuse::Struct(in));
  EXPECT_TRUE(r.header.error == 0 || r.header.error == -EINVAL);
  EXPECT_TRUE(r.guard_intact);
  ExpectStillServing();
}

}  // namespace
}  // namespace vhostmig::fs
