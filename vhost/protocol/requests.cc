#include "vhost/protocol/requests.h"

#include "absl/strings/str_cat.h"

namespace vhostmig::vhost {
namespace {

// Indexed by request number; entry 0 is unused.
constexpr const char* kFrontendNames[] = {
    nullptr,
    "GET_FEATURES",
    "SET_FEATURES",
    "SET_OWNER",
    "RESET_OWNER",
    "SET_MEM_TABLE",
    "SET_LOG_BASE",
    "SET_LOG_FD",
    "SET_VRING_NUM",
    "SET_VRING_ADDR",
    "SET_VRING_BASE",
    "GET_VRING_BASE",
    "SET_VRING_KICK",
    "SET_VRING_CALL",
    "SET_VRING_ERR",
    "GET_PROTOCOL_FEATURES",
    "SET_PROTOCOL_FEATURES",
    "GET_QUEUE_NUM",
    "SET_VRING_ENABLE",
    "SEND_RARP",
    "NET_SET_MTU",
    "SET_BACKEND_REQ_FD",
    "IOTLB_MSG",
    "SET_VRING_ENDIAN",
    "GET_CONFIG",
    "SET_CONFIG",
    "CREATE_CRYPTO_SESSION",
    "CLOSE_CRYPTO_SESSION",
    "POSTCOPY_ADVISE",
    "POSTCOPY_LISTEN",
    "POSTCOPY_END",
    "GET_INFLIGHT_FD",
    "SET_INFLIGHT_FD",
    "GPU_SET_SOCKET",
    "RESET_DEVICE",
    "VRING_KICK",
    "GET_MAX_MEM_SLOTS",
    "ADD_MEM_REG",
    "REM_MEM_REG",
    "SET_STATUS",
    "GET_STATUS",
    "GET_SHARED_OBJECT",
    "SET_DEVICE_STATE_FD",
    "CHECK_DEVICE_STATE",
};
static_assert(sizeof(kFrontendNames) / sizeof(kFrontendNames[0]) ==
              kLastFrontendRequest + 1);

constexpr const char* kBackendNames[] = {
    nullptr,
    "BACKEND_IOTLB_MSG",
    "BACKEND_CONFIG_CHANGE_MSG",
    "BACKEND_VRING_HOST_NOTIFIER_MSG",
    "BACKEND_VRING_CALL",
    "BACKEND_VRING_ERR",
    "BACKEND_SHARED_OBJECT_ADD",
    "BACKEND_SHARED_OBJECT_REMOVE",
    "BACKEND_SHARED_OBJECT_LOOKUP",
};
static_assert(sizeof(kBackendNames) / sizeof(kBackendNames[0]) ==
              kLastBackendRequest + 1);

}  // namespace

std::string RequestName(uint32_t request) {
  if (IsKnownFrontendRequest(request)) return kFrontendNames[request];
  return absl::StrCat("UNKNOWN_REQUEST(", request, ")");
}

std::string BackendRequestName(uint32_t request) {
  if (IsKnownBackendRequest(request)) return kBackendNames[request];
  return absl::StrCat("UNKNOWN_BACKEND_REQUEST(", request, ")");
}

}  // namespace vhostmig::vhost
