#include "fs_device/state_frame.h"

#include <endian.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/crc32c.h"
#include "base/errno_status.h"

namespace vhostmig::fs {

absl::Status FrameWriter::Encode(const google::protobuf::MessageLite& message,
                                 std::string* frame) {
  const size_t size = message.ByteSizeLong();
  if (size > kMaxFrameBytes) {
    return absl::InternalError(absl::StrCat("state frame of ", size,
                                            " bytes exceeds the limit of ",
                                            kMaxFrameBytes));
  }
  frame->resize(kFrameHeaderBytes + size);
  char* payload = frame->data() + kFrameHeaderBytes;
  if (!message.SerializeToArray(payload, static_cast<int>(size))) {
    return absl::InternalError("state frame: protobuf serialization failed");
  }
  const uint32_t length = htole32(static_cast<uint32_t>(size));
  const uint32_t crc = htole32(Crc32c(payload, size));
  std::memcpy(frame->data(), &length, 4);
  std::memcpy(frame->data() + 4, &crc, 4);
  return absl::OkStatus();
}

absl::Status FrameWriter::Write(const google::protobuf::MessageLite& message) {
  if (absl::Status s = Encode(message, &buffer_); !s.ok()) return s;
  return WriteEncoded(buffer_);
}

absl::Status FrameWriter::WriteEncoded(absl::string_view frame) {
  const char* p = frame.data();
  size_t left = frame.size();
  while (left > 0) {
    const ssize_t n = write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return LastErrnoStatus(absl::StrCat("write state frame ", frames_written_,
                                          " to the channel"));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  bytes_written_ += frame.size();
  ++frames_written_;
  return absl::OkStatus();
}

absl::StatusOr<size_t> FrameReader::ReadFully(void* data, size_t size) {
  auto* p = static_cast<char*>(data);
  size_t got = 0;
  while (got < size) {
    const ssize_t n = read(fd_, p + got, size - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return LastErrnoStatus(
          absl::StrCat("read state frame ", frames_read_, " from the channel"));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  bytes_read_ += got;
  return got;
}

absl::StatusOr<bool> FrameReader::Next(std::string* payload) {
  unsigned char header[kFrameHeaderBytes];
  absl::StatusOr<size_t> got = ReadFully(header, sizeof(header));
  if (!got.ok()) return got.status();
  if (*got == 0) return false;
  if (*got < sizeof(header)) {
    return absl::DataLossError(absl::StrCat(
        "state stream truncated: frame ", frames_read_, " header has ", *got,
        " of ", kFrameHeaderBytes, " bytes"));
  }
  uint32_t length;
  uint32_t crc;
  std::memcpy(&length, header, 4);
  std::memcpy(&crc, header + 4, 4);
  length = le32toh(length);
  crc = le32toh(crc);
  if (length > kMaxFrameBytes) {
    return absl::DataLossError(
        absl::StrCat("state stream corrupted: frame ", frames_read_, " claims ",
                     length, " bytes (limit ", kMaxFrameBytes, ")"));
  }
  payload->resize(length);
  got = ReadFully(payload->data(), length);
  if (!got.ok()) return got.status();
  if (*got < length) {
    return absl::DataLossError(absl::StrCat("state stream truncated: frame ",
                                            frames_read_, " has ", *got, " of ",
                                            length, " payload bytes"));
  }
  const uint32_t actual = Crc32c(payload->data(), length);
  if (actual != crc) {
    return absl::DataLossError(absl::StrCat(
        "state stream corrupted: frame ", frames_read_, " checksum 0x",
        absl::Hex(actual), " does not match 0x", absl::Hex(crc)));
  }
  ++frames_read_;
  return true;
}

}  // namespace vhostmig::fs
