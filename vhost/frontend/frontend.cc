// Frontend core: connection, the request/reply discipline, features and
// device-level requests. Memory, ring and less common requests are in
// frontend_requests.cc.
#include "vhost/frontend/frontend.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/errno_status.h"
#include "base/status_macros.h"
#include "vhost/protocol/codec.h"
#include "vhost/protocol/validation.h"

namespace vhostmig::vhost {

absl::StatusOr<std::unique_ptr<Frontend>> Frontend::Connect(
    const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path too long (", path.size(), " bytes): ", path));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return LastErrnoStatus("socket");
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) return LastErrnoStatus(absl::StrCat("connect ", path));
  return FromFd(std::move(fd));
}

absl::StatusOr<std::unique_ptr<Frontend>> Frontend::FromFd(UniqueFd socket) {
  if (!socket.valid()) {
    return absl::InvalidArgumentError("Frontend::FromFd: invalid fd");
  }
  std::unique_ptr<Frontend> frontend(new Frontend(std::move(socket)));
  RETURN_IF_ERROR(frontend->Handshake());
  return frontend;
}

absl::Status Frontend::Handshake() {
  // Always ask, on every (re)connect: a restarted back-end may offer
  // something else than the one before.
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(backend_features_, CallU64(FrontendRequest::kGetFeatures));
  backend_protocol_features_ = 0;
  if (backend_features_ & kProtocolFeaturesMask) {
    ASSIGN_OR_RETURN(backend_protocol_features_,
                     CallU64(FrontendRequest::kGetProtocolFeatures));
  }
  return absl::OkStatus();
}

uint64_t Frontend::backend_features() const {
  absl::MutexLock lock(&mu_);
  return backend_features_;
}
uint64_t Frontend::backend_protocol_features() const {
  absl::MutexLock lock(&mu_);
  return backend_protocol_features_;
}
uint64_t Frontend::acked_features() const {
  absl::MutexLock lock(&mu_);
  return acked_features_;
}
uint64_t Frontend::acked_protocol_features() const {
  absl::MutexLock lock(&mu_);
  return acked_protocol_features_;
}
std::set<uint32_t> Frontend::enabled_rings() const {
  absl::MutexLock lock(&mu_);
  return enabled_rings_;
}

absl::Status Frontend::Send(FrontendRequest request,
                            absl::Span<const uint8_t> payload,
                            absl::Span<const int> fds) {
  const bool ack =
      HasProtocolFeature(acked_protocol_features_, ProtocolFeature::kReplyAck);
  const uint32_t flags = kVersion1 | (ack ? kFlagNeedReply : 0);
  RETURN_IF_ERROR(
      WriteMessage(socket_.get(), ToWire(request), flags, payload, fds));
  if (!ack) return absl::OkStatus();
  ASSIGN_OR_RETURN(Message reply, ReadMessage(socket_.get()));
  RETURN_IF_ERROR(ValidateReply(ToWire(request), reply, /*ack=*/true));
  ASSIGN_OR_RETURN(const uint64_t verdict, PayloadU64(reply));
  if (verdict != 0) {
    return absl::InternalError(absl::StrCat(
        RequestName(request), ": back-end replied with error ", verdict));
  }
  return absl::OkStatus();
}

absl::StatusOr<Message> Frontend::Call(FrontendRequest request,
                                       absl::Span<const uint8_t> payload,
                                       absl::Span<const int> fds) {
  // No NEED_REPLY: the request is answered anyway, and one reply per request
  // keeps the stream in step with back-ends that would answer twice.
  RETURN_IF_ERROR(
      WriteMessage(socket_.get(), ToWire(request), kVersion1, payload, fds));
  ASSIGN_OR_RETURN(Message reply, ReadMessage(socket_.get()));
  RETURN_IF_ERROR(ValidateReply(ToWire(request), reply, /*ack=*/false));
  return reply;
}

absl::StatusOr<uint64_t> Frontend::CallU64(FrontendRequest request,
                                           absl::Span<const uint8_t> payload) {
  ASSIGN_OR_RETURN(Message reply, Call(request, payload));
  return PayloadU64(reply);
}

absl::Status Frontend::SendU64(FrontendRequest request, uint64_t value) {
  absl::MutexLock lock(&mu_);
  return Send(request, AsBytes(value));
}

absl::Status Frontend::SendFdOnly(FrontendRequest request, int fd) {
  absl::MutexLock lock(&mu_);
  const int fds[] = {fd};
  return Send(request, {}, fds);
}

// --- Session and features ---

absl::StatusOr<uint64_t> Frontend::GetFeatures() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(backend_features_, CallU64(FrontendRequest::kGetFeatures));
  return backend_features_;
}

absl::Status Frontend::SetFeatures(uint64_t features) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(Send(FrontendRequest::kSetFeatures, AsBytes(features)));
  acked_features_ = features;
  if (features & kProtocolFeaturesMask) {
    // Survive back-ends that disable every ring on SET_FEATURES (see the
    // class comment); harmless for back-ends that follow the clarified rule.
    for (uint32_t index : enabled_rings_) {
      VhostUserVringState state{index, 1};
      RETURN_IF_ERROR(Send(FrontendRequest::kSetVringEnable, AsBytes(state)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Frontend::GetProtocolFeatures() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(backend_protocol_features_,
                   CallU64(FrontendRequest::kGetProtocolFeatures));
  return backend_protocol_features_;
}

absl::Status Frontend::SetProtocolFeatures(uint64_t features) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(
      Send(FrontendRequest::kSetProtocolFeatures, AsBytes(features)));
  // REPLY_ACK applies from the next request on.
  acked_protocol_features_ = features;
  return absl::OkStatus();
}

absl::Status Frontend::SetOwner() {
  absl::MutexLock lock(&mu_);
  return Send(FrontendRequest::kSetOwner, {});
}

absl::Status Frontend::ResetOwner() {
  absl::MutexLock lock(&mu_);
  return Send(FrontendRequest::kResetOwner, {});
}

absl::StatusOr<uint64_t> Frontend::GetQueueNum() {
  absl::MutexLock lock(&mu_);
  return CallU64(FrontendRequest::kGetQueueNum);
}

absl::Status Frontend::ResetDevice() {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(Send(FrontendRequest::kResetDevice, {}));
  enabled_rings_.clear();
  return absl::OkStatus();
}

absl::Status Frontend::SetStatus(uint8_t status) {
  return SendU64(FrontendRequest::kSetStatus, status);
}

absl::StatusOr<uint8_t> Frontend::GetStatus() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(const uint64_t status, CallU64(FrontendRequest::kGetStatus));
  if (status > 0xff) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GET_STATUS: status 0x", absl::Hex(status), " does not fit in 8 bits"));
  }
  return static_cast<uint8_t>(status);
}

// --- Config space ---

absl::StatusOr<std::vector<uint8_t>> Frontend::GetConfig(uint32_t offset,
                                                         uint32_t size,
                                                         uint32_t flags) {
  ConfigAccess access;
  access.offset = offset;
  access.flags = flags;
  access.data.assign(size, 0);
  ASSIGN_OR_RETURN(std::vector<uint8_t> payload, EncodeConfig(access));
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Message reply, Call(FrontendRequest::kGetConfig, payload));
  if (reply.payload.empty()) {
    return absl::InternalError(
        absl::StrCat("GET_CONFIG: back-end failed to read ", size,
                     " bytes at offset ", offset));
  }
  ASSIGN_OR_RETURN(ConfigAccess got, DecodeConfig(reply));
  if (got.offset != offset || got.data.size() != size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GET_CONFIG: reply covers ", got.data.size(), " bytes at offset ",
        got.offset, ", expected ", size, " bytes at offset ", offset));
  }
  return std::move(got.data);
}

absl::Status Frontend::SetConfig(uint32_t offset,
                                 absl::Span<const uint8_t> data,
                                 uint32_t flags) {
  ConfigAccess access;
  access.offset = offset;
  access.flags = flags;
  access.data.assign(data.begin(), data.end());
  ASSIGN_OR_RETURN(std::vector<uint8_t> payload, EncodeConfig(access));
  absl::MutexLock lock(&mu_);
  return Send(FrontendRequest::kSetConfig, payload);
}

// --- Device state ---

absl::StatusOr<UniqueFd> Frontend::SetDeviceStateFd(TransferDirection direction,
                                                    MigrationPhase phase,
                                                    UniqueFd fd) {
  VhostUserDeviceStateParams params;
  params.direction = static_cast<uint32_t>(direction);
  params.phase = static_cast<uint32_t>(phase);
  absl::MutexLock lock(&mu_);
  const int fds[] = {fd.get()};
  absl::StatusOr<Message> reply =
      Call(FrontendRequest::kSetDeviceStateFd, AsBytes(params), fds);
  // Our copy of this end must be gone for the other side to see EOF.
  fd.reset();
  if (!reply.ok()) return reply.status();
  ASSIGN_OR_RETURN(const uint64_t value, PayloadU64(*reply));
  if (value & kDeviceStateErrorMask) {
    return absl::InternalError(
        absl::StrCat("SET_DEVICE_STATE_FD: back-end replied with error ",
                     value & kDeviceStateErrorMask));
  }
  const bool use_ours = (value & kDeviceStateNoFdFlag) != 0;
  if (use_ours) {
    if (!reply->fds.empty()) {
      return absl::InvalidArgumentError(
          "SET_DEVICE_STATE_FD: reply says 'no fd' but carries one");
    }
    return UniqueFd();
  }
  if (reply->fds.empty()) {
    return absl::InvalidArgumentError(
        "SET_DEVICE_STATE_FD: reply promises an fd but carries none");
  }
  return std::move(reply->fds[0]);
}

absl::Status Frontend::CheckDeviceState() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(const uint64_t value,
                   CallU64(FrontendRequest::kCheckDeviceState));
  if (value != 0) {
    return absl::InternalError(absl::StrCat(
        "CHECK_DEVICE_STATE: back-end reports state transfer error ", value));
  }
  return absl::OkStatus();
}

}  // namespace vhostmig::vhost
