// Hooks of the plain allocation paths: cuMemAlloc, cuMemAllocPitch,
// cuMemAllocManaged, cuMemFree, CUDA arrays (1D/2D/3D and mipmapped), and
// cuMemGetInfo, which reports the slice. Each allocation is admitted against
// the slice before it reaches the driver and given back when it is freed (see
// hook_support.hpp); docs/intercept.md has the table of every path.
#include "accounting.hpp"
#include "hook_bodies.hpp"
#include "hook_support.hpp"
#include "pools.hpp"
#include "real_driver.hpp"
#include "safety_net.hpp"

#include <algorithm>
#include <cstdint>
#include <initializer_list>

namespace vgpu_cuda {

namespace {

template <class Fn, class Invoke>
CUresult alloc_like(Fn real, CUdeviceptr* dptr, std::uint64_t bytes, const char* call, Invoke&& invoke) {
  return admitted(real, bytes, call, invoke, [dptr] { return *dptr; });
}

std::uint64_t element_bytes(int format) {
  switch (format) {
    case 0x01: case 0x08: return 1;               // (un)signed int8
    case 0x02: case 0x09: case 0x10: return 2;    // (un)signed int16, half
    case 0x03: case 0x0a: case 0x20: return 4;    // (un)signed int32, float
    default: return 8;                            // unknown: count generously
  }
}

// width x height x depth x element x channels. Checked: a product past 2^64 is more
// than any GPU holds, so it saturates and is refused.
std::uint64_t array_bytes(std::size_t width, std::size_t height, std::size_t depth, int format, unsigned channels) {
  std::uint64_t bytes = element_bytes(format);
  for (const std::uint64_t factor : {static_cast<std::uint64_t>(width), static_cast<std::uint64_t>(height == 0 ? 1 : height),
                                     static_cast<std::uint64_t>(depth == 0 ? 1 : depth),
                                     static_cast<std::uint64_t>(channels == 0 ? 1 : channels)}) {
    if (__builtin_mul_overflow(bytes, factor, &bytes)) return UINT64_MAX;
  }
  return bytes;
}

// A mipmapped array holds every level: each halves width, height and depth (never below 1).
std::uint64_t mipmapped_bytes(const CUDA_ARRAY3D_DESCRIPTOR& d, unsigned levels) {
  std::uint64_t total = 0;
  for (unsigned level = 0; level < std::max(levels, 1U) && level < 64; ++level) {
    auto shrink = [level](std::size_t n) -> std::size_t { return n == 0 ? 0 : std::max<std::size_t>(n >> level, 1); };
    const std::uint64_t bytes = array_bytes(shrink(d.Width), shrink(d.Height), shrink(d.Depth), d.Format, d.NumChannels);
    if (__builtin_add_overflow(total, bytes, &total)) return UINT64_MAX;
  }
  return total;
}

unsigned long long key_of(const void* handle) { return reinterpret_cast<unsigned long long>(handle); }

}  // namespace

CUresult do_cuInit(CUresult (*real)(unsigned int), unsigned int flags) {
  return pass(real, [&] { return real(flags); });
}

CUresult do_cuMemAlloc_v2(CUresult (*real)(CUdeviceptr*, size_t), CUdeviceptr* dptr, size_t bytes) {
  return alloc_like(real, dptr, bytes, "cuMemAlloc", [&] { return real(dptr, bytes); });
}

CUresult do_cuMemAllocPitch_v2(CUresult (*real)(CUdeviceptr*, size_t*, size_t, size_t, unsigned int), CUdeviceptr* dptr,
                               size_t* pitch, size_t width, size_t height, unsigned int element) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.memory_limited) return real(dptr, pitch, width, height, element);
  // The driver pads rows; admit the unpadded size first, then the padding.
  std::uint64_t base = 0;
  if (__builtin_mul_overflow(static_cast<std::uint64_t>(width), static_cast<std::uint64_t>(height), &base)) {
    return CUDA_ERROR_OUT_OF_MEMORY;  // more than 2^64 bytes
  }
  if (!admit(base, "cuMemAllocPitch")) return CUDA_ERROR_OUT_OF_MEMORY;
  rc = real(dptr, pitch, width, height, element);
  if (rc != CUDA_SUCCESS) {
    release(base);
    return rc;
  }
  std::uint64_t actual = 0;
  if (__builtin_mul_overflow(static_cast<std::uint64_t>(*pitch), static_cast<std::uint64_t>(height), &actual)) {
    actual = UINT64_MAX;
  }
  if (actual > base && !admit(actual - base, "cuMemAllocPitch (row padding)")) {
    if (g_real.cuMemFree_v2 != nullptr) (void)g_real.cuMemFree_v2(*dptr);
    release(base);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  remember(*dptr, actual > base ? actual : base);
  return rc;
}

CUresult do_cuMemAllocManaged(CUresult (*real)(CUdeviceptr*, size_t, unsigned int), CUdeviceptr* dptr, size_t bytes,
                              unsigned int flags) {
  return alloc_like(real, dptr, bytes, "cuMemAllocManaged", [&] { return real(dptr, bytes, flags); });
}

CUresult do_cuMemFree_v2(CUresult (*real)(CUdeviceptr), CUdeviceptr dptr) {
  return free_like(real, dptr, [&] { return real(dptr); });
}

CUresult do_cuArrayCreate_v2(CUresult (*real)(CUarray*, const CUDA_ARRAY_DESCRIPTOR*), CUarray* array,
                             const CUDA_ARRAY_DESCRIPTOR* d) {
  if (d == nullptr) return pass(real, [&] { return real(array, d); });
  return admitted(real, array_bytes(d->Width, d->Height, 1, d->Format, d->NumChannels), "cuArrayCreate",
                  [&] { return real(array, d); }, [array] { return key_of(*array); });
}

CUresult do_cuArray3DCreate_v2(CUresult (*real)(CUarray*, const CUDA_ARRAY3D_DESCRIPTOR*), CUarray* array,
                               const CUDA_ARRAY3D_DESCRIPTOR* d) {
  if (d == nullptr) return pass(real, [&] { return real(array, d); });
  return admitted(real, array_bytes(d->Width, d->Height, d->Depth, d->Format, d->NumChannels), "cuArray3DCreate",
                  [&] { return real(array, d); }, [array] { return key_of(*array); });
}

CUresult do_cuArrayDestroy(CUresult (*real)(CUarray), CUarray array) {
  return free_like(real, key_of(array), [&] { return real(array); });
}

CUresult do_cuMipmappedArrayCreate(CUresult (*real)(CUmipmappedArray*, const CUDA_ARRAY3D_DESCRIPTOR*, unsigned int),
                                   CUmipmappedArray* array, const CUDA_ARRAY3D_DESCRIPTOR* d, unsigned int levels) {
  if (d == nullptr) return pass(real, [&] { return real(array, d, levels); });
  return admitted(real, mipmapped_bytes(*d, levels), "cuMipmappedArrayCreate", [&] { return real(array, d, levels); },
                  [array] { return key_of(*array); });
}

CUresult do_cuMipmappedArrayDestroy(CUresult (*real)(CUmipmappedArray), CUmipmappedArray array) {
  return free_like(real, key_of(array), [&] { return real(array); });
}

CUresult do_cuMemGetInfo_v2(CUresult (*real)(size_t*, size_t*), size_t* free_bytes, size_t* total_bytes) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  rc = real(free_bytes, total_bytes);
  if (rc != CUDA_SUCCESS || !g_config.memory_limited) return rc;
  (void)reconcile_pools(/*trim=*/false);         // pools that let memory go no longer count
  (void)reconcile_graph_memory(/*trim=*/false);  // nor does graph memory the driver gave back
  reconcile_with_driver(false);                  // and what NVML sees beyond the hooks does
  // The vGPU's limit is the device's memory; what the slice has left is what is free.
  const std::uint64_t cap = limit();
  const std::uint64_t in_use = used();
  const std::uint64_t left = in_use >= cap ? 0 : cap - in_use;
  // Never more than the device has: a limit above the physical memory (oversubscription)
  // must not make a framework size its pools for memory that is not there.
  if (total_bytes != nullptr) *total_bytes = static_cast<size_t>(std::min<std::uint64_t>(cap, *total_bytes));
  if (free_bytes != nullptr && left < *free_bytes) *free_bytes = static_cast<size_t>(left);
  return rc;
}

}  // namespace vgpu_cuda
