// Session: ring requests (size, addresses, base, kick/call/err, enable).
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vhost/backend/session.h"

namespace vhostmig::vhost {

absl::StatusOr<BackendRing*> Session::RingFor(const Message& m,
                                              uint64_t index) {
  if (index >= rings_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(m.name(), ": queue ", index,
                                                   " out of range (device has ",
                                                   rings_.size(), ")"));
  }
  return rings_[index].get();
}

absl::StatusOr<Session::Reply> Session::OnSetVringNum(const Message& m) {
  ASSIGN_OR_RETURN(const VhostUserVringState state,
                   PayloadAs<VhostUserVringState>(m));
  ASSIGN_OR_RETURN(BackendRing * ring, RingFor(m, state.index));
  const uint32_t max = device_->MaxQueueSize();
  if (state.num == 0 || state.num > max || (state.num & (state.num - 1))) {
    return absl::InvalidArgumentError(
        absl::StrCat("SET_VRING_NUM: size ", state.num,
                     " is not a power of two in [1, ", max, "]"));
  }
  if (ring->started()) {
    return absl::FailedPreconditionError(
        absl::StrCat("SET_VRING_NUM: queue ", state.index, " is started"));
  }
  ring->set_size(static_cast<uint16_t>(state.num));
  return Reply();
}

absl::StatusOr<Session::Reply> Session::OnSetVringAddr(const Message& m) {
  ASSIGN_OR_RETURN(const VhostUserVringAddr addr,
                   PayloadAs<VhostUserVringAddr>(m));
  ASSIGN_OR_RETURN(BackendRing * ring, RingFor(m, addr.index));
  if (addr.flags & ~kVringAddrFlagLog) {
    return absl::InvalidArgumentError(
        absl::StrCat("SET_VRING_ADDR: unknown flags 0x",
                     absl::Hex(addr.flags & ~kVringAddrFlagLog)));
  }
  RETURN_IF_ERROR(ring->SetAddr(addr, memory_, acked_features_));
  return Reply();
}

absl::StatusOr<Session::Reply> Session::OnSetVringBase(const Message& m) {
  ASSIGN_OR_RETURN(const VhostUserVringState state,
                   PayloadAs<VhostUserVringState>(m));
  ASSIGN_OR_RETURN(BackendRing * ring, RingFor(m, state.index));
  if (state.num > 0xffff) {
    // Split rings: bits 16-31 are reserved (vhost-user.rst, "A vring
    // descriptor index for split virtqueues").
    return absl::InvalidArgumentError(absl::StrCat("SET_VRING_BASE: base 0x",
                                                   absl::Hex(state.num),
                                                   " has reserved bits set"));
  }
  if (ring->started()) {
    return absl::FailedPreconditionError(
        absl::StrCat("SET_VRING_BASE: queue ", state.index, " is started"));
  }
  ring->set_base(static_cast<uint16_t>(state.num));
  return Reply();
}

absl::StatusOr<Session::Reply> Session::OnGetVringBase(const Message& m) {
  ASSIGN_OR_RETURN(const VhostUserVringState state,
                   PayloadAs<VhostUserVringState>(m));
  ASSIGN_OR_RETURN(BackendRing * ring, RingFor(m, state.index));
  // Stops the ring after its in-flight requests completed.
  ring->Stop();
  VhostUserVringState reply{state.index, ring->next_avail()};
  return MakeReply(m.request, reply);
}

absl::StatusOr<Session::Reply> Session::OnSetVringFd(Message& m) {
  ASSIGN_OR_RETURN(const uint64_t value, PayloadU64(m));
  if (value & ~(kVringIndexMask | kVringNoFdFlag)) {
    return absl::InvalidArgumentError(
        absl::StrCat(m.name(), ": reserved bits set in 0x", absl::Hex(value)));
  }
  ASSIGN_OR_RETURN(BackendRing * ring, RingFor(m, value & kVringIndexMask));
  UniqueFd fd;
  if (!(value & kVringNoFdFlag)) fd = std::move(m.fds[0]);
  switch (static_cast<FrontendRequest>(m.request)) {
    case FrontendRequest::kSetVringKick:
      if (!fd.valid()) {
        return absl::UnimplementedError(
            absl::StrCat("SET_VRING_KICK: queue ", ring->index(),
                         ": polling mode (no kick fd) is not supported"));
      }
      ring->SetKickFd(std::move(fd));
      // The ring starts here: a kick fd is what it waits on, and the first
      // pass runs without waiting for a kick (see ring.h).
      if (!ring->started()) {
        RETURN_IF_ERROR(
            ring->Start(memory_, acked_features_, logging() ? log_ : nullptr));
      }
      return Reply();
    case FrontendRequest::kSetVringCall:
      ring->SetCallFd(std::move(fd));
      return Reply();
    default:
      ring->SetErrFd(std::move(fd));
      return Reply();
  }
}

absl::StatusOr<Session::Reply> Session::OnSetVringEnable(const Message& m) {
  ASSIGN_OR_RETURN(const VhostUserVringState state,
                   PayloadAs<VhostUserVringState>(m));
  ASSIGN_OR_RETURN(BackendRing * ring, RingFor(m, state.index));
  if (state.num > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SET_VRING_ENABLE: value ", state.num, " is neither 0 nor 1"));
  }
  ring->SetEnabled(state.num == 1);
  return Reply();
}

}  // namespace vhostmig::vhost
