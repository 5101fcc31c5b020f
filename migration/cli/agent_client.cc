#include "migration/cli/agent_client.h"

#include <unistd.h>

#include <algorithm>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "migration/agent/connection.h"
#include "proto/health.grpc.pb.h"

ABSL_FLAG(std::string, tls_cert, "",
          "agent commands: PEM client certificate (agents with mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "agent commands: PEM client key");
ABSL_FLAG(std::string, tls_ca, "",
          "agent commands: PEM CA the agents' certificates chain to");
ABSL_FLAG(std::string, tls_server_name, "",
          "agent commands: name expected in the agents' certificates when it "
          "is not the address's host");

ABSL_FLAG(std::string, agent, "127.0.0.1:7345",
          "cancel/status/watch/resolve: the agent to ask");
ABSL_FLAG(std::string, id, "", "the migration id (Prepare returns it)");
ABSL_FLAG(std::string, source, "", "migrate/drill: the source agent HOST:PORT");
ABSL_FLAG(std::string, destination, "",
          "migrate/drill: the destination agent HOST:PORT");
ABSL_FLAG(std::string, destination_peer, "",
          "migrate/drill: how the source agent reaches the destination, when "
          "not by --destination");
ABSL_FLAG(std::string, device, "", "migrate/drill: the device to migrate");

namespace vhostmig::cli {

absl::StatusOr<AgentConnection> ConnectAgent(const std::string& address,
                                             absl::Duration timeout) {
  agent::TlsFiles tls{absl::GetFlag(FLAGS_tls_cert),
                      absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_ca),
                      absl::GetFlag(FLAGS_tls_server_name)};
  auto channel = agent::DialAgent(address, tls);
  if (!channel.ok()) return channel.status();
  auto health = grpc::health::v1::Health::NewStub(*channel);
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  context.set_wait_for_ready(true);
  grpc::Status s = health->Check(&context, request, &response);
  if (!s.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "cannot reach the agent at ", address, ": ", s.error_message(),
        ". Is vhostmig-agent running there (vhostmig-agent --listen ", address,
        ")?",
        tls.enabled() ? " Are --tls-cert/--tls-key/--tls-ca right for it?"
                      : " If it uses TLS, pass --tls-cert, --tls-key and "
                        "--tls-ca."));
  }
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(absl::StrCat("the agent at ", address,
                                               " is not serving (shutting "
                                               "down?)"));
  }
  AgentConnection c;
  c.address = address;
  c.channel = *channel;
  c.stub = v1::Agent::NewStub(c.channel);
  return c;
}

std::unique_ptr<grpc::ClientContext> CallContext(absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return context;
}

absl::Status CallError(const std::string& what, const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(what, ": ", status.error_message()));
}

absl::StatusOr<v1::DeviceInfo> FindDevice(AgentConnection& agent,
                                          const std::string& device) {
  v1::ListResponse list;
  grpc::Status s = agent.stub->List(CallContext().get(), {}, &list);
  if (!s.ok()) return CallError("List on " + agent.address, s);
  for (const v1::DeviceInfo& d : list.devices()) {
    if (d.name() == device) return d;
  }
  return absl::NotFoundError(absl::StrCat(
      "no device ", device, " on the agent at ", agent.address,
      " (vhostmig status --agent ", agent.address, " lists them)"));
}

absl::StatusOr<v1::MigrationStatus> StartMigration(AgentConnection& source,
                                                   AgentConnection& destination,
                                                   const MigrateArgs& args) {
  auto device = FindDevice(source, args.device);
  if (!device.ok()) return device.status();
  if (device->guest_state() != v1::GUEST_RUNNING) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", args.device, " on ", source.address,
                     " has no running guest to migrate (",
                     v1::GuestState_Name(device->guest_state()), ")"));
  }
  v1::PrepareRequest prepare;
  prepare.set_device(args.device);
  *prepare.mutable_spec() = device->guest();
  prepare.set_wait_for_source_ms(
      absl::ToInt64Milliseconds(args.wait_for_source));
  v1::PrepareResponse prepared;
  grpc::Status s =
      destination.stub->Prepare(CallContext().get(), prepare, &prepared);
  if (!s.ok()) {
    return CallError("Prepare on the destination " + destination.address, s);
  }
  v1::PerformRequest perform;
  perform.set_device(args.device);
  perform.set_destination(args.destination_peer.empty()
                              ? destination.address
                              : args.destination_peer);
  perform.set_migration_id(prepared.migration_id());
  perform.set_token(prepared.token());
  *perform.mutable_options() = args.options;
  v1::MigrationStatus started;
  s = source.stub->Perform(CallContext().get(), perform, &started);
  if (!s.ok()) {
    // The destination gives up on its own when no stream comes; say so
    // rather than leave the operator wondering.
    v1::CancelRequest cancel;
    cancel.set_migration_id(prepared.migration_id());
    v1::MigrationStatus ignored;
    (void)destination.stub->Cancel(CallContext().get(), cancel, &ignored);
    return CallError("Perform on the source " + source.address, s);
  }
  return started;
}

absl::StatusOr<v1::MigrationStatus> FollowMigration(AgentConnection& agent,
                                                    const std::string& id,
                                                    bool progress_bar,
                                                    absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::WatchRequest request;
  request.set_migration_id(id);
  auto reader = agent.stub->Watch(&context, request);
  v1::ProgressEvent event;
  v1::MigrationStatus last;
  bool settled = false;
  const bool tty = isatty(STDERR_FILENO);
  v1::Phase printed_phase = v1::PHASE_UNSPECIFIED;
  while (reader->Read(&event)) {
    last = event.status();
    if (progress_bar) {
      if (tty) {
        std::fprintf(stderr, "\r\033[K%s", ProgressLine(last).c_str());
      } else if (last.phase() != printed_phase || event.final()) {
        // Logs get one line per phase, not a carriage-return animation.
        std::fprintf(stderr, "%s\n", ProgressLine(last).c_str());
      }
      printed_phase = last.phase();
    }
    if (event.final()) {
      settled = true;
      break;
    }
  }
  if (progress_bar && tty) std::fprintf(stderr, "\n");
  if (settled) {
    context.TryCancel();
    (void)reader->Finish();
    return last;
  }
  grpc::Status s = reader->Finish();
  return absl::UnavailableError(
      absl::StrCat("lost track of migration ", id, " on ", agent.address, ": ",
                   s.ok() ? "the watch ended early" : s.error_message(),
                   ". It may still be running: vhostmig status --agent ",
                   agent.address, " --id ", id));
}

absl::StatusOr<v1::MigrationStatus> AwaitSettled(AgentConnection& agent,
                                                 const std::string& id,
                                                 absl::Duration timeout) {
  return FollowMigration(agent, id, false, timeout);
}

absl::StatusOr<v1::MigrationStatus> Migrate(AgentConnection& source,
                                            AgentConnection& destination,
                                            const MigrateArgs& args) {
  auto started = StartMigration(source, destination, args);
  if (!started.ok()) return started.status();
  auto settled =
      FollowMigration(source, started->id(), args.progress_bar, args.timeout);
  if (!settled.ok()) return settled.status();
  if (settled->state() == v1::COMPLETED && args.confirm) {
    v1::ConfirmRequest confirm;
    confirm.set_migration_id(settled->id());
    v1::MigrationStatus confirmed;
    grpc::Status s =
        source.stub->Confirm(CallContext().get(), confirm, &confirmed);
    if (!s.ok()) return CallError("Confirm on the source " + source.address, s);
    return confirmed;
  }
  return settled;
}

const char* PhaseLabel(v1::Phase phase) {
  switch (phase) {
    case v1::SETUP:
      return "setup";
    case v1::LOG_START:
      return "log-start";
    case v1::PRE_COPY:
      return "pre-copy";
    case v1::STOP:
      return "stop";
    case v1::FINAL_SYNC:
      return "final-sync";
    case v1::SAVE_STATE:
      return "save-state";
    case v1::CHECK:
      return "check";
    case v1::HANDOVER:
      return "handover";
    case v1::CANCELLING:
      return "cancelling";
    case v1::DONE:
      return "done";
    case v1::PREPARE:
      return "prepare";
    case v1::RECEIVE_PAGES:
      return "receive-pages";
    case v1::LOAD_STATE:
      return "load-state";
    case v1::DESTINATION_CHECK:
      return "check";
    case v1::START:
      return "start";
    case v1::TORN_DOWN:
      return "torn-down";
    default:
      return "-";
  }
}

bool ParsePhase(const std::string& text, v1::Phase* phase) {
  for (v1::Phase p : {v1::SETUP, v1::LOG_START, v1::PRE_COPY, v1::STOP,
                      v1::FINAL_SYNC, v1::SAVE_STATE, v1::CHECK}) {
    if (text == PhaseLabel(p)) {
      *phase = p;
      return true;
    }
  }
  return false;
}

const char* StateLabel(v1::MigrationState state) {
  switch (state) {
    case v1::PREPARED:
      return "prepared";
    case v1::ACTIVE:
      return "active";
    case v1::AWAITING_COMMIT:
      return "awaiting-commit";
    case v1::COMPLETED:
      return "completed";
    case v1::CONFIRMED:
      return "confirmed";
    case v1::CANCELLED:
      return "cancelled";
    case v1::FAILED:
      return "failed";
    case v1::IN_DOUBT:
      return "IN DOUBT";
    case v1::RESOLVED:
      return "resolved";
    default:
      return "unknown";
  }
}

std::string Bytes(uint64_t bytes) {
  if (bytes >= (1ull << 30))
    return absl::StrFormat("%.1f GiB", bytes / 1073741824.0);
  if (bytes >= (1ull << 20))
    return absl::StrFormat("%.1f MiB", bytes / 1048576.0);
  if (bytes >= (1ull << 10)) return absl::StrFormat("%.1f KiB", bytes / 1024.0);
  return absl::StrCat(bytes, " B");
}

std::string ProgressLine(const v1::MigrationStatus& status) {
  const v1::Progress& p = status.progress();
  double fraction = 0;
  if (status.role() == v1::DESTINATION) {
    fraction =
        p.pages_total() ? double(p.pages_received()) / p.pages_total() : 0;
  } else if (status.phase() >= v1::FINAL_SYNC && status.phase() <= v1::DONE) {
    fraction = 1;
  } else if (p.pages_sent() + p.pages_remaining() > 0) {
    // Of what is known to need sending: round 1's pages, then each
    // round's dirty set (QEMU reports it the same way).
    fraction =
        double(p.pages_sent()) / double(p.pages_sent() + p.pages_remaining());
    fraction = std::min(fraction, 0.99);
  }
  constexpr int kWidth = 24;
  const int filled = static_cast<int>(fraction * kWidth + 0.5);
  std::string bar =
      "[" + std::string(filled, '#') + std::string(kWidth - filled, '.') + "]";
  std::string line = absl::StrFormat(
      "%s %3d%%  %-10s round %-2u dirty %6.0f pages/s  expected downtime "
      "%4u ms  sent %s  state %s",
      bar, static_cast<int>(fraction * 100 + 0.5), PhaseLabel(status.phase()),
      p.round(), p.dirty_pages_per_second(),
      static_cast<unsigned>(p.expected_downtime_ms()),
      Bytes(p.page_bytes_sent()), Bytes(p.state_bytes()));
  if (status.state() != v1::ACTIVE) {
    absl::StrAppend(&line, "  ", StateLabel(status.state()));
  }
  return line;
}

std::string DescribeMigration(const v1::MigrationStatus& s) {
  const v1::MigrationResult& r = s.result();
  std::string out = absl::StrCat("migration ", s.id(), " of device ",
                                 s.device(), ": ", StateLabel(s.state()), "\n");
  if (!s.message().empty()) absl::StrAppend(&out, "  ", s.message(), "\n");
  if (s.state() == v1::COMPLETED || s.state() == v1::CONFIRMED) {
    absl::StrAppend(
        &out,
        absl::StrFormat("  downtime %u ms, total %u ms, %u rounds, %u pages "
                        "(%s), device state %s, memory %s\n",
                        static_cast<unsigned>(r.downtime_ms()),
                        static_cast<unsigned>(r.total_ms()), r.rounds(),
                        static_cast<unsigned>(r.pages_sent()),
                        Bytes(r.page_bytes_sent()), Bytes(r.state_bytes()),
                        r.memory_verified() ? "verified" : "MISMATCH"));
  }
  return out;
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

std::string JsonQuote(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

}  // namespace vhostmig::cli
