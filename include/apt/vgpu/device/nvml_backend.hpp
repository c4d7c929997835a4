// NvmlBackend reads NVIDIA GPUs through NVML, loaded at run time with
// dlopen("libnvidia-ml.so.1") (or the path in VGPU_NVML_LIBRARY, or one given
// explicitly), so the project builds and runs where no NVIDIA driver exists.
//
// We declare the NVML subset we call ourselves (src/device/nvml/nvml_api.hpp)
// and resolve the newest versioned symbol the driver offers: nvmlInit_v2,
// nvmlDeviceGetCount_v2, nvmlDeviceGetHandleByIndex_v2,
// nvmlDeviceGetMemoryInfo_v2 and nvmlDeviceGetComputeRunningProcesses_v3,
// falling back to older versions on older drivers. A metric that returns
// NVML_ERROR_NOT_SUPPORTED is absent; NVML_ERROR_GPU_IS_LOST marks the GPU
// lost. Critical XID events are collected through an NVML event set when the
// driver supports it.
//
// Thread safety: all methods may be called concurrently (calls are serialised).
#pragma once

#include <apt/vgpu/device/backend.hpp>

#include <memory>
#include <string>

namespace apt::vgpu::device {

class NvmlBackend final : public Backend {
 public:
  // Opens NVML and enumerates GPUs. Throws DeviceError when the library
  // cannot be loaded or initialised (the message says which and why).
  explicit NvmlBackend(const std::string& library_path = {});
  ~NvmlBackend() override;

  [[nodiscard]] std::string_view name() const noexcept override { return "nvml"; }
  [[nodiscard]] std::string_view device_type() const noexcept override { return "cuda"; }

  // The default library path: VGPU_NVML_LIBRARY when set, else "libnvidia-ml.so.1".
  [[nodiscard]] static std::string default_library();

 private:
  GpuMetrics do_metrics(std::uint32_t index) override;
  std::vector<GpuProcess> do_processes(std::uint32_t index) override;
  GpuHealth do_health(std::uint32_t index) override;

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace apt::vgpu::device
