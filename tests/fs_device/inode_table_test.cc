// InodeTable invariants: identity dedup, lookup/open reference counting,
// node ids never reused, root pinned; change tracking; and the migrated
// records a load installs (consulted on a miss, promoted on first use,
// merged in batches) behaving as if they had been inserted one by one. The
// HandleTable's migrated handles likewise.
#include "fs_device/inode_table.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "fs_device/handle_table.h"
#include "fs_device/migrated_tables.h"
#include "gtest/gtest.h"

namespace vhostmig::fs {
namespace {

Inode MakeInode(uint64_t ino, mode_t type = S_IFREG,
                std::optional<FileHandle> handle = std::nullopt) {
  Inode i;
  i.identity = InodeIdentity{1, ino, 7};
  i.type = type;
  i.handle = std::move(handle);
  return i;
}

InodeTable MakeTable() {
  Inode root = MakeInode(2, S_IFDIR);
  root.path_fd.reset(open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  return InodeTable(std::move(root));
}

TEST(InodeTableTest, RootIsNodeOneAndSurvivesForgetAndClear) {
  InodeTable t = MakeTable();
  ASSERT_NE(t.Get(kRootNodeId), nullptr);
  t.Forget(kRootNodeId, 1000);
  t.ClearExceptRoot();
  EXPECT_NE(t.Get(kRootNodeId), nullptr);
  EXPECT_EQ(t.size(), 1u);
}

TEST(InodeTableTest, SameIdentityGetsTheSameNodeAndOneMoreLookup) {
  InodeTable t = MakeTable();
  auto a = t.Ref(MakeInode(10), {kRootNodeId, "a"});
  auto b = t.Ref(MakeInode(10), {kRootNodeId, "b"});
  EXPECT_EQ(a->node_id, b->node_id);
  EXPECT_EQ(t.Info(a->node_id)->lookups, 2u);
  EXPECT_EQ(t.Info(a->node_id)->location.name, "b");
}

TEST(InodeTableTest, DifferentFileHandleForTheSameInodeNumberIsANewNode) {
  InodeTable t = MakeTable();
  FileHandle h1{1, "gen1", 7};
  FileHandle h2{1, "gen2", 7};
  auto a = t.Ref(MakeInode(10, S_IFREG, h1), {});
  auto b = t.Ref(MakeInode(10, S_IFREG, h2), {});
  EXPECT_NE(a->node_id, b->node_id);
  // The identity now names the newer file; the old node lives on.
  EXPECT_EQ(*t.FindByIdentity(a->identity), b->node_id);
  EXPECT_NE(t.Get(a->node_id), nullptr);
  // Forgetting the old node must not unlink the new one from the index.
  t.Forget(a->node_id, 1);
  EXPECT_EQ(*t.FindByIdentity(b->identity), b->node_id);
}

TEST(InodeTableTest, ChangedFileTypeForTheSameInodeNumberIsANewNode) {
  InodeTable t = MakeTable();
  auto a = t.Ref(MakeInode(10, S_IFREG), {});
  auto b = t.Ref(MakeInode(10, S_IFDIR), {});
  EXPECT_NE(a->node_id, b->node_id);
}

TEST(InodeTableTest, EntryDiesWhenLookupsAndOpensAreBothZero) {
  InodeTable t = MakeTable();
  auto a = t.Ref(MakeInode(10), {});
  const uint64_t id = a->node_id;
  ASSERT_TRUE(t.AddOpen(id));
  t.Forget(id, 1);
  EXPECT_NE(t.Get(id), nullptr);
  t.ReleaseOpen(id);
  EXPECT_EQ(t.Get(id), nullptr);
  EXPECT_FALSE(t.FindByIdentity(a->identity).has_value());
  // A request holding the Inode still has it.
  EXPECT_EQ(a->node_id, id);
}

TEST(InodeTableTest, ForgetOfMoreThanHeldDropsEverything) {
  InodeTable t = MakeTable();
  auto a = t.Ref(MakeInode(10), {});
  t.Forget(a->node_id, ~0ull);
  EXPECT_EQ(t.Get(a->node_id), nullptr);
}

TEST(InodeTableTest, NodeIdsAreNeverReused) {
  InodeTable t = MakeTable();
  auto a = t.Ref(MakeInode(10), {});
  const uint64_t first = a->node_id;
  t.Forget(first, 1);
  t.ClearExceptRoot();
  auto b = t.Ref(MakeInode(10), {});
  EXPECT_GT(b->node_id, first);
}

TEST(InodeTableTest, AddOpenOfAnUnknownNodeFails) {
  InodeTable t = MakeTable();
  EXPECT_FALSE(t.AddOpen(12345));
}

TEST(InodeTableTest, ChangeTrackingTellsRelocationsFromRecounts) {
  InodeTable t = MakeTable();
  auto a = t.Ref(MakeInode(10), {kRootNodeId, "a"});
  auto b = t.Ref(MakeInode(11), {kRootNodeId, "b"});
  auto c = t.Ref(MakeInode(12), {kRootNodeId, "c"});
  auto d = t.Ref(MakeInode(13), {kRootNodeId, "d"});
  t.Ref(MakeInode(13), {kRootNodeId, "d"});
  t.StartChangeTracking();
  t.Ref(MakeInode(10), {kRootNodeId, "a"});           // same place: recount
  t.Ref(MakeInode(11), {kRootNodeId, "b2"});          // elsewhere: relocated
  t.Forget(c->node_id, 1);                            // gone: relocated
  t.Forget(d->node_id, 1);                            // one left: recount
  auto e = t.Ref(MakeInode(14), {kRootNodeId, "e"});  // new: relocated
  InodeTable::Changes changes = t.TakeChanges();
  std::sort(changes.relocated.begin(), changes.relocated.end());
  std::sort(changes.recounted.begin(), changes.recounted.end());
  EXPECT_FALSE(changes.all);
  EXPECT_EQ(changes.relocated,
            (std::vector<uint64_t>{b->node_id, c->node_id, e->node_id}));
  EXPECT_EQ(changes.recounted, (std::vector<uint64_t>{a->node_id, d->node_id}));
  // A re-opened inode must be located again.
  auto fresh = std::make_shared<Inode>(MakeInode(10));
  fresh->node_id = a->node_id;
  t.ReplaceInode(a->node_id, t.Get(a->node_id), fresh);
  EXPECT_EQ(t.TakeChanges().relocated, std::vector<uint64_t>{a->node_id});
}

// A load's records, built as the loader does (ascending ids, root first).
class Migrated {
 public:
  Migrated() : m_(std::make_shared<MigratedInodes>()) {
    m_->source_dev = 1;
    m_->source_mount_id = 7;
    m_->identity_comparable = true;
    Add(kRootNodeId, S_IFDIR, 0, "", 2, 0);
    m_->kind[0] |= kMigratedRoot;
    m_->kind[0] &= ~kMigratedPath;
  }
  Migrated& Add(uint64_t id, mode_t type, uint64_t parent,
                const std::string& name, uint64_t ino, uint64_t lookups,
                uint32_t opens = 0) {
    m_->node_id.push_back(id);
    m_->kind.push_back(static_cast<uint8_t>(type >> 12) | kMigratedPath);
    m_->lookups.push_back(lookups);
    m_->opens.push_back(opens);
    m_->ino.push_back(ino);
    m_->parent.push_back(parent);
    m_->names.append(name.data(), name.size());
    m_->name_end.push_back(static_cast<uint32_t>(m_->names.size()));
    return *this;
  }
  std::shared_ptr<const MigratedInodes> Take() { return std::move(m_); }

 private:
  std::shared_ptr<MigratedInodes> m_;
};

InodeIdentity Id(uint64_t ino) { return InodeIdentity{1, ino, 7}; }

TEST(MigratedInodesTest, InstalledAtOnceAndPromotedOnFirstUse) {
  InodeTable t = MakeTable();
  ASSERT_TRUE(t.InstallMigrated(Migrated()
                                    .Add(5, S_IFDIR, 1, "dir", 50, 1)
                                    .Add(9, S_IFREG, 5, "file", 90, 3, 2)
                                    .Take(),
                                100)
                  .ok());
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(t.unmerged_migrated(), 2u);
  EXPECT_EQ(t.next_node_id(), 100u);
  EXPECT_EQ(t.Get(7), nullptr);  // between migrated ids: nothing
  auto file = t.Get(9);
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(t.unmerged_migrated(), 1u);
  EXPECT_EQ(file->node_id, 9u);
  EXPECT_TRUE(file->is_regular());
  EXPECT_EQ(file->identity, Id(90));
  ASSERT_NE(file->migrated, nullptr);
  EXPECT_EQ(file->migrated->parent, 5u);
  EXPECT_EQ(file->migrated->name, "file");
  EXPECT_TRUE(file->migrated->identity_comparable);
  EXPECT_EQ(t.Get(9), file);  // promoted once: the same object
  auto info = t.Info(9);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->lookups, 3u);
  EXPECT_EQ(info->opens, 2u);
  EXPECT_EQ(info->location.name, "file");
  EXPECT_EQ(t.size(), 3u);
  // The table is in use now: a second load is refused.
  EXPECT_FALSE(t.InstallMigrated(Migrated().Take(), 100).ok());
}

TEST(MigratedInodesTest, LookupOfAnUnmergedRecordGetsItsNodeIdAndExactCounts) {
  InodeTable t = MakeTable();
  ASSERT_TRUE(
      t.InstallMigrated(Migrated().Add(9, S_IFREG, 1, "file", 90, 2).Take(), 10)
          .ok());
  // A LOOKUP of the same file (same identity and type) before any merge.
  auto again = t.Ref(MakeInode(90), {kRootNodeId, "file"});
  EXPECT_EQ(again->node_id, 9u);
  EXPECT_EQ(t.Info(9)->lookups, 3u);
  EXPECT_EQ(*t.FindByIdentity(Id(90)), 9u);
  // FORGET of all three: gone for good, never resurrected from the load.
  t.Forget(9, 2);
  EXPECT_NE(t.Get(9), nullptr);
  t.Forget(9, 1);
  EXPECT_EQ(t.Get(9), nullptr);
  EXPECT_FALSE(t.Info(9).has_value());
  EXPECT_FALSE(t.FindByIdentity(Id(90)).has_value());
  EXPECT_EQ(t.size(), 1u);
  EXPECT_TRUE(t.MergeMigrated(1000));
  EXPECT_EQ(t.Get(9), nullptr);
  // New ids continue above the migrated ones.
  EXPECT_EQ(t.Ref(MakeInode(91), {})->node_id, 10u);
}

TEST(MigratedInodesTest, ForgetAndOpensOfUnpromotedRecords) {
  InodeTable t = MakeTable();
  ASSERT_TRUE(t.InstallMigrated(Migrated()
                                    .Add(3, S_IFREG, 1, "a", 30, 1)
                                    .Add(4, S_IFREG, 1, "b", 40, 0, 1)
                                    .Take(),
                                10)
                  .ok());
  t.Forget(3, 1);  // never used before: promoted and removed
  EXPECT_EQ(t.Get(3), nullptr);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_TRUE(t.AddOpen(4));
  t.ReleaseOpen(4);
  EXPECT_NE(t.Get(4), nullptr);
  t.ReleaseOpen(4);  // the migrated handle's reference
  EXPECT_EQ(t.Get(4), nullptr);
  EXPECT_FALSE(t.AddOpen(4));
  EXPECT_EQ(t.size(), 1u);
}

TEST(MigratedInodesTest, MergingInBatchesKeepsEverything) {
  InodeTable t = MakeTable();
  Migrated m;
  constexpr uint64_t kCount = 5000;
  for (uint64_t i = 0; i < kCount; ++i) {
    m.Add(10 + 2 * i, S_IFREG, 1, "f" + std::to_string(i), 1000 + i, 1 + i % 3);
  }
  ASSERT_TRUE(t.InstallMigrated(m.Take(), 10 + 2 * kCount).ok());
  auto early = t.Get(10 + 2 * 77);  // promoted before the merge reaches it
  t.Forget(10 + 2 * 78, 100);       // and one gone before
  size_t rounds = 0;
  while (!t.MergeMigrated(700)) ++rounds;
  EXPECT_GT(rounds, 10u);  // identities first, then entries, 700 at a time
  EXPECT_EQ(t.unmerged_migrated(), 0u);
  EXPECT_EQ(t.size(), kCount);  // root + all but the forgotten one
  EXPECT_EQ(t.Get(10 + 2 * 77), early);
  EXPECT_EQ(t.Get(10 + 2 * 78), nullptr);
  EXPECT_FALSE(t.FindByIdentity(Id(1000 + 78)).has_value());
  for (uint64_t i : {0ull, 1ull, 4999ull}) {
    SCOPED_TRACE(i);
    EXPECT_EQ(*t.FindByIdentity(Id(1000 + i)), 10 + 2 * i);
    EXPECT_EQ(t.Info(10 + 2 * i)->lookups, 1 + i % 3);
    EXPECT_EQ(t.Get(10 + 2 * i)->migrated->name, "f" + std::to_string(i));
  }
  EXPECT_EQ(t.Snapshot().size(), kCount);
}

TEST(MigratedInodesTest, TheNewestRecordOfAnIdentityNamesIt) {
  // Two records with one identity (an inode number reused while the old
  // file stayed open): the higher node id is the newer file, whatever was
  // promoted or re-opened first.
  InodeTable t = MakeTable();
  ASSERT_TRUE(t.InstallMigrated(Migrated()
                                    .Add(3, S_IFREG, 1, "old", 30, 1)
                                    .Add(8, S_IFREG, 1, "new", 30, 1)
                                    .Take(),
                                10)
                  .ok());
  // Record 8 re-opened (and so indexed) before the identity pass.
  auto pending = t.Get(8);
  auto fresh = std::make_shared<Inode>(MakeInode(30));
  fresh->node_id = 8;
  t.ReplaceInode(8, pending, fresh);
  EXPECT_EQ(*t.FindByIdentity(Id(30)), 8u);
  EXPECT_EQ(t.Ref(MakeInode(30), {kRootNodeId, "new"})->node_id, 8u);
}

TEST(MigratedInodesTest, ClearDropsUnmergedRecords) {
  InodeTable t = MakeTable();
  ASSERT_TRUE(
      t.InstallMigrated(Migrated().Add(3, S_IFREG, 1, "a", 30, 1).Take(), 10)
          .ok());
  t.ResetToFresh();
  EXPECT_EQ(t.size(), 1u);
  EXPECT_EQ(t.Get(3), nullptr);
  EXPECT_EQ(t.next_node_id(), 2u);
  EXPECT_TRUE(t.MergeMigrated(10));
}

std::shared_ptr<const MigratedHandles> Handles(
    std::vector<std::pair<uint64_t, uint64_t>> fh_node) {
  auto m = std::make_shared<MigratedHandles>();
  for (const auto& [fh, node] : fh_node) {
    m->fh.push_back(fh);
    m->node_id.push_back(node);
    m->flags.push_back(O_RDWR);
    m->is_dir.push_back(0);
  }
  return m;
}

TEST(MigratedHandlesTest, PromotedOnFirstUseAndNeverResurrected) {
  HandleTable t;
  ASSERT_TRUE(t.InstallMigrated(Handles({{2, 5}, {4, 6}, {9, 5}}), 10).ok());
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(t.next_fh(), 10u);
  EXPECT_EQ(t.Get(3), nullptr);
  auto f = t.Get(4);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->node_id, 6u);
  EXPECT_EQ(f->flags, O_RDWR);
  EXPECT_TRUE(f->migrated);
  EXPECT_EQ(t.Get(4), f);
  EXPECT_EQ(t.Remove(9)->node_id, 5u);  // released before first use
  EXPECT_EQ(t.Get(9), nullptr);
  EXPECT_EQ(t.Remove(9), nullptr);
  EXPECT_EQ(t.size(), 2u);
  auto replacement = std::make_shared<OpenFile>();
  EXPECT_EQ(t.Replace(2, t.Get(2), replacement), replacement);
  EXPECT_EQ(t.Insert(std::make_shared<OpenFile>()), 10u);
  EXPECT_FALSE(t.MergeMigrated(1));
  EXPECT_TRUE(t.MergeMigrated(10));
  EXPECT_EQ(t.Snapshot().size(), 3u);  // 2, 4 and the new 10
  EXPECT_EQ(t.Get(9), nullptr);
}

TEST(MigratedHandlesTest, SnapshotAndClearIncludeUnpromotedHandles) {
  HandleTable t;
  ASSERT_TRUE(t.InstallMigrated(Handles({{1, 5}, {2, 6}}), 3).ok());
  EXPECT_EQ(t.Snapshot().size(), 2u);
  EXPECT_EQ(t.Clear().size(), 2u);
  EXPECT_EQ(t.size(), 0u);
  HandleTable used;
  used.Insert(std::make_shared<OpenFile>());
  EXPECT_FALSE(used.InstallMigrated(Handles({{5, 5}}), 6).ok());
}

}  // namespace
}  // namespace vhostmig::fs
