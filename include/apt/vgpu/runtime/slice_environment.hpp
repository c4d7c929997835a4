// The environment variables that bind a child process to a slice: GPU
// visibility by UUID, the slice's identity and limits for libvgpu-cuda.so
// (see intercept/abi.h), LD_PRELOAD in intercept mode, and the MPS client
// variables in mps mode. One function, used by the embedded runtime
// (VirtualGPU::environment) and by vgpud (the `environment` of a slice), so
// both bind processes the same way.
//
// Thread safety: a pure function of its argument (and of LD_PRELOAD in this
// process's environment, which it extends).
#pragma once

#include <apt/vgpu/config/vgpu_config.hpp>
#include <apt/vgpu/device/gpu_info.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace apt::vgpu::runtime {

struct SliceBinding {
  std::string id;  // VGPU_ID: the slice's name or id
  std::uint32_t gpu = 0;
  device::Vendor vendor = device::Vendor::nvidia;
  std::string gpu_uuid;
  std::optional<std::uint64_t> memory_limit;
  std::optional<double> compute_share;
  int priority = 0;
  config::Isolation isolation = config::Isolation::none;
  bool burst = false;
  std::string shm_name;           // the slice's accounting region (intercept)
  std::string gpu_shm_name;       // the GPU's pacing region (intercept), may be empty
  std::string intercept_library;  // path of libvgpu-cuda.so; empty when not found
  std::string mps_directory;      // the GPU's MPS pipe/log parent directory (mps)
};

[[nodiscard]] std::map<std::string, std::string> slice_environment(const SliceBinding& slice);

// LD_PRELOAD for a child: `library` first, then this process's own LD_PRELOAD
// (the one place that reads it), so tools the user preloads keep working.
[[nodiscard]] std::string preload_with_existing(const std::string& library);

// A share as the shortest decimal that round-trips to 4 places ("0.5", "0.25").
[[nodiscard]] std::string format_share(double share);

}  // namespace apt::vgpu::runtime
