// VgpuScope makes a VirtualGPU the calling thread's current one for its
// lifetime (the seed's `with vgpu:`). Scopes nest and are re-entrant: entering
// the same VirtualGPU twice is fine, and destroying a scope restores whatever
// was current before it. While at least one scope is open the slice counts as
// active (on the simulated node its compute share shows as utilization).
//
// Entering checks the GPU's health (see VirtualGPU::ensure_healthy), so it may
// throw DeviceError.
//
// Thread safety: a scope belongs to the thread that created it and must be
// destroyed on that thread, in reverse order of creation (as RAII does).
#pragma once

#include <apt/vgpu/runtime/virtual_gpu.hpp>

#include <memory>

namespace apt::vgpu::runtime {

class VgpuScope {
 public:
  explicit VgpuScope(const VirtualGPU& vgpu);
  ~VgpuScope();
  VgpuScope(const VgpuScope&) = delete;
  VgpuScope& operator=(const VgpuScope&) = delete;
  VgpuScope(VgpuScope&&) = delete;
  VgpuScope& operator=(VgpuScope&&) = delete;

 private:
  std::shared_ptr<VirtualGPU::Impl> entered_;
  VirtualGPU::Impl* previous_;
};

}  // namespace apt::vgpu::runtime
