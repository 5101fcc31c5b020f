// A minimal DEVICE_STATE migration between two virtiofsd 1.13 instances
// (vhost-user.rst, "Migrating back-end state"), driven in the order QEMU
// uses:
//
//   source:      SET_LOG_BASE, SET_FEATURES(+LOG_ALL) (1.13 starts gathering
//                inode paths in the background on LOG_ALL),
//                SET_VRING_ENABLE(0) + GET_VRING_BASE on both rings,
//                SET_DEVICE_STATE_FD(save, stopped) with a pipe's write end,
//                read to EOF, CHECK_DEVICE_STATE.
//   destination: SET_OWNER, SET_PROTOCOL_FEATURES (with DEVICE_STATE), then
//                SET_DEVICE_STATE_FD(load, stopped) with a pipe's read end
//                *before* SET_FEATURES and SET_MEM_TABLE, write the blob,
//                close, CHECK_DEVICE_STATE; then SET_FEATURES, SET_MEM_TABLE
//                and the rings with the source's bases.
//
// What 1.13 needs (from its --help and src/vhost_user.rs): nothing on the
// command line; --migration-mode defaults to find-paths (the destination
// re-opens inodes by path under its own shared dir, so both instances serve
// the same directory here) and --migration-on-error to abort (a failed
// re-open fails CHECK_DEVICE_STATE). Only the "stopped" phase is accepted.
// SAVE without a preceding LOG_ALL also works (it gathers paths then, with
// a warning); LOG_ALL is set here because that is what QEMU does. 1.13
// (rust-vmm's handler) answers SET_DEVICE_STATE_FD with bit 8 set, "use the
// fd you sent", and does the pipe I/O on a thread of its own, so the reply
// comes at once and CHECK_DEVICE_STATE joins that thread.
//
// The guest is the same synthetic guest throughout: same RAM (the memfds
// are shared with both daemons), same driver and rings; only the notifiers
// are renewed for the destination.
#include <fcntl.h>
#include <linux/fuse.h>

#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "tests/interop/interop_fixture.h"
#include "vhost/memory/dirty_log.h"

namespace vhostmig::interop {
namespace {

class DeviceStateTest : public PeerTest {};

TEST_P(DeviceStateTest,
       LookedUpNodeAndOpenHandleSurviveTransferToSecondDaemon) {
  const std::string contents = Pattern(6000);
  WriteSharedFile("kept.txt", contents);
  ASSERT_OK_AND_ASSIGN(auto source, StartPeer("source"));
  ASSERT_OK_AND_ASSIGN(AttachedGuest g, AttachGuest(source->socket_path()));
  guest::VirtioFsDriver& d = *g.driver;
  ASSERT_OK(d.Init().status());
  ASSERT_OK_AND_ASSIGN(fuse_entry_out entry,
                       d.Lookup(FUSE_ROOT_ID, "kept.txt"));
  ASSERT_NE(entry.nodeid, 0u);
  ASSERT_OK_AND_ASSIGN(fuse_open_out open, d.Open(entry.nodeid, O_RDONLY));

  // Source: log, stop, save.
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<vhost::DirtyLog> log,
                       vhost::DirtyLog::Create(g.ram->memory().end_gpa()));
  ASSERT_OK(g.device->StartLogging(log));
  ASSERT_OK_AND_ASSIGN(auto bases, g.device->StopRings());
  ASSERT_EQ(bases.size(), 2u);
  EXPECT_EQ(bases[1], d.queue(1).SaveState().next_avail)
      << "GET_VRING_BASE must return the next avail index after completing "
         "all in-flight requests";
  absl::StatusOr<std::string> saved = g.device->SaveState();
  ASSERT_TRUE(saved.ok()) << saved.status() << "\n" << PeerLog(*source);
  const std::string state = *std::move(saved);
  ASSERT_FALSE(state.empty());
  RecordProperty("state_bytes", static_cast<int>(state.size()));
  RecordProperty("state_hex", absl::BytesToHexString(state.substr(0, 256)));

  // Destination: load before features and memory, then start with the
  // source's bases.
  ASSERT_OK_AND_ASSIGN(auto destination, StartPeer("destination"));
  ASSERT_OK(g.transport->Renew());
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<guest::VhostUserDevice> dst,
      guest::VhostUserDevice::Connect(destination->socket_path(), g.ram.get(),
                                      g.transport.get()));
  ASSERT_TRUE(dst->frontend().BackendHas(vhost::ProtocolFeature::kDeviceState));
  ASSERT_OK(dst->LoadState(state)) << PeerLog(*destination);
  ASSERT_OK(dst->Configure());
  ASSERT_OK(dst->StartRings(g.Layouts(), {bases[0], bases[1]}));
  // Handover: the source goes away (and exits on the disconnect).
  g.device = std::move(dst);
  source.reset();

  // The node id the source handed out still names the file...
  absl::StatusOr<fuse_attr_out> attr = d.Getattr(entry.nodeid);
  ASSERT_TRUE(attr.ok()) << attr.status() << "\n" << PeerLog(*destination);
  EXPECT_EQ(attr->attr.size, contents.size());
  EXPECT_EQ(attr->attr.ino, entry.attr.ino);
  // ...and the handle opened on the source reads on the destination.
  std::vector<uint8_t> buf(8192);
  absl::StatusOr<size_t> n =
      d.Read(entry.nodeid, open.fh, 0, absl::MakeSpan(buf));
  ASSERT_TRUE(n.ok()) << n.status() << "\n" << PeerLog(*destination);
  ASSERT_EQ(*n, contents.size());
  EXPECT_EQ(std::string(buf.begin(), buf.begin() + *n), contents);
  // New lookups work too.
  WriteSharedFile("new.txt", "x");
  ASSERT_OK(d.Lookup(FUSE_ROOT_ID, "new.txt").status());
}

// The control for the test above: without the state, a second daemon does
// not know the node id (so the GETATTR above succeeding is the transfer's
// doing, not a coincidence of id allocation).
TEST_P(DeviceStateTest, WithoutStateASecondDaemonDoesNotKnowTheNode) {
  WriteSharedFile("kept.txt", "x");
  ASSERT_OK_AND_ASSIGN(auto source, StartPeer("source"));
  ASSERT_OK_AND_ASSIGN(AttachedGuest g, AttachGuest(source->socket_path()));
  ASSERT_OK(g.driver->Init().status());
  ASSERT_OK_AND_ASSIGN(fuse_entry_out entry,
                       g.driver->Lookup(FUSE_ROOT_ID, "kept.txt"));
  ASSERT_OK_AND_ASSIGN(auto bases, g.device->StopRings());

  ASSERT_OK_AND_ASSIGN(auto other, StartPeer("other"));
  ASSERT_OK(g.transport->Renew());
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<guest::VhostUserDevice> dst,
      guest::VhostUserDevice::Connect(other->socket_path(), g.ram.get(),
                                      g.transport.get()));
  ASSERT_OK(dst->Configure());
  ASSERT_OK(dst->StartRings(g.Layouts(), {bases[0], bases[1]}));
  g.device = std::move(dst);
  source.reset();
  // A fresh daemon has no FUSE session either; INIT it as a new guest would.
  ASSERT_OK(g.driver->Init().status());
  absl::StatusOr<fuse_attr_out> attr = g.driver->Getattr(entry.nodeid);
  EXPECT_FALSE(attr.ok()) << "a daemon that never saw node " << entry.nodeid
                          << " answered GETATTR for it";
}

// Only virtiofsd 1.13 offers DEVICE_STATE (probe_test pins that).
INSTANTIATE_TEST_SUITE_P(Peers, DeviceStateTest,
                         ::testing::Values(PeerKind::kVirtiofsd113),
                         PeerParamName);

}  // namespace
}  // namespace vhostmig::interop
