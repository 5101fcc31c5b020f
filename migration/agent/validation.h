// Validation of the agent's gRPC requests. Every field a client controls is
// untrusted: names and ids are short and from a small alphabet (they end up
// in file names and logs), paths are absolute and free of "..", addresses
// are host:port, guest shapes are bounded so a request cannot make the agent
// allocate without limit. A failure is InvalidArgument naming the field,
// what was expected and what was found.
//
// Thread-safety: pure functions.
#ifndef VHOSTMIG_MIGRATION_AGENT_VALIDATION_H_
#define VHOSTMIG_MIGRATION_AGENT_VALIDATION_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "guest/synthetic_guest.h"
#include "proto/agent.pb.h"

namespace vhostmig::agent {

// `s` in double quotes for an error message or a log line: control bytes
// (which could rewrite an operator's terminal or forge log lines) and '"'
// and '\\' escaped as \xNN, other bytes (UTF-8 included) as they are;
// cut after `max_bytes` with "...".
std::string QuoteForMessage(absl::string_view s, size_t max_bytes = 256);

// Device names: [a-z0-9][a-z0-9._-]{0,62}.
absl::Status ValidateName(absl::string_view field, absl::string_view name);
// Migration ids and tokens: 1..64 lowercase hex digits.
absl::Status ValidateHexId(absl::string_view field, absl::string_view id);
// An absolute path of at most 4095 bytes without "." or ".." components
// or NUL; `max_len` lower for unix socket paths (108).
absl::Status ValidateAbsolutePath(absl::string_view field,
                                  absl::string_view path,
                                  size_t max_len = 4095);
// host:port or [v6]:port, port 1..65535 in decimal digits, at most 255
// bytes.
absl::Status ValidateAddress(absl::string_view field,
                             absl::string_view address);

// Bounds and defaults: fills unset fields of `spec` with the synthetic
// guest's defaults, checks the rest, and returns the guest options.
absl::StatusOr<guest::SyntheticGuestOptions> GuestOptionsFromSpec(
    v1::GuestSpec* spec);

absl::Status ValidateMigrationOptions(const v1::MigrationOptions& options);

}  // namespace vhostmig::agent

#endif  // VHOSTMIG_MIGRATION_AGENT_VALIDATION_H_
