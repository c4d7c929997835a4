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
  nodes_.emplace_back();  // node 0 (kNone), the sink: never a block
  node_count_ = 1;
  nodes_[kNone].next_free = kSpare;
  const Index whole = new_node();
  nodes_[whole].offset = 0;
  nodes_[whole].size = static_cast<std::uint32_t>(capacity_ >> granule_shift_);
  first_ = whole;
  insert_free(whole, nodes_[whole].size);
}

// Out of line: the vector's growth (and its exceptions) kept off the allocation path.
TlsfArena::Index TlsfArena::grow_nodes() {
  if (nodes_.size() >= kSpare) throw std::length_error("TlsfArena: 2^32 - 3 blocks");
  nodes_.emplace_back();
  return node_count_++;
}


[[gnu::always_inline]] inline void TlsfArena::absorb_next(Index left) {
  const Index right = nodes_[left].next_phys;
  nodes_[left].size += nodes_[right].size;
  nodes_[left].next_phys = nodes_[right].next_phys;
  if (nodes_[left].next_phys != kNone) nodes_[nodes_[left].next_phys].prev_phys = left;
  release_node(right);
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

void TlsfArena::throw_not_allocated(BlockId block) {
  throw std::logic_error(fmt::format("TlsfArena::free: block {} (node {}) is not allocated (freed twice, or never "
                                     "allocated)", block, index_of(block)));
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
  if (id >= node_count_ || nodes_[id].next_free != kAllocated) return false;
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
  if (used != used_bytes() || live != live_) throw std::logic_error("used/live counters disagree with the blocks");
  std::uint64_t listed = 0;
  for (std::size_t fl = 0; fl < kFlCount; ++fl) {
    for (std::size_t sl = 0; sl < kSlCount; ++sl) {
      const bool bit = (sl_bitmap_[fl] >> sl & 1U) != 0;
      if (bit != (heads_[fl][sl] != kNone)) throw std::logic_error("second-level bitmap disagrees with a list");
      for (Index id = heads_[fl][sl], before = kNone; id != kNone; before = id, id = nodes_[id].next_free) {
        std::size_t f = 0;
        std::size_t s = 0;
        mapping(nodes_[id].size, f, s);
        if (f != fl || s != sl || !is_free_node(nodes_[id])) throw std::logic_error("a free block is in the wrong list");
        if (nodes_[id].prev_free != before) {
          throw std::logic_error(fmt::format("free block {}: its list back link is {}, expected {}", id,
                                             nodes_[id].prev_free, before));
        }
        listed += std::uint64_t{nodes_[id].size} << granule_shift_;
      }
    }
    if (((fl_bitmap_ >> fl & 1ULL) != 0) != (sl_bitmap_[fl] != 0)) throw std::logic_error("first-level bitmap is wrong");
  }
  if (listed != free_in_lists) throw std::logic_error("free lists do not hold exactly the free blocks");
}

}  // namespace apt::vgpu::memory
