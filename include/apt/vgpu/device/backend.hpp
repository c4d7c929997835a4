// device::Backend is the only way the rest of the project talks to GPUs.
//
// A backend enumerates its GPUs once, when it is opened, and the list is
// fixed for its lifetime (gpus() is stable). metrics(), processes() and
// health() read live values. A metric the hardware does not support is
// absent from GpuMetrics; a GPU that has been lost answers metrics() with
// every field absent and health() with HealthState::lost rather than
// throwing, so monitors keep running.
//
// Implementations: NvmlBackend (libnvidia-ml.so.1, dlopen), RocmBackend
// (librocm_smi64.so, dlopen) and SimBackend (a simulated node). Use
// open_backend() (backend_factory.hpp) to pick one.
//
// Thread safety: every public method may be called concurrently from any
// thread; implementations serialise calls into vendor libraries themselves.
#pragma once

#include <apt/vgpu/device/gpu_health.hpp>
#include <apt/vgpu/device/gpu_info.hpp>
#include <apt/vgpu/device/gpu_metrics.hpp>
#include <apt/vgpu/device/gpu_process.hpp>

#include <cstdint>
#include <string_view>
#include <vector>

namespace apt::vgpu::device {

class SimBackend;

class Backend {
 public:
  virtual ~Backend() = default;
  Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // "nvml", "rocm" or "sim".
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  // Framework device type for this node's GPUs: "cuda" (NVIDIA, and AMD under
  // PyTorch's HIP build) or "sim".
  [[nodiscard]] virtual std::string_view device_type() const noexcept = 0;

  [[nodiscard]] const std::vector<GpuInfo>& gpus() const noexcept { return gpus_; }
  [[nodiscard]] std::uint32_t gpu_count() const noexcept { return static_cast<std::uint32_t>(gpus_.size()); }
  // Throws InvalidArgument when index is not one of gpus().
  [[nodiscard]] const GpuInfo& gpu(std::uint32_t index) const;

  [[nodiscard]] GpuMetrics metrics(std::uint32_t index);
  [[nodiscard]] std::vector<GpuProcess> processes(std::uint32_t index);
  [[nodiscard]] GpuHealth health(std::uint32_t index);

  // The simulator behind this backend, or nullptr for real hardware. The
  // runtime uses it to make simulated metrics follow placed work.
  [[nodiscard]] virtual SimBackend* simulator() noexcept { return nullptr; }

 protected:
  // Implementations fill this once in their constructor.
  std::vector<GpuInfo> gpus_;

 private:
  virtual GpuMetrics do_metrics(std::uint32_t index) = 0;
  virtual std::vector<GpuProcess> do_processes(std::uint32_t index) = 0;
  virtual GpuHealth do_health(std::uint32_t index) = 0;
};

}  // namespace apt::vgpu::device
