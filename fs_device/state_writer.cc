#include "fs_device/state_writer.h"

#include <utility>

#include "base/status_macros.h"
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

  pb::StateHeader header;
  header.set_magic(kStateMagic);
  header.set_format_version(kStateFormatVersion);
  header.set_oldest_compatible_version(kOldestCompatibleStateVersion);
  header.set_mode(mode_ == MigrationMode::kFileHandles
                      ? pb::MIGRATION_MODE_FILE_HANDLES
                      : pb::MIGRATION_MODE_FIND_PATHS);
  SetIdentity(fs_->inodes().Get(kRootNodeId)->identity,
              header.mutable_source_root());
  header.set_writer("vhostmig vhost-user-fs");
  RETURN_IF_ERROR(frames.Write(header));

  GatheredLocations gathered =
      gatherer_ ? gatherer_->Collect() : GatheredLocations{};
  // Copied under the table locks without syscalls; the device is stopped,
  // so the tables and counters agree with each other.
  const std::vector<InodeTable::EntrySnapshot> entries =
      fs_->inodes().Snapshot();
  const auto handles = fs_->handles().Snapshot();
  const uint64_t next_node_id = fs_->inodes().next_node_id();
  const uint64_t next_fh = fs_->handles().next_fh();

  pb::StateChunk chunk;
  auto flush = [&]() -> absl::Status {
    RETURN_IF_ERROR(frames.Write(chunk));
    ++stats_.chunks;
    chunk.Clear();
    return absl::OkStatus();
  };
  for (const InodeTable::EntrySnapshot& e : entries) {
    pb::InodeRecord* r = chunk.add_inodes();
    const Inode& inode = *e.inode;
    auto prepared = gathered.prepared.find(inode.node_id);
    if (!gathered.all_changed && prepared != gathered.prepared.end() &&
        prepared->second.inode == e.inode &&
        !gathered.changed.contains(inode.node_id)) {
      *r = prepared->second.record;
    } else {
      LocationGatherer::Locate(*fs_, mode_, e, r);
      ++stats_.located_during_save;
    }
    if (!r->root() && !r->has_path() && !r->has_file_handle()) {
      ++stats_.unlocated;
    }
    r->set_node_id(inode.node_id);
    r->set_lookups(e.lookups);
    r->set_file_type(inode.type);
    SetIdentity(inode.identity, r->mutable_identity());
    ++stats_.inodes;
    if (chunk.inodes_size() >= static_cast<int>(kRecordsPerChunk)) {
      RETURN_IF_ERROR(flush());
    }
  }
  for (const auto& [fh, file] : handles) {
    pb::HandleRecord* h = chunk.add_handles();
    h->set_fh(fh);
    h->set_node_id(file->node_id);
    h->set_flags(file->flags);
    h->set_is_dir(file->is_dir);
    ++stats_.handles;
    if (chunk.inodes_size() + chunk.handles_size() >=
        static_cast<int>(kRecordsPerChunk)) {
      RETURN_IF_ERROR(flush());
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
