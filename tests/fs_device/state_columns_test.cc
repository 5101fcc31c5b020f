// The column coding of device-state format 2 (fs_device/state_columns.h):
// every record round-trips whatever its values (ids in any order, names
// of any bytes but NUL and '/', own devices, file handles), and malformed
// columns are refused naming the chunk and record.
#include "fs_device/state_columns.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include <limits>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace vhostmig::fs {
namespace {

namespace pb = fs_state::v1;

const InodeIdentity kRoot{7, 1000, 42};

TEST(StateColumnsTest, RecordsRoundTripWithAnyValues) {
  struct In {
    uint64_t node, lookups;
    uint32_t type;
    InodeIdentity id;
    bool root, path;
    uint64_t parent;
    std::string name;
    bool handle;
  };
  const std::vector<In> records = {
      {1, 0, S_IFDIR, {7, 1000, 42}, true, false, 0, "", false},
      {2, 1, S_IFDIR, {7, 1001, 42}, false, true, 1, "dir", false},
      {3, 5, S_IFREG, {7, 900, 42}, false, true, 2, "dirt", false},
      // Descending ids and inode numbers, a non-UTF-8 name, another device.
      {std::numeric_limits<uint64_t>::max(),
       1,
       S_IFLNK,
       {9, 1, 3},
       false,
       true,
       2,
       std::string("\xff\xfe-x", 4),
       false},
      {4, 1, S_IFSOCK, {7, 0, 42}, false, false, 0, "", true},
      {5, 2, S_IFIFO, {7, 1u << 31, 42}, false, true, 1, "d", true},
  };
  pb::InodeColumns columns;
  InodeColumnEncoder encoder(kRoot, &columns);
  FileHandle handle;
  handle.type = 1;
  handle.bytes = std::string(8, '\x01');
  handle.mount_id = 42;
  for (const In& r : records) {
    encoder.Add(r.node, r.lookups, r.type, r.id, r.root, r.path, r.parent,
                r.name, r.handle ? &handle : nullptr);
  }
  // Serialize and parse, as the stream does.
  pb::InodeColumns parsed;
  ASSERT_TRUE(parsed.ParseFromString(columns.SerializeAsString()));
  StableVector<InodeFields> out;
  ASSERT_TRUE(DecodeInodeColumns(parsed, kRoot, 3, &out).ok());
  ASSERT_EQ(out.size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    SCOPED_TRACE(i);
    const In& want = records[i];
    const InodeFields& got = out[i];
    EXPECT_EQ(got.node_id, want.node);
    EXPECT_EQ(got.lookups, want.lookups);
    EXPECT_EQ(got.file_type, want.type);
    EXPECT_EQ(got.identity, want.id);
    EXPECT_EQ(got.root, want.root);
    EXPECT_EQ(got.has_path, want.path);
    if (want.path) {
      EXPECT_EQ(got.parent, want.parent);
      EXPECT_EQ(got.name, want.name);
    }
    EXPECT_EQ(got.has_handle, want.handle);
    if (want.handle) {
      EXPECT_EQ(got.handle, handle.bytes);
      EXPECT_EQ(got.handle_type, handle.type);
      EXPECT_EQ(got.handle_mount_id, handle.mount_id);
    }
  }
}

TEST(StateColumnsTest, ATypicalFileCostsAFewBytes) {
  pb::InodeColumns columns;
  InodeColumnEncoder encoder(kRoot, &columns);
  constexpr int kFiles = 1000;
  for (int i = 0; i < kFiles; ++i) {
    char name[16];
    snprintf(name, sizeof(name), "f%07d", i);
    encoder.Add(10 + i, 1, S_IFREG, InodeIdentity{7, 5000u + i, 42}, false,
                true, 2, name, nullptr);
  }
  EXPECT_LT(columns.ByteSizeLong(), 8u * kFiles);
}

TEST(StateColumnsTest, HandlesRoundTrip) {
  pb::HandleColumns columns;
  HandleColumnEncoder encoder(&columns);
  encoder.Add(1, 9, O_RDWR | O_APPEND, false);
  encoder.Add(2, 3, O_RDONLY | O_DIRECTORY, true);
  encoder.Add(std::numeric_limits<uint64_t>::max(), 1, -1 & ~O_CREAT, false);
  StableVector<HandleFields> out;
  ASSERT_TRUE(DecodeHandleColumns(columns, 0, &out).ok());
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].fh, 1u);
  EXPECT_EQ(out[0].node_id, 9u);
  EXPECT_EQ(out[0].flags, O_RDWR | O_APPEND);
  EXPECT_FALSE(out[0].is_dir);
  EXPECT_EQ(out[1].node_id, 3u);
  EXPECT_TRUE(out[1].is_dir);
  EXPECT_EQ(out[2].fh, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(out[2].flags, -1 & ~O_CREAT);
}

// Three records with paths, to damage in each test.
pb::InodeColumns ThreeFiles() {
  pb::InodeColumns columns;
  InodeColumnEncoder encoder(kRoot, &columns);
  encoder.Add(2, 1, S_IFREG, kRoot, false, true, 1, "abc", nullptr);
  encoder.Add(3, 2, S_IFREG, kRoot, false, true, 1, "abd", nullptr);
  encoder.Add(4, 1, S_IFREG, kRoot, false, true, 1, "x", nullptr);
  return columns;
}

void ExpectRefused(const pb::InodeColumns& c, const std::string& what) {
  StableVector<InodeFields> out;
  absl::Status s = DecodeInodeColumns(c, kRoot, 5, &out);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "chunk 5")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), what)) << s;
}

TEST(StateColumnsTest, MalformedColumnsAreRefused) {
  {
    pb::InodeColumns c = ThreeFiles();
    c.mutable_node_delta()->RemoveLast();
    ExpectRefused(c, "column lengths differ");
  }
  {
    pb::InodeColumns c = ThreeFiles();
    c.set_kind(1, c.kind(1) | 0x100);
    ExpectRefused(c, "unknown kind bits");
  }
  {
    pb::InodeColumns c = ThreeFiles();
    c.set_kind(0, (c.kind(0) & ~kKindTypeMask) | 7);
    ExpectRefused(c, "unknown file type code");
  }
  {
    pb::InodeColumns c = ThreeFiles();
    c.set_kind(1, c.kind(1) | kKindOneLookup);  // its lookups entry is extra
    ExpectRefused(c, "more values than the kinds use");
  }
  {
    pb::InodeColumns c = ThreeFiles();
    c.set_kind(0, c.kind(0) & ~kKindOneLookup);  // needs a lookups entry
    c.clear_lookups();
    ExpectRefused(c, "lookups missing");
  }
  {
    pb::InodeColumns c = ThreeFiles();
    c.set_name_shared(1, 9);
    ExpectRefused(c, "shares more than the previous name");
  }
  {
    pb::InodeColumns c = ThreeFiles();
    c.mutable_name_suffixes()->pop_back();  // the last NUL
    ExpectRefused(c, "name unterminated");
  }
  {
    // One long name, then records that each share all of it: refused at
    // the first, before the chunk multiplies it.
    pb::InodeColumns c;
    InodeColumnEncoder encoder(kRoot, &c);
    const std::string longest(NAME_MAX, 'n');
    encoder.Add(2, 1, S_IFREG, kRoot, false, true, 1, longest, nullptr);
    encoder.Add(3, 1, S_IFREG, kRoot, false, true, 1, longest + "x", nullptr);
    ExpectRefused(c, "name longer than NAME_MAX");
  }
  {
    pb::InodeColumns c = ThreeFiles();
    c.set_kind(2, c.kind(2) | kKindHandle);
    ExpectRefused(c, "file handle missing");
  }
  {
    pb::InodeColumns c = ThreeFiles();
    c.set_kind(2, c.kind(2) | kKindOwnDevice);
    ExpectRefused(c, "device columns too short");
  }
  {
    pb::HandleColumns h;
    h.add_fh_delta(1);
    h.add_node_delta(2);
    StableVector<HandleFields> out;
    EXPECT_FALSE(DecodeHandleColumns(h, 0, &out).ok());
    h.add_flags_dir(uint64_t{1} << 40);
    EXPECT_FALSE(DecodeHandleColumns(h, 0, &out).ok());
  }
}

}  // namespace
}  // namespace vhostmig::fs
