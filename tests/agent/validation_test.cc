// The agent's request validation (migration/agent/validation.h) and the
// error messages that echo request fields, including the regressions that
// agent_request_fuzz found or pinned (docs/reliability.md):
//   - a path with control characters was echoed raw into StartDevice's
//     error message (found by libFuzzer: a tab);
//   - ValidateAddress took a port with a sign or whitespace ("h: 80\n").
#include "migration/agent/validation.h"

#include <string>

#include "gtest/gtest.h"
#include "migration/agent/agent_service.h"

namespace vhostmig::agent {
namespace {

bool Printable(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

TEST(QuoteForMessageTest, EscapesControlBytesAndKeepsUtf8) {
  EXPECT_EQ(QuoteForMessage("/srv/a b"), "\"/srv/a b\"");
  EXPECT_EQ(QuoteForMessage("a\tb\n\x1b[31m"), "\"a\\x09b\\x0a\\x1b[31m\"");
  EXPECT_EQ(QuoteForMessage("q\"\\"), "\"q\\x22\\x5c\"");
  EXPECT_EQ(QuoteForMessage("/donn\xc3\xa9"
                            "es"),
            "\"/donn\xc3\xa9"
            "es\"");
  EXPECT_EQ(QuoteForMessage(std::string(300, 'x'), 4), "\"xxxx...\"");
}

TEST(ValidateAddressTest, PortIsDecimalDigitsOnly) {
  for (const char* ok :
       {"127.0.0.1:7345", "[::1]:1", "agent-b:65535", "host_1.example:00080"}) {
    EXPECT_TRUE(ValidateAddress("a", ok).ok()) << ok;
  }
  for (const char* bad :
       {"h:+80", "h: 80", "h:80\n", "h:80 ", "h:", "h:0", "h:65536", ":80", "h",
        "h:0x50", "h:-1", "h:123456", "h\n:80", "h/x:80"}) {
    absl::Status s = ValidateAddress("destination", bad);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << bad;
    EXPECT_TRUE(Printable(std::string(s.message()))) << s;
    EXPECT_EQ(s.message().rfind("destination: ", 0), 0u) << s;
  }
}

TEST(ValidateTest, NamesIdsAndPaths) {
  EXPECT_TRUE(ValidateName("name", "fs0").ok());
  EXPECT_TRUE(ValidateName("name", "a.b_c-d").ok());
  for (const char* bad : {"", "-a", ".a", "A", "a/b", "../etc", "a\n"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ValidateName("name", bad))) << bad;
  }
  EXPECT_TRUE(
      absl::IsInvalidArgument(ValidateName("name", std::string(64, 'a'))));
  EXPECT_TRUE(ValidateHexId("id", "00ff").ok());
  for (const char* bad : {"", "00FF", "0x1", "g"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ValidateHexId("id", bad))) << bad;
  }
  EXPECT_TRUE(ValidateAbsolutePath("p", "/srv/shared").ok());
  for (const char* bad : {"", "srv", "/a/../b", "/a/./b", "/..", "/."}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ValidateAbsolutePath("p", bad))) << bad;
  }
  EXPECT_TRUE(absl::IsInvalidArgument(
      ValidateAbsolutePath("p", std::string("/a\0b", 4))));
  EXPECT_TRUE(absl::IsInvalidArgument(
      ValidateAbsolutePath("p", "/" + std::string(107, 'a'), 107)));
}

TEST(ValidateTest, GuestSpecBoundsAndDefaults) {
  v1::GuestSpec empty;
  auto options = GuestOptionsFromSpec(&empty);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_GT(empty.region_bytes_size(), 0);  // defaults filled in
  v1::GuestSpec huge;
  huge.add_region_bytes(1ull << 40);
  EXPECT_TRUE(absl::IsInvalidArgument(GuestOptionsFromSpec(&huge).status()));
  v1::GuestSpec odd_queue;
  odd_queue.set_queue_size(100);
  EXPECT_TRUE(
      absl::IsInvalidArgument(GuestOptionsFromSpec(&odd_queue).status()));
  v1::MigrationOptions late_cancel;
  late_cancel.set_cancel_at(v1::HANDOVER);
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateMigrationOptions(late_cancel)));
}

// The service's own messages about a path it was given.
TEST(StartDeviceTest, ErrorMessagesNeverEchoControlCharacters) {
  AgentOptions options;
  options.log = [](const std::string&) {};
  auto service = AgentService::Create(options);
  ASSERT_TRUE(service.ok()) << service.status();
  grpc::ServerContext context;
  v1::DeviceInfo info;

  v1::StartDeviceRequest dir;
  dir.set_name("fs0");
  dir.set_shared_dir("/nonexistent/fs1\t/\x1b]0;owned\x07\n");
  grpc::Status s = (*service)->StartDevice(&context, &dir, &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Printable(s.error_message())) << s.error_message();
  EXPECT_NE(s.error_message().find("/nonexistent/fs1\\x09/\\x1b]0;owned"),
            std::string::npos)
      << s.error_message();

  v1::StartDeviceRequest sock;
  sock.set_name("fs0");
  sock.set_attach_socket("/nonexistent/s\r.sock");
  s = (*service)->StartDevice(&context, &sock, &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Printable(s.error_message())) << s.error_message();
}

}  // namespace
}  // namespace vhostmig::agent
