// Message: one vhost-user message as it travels on the socket, a header's
// request and flags, the payload bytes, and the fds from its ancillary data.
//
// A Message owns its fds (UniqueFd); dropping a message closes them, so an fd
// a handler does not use cannot leak. Payloads are plain bytes: typed access
// goes through PayloadAs<T>(), which insists on the exact wire size and
// reports a mismatch as "SET_VRING_NUM: payload is 4 bytes, expected 8".
// The variable-sized payloads (memory table, config space) have their own
// encoders and decoders here.
//
// Messages are values; nothing here does I/O (codec.h does).
#ifndef VHOSTMIG_VHOST_PROTOCOL_MESSAGE_H_
#define VHOSTMIG_VHOST_PROTOCOL_MESSAGE_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "base/unique_fd.h"
#include "vhost/protocol/payloads.h"
#include "vhost/protocol/requests.h"

namespace vhostmig::vhost {

struct Message {
  uint32_t request = 0;
  uint32_t flags = kVersion1;
  std::vector<uint8_t> payload;
  std::vector<UniqueFd> fds;

  uint32_t version() const { return flags & kVersionMask; }
  bool is_reply() const { return (flags & kFlagReply) != 0; }
  bool need_reply() const { return (flags & kFlagNeedReply) != 0; }
  std::string name() const { return RequestName(request); }
};

// Builds a message whose payload is the bytes of `body`.
template <typename T>
Message MakeMessage(uint32_t request, uint32_t flags, const T& body) {
  static_assert(std::is_trivially_copyable_v<T>);
  Message m;
  m.request = request;
  m.flags = flags;
  m.payload.resize(sizeof(T));
  std::memcpy(m.payload.data(), &body, sizeof(T));
  return m;
}
inline Message MakeMessage(uint32_t request, uint32_t flags) {
  Message m;
  m.request = request;
  m.flags = flags;
  return m;
}

// A request as the front-end sends it (version 1, no REPLY bit).
template <typename T>
Message MakeRequest(FrontendRequest request, const T& body) {
  return MakeMessage(ToWire(request), kVersion1, body);
}
inline Message MakeRequest(FrontendRequest request) {
  return MakeMessage(ToWire(request), kVersion1);
}

// A reply to `request`: version 1 and the REPLY bit, never NEED_REPLY.
template <typename T>
Message MakeReply(uint32_t request, const T& body) {
  return MakeMessage(request, kVersion1 | kFlagReply, body);
}
inline Message MakeReply(uint32_t request) {
  return MakeMessage(request, kVersion1 | kFlagReply);
}

// The payload as a T; fails unless it is exactly sizeof(T) bytes.
template <typename T>
absl::StatusOr<T> PayloadAs(const Message& m) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (m.payload.size() != sizeof(T)) {
    return absl::InvalidArgumentError(
        absl::StrCat(m.name(), ": payload is ", m.payload.size(),
                     " bytes, expected ", sizeof(T)));
  }
  T value;
  std::memcpy(&value, m.payload.data(), sizeof(T));
  return value;
}

inline absl::StatusOr<uint64_t> PayloadU64(const Message& m) {
  return PayloadAs<uint64_t>(m);
}

// SET_MEM_TABLE payload for up to kMaxMemoryRegions regions.
std::vector<uint8_t> EncodeMemoryTable(
    absl::Span<const VhostUserMemoryRegion> regions);
// Parses and checks a SET_MEM_TABLE payload: num_regions <= 8, the payload
// size matches num_regions, padding is zero, and each region has a non-zero
// size and no address range that wraps around.
absl::StatusOr<std::vector<VhostUserMemoryRegion>> DecodeMemoryTable(
    const Message& m);

// Checks one region (non-zero size, no wrap-around in any address space).
absl::Status CheckMemoryRegion(const Message& m,
                               const VhostUserMemoryRegion& region);

// GET/SET_CONFIG payload.
struct ConfigAccess {
  uint32_t offset = 0;
  uint32_t flags = 0;
  std::vector<uint8_t> data;  // size() is the access size
};
// `data` may be all zeros for GET_CONFIG requests; its size is the access
// size. Fails if data is larger than kMaxConfigSize.
absl::StatusOr<std::vector<uint8_t>> EncodeConfig(const ConfigAccess& access);
// Parses and checks a config payload: size <= kMaxConfigSize and the
// payload is exactly 12 + size bytes.
absl::StatusOr<ConfigAccess> DecodeConfig(const Message& m);

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_PROTOCOL_MESSAGE_H_
