// A baseline for the pool benchmarks: our model of the design of sebbbi's
// OffsetAllocator (MIT; github.com/sebbbi/OffsetAllocator), written from its
// published description, not its code. Not that library: a model of its
// design, measured in the same run as TlsfArena (docs/benchmarks.md).
//
// The design: sizes map to 256 bins by a small float (5-bit exponent, 3-bit
// mantissa), so each power of two has 8 bins; a 32-bit top bitmap over 32
// groups of 8 leaf bins finds the first non-empty bin at least as large as the
// request (rounded up to a bin boundary, so any block in it fits); blocks are
// nodes in a fixed array with a stack of unused node indices, linked to their
// physical neighbours for coalescing on free. Offsets and sizes are 32-bit
// counts of granules. Allocation fails when the rounded-up bin search finds
// nothing (no scan of the request's own bin), and when the node array is full.
#pragma once

#include <bit>
#include <cstdint>
#include <optional>
#include <vector>

namespace apt::vgpu::bench {

class BinnedOffsetAllocator {
 public:
  using Block = std::uint32_t;  // a node index

  BinnedOffsetAllocator(std::uint64_t capacity, std::uint32_t max_blocks, std::uint64_t granule = 256)
      : granule_shift_(static_cast<std::uint32_t>(std::countr_zero(granule))), nodes_(max_blocks), unused_(max_blocks) {
    for (std::uint32_t i = 0; i < max_blocks; ++i) unused_[i] = max_blocks - 1 - i;
    for (auto& head : bin_heads_) head = kNone;
    insert(0, static_cast<std::uint32_t>(capacity >> granule_shift_));
  }

  std::optional<Block> allocate(std::uint64_t bytes) {
    const auto size = static_cast<std::uint32_t>((bytes + (1ULL << granule_shift_) - 1) >> granule_shift_);
    if (unused_.size() < 2) return std::nullopt;
    const std::uint32_t min_bin = bin_round_up(size);
    std::uint32_t top = min_bin >> 3;
    std::uint32_t leaf = kNone;
    if ((top_bitmap_ >> top) & 1U) leaf = lowest_at_or_after(leaf_bitmaps_[top], min_bin & 7U);
    if (leaf == kNone) {
      top = lowest_at_or_after(top_bitmap_, top + 1);
      if (top == kNone) return std::nullopt;
      leaf = static_cast<std::uint32_t>(std::countr_zero(leaf_bitmaps_[top]));
    }
    const std::uint32_t bin = (top << 3) | leaf;
    const std::uint32_t id = bin_heads_[bin];
    Node& n = nodes_[id];
    unlink_head(bin, n);
    const std::uint32_t total = n.size;
    n.size = size;
    n.used = true;
    if (total > size) {
      const std::uint32_t rest = insert(n.offset + size, total - size);
      Node& m = nodes_[rest];
      m.prev_phys = id;
      m.next_phys = nodes_[id].next_phys;
      if (m.next_phys != kNone) nodes_[m.next_phys].prev_phys = rest;
      nodes_[id].next_phys = rest;
    }
    return id;
  }

  void free(Block id) {
    std::uint32_t offset = nodes_[id].offset;
    std::uint32_t size = nodes_[id].size;
    std::uint32_t prev = nodes_[id].prev_phys;
    std::uint32_t next = nodes_[id].next_phys;
    if (prev != kNone && !nodes_[prev].used) {
      offset = nodes_[prev].offset;
      size += nodes_[prev].size;
      remove(prev);
      const std::uint32_t before = nodes_[prev].prev_phys;
      unused_.push_back(prev);
      prev = before;
    }
    if (next != kNone && !nodes_[next].used) {
      size += nodes_[next].size;
      remove(next);
      const std::uint32_t after = nodes_[next].next_phys;
      unused_.push_back(next);
      next = after;
    }
    unused_.push_back(id);
    const std::uint32_t merged = insert(offset, size);
    nodes_[merged].prev_phys = prev;
    nodes_[merged].next_phys = next;
    if (prev != kNone) nodes_[prev].next_phys = merged;
    if (next != kNone) nodes_[next].prev_phys = merged;
  }

  [[nodiscard]] std::uint64_t offset(Block id) const { return std::uint64_t{nodes_[id].offset} << granule_shift_; }
  [[nodiscard]] std::uint64_t size(Block id) const { return std::uint64_t{nodes_[id].size} << granule_shift_; }

 private:
  static constexpr std::uint32_t kNone = UINT32_MAX;
  struct Node {
    std::uint32_t offset = 0;
    std::uint32_t size = 0;
    std::uint32_t prev_bin = kNone;
    std::uint32_t next_bin = kNone;
    std::uint32_t prev_phys = kNone;
    std::uint32_t next_phys = kNone;
    bool used = false;
  };

  // 5.3 small float of a size: exact below 8, else exponent and the 3 bits below the top one.
  static std::uint32_t bin_round_down(std::uint32_t size) {
    if (size < 8) return size;
    const auto top = static_cast<std::uint32_t>(31 - std::countl_zero(size));
    const std::uint32_t shift = top - 3;
    return ((shift + 1) << 3) + ((size >> shift) & 7U);
  }
  static std::uint32_t bin_round_up(std::uint32_t size) {
    if (size < 8) return size;
    const auto top = static_cast<std::uint32_t>(31 - std::countl_zero(size));
    const std::uint32_t shift = top - 3;
    std::uint32_t bin = ((shift + 1) << 3) + ((size >> shift) & 7U);
    if ((size & ((1U << shift) - 1)) != 0) ++bin;  // a carry into the exponent is the next bin, too
    return bin;
  }
  static std::uint32_t lowest_at_or_after(std::uint32_t bits, std::uint32_t from) {
    if (from >= 32) return kNone;
    const std::uint32_t masked = bits & (~0U << from);
    return masked == 0 ? kNone : static_cast<std::uint32_t>(std::countr_zero(masked));
  }

  std::uint32_t insert(std::uint32_t offset, std::uint32_t size) {
    const std::uint32_t bin = bin_round_down(size);
    const std::uint32_t id = unused_.back();
    unused_.pop_back();
    const std::uint32_t head = bin_heads_[bin];
    nodes_[id] = Node{offset, size, kNone, head, kNone, kNone, false};
    if (head != kNone) nodes_[head].prev_bin = id;
    bin_heads_[bin] = id;
    leaf_bitmaps_[bin >> 3] |= 1U << (bin & 7U);
    top_bitmap_ |= 1U << (bin >> 3);
    return id;
  }

  void unlink_head(std::uint32_t bin, const Node& n) {
    bin_heads_[bin] = n.next_bin;
    if (n.next_bin != kNone) {
      nodes_[n.next_bin].prev_bin = kNone;
    } else {
      clear_bit(bin);
    }
  }

  void remove(std::uint32_t id) {
    const Node& n = nodes_[id];
    if (n.prev_bin != kNone) {
      nodes_[n.prev_bin].next_bin = n.next_bin;
      if (n.next_bin != kNone) nodes_[n.next_bin].prev_bin = n.prev_bin;
      return;
    }
    unlink_head(bin_round_down(n.size), n);
  }

  void clear_bit(std::uint32_t bin) {
    leaf_bitmaps_[bin >> 3] &= ~(1U << (bin & 7U));
    if (leaf_bitmaps_[bin >> 3] == 0) top_bitmap_ &= ~(1U << (bin >> 3));
  }

  std::uint32_t granule_shift_;
  std::vector<Node> nodes_;
  std::vector<std::uint32_t> unused_;
  std::uint32_t top_bitmap_ = 0;
  std::uint32_t leaf_bitmaps_[32] = {};
  std::uint32_t bin_heads_[256] = {};
};

}  // namespace apt::vgpu::bench
