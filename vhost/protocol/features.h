// Feature bits negotiated over vhost-user: the virtio/vhost feature bits
// (GET/SET_FEATURES) and the vhost-user protocol feature bits
// (GET/SET_PROTOCOL_FEATURES, vhost-user.rst "Protocol features").
//
// Bits that a kernel header defines are taken from it (linux/vhost_types.h,
// linux/virtio_config.h, linux/virtio_ring.h); only the vhost-user specific
// ones are spelled out here. Everything is a bit number; FeatureMask() turns
// one into a mask.
#ifndef VHOSTMIG_VHOST_PROTOCOL_FEATURES_H_
#define VHOSTMIG_VHOST_PROTOCOL_FEATURES_H_

// linux/virtio_ring.h's legacy helpers are not valid C++.
#ifndef VIRTIO_RING_NO_LEGACY
#define VIRTIO_RING_NO_LEGACY
#endif
#include <linux/vhost_types.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

#include <cstdint>
#include <string>
#include <vector>

namespace vhostmig::vhost {

constexpr uint64_t FeatureMask(int bit) { return uint64_t{1} << bit; }

// Virtio / vhost feature bits (GET_FEATURES).
inline constexpr int kFeatureLogAll = VHOST_F_LOG_ALL;  // 26
inline constexpr int kFeatureIndirectDesc = VIRTIO_RING_F_INDIRECT_DESC;
inline constexpr int kFeatureEventIdx = VIRTIO_RING_F_EVENT_IDX;
// Reuses the legacy UNUSED bit 30; no kernel header names it.
inline constexpr int kFeatureProtocolFeatures = 30;
inline constexpr int kFeatureVersion1 = VIRTIO_F_VERSION_1;  // 32
static_assert(kFeatureLogAll == 26 && kFeatureVersion1 == 32);

inline constexpr uint64_t kLogAllMask = FeatureMask(kFeatureLogAll);
inline constexpr uint64_t kProtocolFeaturesMask =
    FeatureMask(kFeatureProtocolFeatures);

// Protocol feature bits (GET_PROTOCOL_FEATURES), numbered as in the spec.
enum class ProtocolFeature : int {
  kMq = 0,
  kLogShmfd = 1,
  kRarp = 2,
  kReplyAck = 3,
  kMtu = 4,
  kBackendReq = 5,
  kCrossEndian = 6,
  kCryptoSession = 7,
  kPagefault = 8,
  kConfig = 9,
  kBackendSendFd = 10,
  kHostNotifier = 11,
  kInflightShmfd = 12,
  kResetDevice = 13,
  kInbandNotifications = 14,
  kConfigureMemSlots = 15,
  kStatus = 16,
  kXenMmap = 17,
  kSharedObject = 18,
  kDeviceState = 19,
};
inline constexpr int kLastProtocolFeature = 19;

constexpr uint64_t FeatureMask(ProtocolFeature f) {
  return FeatureMask(static_cast<int>(f));
}
constexpr bool HasProtocolFeature(uint64_t features, ProtocolFeature f) {
  return (features & FeatureMask(f)) != 0;
}

// "VHOST_F_LOG_ALL", "VIRTIO_F_VERSION_1", ...; "bit 45" for bits without a
// transport-level name (device-specific bits, e.g. virtio-fs's, are not
// known here).
std::string FeatureBitName(int bit);
// "LOG_SHMFD", "DEVICE_STATE", ...; "bit 40" for unknown bits.
std::string ProtocolFeatureName(int bit);

// The names of every set bit, lowest first.
std::vector<std::string> FeatureNames(uint64_t features);
std::vector<std::string> ProtocolFeatureNames(uint64_t features);

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_PROTOCOL_FEATURES_H_
