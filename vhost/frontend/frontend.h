// Frontend: a typed vhost-user client (the VMM side), one method per
// front-end request of vhost-user.rst, over a connected unix socket.
//
// On construction (Connect / FromFd) it always sends GET_FEATURES and, when
// the back-end offers VHOST_USER_F_PROTOCOL_FEATURES, GET_PROTOCOL_FEATURES,
// and caches both. Once REPLY_ACK is acked with SetProtocolFeatures, every
// request without a reply of its own is sent with NEED_REPLY and the
// back-end's verdict is checked, so an error surfaces at the request that
// caused it.
//
// Every reply is untrusted input: its request number, flags, payload size
// and fds are checked (validation.h) before a method returns a value.
//
// Ring enable state: the front-end remembers which rings it enabled with
// SetVringEnable and, after each SetFeatures carrying PROTOCOL_FEATURES,
// enables them again. Back-ends written before the spec's clarification
// disabled every ring on such a SET_FEATURES, which stalled a running
// device when migration toggled LOG_ALL; re-enabling makes this front-end
// work with them too.
//
// Fds passed in are borrowed (sent, not closed) except where a method takes
// a UniqueFd. Thread-safety: all methods may be called from any thread;
// requests are serialized (one request/reply exchange at a time).
#ifndef VHOSTMIG_VHOST_FRONTEND_FRONTEND_H_
#define VHOSTMIG_VHOST_FRONTEND_FRONTEND_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "base/unique_fd.h"
#include "vhost/protocol/features.h"
#include "vhost/protocol/message.h"
#include "vhost/protocol/payloads.h"
#include "vhost/protocol/requests.h"

namespace vhostmig::vhost {

class Frontend {
 public:
  // Connects to a back-end listening on `path`.
  static absl::StatusOr<std::unique_ptr<Frontend>> Connect(
      const std::string& path);
  // Takes over an already connected socket.
  static absl::StatusOr<std::unique_ptr<Frontend>> FromFd(UniqueFd socket);

  Frontend(const Frontend&) = delete;
  Frontend& operator=(const Frontend&) = delete;

  // What the back-end offered at connect time (GET_FEATURES /
  // GET_PROTOCOL_FEATURES; protocol features are 0 without
  // PROTOCOL_FEATURES).
  uint64_t backend_features() const;
  uint64_t backend_protocol_features() const;
  bool BackendHas(ProtocolFeature f) const {
    return HasProtocolFeature(backend_protocol_features(), f);
  }
  // What this front-end acked so far.
  uint64_t acked_features() const;
  uint64_t acked_protocol_features() const;
  // Rings this front-end enabled (and re-enables after SET_FEATURES).
  std::set<uint32_t> enabled_rings() const;

  int socket() const { return socket_.get(); }

  // --- Session and features ---
  absl::StatusOr<uint64_t> GetFeatures();
  // Re-enables the remembered rings afterwards when `features` carries
  // PROTOCOL_FEATURES (see the class comment).
  absl::Status SetFeatures(uint64_t features);
  absl::StatusOr<uint64_t> GetProtocolFeatures();
  absl::Status SetProtocolFeatures(uint64_t features);
  absl::Status SetOwner();
  absl::Status ResetOwner();  // deprecated in the spec; sent as is
  absl::StatusOr<uint64_t> GetQueueNum();
  absl::Status ResetDevice();
  absl::Status SetStatus(uint8_t status);
  absl::StatusOr<uint8_t> GetStatus();

  // --- Memory ---
  // One fd per region, in the same order.
  absl::Status SetMemTable(absl::Span<const VhostUserMemoryRegion> regions,
                           absl::Span<const int> fds);
  absl::Status AddMemReg(const VhostUserMemoryRegion& region, int fd);
  absl::Status RemMemReg(const VhostUserMemoryRegion& region);
  absl::StatusOr<uint64_t> GetMaxMemSlots();

  // --- Dirty log ---
  // Accepts an empty or a u64 reply (peers differ); a non-zero u64 is an
  // error.
  absl::Status SetLogBase(uint64_t size, uint64_t offset, int fd);
  absl::Status SetLogFd(int fd);

  // --- Rings ---
  absl::Status SetVringNum(uint32_t index, uint32_t size);
  absl::Status SetVringAddr(const VhostUserVringAddr& addr);
  absl::Status SetVringBase(uint32_t index, uint32_t base);
  // Stops the ring; returns the next avail index it would have consumed.
  absl::StatusOr<uint32_t> GetVringBase(uint32_t index);
  // fd < 0 sends the "no fd" flag (bit 8) without ancillary data.
  absl::Status SetVringKick(uint32_t index, int fd);
  absl::Status SetVringCall(uint32_t index, int fd);
  absl::Status SetVringErr(uint32_t index, int fd);
  absl::Status SetVringEnable(uint32_t index, bool enable);
  absl::Status SetVringEndian(uint32_t index, bool big_endian);
  absl::Status VringKick(uint32_t index);  // in-band kick

  // --- Config space ---
  absl::StatusOr<std::vector<uint8_t>> GetConfig(uint32_t offset, uint32_t size,
                                                 uint32_t flags = 0);
  absl::Status SetConfig(uint32_t offset, absl::Span<const uint8_t> data,
                         uint32_t flags = 0);

  // --- Device state (DEVICE_STATE) ---
  // Sends SET_DEVICE_STATE_FD with `fd` (closed here after sending, so the
  // back-end holds the only copy of that end). Returns an invalid UniqueFd
  // when the back-end keeps the fd it was given ("use yours", reply bit 8),
  // or the back-end's own channel fd. Fails when the reply's error bits are
  // non-zero.
  absl::StatusOr<UniqueFd> SetDeviceStateFd(TransferDirection direction,
                                            MigrationPhase phase, UniqueFd fd);
  // OK when the back-end reports a successful transfer.
  absl::Status CheckDeviceState();

  // --- Less common requests ---
  absl::Status SendRarp(const uint8_t mac[6]);
  absl::Status NetSetMtu(uint64_t mtu);
  absl::Status SetBackendReqFd(int fd);
  absl::Status IotlbMsg(const VhostUserIotlb& msg);
  // The session description is device specific (crypto devices); the
  // reply has the same shape with the session id in its first 8 bytes.
  absl::StatusOr<std::vector<uint8_t>> CreateCryptoSession(
      absl::Span<const uint8_t> session);
  absl::Status CloseCryptoSession(uint64_t session_id);
  absl::StatusOr<UniqueFd> PostcopyAdvise();  // the back-end's userfaultfd
  absl::Status PostcopyListen();
  absl::Status PostcopyEnd();
  struct InflightArea {
    VhostUserInflight info;
    UniqueFd fd;
  };
  absl::StatusOr<InflightArea> GetInflightFd(uint16_t num_queues,
                                             uint16_t queue_size);
  absl::Status SetInflightFd(const VhostUserInflight& info, int fd);
  absl::Status GpuSetSocket(int fd);
  // The dma-buf fd exported under `uuid`, or an invalid fd if none.
  absl::StatusOr<UniqueFd> GetSharedObject(const VhostUserShared& uuid);

 private:
  explicit Frontend(UniqueFd socket) : socket_(std::move(socket)) {}

  absl::Status Handshake();

  // Sends a request without a reply of its own; with REPLY_ACK acked, asks
  // for and checks the acknowledgement.
  absl::Status Send(FrontendRequest request, absl::Span<const uint8_t> payload,
                    absl::Span<const int> fds = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends a request with a reply of its own and returns the validated reply.
  absl::StatusOr<Message> Call(FrontendRequest request,
                               absl::Span<const uint8_t> payload,
                               absl::Span<const int> fds = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> CallU64(FrontendRequest request,
                                   absl::Span<const uint8_t> payload = {})
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SendVringFd(FrontendRequest request, uint32_t index, int fd);
  absl::Status SendVringState(FrontendRequest request, uint32_t index,
                              uint32_t num);
  absl::Status SendFdOnly(FrontendRequest request, int fd);
  absl::Status SendU64(FrontendRequest request, uint64_t value);

  UniqueFd socket_;
  mutable absl::Mutex mu_;
  uint64_t backend_features_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t backend_protocol_features_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t acked_features_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t acked_protocol_features_ ABSL_GUARDED_BY(mu_) = 0;
  std::set<uint32_t> enabled_rings_ ABSL_GUARDED_BY(mu_);
};

// Bytes of a trivially copyable payload, for the Send/Call helpers.
template <typename T>
absl::Span<const uint8_t> AsBytes(const T& value) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&value),
                                   sizeof(T));
}

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_FRONTEND_FRONTEND_H_
