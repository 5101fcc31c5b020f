// How agents and their clients connect: TLS credentials from PEM files and
// the channel and server settings every agent connection uses.
//
// Mutual TLS: when an agent is given --tls-cert/--tls-key/--tls-ca it
// requires and verifies a client certificate signed by that CA on every
// connection (GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY),
// so a client without one, or with one from another CA, fails the
// handshake. Clients (the CLI, and an agent dialling its peer for Transfer)
// present their own certificate and verify the agent's against the CA.
//
// Liveness: channels send HTTP/2 keepalive pings every second and give up
// after `keepalive_timeout` without an answer, and servers accept such
// pings, so a cut link or a dead peer ends a Transfer stream within a few
// seconds rather than at TCP's retransmission timeout (minutes).
//
// Thread-safety: pure functions.
#ifndef VHOSTMIG_MIGRATION_AGENT_CONNECTION_H_
#define VHOSTMIG_MIGRATION_AGENT_CONNECTION_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace vhostmig::agent {

struct TlsFiles {
  std::string cert;  // PEM certificate chain
  std::string key;   // PEM private key
  std::string ca;    // PEM CA bundle peers are verified against
  // Expected name in the server's certificate when it differs from the
  // host part of the address (clients only).
  std::string server_name;
  bool enabled() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};

// InvalidArgument when only some of cert/key/ca are given; the errno status
// of an unreadable file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& tls);
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const TlsFiles& tls);

struct ChannelSettings {
  absl::Duration keepalive_time = absl::Seconds(1);
  absl::Duration keepalive_timeout = absl::Seconds(3);
};

// A channel to an agent with keepalive and message limits set.
absl::StatusOr<std::shared_ptr<grpc::Channel>> DialAgent(
    const std::string& address, const TlsFiles& tls,
    const ChannelSettings& settings = {});

// Message limits and keepalive acceptance for an agent's server.
void ConfigureAgentServer(grpc::ServerBuilder* builder);

}  // namespace vhostmig::agent

#endif  // VHOSTMIG_MIGRATION_AGENT_CONNECTION_H_
