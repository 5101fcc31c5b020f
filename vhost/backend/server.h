// BackendServer: serves one Device to vhost-user front-ends, one connection
// at a time, on a unix socket path it listens on or on an inherited,
// already connected socket (the --fd convention of vhost-user.rst
// "Backend program conventions").
//
// Per connection it runs a Session (session.h): feature negotiation, memory
// table, dirty log, ring workers, device state transfer. When the front-end
// disconnects every ring is stopped and the device is reset; Serve() then
// waits for the next connection, or returns if
// BackendOptions::exit_on_disconnect is set.
//
// Usage:
//   BackendServer server(&device, options);
//   RETURN_IF_ERROR(server.Listen("/run/fs.sock"));
//   RETURN_IF_ERROR(server.Serve());   // until Shutdown() or disconnect
//
// The process should ignore SIGPIPE: a device-state pipe whose reader went
// away would otherwise kill it (the socket writes use MSG_NOSIGNAL).
//
// Thread-safety: Serve/ServeConnection run on the caller's thread;
// Shutdown() may be called from any thread, any number of times.
#ifndef VHOSTMIG_VHOST_BACKEND_SERVER_H_
#define VHOSTMIG_VHOST_BACKEND_SERVER_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "base/unique_fd.h"
#include "vhost/backend/device.h"
#include "vhost/backend/options.h"

namespace vhostmig::vhost {

class BackendServer {
 public:
  // `device` must outlive the server.
  explicit BackendServer(Device* device, BackendOptions options = {});
  ~BackendServer();
  BackendServer(const BackendServer&) = delete;
  BackendServer& operator=(const BackendServer&) = delete;

  // Binds and listens on `path`, replacing a stale socket file.
  absl::Status Listen(const std::string& path);

  // Accepts and serves connections on the listening socket until Shutdown()
  // (returns OK) or, with exit_on_disconnect, the end of the first
  // connection.
  absl::Status Serve();

  // Serves one connected socket until the peer disconnects (OK), Shutdown()
  // (OK) or a socket error.
  absl::Status ServeConnection(UniqueFd connection);

  // Makes Serve/ServeConnection return soon.
  void Shutdown();

  // Requests rejected as malformed or failed, over all connections.
  uint64_t rejected() const { return rejected_.load(); }
  // Connections served to their end.
  uint64_t connections() const { return connections_.load(); }

 private:
  Device* const device_;
  const BackendOptions options_;
  UniqueFd listener_;
  UniqueFd shutdown_;  // eventfd
  std::atomic<uint64_t> rejected_{0};
  std::atomic<uint64_t> connections_{0};
};

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_BACKEND_SERVER_H_
