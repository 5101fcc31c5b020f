// VhostUserDevice: the VMM-side attachment of a vhost-user device to the
// synthetic guest. It does over a real vhost-user socket what QEMU's
// hw/virtio/vhost.c + vhost-user.c do for a VM: negotiate, share guest RAM,
// hand over the rings and their notifiers, and, for migration, drive dirty
// logging, ring stop and device-state transfer.
//
// The steps are separate methods so that callers can order them the way
// QEMU does on either side of a migration (vhost-user.rst, "Migrating back-end
// state"):
//
//   source / plain start              destination
//   --------------------              -----------
//   Connect                           Connect
//                                     LoadState       (before SET_FEATURES)
//   Configure                         Configure
//   StartRings(layouts)               StartRings(layouts, source's bases)
//   StartLogging(log) ... pre-copy
//   StopRings  -> bases
//   SaveState  -> blob  ------------>
//
//   Connect     SET_OWNER, SET_PROTOCOL_FEATURES (what the options want and
//               the back-end offers; GET_FEATURES/GET_PROTOCOL_FEATURES are
//               sent by the Frontend on connect). Sends nothing else, so the
//               device's features() are known before the driver is built.
//   Configure   SET_FEATURES (VERSION_1, PROTOCOL_FEATURES, the ring
//               features both sides want), SET_MEM_TABLE with every GuestRam
//               region (front-end address = GuestRam's userspace_addr).
//   StartRing   SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR (with the LOG
//               flag while logging), SET_VRING_CALL, SET_VRING_KICK,
//               SET_VRING_ENABLE(1), with the transport's eventfds.
//   StopRings   SET_VRING_ENABLE(0) on every started ring, then
//               GET_VRING_BASE on each (the back-end completes in-flight
//               requests first); returns the bases to restart with.
//   StartLogging SET_LOG_BASE (shared-memory log, LOG_SHMFD), SET_FEATURES
//               (+LOG_ALL), SET_VRING_ADDR with the LOG flag and
//               log_guest_addr = used ring GPA on every started ring: the
//               order QEMU uses ("Migration" section).
//   SaveState / LoadState  SET_DEVICE_STATE_FD over a pipe, read to EOF /
//               write and close, then CHECK_DEVICE_STATE (DEVICE_STATE).
//
// Every reply is bounded by options.reply_timeout (SO_RCVTIMEO on the
// socket) and every state-transfer read or write by options.state_timeout,
// so a back-end that hangs fails the caller instead of blocking it.
//
// Layering: depends on vhost/frontend, vhost/memory, vhost/virtqueue and the
// guest's RAM and transport; knows no device type and no migration policy.
//
// Thread-safety: one thread at a time. `ram` and `transport` must outlive
// the device.
#ifndef VHOSTMIG_GUEST_VHOST_USER_DEVICE_H_
#define VHOSTMIG_GUEST_VHOST_USER_DEVICE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "guest/guest_ram.h"
#include "guest/vhost_user_transport.h"
#include "vhost/frontend/frontend.h"
#include "vhost/memory/dirty_log.h"
#include "vhost/protocol/features.h"
#include "vhost/virtqueue/device_queue.h"

namespace vhostmig::guest {

struct VhostUserDeviceOptions {
  // Ring features to negotiate when the back-end offers them.
  bool want_event_idx = true;
  bool want_indirect_desc = true;
  // Protocol features to ack, intersected with what the back-end offers.
  // REPLY_ACK makes a failing request fail where it is sent. BACKEND_REQ is
  // left out on purpose: it would oblige us to serve a back-end channel.
  uint64_t protocol_features =
      vhost::FeatureMask(vhost::ProtocolFeature::kReplyAck) |
      vhost::FeatureMask(vhost::ProtocolFeature::kLogShmfd) |
      vhost::FeatureMask(vhost::ProtocolFeature::kMq) |
      vhost::FeatureMask(vhost::ProtocolFeature::kDeviceState);
  absl::Duration reply_timeout = absl::Seconds(10);
  absl::Duration state_timeout = absl::Seconds(30);
};

class VhostUserDevice {
 public:
  // Connects to the back-end listening on `socket_path`, sends SET_OWNER and
  // SET_PROTOCOL_FEATURES. FailedPrecondition if the back-end does not offer
  // VIRTIO_F_VERSION_1.
  static absl::StatusOr<std::unique_ptr<VhostUserDevice>> Connect(
      const std::string& socket_path, GuestRam* ram,
      VhostUserTransport* transport,
      const VhostUserDeviceOptions& options = {});

  VhostUserDevice(const VhostUserDevice&) = delete;
  VhostUserDevice& operator=(const VhostUserDevice&) = delete;

  vhost::Frontend& frontend() { return *frontend_; }
  // The features Configure sends (LOG_ALL is added while logging).
  uint64_t features() const { return features_; }
  bool event_idx() const;
  bool indirect_desc() const;
  bool logging() const { return log_ != nullptr && log_all_; }

  // SET_FEATURES + SET_MEM_TABLE (see the class comment).
  absl::Status Configure();

  // Starts ring `queue` at `base` with the transport's eventfds.
  absl::Status StartRing(uint32_t queue, const vhost::VringLayout& layout,
                         uint16_t base = 0);
  // Starts ring i with layouts[i] at bases[i] (0 when `bases` is shorter).
  absl::Status StartRings(const std::vector<vhost::VringLayout>& layouts,
                          const std::vector<uint16_t>& bases = {});
  // Stops every started ring; returns base per queue index (the next avail
  // index each ring would have consumed), for the destination or a restart.
  absl::StatusOr<std::map<uint32_t, uint16_t>> StopRings();

  // Starts dirty logging into `log` (sized for the guest's RAM, e.g.
  // DirtyLog::Create(ram.memory().end_gpa())).
  absl::Status StartLogging(std::shared_ptr<vhost::DirtyLog> log);
  // SET_FEATURES with or without LOG_ALL, nothing else (the Frontend
  // re-enables the rings it enabled afterwards).
  absl::Status SetLogAll(bool on);
  // SET_FEATURES without LOG_ALL, then ring addresses without the LOG flag.
  absl::Status StopLogging();

  // Source side: the back-end's serialized state (rings must be stopped).
  absl::StatusOr<std::string> SaveState();
  // Destination side: hands `state` to the back-end and checks it loaded.
  absl::Status LoadState(absl::string_view state);

  // The front-end (SET_VRING_ADDR) address of guest physical `gpa`.
  absl::StatusOr<uint64_t> FrontendAddress(uint64_t gpa, uint64_t len) const;

 private:
  VhostUserDevice(GuestRam* ram, VhostUserTransport* transport,
                  const VhostUserDeviceOptions& options)
      : ram_(ram), transport_(transport), options_(options) {}

  absl::Status SetVringAddr(uint32_t queue, const vhost::VringLayout& layout,
                            bool log);

  GuestRam* ram_;
  VhostUserTransport* transport_;
  VhostUserDeviceOptions options_;
  std::unique_ptr<vhost::Frontend> frontend_;
  uint64_t features_ = 0;
  std::map<uint32_t, vhost::VringLayout> started_;
  std::shared_ptr<vhost::DirtyLog> log_;
  bool log_all_ = false;
};

}  // namespace vhostmig::guest

#endif  // VHOSTMIG_GUEST_VHOST_USER_DEVICE_H_
