// libvgpu-torch.so: the pool as PyTorch's CUDA allocator (include/apt/vgpu/memory/torch_allocator.h).
//
// One GPUMemoryManager per device over the CUDA VMM backing, with compaction and eviction off:
// PyTorch holds raw pointers, so a block may never move. A freed block waits in `pending` with an
// event recorded on its stream and goes back to the pool once the event has completed.
#include <apt/vgpu/memory/torch_allocator.h>

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/memory/gpu_memory_manager.hpp>
#include <apt/vgpu/memory/out_of_memory_error.hpp>

#include <cuda.h>
#include <dlfcn.h>
#include <fmt/format.h>

#include <cstdlib>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using apt::vgpu::memory::GPUMemoryManager;
using apt::vgpu::memory::MemoryBlock;

thread_local std::string t_last_error;

void fail(std::string why) { t_last_error = std::move(why); }

// The driver calls this library makes itself (the pool's backing loads its own).
struct Driver {
  decltype(&cuEventCreate) event_create = nullptr;
  decltype(&cuEventRecord) event_record = nullptr;
  decltype(&cuEventQuery) event_query = nullptr;
  decltype(&cuEventSynchronize) event_synchronize = nullptr;
  decltype(&cuEventDestroy_v2) event_destroy = nullptr;
  decltype(&cuStreamSynchronize) stream_synchronize = nullptr;
  decltype(&cuDeviceGet) device_get = nullptr;
  decltype(&cuDeviceTotalMem_v2) total_memory = nullptr;
  std::string error;

  Driver() {
    void* library = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
      error = fmt::format("cannot load libcuda.so.1 ({})", ::dlerror());
      return;
    }
    bool complete = true;
    auto load = [&](auto& f, const char* name) {
      f = reinterpret_cast<std::remove_reference_t<decltype(f)>>(::dlsym(library, name));
      if (f == nullptr) {
        complete = false;
        error = fmt::format("libcuda.so.1 has no {}", name);
      }
    };
    load(event_create, "cuEventCreate");
    load(event_record, "cuEventRecord");
    load(event_query, "cuEventQuery");
    load(event_synchronize, "cuEventSynchronize");
    load(event_destroy, "cuEventDestroy_v2");
    load(stream_synchronize, "cuStreamSynchronize");
    load(device_get, "cuDeviceGet");
    load(total_memory, "cuDeviceTotalMem_v2");
    if (complete) error.clear();
  }
};

const Driver& driver() {
  static const Driver d;
  return d;
}

struct Scope {
  std::string tenant;
  std::uint64_t limit = 0;
};

thread_local std::unique_ptr<Scope> t_scope;

struct Pending {
  MemoryBlock block;
  CUevent event = nullptr;
};

struct Device {
  std::unique_ptr<GPUMemoryManager> pool;
  std::unordered_map<std::uintptr_t, MemoryBlock> live;
  std::deque<Pending> pending;
  std::vector<CUevent> spare_events;
  std::map<std::string, std::uint64_t> quotas;  // as last set on the pool
};

// Immortal: PyTorch may free tensors while the process exits, after static destructors have run, so
// the pools, their events and the scopes are never destroyed (the OS takes them with the process).
std::mutex& g_mutex = *new std::mutex;  // guards everything below
std::map<int, Device>& g_devices = *new std::map<int, Device>;
std::unique_ptr<Scope>& g_process_scope = *new std::unique_ptr<Scope>;

// The pool's size: VGPU_TORCH_POOL_SIZE (a size such as 40GB) or the device's memory.
std::uint64_t pool_size(int device) {
  if (const char* env = std::getenv("VGPU_TORCH_POOL_SIZE"); env != nullptr && *env != '\0') {
    return apt::vgpu::parse_size(env, "VGPU_TORCH_POOL_SIZE");
  }
  const Driver& d = driver();
  CUdevice handle = 0;
  std::size_t bytes = 0;
  if (d.device_get(&handle, device) != CUDA_SUCCESS || d.total_memory(&bytes, handle) != CUDA_SUCCESS) {
    throw apt::vgpu::DeviceError(fmt::format("device {}: the driver does not report its memory; set VGPU_TORCH_POOL_SIZE",
                                             device));
  }
  return bytes;
}

Device& device_state(int device) {
  Device& d = g_devices[device];
  if (!d.pool) {
    apt::vgpu::memory::MemoryManagerOptions o;
    o.pool_size = pool_size(device);
    o.backing = apt::vgpu::memory::BackingKind::cuda;
    o.device = device;
    o.compaction = false;  // PyTorch holds raw pointers: blocks never move
    o.eviction = false;
    d.pool = std::make_unique<GPUMemoryManager>(o);
  }
  return d;
}

// Returns to the pool every pending block whose stream has passed its free; with `wait`, all of them.
void reap(Device& d, bool wait) {
  const Driver& drv = driver();
  for (auto it = d.pending.begin(); it != d.pending.end();) {
    const CUresult state = wait ? drv.event_synchronize(it->event) : drv.event_query(it->event);
    if (state == CUDA_ERROR_NOT_READY) {
      ++it;
      continue;
    }
    // Done (or the event broke, which a wait would not fix): the stream is past the free.
    d.pool->free(it->block);
    d.spare_events.push_back(it->event);
    it = d.pending.erase(it);
  }
}

const Scope& current_scope() {
  static const Scope kNone;
  if (t_scope) return *t_scope;
  if (g_process_scope) return *g_process_scope;
  return kNone;
}

}  // namespace

extern "C" {

void* vgpu_torch_malloc(ssize_t size, int device, void* /*stream*/) {
  if (size <= 0) return nullptr;
  try {
    if (!driver().error.empty()) {
      fail("vgpu_torch_malloc: " + driver().error);
      return nullptr;
    }
    std::lock_guard lock(g_mutex);
    Device& d = device_state(device);
    const Scope& scope = current_scope();
    auto [quota, inserted] = d.quotas.try_emplace(scope.tenant, scope.limit);
    if (inserted || quota->second != scope.limit) {
      d.pool->set_quota(scope.tenant, scope.limit);
      quota->second = scope.limit;
    }
    reap(d, false);
    apt::vgpu::memory::AllocationOptions options;
    options.tenant = scope.tenant;
    MemoryBlock block;
    try {
      block = d.pool->allocate(static_cast<std::uint64_t>(size), options);
    } catch (const apt::vgpu::memory::OutOfMemoryError&) {
      if (d.pending.empty()) throw;
      reap(d, true);  // freed blocks still in flight: wait for their streams, then try again
      block = d.pool->allocate(static_cast<std::uint64_t>(size), options);
    }
    const std::uintptr_t address = d.pool->address(block);
    d.live.emplace(address, block);
    return reinterpret_cast<void*>(address);
  } catch (const std::exception& e) {
    fail(fmt::format("vgpu_torch_malloc({} bytes, device {}): {}", size, device, e.what()));
  } catch (...) {
    fail("vgpu_torch_malloc: unknown error");
  }
  return nullptr;
}

void vgpu_torch_free(void* ptr, ssize_t /*size*/, int device, void* stream) {
  if (ptr == nullptr) return;
  try {
    std::lock_guard lock(g_mutex);
    auto found = g_devices.find(device);
    if (found == g_devices.end()) {
      fail(fmt::format("vgpu_torch_free: {} was not allocated here on device {}", ptr, device));
      return;
    }
    Device& d = found->second;
    auto live = d.live.find(reinterpret_cast<std::uintptr_t>(ptr));
    if (live == d.live.end()) {
      fail(fmt::format("vgpu_torch_free: {} was not allocated here on device {} (or freed twice)", ptr, device));
      return;
    }
    const MemoryBlock block = live->second;
    d.live.erase(live);
    const Driver& drv = driver();
    CUevent event = nullptr;
    if (!d.spare_events.empty()) {
      event = d.spare_events.back();
      d.spare_events.pop_back();
    } else if (drv.event_create(&event, CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS) {
      event = nullptr;
    }
    if (event != nullptr && drv.event_record(event, static_cast<CUstream>(stream)) == CUDA_SUCCESS) {
      d.pending.push_back(Pending{block, event});
      return;
    }
    // No event (a stream being captured into a graph refuses one): wait for the stream instead.
    if (event != nullptr) d.spare_events.push_back(event);
    (void)drv.stream_synchronize(static_cast<CUstream>(stream));
    d.pool->free(block);
  } catch (const std::exception& e) {
    fail(fmt::format("vgpu_torch_free({}): {}", ptr, e.what()));
  } catch (...) {
    fail("vgpu_torch_free: unknown error");
  }
}

int vgpu_torch_set_scope(const char* tenant, uint64_t memory_limit, int process_wide) {
  if (tenant == nullptr || *tenant == '\0') {
    fail("vgpu_torch_set_scope: tenant is empty; name the vGPU the memory is charged to");
    return -1;
  }
  try {
    t_scope = std::make_unique<Scope>(Scope{tenant, memory_limit});
    if (process_wide != 0) {
      std::lock_guard lock(g_mutex);
      g_process_scope = std::make_unique<Scope>(Scope{tenant, memory_limit});
    }
    return 0;
  } catch (const std::exception& e) {
    fail(fmt::format("vgpu_torch_set_scope: {}", e.what()));
    return -1;
  }
}

void vgpu_torch_clear_scope(int process_wide) {
  t_scope.reset();
  if (process_wide != 0) {
    std::lock_guard lock(g_mutex);
    g_process_scope.reset();
  }
}

uint64_t vgpu_torch_usage(const char* tenant, int device) {
  try {
    std::lock_guard lock(g_mutex);
    auto found = g_devices.find(device);
    if (found == g_devices.end() || !found->second.pool) return 0;
    return found->second.pool->tenant_usage(tenant == nullptr ? "" : tenant);
  } catch (const std::exception& e) {
    fail(fmt::format("vgpu_torch_usage: {}", e.what()));
    return 0;
  }
}

uint64_t vgpu_torch_pending_frees(int device) {
  std::lock_guard lock(g_mutex);
  auto found = g_devices.find(device);
  return found == g_devices.end() ? 0 : found->second.pending.size();
}

const char* vgpu_torch_last_error(void) { return t_last_error.c_str(); }

}  // extern "C"
