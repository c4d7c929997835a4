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
// Thread safety: none; the owner serialises access (GPUMemoryManager holds its lock).
#pragma once

#include <array>
#include <bit>
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
  // Frees `block` (throws std::logic_error for an id that is not allocated now: freed twice, stale or
  // made up) and returns the free block that now holds its range, merged with free neighbours (its
  // offset() and size() say where the free space around the block begins and ends).
  BlockId free(BlockId block);

  [[nodiscard]] std::uint64_t offset(BlockId block) const {
    return std::uint64_t{nodes_[index_of(block)].offset} << granule_shift_;
  }
  [[nodiscard]] std::uint64_t size(BlockId block) const { return std::uint64_t{nodes_[index_of(block)].size} << granule_shift_; }
  [[nodiscard]] bool is_free(BlockId block) const { return is_free_node(nodes_[index_of(block)]); }
  // Whether `block` is allocated now, by the allocation that gave out this id (any id: a stale,
  // foreign or made-up one is false).
  [[nodiscard]] bool holds(BlockId block) const noexcept {
    const Index id = index_of(block);
    return id < node_count_ && nodes_[id].next_free == kAllocated && nodes_[id].prev_free == stamp_of(block);
  }
  // Starts loading node `index` into the cache (any index: out of range does nothing). For a caller
  // that knows which block it will free before it can prove it.
  void prefetch(std::uint32_t index) const noexcept {
    if (index < node_count_) __builtin_prefetch(&nodes_[index]);
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
  [[nodiscard]] std::uint64_t used_bytes() const noexcept { return used_units_ << granule_shift_; }
  [[nodiscard]] std::uint64_t free_bytes() const noexcept { return capacity_ - used_bytes(); }
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
  // "No node" (the end of a list, no physical neighbour) is node 0, the sink, which is never a block,
  // so "update the neighbour if there is one" is a store through the link itself, to the sink when
  // there is none, instead of a branch (those branches mispredicted about 1.5 times per allocate +
  // free when free lists are short) or a select (three instructions per link). Only the sink's
  // prev_free and prev_phys are ever written, as scratch; its next_free stays kSpare, so no id names
  // it (holds() is false), and it is in no list or physical order.
  static constexpr Index kNone = 0;
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
  Index new_node();
  [[gnu::noinline]] Index grow_nodes();
  void release_node(Index id);
  void insert_free(Index id, std::uint32_t size);
  void remove_free(Index id);
  // remove_free() without marking the node allocated, for a caller that overwrites both list links
  // at once (free(): the merged-away node is recycled, the merged one goes back on a list).
  void unlink_free(Index id);
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
  // free()'s error, out of line: a stale, foreign or made-up id.
  [[noreturn, gnu::cold, gnu::noinline]] static void throw_not_allocated(BlockId block);
  // A free block where `units` granules fit at an offset with `alignment` (in granules), scanning
  // every free block from `units`' class up; kNone when there is none. The slow path of
  // over-aligned requests.
  [[nodiscard]] Index find_aligned_fit(std::uint64_t units, std::uint64_t alignment) const;

  std::uint64_t capacity_;
  std::uint64_t granule_;
  unsigned granule_shift_;
  std::uint64_t used_units_ = 0;  // granules: no shift on the hot path
  std::uint32_t live_ = 0;
  Index first_ = kNone;

  std::vector<Node> nodes_;
  Index node_count_ = 0;  // nodes_.size(), kept as an index: the bounds check of holds() without a division
  Index spare_head_ = kNone;  // recycled nodes, linked through prev_free (no vector to grow or check)
  std::uint32_t stamp_ = 0;  // of the last allocation
  std::uint64_t fl_bitmap_ = 0;
  std::array<std::uint32_t, kFlCount> sl_bitmap_{};
  std::array<std::array<Index, kSlCount>, kFlCount> heads_{};
};

// ---- the hot path, inline ----
// allocate_block() and free() and the helpers they use are defined here, in the header, so a caller
// (the manager, a benchmark loop) compiles them into its own code: an out-of-line call saved and
// restored registers that were a fifth of the arena's instructions per allocate + free at 10k blocks.
// The helpers are always inlined: the compiler keeps node fields in registers across them (measured:
// GCC 12 left them as calls, a quarter of the time at 100k blocks). The cold paths (over-aligned
// requests, a nearly full pool, growing the node vector, errors) stay out of line in tlsf_arena.cpp.

// Size class of a size in granule units: sizes below kSlCount map linearly into fl 0; above, fl is
// the power of two and sl the next kSlLog2 bits. Branch-free: with uniform sizes of 1-256 granules an
// eighth fall below 32, and the branch this replaces mispredicted on them three times per allocation.
[[gnu::always_inline]] inline void TlsfArena::mapping(std::uint64_t units, std::size_t& fl, std::size_t& sl) {
  const auto msb = static_cast<std::size_t>(63 - std::countl_zero(units | (kSlCount - 1)));  // >= kSlLog2 - 1
  fl = msb - (kSlLog2 - 1);
  const std::size_t shift = fl - (fl != 0 ? 1 : 0);
  sl = static_cast<std::size_t>(units >> shift) & (kSlCount - 1);
}

[[gnu::always_inline]] inline TlsfArena::Index TlsfArena::new_node() {
  if (spare_head_ != kNone) {
    // Not reset: every caller sets all six fields (split, the constructor via emplace_back).
    const Index id = spare_head_;
    spare_head_ = nodes_[id].prev_free;
    return id;
  }
  return grow_nodes();
}

// A recycled node is marked, so a stale id (a block freed twice, whose node a neighbour absorbed)
// is told apart from a live block; the mark stays until split() reuses the node.
[[gnu::always_inline]] inline void TlsfArena::release_node(Index id) {
  nodes_[id].next_free = kSpare;
  nodes_[id].prev_free = spare_head_;  // the spare list's link (unused while spare)
  spare_head_ = id;
}

// `size` is the node's size, passed by callers that have just computed it: reading it back from the
// node a few stores later waited on store-to-load forwarding (a twentieth of an allocation).
[[gnu::always_inline]] inline void TlsfArena::insert_free(Index id, std::uint32_t size) {
  Node& n = nodes_[id];
  std::size_t fl = 0;
  std::size_t sl = 0;
  mapping(size, fl, sl);
  const Index head = heads_[fl][sl];
  n.prev_free = kNone;
  n.next_free = head;
  nodes_[head].prev_free = id;
  heads_[fl][sl] = id;
  fl_bitmap_ |= 1ULL << fl;
  sl_bitmap_[fl] |= 1U << sl;
}

[[gnu::always_inline]] inline void TlsfArena::unlink_free(Index id) {
  // Whether the block heads its list is a branch here, unlike in the other list updates: the
  // neighbours freed blocks merge with are often cache misses, and a predicted branch lets the work
  // after it start before those loads arrive (made branch-free, this cost a tenth of a pair at 100k
  // log-uniform blocks). The back link of the next block goes through the sink as elsewhere.
  Node& n = nodes_[id];
  nodes_[n.next_free].prev_free = n.prev_free;
  if (n.prev_free != kNone) {
    nodes_[n.prev_free].next_free = n.next_free;
  } else {
    std::size_t fl = 0;
    std::size_t sl = 0;
    mapping(n.size, fl, sl);
    heads_[fl][sl] = n.next_free;
    if (n.next_free == kNone) {
      sl_bitmap_[fl] &= ~(1U << sl);
      if (sl_bitmap_[fl] == 0) fl_bitmap_ &= ~(1ULL << fl);
    }
  }
}

[[gnu::always_inline]] inline void TlsfArena::remove_free(Index id) {
  unlink_free(id);
  nodes_[id].next_free = kAllocated;
  nodes_[id].prev_free = kNone;
}

[[gnu::always_inline]] inline void TlsfArena::split(Index id, std::uint32_t size) {
  const std::uint32_t rest = nodes_[id].size - size;
  if (rest == 0) return;
  const Index tail = new_node();  // may reallocate nodes_: index, don't hold references
  Node& t = nodes_[tail];
  Node& n = nodes_[id];
  // The neighbour in a local: read back from `t` after the stores below (which the compiler must
  // assume may alias it), it waited on store-to-load forwarding from a 16-byte vector store.
  const Index after = n.next_phys;
  t.offset = n.offset + size;
  t.size = rest;
  t.prev_phys = id;
  t.next_phys = after;
  n.next_phys = tail;
  n.size = size;
  // No merge to the right: `id` is (the rest of) a whole free block, and a free block's right
  // neighbour is always allocated (free blocks are coalesced at once).
  nodes_[after].prev_phys = tail;
  insert_free(tail, rest);
}

// The head of the first non-empty list whose every block holds `units` granules (the request rounded
// up to the next class boundary), unlinked; kNone when there is none.
[[gnu::always_inline]] inline TlsfArena::Index TlsfArena::take_fitting_head(std::uint64_t units) {
  // Round up to the next class boundary so any block found fits (branch-free, as mapping(): below
  // kSlCount granules every size is its own class).
  const auto msb = static_cast<std::size_t>(63 - std::countl_zero(units | (kSlCount - 1)));
  const std::size_t class_shift = msb - (kSlLog2 - 1) - (msb >= kSlLog2 ? 1 : 0);
  std::size_t fl = 0;
  std::size_t sl = 0;
  mapping(units + (std::uint64_t{1} << class_shift) - 1, fl, sl);
  // Sizes are below 2^32 granules, so fl + 1 < kFlCount always.
  std::uint32_t sl_map = sl_bitmap_[fl] & (~0U << sl);
  if (sl_map == 0) {
    const std::uint64_t fl_map = fl_bitmap_ & (~0ULL << (fl + 1));
    if (fl_map == 0) [[unlikely]] return kNone;
    fl = static_cast<std::size_t>(std::countr_zero(fl_map));
    sl_map = sl_bitmap_[fl];
  }
  // The head of a list whose class is known: unlinked here without mapping its size again.
  sl = static_cast<std::size_t>(std::countr_zero(sl_map));
  const Index id = heads_[fl][sl];
  Node& n = nodes_[id];
  const Index next = n.next_free;
  heads_[fl][sl] = next;
  nodes_[next].prev_free = kNone;
  sl_bitmap_[fl] &= ~(static_cast<std::uint32_t>(next == kNone) << sl);
  fl_bitmap_ &= ~(std::uint64_t{sl_bitmap_[fl] == 0} << fl);
  n.next_free = kAllocated;
  return id;
}

// Free block `id` (taken off its list) becomes the allocated block of `units` granules at its start.
[[gnu::always_inline]] inline TlsfArena::BlockId TlsfArena::finish_allocation(Index id, std::uint64_t units) {
  split(id, static_cast<std::uint32_t>(units));
  used_units_ += units;  // the block's size now (not read back from the node just written)
  ++live_;
  if (++stamp_ == 0) stamp_ = 1;  // 0 is never a live stamp
  nodes_[id].prev_free = stamp_;
  return (BlockId{stamp_} << 32U) | id;
}

// The common case is all here; over-aligned requests and a pool too full for the rounded-up search
// go to allocate_slow(), out of line, so this path needs fewer registers (and saves fewer).
inline TlsfArena::BlockId TlsfArena::allocate_block(std::uint64_t size, std::uint64_t alignment) {
  if (size == 0 || size > capacity_) [[unlikely]] {
    return kNoBlock;
  }
  const std::uint64_t units_wanted = (size + granule_ - 1) >> granule_shift_;  // <= the capacity in granules
  if (alignment > granule_) [[unlikely]] return allocate_slow(units_wanted, alignment >> granule_shift_);
  const Index id = take_fitting_head(units_wanted);
  if (id == kNone) [[unlikely]] return allocate_slow(units_wanted, 1);
  return finish_allocation(id, units_wanted);
}

inline TlsfArena::BlockId TlsfArena::free(BlockId block) {
  if (!holds(block)) [[unlikely]] throw_not_allocated(block);
  Index id = index_of(block);
  // The merged block's extent is worked out in registers and written once.
  std::uint32_t size = nodes_[id].size;
  used_units_ -= size;
  --live_;
  const Index next = nodes_[id].next_phys;
  const Index prev = nodes_[id].prev_phys;
  Index after = next;  // the block physically after the merged one
  // (The sink is never free, so `next != kNone` is implied by the second test; it stays because it
  // decides the branch before the neighbour's node arrives: without it, 15% slower at 10k log-uniform.)
  if (next != kNone && is_free_node(nodes_[next])) {
    unlink_free(next);  // then recycled: release_node() sets its links
    size += nodes_[next].size;
    after = nodes_[next].next_phys;
    release_node(next);
  }
  if (prev != kNone && is_free_node(nodes_[prev])) {
    unlink_free(prev);  // then back on a list as the merged block: insert_free() sets its links
    size += nodes_[prev].size;
    release_node(id);
    id = prev;
  }
  Node& merged = nodes_[id];
  merged.size = size;
  merged.next_phys = after;
  nodes_[after].prev_phys = id;
  insert_free(id, size);
  return BlockId{id};  // a free block's id is its index
}

}  // namespace apt::vgpu::memory
