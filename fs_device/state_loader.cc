#include "fs_device/state_loader.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "fs_device/fuse_ops.h"
#include "fs_device/state_columns.h"
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

std::string InodeName(uint64_t node_id) {
  return absl::StrCat("inode record for node ", node_id);
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

constexpr uint32_t kNone = UINT32_MAX;

// The staging tables: everything validated so far, nothing installed.
// Records of both formats end up here as InodeFields / HandleFields.
struct Staging {
  InodeIdentity source_root;
  StableVector<InodeFields> inodes;
  absl::flat_hash_map<uint64_t, uint32_t> index;  // node id -> inodes[i]
  StableVector<HandleFields> handles;
  absl::flat_hash_set<uint64_t> fhs;
  bool have_counters = false;
  pb::Counters counters;
  bool have_session = false;
  pb::FuseSession session;
  bool have_end = false;
  pb::StateEnd end;
  uint64_t chunks = 0;

  size_t records() const { return inodes.size() + handles.size(); }
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

InodeFields FromRecord(const pb::InodeRecord& r) {
  InodeFields f;
  f.node_id = r.node_id();
  f.lookups = r.lookups();
  f.file_type = r.file_type();
  f.identity = InodeIdentity{r.identity().dev(), r.identity().ino(),
                             r.identity().mount_id()};
  f.root = r.root();
  f.has_path = r.has_path();
  f.parent = r.path().parent();
  f.name = r.path().name();
  f.has_handle = r.has_file_handle();
  f.handle_type = r.file_handle().handle_type();
  f.handle = r.file_handle().handle();
  f.handle_mount_id = r.file_handle().mount_id();
  return f;
}

// The checks one inode record allows on its own.
absl::Status CheckInode(const InodeFields& r, const Staging& s) {
  if (r.node_id == 0) return Invalid("inode record with node id 0");
  // Built only for a message: this runs once per record.
  auto who = [&r] { return InodeName(r.node_id); };
  if (s.index.contains(r.node_id)) {
    return Invalid(absl::StrCat(who(), ": duplicate node id"));
  }
  if (!KnownFileType(r.file_type)) {
    return Invalid(
        absl::StrCat(who(), ": unknown file type 0", absl::Hex(r.file_type)));
  }
  if ((r.node_id == kRootNodeId) != r.root) {
    return Invalid(absl::StrCat(
        who(), r.root ? ": only node 1 can be the root"
                      : ": node 1 must be the shared directory's root"));
  }
  if (r.root) {
    if (r.file_type != S_IFDIR) {
      return Invalid(absl::StrCat(who(), ": the root is not a directory"));
    }
    if (r.has_path || r.has_handle) {
      return Invalid(absl::StrCat(who(), ": the root has another location"));
    }
    return absl::OkStatus();
  }
  if (r.has_path) {
    if (PassthroughFs::CheckName(r.name) != 0) {
      return Invalid(absl::StrCat(who(), ": name \"", absl::CHexEscape(r.name),
                                  "\" is not a single path component"));
    }
    if (r.parent == 0) {
      return Invalid(absl::StrCat(who(), ": path location with parent 0"));
    }
    if (r.parent == r.node_id) {
      return Invalid(absl::StrCat(who(), ": is its own parent (cycle)"));
    }
  }
  if (r.has_handle) {
    const size_t n = r.handle.size();
    if (n == 0 || n > MAX_HANDLE_SZ) {
      return Invalid(absl::StrCat(who(), ": file handle of ", n, " bytes (1..",
                                  MAX_HANDLE_SZ, " allowed)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckHandle(const HandleFields& h, const Staging& s) {
  auto who = [&h] { return absl::StrCat("handle record for fh ", h.fh); };
  if (h.fh == 0) return Invalid("handle record with fh 0");
  if (s.fhs.contains(h.fh)) {
    return Invalid(absl::StrCat(who(), ": duplicate fh"));
  }
  if (h.flags & (O_CREAT | O_EXCL | O_TRUNC)) {
    return Invalid(absl::StrCat(who(), ": open flags 0", absl::Hex(h.flags),
                                " include O_CREAT, O_EXCL or O_TRUNC"));
  }
  if ((h.flags & O_ACCMODE) == O_ACCMODE) {
    return Invalid(absl::StrCat(who(), ": invalid access mode"));
  }
  return absl::OkStatus();
}

absl::Status TooMany() {
  return Invalid(absl::StrCat("more than ", kMaxStateRecords, " records"));
}

// Checks and indexes the records from `first` on (just appended).
absl::Status AdmitInodes(size_t first, Staging* s) {
  for (size_t i = first; i < s->inodes.size(); ++i) {
    RETURN_IF_ERROR(CheckInode(s->inodes[i], *s));
    s->index.emplace(s->inodes[i].node_id, static_cast<uint32_t>(i));
  }
  return absl::OkStatus();
}

absl::Status AdmitHandles(size_t first, Staging* s) {
  for (size_t i = first; i < s->handles.size(); ++i) {
    RETURN_IF_ERROR(CheckHandle(s->handles[i], *s));
    s->fhs.insert(s->handles[i].fh);
  }
  return absl::OkStatus();
}

absl::Status AddChunk(const pb::StateChunk& chunk, uint64_t frame, Staging* s) {
  if (s->have_end) {
    return Invalid(absl::StrCat("frame ", frame, " follows the end marker"));
  }
  ++s->chunks;
  // Format 1 records, one at a time.
  for (const pb::InodeRecord& r : chunk.inodes()) {
    if (s->records() >= kMaxStateRecords) return TooMany();
    s->inodes.push_back(FromRecord(r));
    RETURN_IF_ERROR(AdmitInodes(s->inodes.size() - 1, s));
  }
  for (const pb::HandleRecord& h : chunk.handles()) {
    if (s->records() >= kMaxStateRecords) return TooMany();
    s->handles.push_back(
        HandleFields{h.fh(), h.node_id(), h.flags(), h.is_dir()});
    RETURN_IF_ERROR(AdmitHandles(s->handles.size() - 1, s));
  }
  // Format 2 columns, a chunk at a time.
  if (chunk.has_inode_columns()) {
    const pb::InodeColumns& c = chunk.inode_columns();
    if (s->records() + c.kind_size() > kMaxStateRecords) return TooMany();
    const size_t first = s->inodes.size();
    RETURN_IF_ERROR(DecodeInodeColumns(c, s->source_root, frame, &s->inodes));
    RETURN_IF_ERROR(AdmitInodes(first, s));
  }
  if (chunk.has_handle_columns()) {
    const pb::HandleColumns& c = chunk.handle_columns();
    if (s->records() + c.fh_delta_size() > kMaxStateRecords) return TooMany();
    const size_t first = s->handles.size();
    RETURN_IF_ERROR(DecodeHandleColumns(c, frame, &s->handles));
    RETURN_IF_ERROR(AdmitHandles(first, s));
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

// The checks that need the whole state. Fills the index of each record's
// parent (kNone without a path) and each record's open handles.
absl::Status CheckWhole(const Staging& s, const FsConfig& config,
                        std::vector<uint32_t>* parent_of,
                        std::vector<uint32_t>* opens) {
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
  if (!s.index.contains(kRootNodeId)) return Invalid("no root inode record");

  const size_t n = s.inodes.size();
  parent_of->assign(n, kNone);
  uint64_t max_node = 0;
  for (size_t i = 0; i < n; ++i) {
    const InodeFields& r = s.inodes[i];
    max_node = std::max(max_node, r.node_id);
    if (!r.has_path) continue;
    auto parent = s.index.find(r.parent);
    if (parent == s.index.end()) {
      return Invalid(absl::StrCat(InodeName(r.node_id),
                                  ": unknown parent node ", r.parent));
    }
    if (s.inodes[parent->second].file_type != S_IFDIR) {
      return Invalid(absl::StrCat(InodeName(r.node_id), ": parent node ",
                                  r.parent, " is not a directory"));
    }
    (*parent_of)[i] = parent->second;
  }
  // Cycles: walk each parent chain once; 1 = on the current walk, 2 = known
  // to reach a record without a path (root or unlocated).
  std::vector<uint8_t> state(n, 0);
  std::vector<uint32_t> walk;
  for (size_t i = 0; i < n; ++i) {
    walk.clear();
    uint32_t cur = static_cast<uint32_t>(i);
    for (;;) {
      if (state[cur] == 2) break;
      if (state[cur] == 1) {
        return Invalid(absl::StrCat(
            "inode record for node ", s.inodes[i].node_id,
            ": parent chain has a cycle through node ", s.inodes[cur].node_id));
      }
      state[cur] = 1;
      walk.push_back(cur);
      if ((*parent_of)[cur] == kNone) break;
      cur = (*parent_of)[cur];
    }
    for (uint32_t w : walk) state[w] = 2;
  }
  // What the destination can find at all: the root, a record with a file
  // handle, or a path whose parent is findable. Under abort an unfindable
  // record fails the load here, before anything is installed, instead of on
  // first use (the record tells all: no syscall needed).
  if (config.migration_on_error == MigrationErrorPolicy::kAbort) {
    std::vector<int8_t> findable(n, -1);
    for (size_t i = 0; i < n; ++i) {
      walk.clear();
      uint32_t cur = static_cast<uint32_t>(i);
      bool result = false;
      for (;;) {
        if (findable[cur] >= 0) {
          result = findable[cur] == 1;
          break;
        }
        const InodeFields& rec = s.inodes[cur];
        if (rec.root || rec.has_handle) {
          result = true;
          findable[cur] = 1;
          break;
        }
        if (!rec.has_path) {
          findable[cur] = 0;
          break;
        }
        walk.push_back(cur);
        cur = (*parent_of)[cur];
      }
      for (uint32_t w : walk) findable[w] = result ? 1 : 0;
      if (!result) {
        const InodeFields& rec = s.inodes[i];
        return absl::FailedPreconditionError(absl::StrCat(
            "--migration-on-error=abort: ", InodeName(rec.node_id),
            rec.has_path
                ? absl::StrCat(": its parent chain reaches node ",
                               s.inodes[cur].node_id,
                               ", which the source could not locate")
                : ": the source could not locate it (e.g. unlinked while "
                  "open in find-paths mode)"));
      }
    }
  }

  opens->assign(n, 0);
  uint64_t max_fh = 0;
  for (size_t k = 0; k < s.handles.size(); ++k) {
    const HandleFields& h = s.handles[k];
    max_fh = std::max(max_fh, h.fh);
    auto node = s.index.find(h.node_id);
    if (node == s.index.end()) {
      return Invalid(absl::StrCat("handle record for fh ", h.fh,
                                  ": unknown node ", h.node_id));
    }
    if ((s.inodes[node->second].file_type == S_IFDIR) != h.is_dir) {
      return Invalid(absl::StrCat("handle record for fh ", h.fh,
                                  ": directory flag does not match node ",
                                  h.node_id, "'s type"));
    }
    if (config.readonly && ((h.flags & O_ACCMODE) != O_RDONLY)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device state rejected: handle record for fh ", h.fh,
          " is open for writing but this daemon's share is read-only"));
    }
    ++(*opens)[node->second];
  }
  for (size_t i = 0; i < n; ++i) {
    const InodeFields& r = s.inodes[i];
    if (!r.root && r.lookups == 0 && (*opens)[i] == 0) {
      return Invalid(absl::StrCat(InodeName(r.node_id),
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

// An array for `n` objects of a load, reserved at once (elements are
// emplaced without reallocation, so their addresses are stable): two
// allocations per load instead of four per inode (object + control block,
// twice). The array is freed when the last shared_ptr aliasing one of its
// elements goes (inodes re-opened since are ordinary objects).
template <typename T>
std::shared_ptr<std::vector<T>> MakeSlab(size_t n) {
  auto slab = std::make_shared<std::vector<T>>();
  slab->reserve(n);
  return slab;
}

}  // namespace

absl::Status StateLoader::OpenNameless(const std::vector<uint64_t>& nodes) {
  if (nodes.empty()) return absl::OkStatus();
  const bool abort =
      fs_->config().migration_on_error == MigrationErrorPolicy::kAbort;
  auto failed = [&](absl::string_view what) {
    std::vector<std::string> errors = fs_->MigrationErrors();
    return absl::FailedPreconditionError(
        absl::StrCat("--migration-on-error=abort: ",
                     errors.empty() ? std::string(what) : errors.back()));
  };
  const absl::flat_hash_set<uint64_t> wanted(nodes.begin(), nodes.end());
  for (uint64_t id : nodes) {
    std::shared_ptr<const Inode> inode = fs_->GetInode(id);
    if (abort && (!inode || inode->error != 0)) {
      return failed(absl::StrCat("inode ", id, " could not be re-opened"));
    }
  }
  // Their open handles too: an open fd is what keeps an unlinked file
  // alive once the source lets go of it.
  for (const auto& [fh, file] : fs_->handles().Snapshot()) {
    if (!wanted.contains(file->node_id)) continue;
    std::shared_ptr<OpenFile> opened;
    if (fs_->AnyOpenFileFor(fh, file->node_id, &opened) != 0 && abort) {
      return failed(absl::StrCat("handle ", fh, " could not be re-opened"));
    }
  }
  return absl::OkStatus();
}

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
  staging.source_root =
      InodeIdentity{header.source_root().dev(), header.source_root().ino(),
                    header.source_root().mount_id()};
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
  std::vector<uint32_t> parent_of;
  std::vector<uint32_t> opens;
  RETURN_IF_ERROR(CheckWhole(staging, fs_->config(), &parent_of, &opens));
  stats_.frames = frames.frames_read();
  stats_.bytes = frames.bytes_read();

  // The source's st_dev and mount ids mean the same here only if its root
  // is our root (same host, or the same device numbering).
  const InodeIdentity our_root = fs_->inodes().Get(kRootNodeId)->identity;
  const bool comparable = header.source_root().dev() == our_root.dev &&
                          header.source_root().ino() == our_root.ino;
  const uint64_t our_mount = fs_->root_mount_id();

  // The migrated Inode and MigratedLocation objects live in one array
  // each (see MakeSlab), their shared_ptrs alias the arrays'.
  const size_t n = staging.inodes.size();
  auto locations = MakeSlab<MigratedLocation>(n);
  auto inodes = MakeSlab<Inode>(n);
  std::vector<uint64_t> nameless;
  uint32_t root_opens = 0;
  std::vector<uint32_t> order;  // staging indices to install (not the root)
  order.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (staging.inodes[i].root) {
      root_opens = opens[i];
    } else {
      order.push_back(static_cast<uint32_t>(i));
    }
  }
  auto fill = [&](size_t k, InodeTable::EntrySnapshot* e) {
    const size_t i = order[k];
    InodeFields& r = staging.inodes[i];
    if (r.has_handle && !r.has_path) nameless.push_back(r.node_id);
    MigratedLocation& m = locations->emplace_back();
    if (r.has_path) {
      m.parent = r.parent;
      m.name = std::move(r.name);
    }
    if (r.has_handle) {
      FileHandle h;
      h.type = r.handle_type;
      h.bytes = std::move(r.handle);
      // Handles on the source's root mount open through ours.
      h.mount_id = r.handle_mount_id == header.source_root().mount_id()
                       ? our_mount
                       : r.handle_mount_id;
      m.handle = std::move(h);
    }
    m.identity = r.identity;
    m.identity_comparable = comparable;
    Inode& inode = inodes->emplace_back();
    inode.node_id = r.node_id;
    inode.identity = m.identity;
    inode.type = static_cast<mode_t>(r.file_type);
    inode.migrated = std::shared_ptr<const MigratedLocation>(locations, &m);
    e->lookups = r.lookups;
    e->opens = opens[i];
    e->location.parent = m.parent;
    e->location.name = m.name;
    e->inode = std::shared_ptr<const Inode>(inodes, &inode);
  };
  std::vector<std::pair<uint64_t, std::shared_ptr<OpenFile>>> files;
  files.reserve(staging.handles.size());
  for (size_t k = 0; k < staging.handles.size(); ++k) {
    const HandleFields& h = staging.handles[k];
    auto file = std::make_shared<OpenFile>();
    file->node_id = h.node_id;
    file->flags = h.flags;
    file->is_dir = h.is_dir;
    file->migrated = true;
    files.emplace_back(h.fh, std::move(file));
  }
  stats_.inodes = n;
  stats_.handles = files.size();

  RETURN_IF_ERROR(fs_->inodes().InstallMigrated(
      order.size(), fill, root_opens, staging.counters.next_node_id()));
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

  // Nameless files (a file handle and no verified name: unlinked while
  // open, or renamed away on the host) are opened now, while the source
  // still keeps them alive; everything else is re-opened on first use. So
  // the load's cost grows with the number of such files, not with the
  // tables.
  absl::Status opened =
      fs_->config().migration_verify == MigrationVerify::kDuringLoad &&
              fs_->config().migration_on_error == MigrationErrorPolicy::kAbort
          ? fs_->ReopenAllMigrated()
          : OpenNameless(nameless);
  if (!opened.ok()) {
    fs_->ResetMigrated();
    return opened;
  }
  return absl::OkStatus();
}

}  // namespace vhostmig::fs
