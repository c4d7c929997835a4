// RocmBackend reads AMD GPUs through ROCm SMI, loaded at run time with
// dlopen("librocm_smi64.so") (or VGPU_ROCM_SMI_LIBRARY, or an explicit path).
// Types come from ROCm SMI's own header (Debian's librocm-smi-dev); nothing
// links against the library, so the project builds and runs without it.
//
// RSMI_STATUS_NOT_SUPPORTED makes a metric absent. ROCm SMI reports no
// "GPU lost" code of its own; a device that stops answering with any other
// error is reported unhealthy with the error text.
//
// Thread safety: all methods may be called concurrently (calls are serialised).
#pragma once

#include <apt/vgpu/device/backend.hpp>

#include <memory>
#include <string>

namespace apt::vgpu::device {

class RocmBackend final : public Backend {
 public:
  // Opens ROCm SMI and enumerates GPUs; throws DeviceError on failure.
  explicit RocmBackend(const std::string& library_path = {});
  ~RocmBackend() override;

  [[nodiscard]] std::string_view name() const noexcept override { return "rocm"; }
  [[nodiscard]] std::string_view device_type() const noexcept override { return "cuda"; }

  // VGPU_ROCM_SMI_LIBRARY when set, else "librocm_smi64.so".
  [[nodiscard]] static std::string default_library();

 private:
  GpuMetrics do_metrics(std::uint32_t index) override;
  std::vector<GpuProcess> do_processes(std::uint32_t index) override;
  GpuHealth do_health(std::uint32_t index) override;

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace apt::vgpu::device
