// InodeTable: the FUSE node ids the guest holds, and how the daemon finds
// each file again. This is the state virtio-fs migration serializes.
//
// An Inode is the daemon's handle on one host file: its identity (st_dev,
// st_ino, mount id), its type, and its location: either an O_PATH fd or a
// kernel file handle (--inode-file-handles), never both. Inodes are
// immutable and shared: a request that resolved a node id keeps the Inode
// (and so its fd) alive even if a concurrent FORGET drops the entry.
//
// Invariants (all guarded by the table's mutex):
//  * Node 1 is the shared directory's root. It is always present, holds an
//    O_PATH fd, is never counted and never removed.
//  * Any other entry exists iff lookups > 0 or opens > 0. The guest holds
//    `lookups` references (one per successful LOOKUP, MKNOD, MKDIR, SYMLINK,
//    LINK, CREATE and READDIRPLUS entry; dropped by FORGET/BATCH_FORGET), and
//    the handle table holds `opens` (one per open file or directory handle).
//    The entry dies when both reach zero; its fd closes when the last request
//    using the Inode finishes.
//  * Node ids are never reused during the table's life (next_node_id only
//    grows, also across DESTROY), so a stale id from the guest names nothing
//    rather than another file.
//  * The identity index maps (dev, ino, mount id) to the newest entry with
//    that identity. Two lookups of one file (hard links, different paths)
//    return the same node id. In file-handle mode the handle (which includes
//    the inode generation) must match too: an inode number reused by a new
//    file gets a new node id.
//  * Location (parent node + name) is where the guest last saw the file;
//    it is a hint kept for migration, updated on lookup, create, rename and
//    unlink (parent 0: unknown, e.g. unlinked while open). Renames done on
//    the host behind the daemon's back are not seen; migration verifies
//    identity before trusting a location.
//
//  * Migration (state_writer.h, state_loader.h): on a source, change
//    tracking records which node ids were added, removed, relocated or
//    re-opened since it started, and separately those whose lookup count
//    alone changed, so a save locates only the former again and re-reads
//    the count of the latter. On a
//    destination, a load installs its records whole as a MigratedInodes
//    (migrated_tables.h): flat arrays the table consults on a miss. A
//    record is *promoted* into the hash table as a migrated inode (no fd,
//    no verified handle yet) when a request first names its node id, or by
//    MergeMigrated in the background; its identity enters the identity
//    index in a first background pass, which Ref and FindByIdentity
//    complete themselves if it has not finished, so a LOOKUP of a migrated
//    file gets its migrated node id, and lookup counts stay exact (a
//    promoted entry starts with the migrated count). PassthroughFs re-opens
//    and verifies each migrated inode on first use and swaps the result in
//    with ReplaceInode.
//
// Thread-safe: requests run on several ring threads.
#ifndef VHOSTMIG_FS_DEVICE_INODE_TABLE_H_
#define VHOSTMIG_FS_DEVICE_INODE_TABLE_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "base/unique_fd.h"
#include "fs_device/file_handle.h"

namespace vhostmig::fs {

inline constexpr uint64_t kRootNodeId = 1;  // FUSE_ROOT_ID

struct MigratedInodes;  // migrated_tables.h

struct InodeIdentity {
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t mount_id = 0;

  bool operator==(const InodeIdentity& o) const {
    return dev == o.dev && ino == o.ino && mount_id == o.mount_id;
  }
  template <typename H>
  friend H AbslHashValue(H h, const InodeIdentity& id) {
    return H::combine(std::move(h), id.dev, id.ino, id.mount_id);
  }
};

// How a destination finds a migrated inode again (from its state record).
struct MigratedLocation {
  uint64_t parent = 0;  // 0: no path known
  std::string name;
  std::optional<FileHandle> handle;
  InodeIdentity identity;  // on the source
  // Whether the source's st_dev/mount ids mean the same here (same host or
  // same device numbering); if not, only st_ino and the type are compared.
  bool identity_comparable = false;
};

struct Inode {
  uint64_t node_id = 0;
  InodeIdentity identity;
  mode_t type = 0;   // S_IFMT bits
  UniqueFd path_fd;  // O_PATH|O_NOFOLLOW; invalid when `handle` is set
  std::optional<FileHandle> handle;
  // Set on a destination while the inode has not been re-opened since the
  // migration; path_fd and handle are then unset.
  std::shared_ptr<const MigratedLocation> migrated;
  // Non-zero: a migrated inode that could not be re-opened or verified
  // (--migration-on-error=guest-error). Every use fails with this errno.
  int error = 0;

  bool is_dir() const { return S_ISDIR(type); }
  bool is_regular() const { return S_ISREG(type); }
};

// Where the guest last saw an inode (see the class comment).
struct InodeLocation {
  uint64_t parent = 0;  // 0: unknown
  std::string name;
};

class InodeTable {
 public:
  // `root` must be a directory with a valid path_fd; it becomes node 1.
  explicit InodeTable(Inode root);

  InodeTable(const InodeTable&) = delete;
  InodeTable& operator=(const InodeTable&) = delete;

  // The inode with `node_id`, or nullptr if the guest holds no such id.
  std::shared_ptr<const Inode> Get(uint64_t node_id) const;

  // Takes one lookup reference on the file described by `candidate` (whose
  // node_id is ignored): the existing entry with the same identity, type and
  // handle if there is one (`candidate` is then discarded, closing its fd),
  // otherwise a new entry built from `candidate`. Records `where`.
  std::shared_ptr<const Inode> Ref(Inode candidate, InodeLocation where);

  // Drops `nlookup` lookup references (FORGET); more than held drops all.
  // Unknown ids and the root are ignored, as FORGET has no reply.
  void Forget(uint64_t node_id, uint64_t nlookup);

  // An open handle starts or stops referencing `node_id`. AddOpen fails
  // (false) for an unknown id.
  bool AddOpen(uint64_t node_id);
  void ReleaseOpen(uint64_t node_id);

  // Location bookkeeping for entry operations.
  void SetLocation(uint64_t node_id, InodeLocation where);
  // The live node with this identity, if any (rename/unlink bookkeeping).
  std::optional<uint64_t> FindByIdentity(const InodeIdentity& id) const;

  // Drops every entry but the root (DESTROY, device reset).
  void ClearExceptRoot();

  // Introspection for tests and the future state serializer.
  struct EntryInfo {
    uint64_t lookups = 0;
    uint32_t opens = 0;
    InodeLocation location;
  };
  std::optional<EntryInfo> Info(uint64_t node_id) const;
  size_t size() const;
  uint64_t next_node_id() const;

  // --- Migration ---

  // One entry as a state writer sees it.
  struct EntrySnapshot {
    std::shared_ptr<const Inode> inode;
    uint64_t lookups = 0;
    uint32_t opens = 0;
    InodeLocation location;
  };
  // Every entry, root included, copied under the lock (no syscalls).
  std::vector<EntrySnapshot> Snapshot() const;
  // The entries among `ids` that exist, in the order of `ids`.
  std::vector<EntrySnapshot> SnapshotOf(absl::Span<const uint64_t> ids) const;
  // What a save needs of entries it prepared earlier: per id (same order),
  // the entry's current Inode object (compared by address with the one
  // prepared, which the caller keeps alive; null if the id is gone) and
  // lookup count. One lock acquisition, no copies of names.
  struct EntryState {
    const Inode* inode = nullptr;
    uint64_t lookups = 0;
  };
  void StatesOf(absl::Span<const uint64_t> ids,
                std::vector<EntryState>* out) const;

  // Change tracking for a migration source: between Start and Stop, every
  // node id whose entry is created, removed, relocated or re-opened
  // (ReplaceInode) is recorded as relocated, one whose lookup count alone
  // changed as recounted; TakeChanges returns and clears both. `all` is set
  // when the whole table changed (DESTROY) and every entry must be
  // re-examined.
  struct Changes {
    std::vector<uint64_t> relocated;
    std::vector<uint64_t> recounted;  // not in `relocated`
    bool all = false;
  };
  void StartChangeTracking();
  Changes TakeChanges();
  void StopChangeTracking();

  // Installs a load's records into a table that holds only the root
  // (FailedPrecondition otherwise), in O(1): `records` (record 0 is the
  // root, whose open count it sets) are consulted on a miss and merged
  // later (see the class comment). The loader has checked them: ascending
  // unique node ids, no other root.
  absl::Status InstallMigrated(std::shared_ptr<const MigratedInodes> records,
                               uint64_t next_node_id);
  // Merges up to `max_records` more migrated records into the hash tables
  // (identity index first, then entries), under the lock. Returns true
  // when nothing is left to merge.
  bool MergeMigrated(size_t max_records);
  // Migrated records not promoted into the hash table yet (tests).
  size_t unmerged_migrated() const;
  // Replaces `node_id`'s inode by `replacement` if it still is `expected`;
  // returns the inode the entry holds afterwards (nullptr if forgotten).
  std::shared_ptr<const Inode> ReplaceInode(
      uint64_t node_id, const std::shared_ptr<const Inode>& expected,
      std::shared_ptr<const Inode> replacement);
  // Back to a fresh table: only the root, node ids restarting at 2 (a
  // failed load).
  void ResetToFresh();

 private:
  struct Entry {
    std::shared_ptr<const Inode> inode;
    uint64_t lookups = 0;
    uint32_t opens = 0;
    InodeLocation location;
  };
  // What is left of an installed MigratedInodes.
  struct Overlay {
    std::shared_ptr<const MigratedInodes> records;
    size_t size = 0;                 // records->size()
    std::vector<uint64_t> promoted;  // bit per record: in entries_ (or gone)
    size_t unpromoted = 0;
    size_t indexed = 0;  // records [0, indexed) are in the identity index
    size_t merged = 0;   // records [0, merged) are promoted
    bool is_promoted(size_t r) const {
      return (promoted[r / 64] >> (r % 64)) & 1;
    }
  };
  // Where a batch of promoted records puts its Inode and MigratedLocation
  // objects (one allocation each per batch, not per record).
  struct Slab;

  void MarkChanged(uint64_t node_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkRecounted(uint64_t node_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes the entry if nothing references it any more.
  void MaybeRemove(uint64_t node_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The entry of `node_id`, promoting a migrated record; nullptr if none.
  // The pointer is valid until the next insertion.
  Entry* FindLocked(uint64_t node_id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Entry& PromoteLocked(size_t record, Slab* slab) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Enters migrated records [indexed, limit) into the identity index.
  void IndexLocked(size_t limit) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Completes the identity index (before any identity lookup).
  void IndexAllLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (overlay_) IndexLocked(overlay_->size);
  }
  // Promotes records [merged, limit).
  void PromoteRangeLocked(size_t limit) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PromoteAllLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (overlay_) PromoteRangeLocked(overlay_->size);
  }
  void ClearLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  // Promotion fills these from overlay_ in const methods too (Get, Info,
  // FindByIdentity...): it changes how entries are stored, not what the
  // table holds.
  mutable absl::flat_hash_map<uint64_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
  mutable absl::flat_hash_map<InodeIdentity, uint64_t> by_identity_
      ABSL_GUARDED_BY(mu_);
  mutable std::unique_ptr<Overlay> overlay_ ABSL_GUARDED_BY(mu_);
  uint64_t next_node_id_ ABSL_GUARDED_BY(mu_) = kRootNodeId + 1;
  bool tracking_ ABSL_GUARDED_BY(mu_) = false;
  bool all_changed_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<uint64_t> changed_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> recounted_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_INODE_TABLE_H_
