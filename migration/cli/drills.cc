// Cancel-and-resume drills (agent_client.h, RunDrills), shared by
// `vhostmig drill` and `vhostmig demo`.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "migration/cli/agent_client.h"

namespace vhostmig::cli {
namespace {

absl::StatusOr<v1::VerifyGuestResponse> Verify(AgentConnection& agent,
                                               const std::string& device) {
  v1::VerifyGuestRequest request;
  request.set_device(device);
  v1::VerifyGuestResponse response;
  grpc::Status s = agent.stub->VerifyGuest(CallContext(absl::Seconds(60)).get(),
                                           request, &response);
  if (!s.ok()) return CallError("VerifyGuest on " + agent.address, s);
  return response;
}

DrillIteration RunOne(AgentConnection& source, AgentConnection& destination,
                      MigrateArgs args, int number, v1::Phase phase) {
  DrillIteration it;
  it.number = number;
  it.cancel_at = phase;
  const absl::Time start = absl::Now();
  auto fail = [&](std::string why) {
    it.ok = false;
    it.failure = std::move(why);
    it.total_ms = absl::ToInt64Milliseconds(absl::Now() - start);
    return it;
  };
  auto before = Verify(source, args.device);
  if (!before.ok()) return fail(std::string(before.status().message()));
  if (!before->ok()) {
    return fail("the workload failed its checks before the drill: " +
                before->message());
  }
  it.steps_before = before->workload_steps();
  args.options.set_cancel_at(phase);
  args.confirm = false;
  auto started = StartMigration(source, destination, args);
  if (!started.ok()) return fail(std::string(started.status().message()));
  it.migration_id = started->id();
  auto settled =
      FollowMigration(source, started->id(), false, absl::Minutes(2));
  if (!settled.ok()) return fail(std::string(settled.status().message()));
  if (settled->state() != v1::CANCELLED || !settled->source_resumed()) {
    return fail(
        absl::StrCat("the source ended ", StateLabel(settled->state()),
                     ", expected cancelled and resumed: ", settled->message()));
  }
  auto far = AwaitSettled(destination, started->id(), absl::Seconds(60));
  if (!far.ok()) return fail(std::string(far.status().message()));
  if (far->phase() != v1::TORN_DOWN) {
    return fail(absl::StrCat("the destination ended ", StateLabel(far->state()),
                             " in phase ", PhaseLabel(far->phase()),
                             ", expected torn down: ", far->message()));
  }
  auto device = FindDevice(destination, args.device);
  if (!device.ok()) return fail(std::string(device.status().message()));
  if (device->guest_state() != v1::GUEST_STATE_UNSPECIFIED ||
      !device->migration_id().empty()) {
    return fail(absl::StrCat("the destination still holds a guest (",
                             v1::GuestState_Name(device->guest_state()), ")"));
  }
  // The resumed workload must make progress and pass its checks: every
  // block and the journal read back through the handles opened before the
  // drill (a request lost or run twice shows in the journal).
  absl::SleepFor(absl::Milliseconds(200));
  auto after = Verify(source, args.device);
  if (!after.ok()) return fail(std::string(after.status().message()));
  it.steps_after = after->workload_steps();
  it.blocks_verified = after->blocks_verified();
  if (!after->ok()) {
    return fail("the workload failed its checks after resuming: " +
                after->message());
  }
  if (it.steps_after <= it.steps_before) {
    return fail(absl::StrCat("the workload did not progress after resuming (",
                             it.steps_before, " -> ", it.steps_after,
                             " steps)"));
  }
  it.ok = true;
  it.total_ms = absl::ToInt64Milliseconds(absl::Now() - start);
  return it;
}

}  // namespace

std::vector<DrillIteration> RunDrills(AgentConnection& source,
                                      AgentConnection& destination,
                                      const MigrateArgs& args, int iterations,
                                      const std::string& cancel_at,
                                      bool print_progress) {
  static constexpr v1::Phase kPhases[] = {
      v1::SETUP,      v1::LOG_START,  v1::PRE_COPY, v1::STOP,
      v1::FINAL_SYNC, v1::SAVE_STATE, v1::CHECK};
  absl::BitGen random;
  std::vector<DrillIteration> out;
  for (int i = 1; i <= iterations; ++i) {
    v1::Phase phase;
    if (cancel_at == "random" || !ParsePhase(cancel_at, &phase)) {
      phase = kPhases[absl::Uniform<size_t>(random, 0, std::size(kPhases))];
    }
    DrillIteration it = RunOne(source, destination, args, i, phase);
    if (print_progress) {
      std::fprintf(stderr, "drill %d/%d: cancel at %-10s %s %s\n", i,
                   iterations, PhaseLabel(phase), it.ok ? "ok  " : "FAIL",
                   it.ok ? absl::StrCat("(", it.total_ms, " ms, workload ",
                                        it.steps_before, " -> ", it.steps_after,
                                        " steps, verified)")
                               .c_str()
                         : it.failure.c_str());
    }
    out.push_back(std::move(it));
  }
  return out;
}

}  // namespace vhostmig::cli
