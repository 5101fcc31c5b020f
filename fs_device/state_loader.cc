#include "fs_device/state_loader.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "fs_device/fuse_ops.h"
#include "fs_device/state_frame.h"
#include "fs_device/state_writer.h"
#include "proto/fs_state.pb.h"

namespace vhostmig::fs {
namespace {

namespace pb = fs_state::v1;

absl::Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("device state rejected: ", what));
}

std::string InodeName(const pb::InodeRecord& r) {
  return absl::StrCat("inode record for node ", r.node_id());
}

bool KnownFileType(uint32_t type) {
  switch (type) {
    case S_IFREG:
    case S_IFDIR:
    case S_IFLNK:
    case S_IFCHR:
    case S_IFBLK:
    case S_IFIFO:
    case S_IFSOCK:
      return true;
    default:
      return false;
  }
}

// The staging tables: everything validated so far, nothing installed.
struct Staging {
  absl::flat_hash_map<uint64_t, pb::InodeRecord> inodes;
  absl::flat_hash_map<uint64_t, pb::HandleRecord> handles;
  bool have_counters = false;
  pb::Counters counters;
  bool have_session = false;
  pb::FuseSession session;
  bool have_end = false;
  pb::StateEnd end;
  uint64_t chunks = 0;
};

absl::Status CheckHeader(const pb::StateHeader& h) {
  if (h.magic() != kStateMagic) {
    return Invalid(absl::StrCat("not a vhostmig fs state stream (magic 0x",
                                absl::Hex(h.magic()), ", expected 0x",
                                absl::Hex(kStateMagic), ")"));
  }
  if (h.oldest_compatible_version() > kStateFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device state rejected: stream format version ", h.format_version(),
        " needs a reader of version ", h.oldest_compatible_version(),
        " or later; this daemon reads versions ", kOldestReadableStateVersion,
        " to ", kStateFormatVersion));
  }
  if (h.format_version() < kOldestReadableStateVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device state rejected: stream format version ", h.format_version(),
        " is older than the oldest this daemon reads (",
        kOldestReadableStateVersion, "; it writes ", kStateFormatVersion, ")"));
  }
  if (h.mode() != pb::MIGRATION_MODE_FIND_PATHS &&
      h.mode() != pb::MIGRATION_MODE_FILE_HANDLES) {
    return Invalid(absl::StrCat("unknown migration mode ", h.mode()));
  }
  return absl::OkStatus();
}

absl::Status CheckInode(const pb::InodeRecord& r, const Staging& s) {
  const std::string who = InodeName(r);
  if (r.node_id() == 0) return Invalid("inode record with node id 0");
  if (s.inodes.contains(r.node_id())) {
    return Invalid(absl::StrCat(who, ": duplicate node id"));
  }
  if (s.inodes.size() + s.handles.size() >= kMaxStateRecords) {
    return Invalid(absl::StrCat("more than ", kMaxStateRecords, " records"));
  }
  if (!KnownFileType(r.file_type())) {
    return Invalid(
        absl::StrCat(who, ": unknown file type 0", absl::Hex(r.file_type())));
  }
  if ((r.node_id() == kRootNodeId) != r.root()) {
    return Invalid(absl::StrCat(
        who, r.root() ? ": only node 1 can be the root"
                      : ": node 1 must be the shared directory's root"));
  }
  if (r.root()) {
    if (r.file_type() != S_IFDIR) {
      return Invalid(absl::StrCat(who, ": the root is not a directory"));
    }
    if (r.has_path() || r.has_file_handle()) {
      return Invalid(absl::StrCat(who, ": the root has another location"));
    }
    return absl::OkStatus();
  }
  if (r.has_path()) {
    const pb::PathLocation& p = r.path();
    if (int err = PassthroughFs::CheckName(p.name()); err != 0) {
      return Invalid(absl::StrCat(who, ": name \"", absl::CHexEscape(p.name()),
                                  "\" is not a single path component"));
    }
    if (p.parent() == 0) {
      return Invalid(absl::StrCat(who, ": path location with parent 0"));
    }
    if (p.parent() == r.node_id()) {
      return Invalid(absl::StrCat(who, ": is its own parent (cycle)"));
    }
  }
  if (r.has_file_handle()) {
    const size_t n = r.file_handle().handle().size();
    if (n == 0 || n > MAX_HANDLE_SZ) {
      return Invalid(absl::StrCat(who, ": file handle of ", n, " bytes (1..",
                                  MAX_HANDLE_SZ, " allowed)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckHandle(const pb::HandleRecord& h, const Staging& s) {
  const std::string who = absl::StrCat("handle record for fh ", h.fh());
  if (h.fh() == 0) return Invalid("handle record with fh 0");
  if (s.handles.contains(h.fh())) {
    return Invalid(absl::StrCat(who, ": duplicate fh"));
  }
  if (s.inodes.size() + s.handles.size() >= kMaxStateRecords) {
    return Invalid(absl::StrCat("more than ", kMaxStateRecords, " records"));
  }
  if (h.flags() & (O_CREAT | O_EXCL | O_TRUNC)) {
    return Invalid(absl::StrCat(who, ": open flags 0", absl::Hex(h.flags()),
                                " include O_CREAT, O_EXCL or O_TRUNC"));
  }
  if ((h.flags() & O_ACCMODE) == O_ACCMODE) {
    return Invalid(absl::StrCat(who, ": invalid access mode"));
  }
  return absl::OkStatus();
}

absl::Status AddChunk(const pb::StateChunk& chunk, uint64_t frame, Staging* s) {
  if (s->have_end) {
    return Invalid(absl::StrCat("frame ", frame, " follows the end marker"));
  }
  ++s->chunks;
  for (const pb::InodeRecord& r : chunk.inodes()) {
    RETURN_IF_ERROR(CheckInode(r, *s));
    s->inodes.emplace(r.node_id(), r);
  }
  for (const pb::HandleRecord& h : chunk.handles()) {
    RETURN_IF_ERROR(CheckHandle(h, *s));
    s->handles.emplace(h.fh(), h);
  }
  if (chunk.has_counters()) {
    if (s->have_counters) return Invalid("counters appear twice");
    s->have_counters = true;
    s->counters = chunk.counters();
  }
  if (chunk.has_session()) {
    if (s->have_session) return Invalid("FUSE session appears twice");
    s->have_session = true;
    s->session = chunk.session();
  }
  if (chunk.has_end()) {
    s->have_end = true;
    s->end = chunk.end();
  }
  return absl::OkStatus();
}

// The checks that need the whole state.
absl::Status CheckWhole(const Staging& s, const FsConfig& config,
                        absl::flat_hash_map<uint64_t, uint32_t>* opens) {
  if (!s.have_end) {
    return absl::DataLossError(
        absl::StrCat("device state rejected: stream ended after ", s.chunks,
                     " chunks without the end marker (truncated)"));
  }
  if (s.end.inode_count() != s.inodes.size() ||
      s.end.handle_count() != s.handles.size() ||
      s.end.chunk_count() != s.chunks) {
    return absl::DataLossError(absl::StrCat(
        "device state rejected: end marker counts ", s.end.inode_count(),
        " inodes, ", s.end.handle_count(), " handles, ", s.end.chunk_count(),
        " chunks; the stream held ", s.inodes.size(), ", ", s.handles.size(),
        ", ", s.chunks));
  }
  if (!s.have_counters) return Invalid("no counters record");
  if (!s.have_session) return Invalid("no FUSE session record");
  if (!s.inodes.contains(kRootNodeId)) return Invalid("no root inode record");

  uint64_t max_node = 0;
  for (const auto& [id, r] : s.inodes) {
    max_node = std::max(max_node, id);
    if (!r.has_path()) continue;
    auto parent = s.inodes.find(r.path().parent());
    if (parent == s.inodes.end()) {
      return Invalid(absl::StrCat(InodeName(r), ": unknown parent node ",
                                  r.path().parent()));
    }
    if (parent->second.file_type() != S_IFDIR) {
      return Invalid(absl::StrCat(InodeName(r), ": parent node ",
                                  r.path().parent(), " is not a directory"));
    }
  }
  // Cycles: walk each parent chain once; 1 = on the current walk, 2 = known
  // to reach a node without a path (root or unlocated).
  absl::flat_hash_map<uint64_t, uint8_t> state;
  std::vector<uint64_t> walk;
  for (const auto& [id, r] : s.inodes) {
    walk.clear();
    uint64_t cur = id;
    for (;;) {
      uint8_t& st = state[cur];
      if (st == 2) break;
      if (st == 1) {
        return Invalid(absl::StrCat("inode record for node ", id,
                                    ": parent chain has a cycle through node ",
                                    cur));
      }
      st = 1;
      walk.push_back(cur);
      const pb::InodeRecord& rec = s.inodes.at(cur);
      if (!rec.has_path()) break;
      cur = rec.path().parent();
    }
    for (uint64_t w : walk) state[w] = 2;
  }

  uint64_t max_fh = 0;
  for (const auto& [fh, h] : s.handles) {
    max_fh = std::max(max_fh, fh);
    auto node = s.inodes.find(h.node_id());
    if (node == s.inodes.end()) {
      return Invalid(absl::StrCat("handle record for fh ", fh,
                                  ": unknown node ", h.node_id()));
    }
    if ((node->second.file_type() == S_IFDIR) != h.is_dir()) {
      return Invalid(absl::StrCat("handle record for fh ", fh,
                                  ": directory flag does not match node ",
                                  h.node_id(), "'s type"));
    }
    if (config.readonly && ((h.flags() & O_ACCMODE) != O_RDONLY)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device state rejected: handle record for fh ", fh,
          " is open for writing but this daemon's share is read-only"));
    }
    ++(*opens)[h.node_id()];
  }
  for (const auto& [id, r] : s.inodes) {
    if (id != kRootNodeId && r.lookups() == 0 && !opens->contains(id)) {
      return Invalid(absl::StrCat(InodeName(r),
                                  ": neither looked up nor open (no "
                                  "references)"));
    }
  }
  if (s.counters.next_node_id() <= max_node) {
    return Invalid(
        absl::StrCat("counter next_node_id ", s.counters.next_node_id(),
                     " is not above the largest node id ", max_node));
  }
  if (s.counters.next_fh() <= max_fh || s.counters.next_fh() == 0) {
    return Invalid(absl::StrCat("counter next_fh ", s.counters.next_fh(),
                                " is not above the largest fh ", max_fh));
  }

  const pb::FuseSession& f = s.session;
  if (f.initialized()) {
    if (f.major() != 7 || f.minor() < 12 ||
        f.minor() > FUSE_KERNEL_MINOR_VERSION) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device state rejected: FUSE session ", f.major(), ".", f.minor(),
          " cannot be served (this daemon speaks 7.12 to 7.",
          FUSE_KERNEL_MINOR_VERSION, ")"));
    }
    const uint64_t extra = f.flags() & ~SupportedInitFlags(config);
    if (extra != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device state rejected: the source negotiated FUSE INIT flags 0x",
          absl::Hex(extra),
          " that this daemon does not offer (compare --cache, "
          "--announce-submounts)"));
    }
    if (f.max_write() > kMaxTransferBytes || f.max_pages() > kMaxPages) {
      return absl::FailedPreconditionError(
          absl::StrCat("device state rejected: FUSE max_write ", f.max_write(),
                       " / max_pages ", f.max_pages(), " above this daemon's ",
                       kMaxTransferBytes, " / ", kMaxPages));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status StateLoader::Load(int fd) {
  stats_ = StateLoadStats{};
  FrameReader frames(fd);
  std::string payload;

  ASSIGN_OR_RETURN(bool have_header, frames.Next(&payload));
  if (!have_header) {
    return absl::DataLossError("device state rejected: empty stream");
  }
  pb::StateHeader header;
  if (!header.ParseFromString(payload)) {
    return Invalid("frame 0 is not a StateHeader");
  }
  RETURN_IF_ERROR(CheckHeader(header));

  Staging staging;
  pb::StateChunk chunk;
  for (;;) {
    const uint64_t index = frames.frames_read();
    ASSIGN_OR_RETURN(bool more, frames.Next(&payload));
    if (!more) break;
    if (!chunk.ParseFromString(payload)) {
      return Invalid(absl::StrCat("frame ", index, " is not a StateChunk"));
    }
    RETURN_IF_ERROR(AddChunk(chunk, index, &staging));
  }
  absl::flat_hash_map<uint64_t, uint32_t> opens;
  RETURN_IF_ERROR(CheckWhole(staging, fs_->config(), &opens));
  stats_.frames = frames.frames_read();
  stats_.bytes = frames.bytes_read();

  // The source's st_dev and mount ids mean the same here only if its root
  // is our root (same host, or the same device numbering).
  const InodeIdentity our_root = fs_->inodes().Get(kRootNodeId)->identity;
  const bool comparable = header.source_root().dev() == our_root.dev &&
                          header.source_root().ino() == our_root.ino;
  const uint64_t our_mount = fs_->root_mount_id();

  std::vector<InodeTable::EntrySnapshot> entries;
  entries.reserve(staging.inodes.size());
  for (auto& [id, r] : staging.inodes) {
    if (id == kRootNodeId) continue;
    auto m = std::make_shared<MigratedLocation>();
    if (r.has_path()) {
      m->parent = r.path().parent();
      m->name = r.path().name();
    }
    if (r.has_file_handle()) {
      FileHandle h;
      h.type = r.file_handle().handle_type();
      h.bytes = r.file_handle().handle();
      // Handles on the source's root mount open through ours.
      h.mount_id = r.file_handle().mount_id() == header.source_root().mount_id()
                       ? our_mount
                       : r.file_handle().mount_id();
      m->handle = std::move(h);
    }
    m->identity = InodeIdentity{r.identity().dev(), r.identity().ino(),
                                r.identity().mount_id()};
    m->identity_comparable = comparable;
    auto inode = std::make_shared<Inode>();
    inode->node_id = id;
    inode->identity = m->identity;
    inode->type = static_cast<mode_t>(r.file_type());
    inode->migrated = std::move(m);
    InodeTable::EntrySnapshot e;
    e.lookups = r.lookups();
    auto o = opens.find(id);
    e.opens = o == opens.end() ? 0 : o->second;
    e.location = InodeLocation{inode->migrated->parent, inode->migrated->name};
    e.inode = std::move(inode);
    entries.push_back(std::move(e));
  }
  std::vector<std::pair<uint64_t, std::shared_ptr<OpenFile>>> files;
  files.reserve(staging.handles.size());
  for (auto& [fh, h] : staging.handles) {
    auto file = std::make_shared<OpenFile>();
    file->node_id = h.node_id();
    file->flags = h.flags();
    file->is_dir = h.is_dir();
    file->migrated = true;
    files.emplace_back(fh, std::move(file));
  }
  stats_.inodes = entries.size() + 1;
  stats_.handles = files.size();

  auto root_opens = opens.find(kRootNodeId);
  RETURN_IF_ERROR(fs_->inodes().InstallMigrated(
      std::move(entries), root_opens == opens.end() ? 0 : root_opens->second,
      staging.counters.next_node_id()));
  if (absl::Status s = fs_->handles().InstallMigrated(
          std::move(files), staging.counters.next_fh());
      !s.ok()) {
    fs_->ResetMigrated();
    return s;
  }
  const pb::FuseSession& f = staging.session;
  FuseSession session;
  session.initialized = f.initialized();
  session.major = f.major();
  session.minor = f.minor();
  session.flags = f.flags();
  session.max_write = f.max_write();
  session.max_pages = f.max_pages();
  session.max_readahead = f.max_readahead();
  fs_->SetSession(session);

  if (fs_->config().migration_on_error == MigrationErrorPolicy::kAbort) {
    if (absl::Status s = fs_->ReopenAllMigrated(); !s.ok()) {
      fs_->ResetMigrated();
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace vhostmig::fs
