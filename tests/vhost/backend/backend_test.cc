// Front-end <-> back-end integration over a socketpair with an EchoDevice
// and a synthetic guest: ring lifecycle, dirty logging, the SET_FEATURES
// rules, device state transfer.
#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <thread>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/vhost/backend/rig.h"
#include "vhost/protocol/features.h"

namespace vhostmig::vhost::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

#define ASSERT_OK(expr) ASSERT_TRUE((expr).ok()) << (expr)
#define ASSERT_OK_AND_ASSIGN(lhs, expr)            \
  auto lhs##_or = (expr);                          \
  ASSERT_TRUE(lhs##_or.ok()) << lhs##_or.status(); \
  auto lhs = *std::move(lhs##_or)

std::unique_ptr<Rig> MakeRig(BackendOptions options = {}) {
  auto rig = Rig::Create(std::move(options));
  EXPECT_TRUE(rig.ok()) << rig.status();
  return rig.ok() ? *std::move(rig) : nullptr;
}

Message EnableRingRaw(uint32_t index, uint32_t on) {
  Message m = MakeRequest(FrontendRequest::kSetVringEnable,
                          VhostUserVringState{index, on});
  m.flags |= kFlagNeedReply;
  return m;
}

Message SetFeaturesRaw(uint64_t features) {
  Message m = MakeRequest(FrontendRequest::kSetFeatures, features);
  m.flags |= kFlagNeedReply;
  return m;
}

uint64_t AckValue(const absl::StatusOr<Message>& reply) {
  if (!reply.ok() || reply->payload.size() != 8) return ~uint64_t{0};
  return *PayloadU64(*reply);
}

TEST(BackendTest, RingStartedByKickProcessesRequests) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK(rig->StartRing(0));
  ASSERT_OK_AND_ASSIGN(out, rig->Submit(0, "hello, ring"));
  ASSERT_OK(rig->WaitUsed(0, 1));
  EXPECT_EQ(rig->ReadGuest(out, 11), "hello, ring");
  EXPECT_EQ(rig->device().processed(), 1);
}

TEST(BackendTest, RingStartProcessesWorkMadeAvailableBeforeStart) {
  // The destination of a migration: requests are already in the avail ring
  // and nobody kicks. Starting the ring must process them once.
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK(rig->driver(0).Init(rig->memory(), RingGpa(0), kRingSize, false));
  ASSERT_OK_AND_ASSIGN(out, rig->AddWithoutKick(0, "early"));
  // StartRing re-inits the driver ring, so lay it out by hand instead.
  Frontend& f = rig->frontend();
  const VringLayout layout = rig->driver(0).layout();
  ASSERT_OK(f.SetVringNum(0, kRingSize));
  ASSERT_OK(f.SetVringBase(0, 0));
  VhostUserVringAddr addr{};
  addr.index = 0;
  addr.desc_user_addr = layout.desc_gpa + kFrontendBase;
  addr.avail_user_addr = layout.avail_gpa + kFrontendBase;
  addr.used_user_addr = layout.used_gpa + kFrontendBase;
  ASSERT_OK(f.SetVringAddr(addr));
  UniqueFd kick(::eventfd(0, EFD_CLOEXEC));
  UniqueFd call(::eventfd(0, EFD_CLOEXEC));
  ASSERT_OK(f.SetVringCall(0, call.get()));
  ASSERT_OK(f.SetVringEnable(0, true));
  ASSERT_OK(f.SetVringKick(0, kick.get()));  // starts the ring; no kick sent
  ASSERT_OK_AND_ASSIGN(base, f.GetVringBase(0));
  // GET_VRING_BASE may only stop the ring after the first pass.
  EXPECT_EQ(base, 1u);
  EXPECT_EQ(rig->ReadGuest(out, 5), "early");
}

TEST(BackendTest, GetVringBaseCompletesInFlightRequestFirst) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK(rig->StartRing(0));
  ASSERT_OK(rig->Submit(0, "one").status());
  ASSERT_OK(rig->WaitUsed(0, 1));
  rig->device().HoldNextChain();
  ASSERT_OK_AND_ASSIGN(out, rig->Submit(0, "two"));
  ASSERT_TRUE(rig->device().WaitHeld(kWait));
  absl::StatusOr<uint32_t> base;
  std::thread stopper([&] { base = rig->frontend().GetVringBase(0); });
  rig->device().ReleaseHeld();
  stopper.join();
  ASSERT_OK(base.status());
  EXPECT_EQ(*base, 2u);
  // The held request was completed before the reply: it is in the used ring.
  ASSERT_OK(rig->WaitUsed(0, 1));
  EXPECT_EQ(rig->ReadGuest(out, 3), "two");
}

TEST(BackendTest, RestartAtStoppedIndexContinuesWithoutLoss) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK(rig->StartRing(0));
  ASSERT_OK(rig->Submit(0, "a").status());
  ASSERT_OK(rig->WaitUsed(0, 1));
  ASSERT_OK_AND_ASSIGN(base, rig->frontend().GetVringBase(0));
  EXPECT_EQ(base, 1u);
  // While stopped, the guest queues more; the ring restarts at the index it
  // stopped at and picks it up without a kick.
  ASSERT_OK_AND_ASSIGN(out, rig->AddWithoutKick(0, "queued while stopped"));
  ASSERT_OK(rig->frontend().SetVringBase(0, base));
  UniqueFd kick(::eventfd(0, EFD_CLOEXEC));
  ASSERT_OK(rig->frontend().SetVringKick(0, kick.get()));
  ASSERT_OK(rig->WaitUsed(0, 1));
  EXPECT_EQ(rig->ReadGuest(out, 20), "queued while stopped");
  EXPECT_EQ(rig->device().processed(), 2);
}

TEST(BackendTest, LogAllMarksExactlyWrittenPagesAndUsedRing) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK(rig->StartRing(0));
  ASSERT_OK_AND_ASSIGN(log, DirtyLog::Create(kGuestSize));
  ASSERT_OK(
      rig->frontend().SetLogBase(log->size_bytes(), log->offset(), log->fd()));
  ASSERT_OK(rig->frontend().SetFeatures(rig->frontend().acked_features() |
                                        kLogAllMask));
  const std::string data(5000, 'x');  // spans two pages
  ASSERT_OK_AND_ASSIGN(out, rig->Submit(0, data));
  ASSERT_OK(rig->WaitUsed(0, 1));
  const VringLayout layout = rig->driver(0).layout();
  std::set<uint64_t> expected = Pages(out, data.size());
  for (uint64_t p : Pages(layout.used_gpa, 4 + 8)) expected.insert(p);
  EXPECT_EQ(DirtyPages(*log), expected);
  EXPECT_THAT(rig->device().log_all_changes(), ElementsAre(true));
}

TEST(BackendTest, NoDirtyMarksWithoutLogAll) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK(rig->StartRing(0));
  ASSERT_OK_AND_ASSIGN(log, DirtyLog::Create(kGuestSize));
  ASSERT_OK(
      rig->frontend().SetLogBase(log->size_bytes(), log->offset(), log->fd()));
  ASSERT_OK(rig->Submit(0, "quiet").status());
  ASSERT_OK(rig->WaitUsed(0, 1));
  EXPECT_THAT(DirtyPages(*log), IsEmpty());
}

TEST(BackendTest, SetLogBaseWhileRunningSwitchesToTheNewLog) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK(rig->StartRing(0));
  ASSERT_OK_AND_ASSIGN(log1, DirtyLog::Create(kGuestSize));
  ASSERT_OK(rig->frontend().SetLogBase(log1->size_bytes(), log1->offset(),
                                       log1->fd()));
  ASSERT_OK(rig->frontend().SetFeatures(rig->frontend().acked_features() |
                                        kLogAllMask));
  ASSERT_OK_AND_ASSIGN(out1, rig->Submit(0, "first"));
  ASSERT_OK(rig->WaitUsed(0, 1));
  EXPECT_TRUE(DirtyPages(*log1).count(out1 / kDirtyPageSize));

  ASSERT_OK_AND_ASSIGN(log2, DirtyLog::Create(kGuestSize));
  ASSERT_OK(rig->frontend().SetLogBase(log2->size_bytes(), log2->offset(),
                                       log2->fd()));
  const std::string data(4096, 'y');
  ASSERT_OK_AND_ASSIGN(out2, rig->Submit(0, data));
  ASSERT_OK(rig->WaitUsed(0, 1));
  const std::set<uint64_t> pages2 = DirtyPages(*log2);
  for (uint64_t p : Pages(out2, data.size())) EXPECT_TRUE(pages2.count(p));
  EXPECT_THAT(DirtyPages(*log1), IsEmpty());
}

TEST(BackendTest, SetFeaturesKeepsEnabledRingsEnabled) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK(rig->StartRing(0, /*enable=*/false));
  // Enabled behind the front-end's back, so it cannot re-enable it.
  EXPECT_EQ(AckValue(rig->Raw(EnableRingRaw(0, 1))), 0u);
  const uint64_t features = rig->frontend().acked_features();
  EXPECT_EQ(AckValue(rig->Raw(SetFeaturesRaw(features | kLogAllMask))), 0u);
  EXPECT_EQ(AckValue(rig->Raw(SetFeaturesRaw(features))), 0u);
  ASSERT_OK_AND_ASSIGN(out, rig->Submit(0, "still enabled"));
  ASSERT_OK(rig->WaitUsed(0, 1));
  EXPECT_EQ(rig->ReadGuest(out, 13), "still enabled");
}

TEST(BackendTest, SetFeaturesWithoutProtocolFeaturesEnablesAllRings) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK(rig->StartRing(0, /*enable=*/false));
  ASSERT_OK(rig->StartRing(1, /*enable=*/false));
  ASSERT_OK(rig->Submit(0, "zero").status());
  ASSERT_OK(rig->Submit(1, "one").status());
  const uint64_t features =
      rig->frontend().acked_features() & ~kProtocolFeaturesMask;
  EXPECT_EQ(AckValue(rig->Raw(SetFeaturesRaw(features))), 0u);
  ASSERT_OK(rig->WaitUsed(0, 1));
  ASSERT_OK(rig->WaitUsed(1, 1));
}

TEST(BackendTest, DisabledStartedRingIsNotProcessed) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK(rig->StartRing(0, /*enable=*/false));
  ASSERT_OK(rig->Submit(0, "waits").status());
  ASSERT_OK_AND_ASSIGN(base, rig->frontend().GetVringBase(0));
  EXPECT_EQ(base, 0u);
  EXPECT_EQ(rig->device().processed(), 0);
}

TEST(BackendTest, LegacyOptionDisablesRingsOnSetFeatures) {
  BackendOptions options;
  options.legacy_disable_rings_on_set_features = true;
  auto rig = MakeRig(options);
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK(rig->StartRing(0, /*enable=*/false));
  EXPECT_EQ(AckValue(rig->Raw(EnableRingRaw(0, 1))), 0u);
  const uint64_t features = rig->frontend().acked_features();
  EXPECT_EQ(AckValue(rig->Raw(SetFeaturesRaw(features | kLogAllMask))), 0u);
  ASSERT_OK(rig->Submit(0, "stalls").status());
  // The bug: the ring was disabled, so the request was not consumed.
  ASSERT_OK_AND_ASSIGN(base, rig->frontend().GetVringBase(0));
  EXPECT_EQ(base, 0u);
}

TEST(BackendTest, FrontendSurvivesLegacyBackendWhenTogglingLogAll) {
  BackendOptions options;
  options.legacy_disable_rings_on_set_features = true;
  auto rig = MakeRig(options);
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK(rig->StartRing(0));  // enabled through the front-end
  ASSERT_OK_AND_ASSIGN(log, DirtyLog::Create(kGuestSize));
  ASSERT_OK(
      rig->frontend().SetLogBase(log->size_bytes(), log->offset(), log->fd()));
  const uint64_t features = rig->frontend().acked_features();
  ASSERT_OK(rig->frontend().SetFeatures(features | kLogAllMask));
  ASSERT_OK(rig->Submit(0, "while logging").status());
  ASSERT_OK(rig->WaitUsed(0, 1));
  ASSERT_OK(rig->frontend().SetFeatures(features));  // migration cancelled
  ASSERT_OK(rig->Submit(0, "after cancel").status());
  ASSERT_OK(rig->WaitUsed(0, 1));
  EXPECT_EQ(rig->device().processed(), 2);
  EXPECT_THAT(rig->device().log_all_changes(), ElementsAre(true, false));
}

TEST(BackendTest, WithoutProtocolFeaturesRingIsEnabledOnStart) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate(0, /*protocol_features=*/false));
  ASSERT_OK(rig->StartRing(0, /*enable=*/false));
  ASSERT_OK(rig->Submit(0, "legacy").status());
  ASSERT_OK(rig->WaitUsed(0, 1));
}

TEST(BackendTest, DeviceStateSaveStreamsStateAndChecksOk) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  const std::string state(200000, 's');  // more than a pipe buffer
  rig->device().set_state(state);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd read_end(p[0]);
  ASSERT_OK_AND_ASSIGN(theirs, rig->frontend().SetDeviceStateFd(
                                   TransferDirection::kSave,
                                   MigrationPhase::kStopped, UniqueFd(p[1])));
  EXPECT_FALSE(theirs.valid());  // "use yours"
  std::string got;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(read_end.get(), buf, sizeof(buf));
    ASSERT_GE(n, 0);
    if (n == 0) break;
    got.append(buf, n);
  }
  EXPECT_EQ(got, state);
  EXPECT_TRUE(rig->frontend().CheckDeviceState().ok());
}

TEST(BackendTest, DeviceStateLoadInstallsStateAndChecksOk) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd write_end(p[1]);
  ASSERT_OK_AND_ASSIGN(theirs, rig->frontend().SetDeviceStateFd(
                                   TransferDirection::kLoad,
                                   MigrationPhase::kStopped, UniqueFd(p[0])));
  EXPECT_FALSE(theirs.valid());
  const std::string state = "inode table goes here";
  ASSERT_EQ(::write(write_end.get(), state.data(), state.size()),
            static_cast<ssize_t>(state.size()));
  write_end.reset();
  EXPECT_TRUE(rig->frontend().CheckDeviceState().ok());
  EXPECT_EQ(rig->device().state(), state);
}

TEST(BackendTest, FailedDeviceStateLoadIsReportedByCheck) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  rig->device().set_fail_load(true);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd write_end(p[1]);
  ASSERT_OK(rig->frontend()
                .SetDeviceStateFd(TransferDirection::kLoad,
                                  MigrationPhase::kStopped, UniqueFd(p[0]))
                .status());
  write_end.reset();
  EXPECT_FALSE(rig->frontend().CheckDeviceState().ok());
}

TEST(BackendTest, CheckDeviceStateWithoutTransferFails) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  EXPECT_FALSE(rig->frontend().CheckDeviceState().ok());
}

TEST(BackendTest, ConfigQueueNumAndStatusAreAnswered) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK_AND_ASSIGN(config, rig->frontend().GetConfig(0, 40));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(config.data())),
            EchoDevice::kTag);
  ASSERT_OK_AND_ASSIGN(queues, rig->frontend().GetQueueNum());
  EXPECT_EQ(queues, EchoDevice::kNumQueues);
  ASSERT_OK(rig->frontend().SetStatus(0x0f));
  ASSERT_OK_AND_ASSIGN(status, rig->frontend().GetStatus());
  EXPECT_EQ(status, 0x0f);
  EXPECT_FALSE(rig->frontend().GetConfig(0, 200).ok());
}

TEST(BackendTest, ResetDeviceStopsRingsAndResetsDevice) {
  auto rig = MakeRig();
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK(rig->StartRing(0));
  ASSERT_OK(rig->frontend().ResetDevice());
  EXPECT_TRUE(rig->device().WaitResets(1, kWait));
  // Set up again from scratch and it serves.
  ASSERT_OK(rig->Negotiate());
  ASSERT_OK(rig->StartRing(0));
  ASSERT_OK(rig->Submit(0, "again").status());
  ASSERT_OK(rig->WaitUsed(0, 1));
}

}  // namespace
}  // namespace vhostmig::vhost::testing

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
