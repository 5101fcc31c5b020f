#include "migration/probe/probe.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "vhost/protocol/features.h"

namespace vhostmig::migration {
namespace {

using vhost::FeatureMask;
using vhost::HasProtocolFeature;
using vhost::ProtocolFeature;

constexpr uint32_t kFsTagSize = 36;
constexpr uint32_t kFsConfigSize = kFsTagSize + sizeof(uint32_t);

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c < 0x20 || c >= 0x7f) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string JsonList(const std::vector<std::string>& items) {
  std::vector<std::string> quoted;
  for (const std::string& s : items) quoted.push_back(JsonString(s));
  return absl::StrCat("[", absl::StrJoin(quoted, ", "), "]");
}

void Judge(ProbeReport& r) {
  const bool log_all = r.features & vhost::kLogAllMask;
  const bool shmfd =
      HasProtocolFeature(r.protocol_features, ProtocolFeature::kLogShmfd);
  r.dirty_logging = log_all && shmfd;
  r.device_state =
      HasProtocolFeature(r.protocol_features, ProtocolFeature::kDeviceState);
  if (!(r.features & vhost::kProtocolFeaturesMask)) {
    r.reason =
        "no: no VHOST_USER_F_PROTOCOL_FEATURES, so no shared-memory "
        "dirty log (LOG_SHMFD)";
  } else if (!log_all) {
    r.reason =
        "no: VHOST_F_LOG_ALL not offered, the back-end cannot log its "
        "writes to guest memory";
  } else if (!shmfd) {
    r.reason = "no: LOG_SHMFD not offered, the dirty log cannot be shared";
  } else if (r.device_state) {
    r.migratable = true;
    r.reason = "yes: dirty logging and device state transfer (DEVICE_STATE)";
  } else if (r.fs_tag.has_value()) {
    r.reason =
        "no: a virtio-fs back-end keeps internal state (open files) "
        "but does not offer DEVICE_STATE";
  } else {
    r.migratable = true;
    r.reason =
        "only if the device is stateless: dirty logging works, but "
        "there is no DEVICE_STATE to move internal state (a virtio-fs "
        "back-end is not stateless)";
  }
}

}  // namespace

absl::StatusOr<ProbeReport> Probe(vhost::Frontend& frontend) {
  ProbeReport r;
  r.features = frontend.backend_features();
  r.protocol_features = frontend.backend_protocol_features();
  RETURN_IF_ERROR(frontend.SetOwner());
  const uint64_t wanted = FeatureMask(ProtocolFeature::kMq) |
                          FeatureMask(ProtocolFeature::kConfig) |
                          FeatureMask(ProtocolFeature::kConfigureMemSlots);
  if (r.features & vhost::kProtocolFeaturesMask) {
    RETURN_IF_ERROR(frontend.SetProtocolFeatures(r.protocol_features & wanted));
  }
  if (HasProtocolFeature(r.protocol_features, ProtocolFeature::kMq)) {
    ASSIGN_OR_RETURN(r.queue_num, frontend.GetQueueNum());
  }
  if (HasProtocolFeature(r.protocol_features,
                         ProtocolFeature::kConfigureMemSlots)) {
    ASSIGN_OR_RETURN(r.max_mem_slots, frontend.GetMaxMemSlots());
  }
  if (HasProtocolFeature(r.protocol_features, ProtocolFeature::kConfig)) {
    absl::StatusOr<std::vector<uint8_t>> config =
        frontend.GetConfig(0, kFsConfigSize);
    if (config.ok()) {
      const char* tag = reinterpret_cast<const char*>(config->data());
      r.fs_tag = std::string(tag, strnlen(tag, kFsTagSize));
      uint32_t queues;
      std::memcpy(&queues, config->data() + kFsTagSize, sizeof(queues));
      r.fs_num_request_queues = queues;
    } else {
      r.config_error = std::string(config.status().message());
    }
  }
  Judge(r);
  return r;
}

std::string FormatText(const ProbeReport& r) {
  std::string out;
  absl::StrAppend(&out, "features:          0x", absl::Hex(r.features), " ",
                  absl::StrJoin(vhost::FeatureNames(r.features), " "), "\n");
  absl::StrAppend(
      &out, "protocol features: 0x", absl::Hex(r.protocol_features), " ",
      absl::StrJoin(vhost::ProtocolFeatureNames(r.protocol_features), " "),
      "\n");
  if (r.queue_num)
    absl::StrAppend(&out, "queues:            ", *r.queue_num, "\n");
  if (r.max_mem_slots) {
    absl::StrAppend(&out, "max memory slots:  ", *r.max_mem_slots, "\n");
  }
  if (r.fs_tag) {
    absl::StrAppend(&out, "virtio-fs tag:     \"", *r.fs_tag, "\"\n");
    absl::StrAppend(&out, "request queues:    ", *r.fs_num_request_queues,
                    "\n");
  } else if (!r.config_error.empty()) {
    absl::StrAppend(&out, "config:            unreadable (", r.config_error,
                    ")\n");
  }
  absl::StrAppend(&out, "migratable:        ", r.reason, "\n");
  return out;
}

std::string FormatJson(const ProbeReport& r) {
  std::vector<std::string> fields;
  fields.push_back(absl::StrCat("\"features\": ", r.features));
  fields.push_back(absl::StrCat("\"feature_names\": ",
                                JsonList(vhost::FeatureNames(r.features))));
  fields.push_back(
      absl::StrCat("\"protocol_features\": ", r.protocol_features));
  fields.push_back(
      absl::StrCat("\"protocol_feature_names\": ",
                   JsonList(vhost::ProtocolFeatureNames(r.protocol_features))));
  if (r.queue_num) fields.push_back(absl::StrCat("\"queues\": ", *r.queue_num));
  if (r.max_mem_slots) {
    fields.push_back(absl::StrCat("\"max_mem_slots\": ", *r.max_mem_slots));
  }
  if (r.fs_tag) {
    fields.push_back(absl::StrCat("\"fs_tag\": ", JsonString(*r.fs_tag)));
    fields.push_back(
        absl::StrCat("\"fs_num_request_queues\": ", *r.fs_num_request_queues));
  }
  if (!r.config_error.empty()) {
    fields.push_back(
        absl::StrCat("\"config_error\": ", JsonString(r.config_error)));
  }
  fields.push_back(
      absl::StrCat("\"dirty_logging\": ", r.dirty_logging ? "true" : "false"));
  fields.push_back(
      absl::StrCat("\"device_state\": ", r.device_state ? "true" : "false"));
  fields.push_back(
      absl::StrCat("\"migratable\": ", r.migratable ? "true" : "false"));
  fields.push_back(absl::StrCat("\"reason\": ", JsonString(r.reason)));
  return absl::StrCat("{\n  ", absl::StrJoin(fields, ",\n  "), "\n}\n");
}

}  // namespace vhostmig::migration
