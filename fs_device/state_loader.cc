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

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "fs_device/fuse_ops.h"
#include "fs_device/migrated_tables.h"
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
constexpr size_t kNotFound = MigratedInodes::kNotFound;

// Names and handle bytes are addressed with 32-bit offsets.
static_assert(kMaxStateRecords * NAME_MAX <= UINT32_MAX);
static_assert(kMaxStateRecords * MAX_HANDLE_SZ <= UINT32_MAX);

// What has been read so far: every record checked on its own and appended
// to the arrays the tables will take over, nothing installed.
struct Staging {
  InodeIdentity source_root;
  uint64_t our_mount = 0;
  std::shared_ptr<MigratedInodes> inodes = std::make_shared<MigratedInodes>();
  std::shared_ptr<MigratedHandles> handles =
      std::make_shared<MigratedHandles>();
  bool have_counters = false;
  pb::Counters counters;
  bool have_session = false;
  pb::FuseSession session;
  bool have_end = false;
  pb::StateEnd end;
  uint64_t chunks = 0;

  size_t records() const { return inodes->size() + handles->size(); }
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

// A format 1 record as the column decoder presents its records.
InodeView ViewOf(const pb::InodeRecord& r) {
  InodeView f;
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

// The checks one inode record allows on its own (duplicates are found
// once the records are sorted, see SortInodes).
absl::Status CheckInode(const InodeView& r) {
  if (r.node_id == 0) return Invalid("inode record with node id 0");
  // Built only for a message: this runs once per record.
  auto who = [&r] { return InodeName(r.node_id); };
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

// Checks one inode record and appends it to the arrays.
inline absl::Status AddInode(const InodeView& r, Staging* s) {
  RETURN_IF_ERROR(CheckInode(r));
  MigratedInodes& m = *s->inodes;
  const uint32_t record = static_cast<uint32_t>(m.size());
  uint8_t kind = static_cast<uint8_t>(r.file_type >> 12) & kMigratedTypeMask;
  if (r.root) kind |= kMigratedRoot;
  if (r.identity.dev != s->source_root.dev ||
      r.identity.mount_id != s->source_root.mount_id) {
    kind |= kMigratedOwnDevice;
    m.devices.push_back(
        MigratedInodes::Device{record, r.identity.dev, r.identity.mount_id});
  }
  if (r.has_path) {
    kind |= kMigratedPath;
    m.names.append(r.name.data(), r.name.size());
  }
  if (r.has_handle) {
    kind |= kMigratedHandle;
    MigratedInodes::Handle h;
    h.record = record;
    h.type = r.handle_type;
    // Handles on the source's root mount open through ours.
    h.mount_id = r.handle_mount_id == s->source_root.mount_id
                     ? s->our_mount
                     : r.handle_mount_id;
    h.begin = static_cast<uint32_t>(m.handle_bytes.size());
    h.size = static_cast<uint32_t>(r.handle.size());
    m.handle_bytes.append(r.handle.data(), r.handle.size());
    m.handles.push_back(h);
  }
  m.node_id.push_back(r.node_id);
  m.kind.push_back(kind);
  m.lookups.push_back(r.lookups);
  m.ino.push_back(r.identity.ino);
  m.parent.push_back(r.has_path ? r.parent : 0);
  m.name_end.push_back(static_cast<uint32_t>(m.names.size()));
  return absl::OkStatus();
}

absl::Status AddHandle(const HandleFields& h, Staging* s) {
  auto who = [&h] { return absl::StrCat("handle record for fh ", h.fh); };
  if (h.fh == 0) return Invalid("handle record with fh 0");
  if (h.flags & (O_CREAT | O_EXCL | O_TRUNC)) {
    return Invalid(absl::StrCat(who(), ": open flags 0", absl::Hex(h.flags),
                                " include O_CREAT, O_EXCL or O_TRUNC"));
  }
  if ((h.flags & O_ACCMODE) == O_ACCMODE) {
    return Invalid(absl::StrCat(who(), ": invalid access mode"));
  }
  MigratedHandles& m = *s->handles;
  m.fh.push_back(h.fh);
  m.node_id.push_back(h.node_id);
  m.flags.push_back(h.flags);
  m.is_dir.push_back(h.is_dir ? 1 : 0);
  return absl::OkStatus();
}

absl::Status TooMany() {
  return Invalid(absl::StrCat("more than ", kMaxStateRecords, " records"));
}

absl::Status AddChunk(const pb::StateChunk& chunk, uint64_t frame, Staging* s) {
  if (s->have_end) {
    return Invalid(absl::StrCat("frame ", frame, " follows the end marker"));
  }
  ++s->chunks;
  // Format 1 records, one at a time.
  for (const pb::InodeRecord& r : chunk.inodes()) {
    if (s->records() >= kMaxStateRecords) return TooMany();
    RETURN_IF_ERROR(AddInode(ViewOf(r), s));
  }
  for (const pb::HandleRecord& h : chunk.handles()) {
    if (s->records() >= kMaxStateRecords) return TooMany();
    RETURN_IF_ERROR(
        AddHandle(HandleFields{h.fh(), h.node_id(), h.flags(), h.is_dir()}, s));
  }
  // Format 2 columns, a chunk at a time.
  if (chunk.has_inode_columns()) {
    const pb::InodeColumns& c = chunk.inode_columns();
    if (s->records() + c.kind_size() > kMaxStateRecords) return TooMany();
    RETURN_IF_ERROR(
        ForEachInode(c, s->source_root, frame,
                     [s](const InodeView& r) { return AddInode(r, s); }));
  }
  if (chunk.has_handle_columns()) {
    const pb::HandleColumns& c = chunk.handle_columns();
    if (s->records() + c.fh_delta_size() > kMaxStateRecords) return TooMany();
    RETURN_IF_ERROR(DecodeHandleColumns(
        c, frame, [s](const HandleFields& h) { return AddHandle(h, s); }));
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

// `order` sorted by `keys` (stable), or empty if `keys` already ascend
// strictly. Fails naming the first key that appears twice.
template <typename Duplicate>
absl::Status SortOrder(const PodArray<uint64_t>& keys,
                       std::vector<uint32_t>* order, Duplicate duplicate) {
  order->clear();
  const size_t n = keys.size();
  size_t i = 1;
  while (i < n && keys[i - 1] < keys[i]) ++i;
  if (i >= n) return absl::OkStatus();  // the writer's order: nothing to do
  order->resize(n);
  for (size_t k = 0; k < n; ++k) (*order)[k] = static_cast<uint32_t>(k);
  std::stable_sort(order->begin(), order->end(),
                   [&](uint32_t a, uint32_t b) { return keys[a] < keys[b]; });
  for (size_t k = 1; k < n; ++k) {
    if (keys[(*order)[k]] == keys[(*order)[k - 1]]) {
      return duplicate(keys[(*order)[k]]);
    }
  }
  return absl::OkStatus();
}

template <typename T>
void Permute(const std::vector<uint32_t>& order, PodArray<T>* values) {
  PodArray<T> out;
  out.ResizeUninitialized(order.size());
  for (size_t k = 0; k < order.size(); ++k) out[k] = (*values)[order[k]];
  *values = std::move(out);
}

// Brings the records into ascending node-id order (a stream from another
// writer may come in any order) and refuses duplicate node ids.
absl::Status SortInodes(MigratedInodes* m) {
  std::vector<uint32_t> order;
  RETURN_IF_ERROR(SortOrder(m->node_id, &order, [](uint64_t id) {
    return Invalid(absl::StrCat(InodeName(id), ": duplicate node id"));
  }));
  if (order.empty()) return absl::OkStatus();
  std::vector<uint32_t> new_index(order.size());
  for (size_t k = 0; k < order.size(); ++k) new_index[order[k]] = k;
  PodArray<char> names;
  PodArray<uint32_t> name_end;
  for (uint32_t r : order) {
    const absl::string_view name = m->name(r);
    names.append(name.data(), name.size());
    name_end.push_back(static_cast<uint32_t>(names.size()));
  }
  m->names = std::move(names);
  m->name_end = std::move(name_end);
  Permute(order, &m->node_id);
  Permute(order, &m->kind);
  Permute(order, &m->lookups);
  Permute(order, &m->ino);
  Permute(order, &m->parent);
  for (size_t k = 0; k < m->devices.size(); ++k) {
    m->devices[k].record = new_index[m->devices[k].record];
  }
  std::sort(m->devices.data(), m->devices.data() + m->devices.size(),
            [](const auto& a, const auto& b) { return a.record < b.record; });
  for (size_t k = 0; k < m->handles.size(); ++k) {
    m->handles[k].record = new_index[m->handles[k].record];
  }
  std::sort(m->handles.data(), m->handles.data() + m->handles.size(),
            [](const auto& a, const auto& b) { return a.record < b.record; });
  return absl::OkStatus();
}

absl::Status SortHandles(MigratedHandles* m) {
  std::vector<uint32_t> order;
  RETURN_IF_ERROR(SortOrder(m->fh, &order, [](uint64_t fh) {
    return Invalid(absl::StrCat("handle record for fh ", fh, ": duplicate fh"));
  }));
  if (order.empty()) return absl::OkStatus();
  Permute(order, &m->fh);
  Permute(order, &m->node_id);
  Permute(order, &m->flags);
  Permute(order, &m->is_dir);
  return absl::OkStatus();
}

// What CheckWhole found out for the install.
struct Checked {
  std::vector<uint64_t> nameless;  // a file handle and no path
  std::vector<std::pair<uint64_t, uint64_t>> nameless_handles;  // fh, node
};

// The checks that need the whole state, in linear passes over the arrays
// (sorted first). Fills the records' open counts.
absl::Status CheckWhole(Staging& s, const FsConfig& config, Checked* out) {
  MigratedInodes& m = *s.inodes;
  MigratedHandles& hs = *s.handles;
  RETURN_IF_ERROR(SortInodes(&m));
  RETURN_IF_ERROR(SortHandles(&hs));
  if (!s.have_end) {
    return absl::DataLossError(
        absl::StrCat("device state rejected: stream ended after ", s.chunks,
                     " chunks without the end marker (truncated)"));
  }
  if (s.end.inode_count() != m.size() || s.end.handle_count() != hs.size() ||
      s.end.chunk_count() != s.chunks) {
    return absl::DataLossError(absl::StrCat(
        "device state rejected: end marker counts ", s.end.inode_count(),
        " inodes, ", s.end.handle_count(), " handles, ", s.end.chunk_count(),
        " chunks; the stream held ", m.size(), ", ", hs.size(), ", ",
        s.chunks));
  }
  if (!s.have_counters) return Invalid("no counters record");
  if (!s.have_session) return Invalid("no FUSE session record");
  // Ids are at least 1 and ascend: the root, if any, is record 0.
  if (m.size() == 0 || m.node_id[0] != kRootNodeId) {
    return Invalid("no root inode record");
  }

  const size_t n = m.size();
  // Parents, as record indices. Records come in node-id order, so
  // consecutive records mostly share a parent: search only on a change.
  PodArray<uint32_t> parent_of;
  parent_of.ResizeUninitialized(n);
  uint64_t cached_id = 0;
  uint32_t cached = kNone;
  for (size_t i = 0; i < n; ++i) {
    if (!m.has_path(i)) {
      parent_of[i] = kNone;
      if (m.has_handle(i)) out->nameless.push_back(m.node_id[i]);
      continue;
    }
    const uint64_t p = m.parent[i];
    if (p != cached_id) {
      const size_t r = m.Find(p);
      if (r == kNotFound) {
        return Invalid(
            absl::StrCat(InodeName(m.node_id[i]), ": unknown parent node ", p));
      }
      if (m.type(r) != S_IFDIR) {
        return Invalid(absl::StrCat(InodeName(m.node_id[i]), ": parent node ",
                                    p, " is not a directory"));
      }
      cached_id = p;
      cached = static_cast<uint32_t>(r);
    }
    parent_of[i] = cached;
  }
  // Cycles: walk each parent chain once; 1 = on the current walk, 2 = known
  // to reach a record without a path (root or unlocated).
  PodArray<uint8_t> state;
  state.AssignZeros(n);
  std::vector<uint32_t> walk;
  for (size_t i = 0; i < n; ++i) {
    if (state[i] == 2) continue;
    walk.clear();
    uint32_t cur = static_cast<uint32_t>(i);
    for (;;) {
      if (state[cur] == 2) break;
      if (state[cur] == 1) {
        return Invalid(absl::StrCat("inode record for node ", m.node_id[i],
                                    ": parent chain has a cycle through node ",
                                    m.node_id[cur]));
      }
      state[cur] = 1;
      walk.push_back(cur);
      if (parent_of[cur] == kNone) break;
      cur = parent_of[cur];
    }
    for (uint32_t w : walk) state[w] = 2;
  }
  // What the destination can find at all: the root, a record with a file
  // handle, or a path whose parent is findable. Under abort an unfindable
  // record fails the load here, before anything is installed, instead of on
  // first use (the record tells all: no syscall needed). `state` is reused:
  // 2 = not known yet, 3 = findable, 4 = not.
  if (config.migration_on_error == MigrationErrorPolicy::kAbort) {
    for (size_t i = 0; i < n; ++i) {
      if (state[i] != 2) continue;
      walk.clear();
      uint32_t cur = static_cast<uint32_t>(i);
      bool result = false;
      for (;;) {
        if (state[cur] != 2) {
          result = state[cur] == 3;
          break;
        }
        if (m.is_root(cur) || m.has_handle(cur)) {
          result = true;
          state[cur] = 3;
          break;
        }
        if (!m.has_path(cur)) {
          state[cur] = 4;
          break;
        }
        walk.push_back(cur);
        cur = parent_of[cur];
      }
      for (uint32_t w : walk) state[w] = result ? 3 : 4;
      if (!result) {
        return absl::FailedPreconditionError(absl::StrCat(
            "--migration-on-error=abort: ", InodeName(m.node_id[i]),
            m.has_path(i)
                ? absl::StrCat(": its parent chain reaches node ",
                               m.node_id[cur],
                               ", which the source could not locate")
                : ": the source could not locate it (e.g. unlinked while "
                  "open in find-paths mode)"));
      }
    }
  }

  m.opens.AssignZeros(n);
  uint64_t cached_node = 0;
  cached = kNone;
  for (size_t k = 0; k < hs.size(); ++k) {
    const uint64_t fh = hs.fh[k];
    const uint64_t node = hs.node_id[k];
    if (node != cached_node || cached == kNone) {
      const size_t r = m.Find(node);
      if (r == kNotFound) {
        return Invalid(
            absl::StrCat("handle record for fh ", fh, ": unknown node ", node));
      }
      cached_node = node;
      cached = static_cast<uint32_t>(r);
    }
    if ((m.type(cached) == S_IFDIR) != (hs.is_dir[k] != 0)) {
      return Invalid(absl::StrCat("handle record for fh ", fh,
                                  ": directory flag does not match node ", node,
                                  "'s type"));
    }
    if (config.readonly && ((hs.flags[k] & O_ACCMODE) != O_RDONLY)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device state rejected: handle record for fh ", fh,
          " is open for writing but this daemon's share is read-only"));
    }
    ++m.opens[cached];
    if (m.has_handle(cached) && !m.has_path(cached)) {
      out->nameless_handles.emplace_back(fh, node);
    }
  }
  for (size_t i = 1; i < n; ++i) {
    if (m.lookups[i] == 0 && m.opens[i] == 0) {
      return Invalid(absl::StrCat(InodeName(m.node_id[i]),
                                  ": neither looked up nor open (no "
                                  "references)"));
    }
  }
  const uint64_t max_node = m.node_id[n - 1];
  const uint64_t max_fh = hs.size() == 0 ? 0 : hs.fh[hs.size() - 1];
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

absl::Status StateLoader::OpenNameless(
    const std::vector<uint64_t>& nodes,
    const std::vector<std::pair<uint64_t, uint64_t>>& files) {
  if (nodes.empty()) return absl::OkStatus();
  const bool abort =
      fs_->config().migration_on_error == MigrationErrorPolicy::kAbort;
  auto failed = [&](absl::string_view what) {
    std::vector<std::string> errors = fs_->MigrationErrors();
    return absl::FailedPreconditionError(
        absl::StrCat("--migration-on-error=abort: ",
                     errors.empty() ? std::string(what) : errors.back()));
  };
  for (uint64_t id : nodes) {
    std::shared_ptr<const Inode> inode = fs_->GetInode(id);
    if (abort && (!inode || inode->error != 0)) {
      return failed(absl::StrCat("inode ", id, " could not be re-opened"));
    }
  }
  // Their open handles too: an open fd is what keeps an unlinked file
  // alive once the source lets go of it.
  for (const auto& [fh, node] : files) {
    std::shared_ptr<OpenFile> opened;
    if (fs_->AnyOpenFileFor(fh, node, &opened) != 0 && abort) {
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
  staging.our_mount = fs_->root_mount_id();
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
  Checked checked;
  RETURN_IF_ERROR(CheckWhole(staging, fs_->config(), &checked));
  stats_.frames = frames.frames_read();
  stats_.bytes = frames.bytes_read();

  // The source's st_dev and mount ids mean the same here only if its root
  // is our root (same host, or the same device numbering).
  const InodeIdentity our_root = fs_->inodes().Get(kRootNodeId)->identity;
  MigratedInodes& m = *staging.inodes;
  m.source_dev = staging.source_root.dev;
  m.source_mount_id = staging.source_root.mount_id;
  m.identity_comparable = staging.source_root.dev == our_root.dev &&
                          staging.source_root.ino == our_root.ino;
  stats_.inodes = m.size();
  stats_.handles = staging.handles->size();

  // The tables take the arrays over as they are: no entry, object or hash
  // insert per record while the device is stopped.
  RETURN_IF_ERROR(fs_->inodes().InstallMigrated(
      std::move(staging.inodes), staging.counters.next_node_id()));
  if (absl::Status s = fs_->handles().InstallMigrated(
          std::move(staging.handles), staging.counters.next_fh());
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
          : OpenNameless(checked.nameless, checked.nameless_handles);
  if (!opened.ok()) {
    fs_->ResetMigrated();
    return opened;
  }
  fs_->StartMigrationMerge();
  return absl::OkStatus();
}

}  // namespace vhostmig::fs
