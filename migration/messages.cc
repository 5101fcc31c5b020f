#include "migration/messages.h"

namespace vhostmig::migration {

const char* MessageName(const MigrationMessage& message) {
  static constexpr const char* kNames[] = {
      "Hello",          "PageBatch", "DeviceStopped", "DeviceStateChunk",
      "DeviceStateEnd", "Ready",     "Commit",        "Abort"};
  return kNames[message.index()];
}

uint64_t MessageBytes(const MigrationMessage& message) {
  uint64_t bytes = 64;
  if (const auto* batch = std::get_if<PageBatch>(&message)) {
    for (const PageExtent& e : batch->extents) bytes += 24 + e.data.size();
  } else if (const auto* chunk = std::get_if<DeviceStateChunk>(&message)) {
    bytes += chunk->bytes.size();
  } else if (const auto* stopped = std::get_if<DeviceStopped>(&message)) {
    bytes += stopped->guest_state.size() + 64 * stopped->rings.size();
  }
  return bytes;
}

}  // namespace vhostmig::migration
