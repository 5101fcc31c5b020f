#include "bench/datapath_bench.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/errno_status.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "bench/datapath_client.h"

namespace vhostmig::bench {
namespace {

constexpr char kFileName[] = "bench.dat";
constexpr uint32_t kSmallBlock = 4096;
constexpr uint32_t kLargeBlock = 1 << 20;

enum class Kind { kRandom, kSequential, kMetadata };

struct RowSpec {
  const char* key;
  const char* label;
  const char* unit;
  Kind kind;
  bool write;
  uint32_t depth;
};

constexpr RowSpec kRows[] = {
    {"randread-4k-qd1", "4 KiB random read, depth 1", "MiB/s", Kind::kRandom,
     false, 1},
    {"randread-4k-qd32", "4 KiB random read, depth 32", "MiB/s", Kind::kRandom,
     false, 32},
    {"randwrite-4k-qd1", "4 KiB random write, depth 1", "MiB/s", Kind::kRandom,
     true, 1},
    {"randwrite-4k-qd32", "4 KiB random write, depth 32", "MiB/s",
     Kind::kRandom, true, 32},
    {"seqread-1m", "1 MiB sequential read", "MiB/s", Kind::kSequential, false,
     1},
    {"seqwrite-1m", "1 MiB sequential write", "MiB/s", Kind::kSequential, true,
     1},
    {"metadata", "create + getattr + unlink", "ops/s", Kind::kMetadata, false,
     1},
};

double MedianOf(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

bool Wanted(const std::vector<std::string>& filter, const std::string& key) {
  return filter.empty() ||
         std::find(filter.begin(), filter.end(), key) != filter.end();
}

std::string ReadLoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return absl::StrCat(a, " ", b, " ", c);
}

std::string FileSystemType(const std::string& path) {
  struct statfs st {};
  if (statfs(path.c_str(), &st) != 0) return "unknown";
  switch (static_cast<unsigned long>(st.f_type)) {
    case TMPFS_MAGIC:
      return "tmpfs";
    case EXT4_SUPER_MAGIC:
      return "ext4";
    case XFS_SUPER_MAGIC:
      return "xfs";
    case BTRFS_SUPER_MAGIC:
      return "btrfs";
    case OVERLAYFS_SUPER_MAGIC:
      return "overlayfs";
  }
  return absl::StrFormat("0x%x", static_cast<unsigned long>(st.f_type));
}

// The test file: reproducible pseudo-random bytes, written and synced once
// so that every peer reads the same data from the page cache and no
// writeback of it runs during the measurements.
absl::Status CreateTestFile(const std::string& path, uint64_t bytes) {
  UniqueFd fd(
      open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return LastErrnoStatus("create " + path);
  std::mt19937_64 rng(42);
  std::vector<uint64_t> chunk((1 << 20) / sizeof(uint64_t));
  for (uint64_t done = 0; done < bytes;) {
    for (uint64_t& v : chunk) v = rng();
    const size_t n = std::min<uint64_t>(bytes - done, chunk.size() * 8);
    if (pwrite(fd.get(), chunk.data(), n, static_cast<off_t>(done)) !=
        static_cast<ssize_t>(n)) {
      return LastErrnoStatus("write " + path);
    }
    done += n;
  }
  if (fsync(fd.get()) != 0) return LastErrnoStatus("fsync " + path);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadHostBytes(const std::string& path,
                                          uint64_t offset, size_t len) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return LastErrnoStatus("open " + path);
  std::string data(len, '\0');
  if (pread(fd.get(), data.data(), len, static_cast<off_t>(offset)) !=
      static_cast<ssize_t>(len)) {
    return LastErrnoStatus("read " + path);
  }
  return data;
}

std::string LogTail(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  const size_t from = lines.size() > 3 ? lines.size() - 3 : 0;
  std::vector<std::string> tail(lines.begin() + from, lines.end());
  return tail.empty()
             ? ""
             : absl::StrCat(" (log: ", absl::StrJoin(tail, " | "), ")");
}

// CPU time (user + system) of `pid` and its descendants, in seconds: the
// virtiofsd peers run their file server in a child (namespace sandbox).
// Threads that already exited are included (the kernel folds them into the
// process); children that exited are not, which does not happen here.
double ProcessTreeCpuSeconds(pid_t pid) {
  static const double kTick = static_cast<double>(sysconf(_SC_CLK_TCK));
  double total = 0;
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(stat)),
                   std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces): state is 3rd,
  // utime the 14th and stime the 15th of the whole line.
  const size_t close = text.rfind(')');
  if (close != std::string::npos) {
    std::istringstream rest(text.substr(close + 2));
    std::string field;
    double utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14) utime = std::atof(field.c_str());
      if (i == 15) stime = std::atof(field.c_str());
    }
    total += (utime + stime) / kTick;
  }
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(
           absl::StrCat("/proc/", pid, "/task"), ec)) {
    std::ifstream children(task.path() / "children");
    for (pid_t child; children >> child;) total += ProcessTreeCpuSeconds(child);
  }
  return total;
}

// One peer's daemon and client for one run.
struct Attached {
  const BenchPeer* peer = nullptr;
  std::string log;
  std::unique_ptr<SocketServerProcess> process;
  std::unique_ptr<DatapathClient> client;
  std::string error;  // set once something failed: the peer sits out
};

absl::Status WithLog(const absl::Status& s, const std::string& log) {
  return absl::Status(s.code(), absl::StrCat(s.message(), LogTail(log)));
}

// Starts `a.peer`'s daemon, attaches a client and checks that it serves the
// test file's real bytes (or its figures would mean nothing).
absl::Status AttachPeer(Attached& a, int run, const std::string& dir,
                        const std::string& shared,
                        const DatapathBenchOptions& options,
                        DatapathReport& report) {
  const std::string socket = absl::StrCat(dir, "/", a.peer->key, ".sock");
  a.log = absl::StrCat(dir, "/", a.peer->key, "-", run, ".log");
  ASSIGN_OR_RETURN(a.process, a.peer->Start(shared, socket, a.log));
  DatapathClientOptions client_options;
  client_options.log_all = a.peer->log_all;
  absl::StatusOr<std::unique_ptr<DatapathClient>> client =
      DatapathClient::Attach(socket, kFileName, client_options);
  if (!client.ok()) return WithLog(client.status(), a.log);
  a.client = *std::move(client);
  const std::string file = absl::StrCat(shared, "/", kFileName);
  for (uint64_t offset : {uint64_t{0}, options.file_bytes / 2 + 4096}) {
    ASSIGN_OR_RETURN(std::string want,
                     ReadHostBytes(file, offset, kSmallBlock));
    if (absl::Status s = a.client->Verify(offset, want); !s.ok()) {
      return WithLog(s, a.log);
    }
  }
  const uint32_t seq_block = std::min(kLargeBlock, a.client->max_write());
  if (report.seq_block == 0 || seq_block < report.seq_block) {
    report.seq_block = seq_block;
  }
  return absl::OkStatus();
}

// Runs `row` once on an attached peer and records its figure and the
// daemon's CPU time per request.
absl::Status RunRow(Attached& a, RowReport& row, int run,
                    const DatapathBenchOptions& options,
                    const DatapathReport& report) {
  const RowSpec* spec = nullptr;
  for (const RowSpec& s : kRows) {
    if (row.key == s.key) spec = &s;
  }
  const double cpu_before = ProcessTreeCpuSeconds(a.process->pid());
  absl::StatusOr<WorkloadResult> r;
  switch (spec->kind) {
    case Kind::kRandom:
      r = a.client->RandomIo(spec->write, kSmallBlock, spec->depth,
                             options.seconds, 1000 + run);
      break;
    case Kind::kSequential:
      r = a.client->SequentialIo(spec->write, report.seq_block,
                                 options.seconds);
      break;
    case Kind::kMetadata:
      r = a.client->Metadata(options.seconds,
                             absl::StrCat("m-", a.peer->key, "-", run, "-"));
      break;
  }
  if (!r.ok()) {
    return WithLog(
        absl::Status(r.status().code(),
                     absl::StrCat(row.key, ": ", r.status().message())),
        a.log);
  }
  const double cpu = ProcessTreeCpuSeconds(a.process->pid()) - cpu_before;
  const double figure = spec->kind == Kind::kMetadata
                            ? r->PerSecond(r->requests)
                            : r->MiBPerSecond();
  Cell& cell = row.cells[a.peer->key];
  cell.samples.push_back(figure);
  if (r->all_requests > 0) {
    const double n = static_cast<double>(r->all_requests);
    cell.cpu_us.push_back(cpu * 1e6 / n);
    cell.client_us.push_back(absl::ToDoubleMicroseconds(r->client_cpu) / n);
    cell.interrupts.push_back(static_cast<double>(r->interrupts) / n);
    cell.kicks.push_back(static_cast<double>(r->kicks) / n);
    if (options.progress) {
      options.progress(absl::StrFormat(
          "run %d/%d %-5s %-18s %10.1f %-5s daemon %6.2f us, client %5.2f "
          "us, %.2f irq, %.2f kick per request",
          run + 1, options.runs, a.peer->key, row.key, figure, row.unit,
          cell.cpu_us.back(), cell.client_us.back(), cell.interrupts.back(),
          cell.kicks.back()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

double Cell::median() const { return MedianOf(samples); }

double Cell::min() const {
  return samples.empty() ? 0
                         : *std::min_element(samples.begin(), samples.end());
}

double Cell::max() const {
  return samples.empty() ? 0
                         : *std::max_element(samples.begin(), samples.end());
}

std::vector<std::string> DatapathRowKeys() {
  std::vector<std::string> keys;
  for (const RowSpec& s : kRows) keys.push_back(s.key);
  return keys;
}

absl::StatusOr<DatapathReport> RunDatapathBench(
    const std::vector<BenchPeer>& peers, const DatapathBenchOptions& options) {
  if (options.runs < 1 || options.seconds <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("need at least one run of > 0 s");
  }
  if (options.file_bytes < kLargeBlock) {
    return absl::InvalidArgumentError("the test file must be at least 1 MiB");
  }
  for (const std::string& key : options.rows) {
    if (!Wanted(DatapathRowKeys(), key)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown row '", key,
          "' (rows: ", absl::StrJoin(DatapathRowKeys(), ", "), ")"));
    }
  }
  DatapathReport report;
  report.options = options;
  report.cpus = static_cast<int>(std::thread::hardware_concurrency());
  for (const BenchPeer& p : peers) {
    if (Wanted(options.peers, p.key)) report.peers.push_back(p);
  }
  if (report.peers.empty()) return absl::InvalidArgumentError("no peer chosen");
  for (const RowSpec& s : kRows) {
    if (!Wanted(options.rows, s.key)) continue;
    RowReport& row = report.rows.emplace_back();
    row.key = s.key;
    row.label = s.label;
    row.unit = s.unit;
    for (const BenchPeer& p : report.peers) row.cells[p.key];
  }

  // A unix socket path must fit in sun_path: keep the directory short.
  std::string tmpl = options.parent_dir + "/vhostmig-bench-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    return LastErrnoStatus("mkdtemp under " + options.parent_dir);
  }
  report.dir = tmpl;
  const std::string shared = report.dir + "/shared";
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{report.dir};
  if (mkdir(shared.c_str(), 0755) != 0) return LastErrnoStatus("mkdir");
  report.fs_type = FileSystemType(shared);
  RETURN_IF_ERROR(
      CreateTestFile(absl::StrCat(shared, "/", kFileName), options.file_bytes));

  report.load_before = ReadLoadAverage();
  const size_t n = report.peers.size();
  for (int run = 0; run < options.runs; ++run) {
    // Every peer gets a fresh daemon per run; all are attached at once so
    // that each row runs on the peers back to back (in an order that
    // rotates), which spreads a change of machine load over all of them.
    std::vector<Attached> attached(n);
    for (size_t k = 0; k < n; ++k) {
      Attached& a = attached[k];
      a.peer = &report.peers[k];
      if (!a.peer->unavailable.empty()) {
        a.error = a.peer->unavailable;
      } else if (absl::Status s =
                     AttachPeer(a, run, report.dir, shared, options, report);
                 !s.ok()) {
        a.error = std::string(s.message());
      }
    }
    for (size_t r = 0; r < report.rows.size(); ++r) {
      for (size_t k = 0; k < n; ++k) {
        Attached& a = attached[(run + r + k) % n];
        if (!a.error.empty()) continue;
        if (absl::Status s = RunRow(a, report.rows[r], run, options, report);
            !s.ok()) {
          a.error = std::string(s.message());
        }
      }
    }
    for (Attached& a : attached) {
      if (!a.error.empty()) {
        if (options.progress && a.peer->unavailable.empty()) {
          options.progress(
              absl::StrCat("run ", run + 1, " ", a.peer->key, ": ", a.error));
        }
        for (RowReport& row : report.rows) {
          row.cells[a.peer->key].error = a.error;
        }
      }
      a.client.reset();  // disconnects: the daemon exits
      if (a.process) a.process->WaitForExit(absl::Seconds(2)).IgnoreError();
    }
  }
  report.load_after = ReadLoadAverage();
  return report;
}

namespace {

std::string FormatFigure(double v) {
  return v >= 100 ? absl::StrFormat("%.0f", v) : absl::StrFormat("%.1f", v);
}

std::string FormatCell(const Cell& c) {
  if (c.samples.empty()) return "n/a";
  return absl::StrCat(FormatFigure(c.median()), " [", FormatFigure(c.min()),
                      "-", FormatFigure(c.max()), "]");
}

// ours / peer, or empty when either figure is missing.
std::string Ratio(const RowReport& row, const std::string& peer) {
  auto ours = row.cells.find("ours");
  auto other = row.cells.find(peer);
  if (ours == row.cells.end() || other == row.cells.end() ||
      ours->second.samples.empty() || other->second.samples.empty() ||
      other->second.median() <= 0) {
    return "";
  }
  return absl::StrFormat("%.2f",
                         ours->second.median() / other->second.median());
}

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20) {
          out += absl::StrFormat("\\u%04x", ch);
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

// The figures (or, with `cpu`, the daemons' CPU time per request) as an
// aligned table with ratios.
std::string FormatTable(const DatapathReport& report, bool cpu) {
  std::vector<std::string> header = {"row", cpu ? "" : "unit"};
  std::vector<std::string> ratio_peers;
  for (const BenchPeer& p : report.peers) header.push_back(p.label);
  for (const BenchPeer& p : report.peers) {
    if (p.key != "ours") {
      ratio_peers.push_back(p.key);
      header.push_back(cpu ? absl::StrCat(p.key, "/ours")
                           : absl::StrCat("ours/", p.key));
    }
  }
  std::vector<std::vector<std::string>> table = {header};
  for (const RowReport& row : report.rows) {
    std::vector<std::string> line = {row.label, cpu ? "" : row.unit};
    for (const BenchPeer& p : report.peers) {
      const Cell& c = row.cells.at(p.key);
      if (!cpu) {
        line.push_back(FormatCell(c));
      } else if (c.cpu_us.empty()) {
        line.push_back("n/a");
      } else {
        line.push_back(absl::StrFormat("%.2f", MedianOf(c.cpu_us)));
      }
    }
    for (const std::string& k : ratio_peers) {
      std::string r;
      if (!cpu) {
        r = Ratio(row, k);
      } else {
        const Cell& ours = row.cells.at("ours");
        const Cell& other = row.cells.at(k);
        if (!ours.cpu_us.empty() && !other.cpu_us.empty() &&
            MedianOf(ours.cpu_us) > 0) {
          r = absl::StrFormat("%.2f",
                              MedianOf(other.cpu_us) / MedianOf(ours.cpu_us));
        }
      }
      line.push_back(r.empty() ? "-" : r + "x");
    }
    table.push_back(line);
  }
  std::vector<size_t> width(header.size(), 0);
  for (const auto& line : table) {
    for (size_t i = 0; i < line.size(); ++i) {
      width[i] = std::max(width[i], line[i].size());
    }
  }
  std::ostringstream out;
  for (const auto& line : table) {
    for (size_t i = 0; i < line.size(); ++i) {
      out << (i == 0 ? "" : "  ")
          << (i < 2 ? absl::StrFormat("%-*s", width[i], line[i])
                    : absl::StrFormat("%*s", width[i], line[i]));
    }
    out << "\n";
  }
  return out.str();
}

std::string FormatClientTable(const DatapathReport& report) {
  std::vector<std::vector<std::string>> table = {{"row"}};
  for (const BenchPeer& p : report.peers) table[0].push_back(p.label);
  for (const RowReport& row : report.rows) {
    std::vector<std::string> line = {row.label};
    for (const BenchPeer& p : report.peers) {
      const Cell& c = row.cells.at(p.key);
      line.push_back(
          c.client_us.empty()
              ? "n/a"
              : absl::StrFormat("%.2f / %.2f / %.2f", MedianOf(c.client_us),
                                MedianOf(c.interrupts), MedianOf(c.kicks)));
    }
    table.push_back(line);
  }
  std::vector<size_t> width(table[0].size(), 0);
  for (const auto& line : table) {
    for (size_t i = 0; i < line.size(); ++i) {
      width[i] = std::max(width[i], line[i].size());
    }
  }
  std::ostringstream out;
  for (const auto& line : table) {
    for (size_t i = 0; i < line.size(); ++i) {
      out << (i == 0 ? absl::StrFormat("%-*s", width[i], line[i])
                     : absl::StrFormat("  %*s", width[i], line[i]));
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace

std::string FormatText(const DatapathReport& report) {
  std::ostringstream out;
  out << absl::StrFormat(
      "vhostmig bench datapath: %d run(s) x %.1f s per row (median "
      "[min-max])\n",
      report.options.runs, absl::ToDoubleSeconds(report.options.seconds));
  out << absl::StrFormat(
      "files: %s (%s), %d MiB test file in the host page cache; sequential "
      "requests of %d KiB; one request queue; client and daemons share %d "
      "CPUs\n",
      report.dir, report.fs_type, report.options.file_bytes >> 20,
      report.seq_block >> 10, report.cpus);
  out << "load average: " << report.load_before << " before, "
      << report.load_after << " after\n";
  for (const BenchPeer& p : report.peers) {
    out << absl::StrFormat(
        "  %-5s %s: %s\n", p.key, p.label,
        p.unavailable.empty()
            ? absl::StrCat(absl::StrJoin(p.options, " "), "; ", p.threading)
            : absl::StrCat("n/a: ", p.unavailable));
  }
  out << "\n";
  out << FormatTable(report, /*cpu=*/false) << "\n"
      << "Daemon CPU time per FUSE request (user + system, all threads), "
         "microseconds, median; peer/ours > 1 means the peer needs more:\n"
      << FormatTable(report, /*cpu=*/true) << "\n"
      << "Client side per FUSE request (medians): its CPU time in "
         "microseconds / interrupts received / kicks sent:\n"
      << FormatClientTable(report);
  // Why a cell is n/a (or why some of its runs are missing), once per
  // peer and reason.
  for (const BenchPeer& p : report.peers) {
    std::vector<std::string> reasons;
    for (const RowReport& row : report.rows) {
      const Cell& c = row.cells.at(p.key);
      if (c.error.empty()) continue;
      const std::string reason =
          c.samples.empty()
              ? absl::StrCat("n/a ", p.label, ": ", c.error)
              : absl::StrCat("some runs failed, ", p.label, ": ", c.error);
      if (std::find(reasons.begin(), reasons.end(), reason) == reasons.end()) {
        reasons.push_back(reason);
      }
    }
    for (const std::string& r : reasons) out << r << "\n";
  }
  return out.str();
}

std::string FormatJson(const DatapathReport& report) {
  std::ostringstream out;
  out << "{\n  \"setup\": {\"runs\": " << report.options.runs
      << ", \"seconds\": " << absl::ToDoubleSeconds(report.options.seconds)
      << ", \"dir\": " << JsonString(report.dir)
      << ", \"fs_type\": " << JsonString(report.fs_type)
      << ", \"file_bytes\": " << report.options.file_bytes
      << ", \"seq_block_bytes\": " << report.seq_block
      << ", \"cpus\": " << report.cpus
      << ", \"load_before\": " << JsonString(report.load_before)
      << ", \"load_after\": " << JsonString(report.load_after) << "},\n";
  out << "  \"peers\": [";
  for (size_t i = 0; i < report.peers.size(); ++i) {
    const BenchPeer& p = report.peers[i];
    std::vector<std::string> argv;
    for (const std::string& a : p.options) argv.push_back(JsonString(a));
    out << (i ? ",\n" : "\n") << "    {\"key\": " << JsonString(p.key)
        << ", \"label\": " << JsonString(p.label)
        << ", \"binary\": " << JsonString(p.binary) << ", \"options\": ["
        << absl::StrJoin(argv, ", ")
        << "], \"threading\": " << JsonString(p.threading)
        << ", \"available\": " << (p.unavailable.empty() ? "true" : "false");
    if (!p.unavailable.empty()) {
      out << ", \"reason\": " << JsonString(p.unavailable);
    }
    out << "}";
  }
  out << "\n  ],\n  \"rows\": [";
  for (size_t r = 0; r < report.rows.size(); ++r) {
    const RowReport& row = report.rows[r];
    out << (r ? ",\n" : "\n") << "    {\"key\": " << JsonString(row.key)
        << ", \"label\": " << JsonString(row.label)
        << ", \"unit\": " << JsonString(row.unit) << ", \"peers\": {";
    bool first = true;
    for (const BenchPeer& p : report.peers) {
      const Cell& c = row.cells.at(p.key);
      out << (first ? "" : ", ") << JsonString(p.key) << ": {";
      first = false;
      if (c.samples.empty()) {
        out << "\"value\": null, \"error\": " << JsonString(c.error) << "}";
        continue;
      }
      std::vector<std::string> s;
      for (double v : c.samples) s.push_back(absl::StrFormat("%.2f", v));
      out << absl::StrFormat("\"median\": %.2f, \"min\": %.2f, \"max\": %.2f",
                             c.median(), c.min(), c.max())
          << ", \"samples\": [" << absl::StrJoin(s, ", ") << "]";
      if (!c.cpu_us.empty()) {
        std::vector<std::string> u;
        for (double v : c.cpu_us) u.push_back(absl::StrFormat("%.3f", v));
        out << absl::StrFormat(", \"cpu_us_per_request\": %.3f",
                               MedianOf(c.cpu_us))
            << ", \"cpu_us_samples\": [" << absl::StrJoin(u, ", ") << "]"
            << absl::StrFormat(
                   ", \"client_cpu_us_per_request\": %.3f, "
                   "\"interrupts_per_request\": %.3f, "
                   "\"kicks_per_request\": %.3f",
                   MedianOf(c.client_us), MedianOf(c.interrupts),
                   MedianOf(c.kicks));
      }
      if (!c.error.empty()) out << ", \"error\": " << JsonString(c.error);
      out << "}";
    }
    out << "}, \"ratio_ours_to\": {";
    first = true;
    for (const BenchPeer& p : report.peers) {
      if (p.key == "ours") continue;
      const std::string ratio = Ratio(row, p.key);
      out << (first ? "" : ", ") << JsonString(p.key) << ": "
          << (ratio.empty() ? "null" : ratio);
      first = false;
    }
    out << "}}";
  }
  out << "\n  ]\n}\n";
  return out.str();
}

}  // namespace vhostmig::bench
