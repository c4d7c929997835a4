// See safety_net.hpp.
#include "safety_net.hpp"

#include "accounting.hpp"
#include "config.hpp"
#include "process_identity.hpp"
#include "real_driver.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <dlfcn.h>
#include <mutex>

namespace vgpu_cuda {

namespace {

struct NvmlProcessInfo {  // nvmlProcessInfo_t, as ..._v2 and _v3 fill it
  unsigned int pid;
  unsigned long long used;
  unsigned int gpu_instance;
  unsigned int compute_instance;
};
using NvmlInitFn = int (*)();
using NvmlCountFn = int (*)(unsigned int*);
using NvmlHandleFn = int (*)(unsigned int, void**);
using NvmlUuidFn = int (*)(void*, char*, unsigned int);
using NvmlProcessesFn = int (*)(void*, unsigned int*, NvmlProcessInfo*);

struct DriverView {
  std::mutex mutex;
  bool resolved = false;
  void* device = nullptr;
  NvmlProcessesFn processes = nullptr;
  std::uint64_t charged = 0;   // bytes charged because NVML saw more than the library counted
  std::int64_t last_ns = 0;
  bool told = false;
};
DriverView& driver_view() {
  static auto* v = new DriverView();  // outlives static destruction
  return *v;
}

// What NVML says this process holds on the slice's GPU; -1 when it cannot tell.
// Called with the view's mutex held.
long long driver_reported_locked(DriverView& v) {
  if (!v.resolved) {
    v.resolved = true;
    if (g_config.gpu_uuid.empty()) return -1;
    void* lib = ::dlopen(nvml_library(), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return -1;
    const DlsymFn find = real_dlsym();
    auto init = reinterpret_cast<NvmlInitFn>(find(lib, "nvmlInit_v2"));
    auto count = reinterpret_cast<NvmlCountFn>(find(lib, "nvmlDeviceGetCount_v2"));
    auto handle = reinterpret_cast<NvmlHandleFn>(find(lib, "nvmlDeviceGetHandleByIndex_v2"));
    auto uuid_of = reinterpret_cast<NvmlUuidFn>(find(lib, "nvmlDeviceGetUUID"));
    auto processes = reinterpret_cast<NvmlProcessesFn>(find(lib, "nvmlDeviceGetComputeRunningProcesses_v3"));
    if (processes == nullptr) processes = reinterpret_cast<NvmlProcessesFn>(find(lib, "nvmlDeviceGetComputeRunningProcesses_v2"));
    unsigned int devices = 0;
    if (init == nullptr || count == nullptr || handle == nullptr || uuid_of == nullptr || processes == nullptr ||
        init() != 0 || count(&devices) != 0) {
      return -1;
    }
    for (unsigned int i = 0; i < devices && v.device == nullptr; ++i) {
      void* device = nullptr;
      char uuid[96] = {};
      if (handle(i, &device) == 0 && uuid_of(device, uuid, sizeof uuid) == 0 && g_config.gpu_uuid == uuid) {
        v.device = device;
      }
    }
    if (v.device != nullptr) v.processes = processes;
  }
  if (v.processes == nullptr) return -1;
  NvmlProcessInfo infos[128];
  unsigned int n = 128;
  if (v.processes(v.device, &n, infos) != 0) return -1;
  const auto me = static_cast<unsigned int>(g_pid);
  for (unsigned int i = 0; i < n && i < 128; ++i) {
    if (infos[i].pid != me) continue;
    return infos[i].used == ~0ULL ? -1 : static_cast<long long>(std::min<unsigned long long>(infos[i].used, 1ULL << 62));
  }
  return 0;  // not listed: NVML lists a process once it has a context
}

}  // namespace

const char* nvml_library() {
  const char* path = std::getenv("VGPU_REAL_LIBNVML");
  return path != nullptr && *path != '\0' ? path : "libnvidia-ml.so.1";
}

long long driver_reported_bytes() {
  DriverView& v = driver_view();
  std::lock_guard<std::mutex> lock(v.mutex);
  return driver_reported_locked(v);
}

void reconcile_with_driver(bool always) {
  if (!g_config.memory_limited || g_config.gpu_uuid.empty()) return;
  DriverView& v = driver_view();
  std::int64_t charge = 0;  // > 0: charge more; < 0: give back
  {
    std::unique_lock<std::mutex> lock(v.mutex, std::try_to_lock);
    if (!lock.owns_lock()) return;  // another thread is at it
    const std::int64_t now = monotonic_ns();
    if (!always && now - v.last_ns < 1'000'000'000) return;
    v.last_ns = now;
    const long long reported = driver_reported_locked(v);
    if (reported < 0) return;
    vgpu_shm_slot* slot = my_slot();
    const std::uint64_t mine = slot != nullptr ? __atomic_load_n(&slot->used_bytes, __ATOMIC_ACQUIRE) : 0;
    const std::uint64_t counted = mine > v.charged ? mine - v.charged : 0;  // what the library saw allocated
    const auto target = static_cast<std::uint64_t>(reported) > counted ? static_cast<std::uint64_t>(reported) - counted : 0;
    charge = static_cast<std::int64_t>(target) - static_cast<std::int64_t>(v.charged);
    v.charged = target;
    if (target > 0 && !v.told) {
      v.told = true;
      log(Level::notice, "NVML says this process holds %llu bytes more than it allocated through the hooks "
                         "(modules, or paths not hooked): counted against the slice",
          static_cast<unsigned long long>(target));
    }
  }
  if (charge > 0) {
    charge_unchecked(static_cast<std::uint64_t>(charge));  // already on the GPU, so charged even past the limit
  } else if (charge < 0) {
    release(static_cast<std::uint64_t>(-charge));
  }
}

}  // namespace vgpu_cuda
