// See nvml_view.hpp.
#include "nvml_view.hpp"

#include "accounting.hpp"
#include "hook_support.hpp"
#include "process_identity.hpp"
#include "real_driver.hpp"
#include "safety_net.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <dlfcn.h>
#include <vector>

namespace vgpu_cuda {

namespace {

constexpr int kNvmlSuccess = 0;
constexpr int kNvmlInsufficientSize = 7;
constexpr int kNvmlLibraryNotFound = 12;
constexpr int kNvmlUnknown = 999;

struct NvmlMemory {
  unsigned long long total, free, used;
};
struct NvmlMemoryV2 {
  unsigned int version;
  unsigned long long total, reserved, free, used;
};
struct NvmlProcessInfoV1 {  // nvmlProcessInfo_v1_t
  unsigned int pid;
  unsigned long long used;
};
struct NvmlProcessInfoV2 {  // nvmlProcessInfo_v2_t, which is also what the _v3 functions fill
  unsigned int pid;
  unsigned long long used;
  unsigned int gpu_instance;
  unsigned int compute_instance;
};
using NvmlUuidFn = int (*)(void*, char*, unsigned int);

// The real function: as found by dlsym on NVML's handle, or the next definition after ours.
void* nvml_real(const char* name, std::atomic<void*>& cached) {
  if (void* p = cached.load()) return p;
  void* p = real_dlsym()(RTLD_NEXT, name);
  if (p == nullptr) {
    if (void* lib = ::dlopen(nvml_library(), RTLD_NOW | RTLD_NOLOAD)) p = real_dlsym()(lib, name);
  }
  cached.store(p);
  return p;
}

// Whether `device` is this slice's GPU.
bool is_my_gpu(void* device) {
  if (g_config.gpu_uuid.empty()) return false;
  static std::atomic<void*> uuid_fn{nullptr};
  auto get_uuid = reinterpret_cast<NvmlUuidFn>(nvml_real("nvmlDeviceGetUUID", uuid_fn));
  char uuid[96] = {};
  return get_uuid != nullptr && get_uuid(device, uuid, sizeof uuid) == 0 && g_config.gpu_uuid == uuid;
}

template <class Memory>
void virtualise(void* device, Memory* m) {
  if (!g_config.memory_limited || m == nullptr || !is_my_gpu(device)) return;
  const std::uint64_t cap = limit();
  const std::uint64_t in_use = std::min(used(), cap);
  m->total = cap;
  m->used = in_use;
  m->free = cap - in_use;
}

// A process of this slice: this one, or one holding a slot of its region (seen from
// this PID namespace, `own`; NVML names processes by the pids of the namespace it runs in).
bool in_slice(unsigned int pid, std::uint64_t own) {
  if (pid == static_cast<unsigned int>(g_pid)) return true;
  for (const vgpu_shm_slot& s : g_region->slots) {
    const std::int32_t slot_pid = __atomic_load_n(&s.pid, __ATOMIC_ACQUIRE);
    const std::uint64_t ns = __atomic_load_n(&s.pid_namespace, __ATOMIC_ACQUIRE);
    if (slot_pid > 0 && static_cast<unsigned int>(slot_pid) == pid && (ns == 0 || own == 0 || ns == own)) return true;
  }
  return false;
}

// NVML's process list with other tenants' processes left out, keeping NVML's
// contract: with too small a buffer (or none), the count needed and INSUFFICIENT_SIZE.
template <class Info>
int filtered_processes(const char* name, std::atomic<void*>& cached, void* device, unsigned int* count, Info* infos) {
  auto real = reinterpret_cast<int (*)(void*, unsigned int*, Info*)>(nvml_real(name, cached));
  if (real == nullptr) return kNvmlLibraryNotFound;
  if (!g_config.configured || g_config.broken || count == nullptr || !is_my_gpu(device)) return real(device, count, infos);
  std::vector<Info> all(std::max(*count, 64U));
  unsigned int n = 0;
  int rc = kNvmlInsufficientSize;
  for (int attempt = 0; attempt < 4 && rc == kNvmlInsufficientSize; ++attempt) {
    n = static_cast<unsigned int>(all.size());
    rc = real(device, &n, all.data());
    if (rc == kNvmlInsufficientSize) all.resize(static_cast<std::size_t>(n) + 64);  // processes came and went
  }
  if (rc != kNvmlSuccess) return rc;
  all.resize(std::min<std::size_t>(n, all.size()));
  const std::uint64_t own = own_pid_namespace();  // a stat() of /proc/self/ns/pid: once per query
  all.erase(std::remove_if(all.begin(), all.end(), [own](const Info& i) { return !in_slice(i.pid, own); }), all.end());
  const auto kept = static_cast<unsigned int>(all.size());
  if (kept > *count || (infos == nullptr && kept > 0)) {
    *count = kept;
    return kNvmlInsufficientSize;
  }
  std::copy(all.begin(), all.end(), infos);
  *count = kept;
  return kNvmlSuccess;
}

std::atomic<void*> g_memory{nullptr};  // the real functions, as found by dlsym or RTLD_NEXT
std::atomic<void*> g_memory_v2{nullptr};

}  // namespace

}  // namespace vgpu_cuda

using namespace vgpu_cuda;

extern "C" {

VGPU_EXPORT int nvmlDeviceGetMemoryInfo(void* device, NvmlMemory* memory) {
  try {
    ensure_init();
    auto real = reinterpret_cast<int (*)(void*, NvmlMemory*)>(nvml_real("nvmlDeviceGetMemoryInfo", g_memory));
    if (real == nullptr) return kNvmlLibraryNotFound;
    const int rc = real(device, memory);
    if (rc == kNvmlSuccess) virtualise(device, memory);
    return rc;
  } catch (...) {  // nothing may cross the C ABI
    return kNvmlUnknown;
  }
}

VGPU_EXPORT int nvmlDeviceGetMemoryInfo_v2(void* device, NvmlMemoryV2* memory) {
  try {
    ensure_init();
    auto real = reinterpret_cast<int (*)(void*, NvmlMemoryV2*)>(nvml_real("nvmlDeviceGetMemoryInfo_v2", g_memory_v2));
    if (real == nullptr) return kNvmlLibraryNotFound;
    const int rc = real(device, memory);
    if (rc == kNvmlSuccess && memory != nullptr && g_config.memory_limited && is_my_gpu(device)) {
      virtualise(device, memory);
      memory->reserved = 0;
    }
    return rc;
  } catch (...) {  // nothing may cross the C ABI
    return kNvmlUnknown;
  }
}

// Every running-process query, each version: X(name, info type).
#define VGPU_NVML_PROCESS_QUERIES(X)                                      \
  X(nvmlDeviceGetComputeRunningProcesses, NvmlProcessInfoV1)              \
  X(nvmlDeviceGetComputeRunningProcesses_v2, NvmlProcessInfoV2)           \
  X(nvmlDeviceGetComputeRunningProcesses_v3, NvmlProcessInfoV2)           \
  X(nvmlDeviceGetGraphicsRunningProcesses, NvmlProcessInfoV1)             \
  X(nvmlDeviceGetGraphicsRunningProcesses_v2, NvmlProcessInfoV2)          \
  X(nvmlDeviceGetGraphicsRunningProcesses_v3, NvmlProcessInfoV2)          \
  X(nvmlDeviceGetMPSComputeRunningProcesses, NvmlProcessInfoV1)           \
  X(nvmlDeviceGetMPSComputeRunningProcesses_v2, NvmlProcessInfoV2)        \
  X(nvmlDeviceGetMPSComputeRunningProcesses_v3, NvmlProcessInfoV2)

#define VGPU_NVML_PROCESS_HOOK(name, Info)                                                  \
  static std::atomic<void*> g_real_##name{nullptr};                                         \
  VGPU_EXPORT int name(void* device, unsigned int* count, Info* infos) {                    \
    try {                                                                                    \
      ensure_init();                                                                         \
      return filtered_processes<Info>(#name, g_real_##name, device, count, infos);           \
    } catch (...) { /* nothing may cross the C ABI */                                        \
      return kNvmlUnknown;                                                                   \
    }                                                                                        \
  }
VGPU_NVML_PROCESS_QUERIES(VGPU_NVML_PROCESS_HOOK)
#undef VGPU_NVML_PROCESS_HOOK

}  // extern "C"

namespace vgpu_cuda {

void* nvml_hook_for(const char* symbol, void* found) {
  struct Hook {
    const char* name;
    std::atomic<void*>* real;
    void* hook;
  };
  static const Hook kNvmlHooks[] = {
      {"nvmlDeviceGetMemoryInfo", &g_memory, reinterpret_cast<void*>(&nvmlDeviceGetMemoryInfo)},
      {"nvmlDeviceGetMemoryInfo_v2", &g_memory_v2, reinterpret_cast<void*>(&nvmlDeviceGetMemoryInfo_v2)},
#define VGPU_NVML_ENTRY(name, Info) {#name, &g_real_##name, reinterpret_cast<void*>(&name)},
      VGPU_NVML_PROCESS_QUERIES(VGPU_NVML_ENTRY)
#undef VGPU_NVML_ENTRY
  };
  for (const Hook& h : kNvmlHooks) {
    if (std::strcmp(h.name, symbol) != 0) continue;
    h.real->store(found);
    return h.hook;
  }
  return nullptr;
}

}  // namespace vgpu_cuda
