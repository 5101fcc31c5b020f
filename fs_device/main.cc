// vhost-user-fs: the virtio-fs passthrough back-end daemon, a drop-in for
// virtiofsd where the options mean the same (see --help).
//
//   vhost-user-fs --socket-path=/run/fs.sock --shared-dir=/srv/share
//       --cache=auto --inode-file-handles=prefer
//
// Like virtiofsd it serves one front-end connection and exits when that
// front-end disconnects.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "fs_device/fs_config.h"
#include "fs_device/virtio_fs_device.h"
#include "vhost/backend/server.h"

ABSL_FLAG(std::string, socket_path, "",
          "vhost-user socket path to listen on (--socket-path)");
ABSL_FLAG(std::string, socket, "", "deprecated alias of --socket-path");
ABSL_FLAG(int, fd, -1,
          "inherited vhost-user socket fd: a listening socket (one connection "
          "is accepted) or an already connected one");
ABSL_FLAG(std::string, shared_dir, "", "shared directory path");
ABSL_FLAG(std::string, tag, "",
          "virtio-fs tag advertised in the config space (at most 36 bytes; "
          "the front-end may ignore it and use its own)");
ABSL_FLAG(std::string, cache, "auto",
          "caching policy: auto (1 s timeouts), always (1 day, keep page "
          "cache), never (no timeouts, direct I/O, no READDIRPLUS)");
ABSL_FLAG(bool, readonly, false, "refuse every modification with EROFS");
ABSL_FLAG(int, thread_pool_size, 0,
          "accepted for virtiofsd compatibility and otherwise ignored: each "
          "virtqueue is served by its own thread, and the READ/WRITE "
          "requests of one queue pass are submitted together through that "
          "thread's io_uring, which takes the place of a blocking-I/O pool. "
          "Use --num-request-queues for more parallel queues");
ABSL_FLAG(std::string, inode_file_handles, "never",
          "reference inodes by file handles instead of O_PATH fds: never, "
          "prefer (fall back to fds where unsupported) or mandatory. Needs "
          "CAP_DAC_READ_SEARCH; keeps the daemon's fd count independent of "
          "the number of looked-up inodes");
ABSL_FLAG(std::string, migration_mode, "find-paths",
          "how a migration source lets the destination find each inode "
          "again: find-paths (parent directory + name, verified against the "
          "inode's identity) or file-handles (name_to_handle_at; the "
          "destination needs CAP_DAC_READ_SEARCH; unlinked-but-open files "
          "migrate too). Locations are gathered in the background from the "
          "start of dirty logging");
ABSL_FLAG(std::string, migration_on_error, "abort",
          "what a migration destination does with an inode or handle it "
          "cannot re-open or verify (replaced, renamed away, unlinked): "
          "abort (the load fails, so the source resumes) or guest-error "
          "(just the failing one returns EIO); see --migration-verify");
ABSL_FLAG(std::string, migration_verify, "first-use",
          "when a migration destination re-opens and verifies what it "
          "loaded: first-use (the stopped phase does not grow with the "
          "tables; under abort, inodes the source could not locate fail the "
          "load, files changed behind the daemons after the source verified "
          "them return EIO) or load (every entry during the load, so abort "
          "catches everything; the stopped phase grows with the inodes)");
ABSL_FLAG(std::string, log_level, "info",
          "log level: error, warn, info, debug, trace or off");
ABSL_FLAG(bool, print_capabilities, false,
          "print the vhost-user.json capabilities and exit");
ABSL_FLAG(std::string, sandbox, "none",
          "sandbox mode; only 'none' is supported (run the daemon in a "
          "container or mount namespace of your own if you need one)");
ABSL_FLAG(std::string, seccomp, "none", "accepted for compatibility");
ABSL_FLAG(bool, xattr, false, "enable extended attributes");
ABSL_FLAG(bool, announce_submounts, false,
          "tell the guest which directories are mount points");
ABSL_FLAG(bool, no_announce_submounts, false,
          "do not tell the guest which directories are mount points");
ABSL_FLAG(uint32_t, num_request_queues, 1,
          "number of virtio-fs request queues (the high-priority queue "
          "comes on top)");
ABSL_FLAG(bool, io_uring, true,
          "use io_uring for the data path (falls back to preadv/pwritev "
          "when the kernel refuses it)");
ABSL_FLAG(std::vector<std::string>, o, {},
          "virtiofsd legacy options, comma separated: source=PATH, "
          "cache=auto|always|none, xattr, no_xattr, announce_submounts, "
          "log_level=LEVEL, sandbox=none, readonly (deprecated form)");
ABSL_FLAG(bool, f, false, "no effect (virtiofsd compatibility)");
ABSL_FLAG(bool, d, false, "same as --log-level=debug");

namespace vhostmig::fs {
namespace {

constexpr char kUsage[] =
    "virtio-fs vhost-user back-end (passthrough of a host directory).\n"
    "Usage: vhost-user-fs --socket-path=PATH --shared-dir=DIR [options]\n";

enum class LogLevel { kOff, kError, kWarn, kInfo, kDebug };
LogLevel g_log_level = LogLevel::kInfo;

bool ParseLogLevel(const std::string& s, LogLevel* out) {
  if (s == "off")
    *out = LogLevel::kOff;
  else if (s == "error" || s == "err")
    *out = LogLevel::kError;
  else if (s == "warn")
    *out = LogLevel::kWarn;
  else if (s == "info")
    *out = LogLevel::kInfo;
  else if (s == "debug" || s == "trace")
    *out = LogLevel::kDebug;
  else
    return false;
  return true;
}

void Log(LogLevel level, const std::string& message) {
  if (level > g_log_level || level == LogLevel::kOff) return;
  std::fprintf(stderr, "vhost-user-fs: %s\n", message.c_str());
}

// The same JSON virtiofsd prints (vhost-user.rst "Backend program
// conventions"): this daemon supports pre-copy migration of its device
// state as a peer and takes separate options.
void PrintCapabilities() {
  std::printf(
      "{\n"
      "  \"type\": \"fs\",\n"
      "  \"features\": [\n"
      "    \"migrate-precopy\",\n"
      "    \"separate-options\"\n"
      "  ]\n"
      "}\n");
}

struct Settings {
  std::string socket_path;
  int fd = -1;
  FsConfig config;
  VirtioFsOptions options;
};

// Applies one "-o" legacy option; false if unknown or invalid.
bool ApplyCompatOption(const std::string& option, Settings* s,
                       std::string* error) {
  std::pair<std::string, std::string> kv =
      absl::StrSplit(option, absl::MaxSplits('=', 1));
  const std::string& key = kv.first;
  const std::string& value = kv.second;
  if (key == "source") {
    s->config.shared_dir = value;
  } else if (key == "cache") {
    if (!ParseCachePolicy(value, &s->config.cache)) {
      *error = absl::StrCat("invalid -o cache=", value);
      return false;
    }
  } else if (key == "log_level" || key == "loglevel") {
    if (!ParseLogLevel(value, &g_log_level)) {
      *error = absl::StrCat("invalid -o ", key, "=", value);
      return false;
    }
  } else if (key == "sandbox") {
    if (value != "none") {
      *error = absl::StrCat("-o sandbox=", value, " is not supported");
      return false;
    }
  } else if (key == "xattr") {
    s->config.xattr = true;
  } else if (key == "no_xattr") {
    s->config.xattr = false;
  } else if (key == "announce_submounts") {
    s->config.announce_submounts = true;
  } else if (key == "readonly") {
    s->config.readonly = true;
  } else if (key == "no_posix_lock" || key == "no_flock" ||
             key == "readdirplus" || key == "no_writeback") {
    // What this daemon does anyway.
  } else {
    *error = absl::StrCat("unsupported -o option '", option, "'");
    return false;
  }
  return true;
}

absl::Status ParseSettings(Settings* s) {
  if (!ParseLogLevel(absl::GetFlag(FLAGS_log_level), &g_log_level)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid --log-level=", absl::GetFlag(FLAGS_log_level)));
  }
  if (absl::GetFlag(FLAGS_d)) g_log_level = LogLevel::kDebug;
  s->socket_path = absl::GetFlag(FLAGS_socket_path);
  if (s->socket_path.empty()) s->socket_path = absl::GetFlag(FLAGS_socket);
  s->fd = absl::GetFlag(FLAGS_fd);
  s->config.shared_dir = absl::GetFlag(FLAGS_shared_dir);
  if (!ParseCachePolicy(absl::GetFlag(FLAGS_cache), &s->config.cache)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid --cache=", absl::GetFlag(FLAGS_cache),
                     " (expected auto, always or never)"));
  }
  if (!ParseFileHandleMode(absl::GetFlag(FLAGS_inode_file_handles),
                           &s->config.file_handles)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid --inode-file-handles=",
                     absl::GetFlag(FLAGS_inode_file_handles),
                     " (expected never, prefer or mandatory)"));
  }
  if (!ParseMigrationMode(absl::GetFlag(FLAGS_migration_mode),
                          &s->config.migration_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid --migration-mode=", absl::GetFlag(FLAGS_migration_mode),
        " (expected find-paths or file-handles)"));
  }
  if (!ParseMigrationErrorPolicy(absl::GetFlag(FLAGS_migration_on_error),
                                 &s->config.migration_on_error)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid --migration-on-error=",
                     absl::GetFlag(FLAGS_migration_on_error),
                     " (expected abort or guest-error)"));
  }
  if (!ParseMigrationVerify(absl::GetFlag(FLAGS_migration_verify),
                            &s->config.migration_verify)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid --migration-verify=", absl::GetFlag(FLAGS_migration_verify),
        " (expected first-use or load)"));
  }
  s->config.readonly = absl::GetFlag(FLAGS_readonly);
  s->config.xattr = absl::GetFlag(FLAGS_xattr);
  s->config.announce_submounts = absl::GetFlag(FLAGS_announce_submounts) &&
                                 !absl::GetFlag(FLAGS_no_announce_submounts);
  s->config.use_io_uring = absl::GetFlag(FLAGS_io_uring);
  if (absl::GetFlag(FLAGS_sandbox) != "none") {
    return absl::InvalidArgumentError(
        absl::StrCat("--sandbox=", absl::GetFlag(FLAGS_sandbox),
                     " is not supported; use --sandbox=none"));
  }
  for (const std::string& line : absl::GetFlag(FLAGS_o)) {
    for (absl::string_view option : absl::StrSplit(line, ',')) {
      if (option.empty()) continue;
      std::string error;
      if (!ApplyCompatOption(std::string(option), s, &error)) {
        return absl::InvalidArgumentError(error);
      }
    }
  }
  const std::string tag = absl::GetFlag(FLAGS_tag);
  if (!tag.empty()) s->options.tag = tag;
  s->options.num_request_queues = absl::GetFlag(FLAGS_num_request_queues);

  if (s->config.shared_dir.empty()) {
    return absl::InvalidArgumentError(
        "missing --shared-dir (or -o source=PATH)");
  }
  if (s->socket_path.empty() == (s->fd < 0)) {
    return absl::InvalidArgumentError(
        "exactly one of --socket-path and --fd is required");
  }
  return absl::OkStatus();
}

// virtiofsd raises its fd limit as far as allowed: without file handles
// every looked-up inode holds an fd.
void RaiseFdLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
      Log(LogLevel::kWarn, "could not raise RLIMIT_NOFILE");
    }
  }
}

absl::Status ServeInheritedFd(vhost::BackendServer& server, int fd) {
  int listening = 0;
  socklen_t len = sizeof(listening);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--fd=", fd, " is not a socket"));
  }
  UniqueFd listener;
  UniqueFd connection;
  if (listening) {
    listener.reset(fd);
    int c;
    do {
      c = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    } while (c < 0 && errno == EINTR);
    if (c < 0) return absl::InternalError("accept on --fd failed");
    connection.reset(c);
  } else {
    connection.reset(fd);
  }
  return server.ServeConnection(std::move(connection));
}

// virtiofsd spells its options with dashes (--shared-dir), absl flags with
// underscores: rewrite "--a-b[=v]" to "--a_b[=v]" before parsing.
std::vector<std::string> NormalizeArgs(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& a = args[i];
    if (a == "--") break;
    if (a.size() < 3 || a[0] != '-' || a[1] != '-') continue;
    const size_t end = std::min(a.find('='), a.size());
    for (size_t k = 2; k < end; ++k) {
      if (a[k] == '-') a[k] = '_';
    }
  }
  return args;
}

int Main(int argc, char** argv) {
  // Debian's abseil is built with deadlock detection on, which makes every
  // Mutex acquisition update a global lock graph; the tests keep it, the
  // daemon's request path should not pay for it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::SetProgramUsageMessage(kUsage);
  absl::FlagsUsageConfig usage;
  // --help lists this daemon's flags (absl's default matches the file name
  // against the binary name, which differs here).
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "fs_device/");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  std::vector<std::string> args = NormalizeArgs(argc, argv);
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  absl::ParseCommandLine(static_cast<int>(arg_ptrs.size()), arg_ptrs.data());
  if (absl::GetFlag(FLAGS_print_capabilities)) {
    PrintCapabilities();
    return 0;
  }
  Settings settings;
  if (absl::Status s = ParseSettings(&settings); !s.ok()) {
    std::fprintf(stderr, "vhost-user-fs: %s\n",
                 std::string(s.message()).c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_thread_pool_size) != 0) {
    Log(LogLevel::kDebug,
        "--thread-pool-size ignored: one thread per virtqueue, io_uring for "
        "data");
  }
  RaiseFdLimit();

  auto device = VirtioFsDevice::Create(settings.config, settings.options);
  if (!device.ok()) {
    std::fprintf(stderr, "vhost-user-fs: %s\n",
                 std::string(device.status().message()).c_str());
    return 1;
  }

  // SIGPIPE: a device-state pipe whose reader vanished must not kill us.
  // SIGTERM/SIGINT/SIGHUP: leave the serve loop and exit cleanly.
  signal(SIGPIPE, SIG_IGN);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  vhost::BackendOptions backend_options;
  backend_options.exit_on_disconnect = true;  // as virtiofsd
  backend_options.log = [](const std::string& line) {
    Log(LogLevel::kInfo, line);
  };
  vhost::BackendServer server(device->get(), backend_options);
  std::thread signal_thread([&server, stop_signals] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    if (sig != 0) server.Shutdown();
  });
  // Joined before the server goes away, on every return path: a detached
  // thread woken by a stop signal while we exit (our front-end left, and
  // whoever started us sends SIGTERM) wrote to the server's eventfd as the
  // destructor closed it, or used the server after it was gone (TSan
  // report in //tests/reliability:agent_kill_test). Waking it with a
  // signal of its own set is harmless if a real one came first.
  absl::Cleanup join_signal_thread = [&signal_thread] {
    pthread_kill(signal_thread.native_handle(), SIGTERM);
    signal_thread.join();
  };

  absl::Status status;
  if (settings.fd >= 0) {
    Log(LogLevel::kInfo, absl::StrCat("serving inherited fd ", settings.fd));
    status = ServeInheritedFd(server, settings.fd);
  } else {
    status = server.Listen(settings.socket_path);
    if (status.ok()) {
      Log(LogLevel::kInfo,
          absl::StrCat("waiting for vhost-user socket connection on ",
                       settings.socket_path));
      status = server.Serve();
    }
  }
  if (!status.ok()) {
    Log(LogLevel::kError, std::string(status.message()));
    return 1;
  }
  Log(LogLevel::kInfo, "done, exiting");
  return 0;
}

}  // namespace
}  // namespace vhostmig::fs

int main(int argc, char** argv) { return vhostmig::fs::Main(argc, argv); }
