// RawFuse: drives a FuseDispatcher directly with hand-built chains in plain
// memory, no rings. For malformed-request tests that need exact control of
// buffer splits and sizes, and to check that replies never write past the
// writable buffers (each is followed by guard bytes).
#ifndef VHOSTMIG_TESTS_FS_DEVICE_RAW_FUSE_H_
#define VHOSTMIG_TESTS_FS_DEVICE_RAW_FUSE_H_

#include <linux/fuse.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fs_device/fuse_dispatcher.h"
#include "fs_device/passthrough_fs.h"
#include "gtest/gtest.h"

namespace vhostmig::fs {

struct RawReply {
  uint32_t written = 0;
  fuse_out_header header{};
  std::vector<uint8_t> payload;  // bytes after the header, as written
  bool guard_intact = true;
};

class RawFuse {
 public:
  static constexpr size_t kGuard = 64;
  static constexpr uint8_t kGuardByte = 0xA5;

  explicit RawFuse(PassthroughFs* fs) : fs_(fs), dispatcher_(fs) {}

  // Sends `body` after a header built from the arguments. `in_split` > 0
  // cuts the readable bytes into pieces of that size; `out_sizes` lists the
  // writable buffers.
  RawReply Send(uint32_t opcode, uint64_t nodeid,
                const std::vector<uint8_t>& body,
                std::vector<size_t> out_sizes = {4096}, size_t in_split = 0,
                std::optional<uint32_t> header_len = std::nullopt) {
    fuse_in_header h{};
    h.opcode = opcode;
    h.nodeid = nodeid;
    h.unique = next_unique_++;
    h.len = header_len ? *header_len
                       : static_cast<uint32_t>(sizeof(h) + body.size());
    std::vector<uint8_t> in(sizeof(h));
    std::memcpy(in.data(), &h, sizeof(h));
    in.insert(in.end(), body.begin(), body.end());
    return SendBytes(in, out_sizes, in_split, h.unique);
  }

  RawReply SendBytes(const std::vector<uint8_t>& in_bytes,
                     std::vector<size_t> out_sizes, size_t in_split = 0,
                     uint64_t expect_unique = 0) {
    in_store_ = in_bytes;
    FuseChain chain;
    const size_t step =
        in_split ? in_split : std::max<size_t>(1, in_store_.size());
    for (size_t off = 0; off < in_store_.size(); off += step) {
      chain.in.push_back(iovec{in_store_.data() + off,
                               std::min(step, in_store_.size() - off)});
    }
    out_store_.clear();
    for (size_t n : out_sizes) {
      auto buf = std::make_unique<std::vector<uint8_t>>(n + kGuard, kGuardByte);
      chain.out.push_back(iovec{buf->data(), n});
      out_store_.push_back(std::move(buf));
    }
    RawReply r;
    r.written = dispatcher_.ProcessOne(chain);
    std::vector<uint8_t> flat;
    for (size_t i = 0; i < out_sizes.size(); ++i) {
      const auto& buf = *out_store_[i];
      flat.insert(flat.end(), buf.begin(), buf.begin() + out_sizes[i]);
      for (size_t g = 0; g < kGuard; ++g) {
        if (buf[out_sizes[i] + g] != kGuardByte) r.guard_intact = false;
      }
    }
    if (r.written >= sizeof(fuse_out_header)) {
      std::memcpy(&r.header, flat.data(), sizeof(r.header));
      r.payload.assign(flat.begin() + sizeof(fuse_out_header),
                       flat.begin() + r.written);
      EXPECT_EQ(r.header.len, r.written);
    }
    return r;
  }

  // FUSE_INIT with a current kernel's arguments.
  void Init() {
    fuse_init_in in{};
    in.major = 7;
    in.minor = 38;
    in.flags = 0xffffffff;
    RawReply r = Send(FUSE_INIT, 0, Struct(in));
    ASSERT_EQ(r.header.error, 0);
  }

  template <typename T>
  static std::vector<uint8_t> Struct(const T& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    return std::vector<uint8_t>(p, p + sizeof(T));
  }

 private:
  PassthroughFs* fs_;
  FuseDispatcher dispatcher_;
  uint64_t next_unique_ = 1;
  std::vector<uint8_t> in_store_;
  std::vector<std::unique_ptr<std::vector<uint8_t>>> out_store_;
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_TESTS_FS_DEVICE_RAW_FUSE_H_
