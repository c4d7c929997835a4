#include <apt/vgpu/intercept/abi.h>
#include <apt/vgpu/runtime/slice_environment.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>

namespace apt::vgpu::runtime {

std::string format_share(double share) {
  std::string text = fmt::format("{:.4f}", share);
  while (text.back() == '0') text.pop_back();
  if (text.back() == '.') text.pop_back();
  return text;
}

std::string preload_with_existing(const std::string& library) {
  const char* existing = std::getenv("LD_PRELOAD");
  return existing != nullptr && *existing != '\0' ? library + ":" + existing : library;
}

std::map<std::string, std::string> slice_environment(const SliceBinding& s) {
  std::map<std::string, std::string> env;
  if (s.vendor == device::Vendor::amd) {
    env["ROCR_VISIBLE_DEVICES"] = s.gpu_uuid;
  } else {
    // By UUID, so the binding survives a different enumeration order in the child.
    env["CUDA_VISIBLE_DEVICES"] = s.gpu_uuid;
    env.emplace("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
  }
  env[VGPU_ENV_ID] = s.id;
  env[VGPU_ENV_PHYSICAL_GPU] = std::to_string(s.gpu);
  env[VGPU_ENV_GPU_UUID] = s.gpu_uuid;
  env[VGPU_ENV_ISOLATION] = std::string(config::to_string(s.isolation));
  env[VGPU_ENV_PRIORITY] = std::to_string(s.priority);
  if (s.memory_limit) env[VGPU_ENV_MEMORY_LIMIT] = std::to_string(*s.memory_limit);
  if (s.compute_share) env[VGPU_ENV_COMPUTE_SHARE] = format_share(*s.compute_share);
  if (s.burst) env.emplace(VGPU_ENV_BURST, "1");

  switch (s.isolation) {
    case config::Isolation::none: break;
    case config::Isolation::intercept: {
      env[VGPU_ENV_SHM_NAME] = s.shm_name;
      if (!s.gpu_shm_name.empty()) env[VGPU_ENV_GPU_SHM_NAME] = s.gpu_shm_name;
      if (!s.intercept_library.empty()) env["LD_PRELOAD"] = preload_with_existing(s.intercept_library);
      break;
    }
    case config::Isolation::mps: {
      if (s.compute_share) {
        const long percent = std::clamp(std::lround(*s.compute_share * 100.0), 1L, 100L);
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = std::to_string(percent);
      }
      if (s.memory_limit) {
        // The child sees its one GPU as device 0; the limit is in MiB ("M").
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = fmt::format("0={}M", *s.memory_limit >> 20U);
      }
      const std::filesystem::path dir(s.mps_directory);
      env["CUDA_MPS_PIPE_DIRECTORY"] = (dir / "pipe").string();
      env["CUDA_MPS_LOG_DIRECTORY"] = (dir / "log").string();
      break;
    }
  }
  return env;
}

}  // namespace apt::vgpu::runtime
