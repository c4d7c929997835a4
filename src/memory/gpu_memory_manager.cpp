#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/memory/gpu_memory_manager.hpp>
#include <apt/vgpu/memory/tlsf_arena.hpp>

#include <atomic>
#include <bit>
#include <deque>
#include <fmt/format.h>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace apt::vgpu::memory {
namespace {

using Clock = std::chrono::steady_clock;
using BlockId = TlsfArena::BlockId;
constexpr std::uint32_t kNoSlot = UINT32_MAX;

std::atomic<std::uint32_t> g_next_manager_id{1};

}  // namespace

namespace {

// Per-chunk state of the lazy backing, in pages allocated on first touch: a pool
// of 40 TB in 2 MiB chunks is 19 million chunks, which an eager array would spend
// ~250 MB describing before a single allocation; untouched pages cost one pointer.
class ChunkTable {
 public:
  struct Chunk {
    std::uint32_t refs = 0;   // live blocks on the chunk
    bool committed = false;   // backed by memory now
    bool queued = false;      // in the empty queue (at most once)
    std::chrono::steady_clock::time_point empty_since{};
  };

  explicit ChunkTable(std::uint64_t count) : count_(count), pages_((count + kPageSize - 1) / kPageSize) {}

  [[nodiscard]] std::uint64_t size() const noexcept { return count_; }
  // The chunk's state, its page allocated on first touch.
  Chunk& at(std::uint64_t chunk) {
    auto& page = pages_[chunk / kPageSize];
    if (!page) page = std::make_unique<Chunk[]>(kPageSize);
    return page[chunk % kPageSize];
  }
  // The chunk's state, or an empty one when its page was never touched.
  [[nodiscard]] const Chunk& peek(std::uint64_t chunk) const {
    static const Chunk kUntouched{};
    const auto& page = pages_[chunk / kPageSize];
    return page ? page[chunk % kPageSize] : kUntouched;
  }
  // Calls f(index, chunk) for chunks first..last, touching their pages; a page at a time, so a
  // block over many chunks costs one lookup per 4096 of them, not one per chunk.
  template <class F>
  void for_range(std::uint64_t first, std::uint64_t last, F&& f) {
    for (std::uint64_t c = first; c <= last;) {
      auto& page = pages_[c / kPageSize];
      if (!page) page = std::make_unique<Chunk[]>(kPageSize);
      const std::uint64_t end = std::min(last, (c / kPageSize + 1) * kPageSize - 1);
      Chunk* entries = page.get();
      for (; c <= end; ++c) f(c, entries[c % kPageSize]);
    }
  }
  // The same without touching pages: chunks on an untouched page are passed as empty ones.
  template <class F>
  void peek_range(std::uint64_t first, std::uint64_t last, F&& f) const {
    static const Chunk kUntouched{};
    for (std::uint64_t c = first; c <= last;) {
      const auto& page = pages_[c / kPageSize];
      const std::uint64_t end = std::min(last, (c / kPageSize + 1) * kPageSize - 1);
      for (; c <= end; ++c) f(c, page ? page[c % kPageSize] : kUntouched);
    }
  }
  // Calls f(index, chunk) for every chunk on a touched page.
  template <class F>
  void for_each_touched(F&& f) const {
    for (std::uint64_t p = 0; p < pages_.size(); ++p) {
      if (!pages_[p]) continue;
      for (std::uint64_t i = 0; i < kPageSize && p * kPageSize + i < count_; ++i) f(p * kPageSize + i, pages_[p][i]);
    }
  }

 private:
  static constexpr std::uint64_t kPageSize = 4096;
  std::uint64_t count_;
  std::vector<std::unique_ptr<Chunk[]>> pages_;
};

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
  struct Slot {
    std::uint32_t generation = 1;
    bool live = false;
    BlockId block = TlsfArena::kNoBlock;  // kNoBlock while spilled
    std::uint64_t size = 0;
    std::uint64_t requested = 0;
    std::uint64_t alignment = 0;
    std::uint32_t tenant = 0;
    bool evictable = false;
    bool pinned_forever = false;
    std::uint32_t pins = 0;
    bool in_lru = false;
    std::uint32_t lru_prev = kNoSlot;
    std::uint32_t lru_next = kNoSlot;
    std::unique_ptr<std::byte[]> spill;
  };
  struct Tenant {
    std::string name;
    std::uint64_t quota = 0;  // 0: none
    std::uint64_t usage = 0;
  };

  MemoryManagerOptions options;
  std::uint32_t id = g_next_manager_id.fetch_add(1);
  mutable std::mutex mutex;
  std::unique_ptr<Backing> backing;
  TlsfArena arena;
  std::vector<std::uint32_t> block_owner;  // arena block id -> slot
  std::vector<Slot> slots;
  std::vector<std::uint32_t> spare_slots;
  std::vector<Tenant> tenants{Tenant{}};  // index 0: the unnamed tenant
  std::unordered_map<std::string, std::uint32_t> tenant_index{{"", 0}};

  // LRU of resident, evictable, unpinned blocks: head = most recent.
  std::uint32_t lru_head = kNoSlot;
  std::uint32_t lru_tail = kNoSlot;
  std::uint64_t evictable_bytes = 0;

  // Lazy backing: live blocks per chunk, and which chunks are committed.
  std::uint64_t chunk = 0;
  int chunk_shift = 0;
  ChunkTable chunks{0};
  std::deque<std::uint64_t> empty_queue;  // chunks that became empty, oldest first (may hold stale entries)
  std::uint64_t committed_chunks = 0;
  Clock::time_point last_gc = Clock::now();

  std::uint64_t requested = 0;
  std::uint64_t spilled = 0;
  std::uint64_t freed_since_compaction = 0;
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
  [[nodiscard]] std::unique_lock<std::mutex> operation() {
    std::unique_lock lock(mutex);
    operation_clock.reset();
    return lock;
  }
  // Queues chunk `c`, just emptied, for release once idle (each chunk at most once: a chunk emptied
  // again while queued keeps its place with the later time).
  void queue_empty(std::uint64_t c, ChunkTable::Chunk& state) {
    state.empty_since = now();
    if (state.queued) return;
    state.queued = true;
    empty_queue.push_back(c);
  }

  Impl(const MemoryManagerOptions& o, std::unique_ptr<Backing> b)
      : options(o), backing(std::move(b)), arena(o.pool_size, arena_granule(o)) {
    chunk = backing->chunk_size();
    chunk_shift = std::countr_zero(chunk);
    const std::uint64_t n = (arena.capacity() + chunk - 1) >> chunk_shift;
    chunks = ChunkTable(n);
    if (!options.lazy) commit_run(0, n);
  }

  // ---- handles ----
  Slot& checked(MemoryBlock b) {
    if (!b.valid()) throw InvalidArgument("block: empty handle (default-constructed MemoryBlock)");
    if (b.manager != id) {
      throw InvalidArgument("block: the handle belongs to another GPUMemoryManager; free it where it was allocated");
    }
    if (b.slot >= slots.size() || !slots[b.slot].live || slots[b.slot].generation != b.generation) {
      throw InvalidArgument("block: the handle was already freed (double free) or never allocated here");
    }
    return slots[b.slot];
  }
  const Slot& checked(MemoryBlock b) const { return const_cast<Impl*>(this)->checked(b); }

  std::uint32_t tenant_of(const std::string& name) {
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
    evictable_bytes += slot.size;
  }
  void lru_remove(std::uint32_t s) {
    Slot& slot = slots[s];
    if (!slot.in_lru) return;
    if (slot.lru_prev != kNoSlot) slots[slot.lru_prev].lru_next = slot.lru_next; else lru_head = slot.lru_next;
    if (slot.lru_next != kNoSlot) slots[slot.lru_next].lru_prev = slot.lru_prev; else lru_tail = slot.lru_prev;
    slot.in_lru = false;
    slot.lru_prev = slot.lru_next = kNoSlot;
    evictable_bytes -= slot.size;
  }
  [[nodiscard]] bool evictable_now(const Slot& slot) const {
    return slot.evictable && !slot.pinned_forever && slot.pins == 0 && slot.block != TlsfArena::kNoBlock;
  }
  void touch(std::uint32_t s) {
    if (slots[s].in_lru && lru_head != s) {
      lru_remove(s);
      lru_push_front(s);
    }
  }

  // ---- lazy backing ----
  void commit_run(std::uint64_t first, std::uint64_t count) {
    backing->commit(first << chunk_shift, count << chunk_shift);
    for (std::uint64_t c = first; c < first + count; ++c) chunks.at(c).committed = true;
    committed_chunks += count;
    stats.chunks_committed += count;
    ++stats.commit_calls;
  }
  // Adds a reference to every chunk under [offset, offset + size), committing as needed.
  // Strong guarantee: when the backing fails (cuMemCreate out of memory, mprotect
  // ENOMEM) no reference is added, and chunks this call did commit are handed to
  // the idle collector, so nothing stays committed for nobody.
  void place(std::uint64_t offset, std::uint64_t size) {
    stats.peak_address = std::max(stats.peak_address, offset + size);
    const std::uint64_t first = offset >> chunk_shift;
    const std::uint64_t last = (offset + size - 1) >> chunk_shift;
    // The uncommitted runs, found without touching pages, then committed one by one; when one
    // fails, those this call did commit go to the idle collector.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
    std::uint64_t run_start = 0;
    std::uint64_t run = 0;
    chunks.peek_range(first, last, [&](std::uint64_t c, const ChunkTable::Chunk& state) {
      if (!state.committed) {
        if (run == 0) run_start = c;
        ++run;
      } else if (run != 0) {
        runs.emplace_back(run_start, run);
        run = 0;
      }
    });
    if (run != 0) runs.emplace_back(run_start, run);
    std::size_t committed = 0;  // runs[0, committed) are committed
    try {
      for (; committed < runs.size(); ++committed) commit_run(runs[committed].first, runs[committed].second);
    } catch (...) {
      for (std::size_t i = 0; i < committed; ++i) {
        for (std::uint64_t c = runs[i].first; c < runs[i].first + runs[i].second; ++c) queue_empty(c, chunks.at(c));
      }
      throw;
    }
    chunks.for_range(first, last, [](std::uint64_t, ChunkTable::Chunk& state) { ++state.refs; });
    note_peaks();
  }
  void unplace(std::uint64_t offset, std::uint64_t size) {
    const std::uint64_t first = offset >> chunk_shift;
    const std::uint64_t last = (offset + size - 1) >> chunk_shift;
    chunks.for_range(first, last, [this](std::uint64_t c, ChunkTable::Chunk& state) {
      if (--state.refs == 0) queue_empty(c, state);
    });
  }
  std::uint64_t collect(std::chrono::milliseconds idle) {
    const auto at = now();
    last_gc = at;
    if (!options.lazy) {
      for (std::uint64_t c : empty_queue) chunks.at(c).queued = false;
      empty_queue.clear();
      return 0;
    }
    std::uint64_t released = 0;
    // Each entry once: a chunk emptied again while queued sits ahead of older ones with a later time;
    // not yet idle, it goes to the back instead of holding up the rest.
    for (std::size_t left = empty_queue.size(); left > 0 && !empty_queue.empty(); --left) {
      const std::uint64_t c = empty_queue.front();
      empty_queue.pop_front();
      ChunkTable::Chunk& state = chunks.at(c);
      if (state.refs != 0 || !state.committed) {  // reused or already released
        state.queued = false;
        continue;
      }
      if (at - state.empty_since < idle) {
        empty_queue.push_back(c);
        continue;
      }
      state.queued = false;
      backing->decommit(c << chunk_shift, chunk);
      state.committed = false;
      --committed_chunks;
      ++stats.chunks_released;
      ++stats.release_calls;
      released += chunk;
    }
    return released;
  }

  void note_peaks() {
    stats.peak_used = std::max(stats.peak_used, arena.used_bytes());
    stats.peak_reserved = std::max(stats.peak_reserved, committed_chunks * chunk);
    stats.peak_requested = std::max(stats.peak_requested, requested);
  }

  // ---- compaction ----
  [[nodiscard]] bool movable(BlockId b) const {
    const Slot& slot = slots[block_owner[TlsfArena::index_of(b)]];
    return !slot.pinned_forever && slot.pins == 0;
  }
  std::uint64_t compact_locked() {
    std::uint64_t moved = 0;
    for (BlockId b = arena.first_block(); b != TlsfArena::kNoBlock; b = arena.next_block(b)) {
      if (arena.is_free(b) || !movable(b) || !arena.can_slide_down(b)) continue;
      const std::uint64_t from = arena.offset(b);
      const std::uint64_t size = arena.size(b);
      const std::uint64_t to = arena.offset(arena.prev_block(b));
      // A block keeps the alignment it was allocated with: it slides only to an offset that has it
      // (sliding a 2 MiB-aligned block down to offset 256 once broke it).
      if (to % slots[block_owner[TlsfArena::index_of(b)]].alignment != 0) continue;
      place(to, size);  // the destination's chunks may have been released while empty
      try {
        backing->move(to, from, size);
      } catch (...) {
        unplace(to, size);  // nothing moved: the block stays where it was
        throw;
      }
      arena.slide_down(b);
      unplace(from, size);
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
    // The contents first: if the host buffer or the copy fails, the block stays resident.
    std::unique_ptr<std::byte[]> spill;
    if (backing->holds_data()) {
      spill = std::make_unique<std::byte[]>(slot.size);
      backing->copy_to_host(spill.get(), offset, slot.size);
    }
    slot.spill = std::move(spill);
    lru_remove(s);
    unplace(offset, slot.size);
    arena.free(slot.block);
    slot.block = TlsfArena::kNoBlock;
    spilled += slot.size;
    ++stats.evictions;
  }

  // Finds room for `size`: directly, then by compaction, then by evicting LRU blocks.
  std::optional<BlockId> find_space(std::uint64_t size, std::uint64_t alignment) {
    if (auto b = arena.allocate(size, alignment)) return b;
    const std::uint64_t slack = alignment > arena.granule() ? alignment : 0;
    if (options.compaction && arena.free_bytes() >= size + slack) {
      compact_locked();
      if (auto b = arena.allocate(size, alignment)) return b;
    }
    if (!options.eviction || arena.free_bytes() + evictable_bytes < size) return std::nullopt;
    while (lru_tail != kNoSlot) {
      evict(lru_tail);
      if (auto b = arena.allocate(size, alignment)) return b;
      if (options.compaction && arena.free_bytes() >= size + slack) {
        compact_locked();
        if (auto b = arena.allocate(size, alignment)) return b;
      }
    }
    return std::nullopt;
  }

  // Gives slot `s` the arena block `b`: commits its chunks, then records it. When
  // that fails the block goes back to the arena and the slot is unchanged.
  void attach(std::uint32_t s, BlockId b) {
    Slot& slot = slots[s];
    try {
      const std::uint32_t index = TlsfArena::index_of(b);
      if (block_owner.size() <= index) block_owner.resize(static_cast<std::size_t>(index) * 2 + 16, kNoSlot);
      place(arena.offset(b), slot.size);
    } catch (...) {
      arena.free(b);
      throw;
    }
    block_owner[TlsfArena::index_of(b)] = s;
    slot.block = b;
    if (evictable_now(slot)) lru_push_front(s);
  }

  void restore(std::uint32_t s) {
    Slot& slot = slots[s];
    auto b = find_space(slot.size, slot.alignment);
    if (!b) {
      throw OutOfMemoryError(
          fmt::format("cannot restore a spilled block of {}: the pool has {} free (largest piece {}) and nothing more "
                      "can be evicted; free or unpin blocks first",
                      format_size(slot.size), format_size(arena.free_bytes()), format_size(arena.largest_free())),
          tenants[slot.tenant].name, slot.size, arena.capacity(), arena.used_bytes(), false);
    }
    attach(s, *b);
    if (slot.spill) {
      try {
        backing->copy_from_host(arena.offset(*b), slot.spill.get(), slot.size);
      } catch (...) {  // the contents stay in the spill buffer; the block stays spilled
        lru_remove(s);
        unplace(arena.offset(*b), slot.size);
        arena.free(*b);
        block_owner[TlsfArena::index_of(*b)] = kNoSlot;
        slot.block = TlsfArena::kNoBlock;
        throw;
      }
    }
    slot.spill.reset();
    spilled -= slot.size;
    ++stats.restores;
  }

  std::uintptr_t address_of(const Slot& slot) const { return backing->base() + arena.offset(slot.block); }
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
  const std::uint64_t rounded = (size + granule - 1) / granule * granule;
  if (rounded > m.arena.capacity() || rounded < size) {
    throw InvalidArgument(fmt::format("size: {} is larger than the whole pool ({}); ask for less or make the pool larger",
                                      format_size(size), format_size(m.arena.capacity())));
  }
  const std::uint32_t t = m.tenant_of(options.tenant);
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
  const auto block = m.find_space(rounded, alignment);
  if (!block) {
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
  // A slot for the block (growing the table may throw; nothing is charged yet).
  std::uint32_t s = 0;
  const bool reused = !m.spare_slots.empty();
  try {
    if (reused) {
      s = m.spare_slots.back();
    } else {
      s = static_cast<std::uint32_t>(m.slots.size());
      m.slots.emplace_back();
    }
  } catch (...) {
    m.arena.free(*block);
    throw;
  }
  Impl::Slot& slot = m.slots[s];
  slot.size = rounded;
  slot.alignment = alignment;
  slot.evictable = options.evictable;
  slot.pinned_forever = options.pinned;
  slot.pins = 0;
  try {
    m.attach(s, *block);  // commits the memory; on failure the block is back in the arena
  } catch (...) {
    if (!reused) m.slots.pop_back();
    ++m.stats.failed_allocations;
    throw;
  }
  if (reused) m.spare_slots.pop_back();
  // Only now, with the memory in place, is anything charged.
  slot.live = true;
  slot.requested = size;
  slot.tenant = t;
  tenant.usage += rounded;
  m.requested += size;
  ++m.stats.allocations;
  m.note_peaks();  // again: place() ran before `requested` included this block
  return MemoryBlock{s, slot.generation, m.id};
}

void GPUMemoryManager::free(MemoryBlock block) {
  Impl& m = *impl_;
  auto lock = m.operation();
  Impl::Slot& slot = m.checked(block);
  if (slot.pins != 0) {
    throw InvalidArgument("block: cannot free a block while a PinnedBlock holds it; destroy the pin first");
  }
  m.lru_remove(block.slot);
  if (slot.block != TlsfArena::kNoBlock) {
    m.unplace(m.arena.offset(slot.block), slot.size);
    m.arena.free(slot.block);
    m.block_owner[TlsfArena::index_of(slot.block)] = kNoSlot;
  } else {
    m.spilled -= slot.size;
  }
  m.tenants[slot.tenant].usage -= slot.size;
  m.requested -= slot.requested;
  m.freed_since_compaction += slot.size;
  slot.spill.reset();
  slot.live = false;
  slot.block = TlsfArena::kNoBlock;
  ++slot.generation;
  m.spare_slots.push_back(block.slot);
  ++m.stats.frees;

  // Amortised upkeep. Compact a fragmented pool when (a) fragmentation exceeds the
  // threshold, (b) the largest free piece has become small (under 1/8 of the pool:
  // a big contiguous tail makes holes harmless), and (c) at least as many bytes were
  // freed since the last compaction as it moved (and 1/16 of the pool), so after the
  // first compaction the bytes copied never exceed the bytes the program frees.
  if (m.options.compaction && m.freed_since_compaction >= m.arena.capacity() / 16 &&
      m.freed_since_compaction >= m.last_compaction_moved &&
      m.arena.largest_free() < m.arena.capacity() / 8 &&
      m.arena.fragmentation() > m.options.fragmentation_threshold) {
    try {
      m.compact_locked();
    } catch (const std::exception& e) {  // the free itself is done; compaction is upkeep, retried later
      log::warn(fmt::format("memory pool: compaction after a free failed ({}); blocks stay where they are", e.what()));
    }
  }
  // Release chunks that have idled long enough.
  if (!m.empty_queue.empty() && m.now() - m.last_gc >= m.options.gc_idle) m.collect(m.options.gc_idle);
}

std::uintptr_t GPUMemoryManager::address(MemoryBlock block) {
  Impl& m = *impl_;
  auto lock = m.operation();
  Impl::Slot& slot = m.checked(block);
  if (slot.block == TlsfArena::kNoBlock) m.restore(block.slot);
  m.touch(block.slot);
  return m.address_of(m.slots[block.slot]);
}

std::uint64_t GPUMemoryManager::size(MemoryBlock block) const {
  auto lock = impl_->operation();
  return impl_->checked(block).size;
}

bool GPUMemoryManager::resident(MemoryBlock block) const {
  auto lock = impl_->operation();
  return impl_->checked(block).block != TlsfArena::kNoBlock;
}

PinnedBlock GPUMemoryManager::pin(MemoryBlock block) {
  Impl& m = *impl_;
  auto lock = m.operation();
  Impl::Slot& slot = m.checked(block);
  if (slot.block == TlsfArena::kNoBlock) m.restore(block.slot);
  Impl::Slot& restored = m.slots[block.slot];
  m.lru_remove(block.slot);
  ++restored.pins;
  return PinnedBlock(this, block, m.address_of(restored));
}

void GPUMemoryManager::unpin(MemoryBlock block) noexcept {
  Impl& m = *impl_;
  auto lock = m.operation();
  if (block.slot >= m.slots.size()) return;
  Impl::Slot& slot = m.slots[block.slot];
  if (!slot.live || slot.generation != block.generation || slot.pins == 0) return;
  if (--slot.pins == 0 && m.evictable_now(slot)) m.lru_push_front(block.slot);
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
  s.live_blocks = m.slots.size() - m.spare_slots.size();
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
  std::uint64_t evictable = 0;
  std::vector<std::uint64_t> usage(m.tenants.size(), 0);
  std::map<std::uint64_t, std::uint32_t> refs;  // chunk -> live blocks on it, counted afresh
  for (std::uint32_t s = 0; s < m.slots.size(); ++s) {
    const Impl::Slot& slot = m.slots[s];
    if (!slot.live) continue;
    usage[slot.tenant] += slot.size;
    if (slot.block == TlsfArena::kNoBlock) {
      spilled += slot.size;
      if (slot.in_lru) throw std::logic_error("a spilled block is in the LRU list");
      continue;
    }
    if (m.block_owner[TlsfArena::index_of(slot.block)] != s) throw std::logic_error("block owner map disagrees with a slot");
    if (m.arena.size(slot.block) != slot.size) throw std::logic_error("slot size disagrees with its arena block");
    resident += slot.size;
    if (slot.in_lru != m.evictable_now(slot)) throw std::logic_error("LRU membership is wrong for a block");
    if (slot.in_lru) evictable += slot.size;
    const std::uint64_t off = m.arena.offset(slot.block);
    if (off % slot.alignment != 0) {
      throw std::logic_error(fmt::format("a block at offset {} breaks its alignment {}", off, slot.alignment));
    }
    for (std::uint64_t c = off >> m.chunk_shift; c <= (off + slot.size - 1) >> m.chunk_shift; ++c) {
      ++refs[c];
      if (!m.chunks.peek(c).committed) throw std::logic_error("a live block lies on an uncommitted chunk");
    }
  }
  if (resident != m.arena.used_bytes()) throw std::logic_error("resident blocks do not add up to the arena's used bytes");
  if (spilled != m.spilled) throw std::logic_error("spilled bytes are wrong");
  if (evictable != m.evictable_bytes) throw std::logic_error("evictable bytes are wrong");
  for (std::size_t t = 0; t < usage.size(); ++t) {
    if (usage[t] != m.tenants[t].usage) throw std::logic_error(fmt::format("tenant '{}' usage is wrong", m.tenants[t].name));
  }
  bool refs_agree = true;
  m.chunks.for_each_touched([&](std::uint64_t c, const ChunkTable::Chunk& state) {
    const auto it = refs.find(c);
    if (state.refs != (it == refs.end() ? 0U : it->second)) refs_agree = false;
  });
  for (const auto& [c, count] : refs) {
    if (m.chunks.peek(c).refs != count) refs_agree = false;
  }
  if (!refs_agree) throw std::logic_error("chunk reference counts are wrong");
}

}  // namespace apt::vgpu::memory
