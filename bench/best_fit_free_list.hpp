// The baseline for the pool benchmarks: an address-ordered free list with
// best-fit search and coalescing on free, the design of RMM's pool
// (coalescing_free_list: a sorted std::list searched linearly). Allocation and
// free are O(free blocks). Offsets only, like TlsfArena.
#pragma once

#include <cstdint>
#include <iterator>
#include <list>
#include <optional>

namespace apt::vgpu::bench {

class BestFitFreeList {
 public:
  struct Block {
    std::uint64_t offset;
    std::uint64_t size;
  };

  explicit BestFitFreeList(std::uint64_t capacity, std::uint64_t alignment = 256)
      : alignment_(alignment), free_{{0, capacity / alignment * alignment}} {}

  std::optional<Block> allocate(std::uint64_t size) {
    size = (size + alignment_ - 1) / alignment_ * alignment_;
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->size >= size && (best == free_.end() || it->size < best->size)) {
        best = it;
        if (it->size == size) break;
      }
    }
    if (best == free_.end()) return std::nullopt;
    const Block out{best->offset, size};
    if (best->size == size) {
      free_.erase(best);
    } else {
      best->offset += size;
      best->size -= size;
    }
    return out;
  }

  void free(Block block) {
    auto next = free_.begin();
    while (next != free_.end() && next->offset < block.offset) ++next;
    auto inserted = free_.insert(next, block);
    if (next != free_.end() && inserted->offset + inserted->size == next->offset) {
      inserted->size += next->size;
      free_.erase(next);
    }
    if (inserted != free_.begin()) {
      auto prev = std::prev(inserted);
      if (prev->offset + prev->size == inserted->offset) {
        prev->size += inserted->size;
        free_.erase(inserted);
      }
    }
  }

  [[nodiscard]] std::size_t free_blocks() const { return free_.size(); }

 private:
  std::uint64_t alignment_;
  std::list<Block> free_;
};

}  // namespace apt::vgpu::bench
