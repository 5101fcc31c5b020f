// The state stream is untrusted input: each malformed or hostile stream
// fails LoadState with a message naming what is wrong, leaves the
// destination's tables empty, and changes nothing on disk.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "fs_device/state_frame.h"
#include "fs_device/state_writer.h"
#include "gtest/gtest.h"
#include "proto/fs_state.pb.h"
#include "tests/fs_device/fs_test_fixture.h"
#include "tests/fs_device/state_test_util.h"

namespace vhostmig::fs {
namespace {

namespace pb = fs_state::v1;

// Builds a stream: header, one chunk of records, a final chunk with
// counters, session and end marker (each part adjustable before Bytes()).
class StreamBuilder {
 public:
  StreamBuilder() {
    header.set_magic(kStateMagic);
    header.set_format_version(kStateFormatVersion);
    header.set_oldest_compatible_version(kOldestCompatibleStateVersion);
    header.set_mode(pb::MIGRATION_MODE_FIND_PATHS);
    pb::InodeRecord* root = records.add_inodes();
    root->set_node_id(1);
    root->set_root(true);
    root->set_file_type(S_IFDIR);
    last.mutable_counters()->set_next_node_id(100);
    last.mutable_counters()->set_next_fh(100);
    last.mutable_session();
  }
  pb::InodeRecord* AddFile(uint64_t id, uint64_t parent,
                           const std::string& name, uint32_t type = S_IFREG) {
    pb::InodeRecord* r = records.add_inodes();
    r->set_node_id(id);
    r->set_lookups(1);
    r->set_file_type(type);
    r->mutable_path()->set_parent(parent);
    r->mutable_path()->set_name(name);
    return r;
  }
  pb::HandleRecord* AddHandle(uint64_t fh, uint64_t node, int flags = 0,
                              bool dir = false) {
    pb::HandleRecord* h = records.add_handles();
    h->set_fh(fh);
    h->set_node_id(node);
    h->set_flags(flags);
    h->set_is_dir(dir);
    return h;
  }
  std::string Bytes(bool fix_end = true) {
    if (fix_end) {
      last.mutable_end()->set_inode_count(records.inodes_size());
      last.mutable_end()->set_handle_count(records.handles_size());
      last.mutable_end()->set_chunk_count(2);
    }
    UniqueFd fd(memfd_create("stream", MFD_CLOEXEC));
    FrameWriter w(fd.get());
    EXPECT_TRUE(w.Write(header).ok());
    EXPECT_TRUE(w.Write(records).ok());
    EXPECT_TRUE(w.Write(last).ok());
    return FdBytes(fd.get());
  }

  pb::StateHeader header;
  pb::StateChunk records;
  pb::StateChunk last;
};

class HostileStreamTest : public FsDeviceTest {
 protected:
  FsConfig Config() override {
    FsConfig c = FsDeviceTest::Config();
    c.migration_on_error = MigrationErrorPolicy::kAbort;
    return c;
  }
  void SetUp() override {
    FsDeviceTest::SetUp();
    // A fresh destination: no FUSE_INIT, empty tables. (The fixture's
    // device got INIT, which leaves its tables empty, so load into it.)
    WriteHostFile("file", "content");
    ASSERT_EQ(mkdir(HostPath("dir").c_str(), 0755), 0);
    before_ = Listing();
  }
  absl::Status Load(const std::string& bytes) {
    UniqueFd fd = BytesFd(bytes);
    EXPECT_TRUE(fd.valid());
    return device().LoadState(fd.get());
  }
  std::set<std::string> Listing() {
    std::set<std::string> out;
    for (const auto& e :
         std::filesystem::recursive_directory_iterator(dir_.path())) {
      out.insert(e.path().string() + ":" +
                 std::to_string(e.is_regular_file() ? e.file_size() : 0));
    }
    return out;
  }
  // The load failed, saying `what`, and left no trace.
  void ExpectRejected(const absl::Status& s, const std::string& what) {
    EXPECT_FALSE(s.ok());
    EXPECT_TRUE(absl::StrContains(s.message(), what))
        << "message: " << s.message() << "\nexpected to mention: " << what;
    EXPECT_EQ(fs().inodes().size(), 1u);
    EXPECT_EQ(fs().inodes().next_node_id(), 2u);
    EXPECT_EQ(fs().handles().size(), 0u);
    EXPECT_EQ(fs().handles().next_fh(), 1u);
    EXPECT_EQ(Listing(), before_);
    EXPECT_EQ(ReadHostFile("file"), "content");
  }

  uint64_t Ino(const std::string& rel) {
    struct stat st;
    EXPECT_EQ(lstat(HostPath(rel).c_str(), &st), 0) << rel;
    return st.st_ino;
  }

  std::set<std::string> before_;
};

TEST_F(HostileStreamTest, AWellFormedStreamLoads) {
  StreamBuilder b;
  b.AddFile(2, 1, "file")->mutable_identity()->set_ino(Ino("file"));
  b.AddHandle(7, 2, O_RDWR);
  const absl::Status s = Load(b.Bytes());
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(fs().inodes().size(), 2u);
  EXPECT_EQ(fs().handles().size(), 1u);
}

TEST_F(HostileStreamTest, WrongMagicIsRefused) {
  StreamBuilder b;
  b.header.set_magic(0x12345678);
  ExpectRejected(Load(b.Bytes()), "not a vhostmig fs state stream");
}

TEST_F(HostileStreamTest, NewerFormatIsRefusedNamingBothVersions) {
  StreamBuilder b;
  b.header.set_format_version(kStateFormatVersion + 1);
  b.header.set_oldest_compatible_version(kStateFormatVersion + 1);
  const absl::Status s = Load(b.Bytes());
  ExpectRejected(
      s, absl::StrCat("stream format version ", kStateFormatVersion + 1));
  EXPECT_TRUE(
      absl::StrContains(s.message(), absl::StrCat("to ", kStateFormatVersion)))
      << s.message();
}

TEST_F(HostileStreamTest, NewerFormatStillCompatibleLoads) {
  StreamBuilder b;
  b.header.set_format_version(kStateFormatVersion + 1);
  b.header.set_oldest_compatible_version(kStateFormatVersion);
  EXPECT_TRUE(Load(b.Bytes()).ok());
}

TEST_F(HostileStreamTest, TruncatedChunkIsRefused) {
  StreamBuilder b;
  b.AddFile(2, 1, "file");
  std::string bytes = b.Bytes();
  bytes.resize(bytes.size() - 3);
  ExpectRejected(Load(bytes), "truncated");
}

TEST_F(HostileStreamTest, StreamWithoutEndMarkerIsRefused) {
  StreamBuilder b;
  b.AddFile(2, 1, "file");
  b.last.clear_end();
  ExpectRejected(Load(b.Bytes(false)), "without the end marker");
}

TEST_F(HostileStreamTest, CorruptedChunkFailsItsChecksum) {
  StreamBuilder b;
  b.AddFile(2, 1, "file");
  std::string bytes = b.Bytes();
  bytes[bytes.size() - 2] ^= 0x40;
  ExpectRejected(Load(bytes), "checksum");
}

TEST_F(HostileStreamTest, HugeFrameLengthIsRefusedBeforeAllocating) {
  std::string bytes = StreamBuilder().Bytes();
  bytes[0] = bytes[1] = bytes[2] = bytes[3] = '\xff';
  ExpectRejected(Load(bytes), "claims 4294967295 bytes");
}

TEST_F(HostileStreamTest, DataAfterTheEndMarkerIsRefused) {
  StreamBuilder b;
  std::string bytes = b.Bytes();
  UniqueFd fd(memfd_create("extra", MFD_CLOEXEC));
  FrameWriter w(fd.get());
  ASSERT_TRUE(w.Write(pb::StateChunk()).ok());
  ExpectRejected(Load(bytes + FdBytes(fd.get())), "follows the end marker");
}

TEST_F(HostileStreamTest, EndMarkerCountsMustMatch) {
  StreamBuilder b;
  b.AddFile(2, 1, "file");
  b.Bytes();
  b.last.mutable_end()->set_inode_count(5);
  ExpectRejected(Load(b.Bytes(false)), "end marker counts");
}

TEST_F(HostileStreamTest, UnknownParentIsRefused) {
  StreamBuilder b;
  b.AddFile(2, 42, "file");
  ExpectRejected(Load(b.Bytes()), "node 2: unknown parent node 42");
}

TEST_F(HostileStreamTest, ParentCycleIsRefused) {
  StreamBuilder b;
  b.AddFile(2, 3, "a", S_IFDIR);
  b.AddFile(3, 4, "b", S_IFDIR);
  b.AddFile(4, 2, "c", S_IFDIR);
  ExpectRejected(Load(b.Bytes()), "cycle");
}

TEST_F(HostileStreamTest, SelfParentIsRefused) {
  StreamBuilder b;
  b.AddFile(2, 2, "a", S_IFDIR);
  ExpectRejected(Load(b.Bytes()), "cycle");
}

TEST_F(HostileStreamTest, ParentThatIsNotADirectoryIsRefused) {
  StreamBuilder b;
  b.AddFile(2, 1, "file");
  b.AddFile(3, 2, "x");
  ExpectRejected(Load(b.Bytes()), "is not a directory");
}

class HostileNameTest : public HostileStreamTest,
                        public ::testing::WithParamInterface<std::string> {};

TEST_P(HostileNameTest, NameThatIsNotOneComponentIsRefused) {
  StreamBuilder b;
  b.AddFile(2, 1, GetParam());
  ExpectRejected(Load(b.Bytes()), "is not a single path component");
}

INSTANTIATE_TEST_SUITE_P(Names, HostileNameTest,
                         ::testing::Values("", ".", "..", "a/b", "../file",
                                           "/etc", std::string(256, 'n')));

TEST_F(HostileStreamTest, NonUtf8NamesAreAccepted) {
  const std::string name = "caf\xe9\xff";
  WriteHostFile(name, "latin1");
  before_ = Listing();
  StreamBuilder b;
  b.AddFile(2, 1, name)->mutable_identity()->set_ino(Ino(name));
  b.AddHandle(3, 2, O_RDONLY);
  const absl::Status s = Load(b.Bytes());
  ASSERT_TRUE(s.ok()) << s;
  std::shared_ptr<OpenFile> f;
  ASSERT_EQ(fs().OpenFileFor(3, 2, false, &f), 0);
}

TEST_F(HostileStreamTest, DuplicateNodeIdIsRefused) {
  StreamBuilder b;
  b.AddFile(2, 1, "file");
  b.AddFile(2, 1, "dir", S_IFDIR);
  ExpectRejected(Load(b.Bytes()), "node 2: duplicate node id");
}

TEST_F(HostileStreamTest, DuplicateNodeIdsFarApartAreRefused) {
  StreamBuilder b;
  b.AddFile(2, 1, "file");
  b.AddFile(5, 1, "dir", S_IFDIR);
  b.AddFile(3, 1, "x");
  b.AddFile(2, 1, "y");
  ExpectRejected(Load(b.Bytes()), "node 2: duplicate node id");
}

TEST_F(HostileStreamTest, RecordsInAnyOrderLoad) {
  // The writer sends ascending ids; another writer need not. Children
  // before parents, the root last, handles in descending order.
  WriteHostFile("dir/inner", "inner-data");
  before_ = Listing();
  StreamBuilder b;
  b.AddFile(9, 4, "inner")->mutable_identity()->set_ino(Ino("dir/inner"));
  b.AddFile(4, 1, "dir", S_IFDIR)->mutable_identity()->set_ino(Ino("dir"));
  b.AddFile(2, 1, "file")->mutable_identity()->set_ino(Ino("file"));
  b.records.mutable_inodes()->SwapElements(0, 3);
  b.AddHandle(8, 4, O_RDONLY, true);
  b.AddHandle(7, 9, O_RDONLY);
  b.AddHandle(3, 2, O_RDWR);
  const absl::Status s = Load(b.Bytes());
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(fs().inodes().size(), 4u);
  EXPECT_EQ(fs().handles().size(), 3u);
  auto inner = fs().GetInode(9);
  ASSERT_NE(inner, nullptr);
  EXPECT_EQ(inner->error, 0) << fs().MigrationErrors().back();
  EXPECT_EQ(fs().inodes().Info(4)->opens, 1u);
  EXPECT_EQ(fs().inodes().Info(9)->opens, 1u);
  std::shared_ptr<OpenFile> f;
  ASSERT_EQ(fs().OpenFileFor(7, 9, false, &f), 0);
  char buf[16] = {};
  EXPECT_EQ(pread(f->fd.get(), buf, sizeof(buf), 0), 10);
  EXPECT_EQ(std::string(buf), "inner-data");
  ASSERT_EQ(fs().OpenFileFor(8, 4, true, &f), 0);
  ASSERT_EQ(fs().OpenFileFor(3, 2, false, &f), 0);
}

TEST_F(HostileStreamTest, DuplicateFhsFarApartAreRefused) {
  StreamBuilder b;
  b.AddFile(2, 1, "file");
  b.AddHandle(5, 2);
  b.AddHandle(9, 2);
  b.AddHandle(6, 2);
  b.AddHandle(5, 2);
  ExpectRejected(Load(b.Bytes()), "fh 5: duplicate fh");
}

TEST_F(HostileStreamTest, DuplicateFhIsRefused) {
  StreamBuilder b;
  b.AddFile(2, 1, "file");
  b.AddHandle(5, 2);
  b.AddHandle(5, 2);
  ExpectRejected(Load(b.Bytes()), "fh 5: duplicate fh");
}

TEST_F(HostileStreamTest, HandleOnUnknownNodeIsRefused) {
  StreamBuilder b;
  b.AddFile(2, 1, "file");
  b.AddHandle(5, 9);
  ExpectRejected(Load(b.Bytes()), "fh 5: unknown node 9");
}

TEST_F(HostileStreamTest, HandleWithCreateOrTruncFlagsIsRefused) {
  StreamBuilder b;
  b.AddFile(2, 1, "file");
  b.AddHandle(5, 2, O_WRONLY | O_TRUNC);
  ExpectRejected(Load(b.Bytes()), "O_CREAT, O_EXCL or O_TRUNC");
}

TEST_F(HostileStreamTest, NodeIdCounterBelowExistingIdsIsRefused) {
  StreamBuilder b;
  b.AddFile(2, 1, "file");
  b.last.mutable_counters()->set_next_node_id(2);
  ExpectRejected(Load(b.Bytes()), "next_node_id 2 is not above");
}

TEST_F(HostileStreamTest, FhCounterBelowExistingHandlesIsRefused) {
  StreamBuilder b;
  b.AddFile(2, 1, "file");
  b.AddHandle(200, 2);
  ExpectRejected(Load(b.Bytes()), "next_fh 100 is not above");
}

TEST_F(HostileStreamTest, FuseSessionWithFlagsThisDaemonLacksIsRefused) {
  StreamBuilder b;
  auto* s = b.last.mutable_session();
  s->set_initialized(true);
  s->set_major(7);
  s->set_minor(31);
  s->set_flags(FUSE_WRITEBACK_CACHE);
  ExpectRejected(Load(b.Bytes()), "does not offer");
}

// Abort does not re-open every file during the load (that would make the
// stopped phase grow with the table): a file replaced after the source
// verified it loads, and fails verification on first use, answering EIO.
// It is never presented as the recorded file.
TEST_F(HostileStreamTest, ReplacedFileFailsVerificationOnFirstUseUnderAbort) {
  StreamBuilder b;
  struct stat st;
  ASSERT_EQ(stat(HostPath("file").c_str(), &st), 0);
  b.header.mutable_source_root()->set_dev(0);  // not comparable: ino only
  pb::InodeRecord* r = b.AddFile(2, 1, "file");
  r->mutable_identity()->set_ino(st.st_ino + 1000);
  ASSERT_TRUE(Load(b.Bytes()).ok());
  std::shared_ptr<const Inode> inode = fs().GetInode(2);
  ASSERT_NE(inode, nullptr);
  EXPECT_EQ(inode->error, EIO);
  ASSERT_FALSE(fs().MigrationErrors().empty());
  EXPECT_TRUE(
      absl::StrContains(fs().MigrationErrors().back(), "identity mismatch"))
      << fs().MigrationErrors().back();
  EXPECT_EQ(Listing(), before_);
}

TEST_F(HostileStreamTest, FileOfTheWrongTypeFailsVerificationOnFirstUse) {
  StreamBuilder b;
  b.AddFile(2, 1, "dir");  // recorded as a regular file, is a directory
  ASSERT_TRUE(Load(b.Bytes()).ok());
  std::shared_ptr<const Inode> inode = fs().GetInode(2);
  ASSERT_NE(inode, nullptr);
  EXPECT_EQ(inode->error, EIO);
  ASSERT_FALSE(fs().MigrationErrors().empty());
  EXPECT_TRUE(
      absl::StrContains(fs().MigrationErrors().back(), "file type changed"));
}

TEST_F(HostileStreamTest, UnlocatedInodeFailsTheLoadUnderAbort) {
  StreamBuilder b;
  pb::InodeRecord* r = b.AddFile(2, 1, "file");
  r->clear_path();  // the source could not locate it
  ExpectRejected(Load(b.Bytes()),
                 "inode record for node 2: the source could "
                 "not locate it");
}

TEST_F(HostileStreamTest, ChildOfAnUnlocatedDirectoryFailsTheLoadUnderAbort) {
  StreamBuilder b;
  pb::InodeRecord* dir = b.AddFile(2, 1, "dir", S_IFDIR);
  dir->clear_path();
  b.AddFile(3, 2, "inner");
  ExpectRejected(Load(b.Bytes()), "could not locate");
}

TEST_F(HostileStreamTest, FileHandleOutsideTheSharedDirectoryIsRefused) {
  const std::string why = FileHandlesUnavailable(dir_.path());
  if (!why.empty()) GTEST_SKIP() << "file handles unavailable: " << why;
  // A file next to the shared directory, on the same file system.
  TempDir outside;
  const std::string secret = outside.path() + "/secret";
  int sfd = open(secret.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(sfd, 0);
  close(sfd);
  UniqueFd path(open(secret.c_str(), O_PATH | O_CLOEXEC));
  FileHandle h;
  ASSERT_EQ(FileHandle::FromFd(path.get(), &h), 0);
  struct stat st;
  ASSERT_EQ(fstat(path.get(), &st), 0);

  StreamBuilder b;
  b.header.set_mode(pb::MIGRATION_MODE_FILE_HANDLES);
  pb::InodeRecord* r = b.records.add_inodes();
  r->set_node_id(2);
  r->set_lookups(1);
  r->set_file_type(S_IFREG);
  r->mutable_identity()->set_ino(st.st_ino);
  r->mutable_file_handle()->set_handle_type(h.type);
  r->mutable_file_handle()->set_handle(h.bytes);
  r->mutable_file_handle()->set_mount_id(h.mount_id);
  // Even with a path hint naming a real file inside, the handle wins only
  // if it is that file.
  r->mutable_path()->set_parent(1);
  r->mutable_path()->set_name("file");
  const std::string stream = b.Bytes();
  // Verified on first use (the default): the load succeeds, the inode is
  // never served.
  ASSERT_TRUE(Load(stream).ok());
  std::shared_ptr<const Inode> inode = fs().GetInode(2);
  ASSERT_NE(inode, nullptr);
  EXPECT_EQ(inode->error, EIO);
  ASSERT_FALSE(fs().MigrationErrors().empty());
  EXPECT_TRUE(absl::StrContains(fs().MigrationErrors().back(),
                                "outside the shared directory"));
}

class HostileStreamVerifyDuringLoadTest : public HostileStreamTest {
 protected:
  FsConfig Config() override {
    FsConfig c = HostileStreamTest::Config();
    c.migration_verify = MigrationVerify::kDuringLoad;
    return c;
  }
};

TEST_F(HostileStreamVerifyDuringLoadTest, ReplacedFileFailsTheLoad) {
  StreamBuilder b;
  struct stat st;
  ASSERT_EQ(stat(HostPath("file").c_str(), &st), 0);
  b.header.mutable_source_root()->set_dev(0);
  pb::InodeRecord* r = b.AddFile(2, 1, "file");
  r->mutable_identity()->set_ino(st.st_ino + 1000);
  ExpectRejected(Load(b.Bytes()), "identity mismatch");
}

TEST_F(HostileStreamVerifyDuringLoadTest, FileHandleOutsideTheSharedDirFails) {
  const std::string why = FileHandlesUnavailable(dir_.path());
  if (!why.empty()) GTEST_SKIP() << "file handles unavailable: " << why;
  TempDir outside;
  const std::string secret = outside.path() + "/secret";
  int sfd = open(secret.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(sfd, 0);
  close(sfd);
  UniqueFd path(open(secret.c_str(), O_PATH | O_CLOEXEC));
  FileHandle h;
  ASSERT_EQ(FileHandle::FromFd(path.get(), &h), 0);
  struct stat st;
  ASSERT_EQ(fstat(path.get(), &st), 0);
  StreamBuilder b;
  b.header.set_mode(pb::MIGRATION_MODE_FILE_HANDLES);
  pb::InodeRecord* r = b.records.add_inodes();
  r->set_node_id(2);
  r->set_lookups(1);
  r->set_file_type(S_IFREG);
  r->mutable_identity()->set_ino(st.st_ino);
  r->mutable_file_handle()->set_handle_type(h.type);
  r->mutable_file_handle()->set_handle(h.bytes);
  r->mutable_file_handle()->set_mount_id(h.mount_id);
  r->mutable_path()->set_parent(1);
  r->mutable_path()->set_name("file");
  ExpectRejected(Load(b.Bytes()), "outside the shared directory");
}

// A nameless record (file handle, no name) is opened during the load even
// when verifying on first use: only the source keeps such files alive. One
// that resolves outside fails the load under abort.
TEST_F(HostileStreamTest, NamelessFileHandleOutsideTheSharedDirFailsTheLoad) {
  const std::string why = FileHandlesUnavailable(dir_.path());
  if (!why.empty()) GTEST_SKIP() << "file handles unavailable: " << why;
  TempDir outside;
  const std::string secret = outside.path() + "/secret";
  int sfd = open(secret.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(sfd, 0);
  close(sfd);
  UniqueFd path(open(secret.c_str(), O_PATH | O_CLOEXEC));
  FileHandle h;
  ASSERT_EQ(FileHandle::FromFd(path.get(), &h), 0);
  struct stat st;
  ASSERT_EQ(fstat(path.get(), &st), 0);
  StreamBuilder b;
  b.header.set_mode(pb::MIGRATION_MODE_FILE_HANDLES);
  pb::InodeRecord* r = b.records.add_inodes();
  r->set_node_id(2);
  r->set_lookups(1);
  r->set_file_type(S_IFREG);
  r->mutable_identity()->set_ino(st.st_ino);
  r->mutable_file_handle()->set_handle_type(h.type);
  r->mutable_file_handle()->set_handle(h.bytes);
  r->mutable_file_handle()->set_mount_id(h.mount_id);
  ExpectRejected(Load(b.Bytes()), "outside the shared directory");
}

TEST_F(HostileStreamTest, LoadIntoADeviceInUseIsRefusedAndKeepsItsTables) {
  const uint64_t node = MustLookup(FUSE_ROOT_ID, "file");
  StreamBuilder b;
  const absl::Status s = Load(b.Bytes());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(fs().GetInode(node), nullptr);
}

TEST_F(HostileStreamTest, EmptyStreamIsRefused) {
  ExpectRejected(Load(""), "empty stream");
}

}  // namespace
}  // namespace vhostmig::fs
