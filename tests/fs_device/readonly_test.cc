// --readonly: every modification fails with EROFS, reads still work.
#include <sys/stat.h>

#include "tests/fs_device/fs_test_fixture.h"

namespace vhostmig::fs {
namespace {

class ReadonlyTest : public FsDeviceTest {
 protected:
  FsConfig Config() override {
    FsConfig c = FsDeviceTest::Config();
    c.readonly = true;
    return c;
  }
};

TEST_F(ReadonlyTest, ReadsWork) {
  WriteHostFile("f", "readable");
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  auto o = driver().Open(f, O_RDONLY);
  ASSERT_TRUE(o.ok()) << o.status();
  std::vector<uint8_t> buf(16);
  auto n = driver().Read(f, o->fh, 0, absl::MakeSpan(buf));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf.begin(), buf.begin() + *n), "readable");
  auto d = driver().Opendir(FUSE_ROOT_ID);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(driver().Readdir(FUSE_ROOT_ID, d->fh, 0).ok());
}

TEST_F(ReadonlyTest, EveryModificationFailsWithErofs) {
  WriteHostFile("f", "keep");
  ASSERT_EQ(mkdir(HostPath("d").c_str(), 0755), 0);
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  auto erofs = [](const absl::Status& s) {
    return guest::FuseErrno(s) == EROFS;
  };
  EXPECT_TRUE(erofs(driver().Open(f, O_RDWR).status()));
  EXPECT_TRUE(erofs(driver().Open(f, O_WRONLY).status()));
  EXPECT_TRUE(erofs(driver().Open(f, O_RDONLY | O_TRUNC).status()));
  EXPECT_TRUE(erofs(driver().Create(FUSE_ROOT_ID, "n", O_RDWR, 0644).status()));
  EXPECT_TRUE(erofs(driver().Mkdir(FUSE_ROOT_ID, "n", 0755).status()));
  EXPECT_TRUE(
      erofs(driver().Mknod(FUSE_ROOT_ID, "n", S_IFIFO | 0644, 0).status()));
  EXPECT_TRUE(erofs(driver().Symlink(FUSE_ROOT_ID, "n", "f").status()));
  EXPECT_TRUE(erofs(driver().Link(f, FUSE_ROOT_ID, "n").status()));
  EXPECT_TRUE(erofs(driver().Unlink(FUSE_ROOT_ID, "f")));
  EXPECT_TRUE(erofs(driver().Rmdir(FUSE_ROOT_ID, "d")));
  EXPECT_TRUE(erofs(driver().Rename(FUSE_ROOT_ID, "f", FUSE_ROOT_ID, "g")));
  fuse_setattr_in in{};
  in.valid = FATTR_SIZE;
  EXPECT_TRUE(erofs(driver().Setattr(f, in).status()));
  EXPECT_TRUE(erofs(driver().Setxattr(f, "user.x", "v")));
  EXPECT_TRUE(erofs(driver().Removexattr(f, "user.x")));
  EXPECT_TRUE(erofs(driver().Access(f, W_OK)));
  // Even a write on a read-only handle is refused as such.
  auto o = driver().Open(f, O_RDONLY);
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(erofs(driver().Write(f, o->fh, 0, Bytes("x")).status()));
  EXPECT_TRUE(erofs(driver().Fallocate(f, o->fh, 0, 10)));
  EXPECT_EQ(ReadHostFile("f"), "keep");
  EXPECT_TRUE(HostExists("d"));
}

}  // namespace
}  // namespace vhostmig::fs
