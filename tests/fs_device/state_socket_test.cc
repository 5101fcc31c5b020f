// DEVICE_STATE between two vhost-user-fs daemon processes on one shared
// directory, driven over real vhost-user sockets by our front-end
// (guest::VhostUserDevice) and synthetic guest, in the order QEMU uses
// (vhost-user.rst, "Migrating back-end state"; tests/interop/
// device_state_test.cc does the same between two virtiofsd 1.13):
//
//   source       SET_LOG_BASE, SET_FEATURES(+LOG_ALL) (the daemon starts
//                gathering locations), pre-copy (the guest keeps working),
//                SET_VRING_ENABLE(0) + GET_VRING_BASE, SET_DEVICE_STATE_FD
//                (save), read to EOF, CHECK_DEVICE_STATE.
//   destination  SET_OWNER, SET_PROTOCOL_FEATURES, SET_DEVICE_STATE_FD(load)
//                *before* SET_FEATURES and SET_MEM_TABLE, write, close,
//                CHECK_DEVICE_STATE; then the rings with the source's bases.
//
// The workload covers the hard cases of issue 4: open files and
// directories, a cwd-like deep path, a hard link, an unlinked-but-open file,
// a file the guest renames during the pre-copy, one the guest replaces
// (rename over it) and one the host replaces behind the daemon's back. Every
// pre-migration handle must then read and write the same file as before,
// or fail with EIO as --migration-on-error says, in both --migration-mode
// values. A load that fails (a corrupted stream, or the abort policy)
// fails CHECK_DEVICE_STATE and the source resumes where it stopped.
//
// Needs root (open_by_handle_at in file-handles mode; the daemons run as
// the test's user). Sockets live under /tmp: sun_path holds 108 bytes.
#include <fcntl.h>
#include <linux/fuse.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/socket_server_process.h"
#include "gtest/gtest.h"
#include "tests/interop/interop_fixture.h"
#include "vhost/memory/dirty_log.h"

namespace vhostmig::fs {
namespace {

using interop::AttachedGuest;
using interop::AttachGuest;

// Expects an OK status; more context may be streamed after it.
#define EXPECT_OK_STATUS(expr)                                           \
  switch (0)                                                             \
  case 0:                                                                \
  default:                                                               \
    if (const absl::Status expect_status = (expr); expect_status.ok()) { \
    } else                                                               \
      ADD_FAILURE() << expect_status << " "

// The daemon is a data dependency; tests run in the workspace's runfiles
// directory.
constexpr char kDaemon[] = "fs_device/vhost-user-fs";

struct Scenario {
  const char* mode;    // --migration-mode
  const char* policy;  // --migration-on-error
  const char* name;
};

std::vector<uint8_t> Bytes(absl::string_view s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

class StateSocketTest : public ::testing::TestWithParam<Scenario> {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (open_by_handle_at)";
    char tmpl[] = "/tmp/vhostmig-fsstate-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    shared_ = root_ + "/shared";
    ASSERT_EQ(mkdir(shared_.c_str(), 0755), 0);
  }
  void TearDown() override {
    if (root_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  absl::StatusOr<std::unique_ptr<SocketServerProcess>> StartDaemon(
      const std::string& name) {
    const std::string socket = absl::StrCat(root_, "/", name, ".sock");
    return SocketServerProcess::Start(
        {kDaemon, "--socket-path=" + socket, "--shared-dir=" + shared_,
         "--cache=never", absl::StrCat("--migration-mode=", GetParam().mode),
         absl::StrCat("--migration-on-error=", GetParam().policy)},
        socket, socket + ".log");
  }
  static std::string Log(const SocketServerProcess& p) {
    std::ifstream in(p.log_path());
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  std::string Host(const std::string& rel) const { return shared_ + "/" + rel; }
  void WriteHost(const std::string& rel, const std::string& content) {
    std::ofstream out(Host(rel), std::ios::binary | std::ios::trunc);
    out << content;
    ASSERT_TRUE(out.good()) << rel;
  }
  std::string ReadHost(const std::string& rel) const {
    std::ifstream in(Host(rel), std::ios::binary);
    if (!in) return "<missing>";
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  static std::string ReadAll(guest::VirtioFsDriver& d, uint64_t node,
                             uint64_t fh, absl::Status* status = nullptr) {
    std::vector<uint8_t> buf(4096);
    absl::StatusOr<size_t> n = d.Read(node, fh, 0, absl::MakeSpan(buf));
    if (status) *status = n.status();
    if (!n.ok()) return "<error>";
    return std::string(buf.begin(), buf.begin() + *n);
  }
  bool FileHandles() const {
    return std::string(GetParam().mode) == "file-handles";
  }
  bool Abort() const { return std::string(GetParam().policy) == "abort"; }

  // The source after StopRings: restart the rings where they stopped,
  // clear LOG_ALL (a cancelled migration), and serve on.
  static absl::Status Resume(AttachedGuest& g,
                             const std::map<uint32_t, uint16_t>& bases) {
    std::vector<uint16_t> b;
    for (const auto& [q, base] : bases) b.push_back(base);
    absl::Status s = g.device->StartRings(g.Layouts(), b);
    if (!s.ok()) return s;
    return g.device->StopLogging();
  }

  std::string root_;
  std::string shared_;
};

// What the guest holds before the migration.
struct Workload {
  std::vector<uint64_t> dirs;  // d0/d1/.../d7
  uint64_t leaf_dir_fh = 0, root_dir_fh = 0;
  uint64_t deep = 0, deep_fh = 0;            // d0/.../d7/deep.txt
  uint64_t a = 0, a_fh = 0;                  // a.txt, hard-linked as d0/link
  uint64_t gone = 0, gone_fh = 0;            // unlinked while open
  uint64_t moved = 0, moved_fh = 0;          // renamed by the guest
  uint64_t replaced = 0, replaced_fh = 0;    // replaced on the host
  uint64_t greplaced = 0, greplaced_fh = 0;  // replaced by the guest
};

TEST_P(StateSocketTest, EveryHandleWorksOnTheSecondDaemonOrFailsByPolicy) {
  ASSERT_OK_AND_ASSIGN(auto source, StartDaemon("src"));
  ASSERT_OK_AND_ASSIGN(AttachedGuest g, AttachGuest(source->socket_path()));
  guest::VirtioFsDriver& d = *g.driver;
  ASSERT_OK(d.Init().status());

  Workload w;
  uint64_t parent = FUSE_ROOT_ID;
  for (int i = 0; i < 8; ++i) {
    ASSERT_OK_AND_ASSIGN(fuse_entry_out e,
                         d.Mkdir(parent, absl::StrCat("d", i), 0755));
    w.dirs.push_back(e.nodeid);
    parent = e.nodeid;
  }
  ASSERT_OK_AND_ASSIGN(fuse_open_out leaf, d.Opendir(w.dirs.back()));
  w.leaf_dir_fh = leaf.fh;
  ASSERT_OK_AND_ASSIGN(fuse_open_out root, d.Opendir(FUSE_ROOT_ID));
  w.root_dir_fh = root.fh;
  ASSERT_OK_AND_ASSIGN(guest::CreateReply deep,
                       d.Create(w.dirs.back(), "deep.txt", O_RDWR, 0644));
  w.deep = deep.entry.nodeid;
  w.deep_fh = deep.open.fh;
  ASSERT_OK(d.Write(w.deep, w.deep_fh, 0, Bytes("deep-data")).status());

  WriteHost("a.txt", "a-data");
  ASSERT_OK_AND_ASSIGN(fuse_entry_out a, d.Lookup(FUSE_ROOT_ID, "a.txt"));
  w.a = a.nodeid;
  ASSERT_OK_AND_ASSIGN(fuse_open_out a_open, d.Open(w.a, O_RDWR));
  w.a_fh = a_open.fh;
  ASSERT_OK_AND_ASSIGN(fuse_entry_out link, d.Link(w.a, w.dirs[0], "link"));
  ASSERT_EQ(link.nodeid, w.a);

  ASSERT_OK_AND_ASSIGN(guest::CreateReply gone,
                       d.Create(FUSE_ROOT_ID, "gone.txt", O_RDWR, 0644));
  w.gone = gone.entry.nodeid;
  w.gone_fh = gone.open.fh;
  ASSERT_OK(d.Write(w.gone, w.gone_fh, 0, Bytes("gone-data")).status());
  ASSERT_OK(d.Unlink(FUSE_ROOT_ID, "gone.txt"));

  WriteHost("moved.txt", "moved-data");
  ASSERT_OK_AND_ASSIGN(fuse_entry_out moved,
                       d.Lookup(FUSE_ROOT_ID, "moved.txt"));
  w.moved = moved.nodeid;
  ASSERT_OK_AND_ASSIGN(fuse_open_out moved_open, d.Open(w.moved, O_RDONLY));
  w.moved_fh = moved_open.fh;

  WriteHost("replaced.txt", "old-data");
  ASSERT_OK_AND_ASSIGN(fuse_entry_out replaced,
                       d.Lookup(FUSE_ROOT_ID, "replaced.txt"));
  w.replaced = replaced.nodeid;
  ASSERT_OK_AND_ASSIGN(fuse_open_out replaced_open,
                       d.Open(w.replaced, O_RDONLY));
  w.replaced_fh = replaced_open.fh;

  WriteHost("greplaced.txt", "gold-data");
  ASSERT_OK_AND_ASSIGN(fuse_entry_out greplaced,
                       d.Lookup(FUSE_ROOT_ID, "greplaced.txt"));
  w.greplaced = greplaced.nodeid;
  ASSERT_OK_AND_ASSIGN(fuse_open_out greplaced_open,
                       d.Open(w.greplaced, O_RDONLY));
  w.greplaced_fh = greplaced_open.fh;

  // Migration starts: LOG_ALL on, the daemon gathers locations meanwhile.
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<vhost::DirtyLog> log,
                       vhost::DirtyLog::Create(g.ram->memory().end_gpa()));
  ASSERT_OK(g.device->StartLogging(log)) << Log(*source);
  // Pre-copy: the guest renames one file and replaces another by renaming
  // a new file over it; the host replaces a third behind the daemon.
  ASSERT_OK(d.Rename(FUSE_ROOT_ID, "moved.txt", w.dirs[0], "renamed.txt"));
  ASSERT_OK_AND_ASSIGN(guest::CreateReply gnew,
                       d.Create(FUSE_ROOT_ID, "gnew.txt", O_RDWR, 0644));
  ASSERT_OK(
      d.Write(gnew.entry.nodeid, gnew.open.fh, 0, Bytes("gnew-data")).status());
  ASSERT_OK(d.Release(gnew.entry.nodeid, gnew.open.fh));
  ASSERT_OK(d.Rename(FUSE_ROOT_ID, "gnew.txt", FUSE_ROOT_ID, "greplaced.txt"));
  WriteHost("replaced.new", "new-data");
  ASSERT_EQ(rename(Host("replaced.new").c_str(), Host("replaced.txt").c_str()),
            0);

  // Stop and save.
  ASSERT_OK_AND_ASSIGN(auto bases, g.device->StopRings());
  ASSERT_EQ(bases.size(), 2u);
  absl::StatusOr<std::string> saved = g.device->SaveState();
  ASSERT_TRUE(saved.ok()) << saved.status() << "\n" << Log(*source);
  RecordProperty("state_bytes", static_cast<int>(saved->size()));

  // Destination: load before SET_FEATURES and SET_MEM_TABLE.
  ASSERT_OK_AND_ASSIGN(auto destination, StartDaemon("dst"));
  ASSERT_OK(g.transport->Renew());
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<guest::VhostUserDevice> dst,
      guest::VhostUserDevice::Connect(destination->socket_path(), g.ram.get(),
                                      g.transport.get()));
  ASSERT_TRUE(dst->frontend().BackendHas(vhost::ProtocolFeature::kDeviceState));
  const absl::Status loaded = dst->LoadState(*saved);

  if (!FileHandles() && Abort()) {
    // In find-paths mode the unlinked-but-open file and the one the guest
    // replaced have no name left: abort fails CHECK_DEVICE_STATE...
    ASSERT_FALSE(loaded.ok());
    EXPECT_TRUE(absl::StrContains(Log(*destination), "could not locate"))
        << Log(*destination);
    // ...and the source resumes where it stopped, with every handle.
    dst.reset();
    ASSERT_OK(Resume(g, bases)) << Log(*source);
    EXPECT_EQ(ReadAll(d, w.gone, w.gone_fh), "gone-data");
    EXPECT_EQ(ReadAll(d, w.greplaced, w.greplaced_fh), "gold-data");
    EXPECT_EQ(ReadAll(d, w.a, w.a_fh), "a-data");
    ASSERT_OK(d.Write(w.deep, w.deep_fh, 0, Bytes("DEEP")).status());
    EXPECT_EQ(ReadHost("d0/d1/d2/d3/d4/d5/d6/d7/deep.txt"), "DEEP-data");
    return;
  }
  ASSERT_TRUE(loaded.ok()) << loaded << "\n" << Log(*destination);
  ASSERT_OK(dst->Configure());
  std::vector<uint16_t> b = {bases[0], bases[1]};
  ASSERT_OK(dst->StartRings(g.Layouts(), b));
  // Handover. The source daemon stays connected (stopped) for now, as a
  // source QEMU keeps it until it quits; it goes away further down.
  std::unique_ptr<guest::VhostUserDevice> src_device = std::move(g.device);
  g.device = std::move(dst);

  // Directories: every level of the deep path, and open directory streams.
  for (uint64_t dir : w.dirs) {
    EXPECT_OK_STATUS(d.Getattr(dir).status()) << "dir node " << dir;
  }
  ASSERT_OK_AND_ASSIGN(auto entries,
                       d.Readdir(w.dirs.back(), w.leaf_dir_fh, 0));
  bool saw_deep = false;
  for (const auto& e : entries) saw_deep |= e.name == "deep.txt";
  EXPECT_TRUE(saw_deep);
  EXPECT_OK_STATUS(d.Readdir(FUSE_ROOT_ID, w.root_dir_fh, 0).status());
  ASSERT_OK_AND_ASSIGN(fuse_entry_out deep_again,
                       d.Lookup(w.dirs.back(), "deep.txt"));
  EXPECT_EQ(deep_again.nodeid, w.deep);

  // Open files read and write the same host file.
  EXPECT_EQ(ReadAll(d, w.deep, w.deep_fh), "deep-data");
  ASSERT_OK(d.Write(w.deep, w.deep_fh, 0, Bytes("DEEP")).status());
  EXPECT_EQ(ReadHost("d0/d1/d2/d3/d4/d5/d6/d7/deep.txt"), "DEEP-data");
  EXPECT_EQ(ReadAll(d, w.a, w.a_fh), "a-data");
  ASSERT_OK(d.Write(w.a, w.a_fh, 0, Bytes("A")).status());
  EXPECT_EQ(ReadHost("a.txt"), "A-data");
  EXPECT_EQ(ReadHost("d0/link"), "A-data");
  ASSERT_OK_AND_ASSIGN(fuse_entry_out link_again, d.Lookup(w.dirs[0], "link"));
  EXPECT_EQ(link_again.nodeid, w.a);

  // Renamed by the guest during the pre-copy: the same file, new name.
  EXPECT_EQ(ReadAll(d, w.moved, w.moved_fh), "moved-data");
  ASSERT_OK_AND_ASSIGN(fuse_entry_out renamed,
                       d.Lookup(w.dirs[0], "renamed.txt"));
  EXPECT_EQ(renamed.nodeid, w.moved);

  // Replaced (by the guest or the host): the file now under the name is
  // never presented as the old node.
  for (const char* name : {"replaced.txt", "greplaced.txt"}) {
    ASSERT_OK_AND_ASSIGN(fuse_entry_out now_there,
                         d.Lookup(FUSE_ROOT_ID, name));
    EXPECT_NE(now_there.nodeid, w.replaced) << name;
    EXPECT_NE(now_there.nodeid, w.greplaced) << name;
  }
  absl::Status st;
  if (FileHandles()) {
    // The old files are unlinked but still open (by the source daemon):
    // their handles keep naming them.
    EXPECT_EQ(ReadAll(d, w.replaced, w.replaced_fh), "old-data");
    EXPECT_EQ(ReadAll(d, w.greplaced, w.greplaced_fh), "gold-data");
  } else {
    // guest-error: just those fail.
    EXPECT_EQ(ReadAll(d, w.replaced, w.replaced_fh, &st), "<error>");
    EXPECT_EQ(guest::FuseErrno(st), EIO) << st;
    ReadAll(d, w.greplaced, w.greplaced_fh, &st);
    EXPECT_EQ(guest::FuseErrno(st), EIO) << st;
    ReadAll(d, w.gone, w.gone_fh, &st);
    EXPECT_EQ(guest::FuseErrno(st), EIO) << st;
    EXPECT_EQ(guest::FuseErrno(d.Getattr(w.gone).status()), EIO);
  }

  // The source goes away. An unlinked-but-open file (file-handles mode)
  // stays usable although nothing but the source kept it alive and the
  // guest touches it only now: the destination opened the nameless files
  // during the load.
  src_device.reset();
  ASSERT_OK(source->WaitForExit(interop::kTimeout).status());
  if (FileHandles()) {
    EXPECT_EQ(ReadAll(d, w.gone, w.gone_fh), "gone-data");
    ASSERT_OK(d.Write(w.gone, w.gone_fh, 4, Bytes("!")).status());
    EXPECT_EQ(ReadAll(d, w.gone, w.gone_fh), "gone!data");
  }

  // Ids issued on the destination never collide with migrated ones.
  ASSERT_OK_AND_ASSIGN(guest::CreateReply fresh,
                       d.Create(FUSE_ROOT_ID, "fresh.txt", O_RDWR, 0644));
  for (uint64_t id : {w.deep, w.a, w.gone, w.moved, w.replaced, w.greplaced}) {
    EXPECT_NE(fresh.entry.nodeid, id);
  }
  for (uint64_t fh : {w.deep_fh, w.a_fh, w.gone_fh, w.moved_fh, w.replaced_fh,
                      w.greplaced_fh, w.leaf_dir_fh, w.root_dir_fh}) {
    EXPECT_NE(fresh.open.fh, fh);
  }
  // Migrated handles release normally.
  EXPECT_OK_STATUS(d.Release(w.a, w.a_fh));
  EXPECT_OK_STATUS(d.Releasedir(FUSE_ROOT_ID, w.root_dir_fh));
}

TEST_P(StateSocketTest, CorruptedStreamFailsCheckAndTheSourceResumes) {
  WriteHost("kept.txt", "kept-data");
  ASSERT_OK_AND_ASSIGN(auto source, StartDaemon("src"));
  ASSERT_OK_AND_ASSIGN(AttachedGuest g, AttachGuest(source->socket_path()));
  guest::VirtioFsDriver& d = *g.driver;
  ASSERT_OK(d.Init().status());
  ASSERT_OK_AND_ASSIGN(fuse_entry_out kept, d.Lookup(FUSE_ROOT_ID, "kept.txt"));
  ASSERT_OK_AND_ASSIGN(fuse_open_out open, d.Open(kept.nodeid, O_RDWR));
  // Enough records for several frames, so the damage hits a chunk.
  for (int i = 0; i < 50; ++i) {
    ASSERT_OK(d.Mkdir(FUSE_ROOT_ID, absl::StrCat("dir", i), 0755).status());
  }

  ASSERT_OK_AND_ASSIGN(std::shared_ptr<vhost::DirtyLog> log,
                       vhost::DirtyLog::Create(g.ram->memory().end_gpa()));
  ASSERT_OK(g.device->StartLogging(log));
  ASSERT_OK_AND_ASSIGN(auto bases, g.device->StopRings());
  ASSERT_OK_AND_ASSIGN(std::string state, g.device->SaveState());
  ASSERT_GT(state.size(), 64u);

  for (const bool truncate : {false, true}) {
    SCOPED_TRACE(truncate ? "truncated" : "corrupted");
    std::string bad = state;
    if (truncate) {
      bad.resize(bad.size() - 3);
    } else {
      bad[bad.size() / 2] ^= 0x5a;
    }
    ASSERT_OK_AND_ASSIGN(auto destination,
                         StartDaemon(truncate ? "dst-t" : "dst-c"));
    ASSERT_OK_AND_ASSIGN(
        std::unique_ptr<guest::VhostUserDevice> dst,
        guest::VhostUserDevice::Connect(destination->socket_path(), g.ram.get(),
                                        g.transport.get()));
    const absl::Status loaded = dst->LoadState(bad);
    EXPECT_FALSE(loaded.ok());
    const std::string why = Log(*destination);
    EXPECT_TRUE(absl::StrContains(why, truncate ? "truncated" : "corrupted"))
        << why;
  }

  // The source restarts its rings at the stopped indices and serves on:
  // the old handle, new lookups and writes.
  ASSERT_OK(Resume(g, bases)) << Log(*source);
  EXPECT_EQ(ReadAll(d, kept.nodeid, open.fh), "kept-data");
  ASSERT_OK(d.Write(kept.nodeid, open.fh, 0, Bytes("KEPT")).status());
  EXPECT_EQ(ReadHost("kept.txt"), "KEPT-data");
  ASSERT_OK(d.Lookup(FUSE_ROOT_ID, "dir49").status());
  ASSERT_OK(d.Mkdir(FUSE_ROOT_ID, "after", 0755).status());
}

INSTANTIATE_TEST_SUITE_P(
    Modes, StateSocketTest,
    ::testing::Values(
        Scenario{"find-paths", "guest-error", "FindPathsGuestError"},
        Scenario{"find-paths", "abort", "FindPathsAbort"},
        Scenario{"file-handles", "guest-error", "FileHandlesGuestError"},
        Scenario{"file-handles", "abort", "FileHandlesAbort"}),
    [](const ::testing::TestParamInfo<Scenario>& info) {
      return std::string(info.param.name);
    });

}  // namespace
}  // namespace vhostmig::fs
