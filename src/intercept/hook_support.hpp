// What every hook body is made of: the checks each starts with (initialised,
// configuration usable, real function present), pass-through, and the
// admit / run / remember-or-give-back pattern of an allocation and its free.
// Header-only templates over the real function's type; thread-safe as the
// accounting they call.
#ifndef APT_VGPU_INTERCEPT_HOOK_SUPPORT_HPP
#define APT_VGPU_INTERCEPT_HOOK_SUPPORT_HPP

#include "accounting.hpp"
#include "config.hpp"
#include "cuda_driver_api.h"

#include <cstdint>

#define VGPU_EXPORT __attribute__((visibility("default")))

namespace vgpu_cuda {

// Runs init() once (pthread_once); defined with the exported hooks.
void ensure_init();

// The current hook was reached as its per-thread-default-stream (_ptsz) form.
extern thread_local bool t_ptsz;

// Whether `stream` is being captured into a CUDA graph (work there runs at cuGraphLaunch).
bool stream_is_capturing(CUstream stream);

// The checks every hook starts with. Returns true with `rc` set when the call must not proceed.
template <class Fn>
bool refuse(Fn real, CUresult& rc) {
  ensure_init();
  if (g_config.broken) {
    rc = CUDA_ERROR_INVALID_VALUE;
    return true;
  }
  if (real == nullptr) {
    rc = CUDA_ERROR_NOT_INITIALIZED;
    return true;
  }
  return false;
}

template <class Fn, class Invoke>
CUresult pass(Fn real, Invoke&& invoke) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  return invoke();
}

// Admits `bytes`, runs the allocation, and remembers it under the key it
// produced (a device pointer, a handle, an array), or gives the bytes back.
template <class Fn, class Invoke, class Key>
CUresult admitted(Fn real, std::uint64_t bytes, const char* call, Invoke&& invoke, Key&& key) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.memory_limited) return invoke();
  if (!admit(bytes, call)) return CUDA_ERROR_OUT_OF_MEMORY;
  rc = invoke();
  if (rc != CUDA_SUCCESS) {
    release(bytes);
    return rc;
  }
  remember(key(), bytes);
  return rc;
}

// The record is taken out before the real free: once the driver has freed an address
// it may hand it to another thread at once, whose record must not be the one erased
// (that race leaked tens of MiB per 100k frees in multi-threaded programs). A free
// that fails puts the record back.
template <class Fn, class Invoke>
CUresult free_like(Fn real, unsigned long long key, Invoke&& invoke) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.memory_limited) return invoke();
  const std::uint64_t bytes = forget(key);
  rc = invoke();
  if (rc == CUDA_SUCCESS) {
    release(bytes);
  } else if (bytes != 0) {
    remember(key, bytes);
  }
  return rc;
}

}  // namespace vgpu_cuda

#endif  // APT_VGPU_INTERCEPT_HOOK_SUPPORT_HPP
