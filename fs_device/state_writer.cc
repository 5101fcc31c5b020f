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

// Appends one prepared record to a chunk's columns.
void Add(const PreparedLocation& p, uint64_t lookups,
         InodeColumnEncoder* encoder) {
  const Inode& inode = *p.inode;
  encoder->Add(p.node_id, lookups, inode.type, inode.identity, p.root,
               p.has_path, p.parent, p.name, p.handle ? &*p.handle : nullptr);
}

bool Unlocated(const PreparedLocation& p) {
  return !p.root && !p.has_path && !p.handle;
}

}  // namespace

absl::Status StateWriter::EncodePrepared(const InodeIdentity& source_root,
                                         PreparedSet* set) {
  set->chunks.clear();
  const size_t n = set->locations.size();
  pb::StateChunk chunk;
  for (size_t begin = 0; begin < n;) {
    const size_t end = std::min(n, begin + kRecordsPerChunk);
    chunk.Clear();
    InodeColumnEncoder encoder(source_root, chunk.mutable_inode_columns());
    PreparedChunk& c = set->chunks.emplace_back();
    for (size_t i = begin; i < end; ++i) {
      const PreparedLocation& p = set->locations[i];
      if (Unlocated(p)) ++c.unlocated;
      Add(p, p.lookups, &encoder);
    }
    RETURN_IF_ERROR(FrameWriter::Encode(chunk, &c.frame));
    c.end = end;
    begin = end;
  }
  return absl::OkStatus();
}

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
  auto flush = [&]() -> absl::Status {
    RETURN_IF_ERROR(frames.Write(chunk));
    ++stats_.chunks;
    chunk.Clear();
    inodes.reset();
    return absl::OkStatus();
  };
  auto add = [&](const PreparedLocation& p, uint64_t lookups) -> absl::Status {
    if (!inodes) inodes.emplace(source_root, chunk.mutable_inode_columns());
    if (Unlocated(p)) ++stats_.unlocated;
    Add(p, lookups, &*inodes);
    ++stats_.inodes;
    if (inodes->records() >= kRecordsPerChunk) return flush();
    return absl::OkStatus();
  };
  // Ends the chunk being built (differences restart with each chunk, and a
  // prepared chunk must not be appended to it).
  auto finish = [&]() -> absl::Status {
    if (inodes && inodes->records() > 0) return flush();
    return absl::OkStatus();
  };
  // Locates the live entries among `ids` (ascending) now, syscalls and all.
  auto locate = [&](const std::vector<uint64_t>& ids,
                    std::vector<PreparedLocation>* out) {
    for (const InodeTable::EntrySnapshot& e : fs_->inodes().SnapshotOf(ids)) {
      LocationGatherer::Locate(*fs_, mode_, e, &out->emplace_back());
      ++stats_.located_during_save;
    }
  };

  if (gathered.all_changed) {
    // Nothing prepared (no LOG_ALL, or the whole table changed): locate
    // everything while stopped.
    std::vector<uint64_t> all;
    for (const auto& e : fs_->inodes().Snapshot()) {
      all.push_back(e.inode->node_id);
    }
    std::sort(all.begin(), all.end());
    std::vector<PreparedLocation> located;
    locate(all, &located);
    for (const PreparedLocation& p : located) {
      RETURN_IF_ERROR(add(p, p.lookups));
    }
    RETURN_IF_ERROR(finish());
  } else {
    const PreparedSet& set = *gathered.prepared;
    using Ids = std::vector<uint64_t>::const_iterator;
    // Re-encodes prepared records [begin, end) with the changes among them
    // (changed / recounted ids, ascending, none below the first record's
    // chunk), and the changed ids that follow the last prepared record.
    auto rewrite = [&](size_t begin, size_t end, Ids changed, Ids changed_end,
                       Ids recounted, Ids recounted_end) -> absl::Status {
      const std::vector<uint64_t> relocated_ids(changed, changed_end);
      const std::vector<uint64_t> recounted_ids(recounted, recounted_end);
      std::vector<InodeTable::EntryState> states;
      fs_->inodes().StatesOf(recounted_ids, &states);
      std::vector<uint64_t> relocate = relocated_ids;
      std::vector<std::pair<const PreparedLocation*, uint64_t>> records;
      size_t r = 0;
      for (size_t i = begin; i < end; ++i) {
        const PreparedLocation& p = set.locations[i];
        if (std::binary_search(relocated_ids.begin(), relocated_ids.end(),
                               p.node_id)) {
          continue;  // located anew below, if it still exists
        }
        uint64_t lookups = p.lookups;
        while (r < recounted_ids.size() && recounted_ids[r] < p.node_id) ++r;
        if (r < recounted_ids.size() && recounted_ids[r] == p.node_id) {
          const InodeTable::EntryState& now = states[r];
          if (now.inode == nullptr) continue;  // forgotten meanwhile
          if (now.inode != p.inode.get()) {    // re-opened since
            relocate.push_back(p.node_id);
            continue;
          }
          lookups = now.lookups;
        }
        records.emplace_back(&p, lookups);
      }
      std::sort(relocate.begin(), relocate.end());
      std::vector<PreparedLocation> located;
      locate(relocate, &located);
      for (const PreparedLocation& p : located) {
        records.emplace_back(&p, p.lookups);
      }
      std::sort(records.begin(), records.end(),
                [](const auto& a, const auto& b) {
                  return a.first->node_id < b.first->node_id;
                });
      for (const auto& [p, lookups] : records) {
        RETURN_IF_ERROR(add(*p, lookups));
      }
      return finish();
    };
    Ids changed = gathered.changed.begin();
    Ids recounted = gathered.recounted.begin();
    size_t begin = 0;
    for (const PreparedChunk& c : set.chunks) {
      // The chunk stands for the ids above the previous chunk's last, up to
      // its own last.
      const uint64_t last = set.ids[c.end - 1];
      const Ids changed_end =
          std::upper_bound(changed, gathered.changed.cend(), last);
      const Ids recounted_end =
          std::upper_bound(recounted, gathered.recounted.cend(), last);
      if (changed == changed_end && recounted == recounted_end) {
        // Unchanged since the pass: the whole cost of the stopped phase for
        // these records is copying the frame.
        RETURN_IF_ERROR(frames.WriteEncoded(c.frame));
        ++stats_.chunks;
        stats_.inodes += c.end - begin;
        stats_.unlocated += c.unlocated;
      } else {
        RETURN_IF_ERROR(rewrite(begin, c.end, changed, changed_end, recounted,
                                recounted_end));
      }
      begin = c.end;
      changed = changed_end;
      recounted = recounted_end;
    }
    // Entries created since the pass's snapshot (their ids are above it;
    // any other id past it is located too, to be safe).
    std::vector<uint64_t> after(changed, gathered.changed.cend());
    after.insert(after.end(), recounted, gathered.recounted.cend());
    std::sort(after.begin(), after.end());
    RETURN_IF_ERROR(rewrite(begin, begin, after.cbegin(), after.cend(),
                            after.cend(), after.cend()));
  }

  auto handles = fs_->handles().Snapshot();
  std::sort(handles.begin(), handles.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
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
