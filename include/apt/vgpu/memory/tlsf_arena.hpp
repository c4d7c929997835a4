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
// Speed: a block's node is 24 bytes (offsets and sizes in granules, 32-bit
// links; whether it is free, allocated or recycled is told by its free-list
// link), so at most 2^32 - 1 granules (1 TiB at 256 B) are addressable; the
// common path touches only the nodes it must relink.
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
  // A block: its node's index (index_of()) and, for an allocated block, the stamp of the allocation
  // that made it, so freeing a stale id is caught even after its node was reused.
  using BlockId = std::uint64_t;
  static constexpr BlockId kNoBlock = UINT64_MAX;
  // The dense node index of a block (< the number of nodes ever made), for side tables.
  [[nodiscard]] static constexpr std::uint32_t index_of(BlockId block) noexcept { return static_cast<std::uint32_t>(block); }
  // The stamp of the allocation that made `block` (never 0), and the id made of an index and a stamp:
  // a caller may keep an id as these two halves.
  [[nodiscard]] static constexpr std::uint32_t stamp_of(BlockId block) noexcept { return static_cast<std::uint32_t>(block >> 32U); }
  [[nodiscard]] static constexpr BlockId block_id(std::uint32_t index, std::uint32_t stamp) noexcept {
    return (BlockId{stamp} << 32U) | index;
  }

  // Throws InvalidArgument when the granule is not a power of two, the
  // capacity is smaller than one granule, or it holds 2^32 granules or more.
  explicit TlsfArena(std::uint64_t capacity, std::uint64_t granule = 256);

  // A block of at least `size` bytes (rounded up to the granule) whose offset
  // is a multiple of `alignment` (0 or <= granule: the granule). nullopt when
  // no free block is large enough. `size` must be > 0.
  [[nodiscard]] std::optional<BlockId> allocate(std::uint64_t size, std::uint64_t alignment = 0) {
    const BlockId block = allocate_block(size, alignment);
    if (block == kNoBlock) return std::nullopt;
    return block;
  }
  // The same, kNoBlock when nothing fits. (allocate() is this, inlined: GCC 12 returns an
  // out-of-line std::optional<uint32_t> through a stack slot written in two parts and read in one,
  // a store-forwarding stall that cost a fifth of the allocation.)
  [[nodiscard]] BlockId allocate_block(std::uint64_t size, std::uint64_t alignment = 0);
  void free(BlockId block);

  [[nodiscard]] std::uint64_t offset(BlockId block) const {
    return std::uint64_t{nodes_[index_of(block)].offset} << granule_shift_;
  }
  [[nodiscard]] std::uint64_t size(BlockId block) const { return std::uint64_t{nodes_[index_of(block)].size} << granule_shift_; }
  [[nodiscard]] bool is_free(BlockId block) const { return is_free_node(nodes_[index_of(block)]); }
  // Whether `block` is allocated now, by the allocation that gave out this id (any id: a stale,
  // foreign or made-up one is false).
  [[nodiscard]] bool holds(BlockId block) const noexcept {
    const Index id = index_of(block);
    return id < nodes_.size() && nodes_[id].next_free == kAllocated && nodes_[id].prev_free == stamp_of(block);
  }
  // Starts loading node `index` into the cache (any index: out of range does nothing). For a caller
  // that knows which block it will free before it can prove it.
  void prefetch(std::uint32_t index) const noexcept {
    if (index < nodes_.size()) __builtin_prefetch(&nodes_[index]);
  }
  // Starts loading the physical neighbours free(block) will look at, so that their misses overlap the
  // caller's own.
  void prefetch_neighbours(BlockId block) const noexcept {
    const Node& n = nodes_[index_of(block)];
    if (n.prev_phys != kNone) __builtin_prefetch(&nodes_[n.prev_phys]);
    if (n.next_phys != kNone) __builtin_prefetch(&nodes_[n.next_phys]);
  }

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
  [[nodiscard]] BlockId first_block() const noexcept { return handle_of(first_); }
  [[nodiscard]] BlockId next_block(BlockId block) const { return handle_of(nodes_[index_of(block)].next_phys); }
  [[nodiscard]] BlockId prev_block(BlockId block) const { return handle_of(nodes_[index_of(block)].prev_phys); }

  // True when `block` is allocated and the block physically before it is free.
  [[nodiscard]] bool can_slide_down(BlockId block) const;
  // Moves allocated `block` to the start of the free block below it; the free
  // space moves above it (and coalesces there). O(1). The caller moves the data.
  void slide_down(BlockId block);

  // Verifies every structural invariant; throws std::logic_error describing the
  // first violation (tests and debugging only: O(blocks)).
  void check_invariants() const;

 private:
  // A node's index in nodes_; the low half of a BlockId.
  using Index = std::uint32_t;
  static constexpr Index kNone = UINT32_MAX;
  // Class indices are unsigned (they index arrays); so are these.
  static constexpr std::size_t kSlLog2 = 5;
  static constexpr std::size_t kSlCount = std::size_t{1} << kSlLog2;
  static constexpr std::size_t kFlCount = 64;

  // next_free doubles as the node's state: a free block's list link (kNone at a list's end), or
  // kAllocated, or kSpare for a recycled node (absorbed by a neighbour). An allocated node keeps its
  // allocation's stamp in prev_free (unused while allocated), the high half of its BlockId: a stale
  // id (a block freed twice, whose node was recycled and allocated again) has an old stamp, which
  // recycling cannot fake. Indices stay below kSpare.
  static constexpr Index kAllocated = UINT32_MAX - 1;
  static constexpr Index kSpare = UINT32_MAX - 2;
  struct Node {
    std::uint32_t offset = 0;  // granules
    std::uint32_t size = 0;    // granules
    Index prev_phys = kNone;
    Index next_phys = kNone;
    Index prev_free = kNone;
    Index next_free = kAllocated;
  };
  static bool is_free_node(const Node& n) noexcept { return n.next_free != kAllocated && n.next_free != kSpare; }
  // Node 0 is never a block: a link that may be kNone is written through or_sink(link), so "update
  // the neighbour if there is one" is a store to a chosen address instead of a branch (those
  // branches mispredicted about 1.5 times per allocate + free when free lists are short). Only its
  // prev_free and prev_phys are written, as scratch; its next_free stays kSpare, so no id names it
  // (holds() is false), and it is in no list or physical order.
  static constexpr Index kSink = 0;
  // (kNone + 1 wraps to kSink: arithmetic, where GCC 12 compiled `link != kNone ? link : kSink` to a branch.)
  static_assert(kNone + 1 == kSink);
  [[nodiscard]] static Index or_sink(Index link) noexcept { return link + static_cast<Index>(link == kNone); }

  Index new_node();
  [[gnu::noinline]] Index grow_nodes();
  void release_node(Index id);
  void insert_free(Index id, std::uint32_t size);
  void remove_free(Index id);
  // Splits `id` (the rest of a whole free block) so it keeps `size` granules; the rest becomes a
  // new free block.
  void split(Index id, std::uint32_t size);
  // Merges `right` (free, physically after `left`, both free) into `left`.
  void absorb_next(Index left);
  // The BlockId of node `index` as the physical-order functions give it out.
  [[nodiscard]] BlockId handle_of(Index index) const noexcept {
    if (index == kNone) return kNoBlock;
    const Node& n = nodes_[index];
    return n.next_free == kAllocated ? (BlockId{n.prev_free} << 32U) | index : BlockId{index};
  }
  static void mapping(std::uint64_t units, std::size_t& fl, std::size_t& sl);
  Index take_fitting_head(std::uint64_t units);
  BlockId finish_allocation(Index id, std::uint64_t units);
  // Over-aligned requests, and requests the rounded-up search finds no list for.
  [[gnu::noinline]] BlockId allocate_slow(std::uint64_t units_wanted, std::uint64_t align_units);
  // A free block where `units` granules fit at an offset with `alignment` (in granules), scanning
  // every free block from `units`' class up; kNone when there is none. The slow path of
  // over-aligned requests.
  [[nodiscard]] Index find_aligned_fit(std::uint64_t units, std::uint64_t alignment) const;

  std::uint64_t capacity_;
  std::uint64_t granule_;
  unsigned granule_shift_;
  std::uint64_t used_ = 0;
  std::uint32_t live_ = 0;
  Index first_ = kNone;

  std::vector<Node> nodes_;
  Index spare_head_ = kNone;  // recycled nodes, linked through prev_free (no vector to grow or check)
  std::uint32_t stamp_ = 0;  // of the last allocation
  std::uint64_t fl_bitmap_ = 0;
  std::array<std::uint32_t, kFlCount> sl_bitmap_{};
  std::array<std::array<Index, kSlCount>, kFlCount> heads_{};
};

}  // namespace apt::vgpu::memory
