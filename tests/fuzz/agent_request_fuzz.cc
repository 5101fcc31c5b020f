// agent_request_fuzz: the vhostmig agent's gRPC surface fed hostile bytes.
//
// An AgentService (migration/agent) with no fs back-end configured is served
// by a gRPC server inside this process and called through its in-process
// channel, so every request goes the way a remote client's does: gRPC parses
// the bytes into the request message (or refuses them), then the handler
// validates and acts. A fresh service is used for every input; its state
// directory holds a few persisted records (an IN_DOUBT source, an
// interrupted destination, a completed source), so Status, Watch, Resolve,
// List and CreateGuest reach the restored-record paths. Besides the RPCs,
// inputs can feed the agent-to-agent Transfer frames to the wire decoder
// (migration/agent/wire.h) and to a GrpcTransport's reader, and raw strings
// to the validators (migration/agent/validation.h).
//
// Checked for every input (a violation aborts):
//   - no crash, no sanitizer report, no hang (every call has a deadline);
//   - a request that fails the handler's first validation step is refused
//     with INVALID_ARGUMENT and exactly the validator's message;
//   - parsable requests only get the codes the API documents; bytes that do
//     not parse as the request never reach the handler and are refused;
//   - error messages contain no control characters (hostile strings are
//     never echoed raw into a message an operator's terminal prints);
//   - validators accept only what their contract says;
//   - a decoded frame re-encodes to a frame that decodes to the same thing;
//   - the transport delivers exactly the frames before the first bad one and
//     then reports the violation;
//   - afterwards the service still answers List.
//
// The harness keeps the fuzzer away from the machine: a StartDevice path
// that passes validation is replaced by one in a scratch directory
// ("/fuzz/dir" -> an existing directory, "/fuzz/refused.sock" -> a unix
// socket nobody listens on, anything else -> a path that does not exist),
// so no input connects to a real socket. With no back-end, guests cannot be
// created, so Perform never dials an address from the input.
//
// Input: records [u8 kind][u16le length][payload], at most 16; a length
// past the end takes the rest. Payloads of the stream kinds (Transfer,
// decode, transport) are frames [u16le length][TransferFrame bytes].
// Seeds: tests/fuzz/agent_seeds.py.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "migration/agent/agent_service.h"
#include "migration/agent/connection.h"
#include "migration/agent/grpc_transport.h"
#include "migration/agent/validation.h"
#include "migration/agent/wire.h"
#include "proto/agent.grpc.pb.h"

namespace {

namespace agent = ::vhostmig::agent;
namespace v1 = ::vhostmig::agent::v1;
namespace migration = ::vhostmig::migration;

void Check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "agent_request_fuzz: %s\n", what.c_str());
    std::abort();
  }
}

constexpr absl::Duration kCallDeadline = absl::Seconds(30);

// -------------------------------------------------------------- scratch

struct Scratch {
  std::string root;            // /tmp/vhm-agentfuzz-XXXXXX
  std::string dir;             // an existing directory
  std::string refused_socket;  // a unix socket nobody listens on
  std::string absent;          // a path that does not exist
  std::string state_dir;       // the agent's --state-dir
  std::string run_dir;
};

Scratch* g_scratch = nullptr;

constexpr char kStateFile[] = R"pb(
  migrations {
    id: "00000000000000aa"
    role: SOURCE
    device: "fs0"
    peer: "10.0.0.2:7345"
    state: IN_DOUBT
    phase: DONE
    message: "in doubt"
  }
  migrations {
    id: "00000000000000bb"
    role: DESTINATION
    device: "fs1"
    state: ACTIVE
    phase: START
  }
  migrations {
    id: "00000000000000cc"
    role: SOURCE
    device: "fs2"
    state: COMPLETED
    phase: DONE
  }
)pb";

void RemoveScratch() {
  if (g_scratch == nullptr) return;
  std::error_code ec;
  std::filesystem::remove_all(g_scratch->root, ec);
  if (!absl::StartsWith(g_scratch->state_dir, g_scratch->root)) {
    std::filesystem::remove_all(g_scratch->state_dir, ec);
  }
}

void MakeScratch() {
  char tmpl[] = "/tmp/vhm-agentfuzz-XXXXXX";
  Check(mkdtemp(tmpl) != nullptr, "mkdtemp in /tmp");
  auto* s = new Scratch;
  s->root = tmpl;
  s->dir = s->root + "/dir";
  s->refused_socket = s->root + "/refused.sock";
  s->absent = s->root + "/absent";
  s->run_dir = s->root + "/run";
  std::filesystem::create_directories(s->dir);
  std::filesystem::create_directories(s->run_dir);
  // The state file is rewritten for every input: tmpfs when there is one
  // (the store fsyncs).
  char shm[] = "/dev/shm/vhm-agentfuzz-XXXXXX";
  s->state_dir =
      mkdtemp(shm) != nullptr ? std::string(shm) : s->root + "/state";
  std::filesystem::create_directories(s->state_dir);
  // Bound, never listening: connect() fails with ECONNREFUSED at once.
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  Check(fd >= 0 && s->refused_socket.size() < sizeof(addr.sun_path),
        "scratch socket");
  std::memcpy(addr.sun_path, s->refused_socket.c_str(),
              s->refused_socket.size() + 1);
  Check(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0,
        "bind scratch socket");
  close(fd);
  g_scratch = s;
  std::atexit(RemoveScratch);
}

// ------------------------------------------------------- the agent server

// Forwards every RPC to the AgentService of the current input: one gRPC
// server for the whole run, a fresh agent per input.
class Forwarder final : public v1::Agent::Service {
 public:
  void Set(std::shared_ptr<agent::AgentService> service) {
    absl::MutexLock lock(&mu_);
    service_ = std::move(service);
  }

#define VHOSTMIG_FORWARD(Method, Request, Response)                       \
  grpc::Status Method(grpc::ServerContext* c, const v1::Request* request, \
                      v1::Response* response) override {                  \
    auto s = Get();                                                       \
    if (s == nullptr) return grpc::Status(grpc::UNAVAILABLE, "no agent"); \
    return s->Method(c, request, response);                               \
  }
  VHOSTMIG_FORWARD(StartDevice, StartDeviceRequest, DeviceInfo)
  VHOSTMIG_FORWARD(StopDevice, StopDeviceRequest, DeviceInfo)
  VHOSTMIG_FORWARD(CreateGuest, CreateGuestRequest, DeviceInfo)
  VHOSTMIG_FORWARD(DestroyGuest, DestroyGuestRequest, DeviceInfo)
  VHOSTMIG_FORWARD(VerifyGuest, VerifyGuestRequest, VerifyGuestResponse)
  VHOSTMIG_FORWARD(List, ListRequest, ListResponse)
  VHOSTMIG_FORWARD(Prepare, PrepareRequest, PrepareResponse)
  VHOSTMIG_FORWARD(Perform, PerformRequest, MigrationStatus)
  VHOSTMIG_FORWARD(Commit, CommitRequest, MigrationStatus)
  VHOSTMIG_FORWARD(Confirm, ConfirmRequest, MigrationStatus)
  VHOSTMIG_FORWARD(Cancel, CancelRequest, MigrationStatus)
  VHOSTMIG_FORWARD(Status, StatusRequest, MigrationStatus)
  VHOSTMIG_FORWARD(Resolve, ResolveRequest, MigrationStatus)
#undef VHOSTMIG_FORWARD

  grpc::Status Watch(grpc::ServerContext* c, const v1::WatchRequest* request,
                     grpc::ServerWriter<v1::ProgressEvent>* writer) override {
    auto s = Get();
    if (s == nullptr) return grpc::Status(grpc::UNAVAILABLE, "no agent");
    return s->Watch(c, request, writer);
  }
  grpc::Status Transfer(
      grpc::ServerContext* c,
      grpc::ServerReaderWriter<v1::TransferFrame, v1::TransferFrame>* stream)
      override {
    auto s = Get();
    if (s == nullptr) return grpc::Status(grpc::UNAVAILABLE, "no agent");
    return s->Transfer(c, stream);
  }

 private:
  std::shared_ptr<agent::AgentService> Get() {
    absl::MutexLock lock(&mu_);
    return service_;
  }

  absl::Mutex mu_;
  std::shared_ptr<agent::AgentService> service_ ABSL_GUARDED_BY(mu_);
};

struct Server {
  Forwarder forwarder;
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<grpc::GenericStub> generic;
  std::unique_ptr<v1::Agent::Stub> stub;
};

Server* g_server = nullptr;

void QuietProtobufLog(google::protobuf::LogLevel, const char*, int,
                      const std::string&) {}

void StartServer() {
  auto* s = new Server;
  grpc::ServerBuilder builder;
  agent::ConfigureAgentServer(&builder);
  builder.RegisterService(&s->forwarder);
  s->server = builder.BuildAndStart();
  Check(s->server != nullptr, "starting the in-process gRPC server");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  s->channel = s->server->InProcessChannel(args);
  s->generic = std::make_unique<grpc::GenericStub>(s->channel);
  s->stub = v1::Agent::NewStub(s->channel);
  g_server = s;  // never destroyed: gRPC's own threads outlive the run
}

std::shared_ptr<agent::AgentService> FreshAgent() {
  {
    std::ofstream out(g_scratch->state_dir + "/agent-state.textproto",
                      std::ios::trunc);
    out << kStateFile;
  }
  agent::AgentOptions options;
  options.state_dir = g_scratch->state_dir;
  options.run_dir = g_scratch->run_dir;
  options.log = [](const std::string&) {};
  auto service = agent::AgentService::Create(std::move(options));
  Check(service.ok(), "creating the agent: " + service.status().ToString());
  return std::shared_ptr<agent::AgentService>(std::move(*service));
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(absl::ToChronoTime(absl::Now() + kCallDeadline));
  return c;
}

// -------------------------------------------------------------- oracles

bool Printable(absl::string_view message) {
  for (unsigned char c : message) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

// AGENT_FUZZ_VERBOSE=1: print every answer (to see what an input reaches).
const bool g_verbose = std::getenv("AGENT_FUZZ_VERBOSE") != nullptr;

void CheckMessage(const grpc::Status& s, const char* rpc) {
  if (g_verbose) {
    std::fprintf(stderr, "  %s -> %d %s\n", rpc, s.error_code(),
                 s.error_message().c_str());
  }
  Check(Printable(s.error_message()),
        absl::StrCat(rpc, ": control character in the error message: ",
                     s.error_message()));
  Check(s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED,
        absl::StrCat(rpc, ": no answer within the deadline (hang)"));
}

// What a handler must answer when its first check fails.
void ExpectRefused(const grpc::Status& got, const absl::Status& expected,
                   const char* rpc) {
  if (expected.ok()) return;
  Check(got.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
            got.error_message() == expected.message(),
        absl::StrCat(rpc, ": expected INVALID_ARGUMENT \"", expected.message(),
                     "\", got ", got.error_code(), " \"", got.error_message(),
                     "\""));
}

void ExpectDocumentedCode(const grpc::Status& got, const char* rpc,
                          bool internal_allowed = false) {
  switch (got.error_code()) {
    case grpc::StatusCode::OK:
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return;
    case grpc::StatusCode::INTERNAL:
      if (internal_allowed) return;
      [[fallthrough]];
    default:
      Check(false, absl::StrCat(rpc, ": undocumented status ", got.error_code(),
                                " \"", got.error_message(), "\""));
  }
}

absl::Status FirstOf(std::initializer_list<absl::Status> checks) {
  for (const absl::Status& s : checks) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status SpecCheck(const v1::GuestSpec& spec) {
  v1::GuestSpec copy = spec;
  return agent::GuestOptionsFromSpec(&copy).status();
}

// ------------------------------------------------------------ unary RPCs

enum Kind : uint8_t {
  kStartDevice,
  kStopDevice,
  kCreateGuest,
  kDestroyGuest,
  kVerifyGuest,
  kList,
  kPrepare,
  kPerform,
  kCommit,
  kConfirm,
  kCancel,
  kStatus,
  kResolve,
  kWatch,
  kTransfer,
  kDecodeFrames,
  kTransportFrames,
  kValidators,
  kKinds
};

const char* const kMethod[] = {
    "StartDevice", "StopDevice", "CreateGuest", "DestroyGuest", "VerifyGuest",
    "List",        "Prepare",    "Perform",     "Commit",       "Confirm",
    "Cancel",      "Status",     "Resolve"};

// Confines StartDevice to the scratch directory (see the file comment).
std::string Confine(const std::string& payload) {
  v1::StartDeviceRequest r;
  if (!r.ParseFromString(payload)) return payload;
  std::string* path = nullptr;
  size_t max_len = 4095;
  if (r.backend_case() == v1::StartDeviceRequest::kSharedDir) {
    path = r.mutable_shared_dir();
  } else if (r.backend_case() == v1::StartDeviceRequest::kAttachSocket) {
    path = r.mutable_attach_socket();
    max_len = 107;
  }
  if (path == nullptr || !agent::ValidateAbsolutePath("p", *path, max_len).ok())
    return payload;
  if (*path == "/fuzz/dir") {
    *path = g_scratch->dir;
  } else if (*path == "/fuzz/refused.sock") {
    *path = g_scratch->refused_socket;
  } else {
    // Below a directory that does not exist, keeping the input's bytes
    // (error messages echo the path), cut to the field's limit.
    const size_t room = max_len - std::min(max_len, g_scratch->absent.size());
    *path = g_scratch->absent + path->substr(0, room);
  }
  return r.SerializeAsString();
}

template <typename Request>
std::optional<Request> Parse(const std::string& bytes) {
  Request r;
  if (!r.ParseFromString(bytes)) return std::nullopt;
  return r;
}

// The handler's first checks, recomputed from the request; OK when it
// passes them (or the bytes do not parse).
absl::Status Expected(Kind kind, const std::string& bytes) {
  switch (kind) {
    case kStartDevice:
      if (auto r = Parse<v1::StartDeviceRequest>(bytes)) {
        if (absl::Status s = agent::ValidateName("name", r->name()); !s.ok())
          return s;
        switch (r->backend_case()) {
          case v1::StartDeviceRequest::kSharedDir:
            return agent::ValidateAbsolutePath("shared_dir", r->shared_dir());
          case v1::StartDeviceRequest::kAttachSocket:
            return agent::ValidateAbsolutePath("attach_socket",
                                               r->attach_socket(), 107);
          default:
            return absl::InvalidArgumentError(
                "one of shared_dir or attach_socket is required");
        }
      }
      break;
    case kStopDevice:
      if (auto r = Parse<v1::StopDeviceRequest>(bytes))
        return agent::ValidateName("name", r->name());
      break;
    case kCreateGuest:
      if (auto r = Parse<v1::CreateGuestRequest>(bytes)) {
        return FirstOf(
            {agent::ValidateName("device", r->device()),
             r->warmup_steps() > 100000
                 ? absl::InvalidArgumentError("warmup_steps: at most 100000")
                 : absl::OkStatus(),
             SpecCheck(r->spec())});
      }
      break;
    case kDestroyGuest:
      if (auto r = Parse<v1::DestroyGuestRequest>(bytes))
        return agent::ValidateName("device", r->device());
      break;
    case kVerifyGuest:
      if (auto r = Parse<v1::VerifyGuestRequest>(bytes))
        return agent::ValidateName("device", r->device());
      break;
    case kPrepare:
      if (auto r = Parse<v1::PrepareRequest>(bytes)) {
        return FirstOf({agent::ValidateName("device", r->device()),
                        r->wait_for_source_ms() > 3600000
                            ? absl::InvalidArgumentError(
                                  "wait_for_source_ms: at most 3600000")
                            : absl::OkStatus(),
                        SpecCheck(r->spec())});
      }
      break;
    case kPerform:
      if (auto r = Parse<v1::PerformRequest>(bytes)) {
        return FirstOf({agent::ValidateName("device", r->device()),
                        agent::ValidateAddress("destination", r->destination()),
                        agent::ValidateHexId("migration_id", r->migration_id()),
                        agent::ValidateHexId("token", r->token()),
                        agent::ValidateMigrationOptions(r->options())});
      }
      break;
    case kCommit:
    case kConfirm:
    case kCancel:
    case kStatus:
      // All four requests are {string migration_id = 1;}.
      if (auto r = Parse<v1::StatusRequest>(bytes))
        return agent::ValidateHexId("migration_id", r->migration_id());
      break;
    case kResolve:
      if (auto r = Parse<v1::ResolveRequest>(bytes)) {
        if (absl::Status s =
                agent::ValidateHexId("migration_id", r->migration_id());
            !s.ok())
          return s;
        const v1::Resolution how = r->resolution();
        if (how != v1::RESUME_SOURCE && how != v1::DESTROY_SOURCE &&
            how != v1::KEEP_PAUSED) {
          return absl::InvalidArgumentError(
              "resolution: one of RESUME_SOURCE, DESTROY_SOURCE, "
              "KEEP_PAUSED is required");
        }
      }
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

bool Parses(Kind kind, const std::string& bytes) {
  switch (kind) {
    case kStartDevice:
      return Parse<v1::StartDeviceRequest>(bytes).has_value();
    case kStopDevice:
      return Parse<v1::StopDeviceRequest>(bytes).has_value();
    case kCreateGuest:
      return Parse<v1::CreateGuestRequest>(bytes).has_value();
    case kDestroyGuest:
      return Parse<v1::DestroyGuestRequest>(bytes).has_value();
    case kVerifyGuest:
      return Parse<v1::VerifyGuestRequest>(bytes).has_value();
    case kList:
      return Parse<v1::ListRequest>(bytes).has_value();
    case kPrepare:
      return Parse<v1::PrepareRequest>(bytes).has_value();
    case kPerform:
      return Parse<v1::PerformRequest>(bytes).has_value();
    case kResolve:
      return Parse<v1::ResolveRequest>(bytes).has_value();
    default:
      return Parse<v1::StatusRequest>(bytes).has_value();
  }
}

// The request bytes as they are, through gRPC's generic stub: gRPC parses
// them on the server side exactly as for a remote client.
void UnaryRpc(Kind kind, const std::string& payload) {
  const std::string bytes = kind == kStartDevice ? Confine(payload) : payload;
  grpc::Slice slice(bytes.data(), bytes.size());
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  auto context = Context();
  absl::Notification done;
  grpc::Status status;
  g_server->generic->UnaryCall(
      context.get(), absl::StrCat("/vhostmig.agent.v1.Agent/", kMethod[kind]),
      grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
        status = std::move(s);
        done.Notify();
      });
  done.WaitForNotification();
  const char* rpc = kMethod[kind];
  CheckMessage(status, rpc);
  if (!Parses(kind, bytes)) {
    // gRPC refuses what does not parse before any handler runs.
    Check(!status.ok(), absl::StrCat(rpc, ": unparsable request accepted"));
    return;
  }
  ExpectRefused(status, Expected(kind, bytes), rpc);
  ExpectDocumentedCode(status, rpc, /*internal_allowed=*/kind == kResolve);
}

void WatchRpc(const std::string& payload) {
  auto request = Parse<v1::WatchRequest>(payload);
  if (!request) return;
  auto context = Context();
  auto reader = g_server->stub->Watch(context.get(), *request);
  v1::ProgressEvent event;
  int events = 0;
  bool final_seen = false;
  while (reader->Read(&event)) {
    ++events;
    final_seen |= event.final();
  }
  grpc::Status status = reader->Finish();
  CheckMessage(status, "Watch");
  ExpectRefused(status,
                agent::ValidateHexId("migration_id", request->migration_id()),
                "Watch");
  ExpectDocumentedCode(status, "Watch");
  // Without live migrations Watch answers at once: one final event for a
  // known (restored) record, or an error.
  if (status.ok()) {
    Check(events == 1 && final_seen, "Watch: one final event expected");
  }
}

// [u16le length][frame bytes]...; unparsable frames are returned as nullopt.
std::vector<std::optional<v1::TransferFrame>> SplitFrames(
    const std::string& payload) {
  std::vector<std::optional<v1::TransferFrame>> frames;
  size_t pos = 0;
  while (pos + 2 <= payload.size() && frames.size() < 64) {
    size_t len = uint8_t(payload[pos]) | (uint8_t(payload[pos + 1]) << 8);
    pos += 2;
    len = std::min(len, payload.size() - pos);
    v1::TransferFrame f;
    if (f.ParseFromArray(payload.data() + pos, static_cast<int>(len))) {
      frames.emplace_back(std::move(f));
    } else {
      frames.emplace_back(std::nullopt);
    }
    pos += len;
  }
  return frames;
}

void TransferRpc(const std::string& payload) {
  std::vector<v1::TransferFrame> frames;
  for (auto& f : SplitFrames(payload)) {
    if (f) frames.push_back(*std::move(f));
  }
  auto context = Context();
  auto stream = g_server->stub->Transfer(context.get());
  for (const v1::TransferFrame& f : frames) {
    if (!stream->Write(f)) break;  // the agent ended the stream
  }
  stream->WritesDone();
  v1::TransferFrame reply;
  while (stream->Read(&reply)) {
  }
  grpc::Status status = stream->Finish();
  CheckMessage(status, "Transfer");
  // No migration is ever prepared here (no back-end), so every stream is
  // refused at its first frame.
  Check(!status.ok(), "Transfer: accepted without a prepared migration");
  if (frames.empty()) {
    Check(status.error_code() == grpc::StatusCode::CANCELLED,
          "Transfer: an empty stream must end CANCELLED");
    return;
  }
  const v1::TransferFrame& open = frames.front();
  if (!open.has_open()) {
    ExpectRefused(
        status,
        absl::InvalidArgumentError("the first Transfer frame must be `open`"),
        "Transfer");
    return;
  }
  absl::Status expected = FirstOf(
      {agent::ValidateHexId("open.migration_id", open.open().migration_id()),
       agent::ValidateHexId("open.token", open.open().token())});
  ExpectRefused(status, expected, "Transfer");
  if (expected.ok()) {
    Check(status.error_code() == grpc::StatusCode::NOT_FOUND,
          "Transfer: an unknown migration must be NOT_FOUND");
  }
}

// ---------------------------------------------------- Transfer frame decode

std::string Encoded(const migration::MigrationMessage& m) {
  v1::TransferFrame f;
  agent::EncodeMessage(m, &f);
  return f.SerializeAsString();
}

void DecodeFrames(const std::string& payload) {
  for (auto& f : SplitFrames(payload)) {
    if (!f) continue;
    absl::StatusOr<migration::MigrationMessage> m = agent::DecodeMessage(*f);
    if (!m.ok()) {
      Check(absl::IsInvalidArgument(m.status()),
            "DecodeMessage: " + m.status().ToString());
      Check(Printable(m.status().message()),
            "DecodeMessage: control character in the error");
      continue;
    }
    Check(agent::IsMigrationFrame(*f), "decoded a non-migration frame");
    // What we send of a decoded message decodes to the same thing.
    const std::string once = Encoded(*m);
    v1::TransferFrame again;
    Check(again.ParseFromString(once), "re-encoded frame does not parse");
    absl::StatusOr<migration::MigrationMessage> m2 =
        agent::DecodeMessage(again);
    Check(m2.ok(),
          "re-encoded frame does not decode: " + m2.status().ToString());
    Check(Encoded(*m2) == once, "decode/encode round trip differs");
    (void)migration::MessageBytes(*m);
    (void)migration::MessageName(*m);
  }
}

// --------------------------------------------------- GrpcTransport reader

// Serves a fixed list of frames to the transport's reader, then reports the
// end of the stream; accepts every write.
class ScriptedStream : public agent::FrameStream {
 public:
  explicit ScriptedStream(std::vector<v1::TransferFrame> frames)
      : frames_(std::move(frames)) {}
  bool Read(v1::TransferFrame* f) override {
    absl::MutexLock lock(&mu_);
    if (cancelled_ || next_ >= frames_.size()) {
      ended_ = true;
      return false;
    }
    *f = frames_[next_++];
    return true;
  }
  bool Write(const v1::TransferFrame&) override {
    absl::MutexLock lock(&mu_);
    return !cancelled_;
  }
  void Cancel() override {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }
  // Blocks until the reader saw the end (or was cancelled after a bad frame).
  void AwaitEnd() {
    absl::MutexLock lock(&mu_);
    auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return ended_ || cancelled_;
    };
    mu_.Await(absl::Condition(&done));
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::TransferFrame> frames_ ABSL_GUARDED_BY(mu_);
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

void TransportFrames(const std::string& payload) {
  std::vector<v1::TransferFrame> frames;
  for (auto& f : SplitFrames(payload)) {
    if (f) frames.push_back(*std::move(f));
  }
  agent::GrpcTransportOptions options;
  options.window_bytes = 64 << 10;  // small, so overruns are reachable
  options.close_grace = absl::ZeroDuration();

  // What the reader must do, frame by frame (transport comment in
  // grpc_transport.h): credits and started/start_failed are taken in, a
  // migration frame is decoded and queued unless it overruns the window,
  // anything else breaks the stream.
  size_t expect_delivered = 0;
  absl::StatusCode expect_code = absl::StatusCode::kUnavailable;
  uint64_t queued = 0;
  for (const v1::TransferFrame& f : frames) {
    const auto k = f.kind_case();
    if (k == v1::TransferFrame::kCredit || k == v1::TransferFrame::kStarted ||
        k == v1::TransferFrame::kStartFailed) {
      continue;
    }
    if (!agent::IsMigrationFrame(f)) {
      expect_code = absl::StatusCode::kInvalidArgument;
      break;
    }
    absl::StatusOr<migration::MigrationMessage> m = agent::DecodeMessage(f);
    if (!m.ok()) {
      expect_code = m.status().code();
      break;
    }
    const uint64_t bytes = migration::MessageBytes(*m);
    if (expect_delivered > 0 && queued + bytes > options.window_bytes) {
      expect_code = absl::StatusCode::kResourceExhausted;
      break;
    }
    queued += bytes;
    ++expect_delivered;
  }

  ScriptedStream stream(std::move(frames));
  agent::GrpcTransport transport(&stream, options);
  // Something outstanding, so that the peer's credits have work to do.
  (void)transport.Send(migration::Ready{}, absl::Seconds(1));
  stream.AwaitEnd();
  // The reader has finished (the stream ended or it gave up on a bad
  // frame); wait until it recorded why.
  while (transport.stream_status().ok()) absl::SleepFor(absl::Microseconds(50));
  size_t delivered = 0;
  for (;;) {
    auto m = transport.Receive(kCallDeadline);
    Check(m.ok() || !absl::IsDeadlineExceeded(m.status()),
          "transport: Receive hangs after the stream ended");
    if (!m.ok()) break;
    ++delivered;
  }
  if (g_verbose) {
    std::fprintf(stderr, "  transport: %zu delivered, ended %s\n", delivered,
                 transport.stream_status().ToString().c_str());
  }
  Check(delivered == expect_delivered,
        absl::StrCat("transport delivered ", delivered, " messages, expected ",
                     expect_delivered));
  Check(transport.stream_status().code() == expect_code,
        absl::StrCat("transport ended with ",
                     transport.stream_status().ToString(), ", expected code ",
                     expect_code));
  transport.Close();
}

// ----------------------------------------------------------- validators

void Validators(const std::string& payload) {
  if (payload.empty()) return;
  const std::string s = payload.substr(1);
  auto field_message = [](const absl::Status& st, absl::string_view field) {
    Check(absl::IsInvalidArgument(st), "validator: not InvalidArgument");
    Check(absl::StartsWith(st.message(), absl::StrCat(field, ": ")),
          "validator: message does not name the field");
    Check(Printable(st.message()), "validator: control character");
  };
  switch (uint8_t(payload[0]) % 6) {
    case 0: {
      absl::Status st = agent::ValidateName("name", s);
      if (!st.ok()) return field_message(st, "name");
      Check(!s.empty() && s.size() <= 63, "name: length");
      for (size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        Check(alnum || (i > 0 && (c == '.' || c == '_' || c == '-')),
              "name: character");
      }
      return;
    }
    case 1: {
      absl::Status st = agent::ValidateHexId("id", s);
      if (!st.ok()) return field_message(st, "id");
      Check(!s.empty() && s.size() <= 64 &&
                s.find_first_not_of("0123456789abcdef") == std::string::npos,
            "hex id");
      return;
    }
    case 2:
    case 3: {
      const size_t max_len = payload[0] % 6 == 2 ? 4095 : 107;
      absl::Status st = agent::ValidateAbsolutePath("path", s, max_len);
      if (!st.ok()) return field_message(st, "path");
      Check(!s.empty() && s[0] == '/' && s.size() <= max_len &&
                s.find('\0') == std::string::npos,
            "path: shape");
      Check(!absl::StrContains(absl::StrCat(s, "/"), "/../") &&
                !absl::StrContains(absl::StrCat(s, "/"), "/./"),
            "path: dot component accepted");
      return;
    }
    case 4: {
      absl::Status st = agent::ValidateAddress("address", s);
      if (!st.ok()) return field_message(st, "address");
      const size_t colon = s.rfind(':');
      Check(s.size() <= 255 && colon != std::string::npos && colon > 0,
            "address: shape");
      // The port is what HOST:PORT says: 1..65535 in decimal digits.
      const std::string port = s.substr(colon + 1);
      Check(!port.empty() && port.size() <= 5 &&
                port.find_first_not_of("0123456789") == std::string::npos &&
                std::atoi(port.c_str()) >= 1 &&
                std::atoi(port.c_str()) <= 65535,
            "address: port \"" + port + "\" accepted");
      return;
    }
    case 5: {
      v1::GuestSpec spec;
      if (spec.ParseFromString(s)) {
        auto options = agent::GuestOptionsFromSpec(&spec);
        if (!options.ok()) {
          Check(absl::IsInvalidArgument(options.status()) &&
                    absl::StartsWith(options.status().message(), "spec.") &&
                    Printable(options.status().message()),
                "GuestOptionsFromSpec: error");
        } else {
          uint64_t total = 0;
          for (uint64_t r : options->ram.region_sizes) total += r;
          Check(!options->ram.region_sizes.empty() &&
                    options->ram.region_sizes.size() <= 16 &&
                    total <= (2ull << 30),
                "GuestOptionsFromSpec: regions");
          const uint32_t q = options->queue_size;
          Check(q >= 8 && q <= 1024 && (q & (q - 1)) == 0,
                "GuestOptionsFromSpec: queue size");
          Check(options->workload.max_blocks <= 4096 &&
                    options->workload.read_every <= 1000,
                "GuestOptionsFromSpec: workload");
        }
      }
      v1::MigrationOptions mo;
      if (mo.ParseFromString(s)) {
        absl::Status st = agent::ValidateMigrationOptions(mo);
        if (!st.ok()) {
          Check(absl::IsInvalidArgument(st) &&
                    absl::StartsWith(st.message(), "options.") &&
                    Printable(st.message()),
                "ValidateMigrationOptions: error");
        }
      }
      return;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(QuietProtobufLog);
  MakeScratch();
  StartServer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (g_server == nullptr) LLVMFuzzerInitialize(nullptr, nullptr);
  std::shared_ptr<agent::AgentService> service = FreshAgent();
  g_server->forwarder.Set(service);
  size_t pos = 0;
  for (int records = 0; records < 16 && pos + 3 <= size; ++records) {
    const Kind kind = static_cast<Kind>(data[pos] % kKinds);
    size_t len = data[pos + 1] | (data[pos + 2] << 8);
    pos += 3;
    len = std::min(len, size - pos);
    const std::string payload(reinterpret_cast<const char*>(data + pos), len);
    pos += len;
    switch (kind) {
      case kWatch:
        WatchRpc(payload);
        break;
      case kTransfer:
        TransferRpc(payload);
        break;
      case kDecodeFrames:
        DecodeFrames(payload);
        break;
      case kTransportFrames:
        TransportFrames(payload);
        break;
      case kValidators:
        Validators(payload);
        break;
      default:
        UnaryRpc(kind, payload);
        break;
    }
  }
  // Still serving.
  v1::ListResponse list;
  grpc::Status listed =
      g_server->stub->List(Context().get(), v1::ListRequest(), &list);
  Check(listed.ok(), "List after the input: " + listed.error_message());
  g_server->forwarder.Set(nullptr);
  service.reset();
  return 0;
}
