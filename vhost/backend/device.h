// Device: what a vhost-user device implements to be served by the back-end
// framework (compare rust-vmm's VhostUserBackend trait).
//
// The framework (backend/server.h) owns the protocol: feature negotiation,
// memory table, dirty log, ring setup, ring workers, the started/enabled ring
// states, device-state transfer plumbing and reconnects. A device supplies
// its feature bits, its queue count, optionally a config space and device
// state, and the processing of its rings. It knows nothing of sockets or
// messages.
//
// Threads: ProcessQueue(i) runs on ring i's worker thread, one call at a
// time per ring; different rings run concurrently. SaveState/LoadState run on
// a dedicated state worker thread. Everything else is called from the
// connection's message thread while no ring worker of the affected rings
// runs, except OnLogAllChanged, which may overlap ProcessQueue calls.
#ifndef VHOSTMIG_VHOST_BACKEND_DEVICE_H_
#define VHOSTMIG_VHOST_BACKEND_DEVICE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vhost/memory/guest_memory.h"
#include "vhost/virtqueue/device_queue.h"

namespace vhostmig::vhost {

// The view of one started ring that a device gets while processing it.
class Vring {
 public:
  virtual ~Vring() = default;
  virtual int index() const = 0;
  virtual DeviceQueue& queue() = 0;
  // The memory snapshot in force for this pass over the ring.
  virtual const GuestMemoryMap& memory() const = 0;
  // Signals the driver through the call fd if the queue says it wants an
  // interrupt (event idx / NO_INTERRUPT rules).
  virtual void NotifyIfNeeded() = 0;
};

class Device {
 public:
  virtual ~Device() = default;

  // Virtio feature bits the device offers (VIRTIO_F_VERSION_1, ring
  // features, device-specific bits). The framework adds
  // VHOST_USER_F_PROTOCOL_FEATURES and VHOST_F_LOG_ALL itself.
  virtual uint64_t Features() const = 0;

  // Device-specific protocol features on top of the ones the framework
  // always offers (REPLY_ACK, LOG_SHMFD, CONFIGURE_MEM_SLOTS, STATUS, ...):
  // typically CONFIG if ReadConfig is meaningful and DEVICE_STATE if
  // SaveState/LoadState are.
  virtual uint64_t ProtocolFeatures() const { return 0; }

  virtual uint32_t NumQueues() const = 0;
  virtual uint16_t MaxQueueSize() const { return 1024; }

  // The features the front-end acked in SET_FEATURES (all bits, including
  // LOG_ALL and PROTOCOL_FEATURES).
  virtual void AckFeatures(uint64_t features) {}

  // Config space access (GET_CONFIG / SET_CONFIG). The default is a device
  // without config space: every access fails with InvalidArgument.
  virtual absl::StatusOr<std::vector<uint8_t>> ReadConfig(uint32_t offset,
                                                          uint32_t size);
  virtual absl::Status WriteConfig(uint32_t offset,
                                   absl::Span<const uint8_t> data);

  // Processes the chains available on `vring`. Every chain popped must be
  // completed (PushUsed) before returning: the framework stops a ring by
  // waiting for this call to return, and GET_VRING_BASE promises that
  // in-flight requests are done.
  virtual void ProcessQueue(Vring& vring) = 0;

  // Dirty logging was switched on (LOG_ALL acked) or off. Off after on
  // without a completed save means the migration was cancelled.
  virtual void OnLogAllChanged(bool enabled) {}

  // Device state transfer (DEVICE_STATE). SaveState writes the whole state
  // to `fd` and returns; LoadState reads `fd` to EOF and installs the state.
  // The framework closes `fd` afterwards and reports the returned status in
  // CHECK_DEVICE_STATE. The default is a device without internal state.
  virtual absl::Status SaveState(int fd);
  virtual absl::Status LoadState(int fd);

  // RESET_DEVICE, SET_STATUS(0) or front-end disconnect: forget
  // per-connection state (negotiated features, FUSE session, ...).
  virtual void Reset() {}
};

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_BACKEND_DEVICE_H_
