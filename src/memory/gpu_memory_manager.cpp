#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/memory/gpu_memory_manager.hpp>
#include <apt/vgpu/memory/tlsf_arena.hpp>

#include "chunk_map.hpp"
#include "pool_lock.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <ctime>
#include <deque>
#include <fmt/format.h>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace apt::vgpu::memory {
namespace {

// The idle collector's clock: CLOCK_MONOTONIC_COARSE (a few milliseconds' resolution, for idle times
// of a second by default) reads in a few nanoseconds, where steady_clock's full resolution cost a
// twentieth of a free at 100k live blocks.
struct Clock {
  using duration = std::chrono::nanoseconds;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::time_point<Clock>;
  static constexpr bool is_steady = true;
  static time_point now() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return time_point(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
  }
};
using BlockId = TlsfArena::BlockId;
constexpr std::uint32_t kNoSlot = UINT32_MAX;

std::atomic<std::uint32_t> g_next_manager_id{1};

}  // namespace

// The arena's granule: the pool's alignment, or the smallest power of two above it that keeps the pool
// within the arena's 2^32 granules (a pool over 1 TiB at 256 B; a 40 TB pool gets 16 KiB granules).
namespace {
std::uint64_t arena_granule(const MemoryManagerOptions& o) {
  std::uint64_t granule = o.alignment;
  while (granule != 0 && std::has_single_bit(granule) && o.pool_size / granule > UINT32_MAX) granule <<= 1U;
  return granule;
}
}  // namespace

struct GPUMemoryManager::Impl {
  // What the manager knows of a resident block beyond what the arena keeps (offset, size), in a table
  // indexed by the block's arena node: 8 bytes, so at 100k live blocks the table is a fifth of the
  // arena's nodes and free() loads it side by side with the node, both addressed by the handle.
  struct Record {
    static constexpr std::uint32_t kSlackBits = 24;  // slack < the granule <= MemorySection::kLargestAlignment
    static constexpr std::uint32_t kPinnedForever = 1U << 24U;
    static constexpr std::uint32_t kIndirect = 1U << 25U;  // an evictable block: its handle names a Slot
    std::uint32_t slack_and_flags = 0;  // slack (size - requested) in the low 24 bits, flags above
    std::uint16_t tenant = 0;
    std::uint8_t pins = 0;
    std::uint8_t alignment_log2 = 0;
    [[nodiscard]] std::uint64_t slack() const noexcept { return slack_and_flags & ((1U << kSlackBits) - 1); }
    [[nodiscard]] bool pinned_forever() const noexcept { return (slack_and_flags & kPinnedForever) != 0; }
    [[nodiscard]] bool indirect() const noexcept { return (slack_and_flags & kIndirect) != 0; }
    [[nodiscard]] std::uint64_t alignment() const noexcept { return std::uint64_t{1} << alignment_log2; }
  };
  static_assert(sizeof(Record) == 8);
  static_assert((std::uint64_t{1} << Record::kSlackBits) >= config::MemorySection::kLargestAlignment);

  // An evictable block's handle names one of these rather than its arena node, because eviction takes
  // the node away and a restore gives it another: the slot follows the block. Only evictable blocks
  // (AllocationOptions::evictable, not pinned) pay for the indirection.
  struct Slot {
    std::uint32_t generation = 1;
    bool live = false;
    bool in_lru = false;
    BlockId block = TlsfArena::kNoBlock;  // kNoBlock while spilled
    Record spilled_record;                // the block's record while it is spilled
    std::uint64_t spilled_size = 0;
    std::uint32_t lru_prev = kNoSlot;
    std::uint32_t lru_next = kNoSlot;
    std::unique_ptr<std::byte[]> spill;
  };
  struct Tenant {
    std::string name;
    std::uint64_t quota = 0;  // 0: none
    std::uint64_t usage = 0;
  };
  // Where a handle's block is: its arena block (kNoBlock while spilled) and its slot (kNoSlot for a
  // block whose handle names its node).
  struct Located {
    BlockId block;
    std::uint32_t slot;
  };

  MemoryManagerOptions options;
  std::uint32_t id = g_next_manager_id.fetch_add(1);
  mutable PoolLock mutex;
  std::unique_ptr<Backing> backing;
  TlsfArena arena;
  std::vector<Record> records;  // arena node index -> the resident block's record
  std::vector<Slot> slots;
  std::vector<std::uint32_t> spare_slots;
  std::uint64_t spilled_blocks = 0;
  std::vector<Tenant> tenants{Tenant{}};  // index 0: the unnamed tenant
  std::unordered_map<std::string, std::uint32_t> tenant_index{{"", 0}};

  // LRU of resident, evictable, unpinned blocks (slots): head = most recent.
  std::uint32_t lru_head = kNoSlot;
  std::uint32_t lru_tail = kNoSlot;
  std::uint64_t evictable_bytes = 0;

  // Lazy backing: which chunks are committed and used, as bitmaps and runs (chunk_map.hpp).
  std::uint64_t chunk = 0;
  int chunk_shift = 0;
  ChunkMap chunks{0};
  // Runs of chunks that became empty, oldest first. A chunk is in at most one run that it was queued
  // by (ChunkMap's queued bit); a run may also cover chunks since reused or queued again, which its
  // turn in collect() skips.
  struct EmptyRun {
    std::uint64_t first;
    std::uint64_t count;
  };
  std::deque<EmptyRun> empty_queue;
  std::uint64_t committed_chunks = 0;
  Clock::time_point last_gc = Clock::now();
  std::uint32_t frees_until_gc_check = 1;  // the idle collector's clock is looked at when this reaches 0

  std::uint64_t requested = 0;
  std::uint64_t spilled = 0;
  std::uint64_t freed_since_compaction = 0;
  std::uint64_t freed_since_check = 0;  // bytes freed since free() last looked at fragmentation
  std::uint64_t last_compaction_moved = 0;
  MemoryStats stats;

  // The clock, read at most once per operation (a free that empties chunks and checks whether idle
  // ones are due once read it for every chunk and again for the check: a quarter of the manager's
  // own time).
  std::optional<Clock::time_point> operation_clock;
  Clock::time_point now() {
    if (!operation_clock) operation_clock = Clock::now();
    return *operation_clock;
  }
  // Every public operation starts here: the lock, and a fresh clock.
  [[nodiscard]] std::unique_lock<PoolLock> operation() {
    std::unique_lock lock(mutex);
    operation_clock.reset();
    return lock;
  }
  // Queues chunks [first, last], just emptied, for release once idle. Each chunk is stamped with the
  // time; the run is queued unless every chunk of it already was (a chunk emptied again while queued
  // keeps its place in the queue, with the later time).
  void queue_empty(std::uint64_t first, std::uint64_t last) {
    if (chunks.mark_empty(first, last, now().time_since_epoch().count())) empty_queue.push_back({first, last - first + 1});
  }

  Impl(const MemoryManagerOptions& o, std::unique_ptr<Backing> b)
      : options(o), backing(std::move(b)), arena(o.pool_size, arena_granule(o)) {
    chunk = backing->chunk_size();
    chunk_shift = std::countr_zero(chunk);
    const std::uint64_t n = (arena.capacity() + chunk - 1) >> chunk_shift;
    chunks = ChunkMap(n);
    if (!options.lazy) commit_run(0, n);
  }

  // ---- handles ----
  // The handle's block, or InvalidArgument. A handle naming a node carries the arena's stamp for the
  // allocation as its generation, so the arena itself tells a live block from a stale handle.
  [[gnu::always_inline]] Located locate(MemoryBlock b) const {
    Located at{};
    if (find(b, at)) [[likely]] return at;
    throw_unlocated(b);
  }
  // Why a handle names no block here, as the error its caller sees.
  [[noreturn, gnu::cold, gnu::noinline]] void throw_unlocated(MemoryBlock b) const {
    if (!b.valid()) throw InvalidArgument("block: empty handle (default-constructed MemoryBlock)");
    if (b.manager != id) {
      throw InvalidArgument("block: the handle belongs to another GPUMemoryManager; free it where it was allocated");
    }
    throw InvalidArgument("block: the handle was already freed (double free) or never allocated here");
  }
  // Whether a handle names a live block of this manager, and where (never throws).
  [[gnu::always_inline]] bool find(MemoryBlock b, Located& at) const noexcept {
    if (!b.valid() || b.manager != id) return false;
    if ((b.slot & MemoryBlock::kSlotHandle) != 0) {
      const std::uint32_t s = b.slot & ~MemoryBlock::kSlotHandle;
      if (s >= slots.size() || !slots[s].live || slots[s].generation != b.generation) return false;
      at = {slots[s].block, s};
      return true;
    }
    const BlockId block = TlsfArena::block_id(b.slot, b.generation);
    // An evictable block is named by its slot only: a node handle for it is made up.
    if (!arena.holds(block) || records[b.slot].indirect()) return false;
    at = {block, kNoSlot};
    return true;
  }
  Record& record_of(BlockId block) { return records[TlsfArena::index_of(block)]; }
  const Record& record_of(BlockId block) const { return records[TlsfArena::index_of(block)]; }
  // The record of a located block, resident or spilled.
  Record& record_of(const Located& at) {
    return at.block != TlsfArena::kNoBlock ? record_of(at.block) : slots[at.slot].spilled_record;
  }
  [[nodiscard]] std::uint64_t size_of(const Located& at) const {
    return at.block != TlsfArena::kNoBlock ? arena.size(at.block) : slots[at.slot].spilled_size;
  }

  std::uint32_t tenant_of(const std::string& name) {
    if (tenants.size() > UINT16_MAX && tenant_index.find(name) == tenant_index.end()) {
      throw InvalidArgument(fmt::format("tenant: '{}' would be tenant number {}; a pool holds at most {} (reuse names, "
                                        "e.g. one per vGPU)",
                                        name, tenants.size() + 1, UINT16_MAX + 1));
    }
    auto [it, inserted] = tenant_index.emplace(name, static_cast<std::uint32_t>(tenants.size()));
    if (inserted) tenants.push_back(Tenant{name, 0, 0});
    return it->second;
  }

  // ---- LRU ----
  void lru_push_front(std::uint32_t s) {
    Slot& slot = slots[s];
    slot.in_lru = true;
    slot.lru_prev = kNoSlot;
    slot.lru_next = lru_head;
    if (lru_head != kNoSlot) slots[lru_head].lru_prev = s;
    lru_head = s;
    if (lru_tail == kNoSlot) lru_tail = s;
    evictable_bytes += arena.size(slot.block);
  }
  void lru_remove(std::uint32_t s) {
    Slot& slot = slots[s];
    if (!slot.in_lru) return;
    if (slot.lru_prev != kNoSlot) slots[slot.lru_prev].lru_next = slot.lru_next; else lru_head = slot.lru_next;
    if (slot.lru_next != kNoSlot) slots[slot.lru_next].lru_prev = slot.lru_prev; else lru_tail = slot.lru_prev;
    slot.in_lru = false;
    slot.lru_prev = slot.lru_next = kNoSlot;
    evictable_bytes -= arena.size(slot.block);
  }
  // Slots hold only evictable blocks; one may be evicted now when resident and unpinned.
  [[nodiscard]] bool evictable_now(const Slot& slot) const {
    return slot.block != TlsfArena::kNoBlock && record_of(slot.block).pins == 0;
  }
  void touch(std::uint32_t s) {
    if (slots[s].in_lru && lru_head != s) {
      lru_remove(s);
      lru_push_front(s);
    }
  }

  // ---- lazy backing ----
  // The chunks a byte range [offset, offset + size) lies on (size > 0).
  struct ChunkRange {
    std::uint64_t first;
    std::uint64_t last;
  };
  [[nodiscard]] ChunkRange chunks_under(std::uint64_t offset, std::uint64_t size) const {
    return {offset >> chunk_shift, (offset + size - 1) >> chunk_shift};
  }
  void commit_run(std::uint64_t first, std::uint64_t count) {
    backing->commit(first << chunk_shift, count << chunk_shift);
    chunks.set_committed(first, first + count - 1, true);
    committed_chunks += count;
    // Reserved memory grows only here, so its peak is noted here rather than on every allocation.
    stats.peak_reserved = std::max(stats.peak_reserved, committed_chunks * chunk);
    stats.chunks_committed += count;
    ++stats.commit_calls;
  }
  // Commits every chunk of `range` that is not. Strong guarantee: when the
  // backing fails (cuMemCreate out of memory, mprotect ENOMEM), the chunks this call did commit are
  // handed to the idle collector, so nothing stays committed for nobody.
  [[gnu::always_inline]] void commit_under(ChunkRange range) {
    // Usually all are (place() comes here only for a block over two bitmap groups or on a chunk not
    // committed; compaction's destination mostly lies on committed chunks).
    if (chunks.all_committed(range.first, range.last)) [[likely]] return;
    commit_runs(range.first, range.last);
  }
  [[gnu::noinline]] void commit_runs(std::uint64_t first, std::uint64_t last) {
    // The uncommitted runs, found a bitmap word at a time.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
    chunks.for_each_uncommitted_run(first, last, [&](std::uint64_t start, std::uint64_t count) {
      runs.emplace_back(start, count);
    });
    std::size_t committed = 0;  // runs[0, committed) are committed
    try {
      for (; committed < runs.size(); ++committed) commit_run(runs[committed].first, runs[committed].second);
    } catch (...) {
      for (std::size_t i = 0; i < committed; ++i) queue_empty(runs[i].first, runs[i].first + runs[i].second - 1);
      throw;
    }
  }
  // A block now lies on [offset, offset + size): its chunks are committed (commit_under's guarantee)
  // and marked used. The caller notes the peaks once its books include the block.
  [[gnu::always_inline]] void place(std::uint64_t offset, std::uint64_t size) {
    stats.peak_address = std::max(stats.peak_address, offset + size);
    const ChunkRange range = chunks_under(offset, size);
    // Most blocks land on chunks committed already, within one bitmap group: one cache line.
    if (chunks.use_if_committed(range.first, range.last)) [[likely]] return;
    commit_under(range);
    chunks.set_used(range.first, range.last);
  }
  // Bytes [offset, offset + size) no longer hold a block and lie in free block `free_block` (the one
  // the arena returned on freeing them, or the space a slide left). A chunk is empty when it lies
  // wholly inside one free block, since free blocks are coalesced: of the chunks under the range,
  // those inside `free_block` are now empty; the rest still touch a block beyond it. A free that
  // leaves no chunk empty (the free space around it smaller than a chunk) touches no chunk state.
  [[gnu::always_inline]] void vacate(std::uint64_t offset, std::uint64_t size, BlockId free_block) {
    const std::uint64_t free_start = arena.offset(free_block);
    const std::uint64_t free_end = free_start + arena.size(free_block);
    // The first chunk that starts inside the free block, and one past the last that ends inside it
    // (the pool's last chunk may be partial: it ends at the pool's end).
    const std::uint64_t first_inside = (free_start + chunk - 1) >> chunk_shift;
    const std::uint64_t end_inside = free_end == arena.capacity() ? chunks.size() : free_end >> chunk_shift;
    const ChunkRange under = chunks_under(offset, size);
    const std::uint64_t first = std::max(under.first, first_inside);
    const std::uint64_t end = std::min(under.last + 1, end_inside);
    if (first >= end) [[likely]] return;
    chunks.clear_used(first, end - 1);
    queue_empty(first, end - 1);
  }
  // Frees arena block `b`, which lay on [offset, offset + size), and marks the chunks it leaves empty.
  [[gnu::always_inline]] void free_in_arena(BlockId b, std::uint64_t offset, std::uint64_t size) {
    vacate(offset, size, arena.free(b));
  }
  std::uint64_t collect(std::chrono::milliseconds idle) {
    const auto at = now();
    last_gc = at;
    if (!options.lazy) {
      for (const EmptyRun& run : empty_queue) {
        chunks.clear_queued(run.first, run.first + run.count - 1);
      }
      empty_queue.clear();
      return 0;
    }
    const std::int64_t idle_since = (at - idle).time_since_epoch().count();
    std::uint64_t released = 0;
    // Each run once: its chunks that are still queued and empty are released when idle long enough;
    // those reused since, or released already, leave the queue; those emptied again too recently
    // go to the back in one run, so they do not hold up the rest.
    for (std::size_t left = empty_queue.size(); left > 0 && !empty_queue.empty(); --left) {
      const EmptyRun run = empty_queue.front();
      empty_queue.pop_front();
      std::uint64_t wait_first = UINT64_MAX;
      std::uint64_t wait_last = 0;
      chunks.sweep(run.first, run.first + run.count - 1, idle_since, [&](std::uint64_t c) {
        backing->decommit(c << chunk_shift, chunk);
        --committed_chunks;
        ++stats.chunks_released;
        ++stats.release_calls;
        released += chunk;
      }, &wait_first, &wait_last);
      if (wait_first <= wait_last) empty_queue.push_back({wait_first, wait_last - wait_first + 1});
    }
    return released;
  }

  void note_peaks() {
    stats.peak_used = std::max(stats.peak_used, arena.used_bytes());
    stats.peak_requested = std::max(stats.peak_requested, requested);
  }

  // ---- compaction ----
  std::uint64_t compact_locked() {
    std::uint64_t moved = 0;
    for (BlockId b = arena.first_block(); b != TlsfArena::kNoBlock; b = arena.next_block(b)) {
      if (arena.is_free(b) || !arena.can_slide_down(b)) continue;
      const Record& record = record_of(b);
      if (record.pinned_forever() || record.pins != 0) continue;
      const std::uint64_t from = arena.offset(b);
      const std::uint64_t size = arena.size(b);
      const std::uint64_t to = arena.offset(arena.prev_block(b));
      // A block keeps the alignment it was allocated with: it slides only to an offset that has it
      // (sliding a 2 MiB-aligned block down to offset 256 once broke it).
      if (to % record.alignment() != 0) continue;
      // The destination's chunks may have been released while empty: committed first. They are marked
      // used once the data has moved; the chunks it left empty are those wholly inside the free space
      // the slide leaves above it (never one under its new range, which that space does not reach).
      stats.peak_address = std::max(stats.peak_address, to + size);
      const ChunkRange destination = chunks_under(to, size);
      commit_under(destination);
      try {
        backing->move(to, from, size);
      } catch (...) {
        // Nothing moved: the block stays where it was; chunks committed for it go to the collector.
        queue_empty(destination.first, destination.last);
        throw;
      }
      arena.slide_down(b);  // the block keeps its node, so its record and handle stay valid
      chunks.set_used(destination.first, destination.last);
      vacate(from, size, arena.next_block(b));  // the space it left is the free block just above it
      note_peaks();
      moved += size;
    }
    ++stats.compactions;
    stats.bytes_moved += moved;
    freed_since_compaction = 0;
    last_compaction_moved = moved;
    return moved;
  }

  // ---- eviction ----
  void evict(std::uint32_t s) {
    Slot& slot = slots[s];
    const std::uint64_t offset = arena.offset(slot.block);
    const std::uint64_t size = arena.size(slot.block);
    // The contents first: if the host buffer or the copy fails, the block stays resident.
    std::unique_ptr<std::byte[]> spill;
    if (backing->holds_data()) {
      spill = std::make_unique<std::byte[]>(size);
      backing->copy_to_host(spill.get(), offset, size);
    }
    slot.spill = std::move(spill);
    lru_remove(s);
    slot.spilled_record = record_of(slot.block);
    slot.spilled_size = size;
    free_in_arena(slot.block, offset, size);
    slot.block = TlsfArena::kNoBlock;
    spilled += size;
    ++spilled_blocks;
    ++stats.evictions;
  }

  // Finds room for `size`: directly, then by compaction, then by evicting LRU blocks.
  [[gnu::always_inline]] BlockId find_space(std::uint64_t size, std::uint64_t alignment) {
    const BlockId b = arena.allocate_block(size, alignment);
    if (b != TlsfArena::kNoBlock) [[likely]] return b;
    return find_space_slow(size, alignment);
  }
  [[gnu::noinline]] BlockId find_space_slow(std::uint64_t size, std::uint64_t alignment) {
    const std::uint64_t slack = alignment > arena.granule() ? alignment : 0;
    if (options.compaction && arena.free_bytes() >= size + slack) {
      compact_locked();
      if (auto b = arena.allocate(size, alignment)) return *b;
    }
    if (!options.eviction || arena.free_bytes() + evictable_bytes < size) return TlsfArena::kNoBlock;
    while (lru_tail != kNoSlot) {
      evict(lru_tail);
      if (auto b = arena.allocate(size, alignment)) return *b;
      if (options.compaction && arena.free_bytes() >= size + slack) {
        compact_locked();
        if (auto b = arena.allocate(size, alignment)) return *b;
      }
    }
    return TlsfArena::kNoBlock;
  }

  // Makes arena block `b` the block `record` describes: commits its chunks and writes its record.
  // When that fails the block goes back to the arena and nothing has changed.
  [[gnu::always_inline]] void attach(BlockId b, const Record& record) {
    const std::uint32_t index = TlsfArena::index_of(b);
    try {
      if (records.size() <= index) [[unlikely]] {
        // A handle names a node by its index below MemoryBlock::kSlotHandle (2^31 nodes: 48 GiB of them).
        if (index >= MemoryBlock::kSlotHandle) throw std::length_error("GPUMemoryManager: 2^31 blocks in one pool");
        records.resize(static_cast<std::size_t>(index) * 2 + 16);
      }
      place(arena.offset(b), arena.size(b));
    } catch (...) {
      arena.free(b);
      throw;
    }
    records[index] = record;
  }

  void restore(std::uint32_t s) {
    Slot& slot = slots[s];
    const BlockId b = find_space(slot.spilled_size, slot.spilled_record.alignment());
    if (b == TlsfArena::kNoBlock) {
      throw OutOfMemoryError(
          fmt::format("cannot restore a spilled block of {}: the pool has {} free (largest piece {}) and nothing more "
                      "can be evicted; free or unpin blocks first",
                      format_size(slot.spilled_size), format_size(arena.free_bytes()), format_size(arena.largest_free())),
          tenants[slot.spilled_record.tenant].name, slot.spilled_size, arena.capacity(), arena.used_bytes(), false);
    }
    attach(b, slot.spilled_record);
    if (slot.spill) {
      try {
        backing->copy_from_host(arena.offset(b), slot.spill.get(), slot.spilled_size);
      } catch (...) {  // the contents stay in the spill buffer; the block stays spilled
        free_in_arena(b, arena.offset(b), slot.spilled_size);
        throw;
      }
    }
    slot.block = b;
    if (evictable_now(slot)) lru_push_front(s);
    slot.spill.reset();
    spilled -= slot.spilled_size;
    --spilled_blocks;
    note_peaks();
    ++stats.restores;
  }

  std::uintptr_t address_of(BlockId block) const { return backing->base() + arena.offset(block); }
};

// ---------------------------------------------------------------------------

namespace {

MemoryManagerOptions validated(MemoryManagerOptions o) {
  if (o.pool_size == 0) throw InvalidArgument("pool_size: 0 bytes; give a size like 80GB");
  // Far beyond any GPU; bigger pools would spend memory merely describing themselves.
  constexpr std::uint64_t kLargestPool = std::uint64_t{1} << 54;
  if (o.pool_size > kLargestPool) {
    throw InvalidArgument(fmt::format("pool_size: {} is larger than the largest pool ({}, 16 PiB); give a GPU-sized pool",
                                      format_size(o.pool_size), format_size(kLargestPool)));
  }
  if (o.alignment == 0 || !std::has_single_bit(o.alignment)) {
    throw InvalidArgument(fmt::format("alignment: {} is not a power of two; use e.g. 256", o.alignment));
  }
  if (!(o.fragmentation_threshold >= 0.0 && o.fragmentation_threshold <= 1.0)) {
    throw InvalidArgument(fmt::format("fragmentation_threshold: {} is out of range; use a fraction in [0, 1], e.g. 0.1",
                                      o.fragmentation_threshold));
  }
  constexpr std::uint64_t kLargestAlignment = config::MemorySection::kLargestAlignment;
  if (o.alignment > kLargestAlignment) {
    throw InvalidArgument(fmt::format("alignment: {} is larger than a pool's largest alignment ({}); give at most 16MiB "
                                      "(a single allocation may still ask for more with AllocationOptions::alignment)",
                                      format_size(o.alignment), format_size(kLargestAlignment)));
  }
  if (o.pool_size < o.alignment) {
    throw InvalidArgument(fmt::format("pool_size: {} bytes is smaller than the alignment ({})", o.pool_size, o.alignment));
  }
  return o;
}

}  // namespace

MemoryManagerOptions MemoryManagerOptions::from_config(const config::MemorySection& section, std::uint64_t gpu_memory) {
  MemoryManagerOptions o;
  o.pool_size = section.pool_size.value_or(gpu_memory);
  o.fragmentation_threshold = section.fragmentation_threshold;
  o.alignment = section.alignment;
  o.eviction = section.eviction == "lru";
  o.lazy = section.lazy;
  return o;
}

GPUMemoryManager::GPUMemoryManager(const MemoryManagerOptions& options) {
  const MemoryManagerOptions o = validated(options);
  impl_ = std::make_unique<Impl>(o, make_backing(o.backing, o.pool_size, o.device));
}

GPUMemoryManager::GPUMemoryManager(const MemoryManagerOptions& options, std::unique_ptr<Backing> backing) {
  if (!backing) throw InvalidArgument("backing: null; pass a Backing or use the constructor that makes one");
  const MemoryManagerOptions o = validated(options);
  impl_ = std::make_unique<Impl>(o, std::move(backing));
}

GPUMemoryManager::GPUMemoryManager(std::string_view pool_size, double fragmentation_threshold,
                                   MemoryManagerOptions options)
    : GPUMemoryManager([&] {
        options.pool_size = parse_size(pool_size, "pool_size");
        options.fragmentation_threshold = fragmentation_threshold;
        return options;
      }()) {}

GPUMemoryManager::~GPUMemoryManager() = default;

MemoryBlock GPUMemoryManager::allocate(std::string_view size, const AllocationOptions& options) {
  return allocate(parse_size(size, "size"), options);
}

MemoryBlock GPUMemoryManager::allocate(std::uint64_t size, const AllocationOptions& options) {
  Impl& m = *impl_;
  if (size == 0) throw InvalidArgument("size: 0 bytes; ask for at least 1 byte");
  if (options.alignment != 0 && !std::has_single_bit(options.alignment)) {
    throw InvalidArgument(fmt::format("alignment: {} is not a power of two; use e.g. 256 or 2MiB", options.alignment));
  }
  auto lock = m.operation();
  const std::uint64_t granule = m.arena.granule();
  const std::uint64_t alignment = std::max(options.alignment, granule);
  const std::uint64_t rounded = (size + granule - 1) & ~(granule - 1);  // the granule is a power of two
  if (rounded > m.arena.capacity() || rounded < size) {
    throw InvalidArgument(fmt::format("size: {} is larger than the whole pool ({}); ask for less or make the pool larger",
                                      format_size(size), format_size(m.arena.capacity())));
  }
  const std::uint32_t t = options.tenant.empty() ? 0 : m.tenant_of(options.tenant);  // no hashing for the unnamed
  Impl::Tenant& tenant = m.tenants[t];
  if (tenant.quota != 0 && tenant.usage + rounded > tenant.quota) {
    ++m.stats.failed_allocations;
    throw OutOfMemoryError(
        fmt::format("tenant '{}' is over its quota: asked for {} with {} of {} in use ({} left); free some of its "
                    "blocks or raise its quota",
                    tenant.name, format_size(rounded), format_size(tenant.usage), format_size(tenant.quota),
                    format_size(tenant.quota - tenant.usage)),
        tenant.name, rounded, tenant.quota, tenant.usage, true);
  }
  const BlockId block = m.find_space(rounded, alignment);
  if (block == TlsfArena::kNoBlock) {
    ++m.stats.failed_allocations;
    throw OutOfMemoryError(
        fmt::format("out of pool memory: asked for {}{} with {} of {} in use; {} free but the largest piece is {}, "
                    "{} is pinned or not evictable",
                    format_size(rounded), tenant.name.empty() ? "" : fmt::format(" for tenant '{}'", tenant.name),
                    format_size(m.arena.used_bytes()), format_size(m.arena.capacity()),
                    format_size(m.arena.free_bytes()), format_size(m.arena.largest_free()),
                    format_size(m.arena.used_bytes() - m.evictable_bytes)),
        tenant.name, rounded, m.arena.capacity(), m.arena.used_bytes(), false);
  }
  // An evictable block gets a slot for its handle to name (growing the table may throw; nothing is
  // charged yet); any other block's handle names its node.
  const bool indirect = options.evictable && !options.pinned;
  std::uint32_t s = kNoSlot;
  if (indirect) {
    try {
      if (!m.spare_slots.empty()) {
        s = m.spare_slots.back();
      } else {
        m.spare_slots.reserve(m.slots.size() + 1);  // so that giving the slot back cannot throw
        m.slots.emplace_back();
        s = static_cast<std::uint32_t>(m.slots.size() - 1);
        m.spare_slots.push_back(s);
      }
    } catch (...) {
      m.arena.free(block);
      throw;
    }
  }
  Impl::Record record;
  record.slack_and_flags = static_cast<std::uint32_t>(rounded - size) | (options.pinned ? Impl::Record::kPinnedForever : 0U) |
                           (indirect ? Impl::Record::kIndirect : 0U);
  record.tenant = static_cast<std::uint16_t>(t);
  record.alignment_log2 = static_cast<std::uint8_t>(std::countr_zero(alignment));
  try {
    m.attach(block, record);  // commits the memory; on failure the block is back in the arena
  } catch (...) {
    ++m.stats.failed_allocations;
    throw;
  }
  // Only now, with the memory in place, is anything charged.
  tenant.usage += rounded;
  m.requested += size;
  ++m.stats.allocations;
  m.note_peaks();
  if (!indirect) return MemoryBlock{TlsfArena::index_of(block), TlsfArena::stamp_of(block), m.id};
  m.spare_slots.pop_back();
  Impl::Slot& slot = m.slots[s];
  slot.live = true;
  slot.block = block;
  m.lru_push_front(s);
  return MemoryBlock{s | MemoryBlock::kSlotHandle, slot.generation, m.id};
}

void GPUMemoryManager::free(MemoryBlock block) {
  Impl& m = *impl_;
  auto lock = m.operation();
  // With many live blocks the handle's arena node and its record are both cache misses, both
  // addressed by the handle: loading them side by side takes one miss's time, not two.
  if ((block.slot & MemoryBlock::kSlotHandle) == 0) {
    m.arena.prefetch(block.slot);
    if (block.slot < m.records.size()) __builtin_prefetch(&m.records[block.slot]);
  }
  const Impl::Located at = m.locate(block);
  const Impl::Record& record = m.record_of(at);
  if (record.pins != 0) {
    throw InvalidArgument("block: cannot free a block while a PinnedBlock holds it; destroy the pin first");
  }
  const std::uint64_t size = m.size_of(at);
  std::uint64_t offset = 0;
  if (at.block != TlsfArena::kNoBlock) {
    // The neighbours the arena merges with: more misses, started together, with the books below done
    // while they load.
    offset = m.arena.offset(at.block);
    m.arena.prefetch_neighbours(at.block);
  }
  m.tenants[record.tenant].usage -= size;
  m.requested -= size - record.slack();
  m.freed_since_compaction += size;
  m.freed_since_check += size;
  if (at.slot != kNoSlot) {
    Impl::Slot& slot = m.slots[at.slot];
    m.lru_remove(at.slot);
    if (at.block == TlsfArena::kNoBlock) {
      m.spilled -= size;
      --m.spilled_blocks;
      slot.spill.reset();
    }
    slot.live = false;
    slot.block = TlsfArena::kNoBlock;
    ++slot.generation;
    m.spare_slots.push_back(at.slot);  // cannot throw: reserved when the slot was made
  }
  if (at.block != TlsfArena::kNoBlock) {
    m.free_in_arena(at.block, offset, size);
  }
  ++m.stats.frees;

  // Amortised upkeep. Compact a fragmented pool when (a) fragmentation exceeds the
  // threshold, (b) the largest free piece has become small (under 1/8 of the pool:
  // a big contiguous tail makes holes harmless), and (c) at least as many bytes were
  // freed since the last compaction as it moved (and 1/16 of the pool), so after the
  // first compaction the bytes copied never exceed the bytes the program frees.
  // (The largest free piece costs a scan of a free list: it is looked at once per 1/64 of the pool
  // freed, not on every free.)
  // (The test that is false on almost every free comes first.)
  const bool look = m.freed_since_check >= m.arena.capacity() / 64 && m.options.compaction &&
                    m.freed_since_compaction >= m.arena.capacity() / 16 &&
                    m.freed_since_compaction >= m.last_compaction_moved;
  if (look) [[unlikely]] {
    m.freed_since_check = 0;
    if (m.arena.largest_free() < m.arena.capacity() / 8 && m.arena.fragmentation() > m.options.fragmentation_threshold) {
      try {
        m.compact_locked();
      } catch (const std::exception& e) {  // the free itself is done; compaction is upkeep, retried later
        log::warn(fmt::format("memory pool: compaction after a free failed ({}); blocks stay where they are", e.what()));
      }
    }
  }
  // Release chunks that have idled long enough: on every free when they are released as soon as they
  // empty (gc_idle 0), else the clock is looked at on every 16th free (reading it on each was a
  // twentieth of a free's time in cache).
  if (--m.frees_until_gc_check == 0) [[unlikely]] {
    m.frees_until_gc_check = m.options.gc_idle.count() == 0 ? 1 : 16;
    if (!m.empty_queue.empty() && m.now() - m.last_gc >= m.options.gc_idle) m.collect(m.options.gc_idle);
  }
}

std::uintptr_t GPUMemoryManager::address(MemoryBlock block) {
  Impl& m = *impl_;
  auto lock = m.operation();
  const Impl::Located at = m.locate(block);
  if (at.slot == kNoSlot) return m.address_of(at.block);
  if (at.block == TlsfArena::kNoBlock) m.restore(at.slot);
  m.touch(at.slot);
  return m.address_of(m.slots[at.slot].block);
}

std::uint64_t GPUMemoryManager::size(MemoryBlock block) const {
  auto lock = impl_->operation();
  return impl_->size_of(impl_->locate(block));
}

bool GPUMemoryManager::resident(MemoryBlock block) const {
  auto lock = impl_->operation();
  return impl_->locate(block).block != TlsfArena::kNoBlock;
}

PinnedBlock GPUMemoryManager::pin(MemoryBlock block) {
  Impl& m = *impl_;
  auto lock = m.operation();
  const Impl::Located at = m.locate(block);
  BlockId resident = at.block;
  if (resident == TlsfArena::kNoBlock) {
    m.restore(at.slot);
    resident = m.slots[at.slot].block;
  }
  Impl::Record& record = m.record_of(resident);
  if (record.pins == UINT8_MAX) {
    throw InvalidArgument(fmt::format("block: already pinned {} times at once; destroy some PinnedBlocks first", UINT8_MAX));
  }
  if (at.slot != kNoSlot) m.lru_remove(at.slot);
  ++record.pins;
  return PinnedBlock(this, block, m.address_of(resident));
}

void GPUMemoryManager::unpin(MemoryBlock block) noexcept {
  Impl& m = *impl_;
  auto lock = m.operation();
  Impl::Located at{};
  // A pinned block cannot be freed or evicted, so its handle still locates it; anything else is ignored.
  if (!m.find(block, at) || at.block == TlsfArena::kNoBlock) return;
  Impl::Record& record = m.record_of(at.block);
  if (record.pins == 0) return;
  if (--record.pins == 0 && at.slot != kNoSlot && m.evictable_now(m.slots[at.slot])) m.lru_push_front(at.slot);
}

void GPUMemoryManager::set_quota(const std::string& tenant, std::uint64_t bytes) {
  auto lock = impl_->operation();
  impl_->tenants[impl_->tenant_of(tenant)].quota = bytes;
}

std::optional<std::uint64_t> GPUMemoryManager::quota(const std::string& tenant) const {
  auto lock = impl_->operation();
  auto it = impl_->tenant_index.find(tenant);
  if (it == impl_->tenant_index.end() || impl_->tenants[it->second].quota == 0) return std::nullopt;
  return impl_->tenants[it->second].quota;
}

std::uint64_t GPUMemoryManager::tenant_usage(const std::string& tenant) const {
  auto lock = impl_->operation();
  auto it = impl_->tenant_index.find(tenant);
  return it == impl_->tenant_index.end() ? 0 : impl_->tenants[it->second].usage;
}

std::uint64_t GPUMemoryManager::compact() {
  auto lock = impl_->operation();
  return impl_->compact_locked();
}

std::uint64_t GPUMemoryManager::collect_garbage(std::optional<std::chrono::milliseconds> idle) {
  auto lock = impl_->operation();
  return impl_->collect(idle.value_or(impl_->options.gc_idle));
}

MemoryStats GPUMemoryManager::get_stats() const {
  const Impl& m = *impl_;
  std::lock_guard lock(m.mutex);
  MemoryStats s = m.stats;
  s.pool_size = m.arena.capacity();
  s.used = m.arena.used_bytes();
  s.free = m.arena.free_bytes();
  s.reserved = m.committed_chunks * m.chunk;
  s.requested = m.requested;
  s.largest_free_block = m.arena.largest_free();
  s.fragmentation = m.arena.fragmentation();
  s.spilled_bytes = m.spilled;
  s.live_blocks = m.arena.live_blocks() + m.spilled_blocks;
  return s;
}

const MemoryManagerOptions& GPUMemoryManager::options() const noexcept { return impl_->options; }
BackingKind GPUMemoryManager::backing_kind() const noexcept { return impl_->backing->kind(); }

void GPUMemoryManager::check_invariants() const {
  const Impl& m = *impl_;
  std::lock_guard lock(m.mutex);
  m.arena.check_invariants();
  std::uint64_t resident = 0;
  std::uint64_t spilled = 0;
  std::uint64_t spilled_blocks = 0;
  std::uint64_t evictable = 0;
  std::vector<std::uint64_t> usage(m.tenants.size(), 0);
  std::vector<std::uint64_t> used_chunks;  // chunks some block lies on, worked out afresh
  std::vector<std::uint32_t> slot_of_node;  // arena node -> the slot naming it (evictable blocks)
  for (std::uint32_t s = 0; s < m.slots.size(); ++s) {
    const Impl::Slot& slot = m.slots[s];
    if (!slot.live) {
      if (slot.in_lru || slot.block != TlsfArena::kNoBlock) throw std::logic_error("a free slot holds a block");
      continue;
    }
    if (slot.block == TlsfArena::kNoBlock) {
      spilled += slot.spilled_size;
      ++spilled_blocks;
      usage[slot.spilled_record.tenant] += slot.spilled_size;
      if (slot.in_lru) throw std::logic_error("a spilled block is in the LRU list");
      continue;
    }
    if (!m.arena.holds(slot.block)) throw std::logic_error("a slot names a block the arena does not hold");
    const std::uint32_t node = TlsfArena::index_of(slot.block);
    if (slot_of_node.size() <= node) slot_of_node.resize(node + 1, kNoSlot);
    if (slot_of_node[node] != kNoSlot) throw std::logic_error("two slots name one block");
    slot_of_node[node] = s;
    if (slot.in_lru != m.evictable_now(slot)) throw std::logic_error("LRU membership is wrong for a block");
    if (slot.in_lru) evictable += m.arena.size(slot.block);
  }
  std::uint64_t lru_bytes = 0;
  for (std::uint32_t s = m.lru_head; s != kNoSlot; s = m.slots[s].lru_next) lru_bytes += m.arena.size(m.slots[s].block);
  if (lru_bytes != evictable) throw std::logic_error("the LRU list does not hold exactly the evictable blocks");
  for (BlockId b = m.arena.first_block(); b != TlsfArena::kNoBlock; b = m.arena.next_block(b)) {
    if (m.arena.is_free(b)) continue;
    const Impl::Record& record = m.record_of(b);
    const std::uint32_t node = TlsfArena::index_of(b);
    const bool named_by_slot = node < slot_of_node.size() && slot_of_node[node] != kNoSlot;
    if (record.indirect() != named_by_slot) throw std::logic_error("a block's record and the slots disagree on its handle");
    if (record.tenant >= m.tenants.size()) throw std::logic_error("a block's tenant does not exist");
    const std::uint64_t size = m.arena.size(b);
    if (record.slack() >= m.arena.granule()) throw std::logic_error("a block's slack is a granule or more");
    usage[record.tenant] += size;
    resident += size;
    const std::uint64_t off = m.arena.offset(b);
    if (off % record.alignment() != 0) {
      throw std::logic_error(fmt::format("a block at offset {} breaks its alignment {}", off, record.alignment()));
    }
    const auto [first, last] = m.chunks_under(off, size);
    for (std::uint64_t c = first; c <= last; ++c) {
      if (!m.chunks.committed(c)) throw std::logic_error("a live block lies on an uncommitted chunk");
      if (used_chunks.empty() || used_chunks.back() != c) used_chunks.push_back(c);  // blocks come in order
    }
  }
  if (resident != m.arena.used_bytes()) throw std::logic_error("resident blocks do not add up to the arena's used bytes");
  if (spilled != m.spilled || spilled_blocks != m.spilled_blocks) throw std::logic_error("spilled bytes are wrong");
  if (evictable != m.evictable_bytes) throw std::logic_error("evictable bytes are wrong");
  for (std::size_t t = 0; t < usage.size(); ++t) {
    if (usage[t] != m.tenants[t].usage) throw std::logic_error(fmt::format("tenant '{}' usage is wrong", m.tenants[t].name));
  }
  // Exactly the chunks some block lies on are marked used (the rest lie wholly in free space).
  for (const std::uint64_t c : used_chunks) {
    if (!m.chunks.used(c)) throw std::logic_error(fmt::format("chunk {} holds a block but is not marked used", c));
  }
  m.chunks.for_each_touched([&](std::uint64_t c) {
    if (m.chunks.used(c) && !std::binary_search(used_chunks.begin(), used_chunks.end(), c)) {
      throw std::logic_error(fmt::format("chunk {} is marked used but no block lies on it", c));
    }
  });
}

}  // namespace apt::vgpu::memory
