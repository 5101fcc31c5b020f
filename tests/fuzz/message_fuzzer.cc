// libFuzzer target: decoding and validating vhost-user messages from
// untrusted bytes, in both directions (requests a back-end receives,
// replies a front-end receives), plus the typed payload decoders.
//
// Input: [u8 fd_count][12-byte header][payload...]. The fds are eventfds
// created here, attached as if they had arrived in SCM_RIGHTS. Nothing may
// crash, leak or read out of bounds, whatever the bytes.
//
// Builds with clang's -fsanitize=fuzzer (--config=fuzz) or, under GCC, with
// fuzz_replay_main.cc, which runs the committed seed corpus.
#include <sys/eventfd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "vhost/protocol/features.h"
#include "vhost/protocol/message.h"
#include "vhost/protocol/validation.h"

namespace {

using namespace vhostmig::vhost;  // NOLINT: fuzz driver

void Exercise(const Message& m) {
  (void)ValidateRequest(m);
  (void)m.name();
  if (m.payload.size() >= sizeof(VhostUserMemoryHeader)) {
    (void)DecodeMemoryTable(m);
  }
  (void)DecodeConfig(m);
  (void)PayloadAs<VhostUserVringAddr>(m);
  (void)PayloadAs<VhostUserSingleMemoryRegion>(m);
  (void)PayloadU64(m);
  for (uint32_t r = kFirstFrontendRequest; r <= kLastFrontendRequest; ++r) {
    (void)ValidateReply(r, m, /*ack=*/false);
    (void)ValidateReply(r, m, /*ack=*/true);
  }
  (void)FeatureNames(m.payload.size() >= 8 ? m.payload[0] : 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 + sizeof(VhostUserHeader)) return 0;
  const size_t fd_count = data[0] % (kMaxFds + 1);
  VhostUserHeader header;
  std::memcpy(&header, data + 1, sizeof(header));
  Message m;
  m.request = header.request;
  m.flags = header.flags;
  // The codec never hands out more than kMaxPayloadSize bytes.
  const size_t rest = size - 1 - sizeof(header);
  const size_t len = rest < kMaxPayloadSize ? rest : kMaxPayloadSize;
  m.payload.assign(data + 1 + sizeof(header), data + 1 + sizeof(header) + len);
  for (size_t i = 0; i < fd_count; ++i) {
    m.fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  }
  Exercise(m);
  return 0;
}
