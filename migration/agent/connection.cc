#include "migration/agent/connection.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "migration/agent/wire.h"

namespace vhostmig::agent {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& what,
                                    const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read the TLS ", what, " file ", path));
  }
  std::stringstream s;
  s << in.rdbuf();
  if (s.str().find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("the TLS ", what, " file ", path, " is not PEM"));
  }
  return s.str();
}

absl::Status CheckComplete(const TlsFiles& tls) {
  if (tls.cert.empty() || tls.key.empty() || tls.ca.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs all three of --tls-cert, --tls-key and --tls-ca (mutual "
        "TLS: each side proves itself and checks the other)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  if (absl::Status s = CheckComplete(tls); !s.ok()) return s;
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  auto ca = ReadPem("CA", tls.ca);
  if (!ca.ok()) return ca.status();
  auto cert = ReadPem("certificate", tls.cert);
  if (!cert.ok()) return cert.status();
  auto key = ReadPem("key", tls.key);
  if (!key.ok()) return key.status();
  options.pem_root_certs = *ca;
  options.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureChannelCredentials();
  if (absl::Status s = CheckComplete(tls); !s.ok()) return s;
  grpc::SslCredentialsOptions options;
  auto ca = ReadPem("CA", tls.ca);
  if (!ca.ok()) return ca.status();
  auto cert = ReadPem("certificate", tls.cert);
  if (!cert.ok()) return cert.status();
  auto key = ReadPem("key", tls.key);
  if (!key.ok()) return key.status();
  options.pem_root_certs = *ca;
  options.pem_cert_chain = *cert;
  options.pem_private_key = *key;
  return grpc::SslCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> DialAgent(
    const std::string& address, const TlsFiles& tls,
    const ChannelSettings& settings) {
  auto creds = MakeChannelCredentials(tls);
  if (!creds.ok()) return creds.status();
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
              absl::ToInt64Milliseconds(settings.keepalive_time));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
              absl::ToInt64Milliseconds(settings.keepalive_timeout));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, kMaxFrameBytes + (1 << 20));
  args.SetInt(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, kMaxFrameBytes + (1 << 20));
  // Reconnect quickly after a link comes back (drills, tests).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Each dial gets its own connection: a stream broken by a cut link must
  // not be retried on a connection shared with other calls.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (!tls.server_name.empty()) {
    args.SetSslTargetNameOverride(tls.server_name);
  }
  return grpc::CreateCustomChannel(address, *creds, args);
}

void ConfigureAgentServer(grpc::ServerBuilder* builder) {
  builder->SetMaxReceiveMessageSize(kMaxFrameBytes + (1 << 20));
  builder->SetMaxSendMessageSize(kMaxFrameBytes + (1 << 20));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 3000);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  builder->AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
}

}  // namespace vhostmig::agent
