// See real_driver.hpp.
#include "real_driver.hpp"

#include "config.hpp"

#include <cstdlib>
#include <dlfcn.h>

namespace vgpu_cuda {

RealDriver g_real;
void* g_libcuda = nullptr;

DlsymFn real_dlsym() {
  static DlsymFn fn = [] {
    auto f = reinterpret_cast<DlsymFn>(::dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34"));
    if (f == nullptr) f = reinterpret_cast<DlsymFn>(::dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5"));
    return f;
  }();
  return fn;
}

void resolve_real() {
  const char* path = std::getenv("VGPU_REAL_LIBCUDA");
  g_libcuda = ::dlopen(path != nullptr && *path != '\0' ? path : "libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (g_libcuda == nullptr) {
    log(Level::debug, "libcuda.so.1 not loadable (%s); hooks will report CUDA_ERROR_NOT_INITIALIZED", ::dlerror());
    return;
  }
  DlsymFn lookup = real_dlsym();
#define VGPU_RESOLVE(sym, base, ret, params, args)                                   \
  g_real.sym = reinterpret_cast<ret(*) params>(lookup(g_libcuda, #sym));            \
  g_real.sym##_ptsz = reinterpret_cast<ret(*) params>(lookup(g_libcuda, #sym "_ptsz"));
  VGPU_CUDA_HOOKS(VGPU_RESOLVE)
#undef VGPU_RESOLVE
  g_real.cuGetProcAddress = reinterpret_cast<GetProcFn>(lookup(g_libcuda, "cuGetProcAddress"));
  g_real.cuGetProcAddress_v2 = reinterpret_cast<GetProcV2Fn>(lookup(g_libcuda, "cuGetProcAddress_v2"));
}

}  // namespace vgpu_cuda

#include "hook_support.hpp"

namespace vgpu_cuda {

bool stream_is_capturing(CUstream stream) {
  using IsCapturingFn = CUresult (*)(CUstream, int*);
  // Resolved on first use, after init() loaded the driver; absent on old drivers.
  static const IsCapturingFn plain = driver_function<IsCapturingFn>("cuStreamIsCapturing");
  static const IsCapturingFn ptsz = driver_function<IsCapturingFn>("cuStreamIsCapturing_ptsz");
  const IsCapturingFn is_capturing = t_ptsz && ptsz != nullptr ? ptsz : plain;
  int status = 0;  // CU_STREAM_CAPTURE_STATUS_NONE
  return is_capturing != nullptr && is_capturing(stream, &status) == CUDA_SUCCESS && status != 0;
}

}  // namespace vgpu_cuda
