// --inode-file-handles: inodes referenced by kernel file handles instead of
// O_PATH fds, so the daemon's fd count does not grow with lookups.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "tests/fs_device/fs_test_fixture.h"

namespace vhostmig::fs {
namespace {

// Whether name_to_handle_at + open_by_handle_at work on `dir`.
std::string FileHandlesUnavailable(const std::string& dir) {
  int fd = open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return "cannot open temp dir";
  FileHandle h;
  int err = FileHandle::FromFd(fd, &h);
  if (err != 0) {
    close(fd);
    return std::string("name_to_handle_at: ") + std::strerror(err);
  }
  MountFds mounts;
  mounts.Remember(h.mount_id, fd);
  close(fd);
  UniqueFd reopened;
  err = mounts.Open(h, O_PATH, &reopened);
  if (err != 0) return std::string("open_by_handle_at: ") + std::strerror(err);
  return "";
}

class FileHandleTest : public FsDeviceTest {
 protected:
  FsConfig Config() override {
    FsConfig c = FsDeviceTest::Config();
    c.file_handles = FileHandleMode::kMandatory;
    return c;
  }
  void SetUp() override {
    TempDir probe;
    const std::string why = FileHandlesUnavailable(probe.path());
    if (!why.empty()) GTEST_SKIP() << "file handles not permitted: " << why;
    FsDeviceTest::SetUp();
  }
};

// Restores RLIMIT_NOFILE on scope exit.
class ScopedFdLimit {
 public:
  explicit ScopedFdLimit(rlim_t soft) {
    getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit lim = saved_;
    lim.rlim_cur = soft;
    ok_ = setrlimit(RLIMIT_NOFILE, &lim) == 0;
  }
  ~ScopedFdLimit() { setrlimit(RLIMIT_NOFILE, &saved_); }
  bool ok() const { return ok_; }

 private:
  rlimit saved_{};
  bool ok_ = false;
};

void MakeFiles(const std::string& dir, int count) {
  for (int i = 0; i < count; ++i) {
    const std::string p = dir + "/f" + std::to_string(i);
    int fd = open(p.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << p;
    close(fd);
  }
}

TEST_F(FileHandleTest, InodesHoldFileHandlesAndNoFds) {
  WriteHostFile("f", "data");
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  auto inode = fs().GetInode(f);
  ASSERT_NE(inode, nullptr);
  EXPECT_TRUE(inode->handle.has_value());
  EXPECT_FALSE(inode->path_fd.valid());
  auto o = driver().Open(f, O_RDWR);
  ASSERT_TRUE(o.ok()) << o.status();
  ASSERT_TRUE(driver().Write(f, o->fh, 4, Bytes("more")).ok());
  EXPECT_EQ(ReadHostFile("f"), "datamore");
}

TEST_F(FileHandleTest, EveryRequestFamilyWorksWithHandles) {
  auto d = driver().Mkdir(FUSE_ROOT_ID, "d", 0755);
  ASSERT_TRUE(d.ok()) << d.status();
  auto c = driver().Create(d->nodeid, "f", O_RDWR, 0644);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(driver().Write(c->entry.nodeid, c->open.fh, 0, Bytes("x")).ok());
  ASSERT_TRUE(driver().Setxattr(c->entry.nodeid, "user.k", "v").ok());
  fuse_setattr_in in{};
  in.valid = FATTR_SIZE;
  in.size = 10;
  ASSERT_TRUE(driver().Setattr(c->entry.nodeid, in).ok());
  auto dir = driver().Opendir(d->nodeid);
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto entries = driver().Readdirplus(d->nodeid, dir->fh, 0);
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_TRUE(driver().Symlink(d->nodeid, "s", "f").ok());
  auto l = driver().Link(c->entry.nodeid, d->nodeid, "g");
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->nodeid, c->entry.nodeid);
  ASSERT_TRUE(driver().Rename(d->nodeid, "g", FUSE_ROOT_ID, "h").ok());
  ASSERT_TRUE(driver().Unlink(FUSE_ROOT_ID, "h").ok());
  struct stat st;
  ASSERT_EQ(stat(HostPath("d/f").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 10);
}

TEST_F(FileHandleTest, ThirtyThousandLookupsFitUnderAnFdLimitOf1024) {
  constexpr int kFiles = 30000;
  MakeFiles(dir_.path(), kFiles);
  ScopedFdLimit limit(1024);
  ASSERT_TRUE(limit.ok());
  for (int i = 0; i < kFiles; ++i) {
    auto e = driver().Lookup(FUSE_ROOT_ID, "f" + std::to_string(i));
    ASSERT_TRUE(e.ok()) << i << ": " << e.status();
  }
  EXPECT_EQ(fs().inodes().size(), kFiles + 1u);
  // And the looked-up files are still usable.
  auto e = driver().Lookup(FUSE_ROOT_ID, "f29999");
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(driver().Open(e->nodeid, O_RDONLY).ok());
}

TEST_F(FileHandleTest, AReplacedFileGetsANewNodeNotTheOldOne) {
  WriteHostFile("f", "old");
  const uint64_t old_node = MustLookup(FUSE_ROOT_ID, "f");
  ASSERT_EQ(unlink(HostPath("f").c_str()), 0);
  WriteHostFile("f", "new");
  const uint64_t new_node = MustLookup(FUSE_ROOT_ID, "f");
  EXPECT_NE(new_node, old_node);
  // The old node names a deleted file: it is stale, never the new one.
  auto o = driver().Open(old_node, O_RDONLY);
  EXPECT_FALSE(o.ok());
}

// The contrast: with O_PATH fds per inode the same workload runs out of fds.
class PathFdLimitTest : public FsDeviceTest {};

TEST_F(PathFdLimitTest, WithoutFileHandlesLookupsAreCappedByTheFdLimit) {
  constexpr int kFiles = 1500;
  MakeFiles(dir_.path(), kFiles);
  ScopedFdLimit limit(1024);
  ASSERT_TRUE(limit.ok());
  int failures = 0;
  int first_errno = 0;
  uint64_t some_node = 0;
  for (int i = 0; i < kFiles; ++i) {
    auto e = driver().Lookup(FUSE_ROOT_ID, "f" + std::to_string(i));
    if (e.ok()) {
      some_node = e->nodeid;
    } else if (failures++ == 0) {
      first_errno = guest::FuseErrno(e.status());
    }
  }
  EXPECT_GT(failures, 0);
  EXPECT_EQ(first_errno, EMFILE);
  // The daemon keeps serving: forgetting frees an fd for a new lookup.
  ASSERT_NE(some_node, 0u);
  ASSERT_TRUE(driver().Forget(some_node, 1).ok());
  EXPECT_TRUE(driver().Lookup(FUSE_ROOT_ID, "f1499").ok());
}

}  // namespace
}  // namespace vhostmig::fs
