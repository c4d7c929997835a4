// A fake libcuda.so.1 for the interception tests: the driver entry points the
// interposer hooks, with simulated device memory (FAKE_CUDA_MEMORY bytes,
// default 80 GB) and kernels that do nothing. cuGetProcAddress and
// cuGetProcAddress_v2 resolve names the way the real driver does (base name +
// CUDA version -> versioned symbol, per-thread-stream flag -> _ptsz).
#include "../../src/intercept/cuda_driver_api.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

namespace {

std::mutex g_mutex;
std::unordered_map<unsigned long long, std::size_t> g_allocations;
unsigned long long g_next = 0x10000;
std::size_t g_used = 0;
std::atomic<unsigned long long> g_launches{0};

std::size_t capacity() {
  const char* env = std::getenv("FAKE_CUDA_MEMORY");
  return env != nullptr ? static_cast<std::size_t>(std::strtoull(env, nullptr, 10)) : 80'000'000'000ULL;
}

CUresult allocate(unsigned long long* out, std::size_t bytes) {
  if (out == nullptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(g_mutex);
  if (g_used + bytes > capacity()) return CUDA_ERROR_OUT_OF_MEMORY;
  *out = g_next;
  g_next += (bytes + 0xfff) & ~0xfffULL;
  g_allocations[*out] = bytes;
  g_used += bytes;
  return CUDA_SUCCESS;
}

CUresult release(unsigned long long ptr) {
  std::lock_guard lock(g_mutex);
  auto it = g_allocations.find(ptr);
  if (it == g_allocations.end()) return CUDA_ERROR_INVALID_VALUE;
  g_used -= it->second;
  g_allocations.erase(it);
  return CUDA_SUCCESS;
}

}  // namespace

extern "C" {

CUresult cuInit(unsigned int) { return CUDA_SUCCESS; }
CUresult cuDriverGetVersion(int* v) {
  *v = 13000;
  return CUDA_SUCCESS;
}
CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t n) { return allocate(p, n); }
CUresult cuMemAllocPitch_v2(CUdeviceptr* p, size_t* pitch, size_t width, size_t height, unsigned int) {
  *pitch = (width + 511) & ~static_cast<size_t>(511);  // rows padded to 512 bytes
  return allocate(p, *pitch * height);
}
CUresult cuMemAllocManaged(CUdeviceptr* p, size_t n, unsigned int) { return allocate(p, n); }
CUresult cuMemAllocAsync(CUdeviceptr* p, size_t n, CUstream) { return allocate(p, n); }
CUresult cuMemAllocAsync_ptsz(CUdeviceptr* p, size_t n, CUstream) { return allocate(p, n); }
CUresult cuMemAllocFromPoolAsync(CUdeviceptr* p, size_t n, CUmemoryPool, CUstream) { return allocate(p, n); }
CUresult cuMemFree_v2(CUdeviceptr p) { return release(p); }
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream) { return release(p); }
CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream) { return release(p); }
CUresult cuMemCreate(CUmemGenericAllocationHandle* h, size_t n, const CUmemAllocationProp*, unsigned long long) {
  return allocate(h, n);
}
CUresult cuMemRelease(CUmemGenericAllocationHandle h) { return release(h); }
CUresult cuArrayCreate_v2(CUarray* a, const CUDA_ARRAY_DESCRIPTOR* d) {
  unsigned long long h = 0;
  const CUresult rc = allocate(&h, d->Width * (d->Height == 0 ? 1 : d->Height) * 4 * d->NumChannels);
  *a = reinterpret_cast<CUarray>(h);
  return rc;
}
CUresult cuArray3DCreate_v2(CUarray* a, const CUDA_ARRAY3D_DESCRIPTOR* d) {
  unsigned long long h = 0;
  const CUresult rc =
      allocate(&h, d->Width * (d->Height == 0 ? 1 : d->Height) * (d->Depth == 0 ? 1 : d->Depth) * 4 * d->NumChannels);
  *a = reinterpret_cast<CUarray>(h);
  return rc;
}
CUresult cuArrayDestroy(CUarray a) { return release(reinterpret_cast<unsigned long long>(a)); }
CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total_bytes) {
  std::lock_guard lock(g_mutex);
  *total_bytes = capacity();
  *free_bytes = capacity() - g_used;
  return CUDA_SUCCESS;
}
CUresult cuLaunchKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                        void**, void**) {
  g_launches.fetch_add(1, std::memory_order_relaxed);
  return CUDA_SUCCESS;
}
CUresult cuLaunchKernel_ptsz(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             CUstream, void**, void**) {
  g_launches.fetch_add(1, std::memory_order_relaxed);
  return CUDA_SUCCESS;
}
CUresult cuLaunchKernelEx(const CUlaunchConfig*, CUfunction, void**, void**) {
  g_launches.fetch_add(1, std::memory_order_relaxed);
  return CUDA_SUCCESS;
}
CUresult cuLaunchCooperativeKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                   CUstream, void**) {
  g_launches.fetch_add(1, std::memory_order_relaxed);
  return CUDA_SUCCESS;
}
CUresult cuGraphLaunch(CUgraphExec, CUstream) {
  g_launches.fetch_add(1, std::memory_order_relaxed);
  return CUDA_SUCCESS;
}
// Test control: launches seen by the driver (to check hooks pass them through).
unsigned long long fake_cuda_launches() { return g_launches.load(); }

struct Entry {
  const char* base;
  const char* symbol;
  void* fn;
  void* ptsz;
};

#define FAKE_FN(f) reinterpret_cast<void*>(&f)
static const Entry kEntries[] = {
    {"cuInit", "cuInit", FAKE_FN(cuInit), nullptr},
    {"cuDriverGetVersion", "cuDriverGetVersion", FAKE_FN(cuDriverGetVersion), nullptr},
    {"cuMemAlloc", "cuMemAlloc_v2", FAKE_FN(cuMemAlloc_v2), nullptr},
    {"cuMemAllocPitch", "cuMemAllocPitch_v2", FAKE_FN(cuMemAllocPitch_v2), nullptr},
    {"cuMemAllocManaged", "cuMemAllocManaged", FAKE_FN(cuMemAllocManaged), nullptr},
    {"cuMemAllocAsync", "cuMemAllocAsync", FAKE_FN(cuMemAllocAsync), FAKE_FN(cuMemAllocAsync_ptsz)},
    {"cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync", FAKE_FN(cuMemAllocFromPoolAsync), nullptr},
    {"cuMemFree", "cuMemFree_v2", FAKE_FN(cuMemFree_v2), nullptr},
    {"cuMemFreeAsync", "cuMemFreeAsync", FAKE_FN(cuMemFreeAsync), FAKE_FN(cuMemFreeAsync_ptsz)},
    {"cuMemCreate", "cuMemCreate", FAKE_FN(cuMemCreate), nullptr},
    {"cuMemRelease", "cuMemRelease", FAKE_FN(cuMemRelease), nullptr},
    {"cuArrayCreate", "cuArrayCreate_v2", FAKE_FN(cuArrayCreate_v2), nullptr},
    {"cuArray3DCreate", "cuArray3DCreate_v2", FAKE_FN(cuArray3DCreate_v2), nullptr},
    {"cuArrayDestroy", "cuArrayDestroy", FAKE_FN(cuArrayDestroy), nullptr},
    {"cuMemGetInfo", "cuMemGetInfo_v2", FAKE_FN(cuMemGetInfo_v2), nullptr},
    {"cuLaunchKernel", "cuLaunchKernel", FAKE_FN(cuLaunchKernel), FAKE_FN(cuLaunchKernel_ptsz)},
    {"cuLaunchKernelEx", "cuLaunchKernelEx", FAKE_FN(cuLaunchKernelEx), nullptr},
    {"cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel", FAKE_FN(cuLaunchCooperativeKernel), nullptr},
    {"cuGraphLaunch", "cuGraphLaunch", FAKE_FN(cuGraphLaunch), nullptr},
};

CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cuda_version, cuuint64_t flags,
                             CUdriverProcAddressQueryResult* status);

CUresult cuGetProcAddress(const char* symbol, void** pfn, int cuda_version, cuuint64_t flags) {
  return cuGetProcAddress_v2(symbol, pfn, cuda_version, flags, nullptr);
}

CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int, cuuint64_t flags,
                             CUdriverProcAddressQueryResult* status) {
  if (symbol == nullptr || pfn == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (std::strcmp(symbol, "cuGetProcAddress") == 0) {
    *pfn = FAKE_FN(cuGetProcAddress_v2);
    if (status != nullptr) *status = 0;
    return CUDA_SUCCESS;
  }
  for (const Entry& e : kEntries) {
    if (std::strcmp(e.base, symbol) != 0) continue;
    *pfn = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0 && e.ptsz != nullptr ? e.ptsz : e.fn;
    if (status != nullptr) *status = 0;  // CU_GET_PROC_ADDRESS_SUCCESS
    return CUDA_SUCCESS;
  }
  *pfn = nullptr;
  if (status != nullptr) *status = 1;  // CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND
  return CUDA_ERROR_NOT_FOUND;
}

}  // extern "C"
