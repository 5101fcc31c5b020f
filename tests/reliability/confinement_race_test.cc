// Confinement under a concurrent rename race (issue 7's confinement suite;
// tests/fs_device/confinement_test.cc covers the sequential cases: `..`,
// symlinks to the outside, a rename or symlink swap between two requests).
// Here a host thread keeps exchanging a real directory and a symlink to a
// directory outside the share (renameat2 RENAME_EXCHANGE, atomic) while the
// guest looks the name up, looks up a file inside, opens and reads it. Every
// read must return the inside file; the outside file's contents must never
// appear and nothing outside may change.
#include <fcntl.h>
#include <linux/fuse.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fs_device/fuse_dispatcher.h"
#include "fs_device/passthrough_fs.h"
#include "gtest/gtest.h"

namespace vhostmig::fs {
namespace {

constexpr char kInside[] = "inside-data";
constexpr char kSecret[] = "OUTSIDE-SECRET";

// One request through the dispatcher; returns the reply (header + payload).
std::vector<uint8_t> Call(FuseDispatcher& d, uint32_t opcode, uint64_t nodeid,
                          const std::vector<uint8_t>& body) {
  static uint64_t unique = 1;
  fuse_in_header h{};
  h.opcode = opcode;
  h.nodeid = nodeid;
  h.unique = ++unique;
  h.len = sizeof(h) + body.size();
  std::vector<uint8_t> in(sizeof(h));
  std::memcpy(in.data(), &h, sizeof(h));
  in.insert(in.end(), body.begin(), body.end());
  std::vector<uint8_t> out(8192);
  FuseChain chain;
  chain.in.push_back({in.data(), in.size()});
  chain.out.push_back({out.data(), out.size()});
  out.resize(d.ProcessOne(chain));
  return out;
}

template <typename T>
std::vector<uint8_t> Bytes(const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  return std::vector<uint8_t>(p, p + sizeof(T));
}

std::vector<uint8_t> Name(const char* s) {
  return std::vector<uint8_t>(s, s + std::strlen(s) + 1);
}

int32_t Error(const std::vector<uint8_t>& reply) {
  fuse_out_header h{};
  if (reply.size() < sizeof(h)) return -EIO;
  std::memcpy(&h, reply.data(), sizeof(h));
  return h.error;
}

template <typename T>
T Payload(const std::vector<uint8_t>& reply) {
  T v{};
  if (reply.size() >= sizeof(fuse_out_header) + sizeof(T)) {
    std::memcpy(&v, reply.data() + sizeof(fuse_out_header), sizeof(T));
  }
  return v;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ConfinementRaceTest, DirectorySwappedWithOutsideSymlinkIsNeverEntered) {
  char tmpl[] = "/tmp/vhostmig-race-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  const std::string shared = root + "/shared";
  ASSERT_EQ(mkdir(shared.c_str(), 0755), 0);
  ASSERT_EQ(mkdir((shared + "/d").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((root + "/outside").c_str(), 0755), 0);
  std::ofstream(shared + "/d/f") << kInside;
  std::ofstream(root + "/outside/f") << kSecret;
  ASSERT_EQ(symlink("../outside", (shared + "/link").c_str()), 0);

  FsConfig config;
  config.shared_dir = shared;
  auto fs = PassthroughFs::Create(config);
  ASSERT_TRUE(fs.ok()) << fs.status();
  FuseDispatcher d(fs->get());
  fuse_init_in init{};
  init.major = 7;
  init.minor = 38;
  ASSERT_EQ(Error(Call(d, FUSE_INIT, 0, Bytes(init))), 0);

  constexpr int kSwaps = 3000;
  std::atomic<bool> done{false};
  std::thread swapper([&] {
    for (int i = 0; i < kSwaps; ++i) {
      renameat2(AT_FDCWD, (shared + "/d").c_str(), AT_FDCWD,
                (shared + "/link").c_str(), RENAME_EXCHANGE);
    }
    done = true;
  });
  int reads = 0;
  int symlinks_seen = 0;
  while (!done.load()) {
    const std::vector<uint8_t> e =
        Call(d, FUSE_LOOKUP, FUSE_ROOT_ID, Name("d"));
    if (Error(e) != 0) continue;
    const fuse_entry_out entry = Payload<fuse_entry_out>(e);
    if (S_ISLNK(entry.attr.mode)) ++symlinks_seen;
    const std::vector<uint8_t> fe =
        Call(d, FUSE_LOOKUP, entry.nodeid, Name("f"));
    if (Error(fe) == 0) {
      const uint64_t f = Payload<fuse_entry_out>(fe).nodeid;
      fuse_open_in open_in{};
      open_in.flags = O_RDONLY;
      const std::vector<uint8_t> o = Call(d, FUSE_OPEN, f, Bytes(open_in));
      if (Error(o) == 0) {
        fuse_read_in r{};
        r.fh = Payload<fuse_open_out>(o).fh;
        r.size = 64;
        const std::vector<uint8_t> data = Call(d, FUSE_READ, f, Bytes(r));
        ASSERT_EQ(Error(data), 0);
        const std::string got(data.begin() + sizeof(fuse_out_header),
                              data.end());
        ASSERT_EQ(got, kInside) << "a read escaped the shared directory";
        ++reads;
        fuse_release_in rel{};
        rel.fh = r.fh;
        Call(d, FUSE_RELEASE, f, Bytes(rel));
      }
      fuse_forget_in forget{1};
      Call(d, FUSE_FORGET, f, Bytes(forget));
    }
    fuse_forget_in forget{1};
    Call(d, FUSE_FORGET, entry.nodeid, Bytes(forget));
  }
  swapper.join();
  RecordProperty("reads", reads);
  RecordProperty("symlinks_seen", symlinks_seen);
  EXPECT_GT(reads, 0);
  EXPECT_EQ(Slurp(root + "/outside/f"), kSecret);
  std::error_code ec;
  std::filesystem::remove_all(root, ec);
}

}  // namespace
}  // namespace vhostmig::fs
