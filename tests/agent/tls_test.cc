// Mutual TLS between clients and agents and between agents: a client with
// a certificate from the agents' CA works (a whole migration runs, its
// Transfer stream authenticated both ways); a client with no certificate,
// with one from another CA, or without TLS at all is refused. The PKI is
// made by openssl at test time (make_certs.sh) in $TEST_TMPDIR.
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/agent/agent_harness.h"

ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, tls_ca);

namespace vhostmig::agent::testing {
namespace {

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (system("command -v openssl >/dev/null 2>&1") != 0) {
      GTEST_SKIP() << "openssl is not installed (tools/setup.sh installs it)";
    }
    const char* tmp = getenv("TEST_TMPDIR");
    pki_ = std::string(tmp != nullptr ? tmp : dir_.path().c_str()) + "/pki";
    ASSERT_EQ(system(("bash tests/agent/make_certs.sh " + pki_).c_str()), 0);
    agent_tls_ = {pki_ + "/server.pem", pki_ + "/server.key", pki_ + "/ca.pem",
                  ""};
    shared_ = dir_.path() + "/shared";
    std::filesystem::create_directories(shared_);
    auto a = LocalAgent::Start(dir_.path() + "/a", agent_tls_);
    ASSERT_TRUE(a.ok()) << a.status();
    a_ = *std::move(a);
    auto b = LocalAgent::Start(dir_.path() + "/b", agent_tls_);
    ASSERT_TRUE(b.ok()) << b.status();
    b_ = *std::move(b);
  }

  // The fs daemons' sanitizer reports are in their logs.
  void TearDown() override {
    a_.reset();
    b_.reset();
    const std::string reports = SanitizerReportsIn(dir_.path());
    EXPECT_TRUE(reports.empty()) << reports;
  }

  void UseClient(const std::string& cert, const std::string& key) {
    absl::SetFlag(&FLAGS_tls_cert, cert.empty() ? "" : pki_ + "/" + cert);
    absl::SetFlag(&FLAGS_tls_key, key.empty() ? "" : pki_ + "/" + key);
    absl::SetFlag(&FLAGS_tls_ca, pki_ + "/ca.pem");
  }

  // A List call over `credentials`.
  grpc::Status ListWith(std::shared_ptr<grpc::ChannelCredentials> credentials) {
    auto channel = grpc::CreateChannel(a_->address(), credentials);
    auto stub = v1::Agent::NewStub(channel);
    v1::ListResponse list;
    return stub->List(cli::CallContext(absl::Seconds(5)).get(), {}, &list);
  }

  ScratchDir dir_;
  std::string pki_;
  std::string shared_;
  TlsFiles agent_tls_;
  std::unique_ptr<LocalAgent> a_;
  std::unique_ptr<LocalAgent> b_;
};

TEST_F(TlsTest, MutualTlsMigrationWorks) {
  UseClient("client.pem", "client.key");
  auto ca = cli::ConnectAgent(a_->address());
  ASSERT_TRUE(ca.ok()) << ca.status();
  auto cb = cli::ConnectAgent(b_->address());
  ASSERT_TRUE(cb.ok()) << cb.status();
  ASSERT_TRUE(StartFsDevice(*ca->stub, "fs0", shared_).ok());
  ASSERT_TRUE(StartFsDevice(*cb->stub, "fs0", shared_).ok());
  absl::Status created = CreateGuest(*ca->stub, "fs0");
  ASSERT_TRUE(created.ok()) << created;
  cli::MigrateArgs args;
  args.device = "fs0";
  auto result = cli::Migrate(*ca, *cb, args);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->state(), v1::CONFIRMED) << result->message();
  EXPECT_TRUE(result->result().memory_verified());
}

TEST_F(TlsTest, ClientWithoutCertificateIsRefused) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = [&] {
    std::ifstream in(pki_ + "/ca.pem");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  grpc::Status s = ListWith(grpc::SslCredentials(options));
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  UseClient("", "");
  EXPECT_FALSE(cli::ConnectAgent(a_->address(), absl::Seconds(3)).ok());
}

TEST_F(TlsTest, ClientWithCertificateFromAnotherCaIsRefused) {
  UseClient("rogue.pem", "rogue.key");
  auto c = cli::ConnectAgent(a_->address(), absl::Seconds(3));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("cannot reach the agent"),
            std::string::npos)
      << c.status();
}

TEST_F(TlsTest, PlaintextClientIsRefused) {
  grpc::Status s = ListWith(grpc::InsecureChannelCredentials());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
}

}  // namespace
}  // namespace vhostmig::agent::testing
