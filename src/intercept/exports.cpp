// libvgpu-cuda.so's exported surface: the CUDA driver hooks (both the plain and
// the _ptsz per-thread-default-stream forms of every name in VGPU_CUDA_HOOKS),
// cuGetProcAddress / cuGetProcAddress_v2, dlsym, and the library's load-time
// initialisation and exit. See include/apt/vgpu/intercept/abi.h for the
// contract with the runtime, and docs/intercept.md.
//
// Programs reach a hook three ways, all covered: direct linking (the preloaded
// symbol wins), dlsym() on a handle to libcuda (our dlsym returns the hook), and
// cuGetProcAddress / cuGetProcAddress_v2 (the runtime's way since CUDA 12; we
// return the hook of the version the driver chose in place of its pointer).
// Nothing throws across the C ABI; without configuration every hook is a
// pass-through.
#include "accounting.hpp"
#include "config.hpp"
#include "hook_bodies.hpp"
#include "hook_support.hpp"
#include "nvml_view.hpp"
#include "pacing.hpp"
#include "process_identity.hpp"
#include "real_driver.hpp"

#include <cstring>
#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

namespace vgpu_cuda {

thread_local bool t_ptsz = false;

namespace {

pthread_once_t g_once = PTHREAD_ONCE_INIT;

void init() {
  Config& c = g_config;
  refresh_pid();
  ::pthread_atfork(nullptr, nullptr, refresh_pid);
  read_config();
  resolve_real();
  if ((c.memory_limited || c.pacing) && !c.broken && !open_region()) c.broken = true;
  if (c.pacing && !c.broken && !init_pacing()) c.broken = true;
  if (c.pacing && !c.broken) {
    log(Level::info, "compute share %.3f%s", c.compute_share, c.burst ? " (burst into idle time allowed)" : "");
  }
  if (c.memory_limited && !c.broken) {
    log(Level::info, "memory limit %llu bytes (region %s)", static_cast<unsigned long long>(limit()),
        c.shm_name.empty() ? "private" : c.shm_name.c_str());
  }
}

}  // namespace

void ensure_init() { pthread_once(&g_once, init); }

}  // namespace vgpu_cuda

using namespace vgpu_cuda;

// ---- exported hooks ------------------------------------------------------------------------
extern "C" {

// Nothing throws across the C ABI: an exception (only bad_alloc is possible)
// becomes CUDA_ERROR_UNKNOWN.
#define VGPU_DEFINE_HOOK(sym, base, ret, params, args)                                   \
  VGPU_EXPORT ret sym params {                                                           \
    try {                                                                                \
      ensure_init();                                                                     \
      return do_##sym(g_real.sym, VGPU_UNPACK args);                                     \
    } catch (...) {                                                                      \
      return CUDA_ERROR_UNKNOWN;                                                         \
    }                                                                                    \
  }                                                                                      \
  /* The driver has _ptsz forms of stream functions only: for the rest (cuInit,     */ \
  /* cuMemAlloc...) a per-thread-default-stream lookup gets the plain function.      */ \
  VGPU_EXPORT ret sym##_ptsz params {                                                    \
    ret rc = CUDA_ERROR_UNKNOWN;                                                         \
    try {                                                                                \
      ensure_init();                                                                     \
      if (g_real.sym##_ptsz == nullptr) return do_##sym(g_real.sym, VGPU_UNPACK args);   \
      t_ptsz = true;                                                                     \
      rc = do_##sym(g_real.sym##_ptsz, VGPU_UNPACK args);                                \
    } catch (...) {                                                                      \
    }                                                                                    \
    t_ptsz = false;                                                                      \
    return rc;                                                                           \
  }
VGPU_CUDA_HOOKS(VGPU_DEFINE_HOOK)
#undef VGPU_DEFINE_HOOK

}  // extern "C"

namespace {

struct HookEntry {
  const char* symbol;  // exported name
  const char* base;    // name cuGetProcAddress is asked for
  void* hook;
  void* hook_ptsz;
  bool versioned;  // a _v2 symbol: only for cudaVersion >= 3020 (CUDA 3.2 moved to 64-bit sizes)
};

const HookEntry kHooks[] = {
#define VGPU_ENTRY(sym, base, ret, params, args) \
  {#sym, base, reinterpret_cast<void*>(&sym), reinterpret_cast<void*>(&sym##_ptsz), std::strstr(#sym, "_v2") != nullptr},
    VGPU_CUDA_HOOKS(VGPU_ENTRY)
#undef VGPU_ENTRY
};

// The hook for what the driver's cuGetProcAddress answered: the answer is the real
// function of one version of the name (cuCtxCreate -> _v2, _v3 or _v4 depending on the
// CUDA version asked for), so the hook of exactly that version is returned.
void* hook_for_answer(void* answer) {
#define VGPU_MATCH(sym, base, ret, params, args)                                                          \
  if (answer == reinterpret_cast<void*>(&sym) || answer == reinterpret_cast<void*>(&sym##_ptsz)) return answer; \
  if (answer == reinterpret_cast<void*>(g_real.sym)) return reinterpret_cast<void*>(&sym);                \
  if (g_real.sym##_ptsz != nullptr && answer == reinterpret_cast<void*>(g_real.sym##_ptsz)) {             \
    return reinterpret_cast<void*>(&sym##_ptsz);                                                          \
  }
  VGPU_CUDA_HOOKS(VGPU_MATCH)
#undef VGPU_MATCH
  return nullptr;
}

// When the answer is not one we know (a driver whose cuGetProcAddress answers with
// internal entry points): the hook by base name, where one version has that name.
void* hook_for_base(const char* symbol, int cuda_version, cuuint64_t flags) {
  const HookEntry* found = nullptr;
  for (const HookEntry& h : kHooks) {
    if (std::strcmp(h.base, symbol) != 0) continue;
    if (found != nullptr) return nullptr;  // several versions: cannot tell which the caller expects
    found = &h;
  }
  if (found == nullptr || (found->versioned && cuda_version < 3020)) return nullptr;
  return (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0 ? found->hook_ptsz : found->hook;
}

void* hook_for(const char* symbol, void* answer, int cuda_version, cuuint64_t flags) {
  if (void* hook = hook_for_answer(answer)) return hook;
  return hook_for_base(symbol, cuda_version, flags);
}

}  // namespace

extern "C" {

VGPU_EXPORT CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cuda_version, cuuint64_t flags,
                                         CUdriverProcAddressQueryResult* status);

VGPU_EXPORT CUresult cuGetProcAddress(const char* symbol, void** pfn, int cuda_version, cuuint64_t flags) {
  try {
    ensure_init();
    if (g_real.cuGetProcAddress == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
    const CUresult rc = g_real.cuGetProcAddress(symbol, pfn, cuda_version, flags);
    if (rc != CUDA_SUCCESS || pfn == nullptr || *pfn == nullptr || symbol == nullptr) return rc;
    if (std::strcmp(symbol, "cuGetProcAddress") == 0) {
      *pfn = reinterpret_cast<void*>(cuda_version >= 12000 ? reinterpret_cast<void*>(&cuGetProcAddress_v2)
                                                           : reinterpret_cast<void*>(&cuGetProcAddress));
    } else if (void* hook = hook_for(symbol, *pfn, cuda_version, flags)) {
      *pfn = hook;
    }
    return rc;
  } catch (...) {  // nothing may cross the C ABI
    return CUDA_ERROR_UNKNOWN;
  }
}

VGPU_EXPORT CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cuda_version, cuuint64_t flags,
                                         CUdriverProcAddressQueryResult* status) {
  try {
    ensure_init();
    if (g_real.cuGetProcAddress_v2 == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
    const CUresult rc = g_real.cuGetProcAddress_v2(symbol, pfn, cuda_version, flags, status);
    if (rc != CUDA_SUCCESS || pfn == nullptr || *pfn == nullptr || symbol == nullptr) return rc;
    if (std::strcmp(symbol, "cuGetProcAddress") == 0) {
      *pfn = reinterpret_cast<void*>(&cuGetProcAddress_v2);
    } else if (void* hook = hook_for(symbol, *pfn, cuda_version, flags)) {
      *pfn = hook;
    }
    return rc;
  } catch (...) {  // nothing may cross the C ABI
    return CUDA_ERROR_UNKNOWN;
  }
}

// dlsym() on a handle to libcuda returns our hook for a hooked symbol. The
// exported `dlsym` is the assembly trampoline below: dlsym(RTLD_NEXT, ...)
// must be resolved relative to its real caller, which glibc finds from the
// return address, so that case jumps straight to the real dlsym (a tail jump
// keeps the caller's return address); every other call comes here.
__attribute__((visibility("hidden"))) void* vgpu_dlsym_impl(void* handle, const char* symbol) {
  DlsymFn real = real_dlsym();
  if (real == nullptr || symbol == nullptr) return nullptr;
  void* found = real(handle, symbol);
  if (found == nullptr) return found;
  if (std::strncmp(symbol, "nvml", 4) == 0) {
    if (void* hook = nvml_hook_for(symbol, found)) return hook;
    return found;
  }
  if (symbol[0] != 'c' || symbol[1] != 'u') return found;
  if (std::strcmp(symbol, "cuGetProcAddress") == 0) return reinterpret_cast<void*>(&cuGetProcAddress);
  if (std::strcmp(symbol, "cuGetProcAddress_v2") == 0) return reinterpret_cast<void*>(&cuGetProcAddress_v2);
  for (const HookEntry& h : kHooks) {
    if (std::strcmp(h.symbol, symbol) == 0) return h.hook;
    const std::size_t n = std::strlen(h.symbol);
    if (std::strncmp(h.symbol, symbol, n) == 0 && std::strcmp(symbol + n, "_ptsz") == 0) return h.hook_ptsz;
  }
  return found;
}

__attribute__((visibility("hidden"))) void* vgpu_real_dlsym_ptr = nullptr;

}  // extern "C"

#if defined(__x86_64__)
asm(R"(
  .text
  .globl dlsym
  .type dlsym, @function
dlsym:
  cmpq $-1, %rdi
  jne 1f
  movq vgpu_real_dlsym_ptr(%rip), %rax
  testq %rax, %rax
  je 1f
  jmp *%rax
1:
  jmp vgpu_dlsym_impl
  .size dlsym, .-dlsym
)");
#else
extern "C" VGPU_EXPORT void* dlsym(void* handle, const char* symbol) {
  // Without the trampoline, dlsym(RTLD_NEXT, ...) resolves relative to this library.
  return vgpu_dlsym_impl(handle, symbol);
}
#endif

// Set before any constructor of the program can call dlsym(RTLD_NEXT, ...) through us.
__attribute__((constructor(101))) static void vgpu_cuda_load() {
  vgpu_real_dlsym_ptr = reinterpret_cast<void*>(real_dlsym());
}

// A process that exits normally gives its share back (the driver frees its memory).
__attribute__((destructor)) static void vgpu_cuda_exit() {
  if (g_config.memory_limited) give_slot_back();
}
