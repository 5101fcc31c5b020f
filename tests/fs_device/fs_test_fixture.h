// Test fixture for the virtio-fs device: a fresh temporary shared directory,
// a VirtioFsDevice serving it, and the synthetic guest's VirtioFsDriver
// talking to the device through real split rings (guest/loopback.h), with
// FUSE_INIT already done.
//
// Subclasses tune the device by overriding Config()/Options().
#ifndef VHOSTMIG_TESTS_FS_DEVICE_FS_TEST_FIXTURE_H_
#define VHOSTMIG_TESTS_FS_DEVICE_FS_TEST_FIXTURE_H_

#include <fcntl.h>
#include <linux/fuse.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "fs_device/virtio_fs_device.h"
#include "gtest/gtest.h"
#include "guest/loopback.h"
#include "guest/virtio_fs_driver.h"

namespace vhostmig::fs {

// A temporary directory removed (recursively) on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TEST_TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/fsdev.XXXXXX";
    char* p = mkdtemp(tmpl.data());
    path_ = p ? p : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::vector<uint8_t> Bytes(absl::string_view s) {
  return std::vector<uint8_t>(s.begin(), s.end());
}

class FsDeviceTest : public ::testing::Test {
 protected:
  virtual FsConfig Config() {
    FsConfig config;
    config.xattr = true;
    return config;
  }
  virtual VirtioFsOptions Options() { return VirtioFsOptions{}; }
  virtual guest::LoopbackFsOptions LoopbackOptions() {
    guest::LoopbackFsOptions options;
    options.driver.queue_size = 256;
    return options;
  }

  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp: " << std::strerror(errno);
    FsConfig config = Config();
    config.shared_dir = dir_.path();
    auto device = VirtioFsDevice::Create(config, Options());
    ASSERT_TRUE(device.ok()) << device.status();
    device_ = *std::move(device);
    auto loopback = guest::LoopbackFs::Create(device_.get(), LoopbackOptions());
    ASSERT_TRUE(loopback.ok()) << loopback.status();
    guest_ = *std::move(loopback);
    auto init = driver().Init();
    ASSERT_TRUE(init.ok()) << init.status();
  }

  guest::VirtioFsDriver& driver() { return guest_->driver(); }
  VirtioFsDevice& device() { return *device_; }
  PassthroughFs& fs() { return device_->fs(); }

  std::string HostPath(absl::string_view rel) const {
    return dir_.path() + "/" + std::string(rel);
  }
  void WriteHostFile(absl::string_view rel, absl::string_view content) {
    std::ofstream out(HostPath(rel), std::ios::binary);
    out << content;
    ASSERT_TRUE(out.good()) << HostPath(rel);
  }
  std::string ReadHostFile(absl::string_view rel) {
    std::ifstream in(HostPath(rel), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  bool HostExists(absl::string_view rel) {
    struct stat st;
    return lstat(HostPath(rel).c_str(), &st) == 0;
  }

  // Lookup that must succeed; returns the node id.
  uint64_t MustLookup(uint64_t parent, absl::string_view name) {
    auto e = driver().Lookup(parent, name);
    EXPECT_TRUE(e.ok()) << name << ": " << e.status();
    return e.ok() ? e->nodeid : 0;
  }

  // The raw reply of a hand-built request.
  guest::FuseReply SendRaw(uint32_t opcode, uint64_t nodeid,
                           const std::vector<uint8_t>& payload,
                           uint32_t reply_bytes = 4096,
                           std::optional<uint32_t> header_len = std::nullopt) {
    auto r = driver().Send(opcode, nodeid, payload, reply_bytes, std::nullopt,
                           header_len);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : guest::FuseReply{};
  }

  TempDir dir_;
  std::unique_ptr<VirtioFsDevice> device_;
  std::unique_ptr<guest::LoopbackFs> guest_;
};

template <typename T>
std::vector<uint8_t> StructBytes(const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  return std::vector<uint8_t>(p, p + sizeof(T));
}

inline std::vector<uint8_t> Concat(
    std::initializer_list<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// A name with its terminating NUL, as FUSE sends names.
inline std::vector<uint8_t> Name(absl::string_view s) {
  std::vector<uint8_t> out(s.begin(), s.end());
  out.push_back(0);
  return out;
}

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_TESTS_FS_DEVICE_FS_TEST_FIXTURE_H_
