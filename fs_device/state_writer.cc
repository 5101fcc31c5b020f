#include "fs_device/state_writer.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "base/status_macros.h"
#include "fs_device/state_columns.h"
#include "fs_device/state_frame.h"
#include "proto/fs_state.pb.h"

namespace vhostmig::fs {
namespace {

namespace pb = fs_state::v1;

void SetIdentity(const InodeIdentity& id, pb::Identity* out) {
  out->set_dev(id.dev);
  out->set_ino(id.ino);
  out->set_mount_id(id.mount_id);
}

}  // namespace

absl::Status StateWriter::Write(int fd) {
  stats_ = StateWriteStats{};
  FrameWriter frames(fd);

  const InodeIdentity source_root = fs_->inodes().Get(kRootNodeId)->identity;
  pb::StateHeader header;
  header.set_magic(kStateMagic);
  header.set_format_version(kStateFormatVersion);
  header.set_oldest_compatible_version(kOldestCompatibleStateVersion);
  header.set_mode(mode_ == MigrationMode::kFileHandles
                      ? pb::MIGRATION_MODE_FILE_HANDLES
                      : pb::MIGRATION_MODE_FIND_PATHS);
  SetIdentity(source_root, header.mutable_source_root());
  header.set_writer("vhostmig vhost-user-fs");
  RETURN_IF_ERROR(frames.Write(header));

  GatheredLocations gathered =
      gatherer_ ? gatherer_->Collect() : GatheredLocations{};
  // The device is stopped: the tables and counters agree with each other.
  const uint64_t next_node_id = fs_->inodes().next_node_id();
  const uint64_t next_fh = fs_->handles().next_fh();

  pb::StateChunk chunk;
  std::optional<InodeColumnEncoder> inodes;
  auto encoder = [&]() -> InodeColumnEncoder& {
    if (!inodes) inodes.emplace(source_root, chunk.mutable_inode_columns());
    return *inodes;
  };
  auto flush = [&]() -> absl::Status {
    RETURN_IF_ERROR(frames.Write(chunk));
    ++stats_.chunks;
    chunk.Clear();
    inodes.reset();
    return absl::OkStatus();
  };
  auto add = [&](const PreparedLocation& p, uint64_t lookups) -> absl::Status {
    const Inode& inode = *p.inode;
    if (!p.root && !p.has_path && !p.handle) ++stats_.unlocated;
    encoder().Add(p.node_id, lookups, inode.type, inode.identity, p.root,
                  p.has_path, p.parent, p.name,
                  p.handle ? &*p.handle : nullptr);
    ++stats_.inodes;
    if (inodes->records() >= kRecordsPerChunk) return flush();
    return absl::OkStatus();
  };

  // What must be located now, while stopped: everything without a
  // gathering, else what changed since it started.
  std::vector<uint64_t> delta;
  if (gathered.all_changed) {
    for (const auto& e : fs_->inodes().Snapshot()) {
      delta.push_back(e.inode->node_id);
    }
    std::sort(delta.begin(), delta.end());
  } else {
    // The prepared records, with the current lookup counts: the whole cost
    // of the stopped phase for an unchanged inode.
    const PreparedSet& set = *gathered.prepared;
    std::vector<InodeTable::EntryState> states;
    fs_->inodes().StatesOf(set.ids, &states);
    auto changed = gathered.changed.begin();
    for (size_t i = 0; i < set.ids.size(); ++i) {
      const uint64_t id = set.ids[i];
      while (changed != gathered.changed.end() && *changed < id) ++changed;
      if (changed != gathered.changed.end() && *changed == id) continue;
      if (states[i].inode == nullptr) continue;  // forgotten meanwhile
      if (states[i].inode != set.locations[i].inode.get()) {
        delta.push_back(id);  // re-opened since (a lazily resolved inode)
        continue;
      }
      RETURN_IF_ERROR(add(set.locations[i], states[i].lookups));
    }
    delta.insert(delta.end(), gathered.changed.begin(), gathered.changed.end());
    std::sort(delta.begin(), delta.end());
    // Differences restart with the delta's own chunk.
    if (inodes && inodes->records() > 0) RETURN_IF_ERROR(flush());
  }
  PreparedLocation located;
  for (const InodeTable::EntrySnapshot& e : fs_->inodes().SnapshotOf(delta)) {
    located = PreparedLocation{};
    LocationGatherer::Locate(*fs_, mode_, e, &located);
    ++stats_.located_during_save;
    RETURN_IF_ERROR(add(located, e.lookups));
  }

  auto handles = fs_->handles().Snapshot();
  std::sort(handles.begin(), handles.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  if (inodes && inodes->records() > 0) RETURN_IF_ERROR(flush());
  std::optional<HandleColumnEncoder> files;
  for (const auto& [fh, file] : handles) {
    if (!files) files.emplace(chunk.mutable_handle_columns());
    files->Add(fh, file->node_id, file->flags, file->is_dir);
    ++stats_.handles;
    if (files->records() >= kRecordsPerChunk) {
      RETURN_IF_ERROR(flush());
      files.reset();
    }
  }

  chunk.mutable_counters()->set_next_node_id(next_node_id);
  chunk.mutable_counters()->set_next_fh(next_fh);
  const FuseSession session = fs_->session();
  pb::FuseSession* s = chunk.mutable_session();
  s->set_initialized(session.initialized);
  s->set_major(session.major);
  s->set_minor(session.minor);
  s->set_flags(session.flags);
  s->set_max_write(session.max_write);
  s->set_max_pages(session.max_pages);
  s->set_max_readahead(session.max_readahead);
  pb::StateEnd* end = chunk.mutable_end();
  end->set_inode_count(stats_.inodes);
  end->set_handle_count(stats_.handles);
  end->set_chunk_count(stats_.chunks + 1);
  RETURN_IF_ERROR(flush());
  stats_.bytes = frames.bytes_written();
  return absl::OkStatus();
}

}  // namespace vhostmig::fs
