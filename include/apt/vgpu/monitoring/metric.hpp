// The metrics a GPUMonitor samples, their units, and the seed's metric names.
//
// Seed names select groups of metrics: "utilization", "memory" (used and
// total), "temperature", "power" (draw and limit), "clocks" (SM and memory),
// "pcie" (rx and tx), "bandwidth" (memory-bandwidth utilization) and
// "processes" (per-process attribution). An unknown name is an
// InvalidArgument listing the valid ones.
//
// Thread safety: pure functions over constant tables.
#pragma once

#include <apt/vgpu/device/gpu_metrics.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace apt::vgpu::monitoring {

enum class Metric {
  utilization,
  memory_used,
  memory_total,
  temperature,
  power,
  power_limit,
  sm_clock,
  memory_clock,
  pcie_rx,
  pcie_tx,
  memory_bandwidth,
};

inline constexpr int kMetricCount = 11;

struct MetricInfo {
  Metric metric;
  std::string_view name;  // "temperature"
  std::string_view unit;  // "°C"
  std::string_view help;
};

[[nodiscard]] const MetricInfo& info(Metric metric) noexcept;
[[nodiscard]] const std::vector<MetricInfo>& all_metrics() noexcept;
// A single metric by its name ("memory_used", "temperature", ...); throws InvalidArgument listing them.
[[nodiscard]] Metric parse_metric(std::string_view name);
// The metrics selected by seed names; throws InvalidArgument naming the bad one and listing the valid ones.
[[nodiscard]] std::vector<Metric> expand_metric_names(const std::vector<std::string>& names, bool* processes = nullptr);
// The value of `metric` in a sample (absent when unsupported), as a double in the metric's unit.
[[nodiscard]] std::optional<double> value_of(const device::GpuMetrics& sample, Metric metric) noexcept;

}  // namespace apt::vgpu::monitoring
