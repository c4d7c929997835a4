// Stream-ordered allocation (cuMemAllocAsync, cuMemAllocFromPoolAsync,
// cuMemFreeAsync) and CUDA graph memory: see pools.hpp.
//
// cuMemFreeAsync gives a block back to its pool, and a pool keeps freed memory up to
// its release threshold: PyTorch's cudaMallocAsync backend, RMM and CuPy set it to
// the maximum, so the memory stays on the GPU. Such bytes stay charged to the slice
// ("pool-held") and are used first by the process's next stream-ordered allocations.
// They are given back when the pools are seen to hold less: cuMemGetInfo and every
// refused admission read what the pools really reserve (CU_MEMPOOL_ATTR_RESERVED_MEM_
// CURRENT, less the live stream-ordered blocks), and a refusal first trims the pools
// (cuMemPoolTrimTo), as the driver would under memory pressure.
//
// A stream-ordered allocation made while its stream is captured into a graph takes no
// memory then: it becomes a memory node that allocates when the graph is launched, from
// the device's graph memory pool. That pool is charged after each cuGraphLaunch, at
// cuMemGetInfo and before refusing (trimmed first with cuDeviceGraphMemTrim), by what
// it reserves (CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT).
#include "accounting.hpp"
#include "hook_bodies.hpp"
#include "hook_support.hpp"
#include "pools.hpp"
#include "real_driver.hpp"

#include <algorithm>
#include <mutex>
#include <utility>
#include <vector>

namespace vgpu_cuda {

namespace {

constexpr int kPoolAttrReservedCurrent = 5;   // CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT
constexpr int kGraphAttrReservedCurrent = 2;  // CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT
using CtxGetDeviceFn = CUresult (*)(CUdevice*);
using DeviceGetMemPoolFn = CUresult (*)(CUmemoryPool*, CUdevice);
using PoolTrimFn = CUresult (*)(CUmemoryPool, size_t);
using PoolGetAttributeFn = CUresult (*)(CUmemoryPool, int, void*);
using GraphMemAttributeFn = CUresult (*)(CUdevice, int, void*);
using GraphMemTrimFn = CUresult (*)(CUdevice);

struct PoolBook {
  std::mutex mutex;
  std::uint64_t held = 0;        // freed into pools, still charged
  std::uint64_t live = 0;        // stream-ordered blocks alive, charged
  std::vector<CUmemoryPool> pools;  // explicit pools seen (cuMemAllocFromPoolAsync)
  CtxGetDeviceFn ctx_device = nullptr;
  DeviceGetMemPoolFn device_pool = nullptr;
  PoolTrimFn trim = nullptr;
  PoolGetAttributeFn get_attribute = nullptr;
  bool resolved = false;
};
PoolBook& pool_book() {
  static auto* b = new PoolBook();  // outlives static destruction
  return *b;
}

// What the process's pools reserve now (after trimming them when `trim`), or -1
// when the driver cannot tell. Called with the book's mutex held.
long double pools_reserved_locked(PoolBook& b, bool trim) {
  if (!b.resolved) {
    b.ctx_device = driver_function<CtxGetDeviceFn>("cuCtxGetDevice");
    b.device_pool = driver_function<DeviceGetMemPoolFn>("cuDeviceGetMemPool");
    b.trim = driver_function<PoolTrimFn>("cuMemPoolTrimTo");
    b.get_attribute = driver_function<PoolGetAttributeFn>("cuMemPoolGetAttribute");
    b.resolved = true;
  }
  if (b.ctx_device == nullptr || b.device_pool == nullptr || b.get_attribute == nullptr) return -1;
  std::vector<CUmemoryPool> pools = b.pools;
  CUdevice device = 0;
  CUmemoryPool current = nullptr;
  if (b.ctx_device(&device) == CUDA_SUCCESS && b.device_pool(&current, device) == CUDA_SUCCESS && current != nullptr &&
      std::find(pools.begin(), pools.end(), current) == pools.end()) {
    pools.push_back(current);
  }
  long double reserved = 0;
  for (CUmemoryPool pool : pools) {
    if (trim && b.trim != nullptr) (void)b.trim(pool, 0);
    cuuint64_t value = 0;
    if (b.get_attribute(pool, kPoolAttrReservedCurrent, &value) != CUDA_SUCCESS) return -1;
    reserved += static_cast<long double>(value);
  }
  return reserved;
}

// A stream-ordered allocation: pool-held bytes first, then admission (trimming the
// pools before refusing).
template <class Invoke>
CUresult pooled_alloc(CUdeviceptr* dptr, std::uint64_t bytes, const char* call, CUmemoryPool explicit_pool,
                      Invoke&& invoke) {
  PoolBook& b = pool_book();
  std::uint64_t taken = 0;
  {
    std::lock_guard<std::mutex> lock(b.mutex);
    if (explicit_pool != nullptr && std::find(b.pools.begin(), b.pools.end(), explicit_pool) == b.pools.end()) {
      b.pools.push_back(explicit_pool);
    }
    taken = std::min(b.held, bytes);
    b.held -= taken;
  }
  const std::uint64_t need = bytes - taken;
  auto put_back = [&] {
    std::lock_guard<std::mutex> lock(b.mutex);
    b.held += taken;
  };
  if (need != 0 && !try_admit(need)) {
    // Give the pools' idle memory back to the device, and to the slice, then look again.
    put_back();
    taken = 0;
    if (reconcile_pools(/*trim=*/true) == 0) {
      log_refusal(need, call);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return pooled_alloc(dptr, bytes, call, explicit_pool, std::forward<Invoke>(invoke));
  }
  const CUresult rc = invoke();
  if (rc != CUDA_SUCCESS) {
    release(need);
    put_back();
    return rc;
  }
  remember(*dptr, bytes);
  std::lock_guard<std::mutex> lock(b.mutex);
  b.live += bytes;
  return rc;
}

struct GraphBook {
  std::mutex mutex;
  std::uint64_t charged = 0;  // what the graph memory pools reserved when last read
  std::vector<CUdevice> devices;  // devices graphs were launched on
  CtxGetDeviceFn ctx_device = nullptr;
  GraphMemAttributeFn get_attribute = nullptr;
  GraphMemTrimFn trim = nullptr;
  bool resolved = false;
};
GraphBook& graph_book() {
  static auto* b = new GraphBook();  // outlives static destruction
  return *b;
}

void resolve_graph_locked(GraphBook& b) {
  if (b.resolved) return;
  b.ctx_device = driver_function<CtxGetDeviceFn>("cuCtxGetDevice");
  b.get_attribute = driver_function<GraphMemAttributeFn>("cuDeviceGetGraphMemAttribute");
  b.trim = driver_function<GraphMemTrimFn>("cuDeviceGraphMemTrim");
  b.resolved = true;
}

}  // namespace

std::uint64_t reconcile_pools(bool trim) {
  PoolBook& b = pool_book();
  std::uint64_t give_back = 0;
  {
    std::lock_guard<std::mutex> lock(b.mutex);
    if (b.held == 0) return 0;
    const long double reserved = pools_reserved_locked(b, trim);
    if (reserved < 0) return 0;
    const long double cached = reserved > static_cast<long double>(b.live) ? reserved - static_cast<long double>(b.live) : 0;
    if (cached < static_cast<long double>(b.held)) {
      give_back = b.held - static_cast<std::uint64_t>(cached);
      b.held -= give_back;
    }
  }
  release(give_back);
  return give_back;
}

// Records that a graph ran on the current device, so its graph memory pool is read from now on.
void note_graph_launch() {
  GraphBook& b = graph_book();
  std::lock_guard<std::mutex> lock(b.mutex);
  resolve_graph_locked(b);
  CUdevice device = 0;
  if (b.ctx_device != nullptr && b.ctx_device(&device) == CUDA_SUCCESS &&
      std::find(b.devices.begin(), b.devices.end(), device) == b.devices.end()) {
    b.devices.push_back(device);
  }
}

std::uint64_t reconcile_graph_memory(bool trim) {
  GraphBook& b = graph_book();
  std::int64_t change = 0;  // > 0: charge; < 0: give back
  {
    std::lock_guard<std::mutex> lock(b.mutex);
    if (b.devices.empty()) return 0;
    resolve_graph_locked(b);
    if (b.get_attribute == nullptr) return 0;
    std::uint64_t reserved = 0;
    for (const CUdevice device : b.devices) {
      if (trim && b.trim != nullptr) (void)b.trim(device);
      cuuint64_t value = 0;
      if (b.get_attribute(device, kGraphAttrReservedCurrent, &value) != CUDA_SUCCESS) return 0;
      if (__builtin_add_overflow(reserved, static_cast<std::uint64_t>(value), &reserved)) reserved = UINT64_MAX;
    }
    change = reserved >= b.charged ? static_cast<std::int64_t>(std::min<std::uint64_t>(reserved - b.charged, INT64_MAX))
                                   : -static_cast<std::int64_t>(std::min<std::uint64_t>(b.charged - reserved, INT64_MAX));
    b.charged = reserved;
  }
  if (change > 0) {
    charge_unchecked(static_cast<std::uint64_t>(change));  // already taken on the GPU
    return 0;
  }
  release(static_cast<std::uint64_t>(-change));
  return static_cast<std::uint64_t>(-change);
}

CUresult do_cuMemAllocAsync(CUresult (*real)(CUdeviceptr*, size_t, CUstream), CUdeviceptr* dptr, size_t bytes,
                            CUstream s) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  // Captured: a memory node of a graph, counted with the graph memory pool at launch.
  if (!g_config.memory_limited || stream_is_capturing(s)) return real(dptr, bytes, s);
  return pooled_alloc(dptr, bytes, "cuMemAllocAsync", nullptr, [&] { return real(dptr, bytes, s); });
}

CUresult do_cuMemAllocFromPoolAsync(CUresult (*real)(CUdeviceptr*, size_t, CUmemoryPool, CUstream), CUdeviceptr* dptr,
                                    size_t bytes, CUmemoryPool pool, CUstream s) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.memory_limited || stream_is_capturing(s)) return real(dptr, bytes, pool, s);
  return pooled_alloc(dptr, bytes, "cuMemAllocFromPoolAsync", pool, [&] { return real(dptr, bytes, pool, s); });
}

// The block goes back to its pool, which may keep it: its bytes stay charged as
// pool-held (see above) instead of returning to the slice.
CUresult do_cuMemFreeAsync(CUresult (*real)(CUdeviceptr, CUstream), CUdeviceptr dptr, CUstream s) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.memory_limited) return real(dptr, s);
  const std::uint64_t bytes = forget(dptr);
  rc = real(dptr, s);
  if (rc != CUDA_SUCCESS) {
    if (bytes != 0) remember(dptr, bytes);
    return rc;
  }
  PoolBook& b = pool_book();
  std::lock_guard<std::mutex> lock(b.mutex);
  b.live -= std::min(b.live, bytes);
  b.held += bytes;
  return rc;
}

}  // namespace vgpu_cuda
