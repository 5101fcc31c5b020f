// BackendOptions: knobs of the back-end framework (server.h).
#ifndef VHOSTMIG_VHOST_BACKEND_OPTIONS_H_
#define VHOSTMIG_VHOST_BACKEND_OPTIONS_H_

#include <cstdint>
#include <functional>
#include <string>

namespace vhostmig::vhost {

struct BackendOptions {
  // Return from Serve() when the front-end disconnects instead of waiting
  // for the next connection.
  bool exit_on_disconnect = false;

  // TEST ONLY: reproduce the pre-clarification bug of some back-ends that
  // disabled every ring on each SET_FEATURES carrying
  // VHOST_USER_F_PROTOCOL_FEATURES (so toggling LOG_ALL stalled a running
  // device). Used to test that our front-end survives such peers.
  bool legacy_disable_rings_on_set_features = false;

  // The answer to GET_MAX_MEM_SLOTS.
  uint64_t max_mem_slots = 32;

  // Where protocol errors and notable events go; stderr when unset.
  std::function<void(const std::string&)> log;
};

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_BACKEND_OPTIONS_H_
