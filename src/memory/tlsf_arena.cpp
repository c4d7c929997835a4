#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/memory/tlsf_arena.hpp>

#include <bit>
#include <fmt/format.h>
#include <stdexcept>

namespace apt::vgpu::memory {

TlsfArena::TlsfArena(std::uint64_t capacity, std::uint64_t granule)
    : capacity_(0), granule_(granule), granule_shift_(0) {
  if (granule == 0 || !std::has_single_bit(granule)) {
    throw InvalidArgument(fmt::format("alignment: {} is not a power of two; use e.g. 256", granule));
  }
  granule_shift_ = static_cast<unsigned>(std::countr_zero(granule));
  capacity_ = capacity / granule * granule;
  if (capacity_ == 0) {
    throw InvalidArgument(fmt::format("pool_size: {} bytes is smaller than one {}-byte granule", capacity, granule));
  }
  if ((capacity_ >> granule_shift_) > UINT32_MAX) {
    throw InvalidArgument(fmt::format("pool_size: {} bytes is {} granules of {} B; at most 2^32 - 1 are addressable: "
                                      "use a larger alignment (granule) or a smaller pool",
                                      capacity, capacity_ >> granule_shift_, granule));
  }
  for (auto& row : heads_) row.fill(kNone);
  nodes_.reserve(1024);
  nodes_.emplace_back();  // the sink (kSink): never a block
  nodes_[kSink].next_free = kSpare;
  const Index whole = new_node();
  nodes_[whole].offset = 0;
  nodes_[whole].size = static_cast<std::uint32_t>(capacity_ >> granule_shift_);
  first_ = whole;
  insert_free(whole, nodes_[whole].size);
}

// The helpers below are on every allocate/free path; inlined, the compiler keeps node fields in
// registers across them (measured: GCC 12 left them as calls, a quarter of the time at 100k blocks).
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

// Out of line: the vector's growth (and its exceptions) kept off the allocation path.
TlsfArena::Index TlsfArena::grow_nodes() {
  if (nodes_.size() >= kSpare) throw std::length_error("TlsfArena: 2^32 - 3 blocks");
  nodes_.emplace_back();
  return static_cast<Index>(nodes_.size() - 1);
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
  nodes_[or_sink(head)].prev_free = id;
  heads_[fl][sl] = id;
  fl_bitmap_ |= 1ULL << fl;
  sl_bitmap_[fl] |= 1U << sl;
}

[[gnu::always_inline]] inline void TlsfArena::remove_free(Index id) {
  // Whether the block heads its list is a branch here, unlike in the other list updates: the
  // neighbours freed blocks merge with are often cache misses, and a predicted branch lets the work
  // after it start before those loads arrive (made branch-free, this cost a tenth of a pair at 100k
  // log-uniform blocks). The back link of the next block goes through the sink as elsewhere.
  Node& n = nodes_[id];
  nodes_[or_sink(n.next_free)].prev_free = n.prev_free;
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
  n.next_free = kAllocated;
  n.prev_free = kNone;
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
  nodes_[or_sink(after)].prev_phys = tail;
  insert_free(tail, rest);
}

[[gnu::always_inline]] inline void TlsfArena::absorb_next(Index left) {
  const Index right = nodes_[left].next_phys;
  nodes_[left].size += nodes_[right].size;
  nodes_[left].next_phys = nodes_[right].next_phys;
  if (nodes_[left].next_phys != kNone) nodes_[nodes_[left].next_phys].prev_phys = left;
  release_node(right);
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
  nodes_[or_sink(next)].prev_free = kNone;
  sl_bitmap_[fl] &= ~(static_cast<std::uint32_t>(next == kNone) << sl);
  fl_bitmap_ &= ~(std::uint64_t{sl_bitmap_[fl] == 0} << fl);
  n.next_free = kAllocated;
  return id;
}

// Free block `id` (taken off its list) becomes the allocated block of `units` granules at its start.
[[gnu::always_inline]] inline TlsfArena::BlockId TlsfArena::finish_allocation(Index id, std::uint64_t units) {
  split(id, static_cast<std::uint32_t>(units));
  used_ += units << granule_shift_;  // the block's size now (not read back from the node just written)
  ++live_;
  if (++stamp_ == 0) stamp_ = 1;  // 0 is never a live stamp
  nodes_[id].prev_free = stamp_;
  return (BlockId{stamp_} << 32U) | id;
}

// The common case is all here; over-aligned requests and a pool too full for the rounded-up search
// go to allocate_slow(), out of line, so this path needs fewer registers (and saves fewer).
TlsfArena::BlockId TlsfArena::allocate_block(std::uint64_t size, std::uint64_t alignment) {
  if (size == 0 || size > capacity_) [[unlikely]] {
    return kNoBlock;
  }
  const std::uint64_t units_wanted = (size + granule_ - 1) >> granule_shift_;  // <= the capacity in granules
  if (alignment > granule_) [[unlikely]] return allocate_slow(units_wanted, alignment >> granule_shift_);
  const Index id = take_fitting_head(units_wanted);
  if (id == kNone) [[unlikely]] return allocate_slow(units_wanted, 1);
  return finish_allocation(id, units_wanted);
}

TlsfArena::BlockId TlsfArena::allocate_slow(std::uint64_t units_wanted, std::uint64_t align_units) {
  // Room for the worst padding an alignment may need.
  const std::uint64_t search = units_wanted + align_units - 1;
  if (search > (capacity_ >> granule_shift_)) return kNoBlock;
  Index id = take_fitting_head(search);
  if (id == kNone) {
    // Near exhaustion: a block in the request's own class may still be large
    // enough although the class as a whole is not guaranteed to be. Scan it, so
    // allocation fails only when no free block fits.
    std::size_t own_fl = 0;
    std::size_t own_sl = 0;
    mapping(search, own_fl, own_sl);
    for (Index c = heads_[own_fl][own_sl]; c != kNone; c = nodes_[c].next_free) {
      if (nodes_[c].size >= search) {
        id = c;
        break;
      }
    }
    // An over-aligned request searched for size + alignment - granule, room for the worst
    // padding; a block whose own offset needs less padding may still fit it exactly.
    if (id == kNone && align_units > 1) id = find_aligned_fit(units_wanted, align_units);
    if (id == kNone) return kNoBlock;
    remove_free(id);
  }
  if (align_units > 1) {
    const std::uint64_t offset = nodes_[id].offset;
    const auto padding = static_cast<std::uint32_t>((align_units - offset % align_units) % align_units);
    if (padding > 0) {
      // Keep the front padding as a free block and allocate from what follows it.
      split(id, padding);
      const Index padded = nodes_[id].next_phys;
      remove_free(padded);
      insert_free(id, padding);
      id = padded;
    }
  }
  return finish_allocation(id, units_wanted);
}

TlsfArena::Index TlsfArena::find_aligned_fit(std::uint64_t units, std::uint64_t alignment) const {
  std::size_t fl = 0;
  std::size_t sl = 0;
  mapping(units, fl, sl);
  for (std::size_t f = fl; f < kFlCount; ++f) {
    if (((fl_bitmap_ >> f) & 1U) == 0) continue;
    std::uint32_t map = sl_bitmap_[f];
    if (f == fl) map &= ~0U << sl;
    while (map != 0) {
      const auto s = static_cast<std::size_t>(std::countr_zero(map));
      map &= map - 1;
      for (Index c = heads_[f][s]; c != kNone; c = nodes_[c].next_free) {
        const std::uint64_t padding = (alignment - nodes_[c].offset % alignment) % alignment;
        if (nodes_[c].size >= padding && nodes_[c].size - padding >= units) return c;
      }
    }
  }
  return kNone;
}

void TlsfArena::free(BlockId block) {
  Index id = index_of(block);
  if (!holds(block)) [[unlikely]] {
    throw std::logic_error(fmt::format("TlsfArena::free: block {} (node {}) is not allocated (freed twice, or never "
                                       "allocated)", block, id));
  }
  // The merged block's extent is worked out in registers and written once.
  std::uint32_t size = nodes_[id].size;
  used_ -= std::uint64_t{size} << granule_shift_;
  --live_;
  const Index next = nodes_[id].next_phys;
  const Index prev = nodes_[id].prev_phys;
  Index after = next;  // the block physically after the merged one
  if (next != kNone && is_free_node(nodes_[next])) {
    remove_free(next);
    size += nodes_[next].size;
    after = nodes_[next].next_phys;
    release_node(next);
  }
  if (prev != kNone && is_free_node(nodes_[prev])) {
    remove_free(prev);
    size += nodes_[prev].size;
    release_node(id);
    id = prev;
  }
  Node& merged = nodes_[id];
  merged.size = size;
  merged.next_phys = after;
  nodes_[or_sink(after)].prev_phys = id;
  insert_free(id, size);
}

std::uint64_t TlsfArena::largest_free() const {
  if (fl_bitmap_ == 0) return 0;
  const auto fl = static_cast<std::size_t>(63 - std::countl_zero(fl_bitmap_));
  const auto sl = static_cast<std::size_t>(31 - std::countl_zero(sl_bitmap_[fl]));
  std::uint64_t best = 0;
  for (Index id = heads_[fl][sl]; id != kNone; id = nodes_[id].next_free) {
    if (nodes_[id].size > best) best = nodes_[id].size;
  }
  return best << granule_shift_;
}

double TlsfArena::fragmentation() const {
  const std::uint64_t free_total = free_bytes();
  if (free_total == 0) return 0.0;
  return 1.0 - static_cast<double>(largest_free()) / static_cast<double>(free_total);
}

bool TlsfArena::can_slide_down(BlockId block) const {
  const Index id = index_of(block);
  if (id >= nodes_.size() || nodes_[id].next_free != kAllocated) return false;
  const Index prev = nodes_[id].prev_phys;
  return prev != kNone && is_free_node(nodes_[prev]);
}

void TlsfArena::slide_down(BlockId block) {
  const Index id = index_of(block);
  if (!can_slide_down(block)) throw std::logic_error("TlsfArena::slide_down: no free block below");
  const Index gap = nodes_[id].prev_phys;
  remove_free(gap);
  const Index before = nodes_[gap].prev_phys;  // allocated (free blocks never touch) or none
  const Index after = nodes_[id].next_phys;
  // Physical order before ... gap, id, after ...  becomes  ... id, gap, after ...
  nodes_[id].offset = nodes_[gap].offset;
  nodes_[gap].offset = nodes_[id].offset + nodes_[id].size;
  nodes_[id].prev_phys = before;
  nodes_[id].next_phys = gap;
  nodes_[gap].prev_phys = id;
  nodes_[gap].next_phys = after;
  if (before != kNone) nodes_[before].next_phys = id; else first_ = id;
  if (after != kNone) nodes_[after].prev_phys = gap;
  if (after != kNone && is_free_node(nodes_[after])) {
    remove_free(after);
    absorb_next(gap);
  }
  insert_free(gap, nodes_[gap].size);
}

void TlsfArena::check_invariants() const {
  std::uint64_t expected_offset = 0;
  std::uint64_t used = 0;
  std::uint32_t live = 0;
  std::uint64_t free_in_lists = 0;
  Index prev = kNone;
  bool prev_free = false;
  for (Index id = first_; id != kNone; id = nodes_[id].next_phys) {
    const Node& n = nodes_[id];
    if (n.prev_phys != prev) throw std::logic_error(fmt::format("block {}: prev_phys is {}, expected {}", id, n.prev_phys, prev));
    const std::uint64_t offset = std::uint64_t{n.offset} << granule_shift_;
    const std::uint64_t size = std::uint64_t{n.size} << granule_shift_;
    const bool free = is_free_node(n);
    if (n.next_free == kSpare) throw std::logic_error(fmt::format("block {}: a recycled node is linked in", id));
    if (offset != expected_offset) {
      throw std::logic_error(fmt::format("block {}: offset {} but the previous block ends at {}", id, offset, expected_offset));
    }
    if (n.size == 0) throw std::logic_error(fmt::format("block {}: size 0", id));
    if (free && prev_free) throw std::logic_error(fmt::format("blocks {} and {}: adjacent free blocks not coalesced", prev, id));
    if (free) {
      free_in_lists += size;
    } else {
      used += size;
      ++live;
    }
    expected_offset += size;
    prev = id;
    prev_free = free;
  }
  if (expected_offset != capacity_) {
    throw std::logic_error(fmt::format("blocks cover {} bytes of {}", expected_offset, capacity_));
  }
  if (used != used_ || live != live_) throw std::logic_error("used/live counters disagree with the blocks");
  std::uint64_t listed = 0;
  for (std::size_t fl = 0; fl < kFlCount; ++fl) {
    for (std::size_t sl = 0; sl < kSlCount; ++sl) {
      const bool bit = (sl_bitmap_[fl] >> sl & 1U) != 0;
      if (bit != (heads_[fl][sl] != kNone)) throw std::logic_error("second-level bitmap disagrees with a list");
      for (Index id = heads_[fl][sl]; id != kNone; id = nodes_[id].next_free) {
        std::size_t f = 0;
        std::size_t s = 0;
        mapping(nodes_[id].size, f, s);
        if (f != fl || s != sl || !is_free_node(nodes_[id])) throw std::logic_error("a free block is in the wrong list");
        listed += std::uint64_t{nodes_[id].size} << granule_shift_;
      }
    }
    if (((fl_bitmap_ >> fl & 1ULL) != 0) != (sl_bitmap_[fl] != 0)) throw std::logic_error("first-level bitmap is wrong");
  }
  if (listed != free_in_lists) throw std::logic_error("free lists do not hold exactly the free blocks");
}

}  // namespace apt::vgpu::memory
