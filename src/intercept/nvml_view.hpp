// What NVML shows a process bound to a slice: its own GPU's memory queries
// (nvmlDeviceGetMemoryInfo, _v2) report the slice (the limit as total, the
// slice's use as used), and its running-process lists (compute, graphics, MPS;
// every version) list the slice's processes only, not other tenants'. Other
// GPUs, and processes without a slice, see NVML's answer. The exported
// functions are defined in nvml_view.cpp; dlsym() on NVML's handle answers with
// them through nvml_hook_for(). Thread-safe.
#ifndef APT_VGPU_INTERCEPT_NVML_VIEW_HPP
#define APT_VGPU_INTERCEPT_NVML_VIEW_HPP

namespace vgpu_cuda {

// Our hook for an NVML symbol that dlsym() found at `found` (remembered as the real
// function), or null when we do not hook that name.
void* nvml_hook_for(const char* symbol, void* found);

}  // namespace vgpu_cuda

#endif  // APT_VGPU_INTERCEPT_NVML_VIEW_HPP
