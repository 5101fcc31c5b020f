// The file server's own cost per FUSE request, without rings, sockets or
// notifications: hand-built descriptor chains in plain memory go straight
// to FuseDispatcher::ProcessBatch (with the io_uring data path the daemon
// uses), on one thread. What `vhostmig bench datapath` measures on top of
// this is the vhost-user ring and the wake-ups on both sides, which
// dominate a depth-1 request and vary with the machine's load; this
// isolates what a change to the request handlers does (docs/performance.md,
// "Request handling without the rings").
//
//   bazel run -c opt //bench:fuse_dispatch_benchmark --
//       [--dir=/dev/shm] [--benchmark_repetitions=5]
//
// --dir is where the shared directory is created (default /dev/shm, a
// tmpfs, as the datapath bench). Rows:
//   BM_CreateGetattrUnlink: the datapath bench's metadata cycle (CREATE,
//     GETATTR, RELEASE, UNLINK; a BATCH_FORGET of 64 nodes every 64
//     cycles); time per cycle; counter `requests`: FUSE requests per
//     second of the reported (CPU) time.
//   BM_SequentialWrite / BM_SequentialRead: 1 MiB at a time through a
//     64 MiB file (written once before the row), one request per batch.
//   BM_Lookup: LOOKUP of an existing name and the FORGET of it.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "fs_device/data_path.h"
#include "fs_device/fuse_dispatcher.h"
#include "fs_device/passthrough_fs.h"

namespace vhostmig::bench {
namespace {

using fs::FuseChain;

std::string& DirFlag() {
  static std::string dir = "/dev/shm";
  return dir;
}

template <typename T>
void Append(std::vector<uint8_t>* out, const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out->insert(out->end(), p, p + sizeof(T));
}

void AppendName(std::vector<uint8_t>* out, absl::string_view name) {
  out->insert(out->end(), name.begin(), name.end());
  out->push_back(0);
}

// A shared directory under --dir with a PassthroughFs after FUSE_INIT, and
// one request's buffers.
class Server {
 public:
  Server() {
    std::string tmpl = DirFlag() + "/vhostmig-dispatch-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      error_ =
          absl::StrCat("mkdtemp under ", DirFlag(), ": ", std::strerror(errno));
      return;
    }
    dir_ = tmpl;
    fs::FsConfig config;
    config.shared_dir = dir_;
    config.cache = fs::CachePolicy::kAuto;
    auto created = fs::PassthroughFs::Create(config);
    if (!created.ok()) {
      error_ = std::string(created.status().message());
      return;
    }
    fs_ = *std::move(created);
    dispatcher_ = std::make_unique<fs::FuseDispatcher>(fs_.get());
    data_path_ = fs::MakeDataPath(/*prefer_io_uring=*/true);
    fuse_init_in init{};
    init.major = FUSE_KERNEL_VERSION;
    init.minor = FUSE_KERNEL_MINOR_VERSION;
    init.max_readahead = 1 << 20;
    init.flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES;
    Body().clear();
    Append(&Body(), init);
    if (int err = Call(FUSE_INIT, 0); err != 0) {
      error_ = absl::StrCat("FUSE_INIT: ", std::strerror(err));
    }
  }
  ~Server() {
    data_path_.reset();
    dispatcher_.reset();
    fs_.reset();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  const std::string& error() const { return error_; }
  const std::string& dir() const { return dir_; }

  // The argument bytes of the next request (after fuse_in_header).
  std::vector<uint8_t>& Body() { return body_; }

  // Sends the request made of a header and Body() (and `data_in`, WRITE
  // data, as its own descriptor); the reply lands in reply() (and
  // `data_out`, READ data). Returns the reply's errno (0: success).
  int Call(uint32_t opcode, uint64_t nodeid, const iovec* data_in = nullptr,
           const iovec* data_out = nullptr) {
    fuse_in_header h{};
    h.opcode = opcode;
    h.nodeid = nodeid;
    h.unique = ++unique_;
    h.len = static_cast<uint32_t>(sizeof(h) + body_.size() +
                                  (data_in ? data_in->iov_len : 0));
    in_.resize(sizeof(h) + body_.size());
    std::memcpy(in_.data(), &h, sizeof(h));
    if (!body_.empty()) {
      std::memcpy(in_.data() + sizeof(h), body_.data(), body_.size());
    }
    chain_.in.clear();
    chain_.out.clear();
    chain_.in.push_back(iovec{in_.data(), in_.size()});
    if (data_in) chain_.in.push_back(*data_in);
    // Room for the largest non-data reply: CREATE's entry + open.
    reply_.assign(sizeof(fuse_out_header) + sizeof(fuse_entry_out) +
                      sizeof(fuse_open_out),
                  0);
    if (data_out) {
      chain_.out.push_back(iovec{reply_.data(), sizeof(fuse_out_header)});
      chain_.out.push_back(*data_out);
    } else {
      chain_.out.push_back(iovec{reply_.data(), reply_.size()});
    }
    const std::vector<uint32_t> written =
        dispatcher_->ProcessBatch(absl::MakeConstSpan(&chain_, 1), *data_path_);
    if (opcode == FUSE_FORGET || opcode == FUSE_BATCH_FORGET) return 0;
    if (written[0] < sizeof(fuse_out_header)) return EPROTO;
    fuse_out_header out{};
    std::memcpy(&out, reply_.data(), sizeof(out));
    return -out.error;
  }

  template <typename T>
  T ReplyAs(size_t offset = 0) const {
    T v{};
    std::memcpy(&v, reply_.data() + sizeof(fuse_out_header) + offset,
                sizeof(T));
    return v;
  }

 private:
  std::string error_;
  std::string dir_;
  std::unique_ptr<fs::PassthroughFs> fs_;
  std::unique_ptr<fs::FuseDispatcher> dispatcher_;
  std::unique_ptr<fs::DataPath> data_path_;
  uint64_t unique_ = 0;
  std::vector<uint8_t> body_;
  std::vector<uint8_t> in_;
  std::vector<uint8_t> reply_;
  FuseChain chain_;
};

#define BENCH_CHECK_OK(state, what, err)                       \
  if ((err) != 0) {                                            \
    (state).SkipWithError(                                     \
        absl::StrCat(what, ": ", std::strerror(err)).c_str()); \
    return;                                                    \
  }

void BM_CreateGetattrUnlink(benchmark::State& state) {
  Server server;
  if (!server.error().empty()) {
    state.SkipWithError(server.error().c_str());
    return;
  }
  std::vector<fuse_forget_one> forgets;
  uint64_t i = 0;
  uint64_t requests = 0;
  for (auto _ : state) {
    const std::string name = absl::StrCat("m", i++);
    fuse_create_in create{};
    create.flags = O_RDWR | O_CREAT | O_EXCL;
    create.mode = S_IFREG | 0644;
    create.umask = 022;
    server.Body().clear();
    Append(&server.Body(), create);
    AppendName(&server.Body(), name);
    BENCH_CHECK_OK(state, "CREATE", server.Call(FUSE_CREATE, FUSE_ROOT_ID));
    const auto entry = server.ReplyAs<fuse_entry_out>();
    const auto open = server.ReplyAs<fuse_open_out>(sizeof(fuse_entry_out));

    fuse_getattr_in getattr{};
    server.Body().clear();
    Append(&server.Body(), getattr);
    BENCH_CHECK_OK(state, "GETATTR", server.Call(FUSE_GETATTR, entry.nodeid));

    fuse_release_in release{};
    release.fh = open.fh;
    release.flags = O_RDWR;
    server.Body().clear();
    Append(&server.Body(), release);
    BENCH_CHECK_OK(state, "RELEASE", server.Call(FUSE_RELEASE, entry.nodeid));

    server.Body().clear();
    AppendName(&server.Body(), name);
    BENCH_CHECK_OK(state, "UNLINK", server.Call(FUSE_UNLINK, FUSE_ROOT_ID));
    requests += 4;

    forgets.push_back(fuse_forget_one{entry.nodeid, 1});
    if (forgets.size() == 64) {
      fuse_batch_forget_in batch{};
      batch.count = static_cast<uint32_t>(forgets.size());
      server.Body().clear();
      Append(&server.Body(), batch);
      for (const auto& f : forgets) Append(&server.Body(), f);
      server.Call(FUSE_BATCH_FORGET, 0);
      forgets.clear();
      ++requests;
    }
  }
  state.counters["requests"] = benchmark::Counter(static_cast<double>(requests),
                                                  benchmark::Counter::kIsRate);
}
BENCHMARK(BM_CreateGetattrUnlink);

void BM_Lookup(benchmark::State& state) {
  Server server;
  if (!server.error().empty()) {
    state.SkipWithError(server.error().c_str());
    return;
  }
  const std::string path = server.dir() + "/existing";
  const int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) {
    state.SkipWithError("create the looked-up file");
    return;
  }
  close(fd);
  for (auto _ : state) {
    server.Body().clear();
    AppendName(&server.Body(), "existing");
    BENCH_CHECK_OK(state, "LOOKUP", server.Call(FUSE_LOOKUP, FUSE_ROOT_ID));
    const auto entry = server.ReplyAs<fuse_entry_out>();
    fuse_forget_in forget{};
    forget.nlookup = 1;
    server.Body().clear();
    Append(&server.Body(), forget);
    server.Call(FUSE_FORGET, entry.nodeid);
  }
}
BENCHMARK(BM_Lookup);

// 1 MiB READs or WRITEs through a 64 MiB file, wrapping.
void SequentialIo(benchmark::State& state, bool write) {
  constexpr size_t kBlock = 1 << 20;
  constexpr size_t kFile = 64 << 20;
  Server server;
  if (!server.error().empty()) {
    state.SkipWithError(server.error().c_str());
    return;
  }
  std::vector<uint8_t> buffer(kBlock, 0x5a);
  {
    const std::string path = server.dir() + "/data";
    const int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    bool ok = fd >= 0;
    for (size_t off = 0; ok && off < kFile; off += kBlock) {
      ok = pwrite(fd, buffer.data(), kBlock, static_cast<off_t>(off)) ==
           static_cast<ssize_t>(kBlock);
    }
    if (fd >= 0) close(fd);
    if (!ok) {
      state.SkipWithError("write the 64 MiB test file");
      return;
    }
  }
  server.Body().clear();
  AppendName(&server.Body(), "data");
  BENCH_CHECK_OK(state, "LOOKUP", server.Call(FUSE_LOOKUP, FUSE_ROOT_ID));
  const uint64_t node = server.ReplyAs<fuse_entry_out>().nodeid;
  fuse_open_in open_in{};
  open_in.flags = O_RDWR;
  server.Body().clear();
  Append(&server.Body(), open_in);
  BENCH_CHECK_OK(state, "OPEN", server.Call(FUSE_OPEN, node));
  const uint64_t fh = server.ReplyAs<fuse_open_out>().fh;
  const iovec data{buffer.data(), kBlock};
  uint64_t offset = 0;
  for (auto _ : state) {
    server.Body().clear();
    if (write) {
      fuse_write_in in{};
      in.fh = fh;
      in.offset = offset;
      in.size = kBlock;
      Append(&server.Body(), in);
      BENCH_CHECK_OK(state, "WRITE",
                     server.Call(FUSE_WRITE, node, &data, nullptr));
    } else {
      fuse_read_in in{};
      in.fh = fh;
      in.offset = offset;
      in.size = kBlock;
      Append(&server.Body(), in);
      BENCH_CHECK_OK(state, "READ",
                     server.Call(FUSE_READ, node, nullptr, &data));
    }
    offset = offset + kBlock >= kFile ? 0 : offset + kBlock;
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBlock));
}

void BM_SequentialWrite(benchmark::State& state) { SequentialIo(state, true); }
void BM_SequentialRead(benchmark::State& state) { SequentialIo(state, false); }
BENCHMARK(BM_SequentialWrite);
BENCHMARK(BM_SequentialRead);

}  // namespace
}  // namespace vhostmig::bench

int main(int argc, char** argv) {
  // --dir=DIR is ours; everything else goes to the benchmark library.
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (absl::StartsWith(arg, "--dir=")) {
      vhostmig::bench::DirFlag() = std::string(arg.substr(6));
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  // As the daemon's main() does: Debian's abseil tracks every Mutex
  // acquisition in a global lock graph otherwise.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
