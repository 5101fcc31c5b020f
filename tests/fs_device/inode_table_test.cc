// InodeTable invariants: identity dedup, lookup/open reference counting,
// node ids never reused, root pinned.
#include "fs_device/inode_table.h"

#include <fcntl.h>
#include <sys/stat.h>

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

}  // namespace
}  // namespace vhostmig::fs
