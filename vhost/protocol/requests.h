// The vhost-user request numbers (vhost-user.rst, "Front-end message types"
// and "Back-end message types") and their names for messages and logs.
//
// The numbers are the wire values of the header's `request` field. A request
// read from a socket is kept as a plain uint32_t until it has been checked,
// because a peer may send any value.
#ifndef VHOSTMIG_VHOST_PROTOCOL_REQUESTS_H_
#define VHOSTMIG_VHOST_PROTOCOL_REQUESTS_H_

#include <cstdint>
#include <string>

namespace vhostmig::vhost {

// Requests sent by the front-end on the main socket.
enum class FrontendRequest : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,  // deprecated; back-ends ignore it or disable all rings
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,  // stops the ring
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kSendRarp = 19,
  kNetSetMtu = 20,
  kSetBackendReqFd = 21,  // formerly SET_SLAVE_REQ_FD
  kIotlbMsg = 22,
  kSetVringEndian = 23,
  kGetConfig = 24,
  kSetConfig = 25,
  kCreateCryptoSession = 26,
  kCloseCryptoSession = 27,
  kPostcopyAdvise = 28,
  kPostcopyListen = 29,
  kPostcopyEnd = 30,
  kGetInflightFd = 31,
  kSetInflightFd = 32,
  kGpuSetSocket = 33,
  kResetDevice = 34,
  kVringKick = 35,
  kGetMaxMemSlots = 36,
  kAddMemReg = 37,
  kRemMemReg = 38,
  kSetStatus = 39,
  kGetStatus = 40,
  kGetSharedObject = 41,
  kSetDeviceStateFd = 42,
  kCheckDeviceState = 43,
};

inline constexpr uint32_t kFirstFrontendRequest = 1;
inline constexpr uint32_t kLastFrontendRequest = 43;

// Requests sent by the back-end on the channel set up with
// SET_BACKEND_REQ_FD.
enum class BackendRequest : uint32_t {
  kIotlbMsg = 1,
  kConfigChangeMsg = 2,
  kVringHostNotifierMsg = 3,
  kVringCall = 4,
  kVringErr = 5,
  kSharedObjectAdd = 6,
  kSharedObjectRemove = 7,
  kSharedObjectLookup = 8,
};

inline constexpr uint32_t kFirstBackendRequest = 1;
inline constexpr uint32_t kLastBackendRequest = 8;

inline constexpr uint32_t ToWire(FrontendRequest r) {
  return static_cast<uint32_t>(r);
}
inline constexpr uint32_t ToWire(BackendRequest r) {
  return static_cast<uint32_t>(r);
}

inline constexpr bool IsKnownFrontendRequest(uint32_t request) {
  return request >= kFirstFrontendRequest && request <= kLastFrontendRequest;
}
inline constexpr bool IsKnownBackendRequest(uint32_t request) {
  return request >= kFirstBackendRequest && request <= kLastBackendRequest;
}

// "SET_VRING_NUM" for 8; "UNKNOWN_REQUEST(99)" for a number no front-end
// request has. Used as the prefix of every protocol error message.
std::string RequestName(uint32_t request);
inline std::string RequestName(FrontendRequest request) {
  return RequestName(ToWire(request));
}

// "BACKEND_IOTLB_MSG" etc. for back-end requests.
std::string BackendRequestName(uint32_t request);
inline std::string BackendRequestName(BackendRequest request) {
  return BackendRequestName(ToWire(request));
}

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_PROTOCOL_REQUESTS_H_
