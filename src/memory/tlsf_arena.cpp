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
  granule_shift_ = std::countr_zero(granule);
  capacity_ = capacity / granule * granule;
  if (capacity_ == 0) {
    throw InvalidArgument(fmt::format("pool_size: {} bytes is smaller than one {}-byte granule", capacity, granule));
  }
  for (auto& row : heads_) row.fill(kNoBlock);
  nodes_.reserve(1024);
  const BlockId whole = new_node();
  nodes_[whole].offset = 0;
  nodes_[whole].size = capacity_;
  first_ = whole;
  insert_free(whole);
}

std::uint64_t TlsfArena::round_up(std::uint64_t bytes) const {
  return (bytes + granule_ - 1) & ~(granule_ - 1);
}

// Size class of a size in granule units: sizes below kSlCount map linearly into
// fl 0; above, fl is the power of two and sl the next kSlLog2 bits.
void TlsfArena::mapping(std::uint64_t units, std::size_t& fl, std::size_t& sl) {
  if (units < kSlCount) {
    fl = 0;
    sl = static_cast<std::size_t>(units);
    return;
  }
  const auto msb = static_cast<std::size_t>(63 - std::countl_zero(units));  // >= kSlLog2 here
  fl = msb - kSlLog2 + 1;
  sl = static_cast<std::size_t>((units >> (msb - kSlLog2)) ^ (1ULL << kSlLog2));
}

TlsfArena::BlockId TlsfArena::new_node() {
  if (!spare_nodes_.empty()) {
    const BlockId id = spare_nodes_.back();
    spare_nodes_.pop_back();
    nodes_[id] = Node{};
    return id;
  }
  nodes_.emplace_back();
  return static_cast<BlockId>(nodes_.size() - 1);
}

// A recycled node is marked, so a stale id (a block freed twice, whose node a neighbour absorbed)
// is told apart from a live block; nodes_[id] = Node{} in new_node() clears the mark.
void TlsfArena::release_node(BlockId id) {
  nodes_[id].spare = true;
  nodes_[id].free = false;
  spare_nodes_.push_back(id);
}

void TlsfArena::insert_free(BlockId id) {
  Node& n = nodes_[id];
  std::size_t fl = 0;
  std::size_t sl = 0;
  mapping(n.size >> granule_shift_, fl, sl);
  n.free = true;
  n.prev_free = kNoBlock;
  n.next_free = heads_[fl][sl];
  if (n.next_free != kNoBlock) nodes_[n.next_free].prev_free = id;
  heads_[fl][sl] = id;
  fl_bitmap_ |= 1ULL << fl;
  sl_bitmap_[fl] |= 1U << sl;
}

void TlsfArena::remove_free(BlockId id) {
  Node& n = nodes_[id];
  std::size_t fl = 0;
  std::size_t sl = 0;
  mapping(n.size >> granule_shift_, fl, sl);
  if (n.prev_free != kNoBlock) nodes_[n.prev_free].next_free = n.next_free;
  if (n.next_free != kNoBlock) nodes_[n.next_free].prev_free = n.prev_free;
  if (heads_[fl][sl] == id) {
    heads_[fl][sl] = n.next_free;
    if (n.next_free == kNoBlock) {
      sl_bitmap_[fl] &= ~(1U << sl);
      if (sl_bitmap_[fl] == 0) fl_bitmap_ &= ~(1ULL << fl);
    }
  }
  n.free = false;
  n.prev_free = n.next_free = kNoBlock;
}

void TlsfArena::split(BlockId id, std::uint64_t size) {
  const std::uint64_t rest = nodes_[id].size - size;
  if (rest == 0) return;
  const BlockId tail = new_node();  // may reallocate nodes_: index, don't hold references
  nodes_[tail].offset = nodes_[id].offset + size;
  nodes_[tail].size = rest;
  nodes_[tail].prev_phys = id;
  nodes_[tail].next_phys = nodes_[id].next_phys;
  if (nodes_[tail].next_phys != kNoBlock) nodes_[nodes_[tail].next_phys].prev_phys = tail;
  nodes_[id].next_phys = tail;
  nodes_[id].size = size;
  // The tail's right neighbour may be free (when `id` was taken from the middle).
  const BlockId after = nodes_[tail].next_phys;
  if (after != kNoBlock && nodes_[after].free) {
    remove_free(after);
    nodes_[tail].size += nodes_[after].size;
    nodes_[tail].next_phys = nodes_[after].next_phys;
    if (nodes_[tail].next_phys != kNoBlock) nodes_[nodes_[tail].next_phys].prev_phys = tail;
    release_node(after);
  }
  insert_free(tail);
}

void TlsfArena::absorb_next(BlockId left) {
  const BlockId right = nodes_[left].next_phys;
  nodes_[left].size += nodes_[right].size;
  nodes_[left].next_phys = nodes_[right].next_phys;
  if (nodes_[left].next_phys != kNoBlock) nodes_[nodes_[left].next_phys].prev_phys = left;
  release_node(right);
}

std::optional<TlsfArena::BlockId> TlsfArena::allocate(std::uint64_t size, std::uint64_t alignment) {
  if (size == 0 || size > capacity_) return std::nullopt;
  const std::uint64_t rounded = round_up(size);
  const bool over_aligned = alignment > granule_;
  const std::uint64_t search = over_aligned ? rounded + alignment - granule_ : rounded;
  if (search > capacity_ || search < rounded) return std::nullopt;

  // Round the search size up to the next class boundary so any block found fits.
  std::uint64_t units = search >> granule_shift_;
  if (units >= kSlCount) {
    const auto msb = static_cast<std::size_t>(63 - std::countl_zero(units));
    units += (1ULL << (msb - kSlLog2)) - 1;
  }
  std::size_t fl = 0;
  std::size_t sl = 0;
  mapping(units, fl, sl);
  BlockId id = kNoBlock;
  std::uint32_t sl_map = fl < kFlCount ? sl_bitmap_[fl] & (~0U << sl) : 0;
  if (sl_map == 0) {
    const std::uint64_t fl_map = fl + 1 < kFlCount ? fl_bitmap_ & (~0ULL << (fl + 1)) : 0;
    if (fl_map != 0) {
      fl = static_cast<std::size_t>(std::countr_zero(fl_map));
      sl_map = sl_bitmap_[fl];
    }
  }
  if (sl_map != 0) {
    id = heads_[fl][static_cast<std::size_t>(std::countr_zero(sl_map))];
  } else {
    // Near exhaustion: a block in the request's own class may still be large
    // enough although the class as a whole is not guaranteed to be. Scan it, so
    // allocation fails only when no free block fits.
    std::size_t own_fl = 0;
    std::size_t own_sl = 0;
    mapping(search >> granule_shift_, own_fl, own_sl);
    for (BlockId c = heads_[own_fl][own_sl]; c != kNoBlock; c = nodes_[c].next_free) {
      if (nodes_[c].size >= search) {
        id = c;
        break;
      }
    }
    // An over-aligned request searched for size + alignment - granule, room for the worst
    // padding; a block whose own offset needs less padding may still fit it exactly.
    if (id == kNoBlock && over_aligned) id = find_aligned_fit(rounded, alignment);
    if (id == kNoBlock) return std::nullopt;
  }
  remove_free(id);

  if (over_aligned) {
    const std::uint64_t offset = nodes_[id].offset;
    const std::uint64_t padding = (alignment - offset % alignment) % alignment;
    if (padding > 0) {
      // Keep the front padding as a free block and allocate from what follows it.
      split(id, padding);
      const BlockId padded = nodes_[id].next_phys;
      remove_free(padded);
      insert_free(id);
      id = padded;
    }
  }
  split(id, rounded);
  used_ += nodes_[id].size;
  ++live_;
  return id;
}

TlsfArena::BlockId TlsfArena::find_aligned_fit(std::uint64_t rounded, std::uint64_t alignment) const {
  std::size_t fl = 0;
  std::size_t sl = 0;
  mapping(rounded >> granule_shift_, fl, sl);
  for (std::size_t f = fl; f < kFlCount; ++f) {
    if (((fl_bitmap_ >> f) & 1U) == 0) continue;
    std::uint32_t map = sl_bitmap_[f];
    if (f == fl) map &= ~0U << sl;
    while (map != 0) {
      const auto s = static_cast<std::size_t>(std::countr_zero(map));
      map &= map - 1;
      for (BlockId c = heads_[f][s]; c != kNoBlock; c = nodes_[c].next_free) {
        const std::uint64_t padding = (alignment - nodes_[c].offset % alignment) % alignment;
        if (nodes_[c].size >= padding && nodes_[c].size - padding >= rounded) return c;
      }
    }
  }
  return kNoBlock;
}

void TlsfArena::free(BlockId id) {
  if (id >= nodes_.size() || nodes_[id].free || nodes_[id].spare) {
    throw std::logic_error(fmt::format("TlsfArena::free: block {} is not allocated (freed twice, or never allocated)", id));
  }
  used_ -= nodes_[id].size;
  --live_;
  const BlockId next = nodes_[id].next_phys;
  if (next != kNoBlock && nodes_[next].free) {
    remove_free(next);
    absorb_next(id);
  }
  const BlockId prev = nodes_[id].prev_phys;
  if (prev != kNoBlock && nodes_[prev].free) {
    remove_free(prev);
    absorb_next(prev);
    id = prev;
  }
  insert_free(id);
}

std::uint64_t TlsfArena::largest_free() const {
  if (fl_bitmap_ == 0) return 0;
  const auto fl = static_cast<std::size_t>(63 - std::countl_zero(fl_bitmap_));
  const auto sl = static_cast<std::size_t>(31 - std::countl_zero(sl_bitmap_[fl]));
  std::uint64_t best = 0;
  for (BlockId id = heads_[fl][sl]; id != kNoBlock; id = nodes_[id].next_free) {
    if (nodes_[id].size > best) best = nodes_[id].size;
  }
  return best;
}

double TlsfArena::fragmentation() const {
  const std::uint64_t free_total = free_bytes();
  if (free_total == 0) return 0.0;
  return 1.0 - static_cast<double>(largest_free()) / static_cast<double>(free_total);
}

bool TlsfArena::can_slide_down(BlockId id) const {
  if (id >= nodes_.size() || nodes_[id].free) return false;
  const BlockId prev = nodes_[id].prev_phys;
  return prev != kNoBlock && nodes_[prev].free;
}

void TlsfArena::slide_down(BlockId id) {
  if (!can_slide_down(id)) throw std::logic_error("TlsfArena::slide_down: no free block below");
  const BlockId gap = nodes_[id].prev_phys;
  remove_free(gap);
  const BlockId before = nodes_[gap].prev_phys;  // allocated (free blocks never touch) or none
  const BlockId after = nodes_[id].next_phys;
  // Physical order before ... gap, id, after ...  becomes  ... id, gap, after ...
  nodes_[id].offset = nodes_[gap].offset;
  nodes_[gap].offset = nodes_[id].offset + nodes_[id].size;
  nodes_[id].prev_phys = before;
  nodes_[id].next_phys = gap;
  nodes_[gap].prev_phys = id;
  nodes_[gap].next_phys = after;
  if (before != kNoBlock) nodes_[before].next_phys = id; else first_ = id;
  if (after != kNoBlock) nodes_[after].prev_phys = gap;
  if (after != kNoBlock && nodes_[after].free) {
    remove_free(after);
    absorb_next(gap);
  }
  insert_free(gap);
}

void TlsfArena::check_invariants() const {
  std::uint64_t expected_offset = 0;
  std::uint64_t used = 0;
  std::uint32_t live = 0;
  std::uint64_t free_in_lists = 0;
  BlockId prev = kNoBlock;
  bool prev_free = false;
  for (BlockId id = first_; id != kNoBlock; id = nodes_[id].next_phys) {
    const Node& n = nodes_[id];
    if (n.prev_phys != prev) throw std::logic_error(fmt::format("block {}: prev_phys is {}, expected {}", id, n.prev_phys, prev));
    if (n.offset != expected_offset) {
      throw std::logic_error(fmt::format("block {}: offset {} but the previous block ends at {}", id, n.offset, expected_offset));
    }
    if (n.size == 0 || n.size % granule_ != 0) throw std::logic_error(fmt::format("block {}: bad size {}", id, n.size));
    if (n.free && prev_free) throw std::logic_error(fmt::format("blocks {} and {}: adjacent free blocks not coalesced", prev, id));
    if (n.free) {
      free_in_lists += n.size;
    } else {
      used += n.size;
      ++live;
    }
    expected_offset += n.size;
    prev = id;
    prev_free = n.free;
  }
  if (expected_offset != capacity_) {
    throw std::logic_error(fmt::format("blocks cover {} bytes of {}", expected_offset, capacity_));
  }
  if (used != used_ || live != live_) throw std::logic_error("used/live counters disagree with the blocks");
  std::uint64_t listed = 0;
  for (std::size_t fl = 0; fl < kFlCount; ++fl) {
    for (std::size_t sl = 0; sl < kSlCount; ++sl) {
      const bool bit = (sl_bitmap_[fl] >> sl & 1U) != 0;
      if (bit != (heads_[fl][sl] != kNoBlock)) throw std::logic_error("second-level bitmap disagrees with a list");
      for (BlockId id = heads_[fl][sl]; id != kNoBlock; id = nodes_[id].next_free) {
        std::size_t f = 0;
        std::size_t s = 0;
        mapping(nodes_[id].size >> granule_shift_, f, s);
        if (f != fl || s != sl || !nodes_[id].free) throw std::logic_error("a free block is in the wrong list");
        listed += nodes_[id].size;
      }
    }
    if (((fl_bitmap_ >> fl & 1ULL) != 0) != (sl_bitmap_[fl] != 0)) throw std::logic_error("first-level bitmap is wrong");
  }
  if (listed != free_in_lists) throw std::logic_error("free lists do not hold exactly the free blocks");
}

}  // namespace apt::vgpu::memory
