// The `vgpu:` section of a profile, with every default filled in.
//
// The seed's keys (enabled, max_virtual_gpus, scheduling, isolation,
// memory_pooling, runtime.{context_switching,preemption},
// monitoring.{enabled,interval,metrics}) plus what the modules need. The
// shipped profiles under profiles/ document every key; docs/profiles.md is the
// reference. Values here are already validated (see load_profile()).
//
// Thread safety: a plain value type.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace apt::vgpu::config {

// How a virtual GPU's limits are enforced inside the processes bound to it.
enum class Isolation {
  none,       // accounting only: the ledger reserves the slice, nothing inside the process enforces it
  intercept,  // libvgpu-cuda.so interposes the CUDA driver API (memory limit, compute pacing)
  mps,        // CUDA MPS with per-client thread percentage and pinned memory limit
};

[[nodiscard]] std::string_view to_string(Isolation isolation) noexcept;
// "none" | "intercept" | "mps" (also "true" -> intercept and "false" -> none, as the
// seed writes `isolation: true`); throws InvalidArgument listing the choices.
[[nodiscard]] Isolation parse_isolation(std::string_view text);

// What VirtualGPU::from_config() creates, and what `vgpu create/run` use for flags left out.
struct VirtualGpuDefaults {
  std::uint32_t gpu = 0;
  std::optional<std::uint64_t> memory_limit;  // bytes; absent: no reservation and no limit
  std::optional<double> compute_ratio;        // 0 < r <= 1; absent: no reservation and no pacing
  int priority = 0;
  bool auto_recover = false;
  std::optional<std::uint32_t> fallback_gpu;
};

struct RuntimeSection {
  std::string context_switching = "fast";  // fast | balanced | strict (time-slice length policy)
  bool preemption = true;                  // seed: "enabled" | "disabled"
};

struct MemorySection {
  // The largest pool alignment (granule): a pool keeps each block's slack, under one granule, in 24
  // bits. The profile loader and GPUMemoryManager both refuse more.
  static constexpr std::uint64_t kLargestAlignment = std::uint64_t{16} << 20U;
  std::optional<std::uint64_t> pool_size;  // absent: the whole GPU
  double fragmentation_threshold = 0.1;    // compact when 1 - largest_free/total_free exceeds this
  std::uint64_t alignment = 256;
  std::string eviction = "lru";            // lru | none
  bool lazy = true;
};

struct SchedulerSection {
  std::string placement = "best_fit";   // best_fit | spread | round_robin
  std::uint32_t max_retries = 0;
  double retry_backoff_seconds = 1.0;
  std::map<std::string, double> weights;  // fair policy: user/group -> weight
};

struct AlertThresholds {
  std::optional<double> temperature_celsius = 85.0;
  std::optional<double> memory_percent = 95.0;
  std::optional<double> power_percent;
};

struct MonitoringSection {
  bool enabled = true;
  double interval_seconds = 1.0;
  std::vector<std::string> metrics{"utilization", "memory", "temperature"};
  std::uint32_t history = 3600;  // samples kept per GPU
  AlertThresholds alerts;
};

struct SimulatedNodeSection {
  std::uint32_t gpus = 8;
  std::uint64_t memory = 80'000'000'000ULL;
  std::string name = "Simulated H100 80GB";
  std::uint64_t seed = 42;
};

struct VgpuConfig {
  bool enabled = true;
  std::uint32_t max_virtual_gpus = 8;       // slices leased at once on this node
  std::string scheduling = "fifo";          // fifo | priority | fair | adaptive
  Isolation isolation = Isolation::none;
  bool memory_pooling = true;
  double oversubscription = 1.0;            // >= 1: lease up to factor x memory and compute
  std::string backend = "auto";             // auto | nvml | rocm | sim
  VirtualGpuDefaults virtual_gpu;
  RuntimeSection runtime;
  MemorySection memory;
  SchedulerSection scheduler;
  MonitoringSection monitoring;
  SimulatedNodeSection simulated_node;
};

// The metric names a profile's monitoring.metrics may list.
[[nodiscard]] const std::vector<std::string>& known_metrics();

}  // namespace apt::vgpu::config
