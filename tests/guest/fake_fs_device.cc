#include "tests/guest/fake_fs_device.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace vhostmig::guest::testing {
namespace {

template <typename T>
void Append(std::vector<uint8_t>* out, const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out->insert(out->end(), p, p + sizeof(T));
}

template <typename T>
T BodyStruct(const SeenRequest& r) {
  T v{};
  std::memcpy(&v, r.body.data(), std::min(sizeof(T), r.body.size()));
  return v;
}

std::string BodyName(const SeenRequest& r, size_t offset) {
  if (offset >= r.body.size()) return "";
  const char* start = reinterpret_cast<const char*>(r.body.data()) + offset;
  return std::string(start, strnlen(start, r.body.size() - offset));
}

fuse_entry_out Entry(uint64_t nodeid, uint32_t mode, uint64_t size) {
  fuse_entry_out e{};
  e.nodeid = nodeid;
  e.attr.ino = nodeid;
  e.attr.mode = mode;
  e.attr.size = size;
  e.attr.nlink = 1;
  return e;
}

void AppendDirent(std::vector<uint8_t>* out, uint64_t ino, uint64_t off,
                  uint32_t type, const std::string& name, bool plus,
                  uint32_t limit) {
  const size_t header = (plus ? sizeof(fuse_entry_out) : 0) + FUSE_NAME_OFFSET;
  const size_t rec = FUSE_DIRENT_ALIGN(header + name.size());
  if (out->size() + rec > limit) return;
  if (plus) Append(out, Entry(ino, type << 12, 0));
  fuse_dirent d{};
  d.ino = ino;
  d.off = off;
  d.namelen = name.size();
  d.type = type;
  out->insert(out->end(), reinterpret_cast<uint8_t*>(&d),
              reinterpret_cast<uint8_t*>(&d) + FUSE_NAME_OFFSET);
  out->insert(out->end(), name.begin(), name.end());
  out->resize(out->size() + rec - header - name.size(), 0);
}

}  // namespace

void FakeFsDevice::ProcessQueue(vhost::Vring& vring) {
  if (misbehave == Misbehave::kIgnoreKicks) return;
  vhost::DeviceQueue& q = vring.queue();
  while (auto chain = q.Pop()) {
    if (!chain->status.ok() || chain->readable_len < sizeof(fuse_in_header)) {
      q.PushUsed(*chain, 0);
      continue;
    }
    SeenRequest r;
    r.queue = vring.index();
    chain->CopyFromReadable(0, &r.header, sizeof(r.header));
    r.body.resize(chain->readable_len - sizeof(r.header));
    chain->CopyFromReadable(sizeof(r.header), r.body.data(), r.body.size());
    r.readable_len = chain->readable_len;
    r.writable_len = chain->writable_len;
    r.readable_buffers = chain->readable.size();
    r.writable_buffers = chain->writable.size();
    seen.push_back(r);

    int32_t error = 0;
    bool no_reply = false;
    std::vector<uint8_t> payload = Handle(r, &error, &no_reply);
    if (no_reply) {
      q.PushUsed(*chain, 0);
      continue;
    }
    if (error != 0) payload.clear();
    fuse_out_header out{};
    out.len = sizeof(out) + payload.size();
    out.error = error;
    out.unique = r.header.unique;
    if (misbehave == Misbehave::kWrongUnique) out.unique += 1;
    if (misbehave == Misbehave::kPositiveError) out.error = 5;
    std::vector<uint8_t> reply;
    Append(&reply, out);
    reply.insert(reply.end(), payload.begin(), payload.end());
    uint32_t written = chain->CopyToWritable(0, reply.data(), reply.size());
    if (misbehave == Misbehave::kLenBeyondUsed) {
      out.len += 64;
      chain->CopyToWritable(0, &out, sizeof(out));
    }
    if (misbehave == Misbehave::kShortReply) written = 8;
    q.PushUsed(*chain, written);
  }
  vring.NotifyIfNeeded();
}

std::vector<uint8_t> FakeFsDevice::Handle(const SeenRequest& r, int32_t* error,
                                          bool* no_reply) {
  std::vector<uint8_t> out;
  if (r.header.len != r.readable_len) {
    *error = -EINVAL;
    return out;
  }
  switch (r.header.opcode) {
    case FUSE_INIT: {
      auto in = BodyStruct<fuse_init_in>(r);
      fuse_init_out o{};
      o.major = 7;
      o.minor = 38;
      o.max_readahead = in.max_readahead;
      o.flags = in.flags & (FUSE_ASYNC_READ | FUSE_DO_READDIRPLUS);
      o.max_write = 128 * 1024;
      Append(&out, o);
      break;
    }
    case FUSE_LOOKUP:
      if (BodyName(r, 0) != "hello") {
        *error = -ENOENT;
        break;
      }
      Append(&out, Entry(2, S_IFREG | 0644, file.size()));
      break;
    case FUSE_FORGET:
    case FUSE_BATCH_FORGET:
      *no_reply = true;
      break;
    case FUSE_GETATTR:
    case FUSE_SETATTR: {
      fuse_attr_out a{};
      a.attr.ino = r.header.nodeid;
      a.attr.size = file.size();
      Append(&out, a);
      break;
    }
    case FUSE_OPEN:
    case FUSE_OPENDIR: {
      fuse_open_out o{};
      o.fh = 7;
      Append(&out, o);
      break;
    }
    case FUSE_CREATE: {
      Append(&out, Entry(4, S_IFREG | 0600, 0));
      fuse_open_out o{};
      o.fh = 8;
      Append(&out, o);
      break;
    }
    case FUSE_MKDIR:
    case FUSE_MKNOD:
    case FUSE_SYMLINK:
    case FUSE_LINK:
      Append(&out, Entry(3, S_IFDIR | 0755, 0));
      break;
    case FUSE_WRITE: {
      auto in = BodyStruct<fuse_write_in>(r);
      const size_t data_at = sizeof(fuse_write_in);
      if (r.body.size() < data_at + in.size) {
        *error = -EINVAL;
        break;
      }
      if (file.size() < in.offset + in.size) file.resize(in.offset + in.size);
      std::memcpy(file.data() + in.offset, r.body.data() + data_at, in.size);
      fuse_write_out o{};
      o.size = in.size;
      Append(&out, o);
      break;
    }
    case FUSE_READ: {
      auto in = BodyStruct<fuse_read_in>(r);
      if (in.offset < file.size()) {
        const size_t n = std::min<size_t>(in.size, file.size() - in.offset);
        out.assign(file.begin() + in.offset, file.begin() + in.offset + n);
      }
      break;
    }
    case FUSE_READDIR:
    case FUSE_READDIRPLUS: {
      auto in = BodyStruct<fuse_read_in>(r);
      const bool plus = r.header.opcode == FUSE_READDIRPLUS;
      if (in.offset < 1) AppendDirent(&out, 1, 1, DT_DIR, ".", plus, in.size);
      if (in.offset < 2) {
        AppendDirent(&out, 2, 2, DT_REG, "hello", plus, in.size);
      }
      break;
    }
    case FUSE_GETXATTR: {
      auto in = BodyStruct<fuse_getxattr_in>(r);
      if (in.size == 0) {
        fuse_getxattr_out o{};
        o.size = 5;
        Append(&out, o);
      } else if (in.size < 5) {
        *error = -ERANGE;
      } else {
        const std::string v = "value";
        out.assign(v.begin(), v.end());
      }
      break;
    }
    case FUSE_LISTXATTR: {
      const std::string v("user.a\0user.b\0", 14);
      auto in = BodyStruct<fuse_getxattr_in>(r);
      if (in.size == 0) {
        fuse_getxattr_out o{};
        o.size = v.size();
        Append(&out, o);
      } else {
        out.assign(v.begin(), v.end());
      }
      break;
    }
    case FUSE_READLINK: {
      const std::string t = "target";
      out.assign(t.begin(), t.end());
      break;
    }
    case FUSE_STATFS: {
      fuse_statfs_out o{};
      o.st.blocks = 100;
      Append(&out, o);
      break;
    }
    case FUSE_LSEEK: {
      auto in = BodyStruct<fuse_lseek_in>(r);
      fuse_lseek_out o{};
      o.offset = in.offset + 1;
      Append(&out, o);
      break;
    }
    case FUSE_COPY_FILE_RANGE: {
      auto in = BodyStruct<fuse_copy_file_range_in>(r);
      fuse_write_out o{};
      o.size = static_cast<uint32_t>(in.len);
      Append(&out, o);
      break;
    }
    case FUSE_UNLINK:
    case FUSE_RMDIR:
    case FUSE_RENAME:
    case FUSE_RENAME2:
    case FUSE_RELEASE:
    case FUSE_FSYNC:
    case FUSE_SETXATTR:
    case FUSE_REMOVEXATTR:
    case FUSE_FLUSH:
    case FUSE_RELEASEDIR:
    case FUSE_FSYNCDIR:
    case FUSE_ACCESS:
    case FUSE_FALLOCATE:
    case FUSE_SYNCFS:
    case FUSE_DESTROY:
      break;
    default:
      *error = -ENOSYS;
  }
  return out;
}

}  // namespace vhostmig::guest::testing
