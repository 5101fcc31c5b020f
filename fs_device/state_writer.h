// StateWriter: the save half of the fs device's DEVICE_STATE. Writes the
// inode table, the handle table, the id counters and the FUSE session to a
// channel fd in the format of proto/fs_state.proto (docs/state-format.md):
// a StateHeader frame, then StateChunk frames of at most kRecordsPerChunk
// records as columns (state_columns.h), the last one with the counters, the
// session and the end marker.
//
// Streamed: one chunk is built, written and dropped at a time. Locations
// come from the LocationGatherer (prepared while the guest ran, in node-id
// order), already encoded as chunks (EncodePrepared): the stopped phase
// writes those as they are, and re-encodes only the chunks holding an
// entry that changed since (recounted: with its current lookup count;
// created, removed, relocated or re-opened: located here, while the device
// is stopped). The records go out in ascending node-id order.
// The tables are only read: after a save the source can resume unchanged.
//
// Errors: the channel's write errors (EPIPE when the reader went away).
// Not thread-safe; meant to run on the state worker thread while the rings
// are stopped.
#ifndef VHOSTMIG_FS_DEVICE_STATE_WRITER_H_
#define VHOSTMIG_FS_DEVICE_STATE_WRITER_H_

#include <cstdint>

#include "absl/status/status.h"
#include "fs_device/fs_config.h"
#include "fs_device/location_gatherer.h"
#include "fs_device/passthrough_fs.h"

namespace vhostmig::fs {

inline constexpr uint32_t kStateMagic = 0x53464D56;  // "VMFS"
// The format this build writes, and the oldest format it still reads.
// docs/state-format.md says when each changes. Format 2 carries records as
// columns (state_columns.h); format 1 records are still read.
inline constexpr uint32_t kStateFormatVersion = 2;
inline constexpr uint32_t kOldestReadableStateVersion = 1;
// What this build's streams declare as the oldest reader able to load them
// (a format 1 reader would skip the columns and lose every record).
inline constexpr uint32_t kOldestCompatibleStateVersion = 2;
// Records per chunk: a chunk of a few hundred KiB at most 16384 * ~400
// bytes (NAME_MAX names and MAX_HANDLE_SZ handles) < kMaxFrameBytes.
inline constexpr size_t kRecordsPerChunk = 16384;

struct StateWriteStats {
  uint64_t inodes = 0;
  uint64_t handles = 0;
  // Inodes whose location was found during the save (not prepared before).
  uint64_t located_during_save = 0;
  uint64_t unlocated = 0;  // records without any location
  uint64_t chunks = 0;
  uint64_t bytes = 0;
};

class StateWriter {
 public:
  StateWriter(PassthroughFs* fs, MigrationMode mode, LocationGatherer* gatherer)
      : fs_(fs), mode_(mode), gatherer_(gatherer) {}

  absl::Status Write(int fd);
  const StateWriteStats& stats() const { return stats_; }

  // Encodes `set`'s records into set->chunks (kRecordsPerChunk each), with
  // the lookup counts they were prepared with. `source_root`: the root's
  // identity (the header's source_root). For the gatherer's thread.
  static absl::Status EncodePrepared(const InodeIdentity& source_root,
                                     PreparedSet* set);

 private:
  PassthroughFs* const fs_;
  const MigrationMode mode_;
  LocationGatherer* const gatherer_;
  StateWriteStats stats_;
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_STATE_WRITER_H_
