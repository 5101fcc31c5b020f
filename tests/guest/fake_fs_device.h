// FakeFsDevice: a tiny in-memory FUSE server implementing vhost::Device, to
// test the synthetic guest's driver and the loopback without the real fs
// device. It records every request it sees and can misbehave on demand.
#ifndef VHOSTMIG_TESTS_GUEST_FAKE_FS_DEVICE_H_
#define VHOSTMIG_TESTS_GUEST_FAKE_FS_DEVICE_H_

#include <linux/fuse.h>

#include <cstdint>
#include <string>
#include <vector>

#include "vhost/backend/device.h"

namespace vhostmig::guest::testing {

struct SeenRequest {
  int queue;
  fuse_in_header header;
  std::vector<uint8_t> body;  // readable bytes after fuse_in_header
  uint64_t readable_len;
  uint64_t writable_len;
  size_t readable_buffers;
  size_t writable_buffers;
};

class FakeFsDevice : public vhost::Device {
 public:
  enum class Misbehave {
    kNone,
    kWrongUnique,    // reply with unique + 1
    kLenBeyondUsed,  // out.len larger than the used length reported
    kPositiveError,  // error = +5
    kShortReply,     // used length 8 (less than fuse_out_header)
    kIgnoreKicks,    // never pops anything
  };

  uint64_t features = (1ull << 32) | (1ull << 29) | (1ull << 28);
  uint32_t queues = 3;  // hiprio + 2 request queues
  Misbehave misbehave = Misbehave::kNone;

  std::vector<SeenRequest> seen;
  uint64_t acked = 0;
  std::string file;  // contents of node 2 ("hello")

  uint64_t Features() const override { return features; }
  uint32_t NumQueues() const override { return queues; }
  void AckFeatures(uint64_t f) override { acked = f; }
  void ProcessQueue(vhost::Vring& vring) override;

 private:
  // Returns the reply bytes after fuse_out_header and sets *error.
  std::vector<uint8_t> Handle(const SeenRequest& r, int32_t* error,
                              bool* no_reply);
};

}  // namespace vhostmig::guest::testing

#endif  // VHOSTMIG_TESTS_GUEST_FAKE_FS_DEVICE_H_
