// ChunkMap: what a GPUMemoryManager's lazy backing knows about each chunk of its pool, kept as bitmaps
// and runs so that a block over many chunks costs word operations, not a visit to each chunk.
//
// Per chunk:
//   committed    bit: backed by memory now.
//   interior     bit: covered whole by one block that neither starts nor ends on it (no other block
//                can touch such a chunk, so one bit says it is in use).
//   edge refs    uint32: blocks that start or end on it (a block on one chunk counts once there).
//   queued       bit: in the manager's queue of emptied chunks (so each is queued at most once).
//   empty_since  when it last became empty (steady-clock ticks).
// A chunk is occupied when it is interior or has edge references; occupy()/vacate() of a block touch
// two counters and set or clear its interior run a word (64 chunks) at a time.
//
// State lives in pages of kPageChunks chunks allocated on first touch: a 40 TB pool in 2 MiB chunks is
// 19 million chunks, which eager arrays would spend hundreds of MB describing; an untouched page costs
// one pointer and reads as all zero.
//
// Internal to src/memory (the manager's). Thread safety: none; the manager holds its mutex.
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
  [[nodiscard]] bool committed(std::uint64_t c) const { return test(&Page::committed, c); }
  void set_committed(std::uint64_t first, std::uint64_t last, bool value) { assign(&Page::committed, first, last, value); }
  // Whether every chunk in [first, last] is committed (the common case a new block lands in).
  [[nodiscard]] bool all_committed(std::uint64_t first, std::uint64_t last) const {
    if (first / 64 == last / 64) {  // within one bitmap word (and so one page): most blocks
      const Page* p = peek(first);
      const std::uint64_t mask = word_mask(first % 64, last % 64);
      return p != nullptr && (p->committed[(first % kPageChunks) / 64] & mask) == mask;
    }
    return find(&Page::committed, first, last, false) > last;
  }
  // Calls f(run_first, run_count) for each run of uncommitted chunks in [first, last], in order,
  // without touching pages.
  template <class F>
  void for_each_uncommitted_run(std::uint64_t first, std::uint64_t last, F&& f) const {
    std::uint64_t c = first;
    while (c <= last) {
      const std::uint64_t start = find(&Page::committed, c, last, false);
      if (start > last) return;
      const std::uint64_t end = find(&Page::committed, start, last, true);  // first committed after, or last + 1
      f(start, end - start);
      c = end;
    }
  }

  // ---- occupancy ----
  // A block now lies on chunks [first, last].
  void occupy(std::uint64_t first, std::uint64_t last) {
    ++page(first).edge_refs[first % kPageChunks];
    if (last == first) return;
    ++page(last).edge_refs[last % kPageChunks];
    if (last > first + 1) assign(&Page::interior, first + 1, last - 1, true);
  }
  // The common case of occupy() on its own: a block on the one chunk `c`, counted only when `c` is
  // committed (true); false, and nothing changed, when it is not (the caller commits it, then occupies).
  bool occupy_if_committed(std::uint64_t c) {
    Page* p = pages_[c / kPageChunks].get();
    if (p == nullptr || !bit(p->committed, c % kPageChunks)) return false;
    ++p->edge_refs[c % kPageChunks];
    return true;
  }
  // vacate() of a block on the one chunk `c`: true when that leaves `c` empty.
  bool vacate_one(std::uint64_t c) { return --page(c).edge_refs[c % kPageChunks] == 0; }
  // The block on [first, last] is gone. Returns the run of chunks it leaves empty as [*empty_first,
  // *empty_last] (false when none): its interior, and its edge chunks no other block touches.
  bool vacate(std::uint64_t first, std::uint64_t last, std::uint64_t* empty_first, std::uint64_t* empty_last) {
    const bool first_empty = --page(first).edge_refs[first % kPageChunks] == 0;
    if (last == first) {
      *empty_first = *empty_last = first;
      return first_empty;
    }
    const bool last_empty = --page(last).edge_refs[last % kPageChunks] == 0;
    if (last > first + 1) assign(&Page::interior, first + 1, last - 1, false);
    *empty_first = first_empty ? first : first + 1;
    *empty_last = last_empty ? last : last - 1;
    return *empty_first <= *empty_last;
  }
  [[nodiscard]] bool occupied(std::uint64_t c) const {
    const Page* p = peek(c);
    return p != nullptr && (p->edge_refs[c % kPageChunks] != 0 || bit(p->interior, c % kPageChunks));
  }
  [[nodiscard]] std::uint32_t edge_refs(std::uint64_t c) const {
    const Page* p = peek(c);
    return p == nullptr ? 0 : p->edge_refs[c % kPageChunks];
  }
  [[nodiscard]] bool interior(std::uint64_t c) const { return test(&Page::interior, c); }
  // Starts loading the counters vacate(first, last) will change (a random chunk's counter is a cache
  // miss in a large pool; the caller has other misses to overlap it with).
  void prefetch_edges(std::uint64_t first, std::uint64_t last) const {
    if (const Page* p = peek(first)) __builtin_prefetch(&p->edge_refs[first % kPageChunks]);
    if (last == first) return;
    if (const Page* p = peek(last)) __builtin_prefetch(&p->edge_refs[last % kPageChunks]);
  }

  // ---- the empty queue's marks ----
  // Chunks [first, last] became empty at `now`: stamps them; true when one of them was not queued yet
  // (the caller then queues the run).
  bool mark_empty(std::uint64_t first, std::uint64_t last, std::int64_t now) {
    bool newly = false;
    for_pages(first, last, [&](Page& p, std::uint64_t lo, std::uint64_t hi) {
      std::fill(p.empty_since + lo, p.empty_since + hi + 1, now);
      for_words(lo, hi, [&](std::uint64_t w, std::uint64_t mask) {
        newly = newly || (p.queued[w] & mask) != mask;
        p.queued[w] |= mask;
      });
    });
    return newly;
  }
  // One queued run's turn in the collector, a bitmap word at a time: of its chunks still queued, those
  // occupied again or no longer committed leave the queue; those empty since no later than
  // `idle_since` are released (release(chunk) is called, then they are marked uncommitted and leave
  // the queue); the rest stay queued and widen [*wait_first, *wait_last].
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
        for (std::uint64_t left = p->queued[w] & mask; left != 0; left &= left - 1) {
          const std::uint64_t i = w * 64 + static_cast<std::uint64_t>(std::countr_zero(left));
          const std::uint64_t bit_mask = std::uint64_t{1} << (i % 64);
          if (p->edge_refs[i] != 0 || (p->interior[w] & bit_mask) != 0 || (p->committed[w] & bit_mask) == 0) {
            p->queued[w] &= ~bit_mask;
          } else if (p->empty_since[i] > idle_since) {
            *wait_first = std::min(*wait_first, base + i);
            *wait_last = std::max(*wait_last, base + i);
          } else {
            release(base + i);
            p->queued[w] &= ~bit_mask;
            p->committed[w] &= ~bit_mask;
          }
        }
      });
      c = end + 1;
    }
  }
  [[nodiscard]] bool queued(std::uint64_t c) const { return test(&Page::queued, c); }
  void clear_queued(std::uint64_t first, std::uint64_t last) { assign(&Page::queued, first, last, false); }
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
  struct Page {
    std::uint64_t committed[kWords] = {};
    std::uint64_t interior[kWords] = {};
    std::uint64_t queued[kWords] = {};
    // In the page itself, not behind pointers of their own: a counter is then one load after the
    // page pointer, not two (occupy and vacate run on every allocate and free).
    std::uint32_t edge_refs[kPageChunks] = {};
    std::int64_t empty_since[kPageChunks] = {};
  };
  using Bits = std::uint64_t (Page::*)[kWords];

  static bool bit(const std::uint64_t* words, std::uint64_t i) { return ((words[i / 64] >> (i % 64)) & 1U) != 0; }
  // Bits [from, to] of a word (from <= to < 64).
  static std::uint64_t word_mask(std::uint64_t from, std::uint64_t to) {
    return (to - from == 63 ? ~std::uint64_t{0} : ((std::uint64_t{1} << (to - from + 1)) - 1)) << from;
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
    return p != nullptr && bit(p->*bits, c % kPageChunks);
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
          (p.*bits)[w] |= mask;
        } else {
          (p.*bits)[w] &= ~mask;
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
        std::uint64_t word = value ? (p->*bits)[w] : ~(p->*bits)[w];
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
