// TlsfArena: a Two-Level Segregated Fit allocator over an abstract range of
// offsets [0, capacity). It never touches the memory it manages: all metadata
// (block nodes, free lists, bitmaps) lives in ordinary host memory, so the
// range can be GPU memory the CPU cannot read.
//
// Sizes and offsets are multiples of the granule (default 256 B), so every
// block is granule-aligned; larger power-of-two alignments are honoured per
// allocation. allocate() and free() are O(1): a free block is found through a
// first-level bitmap (power-of-two classes) and a second-level bitmap (32
// linear subdivisions per class), and freeing coalesces immediately with
// both physical neighbours. The search rounds a request up to the next class
// boundary, so any block in the chosen list fits; the block is then split to
// the request, so the only waste is rounding each size up to the granule
// (< one granule per block).
//
// Block ids of allocated blocks are stable until freed, also across
// slide_down(), which compaction uses to move a block into the free space
// just below it.
//
// Thread safety: none; the owner serialises access (GPUMemoryManager holds a mutex).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace apt::vgpu::memory {

class TlsfArena {
 public:
  using BlockId = std::uint32_t;
  static constexpr BlockId kNoBlock = UINT32_MAX;

  // Throws InvalidArgument when the granule is not a power of two or the
  // capacity is smaller than one granule.
  explicit TlsfArena(std::uint64_t capacity, std::uint64_t granule = 256);

  // A block of at least `size` bytes (rounded up to the granule) whose offset
  // is a multiple of `alignment` (0 or <= granule: the granule). nullopt when
  // no free block is large enough. `size` must be > 0.
  [[nodiscard]] std::optional<BlockId> allocate(std::uint64_t size, std::uint64_t alignment = 0);
  void free(BlockId block);

  [[nodiscard]] std::uint64_t offset(BlockId block) const { return nodes_[block].offset; }
  [[nodiscard]] std::uint64_t size(BlockId block) const { return nodes_[block].size; }
  [[nodiscard]] bool is_free(BlockId block) const { return nodes_[block].free; }

  [[nodiscard]] std::uint64_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] std::uint64_t granule() const noexcept { return granule_; }
  [[nodiscard]] std::uint64_t used_bytes() const noexcept { return used_; }
  [[nodiscard]] std::uint64_t free_bytes() const noexcept { return capacity_ - used_; }
  [[nodiscard]] std::uint32_t live_blocks() const noexcept { return live_; }
  // The largest single free block (scans only the highest non-empty size class).
  [[nodiscard]] std::uint64_t largest_free() const;
  // 1 - largest_free / free_bytes; 0 when nothing or everything is free in one piece.
  [[nodiscard]] double fragmentation() const;

  // Physical order, for compaction and checks.
  [[nodiscard]] BlockId first_block() const noexcept { return first_; }
  [[nodiscard]] BlockId next_block(BlockId block) const { return nodes_[block].next_phys; }
  [[nodiscard]] BlockId prev_block(BlockId block) const { return nodes_[block].prev_phys; }

  // True when `block` is allocated and the block physically before it is free.
  [[nodiscard]] bool can_slide_down(BlockId block) const;
  // Moves allocated `block` to the start of the free block below it; the free
  // space moves above it (and coalesces there). O(1). The caller moves the data.
  void slide_down(BlockId block);

  // Verifies every structural invariant; throws std::logic_error describing the
  // first violation (tests and debugging only: O(blocks)).
  void check_invariants() const;

 private:
  // Class indices are unsigned (they index arrays); so are these.
  static constexpr std::size_t kSlLog2 = 5;
  static constexpr std::size_t kSlCount = std::size_t{1} << kSlLog2;
  static constexpr std::size_t kFlCount = 64;

  struct Node {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
    BlockId prev_phys = kNoBlock;
    BlockId next_phys = kNoBlock;
    BlockId prev_free = kNoBlock;
    BlockId next_free = kNoBlock;
    bool free = false;
    bool spare = false;  // recycled (absorbed by a neighbour); not a block until new_node() hands it out again
  };

  BlockId new_node();
  void release_node(BlockId id);
  void insert_free(BlockId id);
  void remove_free(BlockId id);
  // Splits `id` so it keeps `size` bytes; the rest becomes a new free block.
  void split(BlockId id, std::uint64_t size);
  // Merges `right` (free, physically after `left`, both free) into `left`.
  void absorb_next(BlockId left);
  [[nodiscard]] std::uint64_t round_up(std::uint64_t bytes) const;

  static void mapping(std::uint64_t units, std::size_t& fl, std::size_t& sl);
  // A free block where `rounded` bytes fit at an offset with `alignment`, scanning every free block
  // from `rounded`'s class up; kNoBlock when there is none. The slow path of over-aligned requests.
  [[nodiscard]] BlockId find_aligned_fit(std::uint64_t rounded, std::uint64_t alignment) const;

  std::uint64_t capacity_;
  std::uint64_t granule_;
  int granule_shift_;
  std::uint64_t used_ = 0;
  std::uint32_t live_ = 0;
  BlockId first_ = kNoBlock;

  std::vector<Node> nodes_;
  std::vector<BlockId> spare_nodes_;
  std::uint64_t fl_bitmap_ = 0;
  std::array<std::uint32_t, kFlCount> sl_bitmap_{};
  std::array<std::array<BlockId, kSlCount>, kFlCount> heads_{};
};

}  // namespace apt::vgpu::memory
