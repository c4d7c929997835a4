// MemoryBlock: a handle to one allocation of a GPUMemoryManager.
//
// A handle stays valid while its block is allocated, whatever happens to the
// block: compaction may move it and eviction may spill it to host memory, so
// ask the manager for the block's current address (GPUMemoryManager::address,
// or pin() to keep it in place while you use it). Handles are small values;
// copying one does not copy the block. A freed handle, or one from another
// manager, is rejected with InvalidArgument rather than touching memory.
//
// Thread safety: a plain value type.
#pragma once

#include <compare>
#include <cstdint>

namespace apt::vgpu::memory {

struct MemoryBlock {
  // Set in `slot` when it names one of the manager's slots for evictable blocks (whose place in the
  // pool eviction takes away) rather than the block's allocator node.
  static constexpr std::uint32_t kSlotHandle = 1U << 31U;
  std::uint32_t slot = UINT32_MAX;
  std::uint32_t generation = 0;
  std::uint32_t manager = 0;

  [[nodiscard]] bool valid() const noexcept { return slot != UINT32_MAX; }
  friend bool operator==(const MemoryBlock&, const MemoryBlock&) = default;
};

}  // namespace apt::vgpu::memory
