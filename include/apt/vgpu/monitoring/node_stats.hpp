// One sample of the whole node: every GPU's readings and health, the node
// aggregate, per-process and per-vGPU attribution. The seed's
// get_current_stats().
//
// Aggregates: utilization and memory-bandwidth utilization are means over
// GPUs that report them; memory, power and PCIe are sums; temperature is the
// maximum; clocks are means. Absent everywhere stays absent.
//
// Thread safety: plain value types.
#pragma once

#include <apt/vgpu/device/gpu_health.hpp>
#include <apt/vgpu/device/gpu_metrics.hpp>
#include <apt/vgpu/monitoring/vgpu_view.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace apt::vgpu::monitoring {

struct GpuSample {
  std::uint32_t gpu_id = 0;
  std::string uuid;
  std::string name;
  device::GpuMetrics metrics;
  device::HealthState health = device::HealthState::healthy;
  std::string health_detail;
  std::uint64_t xid_events = 0;
  std::optional<std::uint64_t> ecc_uncorrected_errors;
};

struct NodeStats {
  std::chrono::system_clock::time_point time;
  std::string backend;
  std::vector<GpuSample> gpus;
  device::GpuMetrics aggregate;
  std::vector<ProcessUsage> processes;
  std::vector<VgpuUsage> vgpus;
  double sample_seconds = 0;  // how long the sample took
};

}  // namespace apt::vgpu::monitoring
