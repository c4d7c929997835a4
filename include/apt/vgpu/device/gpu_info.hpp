// Static facts about one physical GPU, read once when a backend opens.
//
// Thread safety: a plain value type.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace apt::vgpu::device {

enum class Vendor { nvidia, amd, simulated };

[[nodiscard]] std::string_view to_string(Vendor vendor) noexcept;

struct ComputeCapability {
  int major = 0;
  int minor = 0;
  friend bool operator==(const ComputeCapability&, const ComputeCapability&) = default;
};

struct GpuInfo {
  std::uint32_t index = 0;    // the backend's ordinal (NVML index, ROCm SMI index, sim index)
  std::string uuid;           // e.g. "GPU-8f3c..." (NVIDIA form); stable across reboots
  std::string name;           // marketing name, e.g. "NVIDIA H100 80GB HBM3"
  Vendor vendor = Vendor::simulated;
  std::uint64_t memory_total = 0;  // bytes
  std::optional<ComputeCapability> compute_capability;  // CUDA capability; absent for AMD
  std::optional<std::uint32_t> sm_count;                // absent where the backend cannot tell
};

}  // namespace apt::vgpu::device
