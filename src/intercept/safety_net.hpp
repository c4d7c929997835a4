// The driver's own figure as a safety net, and NVML access shared by the
// library. Whatever the hooks do not see allocated (loaded modules, paths not
// hooked) still takes GPU memory. At most once a second, and before any
// refusal, NVML's per-process figure for this process on the slice's GPU is
// compared with what the library charged it; the difference is charged too
// (even past the limit: the memory is already taken), and given back when it
// shrinks. Without NVML, or without the slice's GPU UUID, the net is off.
// Thread-safe.
#ifndef APT_VGPU_INTERCEPT_SAFETY_NET_HPP
#define APT_VGPU_INTERCEPT_SAFETY_NET_HPP

namespace vgpu_cuda {

// Brings the charge in line with NVML's figure; `always` skips the once-a-second limit.
void reconcile_with_driver(bool always);

// What NVML says this process holds on the slice's GPU now; -1 when it cannot tell.
long long driver_reported_bytes();

// The NVML library to use: $VGPU_REAL_LIBNVML (tests), else the driver's libnvidia-ml.so.1.
const char* nvml_library();

}  // namespace vgpu_cuda

#endif  // APT_VGPU_INTERCEPT_SAFETY_NET_HPP
