// Prometheus text exposition (format 0.0.4) of a NodeStats sample: every GPU
// reading that is present (absent readings are left out, never written as 0),
// health, per-process and per-vGPU attribution, active alerts, and the
// monitor's own counters. Names are vgpu_* in base units (bytes, seconds,
// watts, celsius, hertz, ratios 0..1), with HELP and TYPE lines; labels gpu,
// uuid, name, and vgpu / pid / command where they apply. `promtool check
// metrics` accepts the output (tests run it).
//
// Thread safety: pure function.
#pragma once

#include <apt/vgpu/monitoring/node_stats.hpp>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace apt::vgpu::monitoring {

struct ExporterExtras {
  std::vector<std::tuple<std::string, std::uint32_t, std::string>> active_alerts;  // (kind, gpu, vgpu)
  std::uint64_t samples_taken = 0;
};

[[nodiscard]] std::string render_prometheus(const NodeStats& stats, const ExporterExtras& extras = {});

}  // namespace apt::vgpu::monitoring
