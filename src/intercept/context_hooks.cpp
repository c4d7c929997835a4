// CUDA contexts: each takes device memory of its own (hundreds of MiB on a
// real GPU: the context's state, its local memory, the loaded runtime), which
// no allocation call shows. A context is charged to the slice when it is
// created (cuCtxCreate, any version) or when a device's primary context is
// first retained, and given back when it is destroyed (cuCtxDestroy, the last
// cuDevicePrimaryCtxRelease, or cuDevicePrimaryCtxReset).
//
// How much: VGPU_CONTEXT_BYTES when set; otherwise the first context is
// measured (NVML's figure for this process right after it is created, less what
// was already counted) and later contexts are charged the same; without NVML it
// is 0 and the safety net (safety_net.hpp) is all there is. A context that does
// not fit in the slice is refused with CUDA_ERROR_OUT_OF_MEMORY, as the driver
// does when the GPU is full. Thread-safe (one mutex).
#include "accounting.hpp"
#include "hook_bodies.hpp"
#include "hook_support.hpp"
#include "pacing.hpp"
#include "safety_net.hpp"

#include <map>
#include <mutex>
#include <unordered_map>

namespace vgpu_cuda {

namespace {

struct PrimaryContext {
  std::uint32_t retains = 0;
  std::uint64_t charged = 0;
  CUcontext context = nullptr;
};

struct ContextBook {
  std::mutex mutex;
  bool measured = false;          // the size is known (configured, or measured once)
  std::uint64_t size = 0;
  std::unordered_map<CUcontext, std::uint64_t> created;  // cuCtxCreate'd contexts -> charge
  std::map<CUdevice, PrimaryContext> primary;
};
ContextBook& context_book() {
  static auto* b = new ContextBook();  // outlives static destruction
  return *b;
}

// The charge for a new context when it is known before creating it.
std::uint64_t expected_size() {
  if (g_config.context_bytes_set) return g_config.context_bytes;
  ContextBook& b = context_book();
  std::lock_guard<std::mutex> lock(b.mutex);
  return b.measured ? b.size : 0;
}

// After a context was created having admitted `admitted` bytes: the charge it keeps.
// The first one without a configured size is measured through NVML.
std::uint64_t settle_size(std::uint64_t admitted) {
  if (g_config.context_bytes_set) return admitted;
  ContextBook& b = context_book();
  {
    std::lock_guard<std::mutex> lock(b.mutex);
    if (b.measured) return admitted;
  }
  const long long reported = driver_reported_bytes();
  const vgpu_shm_slot* slot = my_slot();
  const std::uint64_t counted = slot != nullptr ? __atomic_load_n(&slot->used_bytes, __ATOMIC_ACQUIRE) : 0;
  const std::uint64_t size =
      reported > 0 && static_cast<std::uint64_t>(reported) > counted ? static_cast<std::uint64_t>(reported) - counted : 0;
  {
    std::lock_guard<std::mutex> lock(b.mutex);
    if (!b.measured && reported >= 0) {
      b.measured = true;
      b.size = size;
      log(Level::info, "a CUDA context takes %llu bytes (measured by NVML); each is charged that much",
          static_cast<unsigned long long>(size));
    }
  }
  if (size > admitted) charge_unchecked(size - admitted);  // already on the GPU
  return size > admitted ? size : admitted;
}

template <class Create>
CUresult create_charged(const char* call, Create&& create, std::uint64_t& charged) {
  charged = 0;
  if (!g_config.memory_limited) return create();  // paced only: the context is only tracked
  charged = expected_size();
  if (charged != 0 && !admit(charged, call)) return CUDA_ERROR_OUT_OF_MEMORY;
  const CUresult rc = create();
  if (rc != CUDA_SUCCESS) {
    release(charged);
    charged = 0;
    return rc;
  }
  charged = settle_size(charged);
  return rc;
}

template <class Fn, class Create>
CUresult create_context(Fn real, const char* call, CUcontext* context, Create&& create) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.configured || context == nullptr) return create();
  std::uint64_t charged = 0;
  rc = create_charged(call, create, charged);
  if (rc != CUDA_SUCCESS) return rc;
  ContextBook& b = context_book();
  std::lock_guard<std::mutex> lock(b.mutex);
  b.created[*context] = charged;
  return rc;
}

// The primary context of `device` is gone (last release, or reset): give its charge back.
void primary_gone(PrimaryContext& p) {
  release(p.charged);
  forget_context_events(p.context);
  p = PrimaryContext{};
}

}  // namespace

CUresult do_cuCtxCreate_v2(CUresult (*real)(CUcontext*, unsigned int, CUdevice), CUcontext* context,
                           unsigned int flags, CUdevice device) {
  return create_context(real, "cuCtxCreate", context, [&] { return real(context, flags, device); });
}

CUresult do_cuCtxCreate_v3(CUresult (*real)(CUcontext*, CUexecAffinityParam*, int, unsigned int, CUdevice),
                           CUcontext* context, CUexecAffinityParam* affinity, int affinities, unsigned int flags,
                           CUdevice device) {
  return create_context(real, "cuCtxCreate", context, [&] { return real(context, affinity, affinities, flags, device); });
}

CUresult do_cuCtxCreate_v4(CUresult (*real)(CUcontext*, CUctxCreateParams*, unsigned int, CUdevice), CUcontext* context,
                           CUctxCreateParams* create_params, unsigned int flags, CUdevice device) {
  return create_context(real, "cuCtxCreate", context, [&] { return real(context, create_params, flags, device); });
}

CUresult do_cuCtxDestroy_v2(CUresult (*real)(CUcontext), CUcontext context) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  rc = real(context);
  if (rc != CUDA_SUCCESS) return rc;
  forget_context_events(context);
  if (!g_config.configured) return rc;
  std::uint64_t charged = 0;
  {
    ContextBook& b = context_book();
    std::lock_guard<std::mutex> lock(b.mutex);
    auto it = b.created.find(context);
    if (it == b.created.end()) return rc;
    charged = it->second;
    b.created.erase(it);
  }
  release(charged);
  return rc;
}

CUresult do_cuDevicePrimaryCtxRetain(CUresult (*real)(CUcontext*, CUdevice), CUcontext* context, CUdevice device) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.configured || context == nullptr) return real(context, device);
  ContextBook& b = context_book();
  {
    std::lock_guard<std::mutex> lock(b.mutex);
    auto it = b.primary.find(device);
    if (it != b.primary.end() && it->second.retains > 0) {  // exists: one more reference, no more memory
      rc = real(context, device);
      if (rc == CUDA_SUCCESS) ++it->second.retains;
      return rc;
    }
  }
  std::uint64_t charged = 0;
  rc = create_charged("cuDevicePrimaryCtxRetain", [&] { return real(context, device); }, charged);
  if (rc != CUDA_SUCCESS) return rc;
  std::lock_guard<std::mutex> lock(b.mutex);
  PrimaryContext& p = b.primary[device];
  if (p.retains > 0) {  // another thread created it meanwhile: one context, one charge
    ++p.retains;
    release(charged);
    return rc;
  }
  p = PrimaryContext{1, charged, *context};
  return rc;
}

namespace {

// The driver let go of (`reset`: destroyed whatever its count) a reference to device's primary context.
CUresult primary_dropped(CUresult (*real)(CUdevice), CUdevice device, bool reset) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  rc = real(device);
  if (rc != CUDA_SUCCESS || !g_config.configured) return rc;
  ContextBook& b = context_book();
  std::lock_guard<std::mutex> lock(b.mutex);
  auto it = b.primary.find(device);
  if (it == b.primary.end() || it->second.retains == 0) return rc;
  if (reset || --it->second.retains == 0) primary_gone(it->second);
  return rc;
}

}  // namespace

CUresult do_cuDevicePrimaryCtxRelease_v2(CUresult (*real)(CUdevice), CUdevice device) {
  return primary_dropped(real, device, /*reset=*/false);
}

CUresult do_cuDevicePrimaryCtxReset_v2(CUresult (*real)(CUdevice), CUdevice device) {
  return primary_dropped(real, device, /*reset=*/true);
}

}  // namespace vgpu_cuda
