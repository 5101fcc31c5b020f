// Session core: reply discipline, dispatch, features, status, config and
// device-state requests. Memory and ring requests are in session_memory.cc
// and session_rings.cc.
#include "vhost/backend/session.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vhost/protocol/codec.h"
#include "vhost/protocol/features.h"
#include "vhost/protocol/validation.h"

namespace vhostmig::vhost {
namespace {

using R = FrontendRequest;

// Protocol features the framework implements for every device.
constexpr uint64_t kFrameworkProtocolFeatures =
    FeatureMask(ProtocolFeature::kMq) |
    FeatureMask(ProtocolFeature::kLogShmfd) |
    FeatureMask(ProtocolFeature::kReplyAck) |
    FeatureMask(ProtocolFeature::kConfigureMemSlots) |
    FeatureMask(ProtocolFeature::kStatus) |
    FeatureMask(ProtocolFeature::kResetDevice);

// Protocol features a device may add on top (device.h).
constexpr uint64_t kDeviceProtocolFeatures =
    FeatureMask(ProtocolFeature::kConfig) |
    FeatureMask(ProtocolFeature::kDeviceState);

Message U64Reply(uint32_t request, uint64_t value) {
  return MakeReply(request, value);
}

}  // namespace

Session::Session(Device* device, const BackendOptions* options, int socket,
                 std::atomic<uint64_t>* rejected_total)
    : device_(device),
      options_(options),
      socket_(socket),
      state_transfer_(device),
      rejected_total_(rejected_total) {
  const uint32_t n = device->NumQueues();
  rings_.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    rings_.push_back(
        std::make_unique<BackendRing>(static_cast<int>(i), device));
  }
}

Session::~Session() {
  for (auto& ring : rings_) ring->Stop();
  state_transfer_.Reset();
  device_->Reset();
}

uint64_t Session::OfferedFeatures() const {
  return device_->Features() | kProtocolFeaturesMask | kLogAllMask;
}

uint64_t Session::OfferedProtocolFeatures() const {
  return kFrameworkProtocolFeatures |
         (device_->ProtocolFeatures() & kDeviceProtocolFeatures);
}

void Session::Log(const std::string& line) const {
  if (options_->log) {
    options_->log(line);
  } else {
    std::fprintf(stderr, "vhost-user back-end: %s\n", line.c_str());
  }
}

void Session::CountRejected() {
  ++rejected_;
  if (rejected_total_ != nullptr) rejected_total_->fetch_add(1);
}

void Session::NoteUnreadable(const absl::Status& status) {
  CountRejected();
  Log(absl::StrCat("dropped unreadable message: ", status.message()));
}

absl::Status Session::Handle(Message request) {
  absl::Status valid = ValidateRequest(request);
  if (!valid.ok()) return SendErrorReply(request, valid);
  absl::StatusOr<Reply> reply = Dispatch(request);
  if (!reply.ok()) return SendErrorReply(request, reply.status());
  if (reply->has_value()) return WriteMessage(socket_, **reply);
  if (request.need_reply()) {
    // REPLY_ACK (vhost-user.rst "VHOST_USER_PROTOCOL_F_REPLY_ACK"): zero is
    // success. The reply never echoes NEED_REPLY.
    return WriteMessage(socket_, U64Reply(request.request, 0));
  }
  return absl::OkStatus();
}

absl::Status Session::SendErrorReply(const Message& m,
                                     const absl::Status& error) {
  CountRejected();
  Log(std::string(error.message()));
  if (!IsKnownFrontendRequest(m.request)) {
    if (!m.need_reply()) return absl::OkStatus();
    return WriteMessage(socket_, U64Reply(m.request, 1));
  }
  switch (static_cast<R>(m.request)) {
    // Requests whose own reply is a status word.
    case R::kSetDeviceStateFd:
      // An error, and no fd returned (the two must not go together).
      return WriteMessage(socket_,
                          U64Reply(m.request, kDeviceStateNoFdFlag | 1));
    case R::kCheckDeviceState:
    case R::kIotlbMsg:
    case R::kPostcopyEnd:
      return WriteMessage(socket_, U64Reply(m.request, 1));
    case R::kSetLogBase:
      if (HasProtocolFeature(acked_protocol_features_,
                             ProtocolFeature::kLogShmfd) ||
          m.need_reply()) {
        return WriteMessage(socket_, U64Reply(m.request, 1));
      }
      return absl::OkStatus();
    default:
      break;
  }
  if (HasInherentReply(m.request)) {
    // A front-end waits for this reply: an empty payload tells it the
    // request failed (GET_CONFIG's documented error shape; for the others
    // a size it must reject) instead of leaving it hanging.
    return WriteMessage(socket_, MakeReply(m.request));
  }
  if (m.need_reply()) return WriteMessage(socket_, U64Reply(m.request, 1));
  return absl::OkStatus();
}

absl::StatusOr<Session::Reply> Session::Dispatch(Message& m) {
  switch (static_cast<R>(m.request)) {
    case R::kGetFeatures:
      return U64Reply(m.request, OfferedFeatures());
    case R::kSetFeatures:
      return OnSetFeatures(m);
    case R::kSetOwner:
      return Reply();
    case R::kResetOwner:
      // Deprecated; the spec recommends ignoring it.
      Log("RESET_OWNER ignored (deprecated)");
      return Reply();
    case R::kGetProtocolFeatures:
      return U64Reply(m.request, OfferedProtocolFeatures());
    case R::kSetProtocolFeatures:
      return OnSetProtocolFeatures(m);
    case R::kSetMemTable:
      return OnSetMemTable(m);
    case R::kAddMemReg:
      return OnAddMemReg(m);
    case R::kRemMemReg:
      return OnRemMemReg(m);
    case R::kGetMaxMemSlots:
      return U64Reply(m.request, options_->max_mem_slots);
    case R::kSetLogBase:
      return OnSetLogBase(m);
    case R::kSetLogFd:
      log_fd_ = std::move(m.fds[0]);
      return Reply();
    case R::kSetVringNum:
      return OnSetVringNum(m);
    case R::kSetVringAddr:
      return OnSetVringAddr(m);
    case R::kSetVringBase:
      return OnSetVringBase(m);
    case R::kGetVringBase:
      return OnGetVringBase(m);
    case R::kSetVringKick:
    case R::kSetVringCall:
    case R::kSetVringErr:
      return OnSetVringFd(m);
    case R::kGetQueueNum:
      return U64Reply(m.request, rings_.size());
    case R::kSetVringEnable:
      return OnSetVringEnable(m);
    case R::kGetConfig:
      return OnGetConfig(m);
    case R::kSetConfig:
      return OnSetConfig(m);
    case R::kResetDevice:
      ResetDevice();
      return Reply();
    case R::kSetStatus:
      return OnSetStatus(m);
    case R::kGetStatus:
      return U64Reply(m.request, status_);
    case R::kSetDeviceStateFd:
      return OnSetDeviceStateFd(m);
    case R::kCheckDeviceState:
      return OnCheckDeviceState(m);
    case R::kSendRarp:
    case R::kNetSetMtu:
    case R::kSetBackendReqFd:
    case R::kIotlbMsg:
    case R::kSetVringEndian:
    case R::kCreateCryptoSession:
    case R::kCloseCryptoSession:
    case R::kPostcopyAdvise:
    case R::kPostcopyListen:
    case R::kPostcopyEnd:
    case R::kGetInflightFd:
    case R::kSetInflightFd:
    case R::kGpuSetSocket:
    case R::kVringKick:
    case R::kGetSharedObject:
      // None of their protocol features is offered.
      return absl::UnimplementedError(
          absl::StrCat(m.name(), ": not supported by this back-end"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown request ", m.request));
}

absl::StatusOr<Session::Reply> Session::OnSetFeatures(const Message& m) {
  ASSIGN_OR_RETURN(const uint64_t features, PayloadU64(m));
  const uint64_t unknown = features & ~OfferedFeatures();
  if (unknown != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SET_FEATURES: bits 0x", absl::Hex(unknown),
        " were not offered (offered 0x", absl::Hex(OfferedFeatures()), ")"));
  }
  const bool was_logging = logging();
  acked_features_ = features;
  device_->AckFeatures(features);
  if (!(features & kProtocolFeaturesMask)) {
    // Clarified rule (vhost-user.rst "Ring states"): without
    // PROTOCOL_FEATURES every ring is enabled at once; no SET_FEATURES ever
    // disables one.
    for (auto& ring : rings_) ring->SetEnabled(true);
  } else if (options_->legacy_disable_rings_on_set_features) {
    // The old bug, reproduced on purpose for front-end tests.
    for (auto& ring : rings_) ring->SetEnabled(false);
  }
  if (logging() != was_logging) {
    ApplyLogToRings();
    device_->OnLogAllChanged(logging());
  }
  return Reply();
}

absl::StatusOr<Session::Reply> Session::OnSetProtocolFeatures(
    const Message& m) {
  ASSIGN_OR_RETURN(const uint64_t features, PayloadU64(m));
  const uint64_t unknown = features & ~OfferedProtocolFeatures();
  if (unknown != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("SET_PROTOCOL_FEATURES: bits 0x", absl::Hex(unknown),
                     " were not offered (offered 0x",
                     absl::Hex(OfferedProtocolFeatures()), ")"));
  }
  acked_protocol_features_ = features;
  return Reply();
}

absl::StatusOr<Session::Reply> Session::OnGetConfig(const Message& m) {
  ASSIGN_OR_RETURN(ConfigAccess access, DecodeConfig(m));
  ASSIGN_OR_RETURN(std::vector<uint8_t> data,
                   device_->ReadConfig(access.offset, access.data.size()));
  if (data.size() != access.data.size()) {
    return absl::InternalError(absl::StrCat("GET_CONFIG: device returned ",
                                            data.size(), " bytes, expected ",
                                            access.data.size()));
  }
  access.data = std::move(data);
  ASSIGN_OR_RETURN(std::vector<uint8_t> payload, EncodeConfig(access));
  Message reply = MakeReply(m.request);
  reply.payload = std::move(payload);
  return reply;
}

absl::StatusOr<Session::Reply> Session::OnSetConfig(const Message& m) {
  ASSIGN_OR_RETURN(ConfigAccess access, DecodeConfig(m));
  RETURN_IF_ERROR(device_->WriteConfig(access.offset, access.data));
  return Reply();
}

absl::StatusOr<Session::Reply> Session::OnSetStatus(const Message& m) {
  ASSIGN_OR_RETURN(const uint64_t status, PayloadU64(m));
  if (status > 0xff) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SET_STATUS: status 0x", absl::Hex(status), " does not fit in 8 bits"));
  }
  if (status == 0) {
    ResetDevice();  // virtio: writing 0 to device status resets the device
  }
  status_ = static_cast<uint8_t>(status);
  return Reply();
}

void Session::ResetDevice() {
  for (auto& ring : rings_) ring->Reset();
  state_transfer_.Reset();
  const bool was_logging = logging();
  acked_features_ = 0;
  status_ = 0;
  if (was_logging) device_->OnLogAllChanged(false);
  device_->Reset();
}

absl::StatusOr<Session::Reply> Session::OnSetDeviceStateFd(Message& m) {
  if (!HasProtocolFeature(OfferedProtocolFeatures(),
                          ProtocolFeature::kDeviceState)) {
    return absl::FailedPreconditionError(
        "SET_DEVICE_STATE_FD: the device does not offer DEVICE_STATE");
  }
  ASSIGN_OR_RETURN(const VhostUserDeviceStateParams params,
                   PayloadAs<VhostUserDeviceStateParams>(m));
  if (params.direction != static_cast<uint32_t>(TransferDirection::kSave) &&
      params.direction != static_cast<uint32_t>(TransferDirection::kLoad)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SET_DEVICE_STATE_FD: transfer direction ",
                     params.direction, " is neither save (0) nor load (1)"));
  }
  if (params.phase != static_cast<uint32_t>(MigrationPhase::kStopped)) {
    return absl::InvalidArgumentError(
        absl::StrCat("SET_DEVICE_STATE_FD: migration phase ", params.phase,
                     " is not supported (only stopped, 0)"));
  }
  state_transfer_.Start(static_cast<TransferDirection>(params.direction),
                        std::move(m.fds[0]));
  // Success, and "no fd returned: use yours".
  return U64Reply(m.request, kDeviceStateNoFdFlag);
}

absl::StatusOr<Session::Reply> Session::OnCheckDeviceState(const Message& m) {
  absl::Status status = state_transfer_.Check();
  if (!status.ok()) {
    Log(absl::StrCat("device state transfer failed: ", status.message()));
    return U64Reply(m.request, 1);
  }
  return U64Reply(m.request, 0);
}

}  // namespace vhostmig::vhost
