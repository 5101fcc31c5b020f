// Frontend: memory, dirty log, ring and less common requests.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vhost/frontend/frontend.h"
#include "vhost/protocol/codec.h"
#include "vhost/protocol/validation.h"

namespace vhostmig::vhost {

// --- Memory ---

absl::Status Frontend::SetMemTable(
    absl::Span<const VhostUserMemoryRegion> regions,
    absl::Span<const int> fds) {
  if (regions.size() > kMaxMemoryRegions) {
    return absl::InvalidArgumentError(
        absl::StrCat("SET_MEM_TABLE: ", regions.size(), " regions, at most ",
                     kMaxMemoryRegions, " allowed"));
  }
  if (fds.size() != regions.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("SET_MEM_TABLE: ", fds.size(), " fds for ", regions.size(),
                     " regions"));
  }
  const std::vector<uint8_t> payload = EncodeMemoryTable(regions);
  absl::MutexLock lock(&mu_);
  return Send(FrontendRequest::kSetMemTable, payload, fds);
}

absl::Status Frontend::AddMemReg(const VhostUserMemoryRegion& region, int fd) {
  VhostUserSingleMemoryRegion single;
  single.region = region;
  absl::MutexLock lock(&mu_);
  const int fds[] = {fd};
  return Send(FrontendRequest::kAddMemReg, AsBytes(single), fds);
}

absl::Status Frontend::RemMemReg(const VhostUserMemoryRegion& region) {
  VhostUserSingleMemoryRegion single;
  single.region = region;
  absl::MutexLock lock(&mu_);
  return Send(FrontendRequest::kRemMemReg, AsBytes(single));
}

absl::StatusOr<uint64_t> Frontend::GetMaxMemSlots() {
  absl::MutexLock lock(&mu_);
  return CallU64(FrontendRequest::kGetMaxMemSlots);
}

// --- Dirty log ---

absl::Status Frontend::SetLogBase(uint64_t size, uint64_t offset, int fd) {
  VhostUserLog log{size, offset};
  const int fds[] = {fd};
  absl::MutexLock lock(&mu_);
  if (!HasProtocolFeature(acked_protocol_features_,
                          ProtocolFeature::kLogShmfd)) {
    // Without LOG_SHMFD the spec defines no reply; a REPLY_ACK is still
    // honoured if negotiated.
    return Send(FrontendRequest::kSetLogBase, AsBytes(log), fds);
  }
  // The reply only says the back-end switched logs; its payload carries no
  // verdict any peer fills in (see validation.cc), so, as QEMU does, only
  // its arrival counts.
  return Call(FrontendRequest::kSetLogBase, AsBytes(log), fds).status();
}

absl::Status Frontend::SetLogFd(int fd) {
  return SendFdOnly(FrontendRequest::kSetLogFd, fd);
}

// --- Rings ---

absl::Status Frontend::SendVringState(FrontendRequest request, uint32_t index,
                                      uint32_t num) {
  VhostUserVringState state{index, num};
  absl::MutexLock lock(&mu_);
  return Send(request, AsBytes(state));
}

absl::Status Frontend::SetVringNum(uint32_t index, uint32_t size) {
  return SendVringState(FrontendRequest::kSetVringNum, index, size);
}

absl::Status Frontend::SetVringAddr(const VhostUserVringAddr& addr) {
  absl::MutexLock lock(&mu_);
  return Send(FrontendRequest::kSetVringAddr, AsBytes(addr));
}

absl::Status Frontend::SetVringBase(uint32_t index, uint32_t base) {
  return SendVringState(FrontendRequest::kSetVringBase, index, base);
}

absl::StatusOr<uint32_t> Frontend::GetVringBase(uint32_t index) {
  VhostUserVringState state{index, 0};
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Message reply,
                   Call(FrontendRequest::kGetVringBase, AsBytes(state)));
  ASSIGN_OR_RETURN(const VhostUserVringState got,
                   PayloadAs<VhostUserVringState>(reply));
  if (got.index != index) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GET_VRING_BASE: reply is for queue ", got.index, ", asked ", index));
  }
  return got.num;
}

absl::Status Frontend::SendVringFd(FrontendRequest request, uint32_t index,
                                   int fd) {
  if (index > kVringIndexMask) {
    return absl::InvalidArgumentError(absl::StrCat(
        RequestName(request), ": queue ", index, " does not fit in 8 bits"));
  }
  uint64_t value = index;
  absl::MutexLock lock(&mu_);
  if (fd < 0) {
    value |= kVringNoFdFlag;
    return Send(request, AsBytes(value));
  }
  const int fds[] = {fd};
  return Send(request, AsBytes(value), fds);
}

absl::Status Frontend::SetVringKick(uint32_t index, int fd) {
  return SendVringFd(FrontendRequest::kSetVringKick, index, fd);
}
absl::Status Frontend::SetVringCall(uint32_t index, int fd) {
  return SendVringFd(FrontendRequest::kSetVringCall, index, fd);
}
absl::Status Frontend::SetVringErr(uint32_t index, int fd) {
  return SendVringFd(FrontendRequest::kSetVringErr, index, fd);
}

absl::Status Frontend::SetVringEnable(uint32_t index, bool enable) {
  VhostUserVringState state{index, enable ? 1u : 0u};
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(Send(FrontendRequest::kSetVringEnable, AsBytes(state)));
  if (enable) {
    enabled_rings_.insert(index);
  } else {
    enabled_rings_.erase(index);
  }
  return absl::OkStatus();
}

absl::Status Frontend::SetVringEndian(uint32_t index, bool big_endian) {
  return SendVringState(FrontendRequest::kSetVringEndian, index,
                        big_endian ? 1 : 0);
}

absl::Status Frontend::VringKick(uint32_t index) {
  return SendVringState(FrontendRequest::kVringKick, index, 0);
}

// --- Less common requests ---

absl::Status Frontend::SendRarp(const uint8_t mac[6]) {
  uint64_t value = 0;
  std::memcpy(&value, mac, 6);
  return SendU64(FrontendRequest::kSendRarp, value);
}

absl::Status Frontend::NetSetMtu(uint64_t mtu) {
  return SendU64(FrontendRequest::kNetSetMtu, mtu);
}

absl::Status Frontend::SetBackendReqFd(int fd) {
  return SendFdOnly(FrontendRequest::kSetBackendReqFd, fd);
}

absl::Status Frontend::IotlbMsg(const VhostUserIotlb& msg) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Message reply,
                   Call(FrontendRequest::kIotlbMsg, AsBytes(msg)));
  ASSIGN_OR_RETURN(const uint64_t verdict, PayloadU64(reply));
  if (verdict != 0) {
    return absl::InternalError(
        absl::StrCat("IOTLB_MSG: back-end replied with error ", verdict));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> Frontend::CreateCryptoSession(
    absl::Span<const uint8_t> session) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Message reply,
                   Call(FrontendRequest::kCreateCryptoSession, session));
  return std::move(reply.payload);
}

absl::Status Frontend::CloseCryptoSession(uint64_t session_id) {
  return SendU64(FrontendRequest::kCloseCryptoSession, session_id);
}

absl::StatusOr<UniqueFd> Frontend::PostcopyAdvise() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Message reply, Call(FrontendRequest::kPostcopyAdvise, {}));
  return std::move(reply.fds[0]);
}

absl::Status Frontend::PostcopyListen() {
  absl::MutexLock lock(&mu_);
  return Send(FrontendRequest::kPostcopyListen, {});
}

absl::Status Frontend::PostcopyEnd() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(const uint64_t verdict,
                   CallU64(FrontendRequest::kPostcopyEnd));
  if (verdict != 0) {
    return absl::InternalError(
        absl::StrCat("POSTCOPY_END: back-end replied with error ", verdict));
  }
  return absl::OkStatus();
}

absl::StatusOr<Frontend::InflightArea> Frontend::GetInflightFd(
    uint16_t num_queues, uint16_t queue_size) {
  VhostUserInflight request;
  request.num_queues = num_queues;
  request.queue_size = queue_size;
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Message reply,
                   Call(FrontendRequest::kGetInflightFd, AsBytes(request)));
  ASSIGN_OR_RETURN(const VhostUserInflight info,
                   PayloadAs<VhostUserInflight>(reply));
  return InflightArea{info, std::move(reply.fds[0])};
}

absl::Status Frontend::SetInflightFd(const VhostUserInflight& info, int fd) {
  const int fds[] = {fd};
  absl::MutexLock lock(&mu_);
  return Send(FrontendRequest::kSetInflightFd, AsBytes(info), fds);
}

absl::Status Frontend::GpuSetSocket(int fd) {
  return SendFdOnly(FrontendRequest::kGpuSetSocket, fd);
}

absl::StatusOr<UniqueFd> Frontend::GetSharedObject(
    const VhostUserShared& uuid) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Message reply,
                   Call(FrontendRequest::kGetSharedObject, AsBytes(uuid)));
  if (reply.fds.empty()) return UniqueFd();
  return std::move(reply.fds[0]);
}

}  // namespace vhostmig::vhost
