// The data-path benchmark behind `vhostmig bench datapath`: the same
// driver-side client (datapath_client.h) drives each virtio-fs back-end
// (bench_peers.h) in turn, N runs of every row, and the report gives each
// peer's median with min and max and our ratio to each peer.
//
// Rows: 4 KiB random read and write at queue depth 1 and 32, 1 MiB (or the
// negotiated max_write if smaller) sequential read and write at depth 1,
// and metadata operations (CREATE + GETATTR + UNLINK). All peers serve the
// same directory and the same test file, created once by the benchmark and
// held in the host page cache, so what is compared is the daemons' request
// handling, not the storage.
//
// Each run starts a fresh daemon per peer (the daemons exit when their
// front-end disconnects) and attaches a client to each; then every row runs
// on all peers back to back, in an order that rotates from row to row and
// run to run, so a load change on a shared machine is spread over all of
// them. A peer that is unavailable or fails gets "n/a" with the reason in
// its cells (or, if only some runs failed, a note); the others still run.
//
// Besides throughput, each cell records the daemon's CPU time per FUSE
// request (its process tree, from /proc) and the client's CPU time,
// interrupts and kicks per request: figures that machine load disturbs
// much less, and that show where the time goes.
//
// This is a measurement, not a test: nothing here asserts on timing.
#ifndef VHOSTMIG_BENCH_DATAPATH_BENCH_H_
#define VHOSTMIG_BENCH_DATAPATH_BENCH_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/bench_peers.h"

namespace vhostmig::bench {

struct DatapathBenchOptions {
  absl::Duration seconds = absl::Seconds(2);  // timed window per row
  int runs = 3;
  // Parent of the benchmark's private directory (shared dir, sockets,
  // logs). Its file system is reported (tmpfs or a disk file system).
  std::string parent_dir = "/dev/shm";
  uint64_t file_bytes = 64ull << 20;
  // Only these rows / peers (keys), empty = all.
  std::vector<std::string> rows;
  std::vector<std::string> peers;
  // Progress lines (stderr in the CLI); may be empty.
  std::function<void(const std::string&)> progress;
};

// One figure of one peer: every run's value, or why there is none.
struct Cell {
  std::vector<double> samples;
  // The daemon's CPU time (user + system, all its threads and processes)
  // per FUSE request, per run: a figure that machine load disturbs much
  // less than throughput.
  std::vector<double> cpu_us;
  // The client's side of the same runs, per FUSE request: its CPU time
  // (us), interrupts received and kicks sent.
  std::vector<double> client_us;
  std::vector<double> interrupts;
  std::vector<double> kicks;
  std::string error;  // set when no run produced a value
  double median() const;
  double min() const;
  double max() const;
};

struct RowReport {
  std::string key;                    // "randread-4k-qd32"
  std::string label;                  // "4 KiB random read, depth 32"
  std::string unit;                   // "MiB/s" or "ops/s"
  std::map<std::string, Cell> cells;  // by peer key
};

struct DatapathReport {
  DatapathBenchOptions options;
  std::string dir;          // the private directory used
  std::string fs_type;      // "tmpfs", "ext4", ...
  uint32_t seq_block = 0;   // bytes per sequential request
  std::string load_before;  // /proc/loadavg
  std::string load_after;
  int cpus = 0;
  std::vector<BenchPeer> peers;
  std::vector<RowReport> rows;
};

absl::StatusOr<DatapathReport> RunDatapathBench(
    const std::vector<BenchPeer>& peers, const DatapathBenchOptions& options);

// The report as an aligned text table (figures, spread, ratios) and as JSON.
std::string FormatText(const DatapathReport& report);
std::string FormatJson(const DatapathReport& report);

// The row keys, in report order.
std::vector<std::string> DatapathRowKeys();

}  // namespace vhostmig::bench

#endif  // VHOSTMIG_BENCH_DATAPATH_BENCH_H_
