// fuse_dispatch_fuzz: arbitrary bytes as a sequence of FUSE requests,
// dispatched by a fresh PassthroughFs + FuseDispatcher (fs_device/) serving
// a scratch shared directory, after a valid FUSE_INIT.
//
// Input: records of
//   [u8 control][u16 LE in_len][in_len bytes: fuse_in_header + arguments]
// control bit 0: set fuse_in_header.len to the record's length (so most
// requests are well framed); bit 1: cut the readable bytes into 2 iovecs;
// bits 2-7: writable buffer of (bits × 256) bytes (0: no writable part).
// Seeds: tests/fuzz/fuse_seeds.py.
//
// Per input the scratch tree is rebuilt: shared/{file, dir/inner,
// out-link -> ../outside/secret, abs-link -> <outside>/secret} next to
// outside/secret. Invariants (a violation traps):
//   - no reply writes past its writable buffers (guard bytes);
//   - the reported byte count never exceeds the writable buffers;
//   - nothing outside shared/ changes: outside/ holds exactly `secret`
//     with its contents, mode and one link, and the scratch root holds
//     only shared/ and outside/;
//   - no reply carries the secret's contents (nothing read through a link
//     or a crafted node id reaches a file outside the shared directory).
#include <dirent.h>
#include <linux/fuse.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "fs_device/fuse_dispatcher.h"
#include "fs_device/passthrough_fs.h"

namespace {

using vhostmig::fs::FsConfig;
using vhostmig::fs::FuseChain;
using vhostmig::fs::FuseDispatcher;
using vhostmig::fs::PassthroughFs;

constexpr char kSecret[] = "OUTSIDE-SECRET-7f3a9c";
constexpr size_t kGuard = 64;
constexpr uint8_t kGuardByte = 0xA5;
constexpr size_t kMaxRequests = 64;

std::string* g_root = nullptr;

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

void WriteFile(const std::string& path, const std::string& content,
               mode_t mode) {
  FILE* f = fopen(path.c_str(), "w");
  Check(f != nullptr);
  fputs(content.c_str(), f);
  fclose(f);
  chmod(path.c_str(), mode);
}

void MakeRoot() {
  const char* base = getenv("TEST_TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/fusefuzz.XXXXXX";
  Check(mkdtemp(tmpl.data()) != nullptr);
  g_root = new std::string(tmpl);
  Check(mkdir((tmpl + "/outside").c_str(), 0755) == 0);
  WriteFile(tmpl + "/outside/secret", kSecret, 0644);
}

// A fresh shared tree for each input, so inputs do not depend on each
// other (a crash reproduces from its input alone).
void ResetShared() {
  const std::string shared = *g_root + "/shared";
  std::error_code ec;
  std::filesystem::remove_all(shared, ec);
  Check(mkdir(shared.c_str(), 0755) == 0);
  Check(mkdir((shared + "/dir").c_str(), 0755) == 0);
  WriteFile(shared + "/file", "shared file data", 0644);
  WriteFile(shared + "/dir/inner", "inner data", 0644);
  Check(symlink("../outside/secret", (shared + "/out-link").c_str()) == 0);
  Check(symlink((*g_root + "/outside/secret").c_str(),
                (shared + "/abs-link").c_str()) == 0);
}

std::set<std::string> List(const std::string& dir) {
  std::set<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.insert(n);
  }
  closedir(d);
  return names;
}

void CheckOutsideUntouched() {
  Check(List(*g_root) == std::set<std::string>{"outside", "shared"});
  Check(List(*g_root + "/outside") == std::set<std::string>{"secret"});
  struct stat st;
  Check(lstat((*g_root + "/outside/secret").c_str(), &st) == 0);
  Check(S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0644);
  Check(st.st_nlink == 1 && st.st_size == sizeof(kSecret) - 1);
  char buf[sizeof(kSecret)] = {};
  FILE* f = fopen((*g_root + "/outside/secret").c_str(), "r");
  Check(f != nullptr);
  const size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  Check(n == sizeof(kSecret) - 1 && std::memcmp(buf, kSecret, n) == 0);
}

// Runs one request; checks the reply's bounds and contents.
void Run(FuseDispatcher& dispatcher, std::vector<uint8_t> in, bool split,
         size_t out_size) {
  FuseChain chain;
  if (split && in.size() > 1) {
    const size_t half = in.size() / 2;
    chain.in.push_back({in.data(), half});
    chain.in.push_back({in.data() + half, in.size() - half});
  } else {
    chain.in.push_back({in.data(), in.size()});
  }
  std::vector<uint8_t> out(out_size + kGuard, kGuardByte);
  if (out_size > 0) chain.out.push_back({out.data(), out_size});
  const uint32_t written = dispatcher.ProcessOne(chain);
  Check(written <= out_size);
  for (size_t i = out_size; i < out.size(); ++i) Check(out[i] == kGuardByte);
  const std::string reply(out.begin(), out.begin() + written);
  Check(reply.find(kSecret) == std::string::npos);
}

std::vector<uint8_t> InitRequest() {
  fuse_in_header h{};
  fuse_init_in init{};
  init.major = 7;
  init.minor = 38;
  init.flags = 0xffffffff;
  h.opcode = FUSE_INIT;
  h.unique = 1;
  h.len = sizeof(h) + sizeof(init);
  std::vector<uint8_t> in(h.len);
  std::memcpy(in.data(), &h, sizeof(h));
  std::memcpy(in.data() + sizeof(h), &init, sizeof(init));
  return in;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (g_root == nullptr) MakeRoot();
  ResetShared();
  {
    FsConfig config;
    config.shared_dir = *g_root + "/shared";
    config.xattr = true;
    auto fs = PassthroughFs::Create(config);
    Check(fs.ok());
    FuseDispatcher dispatcher(fs->get());
    Run(dispatcher, InitRequest(), false, 4096);
    size_t pos = 0;
    for (size_t n = 0; n < kMaxRequests && pos + 3 <= size; ++n) {
      const uint8_t control = data[pos];
      const size_t len = data[pos + 1] | (size_t{data[pos + 2]} << 8);
      pos += 3;
      const size_t take = std::min(len, size - pos);
      std::vector<uint8_t> in(data + pos, data + pos + take);
      pos += take;
      if ((control & 1) && in.size() >= sizeof(fuse_in_header)) {
        const uint32_t l = static_cast<uint32_t>(in.size());
        std::memcpy(in.data() + offsetof(fuse_in_header, len), &l, sizeof(l));
      }
      Run(dispatcher, std::move(in), (control & 2) != 0,
          static_cast<size_t>(control >> 2) * 256);
    }
  }  // the file system and every fd it held are gone
  CheckOutsideUntouched();
  return 0;
}
