// `vhostmig bench state`: how long a virtio-fs back-end's DEVICE_STATE
// transfer keeps a VM stopped, as a function of the guest's inode table.
//
// For each table size N (--inodes, default 10k,100k,1M) a tree of N entries
// (directories of 1000 files) is created once under --tree-dir (a tmpfs by
// default) and reused by later runs. Per run and back-end, the synthetic
// guest attaches to a source daemon over a real vhost-user socket, looks up
// all N entries (pipelined, as a guest walking a tree would) and opens
// --open-fraction of the files, then the migration runs as QEMU drives it:
//
//   LOG_ALL      SET_LOG_BASE + SET_FEATURES(+LOG_ALL): the daemon gathers
//                locations in the background ("pre-stop" time: until the
//                daemon's CPU goes idle, sampled from /proc/<pid>/stat);
//   stop         SET_VRING_ENABLE(0) + GET_VRING_BASE;
//   stopped      SET_DEVICE_STATE_FD(save) .. read to EOF .. CHECK on the
//                source, then SET_DEVICE_STATE_FD(load) .. write .. CHECK on
//                a destination daemon (already connected, as a destination
//                QEMU is), i.e. save start -> CHECK done on both sides;
//   verify       the destination starts with the source's ring bases and
//                answers GETATTR for a sample of migrated nodes and handles.
//
// Both our vhost-user-fs (--daemon) and virtiofsd 1.13 (--virtiofsd, from
// tools/peers/fetch.sh's peers.env) run the same sequence in the same run,
// both with --migration-mode=find-paths --migration-on-error=abort and
// --inode-file-handles=prefer (an fd per inode would not scale to 1M).
// Reported: medians over --runs of the stream size, the stopped phase (and
// its save and load halves) and the pre-stop gathering, plus the machine's
// load. Needs root (file handles, and raising RLIMIT_NOFILE for the open
// files).
#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/errno_status.h"
#include "base/socket_server_process.h"
#include "base/status_macros.h"
#include "guest/guest_ram.h"
#include "guest/vhost_user_device.h"
#include "guest/vhost_user_transport.h"
#include "guest/virtio_fs_driver.h"
#include "migration/cli/bench_util.h"
#include "migration/cli/flag_value.h"
#include "migration/cli/subcommand.h"
#include "vhost/memory/dirty_log.h"

namespace vhostmig::cli {
namespace {

constexpr uint32_t kFilesPerDir = 1000;
constexpr uint16_t kQueueSize = 1024;
constexpr size_t kDepth = 512;  // requests in flight while populating

struct Options {
  std::vector<uint64_t> inodes = {10000, 100000, 1000000};
  double open_fraction = 0.1;
  int runs = 3;
  bool json = false;
  std::string tree_dir = "/dev/shm/vhostmig-bench-state";
  std::string sock_dir = "/tmp";
  std::string daemon;     // our vhost-user-fs
  std::string virtiofsd;  // virtiofsd 1.13; empty: skip
};

struct Backend {
  std::string name;
  std::string binary;
  std::vector<std::string> extra;
};

struct RunResult {
  uint64_t inodes = 0;  // entries looked up (files + directories)
  uint64_t handles = 0;
  uint64_t stream_bytes = 0;
  double gather_ms = 0;  // LOG_ALL -> daemon idle
  double stop_rings_ms = 0;
  double save_ms = 0;  // SET_DEVICE_STATE_FD(save) -> CHECK
  double load_ms = 0;  // SET_DEVICE_STATE_FD(load) -> CHECK
  double stopped_ms = 0;
  double populate_s = 0;
  uint64_t verified = 0;  // sampled nodes/handles the destination served
};

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

absl::StatusOr<Options> ParseOptions(int argc, char** argv) {
  Options o;
  o.daemon = DefaultDaemon();
  o.virtiofsd = DefaultVirtiofsd();
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    std::string value;
    auto take = [&](absl::string_view name) {
      return TakeFlagValue(argc, argv, &i, name, &value);
    };
    if (arg == "--json") {
      o.json = true;
    } else if (arg == "--no-virtiofsd") {
      o.virtiofsd.clear();
    } else if (take("--inodes")) {
      o.inodes.clear();
      for (absl::string_view part : absl::StrSplit(value, ',')) {
        uint64_t n;
        if (!absl::SimpleAtoi(part, &n) || n < 2) {
          return absl::InvalidArgumentError(
              absl::StrCat("--inodes: '", part, "' is not a count >= 2"));
        }
        o.inodes.push_back(n);
      }
    } else if (take("--open-fraction")) {
      if (!absl::SimpleAtod(value, &o.open_fraction) || o.open_fraction < 0 ||
          o.open_fraction > 1) {
        return absl::InvalidArgumentError("--open-fraction must be 0..1");
      }
    } else if (take("--runs")) {
      if (!absl::SimpleAtoi(value, &o.runs) || o.runs < 1) {
        return absl::InvalidArgumentError("--runs must be >= 1");
      }
    } else if (take("--tree-dir")) {
      o.tree_dir = value;
    } else if (take("--daemon")) {
      o.daemon = value;
    } else if (take("--virtiofsd")) {
      o.virtiofsd = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown argument '", arg,
          "'; usage: vhostmig bench state [--inodes N[,N...]] "
          "[--open-fraction F] [--runs R] [--json] [--tree-dir DIR] "
          "[--daemon PATH] [--virtiofsd PATH | --no-virtiofsd]"));
    }
  }
  RETURN_IF_ERROR(CheckBenchBinaries(o.daemon, o.virtiofsd));
  return o;
}

// The tree for `n` entries: ceil(n / (kFilesPerDir + 1)) directories and
// files to make up n. Created once; a marker says it is complete.
struct Tree {
  std::string dir;
  uint32_t dirs = 0;
  uint64_t files = 0;
  std::string DirName(uint32_t d) const { return absl::StrFormat("d%05u", d); }
  std::string FileName(uint64_t f) const { return absl::StrFormat("f%07u", f); }
  uint32_t DirOf(uint64_t f) const { return f / kFilesPerDir; }
};

absl::StatusOr<Tree> EnsureTree(const std::string& root, uint64_t n) {
  Tree t;
  t.dirs = static_cast<uint32_t>((n + kFilesPerDir) / (kFilesPerDir + 1));
  t.files = n - t.dirs;
  t.dir = absl::StrCat(root, "/n", n);
  const std::string marker = absl::StrCat(root, "/n", n, ".complete");
  if (access(marker.c_str(), F_OK) == 0) return t;
  mkdir(root.c_str(), 0755);
  if (mkdir(t.dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return LastErrnoStatus(absl::StrCat("mkdir ", t.dir));
  }
  std::fprintf(stderr, "creating %llu entries under %s (once)...\n",
               static_cast<unsigned long long>(n), t.dir.c_str());
  for (uint32_t d = 0; d < t.dirs; ++d) {
    const std::string sub = absl::StrCat(t.dir, "/", t.DirName(d));
    if (mkdir(sub.c_str(), 0755) != 0 && errno != EEXIST) {
      return LastErrnoStatus(absl::StrCat("mkdir ", sub));
    }
  }
  for (uint64_t f = 0; f < t.files; ++f) {
    const std::string path =
        absl::StrCat(t.dir, "/", t.DirName(t.DirOf(f)), "/", t.FileName(f));
    const int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return LastErrnoStatus(absl::StrCat("create ", path));
    close(fd);
  }
  std::ofstream(marker) << "ok\n";
  return t;
}

// CPU time (utime + stime, clock ticks) of `pid`.
uint64_t CpuTicks(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string s((std::istreambuf_iterator<char>(in)),
                std::istreambuf_iterator<char>());
  const size_t close_paren = s.rfind(')');
  if (close_paren == std::string::npos) return 0;
  std::vector<std::string> f =
      absl::StrSplit(s.substr(close_paren + 2), ' ', absl::SkipEmpty());
  // Fields after the command: state is f[0]; utime is field 14 -> f[11].
  uint64_t u = 0, k = 0;
  if (f.size() > 12) {
    (void)absl::SimpleAtoi(f[11], &u);
    (void)absl::SimpleAtoi(f[12], &k);
  }
  return u + k;
}

// Waits until `pid` used no CPU for `quiet`; returns when it last did.
absl::Time WaitUntilIdle(pid_t pid, absl::Time since) {
  constexpr absl::Duration kPoll = absl::Milliseconds(20);
  constexpr absl::Duration kQuiet = absl::Milliseconds(300);
  uint64_t last = CpuTicks(pid);
  absl::Time last_change = since;
  const absl::Time deadline = absl::Now() + absl::Minutes(10);
  while (absl::Now() < deadline) {
    absl::SleepFor(kPoll);
    const uint64_t now = CpuTicks(pid);
    if (now != last) {
      last = now;
      last_change = absl::Now();
    } else if (absl::Now() - last_change >= kQuiet) {
      break;
    }
  }
  return last_change;
}

// A guest attached to one daemon.
struct Attached {
  std::unique_ptr<SocketServerProcess> process;
  std::unique_ptr<guest::GuestRam> ram;
  std::unique_ptr<guest::VhostUserTransport> transport;
  std::unique_ptr<guest::VhostUserDevice> device;
  std::unique_ptr<guest::VirtioFsDriver> driver;
  std::vector<vhost::VringLayout> Layouts() const {
    std::vector<vhost::VringLayout> l;
    for (uint32_t q = 0; q < driver->num_queues(); ++q) {
      l.push_back(driver->QueueLayout(q));
    }
    return l;
  }
};

absl::StatusOr<std::unique_ptr<SocketServerProcess>> StartBackend(
    const Backend& b, const std::string& shared, const std::string& socket) {
  std::vector<std::string> argv = {b.binary, "--socket-path=" + socket,
                                   "--shared-dir=" + shared};
  argv.insert(argv.end(), b.extra.begin(), b.extra.end());
  return SocketServerProcess::Start(argv, socket, socket + ".log",
                                    absl::Seconds(20));
}

absl::StatusOr<Attached> Attach(const Backend& b, const std::string& shared,
                                const std::string& socket) {
  Attached a;
  ASSIGN_OR_RETURN(a.process, StartBackend(b, shared, socket));
  guest::GuestRamOptions ram;
  ram.region_sizes = {64ull << 20};
  ASSIGN_OR_RETURN(a.ram, guest::GuestRam::Create(ram));
  ASSIGN_OR_RETURN(a.transport, guest::VhostUserTransport::Create(2));
  guest::VhostUserDeviceOptions dev;
  dev.state_timeout = absl::Minutes(10);
  dev.reply_timeout = absl::Minutes(10);
  ASSIGN_OR_RETURN(a.device, guest::VhostUserDevice::Connect(
                                 socket, a.ram.get(), a.transport.get(), dev));
  guest::VirtioFsDriverOptions d;
  d.queue_size = kQueueSize;
  d.event_idx = a.device->event_idx();
  d.indirect_desc = a.device->indirect_desc();
  d.timeout = absl::Minutes(2);
  ASSIGN_OR_RETURN(a.driver, guest::VirtioFsDriver::Create(
                                 a.ram.get(), a.transport.get(), d));
  RETURN_IF_ERROR(a.device->Configure());
  RETURN_IF_ERROR(a.device->StartRings(a.Layouts()));
  RETURN_IF_ERROR(a.driver->Init().status());
  return a;
}

// Runs `count` requests made by `make(i)` with up to kDepth in flight and
// hands each reply to `done(i, reply)`.
template <typename Make, typename Done>
absl::Status Pipeline(guest::VirtioFsDriver& d, uint64_t count, Make make,
                      Done done) {
  absl::flat_hash_map<uint64_t, uint64_t> index_of;  // request id -> i
  uint64_t next = 0;
  while (next < count || !index_of.empty()) {
    while (next < count && index_of.size() < kDepth) {
      guest::VirtioFsDriver::Request r = make(next);
      absl::StatusOr<uint64_t> id = d.Submit(r);
      if (absl::IsResourceExhausted(id.status())) break;
      if (!id.ok()) return id.status();
      index_of[*id] = next++;
    }
    ASSIGN_OR_RETURN(guest::FuseReply reply, d.WaitAny(1));
    auto it = index_of.find(reply.unique);
    if (it == index_of.end()) {
      return absl::InternalError("reply to an unknown request");
    }
    RETURN_IF_ERROR(done(it->second, reply));
    index_of.erase(it);
  }
  return absl::OkStatus();
}

absl::Status ReplyOk(const guest::FuseReply& r, const char* what) {
  if (r.error != 0) {
    return ErrnoStatus(what, -r.error);
  }
  return absl::OkStatus();
}

struct Populated {
  std::vector<uint64_t> nodes;  // every looked-up node id
  std::vector<std::pair<uint64_t, uint64_t>> handles;  // (node, fh)
};

absl::StatusOr<Populated> Populate(guest::VirtioFsDriver& d, const Tree& t,
                                   double open_fraction) {
  Populated p;
  // Directories under the root.
  std::vector<uint64_t> dir_nodes(t.dirs);
  std::vector<std::string> names(t.dirs);
  for (uint32_t i = 0; i < t.dirs; ++i) names[i] = t.DirName(i) + '\0';
  auto lookup = [&](uint64_t parent, const std::string& name) {
    guest::VirtioFsDriver::Request r;
    r.opcode = FUSE_LOOKUP;
    r.nodeid = parent;
    r.body = {absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(name.data()),
                                  name.size())};
    r.reply_bytes = sizeof(fuse_entry_out);
    return r;
  };
  RETURN_IF_ERROR(Pipeline(
      d, t.dirs, [&](uint64_t i) { return lookup(FUSE_ROOT_ID, names[i]); },
      [&](uint64_t i, const guest::FuseReply& r) -> absl::Status {
        RETURN_IF_ERROR(ReplyOk(r, "LOOKUP dir"));
        fuse_entry_out e;
        std::memcpy(&e, r.payload.data(), sizeof(e));
        dir_nodes[i] = e.nodeid;
        return absl::OkStatus();
      }));
  p.nodes = dir_nodes;
  std::vector<uint64_t> file_nodes(t.files);
  std::string name;
  RETURN_IF_ERROR(Pipeline(
      d, t.files,
      [&](uint64_t f) {
        name = t.FileName(f) + '\0';  // copied into guest memory by Submit
        return lookup(dir_nodes[t.DirOf(f)], name);
      },
      [&](uint64_t f, const guest::FuseReply& r) -> absl::Status {
        RETURN_IF_ERROR(ReplyOk(r, "LOOKUP file"));
        fuse_entry_out e;
        std::memcpy(&e, r.payload.data(), sizeof(e));
        file_nodes[f] = e.nodeid;
        return absl::OkStatus();
      }));
  p.nodes.insert(p.nodes.end(), file_nodes.begin(), file_nodes.end());
  // Open every k-th file so the open ones spread over the tree. An open
  // handle holds an fd in every daemon: stay below the fd limit the
  // daemons inherit (RaiseFdLimit) with a margin for their own fds.
  uint64_t opens =
      static_cast<uint64_t>(open_fraction * static_cast<double>(t.files));
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur > 2000 &&
      opens > lim.rlim_cur - 2000) {
    std::fprintf(stderr,
                 "note: opening %llu files instead of %llu: RLIMIT_NOFILE is "
                 "%llu here (raising it needs CAP_SYS_RESOURCE)\n",
                 static_cast<unsigned long long>(lim.rlim_cur - 2000),
                 static_cast<unsigned long long>(opens),
                 static_cast<unsigned long long>(lim.rlim_cur));
    opens = lim.rlim_cur - 2000;
  }
  const uint64_t stride =
      opens == 0 ? 1 : std::max<uint64_t>(1, t.files / opens);
  fuse_open_in in{};
  in.flags = O_RDONLY;
  p.handles.resize(opens);
  RETURN_IF_ERROR(Pipeline(
      d, opens,
      [&](uint64_t i) {
        guest::VirtioFsDriver::Request r;
        r.opcode = FUSE_OPEN;
        r.nodeid = file_nodes[i * stride];
        r.body = {absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(&in),
                                      sizeof(in))};
        r.reply_bytes = sizeof(fuse_open_out);
        return r;
      },
      [&](uint64_t i, const guest::FuseReply& r) -> absl::Status {
        RETURN_IF_ERROR(ReplyOk(r, "OPEN"));
        fuse_open_out o;
        std::memcpy(&o, r.payload.data(), sizeof(o));
        p.handles[i] = {file_nodes[i * stride], o.fh};
        return absl::OkStatus();
      }));
  return p;
}

absl::StatusOr<RunResult> RunOnce(const Backend& b, const Tree& t,
                                  const Options& o, int run) {
  RunResult result;
  const std::string base =
      absl::StrCat(o.sock_dir, "/vhostmig-bs-", getpid(), "-", run);
  ASSIGN_OR_RETURN(Attached src, Attach(b, t.dir, base + "-src.sock"));
  const absl::Time p0 = absl::Now();
  ASSIGN_OR_RETURN(Populated p, Populate(*src.driver, t, o.open_fraction));
  result.populate_s = absl::ToDoubleSeconds(absl::Now() - p0);
  result.inodes = p.nodes.size();
  result.handles = p.handles.size();

  // The destination is up and connected before the stop, as a destination
  // QEMU is before the source stops.
  ASSIGN_OR_RETURN(std::unique_ptr<SocketServerProcess> dst_process,
                   StartBackend(b, t.dir, base + "-dst.sock"));
  RETURN_IF_ERROR(src.transport->Renew());
  guest::VhostUserDeviceOptions dev;
  dev.state_timeout = absl::Minutes(10);
  dev.reply_timeout = absl::Minutes(10);
  ASSIGN_OR_RETURN(
      std::unique_ptr<guest::VhostUserDevice> dst,
      guest::VhostUserDevice::Connect(dst_process->socket_path(), src.ram.get(),
                                      src.transport.get(), dev));

  // Pre-copy: LOG_ALL, then let the source gather until it idles.
  ASSIGN_OR_RETURN(std::shared_ptr<vhost::DirtyLog> log,
                   vhost::DirtyLog::Create(src.ram->memory().end_gpa()));
  const absl::Time l0 = absl::Now();
  RETURN_IF_ERROR(src.device->StartLogging(log));
  const absl::Time idle = WaitUntilIdle(src.process->pid(), l0);
  result.gather_ms = Ms(idle - l0);

  // Stopped phase.
  const absl::Time s0 = absl::Now();
  ASSIGN_OR_RETURN(auto bases, src.device->StopRings());
  const absl::Time s1 = absl::Now();
  ASSIGN_OR_RETURN(std::string state, src.device->SaveState());
  const absl::Time s2 = absl::Now();
  absl::Status loaded = dst->LoadState(state);
  const absl::Time s3 = absl::Now();
  if (!loaded.ok()) {
    return absl::Status(
        loaded.code(), absl::StrCat(b.name, ": load failed: ", loaded.message(),
                                    "; see ", dst_process->log_path()));
  }
  result.stream_bytes = state.size();
  result.stop_rings_ms = Ms(s1 - s0);
  result.save_ms = Ms(s2 - s1);
  result.load_ms = Ms(s3 - s2);
  result.stopped_ms = Ms(s3 - s1);

  // The destination serves the migrated nodes and handles (a sample).
  RETURN_IF_ERROR(dst->Configure());
  std::vector<uint16_t> b16;
  for (const auto& [q, v] : bases) b16.push_back(v);
  RETURN_IF_ERROR(dst->StartRings(src.Layouts(), b16));
  src.device = std::move(dst);
  const size_t samples = 100;
  for (size_t i = 0; i < samples && !p.nodes.empty(); ++i) {
    const uint64_t node = p.nodes[(i * 7919) % p.nodes.size()];
    RETURN_IF_ERROR(src.driver->Getattr(node).status());
    ++result.verified;
  }
  for (size_t i = 0; i < samples && !p.handles.empty(); ++i) {
    const auto& [node, fh] = p.handles[(i * 7919) % p.handles.size()];
    std::vector<uint8_t> buf(16);
    RETURN_IF_ERROR(
        src.driver->Read(node, fh, 0, absl::MakeSpan(buf)).status());
    ++result.verified;
  }
  return result;
}

void RaiseFdLimit() {
  // Open handles hold real fds in both daemons (100k at 1M inodes); they
  // inherit this limit.
  std::ifstream in("/proc/sys/fs/nr_open");
  rlim_t max = 1 << 20;
  in >> max;
  rlimit lim{max, max};
  if (setrlimit(RLIMIT_NOFILE, &lim) != 0 &&
      getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    lim.rlim_cur = lim.rlim_max;  // at least the hard limit
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

}  // namespace

int RunBenchState(int argc, char** argv) {
  absl::StatusOr<Options> parsed = ParseOptions(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "vhostmig bench state: %s\n",
                 std::string(parsed.status().message()).c_str());
    return 2;
  }
  const Options& o = *parsed;
  if (geteuid() != 0) {
    std::fprintf(stderr, "vhostmig bench state: needs root\n");
    return 2;
  }
  RaiseFdLimit();
  const std::vector<std::string> common = {
      "--cache=auto", "--inode-file-handles=prefer",
      "--migration-mode=find-paths", "--migration-on-error=abort"};
  std::vector<Backend> backends = {{"vhost-user-fs", o.daemon, common}};
  if (!o.virtiofsd.empty()) {
    backends.push_back({"virtiofsd-1.13", o.virtiofsd, common});
  }
  const std::string load_before = LoadAvg();
  std::string json = absl::StrCat(
      "{\"command\": \"vhostmig bench state\", \"nproc\": ",
      std::thread::hardware_concurrency(), ", \"loadavg_before\": \"",
      load_before, "\", \"open_fraction\": ", o.open_fraction,
      ", \"runs\": ", o.runs, ", \"results\": [");
  bool first = true;
  int status = 0;
  if (!o.json) {
    std::printf("%-15s %8s %8s %10s %11s %9s %9s %9s %11s  (medians of %d)\n",
                "back-end", "inodes", "open", "stream B", "stopped ms",
                "min ms", "save ms", "load ms", "pre-stop ms", o.runs);
  }
  for (uint64_t n : o.inodes) {
    absl::StatusOr<Tree> tree = EnsureTree(o.tree_dir, n);
    if (!tree.ok()) {
      std::fprintf(stderr, "vhostmig bench state: %s\n",
                   std::string(tree.status().message()).c_str());
      return 1;
    }
    for (const Backend& b : backends) {
      std::vector<double> stopped, save, load, gather, bytes;
      RunResult last;
      for (int r = 0; r < o.runs; ++r) {
        absl::StatusOr<RunResult> res = RunOnce(b, *tree, o, r);
        if (res.ok()) {
          // Logs stay for a failed run (its message names them).
          const std::string base =
              absl::StrCat(o.sock_dir, "/vhostmig-bs-", getpid(), "-", r);
          for (const char* end : {"-src.sock", "-dst.sock"}) {
            unlink((base + end).c_str());
            unlink((base + end + ".log").c_str());
          }
        }
        if (!res.ok()) {
          std::fprintf(stderr, "vhostmig bench state: %s, %llu inodes: %s\n",
                       b.name.c_str(), static_cast<unsigned long long>(n),
                       std::string(res.status().message()).c_str());
          status = 1;
          break;
        }
        last = *res;
        stopped.push_back(res->stopped_ms);
        save.push_back(res->save_ms);
        load.push_back(res->load_ms);
        gather.push_back(res->gather_ms);
        bytes.push_back(static_cast<double>(res->stream_bytes));
        if (!o.json) {
          std::fprintf(stderr,
                       "  %s n=%llu run %d: stopped %.2f ms (save %.2f, "
                       "load %.2f), %llu B, pre-stop %.0f ms, populate "
                       "%.1f s\n",
                       b.name.c_str(), static_cast<unsigned long long>(n), r,
                       res->stopped_ms, res->save_ms, res->load_ms,
                       static_cast<unsigned long long>(res->stream_bytes),
                       res->gather_ms, res->populate_s);
        }
      }
      if (stopped.empty()) continue;
      if (o.json) {
        auto list = [](const std::vector<double>& v) {
          std::string s = "[";
          for (size_t i = 0; i < v.size(); ++i) {
            absl::StrAppendFormat(&s, "%s%.3f", i ? ", " : "", v[i]);
          }
          return s + "]";
        };
        absl::StrAppend(
            &json, first ? "" : ", ", "{\"backend\": \"", b.name,
            "\", \"inodes\": ", last.inodes, ", \"handles\": ", last.handles,
            ", \"stream_bytes\": ", static_cast<uint64_t>(Median(bytes)),
            absl::StrFormat(
                ", \"stopped_ms\": %.3f, \"stopped_ms_min\": %.3f, "
                "\"save_ms\": %.3f, \"load_ms\": %.3f, \"prestop_ms\": %.1f",
                Median(stopped),
                *std::min_element(stopped.begin(), stopped.end()), Median(save),
                Median(load), Median(gather)),
            ", \"stopped_ms_runs\": ", list(stopped),
            ", \"prestop_ms_runs\": ", list(gather), "}");
        first = false;
      } else {
        std::printf(
            "%-15s %8llu %8llu %10.0f %11.2f %9.2f %9.2f %9.2f %11.0f\n",
            b.name.c_str(), static_cast<unsigned long long>(last.inodes),
            static_cast<unsigned long long>(last.handles), Median(bytes),
            Median(stopped), *std::min_element(stopped.begin(), stopped.end()),
            Median(save), Median(load), Median(gather));
        std::fflush(stdout);
      }
    }
  }
  if (o.json) {
    absl::StrAppend(&json, "], \"loadavg_after\": \"", LoadAvg(), "\"}");
    std::printf("%s\n", json.c_str());
  } else {
    std::printf("load average before: %s, after: %s (%u cpus)\n",
                load_before.c_str(), LoadAvg().c_str(),
                std::thread::hardware_concurrency());
  }
  return status;
}

}  // namespace vhostmig::cli
