// The real CUDA driver behind the hooks: its entry points for every hooked name
// (and their _ptsz per-thread-default-stream forms where the driver has them),
// resolved once by resolve_real() from libcuda.so.1 (or $VGPU_REAL_LIBCUDA) with
// the real dlsym, never through our own. Written once under init()'s
// pthread_once, read-only afterwards.
#ifndef APT_VGPU_INTERCEPT_REAL_DRIVER_HPP
#define APT_VGPU_INTERCEPT_REAL_DRIVER_HPP

#include "cuda_driver_api.h"

namespace vgpu_cuda {

using DlsymFn = void* (*)(void*, const char*);
using GetProcFn = CUresult (*)(const char*, void**, int, cuuint64_t);
using GetProcV2Fn = CUresult (*)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);

struct RealDriver {
#define VGPU_REAL_POINTER(sym, base, ret, params, args) ret(*sym) params = nullptr;
  VGPU_CUDA_HOOKS(VGPU_REAL_POINTER)
#undef VGPU_REAL_POINTER
#define VGPU_REAL_PTSZ(sym, base, ret, params, args) ret(*sym##_ptsz) params = nullptr;
  VGPU_CUDA_HOOKS(VGPU_REAL_PTSZ)
#undef VGPU_REAL_PTSZ
  GetProcFn cuGetProcAddress = nullptr;
  GetProcV2Fn cuGetProcAddress_v2 = nullptr;
};

extern RealDriver g_real;
extern void* g_libcuda;  // the driver's handle; null when it could not be loaded

// glibc's own dlsym (ours is exported and would answer with hooks).
DlsymFn real_dlsym();

void resolve_real();

// Another driver entry point, not hooked (cuEventCreate, cuMemPoolTrimTo...); null
// when the driver lacks it or is not loaded.
template <class Fn>
Fn driver_function(const char* name) {
  return g_libcuda == nullptr ? nullptr : reinterpret_cast<Fn>(real_dlsym()(g_libcuda, name));
}

}  // namespace vgpu_cuda

#endif  // APT_VGPU_INTERCEPT_REAL_DRIVER_HPP
