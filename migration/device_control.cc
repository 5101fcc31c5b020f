#include "migration/device_control.h"

#include "base/status_macros.h"
#include "vhost/protocol/features.h"

namespace vhostmig::migration {

absl::Status SetRingAddr(vhost::Frontend& frontend,
                         vhost::VhostUserVringAddr addr, bool log) {
  if (log) {
    addr.flags |= vhost::kVringAddrFlagLog;
  } else {
    addr.flags &= ~vhost::kVringAddrFlagLog;
  }
  return frontend.SetVringAddr(addr);
}

absl::Status StartRing(vhost::Frontend& frontend, uint16_t size,
                       const vhost::VhostUserVringAddr& addr, uint16_t base,
                       int kick_fd, int call_fd, bool log) {
  const uint32_t q = addr.index;
  RETURN_IF_ERROR(frontend.SetVringNum(q, size));
  RETURN_IF_ERROR(frontend.SetVringBase(q, base));
  RETURN_IF_ERROR(SetRingAddr(frontend, addr, log));
  RETURN_IF_ERROR(frontend.SetVringCall(q, call_fd));
  RETURN_IF_ERROR(frontend.SetVringKick(q, kick_fd));
  // With PROTOCOL_FEATURES a started ring is still disabled ("Ring states").
  if (frontend.acked_features() & vhost::kProtocolFeaturesMask) {
    RETURN_IF_ERROR(frontend.SetVringEnable(q, true));
  }
  return absl::OkStatus();
}

}  // namespace vhostmig::migration
