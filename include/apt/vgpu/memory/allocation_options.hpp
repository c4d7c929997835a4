// Per-allocation choices for GPUMemoryManager::allocate.
//
// Thread safety: a plain value type.
#pragma once

#include <cstdint>
#include <string>

namespace apt::vgpu::memory {

struct AllocationOptions {
  // Who the memory is charged to (a vGPU name); its quota, if any, applies.
  std::string tenant;
  // Power of two; 0 means the manager's alignment (256 B by default).
  std::uint64_t alignment = 0;
  // May be spilled to host memory when the pool is full (LRU first).
  bool evictable = false;
  // Never moved by compaction nor evicted, until freed.
  bool pinned = false;
};

}  // namespace apt::vgpu::memory
