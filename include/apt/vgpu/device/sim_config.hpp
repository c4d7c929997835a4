// The shape of a simulated node: how many GPUs, how much memory each, their
// name, and the seed that makes simulated readings repeatable.
//
// Sources, later overriding earlier: the defaults below (8 x "Simulated H100
// 80GB", 80 GB each), the profile's vgpu.simulated_node section, the
// environment (VGPU_SIM_GPUS, VGPU_SIM_SEED, VGPU_SIM_LOST), then CLI flags.
//
// VGPU_SIM_GPUS takes COUNT[xMEMORY][:NAME], e.g. "4", "4x40GB",
// "2x24GiB:Simulated L4". VGPU_SIM_LOST takes a comma-separated list of GPU
// indices that start lost (for trying fault handling end to end).
//
// Thread safety: a plain value type.
#pragma once

#include <apt/vgpu/device/gpu_info.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace apt::vgpu::device {

struct SimConfig {
  std::uint32_t gpu_count = 8;
  std::uint64_t memory_per_gpu = 80'000'000'000ULL;  // 80 GB
  std::string name = "Simulated H100 80GB";
  std::uint64_t seed = 42;
  std::uint32_t sm_count = 132;
  ComputeCapability compute_capability{9, 0};
  double power_limit_watts = 700.0;
  double idle_power_watts = 70.0;
  double idle_temperature_celsius = 32.0;
  double loaded_temperature_celsius = 78.0;
  std::vector<std::uint32_t> lost_gpus;  // indices that start lost

  // Applies a COUNT[xMEMORY][:NAME] shape. Throws InvalidArgument naming the
  // text and the expected form.
  void apply_shape(std::string_view spec);
  // Applies VGPU_SIM_GPUS, VGPU_SIM_SEED and VGPU_SIM_LOST when set.
  void apply_environment();
};

}  // namespace apt::vgpu::device
