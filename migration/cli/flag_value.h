// The bench subcommands (bench_datapath.cc, bench_state.cc) read their
// arguments by hand rather than with absl flags: each checks its own values
// with its own messages, prints its own usage and exits with status 2 on a
// bad argument, and keeps names such as --dir, --peers or --daemon out of
// the flag namespace every other subcommand shares. TakeFlagValue is the
// one place both spell out `--name=value` and `--name value`:
//
//   for (int i = 1; i < argc; ++i) {
//     std::string value;
//     if (TakeFlagValue(argc, argv, &i, "--runs", &value)) { ... }
//   }
#ifndef VHOSTMIG_MIGRATION_CLI_FLAG_VALUE_H_
#define VHOSTMIG_MIGRATION_CLI_FLAG_VALUE_H_

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace vhostmig::cli {

// If argv[*i] is `name=value`, or is `name` and an argument follows it (the
// value, which *i then moves onto), stores the value in `*value` and returns
// true; otherwise returns false and changes nothing.
inline bool TakeFlagValue(int argc, char** argv, int* i, absl::string_view name,
                          std::string* value) {
  const absl::string_view arg = argv[*i];
  if (absl::StartsWith(arg, absl::StrCat(name, "="))) {
    *value = std::string(arg.substr(name.size() + 1));
    return true;
  }
  if (arg == name && *i + 1 < argc) {
    *value = argv[++*i];
    return true;
  }
  return false;
}

}  // namespace vhostmig::cli

#endif  // VHOSTMIG_MIGRATION_CLI_FLAG_VALUE_H_
