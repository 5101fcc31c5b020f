// StateLoader: the load half of the fs device's DEVICE_STATE. Reads a
// stream written by StateWriter (proto/fs_state.proto, docs/state-format.md)
// frame by frame as it arrives on the channel fd, validates every record
// into staging tables, and only once the end marker and end of stream were
// seen and the whole state is consistent, installs it into the (fresh)
// PassthroughFs: inodes and handles as *migrated* entries that are
// re-opened and verified on first use (passthrough_fs.h), the id counters
// and the FUSE session. The load's cost grows with the bytes of the stream,
// never with syscalls per inode: the only files opened during the load are
// the nameless ones (a file handle but no verified name, e.g. unlinked
// while open), which only the source keeps alive.
//
// --migration-on-error=abort fails the load for every record the source
// could not locate (no location, or a parent chain that reaches such a
// record) and for a nameless file that does not open; what the source
// verified is trusted until first use, where a file replaced behind the
// daemons' backs in the meantime fails verification and answers EIO
// (docs/state-format.md, "The abort policy without eager re-opening").
//
// The stream is untrusted. Load fails, naming the frame or record, on: wrong
// magic, a format version this build cannot read, truncated or corrupted
// frames, malformed chunks, duplicate node ids or handles, names that are
// not single components, unknown parents, parent cycles, handles on unknown
// nodes, counters not above every id, a missing or inconsistent end marker,
// bytes after it, and a FUSE session this daemon cannot serve. On failure
// the tables are left empty (as before the load) and nothing on disk was
// changed: loading only opens files.
//
// Not thread-safe; meant for the state worker thread before the rings start.
#ifndef VHOSTMIG_FS_DEVICE_STATE_LOADER_H_
#define VHOSTMIG_FS_DEVICE_STATE_LOADER_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "fs_device/passthrough_fs.h"

namespace vhostmig::fs {

// A bound on what a stream may make the destination allocate.
inline constexpr uint64_t kMaxStateRecords = 1ull << 24;

struct StateLoadStats {
  uint64_t inodes = 0;
  uint64_t handles = 0;
  uint64_t frames = 0;
  uint64_t bytes = 0;
};

class StateLoader {
 public:
  explicit StateLoader(PassthroughFs* fs) : fs_(fs) {}

  absl::Status Load(int fd);
  const StateLoadStats& stats() const { return stats_; }

 private:
  // Opens the nameless inodes `nodes` and their handles `files` (fh, node;
  // see above).
  absl::Status OpenNameless(
      const std::vector<uint64_t>& nodes,
      const std::vector<std::pair<uint64_t, uint64_t>>& files);

  PassthroughFs* const fs_;
  StateLoadStats stats_;
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_STATE_LOADER_H_
