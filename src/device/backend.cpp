#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/device/backend.hpp>

#include "detail/proc_name.hpp"

#include <fmt/format.h>
#include <fstream>

namespace apt::vgpu::device {

std::string_view to_string(Vendor vendor) noexcept {
  switch (vendor) {
    case Vendor::nvidia: return "nvidia";
    case Vendor::amd: return "amd";
    case Vendor::simulated: return "simulated";
  }
  return "unknown";
}

std::string_view to_string(HealthState state) noexcept {
  switch (state) {
    case HealthState::healthy: return "healthy";
    case HealthState::unhealthy: return "unhealthy";
    case HealthState::lost: return "lost";
  }
  return "unknown";
}

const GpuInfo& Backend::gpu(std::uint32_t index) const {
  if (index >= gpus_.size()) {
    throw InvalidArgument(fmt::format("gpu: there is no GPU {} on this node ({} backend has {} GPU{}: 0..{}); "
                                      "run 'vgpu devices' to list them",
                                      index, name(), gpus_.size(), gpus_.size() == 1 ? "" : "s",
                                      gpus_.empty() ? 0 : gpus_.size() - 1));
  }
  return gpus_[index];
}

GpuMetrics Backend::metrics(std::uint32_t index) {
  (void)gpu(index);
  return do_metrics(index);
}

std::vector<GpuProcess> Backend::processes(std::uint32_t index) {
  (void)gpu(index);
  return do_processes(index);
}

GpuHealth Backend::health(std::uint32_t index) {
  (void)gpu(index);
  return do_health(index);
}

namespace detail {

std::string process_command(std::int64_t pid) {
  std::ifstream in(fmt::format("/proc/{}/comm", pid));
  std::string name;
  if (in) std::getline(in, name);
  return name;
}

}  // namespace detail
}  // namespace apt::vgpu::device
