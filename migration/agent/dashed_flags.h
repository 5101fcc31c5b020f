// Command lines spell options with dashes (--state-dir, --tls-cert,
// --downtime-limit), as virtiofsd and most tools do; absl flag names use
// underscores. ParseDashedCommandLine rewrites "--a-b[=v]" to "--a_b[=v]"
// (the name only, never the value) and parses with absl, so both spellings
// work. Same rule as fs_device/main.cc's daemon flags.
//
// Thread-safety: call once, from main, before threads start.
#ifndef VHOSTMIG_MIGRATION_AGENT_DASHED_FLAGS_H_
#define VHOSTMIG_MIGRATION_AGENT_DASHED_FLAGS_H_

#include <algorithm>
#include <string>
#include <vector>

#include "absl/flags/parse.h"

namespace vhostmig::agent {

// Returns the positional arguments, like absl::ParseCommandLine.
inline std::vector<char*> ParseDashedCommandLine(int argc, char** argv) {
  // Kept alive for the process: absl keeps pointers into argv.
  static std::vector<std::string>* storage = new std::vector<std::string>();
  storage->assign(argv, argv + argc);
  for (size_t i = 1; i < storage->size(); ++i) {
    std::string& a = (*storage)[i];
    if (a == "--") break;
    if (a.size() < 3 || a[0] != '-' || a[1] != '-') continue;
    const size_t end = std::min(a.find('='), a.size());
    for (size_t k = 2; k < end; ++k) {
      if (a[k] == '-') a[k] = '_';
    }
  }
  static std::vector<char*>* pointers = new std::vector<char*>();
  pointers->clear();
  for (std::string& a : *storage) pointers->push_back(a.data());
  return absl::ParseCommandLine(static_cast<int>(pointers->size()),
                                pointers->data());
}

}  // namespace vhostmig::agent

#endif  // VHOSTMIG_MIGRATION_AGENT_DASHED_FLAGS_H_
