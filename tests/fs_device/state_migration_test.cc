// Save on one VirtioFsDevice, load on another serving the same directory:
// every node id and file handle the guest held before the migration works
// on the destination (same file, reads and writes), or fails as
// --migration-on-error says, in both --migration-mode values.
#include <fcntl.h>
#include <linux/fuse.h>
#include <stdio.h>
#include <sys/stat.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "guest/loopback.h"
#include "tests/fs_device/fs_test_fixture.h"
#include "tests/fs_device/state_test_util.h"

namespace vhostmig::fs {
namespace {

struct Scenario {
  MigrationMode mode;
  MigrationErrorPolicy policy;
  const char* name;
};

class StateMigrationTest : public ::testing::TestWithParam<Scenario> {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    if (GetParam().mode == MigrationMode::kFileHandles) {
      const std::string why = FileHandlesUnavailable(dir_.path());
      if (!why.empty()) GTEST_SKIP() << "file handles unavailable: " << why;
    }
    source_ = MakeDevice();
    ASSERT_NE(source_, nullptr);
    auto g = guest::LoopbackFs::Create(source_.get(), LoopbackOptions());
    ASSERT_TRUE(g.ok()) << g.status();
    src_guest_ = *std::move(g);
    ASSERT_TRUE(src().Init().ok());
  }

  std::unique_ptr<VirtioFsDevice> MakeDevice() {
    FsConfig config;
    config.shared_dir = dir_.path();
    config.migration_mode = GetParam().mode;
    config.migration_on_error = GetParam().policy;
    auto d = VirtioFsDevice::Create(config, VirtioFsOptions{});
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *std::move(d) : nullptr;
  }
  static guest::LoopbackFsOptions LoopbackOptions() {
    guest::LoopbackFsOptions o;
    o.driver.queue_size = 256;
    return o;
  }

  // Brings up the destination device and its guest (no FUSE_INIT: the
  // session comes with the state).
  absl::Status Migrate() {
    destination_ = MakeDevice();
    if (!destination_) return absl::InternalError("destination");
    MigrationResult r = MigrateState(*source_, *destination_);
    if (!r.save.ok()) return r.save;
    if (!r.load.ok()) return r.load;
    auto g = guest::LoopbackFs::Create(destination_.get(), LoopbackOptions());
    if (!g.ok()) return g.status();
    dst_guest_ = *std::move(g);
    return absl::OkStatus();
  }

  guest::VirtioFsDriver& src() { return src_guest_->driver(); }
  guest::VirtioFsDriver& dst() { return dst_guest_->driver(); }
  std::string Host(const std::string& rel) { return dir_.path() + "/" + rel; }
  void WriteHost(const std::string& rel, const std::string& content) {
    FILE* f = fopen(Host(rel).c_str(), "w");
    ASSERT_NE(f, nullptr) << rel;
    fputs(content.c_str(), f);
    fclose(f);
  }
  std::string ReadHost(const std::string& rel) {
    std::string out;
    FILE* f = fopen(Host(rel).c_str(), "r");
    if (!f) return "<missing>";
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
    fclose(f);
    return out;
  }
  static std::string ReadAll(guest::VirtioFsDriver& d, uint64_t node,
                             uint64_t fh, absl::Status* status = nullptr) {
    std::vector<uint8_t> buf(4096);
    auto n = d.Read(node, fh, 0, absl::MakeSpan(buf));
    if (status) *status = n.status();
    if (!n.ok()) return "<error>";
    return std::string(buf.begin(), buf.begin() + *n);
  }
  bool FileHandles() const {
    return GetParam().mode == MigrationMode::kFileHandles;
  }

  TempDir dir_;
  std::unique_ptr<VirtioFsDevice> source_;
  std::unique_ptr<VirtioFsDevice> destination_;
  std::unique_ptr<guest::LoopbackFs> src_guest_;
  std::unique_ptr<guest::LoopbackFs> dst_guest_;
};

// The guest's view before the migration.
struct Workload {
  std::vector<uint64_t> dirs;  // d0/d1/.../d7, a cwd-like deep path
  uint64_t leaf_dir_fh = 0;
  uint64_t root_dir_fh = 0;
  uint64_t deep = 0, deep_fh = 0;
  uint64_t a = 0, a_fh = 0;  // also hard-linked as d0/link
  uint64_t gone = 0, gone_fh = 0;
  uint64_t moved = 0, moved_fh = 0;
  uint64_t replaced = 0, replaced_fh = 0;
};

TEST_P(StateMigrationTest, EveryNodeAndHandleWorksOnTheDestination) {
  Workload w;
  uint64_t parent = FUSE_ROOT_ID;
  for (int i = 0; i < 8; ++i) {
    auto e = src().Mkdir(parent, absl::StrCat("d", i), 0755);
    ASSERT_TRUE(e.ok()) << e.status();
    w.dirs.push_back(e->nodeid);
    parent = e->nodeid;
  }
  auto leaf_open = src().Opendir(w.dirs.back());
  ASSERT_TRUE(leaf_open.ok()) << leaf_open.status();
  w.leaf_dir_fh = leaf_open->fh;
  auto root_open = src().Opendir(FUSE_ROOT_ID);
  ASSERT_TRUE(root_open.ok());
  w.root_dir_fh = root_open->fh;
  auto deep = src().Create(w.dirs.back(), "deep.txt", O_RDWR, 0644);
  ASSERT_TRUE(deep.ok()) << deep.status();
  w.deep = deep->entry.nodeid;
  w.deep_fh = deep->open.fh;
  ASSERT_TRUE(src().Write(w.deep, w.deep_fh, 0, Bytes("deep-data")).ok());

  WriteHost("a.txt", "a-data");
  auto a = src().Lookup(FUSE_ROOT_ID, "a.txt");
  ASSERT_TRUE(a.ok());
  w.a = a->nodeid;
  auto a_open = src().Open(w.a, O_RDWR);
  ASSERT_TRUE(a_open.ok());
  w.a_fh = a_open->fh;
  auto link = src().Link(w.a, w.dirs[0], "link");
  ASSERT_TRUE(link.ok()) << link.status();
  ASSERT_EQ(link->nodeid, w.a);

  auto gone = src().Create(FUSE_ROOT_ID, "gone.txt", O_RDWR, 0644);
  ASSERT_TRUE(gone.ok());
  w.gone = gone->entry.nodeid;
  w.gone_fh = gone->open.fh;
  ASSERT_TRUE(src().Write(w.gone, w.gone_fh, 0, Bytes("gone-data")).ok());
  ASSERT_TRUE(src().Unlink(FUSE_ROOT_ID, "gone.txt").ok());

  WriteHost("moved.txt", "moved-data");
  auto moved = src().Lookup(FUSE_ROOT_ID, "moved.txt");
  ASSERT_TRUE(moved.ok());
  w.moved = moved->nodeid;
  auto moved_open = src().Open(w.moved, O_RDONLY);
  ASSERT_TRUE(moved_open.ok());
  w.moved_fh = moved_open->fh;

  WriteHost("replaced.txt", "old-data");
  auto replaced = src().Lookup(FUSE_ROOT_ID, "replaced.txt");
  ASSERT_TRUE(replaced.ok());
  w.replaced = replaced->nodeid;
  auto replaced_open = src().Open(w.replaced, O_RDONLY);
  ASSERT_TRUE(replaced_open.ok());
  w.replaced_fh = replaced_open->fh;

  // Migration starts: dirty logging on, locations gathered meanwhile.
  source_->OnLogAllChanged(true);
  // Pre-copy: the guest renames one file, the host replaces another
  // behind the daemon's back.
  ASSERT_TRUE(
      src().Rename(FUSE_ROOT_ID, "moved.txt", w.dirs[0], "renamed.txt").ok());
  WriteHost("replaced.new", "new-data");
  ASSERT_EQ(rename(Host("replaced.new").c_str(), Host("replaced.txt").c_str()),
            0);

  const bool find_paths = !FileHandles();
  const bool abort_policy = GetParam().policy == MigrationErrorPolicy::kAbort;
  absl::Status migrated = Migrate();
  if (find_paths && abort_policy) {
    // The unlinked-but-open file has no path and the replaced one fails
    // verification: the load fails and the source carries on.
    ASSERT_FALSE(migrated.ok());
    EXPECT_EQ(destination_->fs().inodes().size(), 1u);
    EXPECT_EQ(destination_->fs().handles().size(), 0u);
    EXPECT_EQ(ReadAll(src(), w.gone, w.gone_fh), "gone-data");
    return;
  }
  ASSERT_TRUE(migrated.ok()) << migrated;

  // The source is unchanged and could resume.
  EXPECT_EQ(ReadAll(src(), w.a, w.a_fh), "a-data");

  // Directories: every level of the deep path, and open directory streams.
  for (uint64_t d : w.dirs) {
    EXPECT_TRUE(dst().Getattr(d).ok()) << "dir node " << d;
  }
  auto entries = dst().Readdir(w.dirs.back(), w.leaf_dir_fh, 0);
  ASSERT_TRUE(entries.ok()) << entries.status();
  bool saw_deep = false;
  for (const auto& e : *entries) saw_deep |= e.name == "deep.txt";
  EXPECT_TRUE(saw_deep);
  EXPECT_TRUE(dst().Readdir(FUSE_ROOT_ID, w.root_dir_fh, 0).ok());
  // A name looked up under a migrated directory resolves beneath it.
  auto deep_again = dst().Lookup(w.dirs.back(), "deep.txt");
  ASSERT_TRUE(deep_again.ok()) << deep_again.status();
  EXPECT_EQ(deep_again->nodeid, w.deep);

  // Open files read and write the same host file.
  EXPECT_EQ(ReadAll(dst(), w.deep, w.deep_fh), "deep-data");
  EXPECT_EQ(ReadAll(dst(), w.a, w.a_fh), "a-data");
  ASSERT_TRUE(dst().Write(w.a, w.a_fh, 0, Bytes("A")).ok());
  EXPECT_EQ(ReadHost("a.txt"), "A-data");
  EXPECT_EQ(ReadHost("d0/link"), "A-data");
  // The hard link is still the same node.
  auto link_again = dst().Lookup(w.dirs[0], "link");
  ASSERT_TRUE(link_again.ok());
  EXPECT_EQ(link_again->nodeid, w.a);

  // Renamed during pre-copy: same file under its new name.
  EXPECT_EQ(ReadAll(dst(), w.moved, w.moved_fh), "moved-data");
  auto renamed = dst().Lookup(w.dirs[0], "renamed.txt");
  ASSERT_TRUE(renamed.ok());
  EXPECT_EQ(renamed->nodeid, w.moved);

  // Replaced behind the daemon's back: the new file is never presented as
  // the old node.
  auto now_there = dst().Lookup(FUSE_ROOT_ID, "replaced.txt");
  ASSERT_TRUE(now_there.ok());
  EXPECT_NE(now_there->nodeid, w.replaced);
  absl::Status st;
  const std::string old_view = ReadAll(dst(), w.replaced, w.replaced_fh, &st);
  if (FileHandles()) {
    // The old file is unlinked but still open (here by the source daemon):
    // its handle keeps naming it.
    EXPECT_EQ(old_view, "old-data");
    EXPECT_EQ(ReadAll(dst(), w.gone, w.gone_fh), "gone-data");
    ASSERT_TRUE(dst().Write(w.gone, w.gone_fh, 4, Bytes("!")).ok());
    EXPECT_EQ(ReadAll(src(), w.gone, w.gone_fh), "gone!data");
  } else {
    EXPECT_EQ(guest::FuseErrno(st), EIO) << st;
    EXPECT_EQ(guest::FuseErrno(dst().Getattr(w.replaced).status()), EIO);
    ReadAll(dst(), w.gone, w.gone_fh, &st);
    EXPECT_EQ(guest::FuseErrno(st), EIO) << st;
    EXPECT_FALSE(destination_->fs().MigrationErrors().empty());
  }

  // Ids issued on the destination never collide with migrated ones.
  auto fresh = dst().Create(FUSE_ROOT_ID, "fresh.txt", O_RDWR, 0644);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  for (uint64_t id : {w.deep, w.a, w.gone, w.moved, w.replaced}) {
    EXPECT_NE(fresh->entry.nodeid, id);
  }
  for (uint64_t fh : {w.deep_fh, w.a_fh, w.gone_fh, w.moved_fh, w.replaced_fh,
                      w.leaf_dir_fh, w.root_dir_fh}) {
    EXPECT_NE(fresh->open.fh, fh);
  }
  // Handles release normally, migrated or not.
  EXPECT_TRUE(dst().Release(w.a, w.a_fh).ok());
  EXPECT_TRUE(dst().Releasedir(FUSE_ROOT_ID, w.root_dir_fh).ok());
}

// Requests on several threads while the destination merges the migrated
// tables into its hash tables (this file also runs under TSan): a LOOKUP
// of a migrated file gets its migrated node id whether or not the merge
// reached it, FORGETs and opens count exactly, nothing is lost or doubled.
TEST(StateMergeTest, RequestsRaceTheBackgroundMerge) {
  constexpr int kDirs = 6;
  constexpr int kFiles = 200;  // per directory
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  for (int d = 0; d < kDirs; ++d) {
    const std::string sub = absl::StrCat(dir.path(), "/d", d);
    ASSERT_EQ(mkdir(sub.c_str(), 0755), 0);
    for (int f = 0; f < kFiles; ++f) {
      FILE* out = fopen(absl::StrCat(sub, "/f", f).c_str(), "w");
      ASSERT_NE(out, nullptr);
      fclose(out);
    }
  }
  FsConfig config;
  config.shared_dir = dir.path();
  config.migration_on_error = MigrationErrorPolicy::kGuestError;
  auto source = VirtioFsDevice::Create(config, VirtioFsOptions{});
  ASSERT_TRUE(source.ok()) << source.status();
  PassthroughFs& src = (*source)->fs();
  std::vector<uint64_t> dirs;
  std::vector<std::vector<uint64_t>> files(kDirs);
  std::vector<std::pair<uint64_t, uint64_t>> handles;  // fh, node
  for (int d = 0; d < kDirs; ++d) {
    LookupResult r;
    ASSERT_EQ(src.Lookup(src.GetInode(FUSE_ROOT_ID), absl::StrCat("d", d), &r),
              0);
    dirs.push_back(r.inode->node_id);
    for (int f = 0; f < kFiles; ++f) {
      LookupResult fr;
      ASSERT_EQ(src.Lookup(r.inode, absl::StrCat("f", f), &fr), 0);
      files[d].push_back(fr.inode->node_id);
      if (f % 10 == 0) {
        UniqueFd fd;
        ASSERT_EQ(src.Reopen(*fr.inode, O_RDONLY, &fd), 0);
        uint64_t fh = 0;
        ASSERT_EQ(
            src.AddOpenFile(*fr.inode, std::move(fd), O_RDONLY, false, &fh), 0);
        handles.emplace_back(fh, fr.inode->node_id);
      }
    }
  }
  (*source)->OnLogAllChanged(true);
  ASSERT_TRUE((*source)->gatherer().WaitForPass(absl::Seconds(60)));
  auto destination = VirtioFsDevice::Create(config, VirtioFsOptions{});
  ASSERT_TRUE(destination.ok()) << destination.status();
  MigrationResult m = MigrateState(**source, **destination);
  ASSERT_TRUE(m.save.ok()) << m.save;
  ASSERT_TRUE(m.load.ok()) << m.load;
  PassthroughFs& fs = (*destination)->fs();
  const size_t inodes = 1 + kDirs * (1 + kFiles);
  EXPECT_EQ(fs.inodes().size(), inodes);

  // One thread per directory: LOOKUP each file twice, FORGET it once,
  // GETATTR-like GetInode, and use the handles; plus one thread merging in
  // small batches, racing the device's own merge thread.
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int d = 0; d < kDirs; ++d) {
    threads.emplace_back([&, d] {
      std::shared_ptr<const Inode> parent = fs.GetInode(dirs[d]);
      if (!parent) {
        ++wrong;
        return;
      }
      for (int f = kFiles - 1; f >= 0; --f) {
        for (int k = 0; k < 2; ++k) {
          LookupResult r;
          if (fs.Lookup(parent, absl::StrCat("f", f), &r) != 0 ||
              r.inode->node_id != files[d][f]) {
            ++wrong;
          }
        }
        fs.inodes().Forget(files[d][f], 1);
        if (!fs.GetInode(files[d][f])) ++wrong;
      }
    });
  }
  threads.emplace_back([&] {
    while (!fs.inodes().MergeMigrated(16)) {
    }
    while (!fs.handles().MergeMigrated(4)) {
    }
  });
  threads.emplace_back([&] {
    for (const auto& [fh, node] : handles) {
      std::shared_ptr<OpenFile> file;
      if (fs.AnyOpenFileFor(fh, node, &file) != 0) ++wrong;
    }
  });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(fs.inodes().size(), inodes);
  EXPECT_EQ(fs.handles().size(), handles.size());
  for (int d = 0; d < kDirs; ++d) {
    for (int f = 0; f < kFiles; ++f) {
      auto info = fs.inodes().Info(files[d][f]);
      ASSERT_TRUE(info.has_value());
      EXPECT_EQ(info->lookups, 2u) << "d" << d << "/f" << f;  // 1 + 2 - 1
      EXPECT_EQ(info->opens, f % 10 == 0 ? 1u : 0u);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Modes, StateMigrationTest,
    ::testing::Values(
        Scenario{MigrationMode::kFindPaths, MigrationErrorPolicy::kGuestError,
                 "FindPathsGuestError"},
        Scenario{MigrationMode::kFindPaths, MigrationErrorPolicy::kAbort,
                 "FindPathsAbort"},
        Scenario{MigrationMode::kFileHandles, MigrationErrorPolicy::kGuestError,
                 "FileHandlesGuestError"},
        Scenario{MigrationMode::kFileHandles, MigrationErrorPolicy::kAbort,
                 "FileHandlesAbort"}),
    [](const ::testing::TestParamInfo<Scenario>& info) {
      return std::string(info.param.name);
    });

}  // namespace
}  // namespace vhostmig::fs
