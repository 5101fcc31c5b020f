#include "vhost/protocol/features.h"

#include "absl/strings/str_cat.h"

namespace vhostmig::vhost {
namespace {

constexpr const char* kProtocolFeatureNames[] = {
    "MQ",
    "LOG_SHMFD",
    "RARP",
    "REPLY_ACK",
    "MTU",
    "BACKEND_REQ",
    "CROSS_ENDIAN",
    "CRYPTO_SESSION",
    "PAGEFAULT",
    "CONFIG",
    "BACKEND_SEND_FD",
    "HOST_NOTIFIER",
    "INFLIGHT_SHMFD",
    "RESET_DEVICE",
    "INBAND_NOTIFICATIONS",
    "CONFIGURE_MEM_SLOTS",
    "STATUS",
    "XEN_MMAP",
    "SHARED_OBJECT",
    "DEVICE_STATE",
};
static_assert(sizeof(kProtocolFeatureNames) /
                  sizeof(kProtocolFeatureNames[0]) ==
              kLastProtocolFeature + 1);

}  // namespace

std::string FeatureBitName(int bit) {
  switch (bit) {
    case VIRTIO_F_NOTIFY_ON_EMPTY:
      return "VIRTIO_F_NOTIFY_ON_EMPTY";
    case kFeatureLogAll:
      return "VHOST_F_LOG_ALL";
    case VIRTIO_F_ANY_LAYOUT:
      return "VIRTIO_F_ANY_LAYOUT";
    case kFeatureIndirectDesc:
      return "VIRTIO_RING_F_INDIRECT_DESC";
    case kFeatureEventIdx:
      return "VIRTIO_RING_F_EVENT_IDX";
    case kFeatureProtocolFeatures:
      return "VHOST_USER_F_PROTOCOL_FEATURES";
    case kFeatureVersion1:
      return "VIRTIO_F_VERSION_1";
    case VIRTIO_F_ACCESS_PLATFORM:
      return "VIRTIO_F_ACCESS_PLATFORM";
    case VIRTIO_F_RING_PACKED:
      return "VIRTIO_F_RING_PACKED";
    case VIRTIO_F_IN_ORDER:
      return "VIRTIO_F_IN_ORDER";
    case VIRTIO_F_ORDER_PLATFORM:
      return "VIRTIO_F_ORDER_PLATFORM";
    case VIRTIO_F_SR_IOV:
      return "VIRTIO_F_SR_IOV";
    case VIRTIO_F_RING_RESET:
      return "VIRTIO_F_RING_RESET";
    default:
      return absl::StrCat("bit ", bit);
  }
}

std::string ProtocolFeatureName(int bit) {
  if (bit >= 0 && bit <= kLastProtocolFeature) {
    return kProtocolFeatureNames[bit];
  }
  return absl::StrCat("bit ", bit);
}

std::vector<std::string> FeatureNames(uint64_t features) {
  std::vector<std::string> names;
  for (int bit = 0; bit < 64; ++bit) {
    if (features & FeatureMask(bit)) names.push_back(FeatureBitName(bit));
  }
  return names;
}

std::vector<std::string> ProtocolFeatureNames(uint64_t features) {
  std::vector<std::string> names;
  for (int bit = 0; bit < 64; ++bit) {
    if (features & FeatureMask(bit)) names.push_back(ProtocolFeatureName(bit));
  }
  return names;
}

}  // namespace vhostmig::vhost
