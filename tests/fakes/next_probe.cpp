// Two libraries that both define vgpu_probe (built twice: PROBE_VALUE 1 and 2) and
// a call to dlsym(RTLD_NEXT, "vgpu_probe") from the first, to check that the
// interposer's dlsym resolves RTLD_NEXT relative to the real caller.
#include <dlfcn.h>

extern "C" __attribute__((visibility("default"))) int vgpu_probe() { return PROBE_VALUE; }

#if PROBE_VALUE == 1
extern "C" __attribute__((visibility("default"))) int vgpu_probe_next() {
  auto next = reinterpret_cast<int (*)()>(::dlsym(RTLD_NEXT, "vgpu_probe"));
  return next != nullptr ? next() : -1;
}
#endif
