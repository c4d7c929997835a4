#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/device/backend_factory.hpp>
#include <apt/vgpu/device/nvml_backend.hpp>
#include <apt/vgpu/device/rocm_backend.hpp>
#include <apt/vgpu/device/sim_backend.hpp>

#include <filesystem>
#include <cstdlib>
#include <fmt/format.h>

namespace apt::vgpu::device {

BackendKind parse_backend_kind(std::string_view text) {
  if (text == "auto") return BackendKind::automatic;
  if (text == "nvml") return BackendKind::nvml;
  if (text == "rocm") return BackendKind::rocm;
  if (text == "sim") return BackendKind::sim;
  throw InvalidArgument(fmt::format("backend: '{}' is not a backend; use one of auto, nvml, rocm, sim", text));
}

std::optional<BackendKind> backend_from_environment() {
  const char* value = std::getenv("VGPU_BACKEND");
  if (value == nullptr || *value == '\0') return std::nullopt;
  try {
    return parse_backend_kind(value);
  } catch (const InvalidArgument&) {
    throw InvalidArgument(
        fmt::format("VGPU_BACKEND: '{}' is not a backend; use one of auto, nvml, rocm, sim (or unset it)", value));
  }
}

std::string_view to_string(BackendKind kind) noexcept {
  switch (kind) {
    case BackendKind::automatic: return "auto";
    case BackendKind::nvml: return "nvml";
    case BackendKind::rocm: return "rocm";
    case BackendKind::sim: return "sim";
  }
  return "auto";
}

std::unique_ptr<Backend> open_backend(BackendKind kind, const SimConfig& sim) {
  switch (kind) {
    case BackendKind::nvml: return std::make_unique<NvmlBackend>();
    case BackendKind::rocm: return std::make_unique<RocmBackend>();
    case BackendKind::sim: return std::make_unique<SimBackend>(sim);
    case BackendKind::automatic: break;
  }
  std::string reasons;
  for (BackendKind candidate : {BackendKind::nvml, BackendKind::rocm}) {
    // ROCm SMI needs the amdgpu kernel driver (/dev/kfd); probing without it
    // only makes the library print its own errors.
    if (candidate == BackendKind::rocm && !std::filesystem::exists("/dev/kfd")) {
      reasons += "rocm: no /dev/kfd (amdgpu driver not loaded); ";
      continue;
    }
    try {
      auto backend = open_backend(candidate, sim);
      if (backend->gpu_count() > 0) return backend;
      reasons += fmt::format("{}: no GPUs; ", to_string(candidate));
    } catch (const DeviceError& e) {
      reasons += fmt::format("{}; ", e.what());
    }
  }
  log::debug(fmt::format("auto backend: {}", reasons));
  log::notice(fmt::format("no GPU found (NVML and ROCm SMI unavailable); using the simulated node: {} x {}",
                          sim.gpu_count, sim.name));
  return std::make_unique<SimBackend>(sim);
}

}  // namespace apt::vgpu::device
