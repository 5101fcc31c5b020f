#include "fs_device/fuse_request.h"

#include <algorithm>
#include <cerrno>

#include "fs_device/iovec_slice.h"

namespace vhostmig::fs {

bool ArgReader::ReadBytes(void* out, size_t n) {
  if (remaining() < n) return false;
  std::memcpy(out, bytes_.data() + pos_, n);
  pos_ += n;
  return true;
}

bool ArgReader::ReadCString(absl::string_view* out) {
  const uint8_t* start = bytes_.data() + pos_;
  const void* nul = std::memchr(start, '\0', remaining());
  if (nul == nullptr) return false;
  const size_t len = static_cast<const uint8_t*>(nul) - start;
  *out = absl::string_view(reinterpret_cast<const char*>(start), len);
  pos_ += len + 1;
  return true;
}

absl::Span<const uint8_t> ArgReader::ReadRest() {
  auto rest = bytes_.subspan(pos_);
  pos_ = bytes_.size();
  return rest;
}

FuseRequest FuseRequest::Parse(const FuseChain& chain) {
  FuseRequest req(&chain);
  req.in_total_ = IovecsTotal(chain.in);
  req.out_total_ = IovecsTotal(chain.out);
  if (CopyFromIovecs(chain.in, 0, &req.header_, sizeof(req.header_)) !=
      sizeof(req.header_)) {
    // Not even a header: there is no unique id to answer; replies carry 0.
    req.header_ = fuse_in_header{};
    req.parse_error_ = EINVAL;
    return req;
  }
  const size_t len = req.header_.len;
  if (len < sizeof(fuse_in_header) || len > req.in_total_) {
    req.parse_error_ = EINVAL;
    return req;
  }
  size_t arg_len = len - sizeof(fuse_in_header);
  if (req.header_.opcode == FUSE_WRITE) {
    // Only the fixed arguments are copied; the data stays in guest memory.
    arg_len = std::min(arg_len, sizeof(fuse_write_in));
  } else if (arg_len > kMaxArgBytes) {
    req.parse_error_ = E2BIG;
    return req;
  }
  req.arg_bytes_.resize(arg_len);
  CopyFromIovecs(chain.in, sizeof(fuse_in_header), req.arg_bytes_.data(),
                 arg_len);
  req.args_ = ArgReader(req.arg_bytes_);
  return req;
}

std::vector<iovec> FuseRequest::InData(size_t offset, size_t len) const {
  const size_t start = sizeof(fuse_in_header) + offset;
  if (start > header_.len || len > header_.len - start) return {};
  return SliceIovecs(chain_->in, start, len);
}

size_t FuseRequest::reply_capacity() const {
  return out_total_ > sizeof(fuse_out_header)
             ? out_total_ - sizeof(fuse_out_header)
             : 0;
}

std::vector<iovec> FuseRequest::ReplyPayloadIovecs(size_t len) const {
  return SliceIovecs(chain_->out, sizeof(fuse_out_header), len);
}

uint32_t FuseRequest::WriteReply(
    int32_t error, std::initializer_list<absl::Span<const uint8_t>> parts) {
  if (out_total_ < sizeof(fuse_out_header)) return 0;
  size_t payload = 0;
  for (const auto& p : parts) payload += p.size();
  if (payload > reply_capacity()) {
    // The guest gave less room than the reply needs: refuse rather than
    // truncate a structure it would misread.
    return WriteReply(-ERANGE, {});
  }
  fuse_out_header out{};
  out.len = static_cast<uint32_t>(sizeof(out) + payload);
  out.error = error;
  out.unique = header_.unique;
  size_t at = CopyToIovecs(chain_->out, 0, &out, sizeof(out));
  for (const auto& p : parts) {
    at += CopyToIovecs(chain_->out, at, p.data(), p.size());
  }
  return static_cast<uint32_t>(at);
}

ReplyResult FuseRequest::Error(int err) {
  if (err <= 0) err = EIO;
  return ReplyResult{WriteReply(-err, {}), false};
}

ReplyResult FuseRequest::Ok(
    std::initializer_list<absl::Span<const uint8_t>> parts) {
  return ReplyResult{WriteReply(0, parts), false};
}

ReplyResult FuseRequest::Defer(DataTransfer transfer) {
  transfer_ = std::move(transfer);
  return ReplyResult{0, true};
}

ReplyResult FuseRequest::CompleteTransfer() {
  DataTransfer& t = *transfer_;
  ReplyResult r;
  if (t.result < 0) {
    r = Error(static_cast<int>(-t.result));
  } else if (t.kind == DataTransfer::Kind::kRead) {
    // The data is already in place right after the header.
    fuse_out_header out{};
    out.len = static_cast<uint32_t>(sizeof(out) + t.result);
    out.unique = header_.unique;
    CopyToIovecs(chain_->out, 0, &out, sizeof(out));
    r.written = out.len;
  } else {
    fuse_write_out w{};
    w.size = static_cast<uint32_t>(t.result);
    r = OkStruct(w);
  }
  transfer_.reset();  // drops the OpenFile reference
  return r;
}

}  // namespace vhostmig::fs
