// StatePipeProxy: a vhost-user interposer between one front-end and one
// back-end that forwards every message unchanged (fds included) except the
// pipe of SET_DEVICE_STATE_FD, which it replaces with a pipe of its own and
// relays through a thread that passes only the first `pass_bytes` bytes
// and then closes both sides: the device-state pipe is closed early, in the
// middle of a transfer, whichever way the state flows (vhost-user.rst,
// "Migrating back-end state").
//
//   save (source)        back-end → [proxy pipe] → relay → front-end's pipe
//   load (destination)   front-end's pipe → relay → [proxy pipe] → back-end
//
// After the cut the reader of the front-end's pipe (save) or of the proxy's
// (load) sees EOF, and the writer gets EPIPE. The back-end must report the
// failed transfer in CHECK_DEVICE_STATE or its loader must reject the short
// stream; the migration must end with the source resumed.
//
// Usage: Start(listen, backend_socket, pass_bytes); point the front-end at
// socket_path(); the destructor stops everything (bounded). A back-end that
// answers SET_DEVICE_STATE_FD with its own fd is passed through uncut.
//
// Thread-safety: the accessors may be called from any thread.
#ifndef VHOSTMIG_TESTS_RELIABILITY_STATE_PIPE_PROXY_H_
#define VHOSTMIG_TESTS_RELIABILITY_STATE_PIPE_PROXY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace vhostmig::reliability {

class StatePipeProxy {
 public:
  static absl::StatusOr<std::unique_ptr<StatePipeProxy>> Start(
      const std::string& listen_path, const std::string& backend_path,
      uint64_t pass_bytes);
  ~StatePipeProxy();
  StatePipeProxy(const StatePipeProxy&) = delete;
  StatePipeProxy& operator=(const StatePipeProxy&) = delete;

  const std::string& socket_path() const { return listen_path_; }
  // Device-state bytes relayed, and whether a transfer was cut.
  uint64_t relayed_bytes() const { return relayed_.load(); }
  bool cut() const { return cut_.load(); }

 private:
  StatePipeProxy() = default;
  void Serve();
  // Relays from `from` to `to`, at most pass_bytes_, then closes both.
  void Relay(UniqueFd from, UniqueFd to);

  std::string listen_path_;
  std::string backend_path_;
  uint64_t pass_bytes_ = 0;
  UniqueFd listener_;
  UniqueFd stop_;  // eventfd
  std::thread serve_;
  std::thread relay_;
  std::atomic<uint64_t> relayed_{0};
  std::atomic<bool> cut_{false};
};

}  // namespace vhostmig::reliability

#endif  // VHOSTMIG_TESTS_RELIABILITY_STATE_PIPE_PROXY_H_
