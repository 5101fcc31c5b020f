#include "migration/progress.h"

namespace vhostmig::migration {

const char* PhaseName(SourcePhase phase) {
  switch (phase) {
    case SourcePhase::kSetup:
      return "Setup";
    case SourcePhase::kLogStart:
      return "LogStart";
    case SourcePhase::kPreCopy:
      return "PreCopy";
    case SourcePhase::kStop:
      return "Stop";
    case SourcePhase::kFinalSync:
      return "FinalSync";
    case SourcePhase::kSaveState:
      return "SaveState";
    case SourcePhase::kCheck:
      return "Check";
    case SourcePhase::kHandover:
      return "Handover";
    case SourcePhase::kCancelling:
      return "Cancelling";
    case SourcePhase::kDone:
      return "Done";
  }
  return "?";
}

const char* PhaseName(DestinationPhase phase) {
  switch (phase) {
    case DestinationPhase::kPrepare:
      return "Prepare";
    case DestinationPhase::kReceivePages:
      return "ReceivePages";
    case DestinationPhase::kLoadState:
      return "LoadState";
    case DestinationPhase::kCheck:
      return "Check";
    case DestinationPhase::kStart:
      return "Start";
    case DestinationPhase::kTornDown:
      return "TornDown";
    case DestinationPhase::kDone:
      return "Done";
  }
  return "?";
}

}  // namespace vhostmig::migration
