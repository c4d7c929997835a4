// The virtual memory management API: cuMemCreate, cuMemRelease, cuMemMap,
// cuMemUnmap. Physical memory from cuMemCreate stays allocated until its handle
// is released AND its last mapping is unmapped: cuMemRelease while mapped
// (llama.cpp's VMM pool does it) gives nothing back yet. Mappings are kept by
// start address under one mutex.
#include "accounting.hpp"
#include "hook_bodies.hpp"
#include "hook_support.hpp"

#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace vgpu_cuda {

namespace {

struct VmmHandle {
  std::uint32_t mappings = 0;
  bool released = false;
};
std::mutex g_vmm_mutex;
std::unordered_map<unsigned long long, VmmHandle>& vmm_handles() {
  static auto* m = new std::unordered_map<unsigned long long, VmmHandle>();  // outlives static destruction
  return *m;
}
std::map<unsigned long long, std::pair<unsigned long long, std::uint64_t>>& vmm_mappings() {  // ptr -> (handle, size)
  static auto* m = new std::map<unsigned long long, std::pair<unsigned long long, std::uint64_t>>();
  return *m;
}

}  // namespace

CUresult do_cuMemCreate(CUresult (*real)(CUmemGenericAllocationHandle*, size_t, const CUmemAllocationProp*, unsigned long long),
                        CUmemGenericAllocationHandle* handle, size_t bytes, const CUmemAllocationProp* prop,
                        unsigned long long flags) {
  return admitted(real, bytes, "cuMemCreate", [&] { return real(handle, bytes, prop, flags); },
                  [handle] { return *handle; });
}

CUresult do_cuMemRelease(CUresult (*real)(CUmemGenericAllocationHandle), CUmemGenericAllocationHandle handle) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (g_config.memory_limited) {
    std::lock_guard<std::mutex> lock(g_vmm_mutex);
    auto it = vmm_handles().find(handle);
    if (it != vmm_handles().end() && it->second.mappings > 0) {
      rc = real(handle);
      if (rc == CUDA_SUCCESS) it->second.released = true;  // counted until the last unmap
      return rc;
    }
    vmm_handles().erase(handle);
  }
  return free_like(real, handle, [&] { return real(handle); });
}

CUresult do_cuMemMap(CUresult (*real)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long),
                     CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                     unsigned long long flags) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  rc = real(ptr, size, offset, handle, flags);
  if (rc != CUDA_SUCCESS || !g_config.memory_limited) return rc;
  try {
    std::lock_guard<std::mutex> lock(g_vmm_mutex);
    ++vmm_handles()[handle].mappings;
    vmm_mappings()[ptr] = {handle, size};
  } catch (...) {  // out of host memory: the handle is then given back at its release (less safe, logged)
    log(Level::error, "out of host memory recording a mapping; its memory may be given back before its last unmap");
  }
  return rc;
}

CUresult do_cuMemUnmap(CUresult (*real)(CUdeviceptr, size_t), CUdeviceptr ptr, size_t size) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  rc = real(ptr, size);
  if (rc != CUDA_SUCCESS || !g_config.memory_limited) return rc;
  std::vector<unsigned long long> freed;  // handles released whose last mapping went
  {
    std::lock_guard<std::mutex> lock(g_vmm_mutex);
    auto& mappings = vmm_mappings();
    for (auto it = mappings.lower_bound(ptr); it != mappings.end() && it->first < ptr + size;) {
      const unsigned long long handle = it->second.first;
      it = mappings.erase(it);
      auto h = vmm_handles().find(handle);
      if (h == vmm_handles().end()) continue;
      if (h->second.mappings > 0) --h->second.mappings;
      if (h->second.mappings == 0 && h->second.released) {
        vmm_handles().erase(h);
        freed.push_back(handle);
      }
    }
  }
  for (const unsigned long long handle : freed) release(forget(handle));
  return rc;
}

}  // namespace vgpu_cuda
