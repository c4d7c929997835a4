// A fake libcuda.so.1 for the interception tests: the driver entry points the
// interposer hooks, with simulated device memory (FAKE_CUDA_MEMORY bytes,
// default 80 GB) and a simulated device that runs kernels one at a time. A
// kernel takes the microseconds its first parameter points to (a uint64_t);
// launches return at once and the work runs on the device's timeline.
// Processes that set the same FAKE_CUDA_DEVICE share one timeline (a POSIX
// shm object), so they contend for the device as on a real GPU. Events are
// stamped when the device reaches them: an event recorded just before a
// kernel carries that kernel's start time. cuGetProcAddress and
// cuGetProcAddress_v2 resolve names the way the real driver does (base name +
// CUDA version -> versioned symbol, per-thread-stream flag -> _ptsz).
#include "../../src/intercept/cuda_driver_api.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <condition_variable>
#include <map>
#include <set>
#include <mutex>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <vector>

namespace {

std::mutex g_mutex;
std::unordered_map<unsigned long long, std::size_t> g_allocations;
unsigned long long g_next = 0x10000;
std::size_t g_used = 0;
std::atomic<unsigned long long> g_launches{0};

// FAKE_CUDA_FAIL=NAME[:N] makes NAME fail with CUDA_ERROR_OUT_OF_MEMORY after N
// successful calls (default 0), as cuMemCreate does when the GPU is full.
std::map<std::string, int> g_call_counts;
bool injected_failure(const char* name) {
  const char* spec = std::getenv("FAKE_CUDA_FAIL");
  if (spec == nullptr) return false;
  const std::string text(spec);
  const auto colon = text.find(':');
  if (text.substr(0, colon) != name) return false;
  const int after = colon == std::string::npos ? 0 : std::atoi(text.c_str() + colon + 1);
  std::lock_guard lock(g_mutex);
  static std::string counted_for;  // a new FAKE_CUDA_FAIL starts its count afresh
  if (counted_for != text) {
    g_call_counts.clear();
    counted_for = text;
  }
  return g_call_counts[name]++ >= after;
}

// ---- the simulated device timeline ----
std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Timeline {
  std::int64_t busy_until = 0;  // device time at which all enqueued kernels are done
};

Timeline* timeline() {
  static Timeline* t = [] {
    const char* name = std::getenv("FAKE_CUDA_DEVICE");
    if (name == nullptr || *name == '\0') return new Timeline();
    const std::string shm = std::string("/fake-cuda-") + name;
    const int fd = ::shm_open(shm.c_str(), O_CREAT | O_RDWR, 0600);
    if (fd < 0 || ::ftruncate(fd, sizeof(Timeline)) != 0) return new Timeline();
    void* p = ::mmap(nullptr, sizeof(Timeline), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    return p == MAP_FAILED ? new Timeline() : static_cast<Timeline*>(p);
  }();
  return t;
}

// Contexts: each thread has a current one (the primary context when none was set);
// events belong to the context current when they were created, and can only be
// recorded on a stream of that context (the default stream: the current one), as
// with the real driver, which answers CUDA_ERROR_INVALID_HANDLE otherwise.
struct FakeContext {
  int id = 0;
};
FakeContext g_primary_context{0};
thread_local FakeContext* t_current = nullptr;
FakeContext* current_context() { return t_current != nullptr ? t_current : &g_primary_context; }
std::atomic<unsigned long long> g_bad_records{0};

struct FakeEvent {
  FakeContext* context = nullptr;
  std::int64_t time = 0;
  bool pending = false;  // recorded; stamped when the stream's next kernel starts
  bool recorded = false;
  CUstream stream = nullptr;
};

std::mutex g_stream_mutex;
std::unordered_map<CUstream, std::int64_t> g_stream_ready;           // when each stream's work is done
std::unordered_map<CUstream, std::vector<FakeEvent*>> g_pending;     // events waiting for the next kernel

// Enqueues `duration_ns` of work on `stream`; returns its (start, end).
std::pair<std::int64_t, std::int64_t> enqueue(CUstream stream, std::int64_t duration_ns) {
  std::lock_guard lock(g_stream_mutex);
  const std::int64_t ready = std::max(now_ns(), g_stream_ready[stream]);
  Timeline* t = timeline();
  std::int64_t busy = __atomic_load_n(&t->busy_until, __ATOMIC_ACQUIRE);
  std::int64_t start = 0;
  do {
    start = std::max(ready, busy);
  } while (!__atomic_compare_exchange_n(&t->busy_until, &busy, start + duration_ns, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE));
  g_stream_ready[stream] = start + duration_ns;
  for (FakeEvent* e : g_pending[stream]) {
    e->time = start;
    e->pending = false;
  }
  g_pending[stream].clear();
  return {start, start + duration_ns};
}

std::int64_t kernel_ns(void** params) {
  if (params == nullptr || params[0] == nullptr) return 0;
  return static_cast<std::int64_t>(*static_cast<const std::uint64_t*>(params[0])) * 1000;
}

// FAKE_CUDA_LAUNCH_RENDEZVOUS=1: the first launch waits (up to 10 s) inside the driver
// until a second launch from another thread is inside too, so a test can tell whether
// launching threads are serialised before they reach the driver.
std::mutex g_rendezvous_mutex;
std::condition_variable g_rendezvous_cv;
int g_inside = 0;
int g_rendezvous = -1;  // -1: not tried; 0: the other launch never came; 1: both were inside at once
void rendezvous() {
  const char* env = std::getenv("FAKE_CUDA_LAUNCH_RENDEZVOUS");
  if (env == nullptr || *env != '1') return;
  std::unique_lock lock(g_rendezvous_mutex);
  if (g_rendezvous != -1) return;
  ++g_inside;
  g_rendezvous_cv.notify_all();
  const bool met = g_rendezvous_cv.wait_for(lock, std::chrono::seconds(10), [] { return g_inside >= 2 || g_rendezvous != -1; });
  if (g_rendezvous == -1) g_rendezvous = met ? 1 : 0;
  g_rendezvous_cv.notify_all();
}

CUresult launch(CUstream stream, void** params) {
  rendezvous();
  g_launches.fetch_add(1, std::memory_order_relaxed);
  (void)enqueue(stream, kernel_ns(params));
  return CUDA_SUCCESS;
}

// An event still waiting for a kernel is reached when the stream's earlier work is done.
std::int64_t event_time(FakeEvent* e) {
  std::lock_guard lock(g_stream_mutex);
  if (e->pending) return std::max(e->time, g_stream_ready[e->stream]);
  return e->time;
}

void sleep_until(std::int64_t t) {
  const std::int64_t wait = t - now_ns();
  if (wait > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(wait));
}

std::size_t capacity() {
  const char* env = std::getenv("FAKE_CUDA_MEMORY");
  return env != nullptr ? static_cast<std::size_t>(std::strtoull(env, nullptr, 10)) : 80'000'000'000ULL;
}

// Freed addresses are handed out again (last freed first, per rounded size), as the
// real driver does: another thread may get an address the moment it is freed.
std::map<unsigned long long, std::vector<unsigned long long>> g_free_by_size;

CUresult allocate(unsigned long long* out, std::size_t bytes) {
  if (out == nullptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(g_mutex);
  if (g_used + bytes > capacity()) return CUDA_ERROR_OUT_OF_MEMORY;
  const unsigned long long rounded = (bytes + 0xfff) & ~0xfffULL;
  auto& reusable = g_free_by_size[rounded];
  if (!reusable.empty()) {
    *out = reusable.back();
    reusable.pop_back();
  } else {
    *out = g_next;
    g_next += rounded;
  }
  g_allocations[*out] = bytes;
  g_used += bytes;
  return CUDA_SUCCESS;
}

CUresult release(unsigned long long ptr) {
  std::lock_guard lock(g_mutex);
  auto it = g_allocations.find(ptr);
  if (it == g_allocations.end()) return CUDA_ERROR_INVALID_VALUE;
  g_used -= it->second;
  g_free_by_size[(it->second + 0xfff) & ~0xfffULL].push_back(ptr);
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
// Stream-ordered pools as the real driver keeps them: a freed block goes back to its
// pool, which keeps it (reserved) while it holds no more than its release threshold
// (default 0: let go at once); later allocations reuse kept memory first;
// cuMemPoolTrimTo gives kept memory back to the device.
struct FakePool {
  unsigned long long threshold = 0;
  unsigned long long reserved = 0;  // device memory the pool holds: live blocks + kept
  unsigned long long kept = 0;
};
FakePool g_default_pool;
std::map<unsigned long long, std::pair<FakePool*, std::size_t>> g_pool_blocks;  // ptr -> (pool, size)

CUresult pool_allocate(FakePool* pool, CUdeviceptr* p, size_t n) {
  if (p == nullptr || n == 0) return CUDA_ERROR_INVALID_VALUE;
  std::lock_guard lock(g_mutex);
  if (pool->kept >= n) {
    pool->kept -= n;
  } else {
    const unsigned long long grow = n - pool->kept;
    if (g_used + grow > capacity()) return CUDA_ERROR_OUT_OF_MEMORY;
    pool->kept = 0;
    pool->reserved += grow;
    g_used += grow;
  }
  *p = g_next;
  g_next += (n + 0xfff) & ~0xfffULL;
  g_pool_blocks[*p] = {pool, n};
  return CUDA_SUCCESS;
}
void pool_release_beyond(FakePool* pool, unsigned long long keep) {  // g_mutex held
  if (pool->kept <= keep) return;
  const unsigned long long drop = pool->kept - keep;
  pool->kept = keep;
  pool->reserved -= drop;
  g_used -= drop;
}
CUresult free_async(CUdeviceptr p) {
  {
    std::lock_guard lock(g_mutex);
    auto it = g_pool_blocks.find(p);
    if (it != g_pool_blocks.end()) {
      FakePool* pool = it->second.first;
      pool->kept += it->second.second;
      g_pool_blocks.erase(it);
      if (pool->reserved > pool->threshold) pool_release_beyond(pool, pool->threshold > pool->reserved - pool->kept
                                                                              ? pool->threshold - (pool->reserved - pool->kept)
                                                                              : 0);
      return CUDA_SUCCESS;
    }
  }
  return release(p);  // a block from cuMemAlloc
}

CUresult cuMemAllocAsync(CUdeviceptr* p, size_t n, CUstream) { return pool_allocate(&g_default_pool, p, n); }
CUresult cuMemAllocAsync_ptsz(CUdeviceptr* p, size_t n, CUstream) { return pool_allocate(&g_default_pool, p, n); }
CUresult cuMemAllocFromPoolAsync(CUdeviceptr* p, size_t n, CUmemoryPool pool, CUstream) {
  return pool_allocate(pool != nullptr ? reinterpret_cast<FakePool*>(pool) : &g_default_pool, p, n);
}
CUresult cuMemFree_v2(CUdeviceptr p) { return release(p); }
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream) { return free_async(p); }
CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream) { return free_async(p); }
CUresult cuCtxGetDevice(int* device) {
  *device = 0;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetMemPool(CUmemoryPool* pool, int) {
  *pool = reinterpret_cast<CUmemoryPool>(&g_default_pool);
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetDefaultMemPool(CUmemoryPool* pool, int device) { return cuDeviceGetMemPool(pool, device); }
CUresult cuMemPoolSetAttribute(CUmemoryPool pool, int attribute, void* value) {
  if (attribute != 4) return CUDA_ERROR_INVALID_VALUE;  // only the release threshold
  std::lock_guard lock(g_mutex);
  reinterpret_cast<FakePool*>(pool)->threshold = *static_cast<cuuint64_t*>(value);
  return CUDA_SUCCESS;
}
CUresult cuMemPoolGetAttribute(CUmemoryPool pool, int attribute, void* value) {
  std::lock_guard lock(g_mutex);
  const FakePool* p = reinterpret_cast<const FakePool*>(pool);
  if (attribute == 4) *static_cast<cuuint64_t*>(value) = p->threshold;
  else if (attribute == 5) *static_cast<cuuint64_t*>(value) = p->reserved;  // RESERVED_MEM_CURRENT
  else return CUDA_ERROR_INVALID_VALUE;
  return CUDA_SUCCESS;
}
CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t keep) {
  std::lock_guard lock(g_mutex);
  pool_release_beyond(reinterpret_cast<FakePool*>(pool), keep);
  return CUDA_SUCCESS;
}
CUresult cuMemCreate(CUmemGenericAllocationHandle* h, size_t n, const CUmemAllocationProp*, unsigned long long) {
  if (injected_failure("cuMemCreate")) return CUDA_ERROR_OUT_OF_MEMORY;
  return allocate(h, n);
}
// As the real driver: physical memory lives until the handle is released and its
// last mapping is unmapped, in either order.
std::map<unsigned long long, unsigned> g_handle_mappings;          // handle -> mappings
std::map<unsigned long long, bool> g_handle_released;              // released while mapped
std::map<unsigned long long, unsigned long long> g_mapping_handle;  // ptr -> handle
CUresult cuMemRelease(CUmemGenericAllocationHandle h) {
  {
    std::lock_guard lock(g_mutex);
    if (g_handle_mappings[h] > 0) {
      g_handle_released[h] = true;
      return CUDA_SUCCESS;
    }
  }
  return release(h);
}
CUresult cuMemMap(CUdeviceptr ptr, size_t, size_t, CUmemGenericAllocationHandle h, unsigned long long) {
  std::lock_guard lock(g_mutex);
  if (g_allocations.count(h) == 0 || g_handle_released[h]) return CUDA_ERROR_INVALID_VALUE;
  ++g_handle_mappings[h];
  g_mapping_handle[ptr] = h;
  return CUDA_SUCCESS;
}
CUresult cuMemUnmap(CUdeviceptr ptr, size_t) {
  unsigned long long h = 0;
  {
    std::lock_guard lock(g_mutex);
    auto it = g_mapping_handle.find(ptr);
    if (it == g_mapping_handle.end()) return CUDA_ERROR_INVALID_VALUE;
    h = it->second;
    g_mapping_handle.erase(it);
    if (--g_handle_mappings[h] > 0 || !g_handle_released[h]) return CUDA_SUCCESS;
    g_handle_released.erase(h);
  }
  return release(h);
}
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
CUresult cuLaunchKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream s,
                        void** params, void**) {
  return launch(s, params);
}
CUresult cuLaunchKernel_ptsz(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             CUstream s, void** params, void**) {
  return launch(s, params);
}
CUresult cuLaunchKernelEx(const CUlaunchConfig* config, CUfunction, void** params, void**) {
  return launch(config != nullptr ? config->hStream : nullptr, params);
}
CUresult cuLaunchCooperativeKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                   CUstream s, void** params) {
  return launch(s, params);
}
void reserve_graph_memory();
CUresult cuGraphLaunch(CUgraphExec, CUstream s) {
  reserve_graph_memory();
  return launch(s, nullptr);
}

CUresult cuEventCreate(CUevent* e, unsigned int) {
  auto* event = new FakeEvent();
  event->context = current_context();
  *e = reinterpret_cast<CUevent>(event);
  return CUDA_SUCCESS;
}
CUresult cuEventDestroy_v2(CUevent e) {
  auto* fe = reinterpret_cast<FakeEvent*>(e);
  std::lock_guard lock(g_stream_mutex);
  if (fe->pending) {
    auto& list = g_pending[fe->stream];
    list.erase(std::remove(list.begin(), list.end(), fe), list.end());
  }
  delete fe;
  return CUDA_SUCCESS;
}
// FAKE_CUDA_CAPTURING=1: every stream is being captured into a graph. The real driver
// turns an event recorded there into a graph node, and querying it then fails; this
// fake counts such records so a test can insist there are none.
std::atomic<unsigned long long> g_records_while_capturing{0};
bool capturing() {
  const char* env = std::getenv("FAKE_CUDA_CAPTURING");
  return env != nullptr && *env == '1';
}
CUresult cuStreamIsCapturing(CUstream, int* status) {
  *status = capturing() ? 1 : 0;  // CU_STREAM_CAPTURE_STATUS_ACTIVE : NONE
  return CUDA_SUCCESS;
}
CUresult cuStreamIsCapturing_ptsz(CUstream s, int* status) { return cuStreamIsCapturing(s, status); }
unsigned long long fake_cuda_records_while_capturing() { return g_records_while_capturing.load(); }

CUresult cuEventRecord(CUevent e, CUstream s) {
  if (capturing()) ++g_records_while_capturing;
  auto* fe = reinterpret_cast<FakeEvent*>(e);
  if (fe->context != current_context()) {  // the default stream of another context
    ++g_bad_records;
    return CUDA_ERROR_INVALID_HANDLE;
  }
  std::lock_guard lock(g_stream_mutex);
  if (fe->pending) {
    auto& list = g_pending[fe->stream];
    list.erase(std::remove(list.begin(), list.end(), fe), list.end());
  }
  fe->stream = s;
  fe->recorded = true;
  fe->pending = true;
  fe->time = std::max(now_ns(), g_stream_ready[s]);
  g_pending[s].push_back(fe);
  return CUDA_SUCCESS;
}
CUresult cuEventRecord_ptsz(CUevent e, CUstream s) { return cuEventRecord(e, s); }
// fake_cuda_hold_stream(s, 1): work on `s` never finishes until fake_cuda_hold_stream(s, 0), so a
// test can keep an event pending without depending on how long anything takes.
std::mutex g_hold_mutex;
std::condition_variable g_hold_cv;
std::set<CUstream> g_held;
bool held(CUstream s) {
  std::lock_guard lock(g_hold_mutex);
  return g_held.count(s) != 0;
}
CUresult cuEventQuery(CUevent e) {
  auto* fe = reinterpret_cast<FakeEvent*>(e);
  if (fe->recorded && held(fe->stream)) return CUDA_ERROR_NOT_READY;
  return event_time(fe) <= now_ns() ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}
CUresult cuEventSynchronize(CUevent e) {
  auto* fe = reinterpret_cast<FakeEvent*>(e);
  {
    std::unique_lock lock(g_hold_mutex);
    g_hold_cv.wait(lock, [&] { return !fe->recorded || g_held.count(fe->stream) == 0; });
  }
  sleep_until(event_time(fe));
  return CUDA_SUCCESS;
}
CUresult cuEventElapsedTime_v2(float* ms, CUevent start, CUevent end) {
  const std::int64_t a = event_time(reinterpret_cast<FakeEvent*>(start));
  const std::int64_t b = event_time(reinterpret_cast<FakeEvent*>(end));
  if (b > now_ns() || a > now_ns()) return CUDA_ERROR_NOT_READY;
  *ms = static_cast<float>(static_cast<double>(b - a) / 1e6);
  return CUDA_SUCCESS;
}
CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end) { return cuEventElapsedTime_v2(ms, start, end); }
CUresult cuStreamSynchronize(CUstream s) {
  std::int64_t ready = 0;
  {
    std::lock_guard lock(g_stream_mutex);
    ready = g_stream_ready[s];
  }
  sleep_until(ready);
  return CUDA_SUCCESS;
}
// Test control: launches seen by the driver (to check hooks pass them through).
unsigned long long fake_cuda_launches() { return g_launches.load(); }
unsigned long long fake_cuda_bad_records() { return g_bad_records.load(); }
int fake_cuda_rendezvous() {
  std::lock_guard lock(g_rendezvous_mutex);
  return g_rendezvous;
}

// CUDA graphs: FAKE_CUDA_GRAPH_MEM=BYTES makes every cuGraphLaunch need that much graph
// memory, which the device's graph memory pool keeps reserved (as after a graph whose
// memory nodes allocate and free) until cuDeviceGraphMemTrim.
std::size_t g_graph_reserved = 0;
void reserve_graph_memory() {
  const char* env = std::getenv("FAKE_CUDA_GRAPH_MEM");
  if (env == nullptr) return;
  const std::size_t need = std::strtoull(env, nullptr, 10);
  std::lock_guard lock(g_mutex);
  if (need > g_graph_reserved) {
    g_used += need - g_graph_reserved;
    g_graph_reserved = need;
  }
}
CUresult cuDeviceGetGraphMemAttribute(int, int attribute, void* value) {
  std::lock_guard lock(g_mutex);
  if (attribute == 2 || attribute == 0) {  // RESERVED_MEM_CURRENT, USED_MEM_CURRENT
    *static_cast<cuuint64_t*>(value) = attribute == 2 ? g_graph_reserved : 0;
    return CUDA_SUCCESS;
  }
  return CUDA_ERROR_INVALID_VALUE;
}
CUresult cuDeviceGraphMemTrim(int) {
  std::lock_guard lock(g_mutex);
  g_used -= g_graph_reserved;
  g_graph_reserved = 0;
  return CUDA_SUCCESS;
}

// Mipmapped arrays hold every level, each half the size of the one before.
CUresult cuMipmappedArrayCreate(CUmipmappedArray* a, const CUDA_ARRAY3D_DESCRIPTOR* d, unsigned int levels) {
  const std::size_t element = d->Format == 0x01 ? 1 : 4;
  std::size_t bytes = 0;
  for (unsigned level = 0; level < levels; ++level) {
    auto shrink = [level](std::size_t n) -> std::size_t { return n == 0 ? 1 : std::max<std::size_t>(n >> level, 1); };
    bytes += shrink(d->Width) * shrink(d->Height) * shrink(d->Depth) * element * d->NumChannels;
  }
  unsigned long long h = 0;
  const CUresult rc = allocate(&h, bytes);
  *a = reinterpret_cast<CUmipmappedArray>(h);
  return rc;
}
CUresult cuMipmappedArrayDestroy(CUmipmappedArray a) { return release(reinterpret_cast<unsigned long long>(a)); }

struct Entry {
  const char* base;
  const char* symbol;
  void* fn;
  void* ptsz;
};

// ---- what GPUMemoryManager's CUDA backing calls (dlsym'd by name; argument types
// only need the real ABI: pointers and integers) ----
namespace {
int g_primary_refs = 0;
std::map<unsigned long long, unsigned long long> g_reservations;  // va -> size
unsigned long long g_next_va = 0x7e0000000000ULL;
}  // namespace

CUresult cuDeviceGet(int* device, int ordinal) {
  if (device == nullptr || ordinal != 0) return CUDA_ERROR_INVALID_VALUE;
  *device = 0;
  return CUDA_SUCCESS;
}
// A context takes FAKE_CUDA_CONTEXT_BYTES of device memory (default 0) while it exists.
std::size_t context_bytes() {
  const char* env = std::getenv("FAKE_CUDA_CONTEXT_BYTES");
  return env != nullptr ? static_cast<std::size_t>(std::strtoull(env, nullptr, 10)) : 0;
}
CUresult cuDevicePrimaryCtxRetain(void** context, int) {
  if (injected_failure("cuDevicePrimaryCtxRetain")) return CUDA_ERROR_OUT_OF_MEMORY;
  std::lock_guard lock(g_mutex);
  if (g_primary_refs++ == 0) g_used += context_bytes();
  *context = &g_primary_context;
  return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(int) {
  std::lock_guard lock(g_mutex);
  if (g_primary_refs == 0) return CUDA_ERROR_INVALID_VALUE;
  if (--g_primary_refs == 0) g_used -= context_bytes();
  return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxReset_v2(int) {
  std::lock_guard lock(g_mutex);
  if (g_primary_refs > 0) g_used -= context_bytes();
  g_primary_refs = 0;
  return CUDA_SUCCESS;
}
std::atomic<int> g_next_context_id{1};
CUresult create_context(void** context) {
  if (context == nullptr) return CUDA_ERROR_INVALID_VALUE;
  {
    std::lock_guard lock(g_mutex);
    if (g_used + context_bytes() > capacity()) return CUDA_ERROR_OUT_OF_MEMORY;
    g_used += context_bytes();
  }
  auto* created = new FakeContext{g_next_context_id++};
  t_current = created;  // cuCtxCreate makes the new context current
  *context = created;
  return CUDA_SUCCESS;
}
CUresult cuCtxCreate_v2(void** context, unsigned int, int) { return create_context(context); }
CUresult cuCtxCreate_v4(void** context, void*, unsigned int, int) { return create_context(context); }
CUresult cuCtxDestroy_v2(void* context) {
  auto* c = static_cast<FakeContext*>(context);
  if (c == nullptr || c == &g_primary_context) return CUDA_ERROR_INVALID_CONTEXT;
  if (t_current == c) t_current = nullptr;
  delete c;
  std::lock_guard lock(g_mutex);
  g_used -= context_bytes();
  return CUDA_SUCCESS;
}
CUresult cuCtxSetCurrent(void* context) {
  t_current = static_cast<FakeContext*>(context);
  return CUDA_SUCCESS;
}
CUresult cuCtxGetCurrent(void** context) {
  *context = current_context();
  return CUDA_SUCCESS;
}
CUresult cuCtxSynchronize() { return CUDA_SUCCESS; }
CUresult cuGetErrorString(CUresult, const char** text) {
  if (text != nullptr) *text = "fake error";
  return CUDA_SUCCESS;
}
CUresult cuMemGetAllocationGranularity(size_t* granularity, const void*, int) {
  if (injected_failure("cuMemGetAllocationGranularity")) return CUDA_ERROR_OUT_OF_MEMORY;
  *granularity = 2ULL << 20;
  return CUDA_SUCCESS;
}
CUresult cuMemAddressReserve(unsigned long long* va, size_t size, size_t, unsigned long long, unsigned long long) {
  if (injected_failure("cuMemAddressReserve")) return CUDA_ERROR_OUT_OF_MEMORY;
  std::lock_guard lock(g_mutex);
  *va = g_next_va;
  g_next_va += (size + 0xffffffULL) & ~0xffffffULL;
  g_reservations[*va] = size;
  return CUDA_SUCCESS;
}
CUresult cuMemAddressFree(unsigned long long va, size_t) {
  std::lock_guard lock(g_mutex);
  return g_reservations.erase(va) == 1 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
CUresult cuMemSetAccess(unsigned long long, size_t, const void*, size_t) {
  return injected_failure("cuMemSetAccess") ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_SUCCESS;
}
CUresult cuMemcpyDtoD_v2(unsigned long long, unsigned long long, size_t) { return CUDA_SUCCESS; }
CUresult cuMemcpyDtoH_v2(void*, unsigned long long, size_t) { return CUDA_SUCCESS; }
CUresult cuMemcpyHtoD_v2(unsigned long long, const void*, size_t) { return CUDA_SUCCESS; }

// Probes for tests (dlsym'd from the fake): what the process still holds of the driver.
int fake_cuda_primary_context_refs() {
  std::lock_guard lock(g_mutex);
  return g_primary_refs;
}
std::size_t fake_cuda_device_used() {
  std::lock_guard lock(g_mutex);
  return g_used;
}
std::size_t fake_cuda_live_allocations() {
  std::lock_guard lock(g_mutex);
  return g_allocations.size();
}
void fake_cuda_hold_stream(CUstream stream, int hold) {
  {
    std::lock_guard lock(g_hold_mutex);
    if (hold != 0) {
      g_held.insert(stream);
    } else {
      g_held.erase(stream);
    }
  }
  g_hold_cv.notify_all();
}
CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) {
  *bytes = capacity();
  return CUDA_SUCCESS;
}
std::size_t fake_cuda_reservations() {
  std::lock_guard lock(g_mutex);
  return g_reservations.size();
}
std::size_t fake_cuda_mappings() {
  std::lock_guard lock(g_mutex);
  return g_mapping_handle.size();
}

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
    {"cuMemMap", "cuMemMap", FAKE_FN(cuMemMap), nullptr},
    {"cuMemUnmap", "cuMemUnmap", FAKE_FN(cuMemUnmap), nullptr},
    {"cuArrayCreate", "cuArrayCreate_v2", FAKE_FN(cuArrayCreate_v2), nullptr},
    {"cuArray3DCreate", "cuArray3DCreate_v2", FAKE_FN(cuArray3DCreate_v2), nullptr},
    {"cuArrayDestroy", "cuArrayDestroy", FAKE_FN(cuArrayDestroy), nullptr},
    {"cuMemGetInfo", "cuMemGetInfo_v2", FAKE_FN(cuMemGetInfo_v2), nullptr},
    {"cuLaunchKernel", "cuLaunchKernel", FAKE_FN(cuLaunchKernel), FAKE_FN(cuLaunchKernel_ptsz)},
    {"cuLaunchKernelEx", "cuLaunchKernelEx", FAKE_FN(cuLaunchKernelEx), nullptr},
    {"cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel", FAKE_FN(cuLaunchCooperativeKernel), nullptr},
    {"cuGraphLaunch", "cuGraphLaunch", FAKE_FN(cuGraphLaunch), nullptr},
    {"cuEventCreate", "cuEventCreate", FAKE_FN(cuEventCreate), nullptr},
    {"cuEventRecord", "cuEventRecord", FAKE_FN(cuEventRecord), FAKE_FN(cuEventRecord_ptsz)},
    {"cuEventQuery", "cuEventQuery", FAKE_FN(cuEventQuery), nullptr},
    {"cuEventElapsedTime", "cuEventElapsedTime_v2", FAKE_FN(cuEventElapsedTime_v2), nullptr},
    {"cuStreamSynchronize", "cuStreamSynchronize", FAKE_FN(cuStreamSynchronize), nullptr},
    {"cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRetain", FAKE_FN(cuDevicePrimaryCtxRetain), nullptr},
    {"cuDevicePrimaryCtxRelease", "cuDevicePrimaryCtxRelease_v2", FAKE_FN(cuDevicePrimaryCtxRelease_v2), nullptr},
    {"cuDevicePrimaryCtxReset", "cuDevicePrimaryCtxReset_v2", FAKE_FN(cuDevicePrimaryCtxReset_v2), nullptr},
    {"cuCtxDestroy", "cuCtxDestroy_v2", FAKE_FN(cuCtxDestroy_v2), nullptr},
    {"cuCtxSetCurrent", "cuCtxSetCurrent", FAKE_FN(cuCtxSetCurrent), nullptr},
    {"cuCtxGetCurrent", "cuCtxGetCurrent", FAKE_FN(cuCtxGetCurrent), nullptr},
    {"cuMipmappedArrayCreate", "cuMipmappedArrayCreate", FAKE_FN(cuMipmappedArrayCreate), nullptr},
    {"cuMipmappedArrayDestroy", "cuMipmappedArrayDestroy", FAKE_FN(cuMipmappedArrayDestroy), nullptr},
    {"cuDeviceGetGraphMemAttribute", "cuDeviceGetGraphMemAttribute", FAKE_FN(cuDeviceGetGraphMemAttribute), nullptr},
    {"cuDeviceGraphMemTrim", "cuDeviceGraphMemTrim", FAKE_FN(cuDeviceGraphMemTrim), nullptr},
};

CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cuda_version, cuuint64_t flags,
                             CUdriverProcAddressQueryResult* status);

CUresult cuGetProcAddress(const char* symbol, void** pfn, int cuda_version, cuuint64_t flags) {
  return cuGetProcAddress_v2(symbol, pfn, cuda_version, flags, nullptr);
}

CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cuda_version, cuuint64_t flags,
                             CUdriverProcAddressQueryResult* status) {
  if (symbol == nullptr || pfn == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (std::strcmp(symbol, "cuCtxCreate") == 0) {  // one base name, a version per CUDA release
    *pfn = cuda_version >= 12050 ? FAKE_FN(cuCtxCreate_v4) : FAKE_FN(cuCtxCreate_v2);
    if (status != nullptr) *status = 0;
    return CUDA_SUCCESS;
  }
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
