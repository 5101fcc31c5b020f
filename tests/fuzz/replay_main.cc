// Replay driver for libFuzzer-style targets built without libFuzzer (GCC).
//
// A fuzz target defines `LLVMFuzzerTestOneInput` (and optionally
// `LLVMFuzzerInitialize`). Under `--config=fuzz` clang's libFuzzer supplies
// main(); in the normal suite this file does, so every target's corpus is
// replayed by the ordinary GCC build (and under the sanitizer configs):
//
//   replay_test [CORPUS_FILE_OR_DIR]...
//
// Each file (directories: each regular file in them, sorted) is fed to the
// target once, then a bounded number of deterministic mutations of those
// inputs (bit flips, byte overwrites, inserts, deletes, truncations,
// splices). Environment: FUZZ_REPLAY_SEED (default 1) and
// FUZZ_REPLAY_MUTATIONS (default 2000). A crash, abort or sanitizer report
// fails the test; on a fatal signal the input being run is written to
// $TEST_UNDECLARED_OUTPUTS_DIR (or the working directory) as crash-input, and
// since mutations are deterministic, seed and count reproduce it as well.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv)
    __attribute__((weak));

namespace {

using Input = std::vector<uint8_t>;

// Inputs larger than this are cut: libFuzzer's default -max_len is similar.
constexpr size_t kMaxInputSize = 1 << 20;

bool IsDirectory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> ListFiles(const std::string& dir) {
  std::vector<std::string> files;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return files;
  while (dirent* e = readdir(d)) {
    std::string path = dir + "/" + e->d_name;
    struct stat st;
    if (e->d_name[0] != '.' && stat(path.c_str(), &st) == 0 &&
        S_ISREG(st.st_mode)) {
      files.push_back(path);
    }
  }
  closedir(d);
  std::sort(files.begin(), files.end());
  return files;
}

bool ReadFile(const std::string& path, Input* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out->assign(std::istreambuf_iterator<char>(in),
              std::istreambuf_iterator<char>());
  if (out->size() > kMaxInputSize) out->resize(kMaxInputSize);
  return true;
}

// The input being run, for the fatal-signal handler. The crash path is
// prepared up front because the handler may only make async-signal-safe calls.
const Input* g_current = nullptr;
char g_crash_path[4096];

void WriteCrashInput(int sig) {
  if (g_current != nullptr) {
    int fd = open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ssize_t ignored = write(fd, g_current->data(), g_current->size());
      (void)ignored;
      close(fd);
    }
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void InstallCrashHandlers() {
  const char* dir = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  std::snprintf(g_crash_path, sizeof(g_crash_path), "%s/crash-input",
                dir ? dir : ".");
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) {
    signal(sig, WriteCrashInput);
  }
}

void Run(const Input& input) {
  g_current = &input;
  // Run on a heap copy of exactly the input's size, so ASan catches reads
  // past the end just as libFuzzer would.
  std::unique_ptr<uint8_t[]> copy(new uint8_t[input.size()]);
  std::copy(input.begin(), input.end(), copy.get());
  LLVMFuzzerTestOneInput(copy.get(), input.size());
  g_current = nullptr;
}

Input Mutate(const std::vector<Input>& corpus, std::mt19937_64& rng) {
  auto pick = [&rng](size_t n) {
    return n == 0 ? 0 : static_cast<size_t>(rng() % n);
  };
  Input in = corpus.empty() ? Input{} : corpus[pick(corpus.size())];
  int rounds = 1 + static_cast<int>(pick(4));
  for (int r = 0; r < rounds; ++r) {
    switch (pick(7)) {
      case 0:  // flip a bit
        if (!in.empty()) in[pick(in.size())] ^= uint8_t(1u << pick(8));
        break;
      case 1: {  // overwrite a byte with an interesting value
        static constexpr uint8_t kInteresting[] = {0, 1, 0x7f, 0x80, 0xff};
        if (!in.empty()) in[pick(in.size())] = kInteresting[pick(5)];
        break;
      }
      case 2:  // insert random bytes
        if (in.size() < kMaxInputSize) {
          size_t at = pick(in.size() + 1), n = 1 + pick(16);
          Input bytes(n);
          for (auto& b : bytes) b = uint8_t(rng());
          in.insert(in.begin() + at, bytes.begin(), bytes.end());
        }
        break;
      case 3:  // delete a range
        if (!in.empty()) {
          size_t at = pick(in.size());
          size_t n = std::min(in.size() - at, 1 + pick(16));
          in.erase(in.begin() + at, in.begin() + at + n);
        }
        break;
      case 4:  // truncate
        in.resize(pick(in.size() + 1));
        break;
      case 5:  // overwrite a little-endian u32 (lengths, counts, ids)
        if (in.size() >= 4) {
          size_t at = pick(in.size() - 3);
          static constexpr uint32_t kValues[] = {
              0, 1, 0xffffffffu, 0x7fffffffu, 0x1000, 0x10000};
          uint32_t v = kValues[pick(6)];
          for (int i = 0; i < 4; ++i) in[at + i] = uint8_t(v >> (8 * i));
        }
        break;
      case 6:  // splice the tail of another input
        if (!corpus.empty()) {
          const Input& other = corpus[pick(corpus.size())];
          size_t cut = pick(in.size() + 1), from = pick(other.size() + 1);
          in.resize(cut);
          in.insert(in.end(), other.begin() + from, other.end());
          if (in.size() > kMaxInputSize) in.resize(kMaxInputSize);
        }
        break;
    }
  }
  return in;
}

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  InstallCrashHandlers();
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);

  std::vector<Input> corpus;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::vector<std::string> files =
        IsDirectory(arg) ? ListFiles(arg) : std::vector<std::string>{arg};
    for (const std::string& f : files) {
      Input input;
      if (!ReadFile(f, &input)) {
        std::fprintf(stderr, "replay: cannot read corpus file %s\n", f.c_str());
        return 1;
      }
      Run(input);
      corpus.push_back(std::move(input));
    }
  }

  const uint64_t seed = EnvOr("FUZZ_REPLAY_SEED", 1);
  const uint64_t mutations = EnvOr("FUZZ_REPLAY_MUTATIONS", 2000);
  std::mt19937_64 rng(seed);
  for (uint64_t i = 0; i < mutations; ++i) {
    Input input = Mutate(corpus, rng);
    Run(input);
  }
  std::printf("replay: %zu corpus inputs, %llu mutations (seed %llu): ok\n",
              corpus.size(), static_cast<unsigned long long>(mutations),
              static_cast<unsigned long long>(seed));
  return 0;
}
