// ChunkMap: what a GPUMemoryManager's lazy backing knows about each chunk of its pool, kept as bitmaps
// and runs so that a block over many chunks costs word operations, not a visit to each chunk.
//
// Per chunk:
//   committed    bit: backed by memory now.
//   used         bit: some block lies on it, wholly or in part.
//   queued       bit: in the manager's queue of emptied chunks (so each is queued at most once).
//   empty_since  when it last became empty (steady-clock ticks).
// Only the manager knows when a chunk stops being used: a chunk is empty when it lies wholly inside
// one free block of the arena (free blocks are coalesced, so no block touches it then), which the
// manager works out from the free block a block leaves behind (GPUMemoryManager's vacate()). So a
// block's chunks are marked used when it is placed and marked unused only when the free space around
// them says so: no per-chunk counts, and a free that empties no chunk touches no chunk state at all.
//
// The three bits of 64 chunks sit together in one 32-byte group, so placing a block on committed chunks
// (the common case) reads and writes one cache line.
//
// State lives in pages of kPageChunks chunks allocated on first touch: a 40 TB pool in 2 MiB chunks is
// 19 million chunks, which eager arrays would spend hundreds of MB describing; an untouched page costs
// one pointer and reads as all zero.
//
// Internal to src/memory (the manager's). Thread safety: none; the manager holds its lock.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <memory>
#include <vector>

namespace apt::vgpu::memory {

class ChunkMap {
 public:
  static constexpr std::uint64_t kPageChunks = 4096;

  explicit ChunkMap(std::uint64_t count = 0) : count_(count), pages_((count + kPageChunks - 1) / kPageChunks) {}

  [[nodiscard]] std::uint64_t size() const noexcept { return count_; }

  // ---- committed ----
  [[nodiscard]] bool committed(std::uint64_t c) const { return test(&Group::committed, c); }
  void set_committed(std::uint64_t first, std::uint64_t last, bool value) {
    assign(&Group::committed, first, last, value);
  }
  // Whether every chunk in [first, last] is committed (the common case a new block lands in).
  [[nodiscard]] bool all_committed(std::uint64_t first, std::uint64_t last) const {
    return find(&Group::committed, first, last, false) > last;
  }
  // Calls f(run_first, run_count) for each run of uncommitted chunks in [first, last], in order,
  // without touching pages.
  template <class F>
  void for_each_uncommitted_run(std::uint64_t first, std::uint64_t last, F&& f) const {
    std::uint64_t c = first;
    while (c <= last) {
      const std::uint64_t start = find(&Group::committed, c, last, false);
      if (start > last) return;
      const std::uint64_t end = find(&Group::committed, start, last, true);  // first committed after, or last + 1
      f(start, end - start);
      c = end + 1;
    }
  }

  // ---- used ----
  [[nodiscard]] bool used(std::uint64_t c) const { return test(&Group::used, c); }
  // A block now lies on chunks [first, last].
  void set_used(std::uint64_t first, std::uint64_t last) { assign(&Group::used, first, last, true); }
  // No block lies on chunks [first, last] any more.
  void clear_used(std::uint64_t first, std::uint64_t last) { assign(&Group::used, first, last, false); }
  // The common case of placing a block: when chunks [first, last] lie in one group and are all
  // committed, marks them used and returns true; otherwise returns false and changes nothing (the
  // caller commits them, then calls set_used).
  bool use_if_committed(std::uint64_t first, std::uint64_t last) {
    if (first / 64 != last / 64) return false;
    Page* p = pages_[first / kPageChunks].get();
    if (p == nullptr) return false;
    Group& g = p->groups[(first % kPageChunks) / 64];
    const std::uint64_t mask = word_mask(first % 64, last % 64);
    if ((g.committed & mask) != mask) return false;
    g.used |= mask;
    return true;
  }

  // ---- the empty queue's marks ----
  // Chunks [first, last] became empty at `now`: stamps them; true when one of them was not queued yet
  // (the caller then queues the run).
  bool mark_empty(std::uint64_t first, std::uint64_t last, std::int64_t now) {
    bool newly = false;
    for_pages(first, last, [&](Page& p, std::uint64_t lo, std::uint64_t hi) {
      std::fill(p.empty_since + lo, p.empty_since + hi + 1, now);
      for_words(lo, hi, [&](std::uint64_t w, std::uint64_t mask) {
        newly = newly || (p.groups[w].queued & mask) != mask;
        p.groups[w].queued |= mask;
      });
    });
    return newly;
  }
  // One queued run's turn in the collector, a bitmap word at a time: of its chunks still queued, those
  // used again or no longer committed leave the queue; those empty since no later than `idle_since`
  // are released (release(chunk) is called, then they are marked uncommitted and leave the queue);
  // the rest stay queued and widen [*wait_first, *wait_last].
  template <class F>
  void sweep(std::uint64_t first, std::uint64_t last, std::int64_t idle_since, F&& release, std::uint64_t* wait_first,
             std::uint64_t* wait_last) {
    for (std::uint64_t c = first; c <= last;) {
      const std::uint64_t end = page_end(c, last);
      Page* p = pages_[c / kPageChunks].get();
      if (p == nullptr) {  // never touched: nothing queued there
        c = end + 1;
        continue;
      }
      const std::uint64_t base = c / kPageChunks * kPageChunks;
      for_words(c % kPageChunks, end % kPageChunks, [&](std::uint64_t w, std::uint64_t mask) {
        Group& g = p->groups[w];
        // Queued chunks that are used again or no longer committed leave the queue at once.
        const std::uint64_t queued = g.queued & mask;
        g.queued &= ~(queued & (g.used | ~g.committed));
        for (std::uint64_t left = queued & ~g.used & g.committed; left != 0; left &= left - 1) {
          const std::uint64_t i = w * 64 + static_cast<std::uint64_t>(std::countr_zero(left));
          const std::uint64_t bit_mask = std::uint64_t{1} << (i % 64);
          if (p->empty_since[i] > idle_since) {
            *wait_first = std::min(*wait_first, base + i);
            *wait_last = std::max(*wait_last, base + i);
          } else {
            release(base + i);
            g.queued &= ~bit_mask;
            g.committed &= ~bit_mask;
          }
        }
      });
      c = end + 1;
    }
  }
  [[nodiscard]] bool queued(std::uint64_t c) const { return test(&Group::queued, c); }
  void clear_queued(std::uint64_t first, std::uint64_t last) { assign(&Group::queued, first, last, false); }
  [[nodiscard]] std::int64_t empty_since(std::uint64_t c) const {
    const Page* p = peek(c);
    return p == nullptr ? 0 : p->empty_since[c % kPageChunks];
  }

  // Calls f(chunk) for every chunk on a touched page (checks only).
  template <class F>
  void for_each_touched(F&& f) const {
    for (std::uint64_t p = 0; p < pages_.size(); ++p) {
      if (!pages_[p]) continue;
      for (std::uint64_t i = 0; i < kPageChunks && p * kPageChunks + i < count_; ++i) f(p * kPageChunks + i);
    }
  }

 private:
  static constexpr std::uint64_t kWords = kPageChunks / 64;
  // The bits of 64 chunks, side by side (one aligned half cache line).
  struct alignas(32) Group {
    std::uint64_t committed = 0;
    std::uint64_t used = 0;
    std::uint64_t queued = 0;
  };
  struct Page {
    Group groups[kWords] = {};
    std::int64_t empty_since[kPageChunks] = {};
  };
  using Bits = std::uint64_t Group::*;

  // Bits [from, to] of a word (from <= to < 64).
  static std::uint64_t word_mask(std::uint64_t from, std::uint64_t to) {
    return (~std::uint64_t{0} >> (63 - (to - from))) << from;  // to - from + 1 ones, shifted up
  }

  // The last chunk of [c, last] on c's page.
  static std::uint64_t page_end(std::uint64_t c, std::uint64_t last) {
    return std::min(last, (c / kPageChunks + 1) * kPageChunks - 1);
  }
  Page& page(std::uint64_t c) {
    auto& p = pages_[c / kPageChunks];
    if (!p) p = std::make_unique<Page>();
    return *p;
  }
  [[nodiscard]] const Page* peek(std::uint64_t c) const { return pages_[c / kPageChunks].get(); }
  [[nodiscard]] bool test(Bits bits, std::uint64_t c) const {
    const Page* p = peek(c);
    const std::uint64_t i = c % kPageChunks;
    return p != nullptr && ((p->groups[i / 64].*bits >> (i % 64)) & 1U) != 0;
  }

  // f(page, lo, hi) for the part [lo, hi] (page-relative) of [first, last] on each page, touching pages.
  template <class F>
  void for_pages(std::uint64_t first, std::uint64_t last, F&& f) {
    for (std::uint64_t c = first; c <= last;) {
      const std::uint64_t end = page_end(c, last);
      f(page(c), c % kPageChunks, end % kPageChunks);
      c = end + 1;
    }
  }
  // f(word, mask) for the words of page-relative bits [lo, hi].
  template <class F>
  static void for_words(std::uint64_t lo, std::uint64_t hi, F&& f) {
    for (std::uint64_t w = lo / 64; w <= hi / 64; ++w) {
      const std::uint64_t from = w == lo / 64 ? lo % 64 : 0;
      const std::uint64_t to = w == hi / 64 ? hi % 64 : 63;
      f(w, word_mask(from, to));
    }
  }
  void assign(Bits bits, std::uint64_t first, std::uint64_t last, bool value) {
    for_pages(first, last, [&](Page& p, std::uint64_t lo, std::uint64_t hi) {
      for_words(lo, hi, [&](std::uint64_t w, std::uint64_t mask) {
        if (value) {
          p.groups[w].*bits |= mask;
        } else {
          p.groups[w].*bits &= ~mask;
        }
      });
    });
  }
  // The first chunk in [from, last] whose bit equals `value`, or last + 1; untouched pages read as 0.
  [[nodiscard]] std::uint64_t find(Bits bits, std::uint64_t from, std::uint64_t last, bool value) const {
    for (std::uint64_t c = from; c <= last;) {
      const std::uint64_t end = page_end(c, last);
      const Page* p = peek(c);
      if (p == nullptr) {
        if (!value) return c;
        c = end + 1;
        continue;
      }
      for (std::uint64_t w = (c % kPageChunks) / 64; w <= (end % kPageChunks) / 64; ++w) {
        std::uint64_t word = value ? p->groups[w].*bits : ~(p->groups[w].*bits);
        const std::uint64_t base = c / kPageChunks * kPageChunks + w * 64;
        if (base < c) word &= ~std::uint64_t{0} << (c - base);
        if (word != 0) {
          const std::uint64_t at = base + static_cast<std::uint64_t>(std::countr_zero(word));
          return at <= end ? at : last + 1;
        }
      }
      c = end + 1;
    }
    return last + 1;
  }

  std::uint64_t count_;
  std::vector<std::unique_ptr<Page>> pages_;
};

}  // namespace apt::vgpu::memory
