// Dirty logging against the real peers (vhost-user.rst, "Migration"): with
// LOG_SHMFD the front-end shares a bitmap (SET_LOG_BASE), acks
// VHOST_F_LOG_ALL and gives each ring's used-ring GPA with the LOG flag in
// SET_VRING_ADDR; from then on the back-end must set the bit of every 4 KiB
// guest page it writes: the buffers it fills and the used ring.
//
// The READ here is built by hand on the request ring (not through
// VirtioFsDriver::ReadToGuest) so the test knows every buffer of the chain:
// the out header in its own descriptor, then four page-sized, page-aligned
// data buffers, of which the file fills two and a half. From the used length
// the exact set of written pages follows; the log must hold exactly that set
// plus the used ring's page, and nothing else.
#include "vhost/memory/dirty_log.h"

#include <fcntl.h>
#include <linux/fuse.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "tests/interop/interop_fixture.h"
#include "vhost/virtqueue/driver_queue.h"

namespace vhostmig::interop {
namespace {

using vhost::kDirtyPageSize;

std::set<uint64_t> Pages(uint64_t gpa, uint64_t len) {
  std::set<uint64_t> pages;
  if (len == 0) return pages;
  for (uint64_t p = gpa / kDirtyPageSize; p <= (gpa + len - 1) / kDirtyPageSize;
       ++p) {
    pages.insert(p);
  }
  return pages;
}

std::string Describe(const std::set<uint64_t>& pages) {
  return absl::StrCat("{", absl::StrJoin(pages, ", "), "}");
}

class DirtyLogTest : public PeerTest {};

TEST_P(DirtyLogTest, ReadLogsExactlyTheWrittenPagesAndTheUsedRing) {
  // 2.5 pages of data into 4 page buffers: the fourth stays untouched.
  constexpr size_t kFileSize = 2 * 4096 + 2048;
  constexpr int kDataPages = 4;
  const std::string contents = Pattern(kFileSize);
  WriteSharedFile("data.bin", contents);
  ASSERT_OK_AND_ASSIGN(auto peer, StartPeer("log"));
  ASSERT_OK_AND_ASSIGN(AttachedGuest g, AttachGuest(peer->socket_path()));
  guest::VirtioFsDriver& d = *g.driver;
  ASSERT_OK(d.Init().status());
  ASSERT_OK_AND_ASSIGN(fuse_entry_out entry,
                       d.Lookup(FUSE_ROOT_ID, "data.bin"));
  ASSERT_OK_AND_ASSIGN(fuse_open_out open, d.Open(entry.nodeid, O_RDONLY));

  ASSERT_OK_AND_ASSIGN(std::shared_ptr<vhost::DirtyLog> log,
                       vhost::DirtyLog::Create(g.ram->memory().end_gpa()));
  ASSERT_OK(g.device->StartLogging(log));

  // The chain: readable request, writable out header, writable data pages.
  constexpr uint64_t kUnique = uint64_t{1} << 40;  // clear of the driver's
  struct {
    fuse_in_header in;
    fuse_read_in read;
  } request{};
  request.in.len = sizeof(request);
  request.in.opcode = FUSE_READ;
  request.in.unique = kUnique;
  request.in.nodeid = entry.nodeid;
  request.in.pid = 1;
  request.read.fh = open.fh;
  request.read.offset = 0;
  request.read.size = kDataPages * 4096;
  vhost::DriverQueue& q = d.queue(1);
  ASSERT_OK_AND_ASSIGN(uint64_t request_gpa,
                       g.ram->Allocate(sizeof(request), 64));
  ASSERT_OK(q.WriteGuest(request_gpa, &request, sizeof(request)));
  ASSERT_OK_AND_ASSIGN(uint64_t header_gpa,
                       g.ram->Allocate(sizeof(fuse_out_header), 64));
  std::vector<vhost::GuestBuffer> writable = {
      {header_gpa, sizeof(fuse_out_header)}};
  for (int i = 0; i < kDataPages; ++i) {
    ASSERT_OK_AND_ASSIGN(uint64_t gpa, g.ram->Allocate(4096, 4096));
    writable.push_back({gpa, 4096});
  }

  // The used ring of a 128-entry queue (6 + 8 * 128 bytes, plus avail_event
  // with EVENT_IDX) sits in one page of its own (DriverQueue aligns it).
  const vhost::VringLayout layout = q.layout();
  ASSERT_EQ(layout.used_gpa % kDirtyPageSize, 0u);
  ASSERT_LE(6 + 8 * layout.size + 2, kDirtyPageSize);
  const std::set<uint64_t> used_ring_pages = Pages(layout.used_gpa, 1);

  // Everything before this point (INIT, LOOKUP, OPEN, our own writes) is
  // history: clear the log.
  log->Harvest([](uint64_t) {});

  ASSERT_OK_AND_ASSIGN(
      uint16_t head,
      q.Add({{request_gpa, static_cast<uint32_t>(sizeof(request))}}, writable));
  if (q.NeedsKick()) ASSERT_OK(g.transport->Kick(1));
  std::optional<vhost::UsedElement> used;
  const absl::Time deadline = absl::Now() + kTimeout;
  while (!(used = q.PollUsed()).has_value()) {
    ASSERT_LT(absl::Now(), deadline) << "READ never completed";
    absl::Status s = g.transport->WaitForUsed(1, deadline - absl::Now());
    ASSERT_TRUE(s.ok() || absl::IsDeadlineExceeded(s)) << s;
  }
  ASSERT_EQ(used->head, head);

  fuse_out_header out{};
  ASSERT_OK(g.ram->memory().Read(header_gpa, &out, sizeof(out)));
  ASSERT_EQ(out.unique, kUnique);
  ASSERT_EQ(out.error, 0);
  ASSERT_EQ(out.len, sizeof(out) + kFileSize);
  ASSERT_EQ(used->len, sizeof(out) + kFileSize);
  std::string got(kFileSize, '\0');
  for (size_t at = 0; at < kFileSize; at += 4096) {
    ASSERT_OK(g.ram->memory().Read(writable[1 + at / 4096].gpa, got.data() + at,
                                   std::min<size_t>(4096, kFileSize - at)));
  }
  EXPECT_EQ(got, contents);

  // What the back-end wrote: the used length, spread over the writable
  // buffers in order (virtio 1.2, 2.7.8.2), plus the used ring.
  std::set<uint64_t> written;
  uint64_t left = used->len;
  for (const vhost::GuestBuffer& b : writable) {
    const uint64_t n = std::min<uint64_t>(left, b.len);
    const std::set<uint64_t> p = Pages(b.gpa, n);
    written.insert(p.begin(), p.end());
    left -= n;
  }
  std::set<uint64_t> expected = written;
  expected.insert(used_ring_pages.begin(), used_ring_pages.end());
  ASSERT_EQ(written.count(writable.back().gpa / kDirtyPageSize), 0u)
      << "the last data page must be left unwritten for this test to mean "
         "anything";

  // A back-end may publish the used index before it marks its page; give
  // the marks a bounded moment to land before harvesting.
  const absl::Time settle = absl::Now() + absl::Seconds(2);
  while (absl::Now() < settle &&
         !std::all_of(expected.begin(), expected.end(),
                      [&](uint64_t p) { return log->IsPageDirty(p); })) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  absl::SleepFor(absl::Milliseconds(50));
  std::set<uint64_t> logged;
  log->Harvest([&](uint64_t page) { logged.insert(page); });

  std::set<uint64_t> missing, extra;
  std::set_difference(expected.begin(), expected.end(), logged.begin(),
                      logged.end(), std::inserter(missing, missing.end()));
  std::set_difference(logged.begin(), logged.end(), expected.begin(),
                      expected.end(), std::inserter(extra, extra.end()));
  RecordProperty("logged_pages", Describe(logged));
  RecordProperty("expected_pages", Describe(expected));
  EXPECT_TRUE(missing.empty())
      << "pages the back-end wrote but did not log: " << Describe(missing)
      << " (header page " << header_gpa / kDirtyPageSize << ", data pages "
      << writable[1].gpa / kDirtyPageSize << ".."
      << writable.back().gpa / kDirtyPageSize << ", used ring page "
      << layout.used_gpa / kDirtyPageSize << ")";
  EXPECT_TRUE(extra.empty())
      << "pages logged that the back-end had no business writing: "
      << Describe(extra) << " (header page " << header_gpa / kDirtyPageSize
      << ", data pages " << writable[1].gpa / kDirtyPageSize << ".."
      << writable.back().gpa / kDirtyPageSize << ", used ring page "
      << layout.used_gpa / kDirtyPageSize << ")";
  EXPECT_EQ(log->dropped_marks(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Peers, DirtyLogTest,
                         ::testing::Values(PeerKind::kCVirtiofsd,
                                           PeerKind::kVirtiofsd113),
                         PeerParamName);

}  // namespace
}  // namespace vhostmig::interop
