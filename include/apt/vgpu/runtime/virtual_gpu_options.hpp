// What a VirtualGPU is asked for: the seed's gpu_id, memory_limit and
// compute_ratio, plus priority, fault handling and isolation.
//
// Thread safety: a plain value type.
#pragma once

#include <apt/vgpu/config/vgpu_config.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace apt::vgpu::runtime {

struct VirtualGpuOptions {
  std::uint32_t gpu_id = 0;
  // Bytes reserved on the GPU and enforced inside bound processes. Absent:
  // nothing is reserved and nothing is enforced (the slice shares freely).
  std::optional<std::uint64_t> memory_limit;
  // Fraction of the GPU's compute, in (0, 1]. Absent: no reservation, no pacing.
  std::optional<double> compute_ratio;
  int priority = 0;
  // On a lost/unhealthy GPU: move to fallback_gpu (or any healthy GPU with room).
  bool auto_recover = false;
  std::optional<std::uint32_t> fallback_gpu;
  config::Isolation isolation = config::Isolation::none;
  // Burst: let the slice use idle compute beyond its share (enforced by libvgpu-cuda.so).
  bool burst = false;
  // Label shown in listings; defaults to "vgpu-<lease id>".
  std::string name;

  // The profile's virtual_gpu defaults and isolation mode.
  [[nodiscard]] static VirtualGpuOptions from_config(const config::VgpuConfig& config);
};

}  // namespace apt::vgpu::runtime
