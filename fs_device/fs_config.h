// FsConfig: how the passthrough file system behaves, as chosen on the daemon's
// command line (virtiofsd-compatible meanings). Plain data, copied into the
// file system at construction and never changed afterwards.
#ifndef VHOSTMIG_FS_DEVICE_FS_CONFIG_H_
#define VHOSTMIG_FS_DEVICE_FS_CONFIG_H_

#include <cstdint>
#include <string>

namespace vhostmig::fs {

// --cache: how long the guest may trust entries and attributes, and whether
// it may keep page cache across opens.
enum class CachePolicy {
  kNever,   // timeouts 0, FOPEN_DIRECT_IO, no READDIRPLUS
  kAuto,    // timeouts 1 s, cache dropped on open when mtime changed
  kAlways,  // timeouts 1 day, FOPEN_KEEP_CACHE
};

// --inode-file-handles: how an inode is found again after lookup.
enum class FileHandleMode {
  kNever,      // keep an O_PATH fd per looked-up inode
  kPrefer,     // file handle where the file system gives one, else O_PATH
  kMandatory,  // file handle or the lookup fails
};

// --migration-mode (virtiofsd's names): how a migration source makes each
// inode findable again for the destination.
enum class MigrationMode {
  kFindPaths,    // parent node + name, verified against the inode's identity
  kFileHandles,  // name_to_handle_at; destination needs CAP_DAC_READ_SEARCH
};

// --migration-on-error: what a destination does with an inode or handle it
// cannot re-open or verify.
enum class MigrationErrorPolicy {
  kAbort,       // the load fails (CHECK_DEVICE_STATE reports it)
  kGuestError,  // just that inode/handle fails with EIO for the guest
};

// --migration-verify: when a migration destination re-opens and verifies
// the inodes and handles it loaded (identity, type, confinement).
enum class MigrationVerify {
  // On first use (default): the load's cost does not grow with the tables;
  // under abort, what the source could not locate still fails the load, a
  // file changed behind the daemons' backs after the source verified it
  // answers EIO (docs/state-format.md).
  kFirstUse,
  // During the load: under abort every failure fails the load, at the price
  // of a stopped phase that grows with the number of inodes (virtiofsd's
  // behaviour).
  kDuringLoad,
};

struct FsConfig {
  std::string shared_dir;
  CachePolicy cache = CachePolicy::kAuto;
  FileHandleMode file_handles = FileHandleMode::kNever;
  bool readonly = false;
  bool xattr = false;
  bool announce_submounts = false;
  // Data transfers of one queue pass go through io_uring when available;
  // false forces preadv/pwritev.
  bool use_io_uring = true;
  MigrationMode migration_mode = MigrationMode::kFindPaths;
  MigrationErrorPolicy migration_on_error = MigrationErrorPolicy::kAbort;
  MigrationVerify migration_verify = MigrationVerify::kFirstUse;
};

// Parses "never" / "auto" / "always" ("none" is virtiofsd's -o alias).
bool ParseCachePolicy(const std::string& text, CachePolicy* out);
// Parses "never" / "prefer" / "mandatory" ("fallback" is an old alias).
bool ParseFileHandleMode(const std::string& text, FileHandleMode* out);
// Parses "find-paths" / "file-handles".
bool ParseMigrationMode(const std::string& text, MigrationMode* out);
// Parses "abort" / "guest-error".
bool ParseMigrationErrorPolicy(const std::string& text,
                               MigrationErrorPolicy* out);
// Parses "first-use" / "load".
bool ParseMigrationVerify(const std::string& text, MigrationVerify* out);

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_FS_CONFIG_H_
