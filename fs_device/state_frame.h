// The framing of a device-state stream (docs/state-format.md): each frame is
// {u32 length, u32 crc32c of the payload} in little endian, then `length`
// payload bytes. The payload is one serialized protobuf message.
//
// FrameWriter writes one frame at a time to an fd (a pipe end, usually);
// FrameReader reads one frame at a time as the bytes arrive, so neither side
// ever holds more than one frame. Both retry EINTR and short transfers.
//
// Errors are absl::Status: DataLoss for a stream that is truncated, fails its
// checksum or claims a frame above kMaxFrameBytes; the errno status of a
// failed read/write otherwise. Not thread-safe (one user per object).
#ifndef VHOSTMIG_FS_DEVICE_STATE_FRAME_H_
#define VHOSTMIG_FS_DEVICE_STATE_FRAME_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message_lite.h"

namespace vhostmig::fs {

// A frame longer than this is refused by the reader (so a corrupted length
// cannot make the destination allocate gigabytes) and never produced by the
// writer (chunks hold at most kRecordsPerChunk records of bounded size).
inline constexpr uint32_t kMaxFrameBytes = 16u << 20;
inline constexpr size_t kFrameHeaderBytes = 8;

class FrameWriter {
 public:
  explicit FrameWriter(int fd) : fd_(fd) {}

  // Serializes `message` and writes it as one frame.
  absl::Status Write(const google::protobuf::MessageLite& message);
  // Writes one frame made earlier by Encode.
  absl::Status WriteEncoded(absl::string_view frame);

  // Makes `message` one frame (header and payload) in *frame, to be written
  // later with WriteEncoded.
  static absl::Status Encode(const google::protobuf::MessageLite& message,
                             std::string* frame);

  uint64_t bytes_written() const { return bytes_written_; }
  uint64_t frames_written() const { return frames_written_; }

 private:
  int fd_;
  std::string buffer_;  // reused: holds one frame at a time
  uint64_t bytes_written_ = 0;
  uint64_t frames_written_ = 0;
};

class FrameReader {
 public:
  explicit FrameReader(int fd) : fd_(fd) {}

  // Reads the next frame's payload into *payload. Returns false (and OK)
  // at a clean end of stream, i.e. EOF exactly at a frame boundary.
  absl::StatusOr<bool> Next(std::string* payload);

  // Frames read so far (the index of the next frame).
  uint64_t frames_read() const { return frames_read_; }
  uint64_t bytes_read() const { return bytes_read_; }

 private:
  // Reads exactly `size` bytes; returns how many arrived before EOF.
  absl::StatusOr<size_t> ReadFully(void* data, size_t size);

  int fd_;
  uint64_t frames_read_ = 0;
  uint64_t bytes_read_ = 0;
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_STATE_FRAME_H_
