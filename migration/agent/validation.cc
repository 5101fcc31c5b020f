#include "migration/agent/validation.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace vhostmig::agent {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

// Printable, quoted and cut, for error messages about hostile input.
std::string Show(absl::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 64)) {
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  if (s.size() > 64) out += "...";
  return out + "\"";
}

}  // namespace

std::string QuoteForMessage(absl::string_view s, size_t max_bytes) {
  std::string out = "\"";
  for (unsigned char c : s.substr(0, max_bytes)) {
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max_bytes) out += "...";
  return out + "\"";
}

absl::Status ValidateName(absl::string_view field, absl::string_view name) {
  if (name.empty()) return Invalid(field, "is required");
  if (name.size() > 63) {
    return Invalid(
        field, absl::StrCat("is ", name.size(), " bytes long (at most 63)"));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) {
      return Invalid(field, absl::StrCat(Show(name),
                                         " is not a name (expected "
                                         "[a-z0-9][a-z0-9._-]{0,62})"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateHexId(absl::string_view field, absl::string_view id) {
  if (id.empty()) return Invalid(field, "is required");
  if (id.size() > 64) {
    return Invalid(
        field, absl::StrCat("is ", id.size(), " characters long (at most 64)"));
  }
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return Invalid(field, absl::StrCat(Show(id),
                                         " is not an id (expected lowercase "
                                         "hex digits)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateAbsolutePath(absl::string_view field,
                                  absl::string_view path, size_t max_len) {
  if (path.empty()) return Invalid(field, "is required");
  if (path.size() > max_len) {
    return Invalid(field, absl::StrCat("is ", path.size(),
                                       " bytes long (at most ", max_len, ")"));
  }
  if (path[0] != '/') {
    return Invalid(field, absl::StrCat(Show(path), " is not absolute"));
  }
  if (path.find('\0') != absl::string_view::npos) {
    return Invalid(field, "contains a NUL byte");
  }
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "." || part == "..") {
      return Invalid(field,
                     absl::StrCat(Show(path), " has a '.' or '..' component"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateAddress(absl::string_view field,
                             absl::string_view address) {
  if (address.empty()) return Invalid(field, "is required");
  if (address.size() > 255) {
    return Invalid(field, absl::StrCat("is ", address.size(),
                                       " bytes long (at most 255)"));
  }
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) {
    return Invalid(field, absl::StrCat(Show(address), " is not HOST:PORT"));
  }
  // Digits only: SimpleAtoi alone would also take a sign and surrounding
  // whitespace (" 80\n"), which then travels into dial errors and logs.
  const absl::string_view digits = address.substr(colon + 1);
  uint32_t port = 0;
  if (digits.empty() || digits.size() > 5 ||
      digits.find_first_not_of("0123456789") != absl::string_view::npos ||
      !absl::SimpleAtoi(digits, &port) || port == 0 || port > 65535) {
    return Invalid(field,
                   absl::StrCat(Show(address), " has no port in 1..65535"));
  }
  for (char c : address.substr(0, colon)) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '-' ||
                    c == ':' || c == '[' || c == ']' || c == '_';
    if (!ok) {
      return Invalid(field, absl::StrCat(Show(address),
                                         " has a character not allowed in a "
                                         "host name"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<guest::SyntheticGuestOptions> GuestOptionsFromSpec(
    v1::GuestSpec* spec) {
  guest::SyntheticGuestOptions options;
  if (spec->region_bytes_size() == 0) {
    for (uint64_t size : options.ram.region_sizes) spec->add_region_bytes(size);
  }
  if (spec->region_bytes_size() > 16) {
    return Invalid("spec.region_bytes", absl::StrCat(spec->region_bytes_size(),
                                                     " regions (at most 16)"));
  }
  uint64_t total = 0;
  options.ram.region_sizes.clear();
  for (uint64_t size : spec->region_bytes()) {
    if (size == 0 || size % 4096 != 0 || size > (1ull << 30)) {
      return Invalid(
          "spec.region_bytes",
          absl::StrCat(size, " is not a multiple of 4096 in 4 KiB..1 GiB"));
    }
    total += size;
    options.ram.region_sizes.push_back(size);
  }
  if (total > (2ull << 30)) {
    return Invalid("spec.region_bytes",
                   absl::StrCat(total, " bytes in all (at most 2 GiB)"));
  }
  if (spec->queue_size() == 0) spec->set_queue_size(options.queue_size);
  const uint32_t q = spec->queue_size();
  if (q < 8 || q > 1024 || (q & (q - 1)) != 0) {
    return Invalid("spec.queue_size",
                   absl::StrCat(q, " is not a power of two in 8..1024"));
  }
  options.queue_size = static_cast<uint16_t>(q);
  if (spec->files() == 0) spec->set_files(options.workload.files);
  if (spec->files() > guest::FsWorkload::kMaxFiles) {
    return Invalid("spec.files",
                   absl::StrCat(spec->files(), " (at most ",
                                guest::FsWorkload::kMaxFiles, ")"));
  }
  options.workload.files = spec->files();
  if (spec->max_blocks() == 0)
    spec->set_max_blocks(options.workload.max_blocks);
  if (spec->max_blocks() > 4096) {
    return Invalid("spec.max_blocks",
                   absl::StrCat(spec->max_blocks(), " (at most 4096)"));
  }
  options.workload.max_blocks = spec->max_blocks();
  if (spec->read_every() == 0)
    spec->set_read_every(options.workload.read_every);
  if (spec->read_every() > 1000) {
    return Invalid("spec.read_every",
                   absl::StrCat(spec->read_every(), " (at most 1000)"));
  }
  options.workload.read_every = spec->read_every();
  if (spec->seed() == 0) spec->set_seed(options.workload.seed);
  options.workload.seed = spec->seed();
  return options;
}

absl::Status ValidateMigrationOptions(const v1::MigrationOptions& options) {
  if (options.downtime_limit_ms() > 600000) {
    return Invalid(
        "options.downtime_limit_ms",
        absl::StrCat(options.downtime_limit_ms(), " (at most 600000)"));
  }
  if (options.max_rounds() > 1000) {
    return Invalid("options.max_rounds",
                   absl::StrCat(options.max_rounds(), " (at most 1000)"));
  }
  const v1::Phase p = options.cancel_at();
  if (!v1::Phase_IsValid(p) ||
      (p != v1::PHASE_UNSPECIFIED && (p < v1::SETUP || p > v1::CHECK))) {
    return Invalid("options.cancel_at",
                   absl::StrCat(static_cast<int>(p),
                                " is not a source phase before HANDOVER"));
  }
  return absl::OkStatus();
}

}  // namespace vhostmig::agent
