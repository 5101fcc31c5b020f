#include "fs_device/fs_config.h"

namespace vhostmig::fs {

bool ParseCachePolicy(const std::string& text, CachePolicy* out) {
  if (text == "never" || text == "none") {
    *out = CachePolicy::kNever;
  } else if (text == "auto") {
    *out = CachePolicy::kAuto;
  } else if (text == "always") {
    *out = CachePolicy::kAlways;
  } else {
    return false;
  }
  return true;
}

bool ParseFileHandleMode(const std::string& text, FileHandleMode* out) {
  if (text == "never") {
    *out = FileHandleMode::kNever;
  } else if (text == "prefer" || text == "fallback") {
    *out = FileHandleMode::kPrefer;
  } else if (text == "mandatory") {
    *out = FileHandleMode::kMandatory;
  } else {
    return false;
  }
  return true;
}

bool ParseMigrationMode(const std::string& text, MigrationMode* out) {
  if (text == "find-paths") {
    *out = MigrationMode::kFindPaths;
  } else if (text == "file-handles") {
    *out = MigrationMode::kFileHandles;
  } else {
    return false;
  }
  return true;
}

bool ParseMigrationErrorPolicy(const std::string& text,
                               MigrationErrorPolicy* out) {
  if (text == "abort") {
    *out = MigrationErrorPolicy::kAbort;
  } else if (text == "guest-error") {
    *out = MigrationErrorPolicy::kGuestError;
  } else {
    return false;
  }
  return true;
}

bool ParseMigrationVerify(const std::string& text, MigrationVerify* out) {
  if (text == "first-use") {
    *out = MigrationVerify::kFirstUse;
  } else if (text == "load") {
    *out = MigrationVerify::kDuringLoad;
  } else {
    return false;
  }
  return true;
}

}  // namespace vhostmig::fs
