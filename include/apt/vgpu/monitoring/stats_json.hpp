// The JSON form of GPU readings and monitor samples, shared by every face that
// prints or serves them: `vgpu devices --json` (gpu_json), one line of
// `vgpu monitor --json` (stats_json), and vgpud's GET /v1/stats, which adds each
// GPU's recent utilization so that `vgpu top` can draw its sparklines from the
// daemon's monitor. parse_stats_json reads such a document back.
//
// Absent readings are JSON null. The shapes are documented in docs/monitoring.md.
//
// Thread safety: pure functions.
#pragma once

#include <apt/vgpu/device/backend.hpp>
#include <apt/vgpu/monitoring/node_stats.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string_view>
#include <vector>

namespace apt::vgpu::monitoring {

// One GPU: its facts, readings, health and (when given) processes.
[[nodiscard]] nlohmann::json gpu_json(const device::GpuInfo& info, const device::GpuMetrics& metrics,
                                      const device::GpuHealth& health,
                                      const std::vector<device::GpuProcess>& processes);

// Recent utilization samples (percent, oldest first) by GPU index.
using UtilizationHistory = std::map<std::uint32_t, std::vector<double>>;

// One sample; `gpus` supplies each sampled GPU's facts (by index). With a
// non-empty `history` the document carries it as "utilization_history".
[[nodiscard]] nlohmann::json stats_json(const NodeStats& stats, const std::vector<device::GpuInfo>& gpus,
                                        const UtilizationHistory& history = {});

struct StatsDocument {
  NodeStats stats;
  UtilizationHistory history;
};

// Reads a stats_json document back (vgpud's /v1/stats). Throws InvalidArgument
// naming the field when the text is not such a document.
[[nodiscard]] StatsDocument parse_stats_json(std::string_view text);

}  // namespace apt::vgpu::monitoring
