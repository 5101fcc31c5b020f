// The source side of a migration: locations are gathered in the background
// from LOG_ALL on, kept current, discarded on cancel; the stopped phase
// only locates what changed; a save leaves the source's tables as they
// were; the frame format's checksum and chunking.
#include <fcntl.h>
#include <linux/fuse.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "fs_device/state_columns.h"
#include "fs_device/state_frame.h"
#include "fs_device/state_loader.h"
#include "fs_device/state_writer.h"
#include "gtest/gtest.h"
#include "proto/fs_state.pb.h"
#include "tests/fs_device/fs_test_fixture.h"
#include "tests/fs_device/state_test_util.h"

namespace vhostmig::fs {
namespace {

constexpr absl::Duration kPassTimeout = absl::Seconds(30);

TEST(StateFrameTest, FramesRoundTripAndEndCleanlyAtABoundary) {
  UniqueFd fd(memfd_create("frames", MFD_CLOEXEC));
  FrameWriter w(fd.get());
  fs_state::v1::StateHeader h;
  h.set_magic(kStateMagic);
  ASSERT_TRUE(w.Write(h).ok());
  ASSERT_TRUE(w.Write(h).ok());
  lseek(fd.get(), 0, SEEK_SET);
  FrameReader r(fd.get());
  std::string payload;
  for (int i = 0; i < 2; ++i) {
    auto more = r.Next(&payload);
    ASSERT_TRUE(more.ok() && *more) << i;
    fs_state::v1::StateHeader back;
    ASSERT_TRUE(back.ParseFromString(payload));
    EXPECT_EQ(back.magic(), kStateMagic);
  }
  auto end = r.Next(&payload);
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(*end);
}

class GatheringTest : public FsDeviceTest {
 protected:
  void LookUpFiles(int n) {
    for (int i = 0; i < n; ++i) {
      WriteHostFile(absl::StrCat("f", i), "x");
      MustLookup(FUSE_ROOT_ID, absl::StrCat("f", i));
    }
  }
  // Saves into a memfd (the loader side is not under test here).
  absl::Status Save() {
    UniqueFd fd(memfd_create("save", MFD_CLOEXEC));
    absl::Status s = device().SaveState(fd.get());
    saved_ = FdBytes(fd.get());
    return s;
  }
  // The inode records of the last save, in stream order.
  std::vector<InodeFields> SavedInodes() {
    std::vector<InodeFields> out;
    UniqueFd in = BytesFd(saved_);
    FrameReader r(in.get());
    std::string payload;
    EXPECT_TRUE(*r.Next(&payload));  // header
    for (uint64_t frame = 1;; ++frame) {
      auto more = r.Next(&payload);
      EXPECT_TRUE(more.ok());
      if (!more.ok() || !*more) break;
      fs_state::v1::StateChunk chunk;
      EXPECT_TRUE(chunk.ParseFromString(payload));
      StableVector<InodeFields> records;
      EXPECT_TRUE(DecodeInodeColumns(chunk.inode_columns(), InodeIdentity{},
                                     frame, &records)
                      .ok());
      for (size_t i = 0; i < records.size(); ++i) out.push_back(records[i]);
    }
    return out;
  }
  std::string saved_;
};

TEST_F(GatheringTest, AnUnchangedTableIsSavedFromThePreparedChunks) {
  LookUpFiles(300);
  device().OnLogAllChanged(true);
  ASSERT_TRUE(device().gatherer().WaitForPass(kPassTimeout));
  ASSERT_TRUE(Save().ok());
  EXPECT_EQ(device().last_save_stats().inodes, 301u);
  EXPECT_EQ(device().last_save_stats().located_during_save, 0u);
  const std::vector<InodeFields> records = SavedInodes();
  ASSERT_EQ(records.size(), 301u);
  for (size_t i = 1; i < records.size(); ++i) {
    EXPECT_LT(records[i - 1].node_id, records[i].node_id);
    EXPECT_EQ(records[i].lookups, 1u);
    EXPECT_TRUE(records[i].has_path);
  }
}

TEST_F(GatheringTest, LookupCountsChangedDuringPreCopyAreSavedAsTheyAreNow) {
  LookUpFiles(50);
  const uint64_t again = MustLookup(FUSE_ROOT_ID, "f3");
  const uint64_t dropped = MustLookup(FUSE_ROOT_ID, "f4");
  const uint64_t fewer = MustLookup(FUSE_ROOT_ID, "f5");
  ASSERT_EQ(fs().inodes().Info(fewer)->lookups, 2u);
  device().OnLogAllChanged(true);
  ASSERT_TRUE(device().gatherer().WaitForPass(kPassTimeout));
  // During pre-copy: one more lookup, one FORGET of everything, one FORGET
  // of part (as the FORGET handler does), a new file, a rename.
  MustLookup(FUSE_ROOT_ID, "f3");
  fs().inodes().Forget(dropped, 2);
  fs().inodes().Forget(fewer, 1);
  WriteHostFile("late", "x");
  const uint64_t late = MustLookup(FUSE_ROOT_ID, "late");
  const uint64_t moved = MustLookup(FUSE_ROOT_ID, "f9");
  ASSERT_TRUE(driver().Rename(FUSE_ROOT_ID, "f9", FUSE_ROOT_ID, "g9").ok());
  ASSERT_TRUE(Save().ok());
  // Only the new and the renamed file are located while stopped.
  EXPECT_EQ(device().last_save_stats().located_during_save, 2u);
  const std::vector<InodeFields> records = SavedInodes();
  ASSERT_EQ(records.size(), 51u);  // root + 50 - f4 + late
  EXPECT_EQ(device().last_save_stats().inodes, 51u);
  std::map<uint64_t, const InodeFields*> by_id;
  for (size_t i = 0; i < records.size(); ++i) {
    if (i > 0) {
      EXPECT_LT(records[i - 1].node_id, records[i].node_id);
    }
    by_id[records[i].node_id] = &records[i];
  }
  EXPECT_EQ(by_id.count(dropped), 0u);
  ASSERT_EQ(by_id.count(again), 1u);
  EXPECT_EQ(by_id[again]->lookups, 3u);
  ASSERT_EQ(by_id.count(fewer), 1u);
  EXPECT_EQ(by_id[fewer]->lookups, 1u);
  ASSERT_EQ(by_id.count(late), 1u);
  EXPECT_EQ(by_id[late]->name, "late");
  ASSERT_EQ(by_id.count(moved), 1u);
  EXPECT_EQ(by_id[moved]->name, "g9");
  EXPECT_EQ(by_id[moved]->lookups, 2u);
  // What the table says now, for every record.
  for (const InodeFields& r : records) {
    if (r.node_id == FUSE_ROOT_ID) continue;
    EXPECT_EQ(r.lookups, fs().inodes().Info(r.node_id)->lookups) << r.node_id;
  }
}

TEST_F(GatheringTest, StoppedPhaseLocatesOnlyWhatChangedAfterGathering) {
  LookUpFiles(200);
  device().OnLogAllChanged(true);
  ASSERT_TRUE(device().gatherer().WaitForPass(kPassTimeout));
  // During pre-copy the guest renames one file and creates another.
  ASSERT_TRUE(driver().Rename(FUSE_ROOT_ID, "f7", FUSE_ROOT_ID, "g7").ok());
  ASSERT_TRUE(driver().Create(FUSE_ROOT_ID, "new", O_RDWR, 0644).ok());
  ASSERT_TRUE(Save().ok());
  const StateWriteStats stats = device().last_save_stats();
  EXPECT_EQ(stats.inodes, 202u);  // root + 200 + new
  EXPECT_EQ(stats.located_during_save, 2u);
  EXPECT_EQ(stats.unlocated, 0u);
  EXPECT_EQ(stats.handles, 1u);
}

TEST_F(GatheringTest, CancelDiscardsWhatWasGathered) {
  LookUpFiles(20);
  device().OnLogAllChanged(true);
  ASSERT_TRUE(device().gatherer().WaitForPass(kPassTimeout));
  device().OnLogAllChanged(false);  // migration cancelled
  ASSERT_TRUE(Save().ok());
  // Nothing prepared survives: every inode is located during the save.
  EXPECT_EQ(device().last_save_stats().located_during_save, 21u);
}

TEST_F(GatheringTest, ARenameAfterGatheringIsSavedUnderItsNewName) {
  LookUpFiles(3);
  const uint64_t f1 = MustLookup(FUSE_ROOT_ID, "f1");
  device().OnLogAllChanged(true);
  ASSERT_TRUE(device().gatherer().WaitForPass(kPassTimeout));
  ASSERT_TRUE(driver().Rename(FUSE_ROOT_ID, "f1", FUSE_ROOT_ID, "moved").ok());
  ASSERT_TRUE(Save().ok());
  UniqueFd in = BytesFd(saved_);
  FrameReader r(in.get());
  std::string payload;
  ASSERT_TRUE(*r.Next(&payload));  // header
  bool found = false;
  while (true) {
    auto more = r.Next(&payload);
    ASSERT_TRUE(more.ok());
    if (!*more) break;
    fs_state::v1::StateChunk chunk;
    ASSERT_TRUE(chunk.ParseFromString(payload));
    StableVector<InodeFields> records;
    ASSERT_TRUE(
        DecodeInodeColumns(chunk.inode_columns(), InodeIdentity{}, 0, &records)
            .ok());
    for (size_t i = 0; i < records.size(); ++i) {
      const InodeFields& rec = records[i];
      if (rec.node_id != f1) continue;
      found = true;
      EXPECT_EQ(rec.name, "moved");
      EXPECT_EQ(rec.lookups, 2u);
    }
  }
  EXPECT_TRUE(found);
}

TEST_F(GatheringTest, SaveLeavesTheSourceTablesUnchanged) {
  LookUpFiles(10);
  auto c = driver().Create(FUSE_ROOT_ID, "open", O_RDWR, 0644);
  ASSERT_TRUE(c.ok());
  const size_t inodes = fs().inodes().size();
  const uint64_t next_node = fs().inodes().next_node_id();
  const uint64_t next_fh = fs().handles().next_fh();
  const auto info = fs().inodes().Info(c->entry.nodeid);
  device().OnLogAllChanged(true);
  ASSERT_TRUE(Save().ok());
  EXPECT_EQ(fs().inodes().size(), inodes);
  EXPECT_EQ(fs().inodes().next_node_id(), next_node);
  EXPECT_EQ(fs().handles().next_fh(), next_fh);
  EXPECT_EQ(fs().inodes().Info(c->entry.nodeid)->lookups, info->lookups);
  // And the guest carries on as before.
  ASSERT_TRUE(driver().Write(c->entry.nodeid, c->open.fh, 0, Bytes("go")).ok());
  EXPECT_EQ(ReadHostFile("open"), "go");
}

TEST_F(GatheringTest, LargeTablesStreamInManyChunksThroughAPipe) {
  // Names that share no prefix with their predecessor, so the stream
  // outgrows a pipe buffer although names are front-coded.
  for (int i = 0; i < 3000; ++i) {
    const std::string name =
        absl::StrCat(i % 10, std::string(48, 'a' + i % 26), i);
    WriteHostFile(name, "x");
    MustLookup(FUSE_ROOT_ID, name);
  }
  // A change after the gathering: its record comes in a chunk of its own.
  device().OnLogAllChanged(true);
  ASSERT_TRUE(device().gatherer().WaitForPass(kPassTimeout));
  ASSERT_TRUE(driver().Create(FUSE_ROOT_ID, "late", O_RDWR, 0644).ok());
  FsConfig config = Config();
  config.shared_dir = dir_.path();
  config.migration_on_error = MigrationErrorPolicy::kGuestError;
  auto dest = VirtioFsDevice::Create(config, VirtioFsOptions{});
  ASSERT_TRUE(dest.ok());
  MigrationResult r = MigrateState(device(), **dest);
  ASSERT_TRUE(r.save.ok()) << r.save;
  ASSERT_TRUE(r.load.ok()) << r.load;
  EXPECT_GE(device().last_save_stats().chunks, 3u);
  EXPECT_GT(device().last_save_stats().bytes, 65536u);  // > a pipe buffer
  EXPECT_EQ((*dest)->fs().inodes().size(), 3002u);
  EXPECT_EQ((*dest)->fs().handles().size(), 1u);
  // Installed lazily: nothing re-opened until used.
  size_t migrated = 0;
  for (const auto& e : (*dest)->fs().inodes().Snapshot()) {
    migrated += e.inode->migrated != nullptr;
  }
  EXPECT_EQ(migrated, 3001u);
}

}  // namespace
}  // namespace vhostmig::fs
