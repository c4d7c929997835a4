#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/memory/gpu_memory_manager.hpp>

#include <gtest/gtest.h>

#include <fstream>

#include <cstring>
#include <random>
#include <set>
#include <thread>

namespace apt::vgpu::memory {
namespace {

constexpr std::uint64_t kMiB = 1ULL << 20U;

MemoryManagerOptions host_pool(std::uint64_t size, bool compaction = true, bool eviction = true) {
  MemoryManagerOptions o;
  o.pool_size = size;
  o.backing = BackingKind::host;
  o.compaction = compaction;
  o.eviction = eviction;
  return o;
}

AllocationOptions aligned(std::uint64_t alignment) {
  AllocationOptions o;
  o.alignment = alignment;
  return o;
}
AllocationOptions for_tenant(const char* name) {
  AllocationOptions o;
  o.tenant = name;
  return o;
}
AllocationOptions evictable() {
  AllocationOptions o;
  o.evictable = true;
  return o;
}
AllocationOptions pinned() {
  AllocationOptions o;
  o.pinned = true;
  return o;
}
MemoryManagerOptions pool_options(std::uint64_t size, BackingKind backing, std::uint64_t alignment = 256) {
  MemoryManagerOptions o;
  o.pool_size = size;
  o.backing = backing;
  o.alignment = alignment;
  return o;
}

void fill(GPUMemoryManager& m, MemoryBlock b, std::uint8_t seed) {
  auto* p = reinterpret_cast<std::uint8_t*>(m.address(b));
  const std::uint64_t n = m.size(b);
  for (std::uint64_t i = 0; i < n; ++i) p[i] = static_cast<std::uint8_t>(seed + i * 7);
}

bool intact(GPUMemoryManager& m, MemoryBlock b, std::uint8_t seed) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(m.address(b));
  const std::uint64_t n = m.size(b);
  for (std::uint64_t i = 0; i < n; ++i) {
    if (p[i] != static_cast<std::uint8_t>(seed + i * 7)) return false;
  }
  return true;
}

TEST(GPUMemoryManager, SeedApi) {
  GPUMemoryManager pool("80GB", 0.1, pool_options(0, BackingKind::none));
  const MemoryBlock block = pool.allocate("16GB");
  MemoryStats stats = pool.get_stats();
  EXPECT_EQ(stats.pool_size, 80'000'000'000ULL);
  EXPECT_EQ(stats.used, 16'000'000'000ULL);
  EXPECT_EQ(stats.free, 64'000'000'000ULL);
  EXPECT_EQ(stats.requested, 16'000'000'000ULL);
  EXPECT_EQ(stats.allocations, 1U);
  pool.free(block);
  stats = pool.get_stats();
  EXPECT_EQ(stats.used, 0U);
  EXPECT_EQ(stats.frees, 1U);
  EXPECT_EQ(stats.peak_used, 16'000'000'000ULL);
  EXPECT_EQ(stats.largest_free_block, 80'000'000'000ULL);
  EXPECT_EQ(stats.fragmentation, 0.0);
}

std::uint64_t resident_kib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
  }
  return 0;
}

TEST(GPUMemoryManager, AHugeLazyPoolCostsLittleUntilUsed) {
  // 40 TB in 2 MiB chunks is 19 million chunks: described eagerly that was ~250 MB
  // before the first allocation. Chunk state now comes in pages touched on use.
  const std::uint64_t before = resident_kib();
  GPUMemoryManager pool("40TB", 0.1, pool_options(0, BackingKind::none));
  const MemoryBlock first = pool.allocate("16GB");
  const MemoryBlock second = pool.allocate("1MB");
  EXPECT_LT(resident_kib() - before, 32U * 1024) << "KiB grown by a 40 TB pool holding 16 GB";
  EXPECT_EQ(pool.get_stats().pool_size, 40'000'000'000'000ULL);
  pool.free(first);
  pool.free(second);
  EXPECT_EQ(pool.get_stats().used, 0U);
}

TEST(GPUMemoryManager, CompactionKeepsEveryBlocksAlignment) {
  GPUMemoryManager pool("64MiB", 0.1, pool_options(0, BackingKind::none));
  const MemoryBlock small = pool.allocate(256);
  AllocationOptions two_mib;
  two_mib.alignment = 2 * kMiB;
  const MemoryBlock aligned = pool.allocate(1 * kMiB, two_mib);
  EXPECT_EQ(pool.address(aligned), 2 * kMiB);
  (void)pool.compact();  // once slid the block down into the gap above `small`, to offset 256
  EXPECT_EQ(pool.address(aligned) % (2 * kMiB), 0U);
  pool.check_invariants();
  pool.free(small);  // now the gap starts at 0, which has the alignment: the block may slide there
  (void)pool.compact();
  EXPECT_EQ(pool.address(aligned), 0U);
  pool.check_invariants();
}

TEST(GPUMemoryManager, HostMemoryIsUsableAndAligned) {
  GPUMemoryManager m(host_pool(64 * kMiB));
  const MemoryBlock a = m.allocate(1000);
  const MemoryBlock b = m.allocate(5000, aligned(4096));
  EXPECT_EQ(m.address(a) % 256, 0U);
  EXPECT_EQ(m.address(b) % 4096, 0U);
  fill(m, a, 1);
  fill(m, b, 2);
  EXPECT_TRUE(intact(m, a, 1));
  EXPECT_TRUE(intact(m, b, 2));
  m.check_invariants();
}

TEST(GPUMemoryManager, BadInputIsRejectedAndChangesNothing) {
  GPUMemoryManager m(host_pool(16 * kMiB));
  const MemoryBlock keep = m.allocate(kMiB);
  const MemoryStats before = m.get_stats();
  EXPECT_THROW((void)m.allocate(0), InvalidArgument);
  EXPECT_THROW((void)m.allocate(17 * kMiB), InvalidArgument);
  EXPECT_THROW((void)m.allocate("12 parsecs"), InvalidArgument);
  EXPECT_THROW((void)m.allocate("-5MB"), InvalidArgument);
  EXPECT_THROW((void)m.allocate(100, aligned(3000)), InvalidArgument);
  EXPECT_THROW(m.free(MemoryBlock{}), InvalidArgument);
  GPUMemoryManager other(host_pool(16 * kMiB));
  const MemoryBlock foreign = other.allocate(kMiB);
  EXPECT_THROW(m.free(foreign), InvalidArgument);
  EXPECT_THROW((void)m.address(foreign), InvalidArgument);
  const MemoryBlock gone = m.allocate(kMiB);
  m.free(gone);
  try {
    m.free(gone);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("double free"), std::string::npos) << e.what();
  }
  const MemoryStats after = m.get_stats();
  EXPECT_EQ(after.used, before.used);
  EXPECT_EQ(after.live_blocks, 1U);
  EXPECT_TRUE(m.resident(keep));
  m.check_invariants();

  EXPECT_THROW(GPUMemoryManager(pool_options(0, BackingKind::host)), InvalidArgument);
  EXPECT_THROW(GPUMemoryManager("1GB", 1.5), InvalidArgument);
  EXPECT_THROW(GPUMemoryManager("1GB", 0.1, pool_options(0, BackingKind::host, 100)), InvalidArgument);
  EXPECT_THROW(GPUMemoryManager("lots"), InvalidArgument);
}

// A handle names its block's allocator node (an evictable block's, a slot): a stale handle must not
// reach the block that reuses its node or slot, and neither kind may pass for the other.
TEST(GPUMemoryManager, StaleHandlesNeverReachTheBlockThatReusesTheirPlace) {
  GPUMemoryManager m(host_pool(16 * kMiB));
  const MemoryBlock old_block = m.allocate(kMiB);
  m.free(old_block);
  const MemoryBlock reuser = m.allocate(kMiB);  // the arena hands out the node just freed
  ASSERT_EQ(reuser.slot, old_block.slot) << "the test needs the node reused";
  fill(m, reuser, 7);
  EXPECT_THROW(m.free(old_block), InvalidArgument);
  EXPECT_THROW((void)m.address(old_block), InvalidArgument);
  EXPECT_THROW((void)m.pin(old_block), InvalidArgument);
  EXPECT_TRUE(intact(m, reuser, 7));

  const MemoryBlock spillable = m.allocate(kMiB, evictable());
  EXPECT_NE(spillable.slot & MemoryBlock::kSlotHandle, 0U);
  m.free(spillable);
  const MemoryBlock next = m.allocate(kMiB, evictable());  // the same slot, a new generation
  EXPECT_EQ(next.slot, spillable.slot);
  EXPECT_THROW(m.free(spillable), InvalidArgument);
  // Its node, named directly with any generation, is refused: only the slot names an evictable block.
  // (Every node handle but `reuser`'s own names nothing live.)
  int accepted = 0;
  for (std::uint32_t node = 0; node < 8; ++node) {
    for (std::uint32_t g = 1; g < 64; ++g) {
      const MemoryBlock made_up{node, g, next.manager};
      if (made_up == reuser) continue;
      try {
        (void)m.size(made_up);
        ++accepted;
      } catch (const InvalidArgument&) {
      }
    }
  }
  EXPECT_EQ(accepted, 0);
  EXPECT_EQ(m.size(reuser), kMiB);
  EXPECT_EQ(m.get_stats().live_blocks, 2U);
  m.check_invariants();
}

// An evictable block keeps its handle through eviction and restore, and counts as live while spilled.
TEST(GPUMemoryManager, ASpilledBlockKeepsItsHandle) {
  GPUMemoryManager m(host_pool(8 * kMiB));
  const MemoryBlock spillable = m.allocate(4 * kMiB, evictable());
  fill(m, spillable, 3);
  const MemoryBlock other = m.allocate(4 * kMiB);
  const MemoryBlock pressing = m.allocate(4 * kMiB);  // evicts `spillable`
  EXPECT_FALSE(m.resident(spillable));
  EXPECT_EQ(m.size(spillable), 4 * kMiB);
  EXPECT_EQ(m.get_stats().live_blocks, 3U);
  m.check_invariants();
  m.free(pressing);
  {
    auto pin = m.pin(spillable);  // restores it, at whatever node the arena gives
    EXPECT_TRUE(m.resident(spillable));
    EXPECT_THROW(m.free(spillable), InvalidArgument);
  }
  EXPECT_TRUE(intact(m, spillable, 3));
  m.free(spillable);
  EXPECT_THROW((void)m.resident(spillable), InvalidArgument);
  m.free(other);
  EXPECT_EQ(m.get_stats().live_blocks, 0U);
  m.check_invariants();
}

TEST(GPUMemoryManager, PinsAndPoolAlignmentHaveClearLimits) {
  GPUMemoryManager m(host_pool(16 * kMiB));
  const MemoryBlock b = m.allocate(kMiB);
  std::vector<PinnedBlock> pins;
  for (int i = 0; i < 255; ++i) pins.push_back(m.pin(b));
  try {
    (void)m.pin(b);
    FAIL() << "a 256th pin was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("pinned 255 times"), std::string::npos) << e.what();
  }
  pins.clear();
  m.free(b);
  try {
    GPUMemoryManager too_coarse(pool_options(kMiB << 10U, BackingKind::none, 32 * kMiB));
    FAIL() << "a 32 MiB pool alignment was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("alignment"), std::string::npos) << e.what();
  }
  GPUMemoryManager coarse(pool_options(kMiB << 10U, BackingKind::none, 16 * kMiB));
  const MemoryBlock one_byte = coarse.allocate(1);  // 16 MiB - 1 of slack, kept exactly
  EXPECT_EQ(coarse.size(one_byte), 16 * kMiB);
  EXPECT_EQ(coarse.get_stats().requested, 1U);
  coarse.free(one_byte);
  EXPECT_EQ(coarse.get_stats().requested, 0U);
  coarse.check_invariants();
}

TEST(GPUMemoryManager, QuotasLimitOneTenantOnly) {
  GPUMemoryManager m(host_pool(64 * kMiB));
  m.set_quota("vgpu-a", 8 * kMiB);
  EXPECT_EQ(m.quota("vgpu-a"), 8 * kMiB);
  EXPECT_FALSE(m.quota("vgpu-b").has_value());
  const MemoryBlock a1 = m.allocate(6 * kMiB, for_tenant("vgpu-a"));
  try {
    (void)m.allocate(3 * kMiB, for_tenant("vgpu-a"));
    FAIL();
  } catch (const OutOfMemoryError& e) {
    EXPECT_TRUE(e.tenant_limited());
    EXPECT_EQ(e.tenant(), "vgpu-a");
    EXPECT_EQ(e.requested(), 3 * kMiB);
    EXPECT_EQ(e.limit(), 8 * kMiB);
    EXPECT_EQ(e.in_use(), 6 * kMiB);
    const std::string message = e.what();
    EXPECT_NE(message.find("tenant 'vgpu-a'"), std::string::npos) << message;
    EXPECT_NE(message.find("3.15 MB"), std::string::npos) << message;
  }
  // Another tenant is unaffected and may use the rest of the pool.
  const MemoryBlock b = m.allocate(40 * kMiB, for_tenant("vgpu-b"));
  EXPECT_EQ(m.tenant_usage("vgpu-a"), 6 * kMiB);
  EXPECT_EQ(m.tenant_usage("vgpu-b"), 40 * kMiB);
  m.free(a1);
  EXPECT_NO_THROW((void)m.allocate(8 * kMiB, for_tenant("vgpu-a")));
  m.set_quota("vgpu-a", 0);
  EXPECT_FALSE(m.quota("vgpu-a").has_value());
  m.free(b);
  m.check_invariants();
}

TEST(GPUMemoryManager, CompactionKeepsContentsAndSatisfiesFragmentedRequests) {
  MemoryManagerOptions o = host_pool(32 * kMiB, true, false);
  o.fragmentation_threshold = 1.0;  // only a failing request triggers compaction here
  GPUMemoryManager m(o);
  std::vector<MemoryBlock> blocks;
  for (int i = 0; i < 32; ++i) blocks.push_back(m.allocate(kMiB));
  for (int i = 0; i < 32; ++i) fill(m, blocks[static_cast<std::size_t>(i)], static_cast<std::uint8_t>(i));
  // Free every other block: 16 MiB free, but no piece larger than 1 MiB.
  for (int i = 0; i < 32; i += 2) m.free(blocks[static_cast<std::size_t>(i)]);
  MemoryStats s = m.get_stats();
  EXPECT_EQ(s.free, 16 * kMiB);
  EXPECT_GT(s.fragmentation, 0.9);
  const auto old_address = m.address(blocks[31]);
  // Pin one block in the middle: compaction must leave it where it is.
  auto pinned = m.pin(blocks[15]);
  const auto pinned_address = pinned.address();
  const MemoryBlock big = m.allocate(8 * kMiB);
  s = m.get_stats();
  EXPECT_GE(s.compactions, 1U);
  EXPECT_GT(s.bytes_moved, 0U);
  EXPECT_NE(m.address(blocks[31]), old_address) << "the last block moved down";
  EXPECT_EQ(m.address(blocks[15]), pinned_address) << "a pinned block never moves";
  for (int i = 1; i < 32; i += 2) {
    EXPECT_TRUE(intact(m, blocks[static_cast<std::size_t>(i)], static_cast<std::uint8_t>(i))) << i;
  }
  fill(m, big, 99);
  EXPECT_TRUE(intact(m, big, 99));
  m.check_invariants();
}

// A block over many chunks that compaction slides down by less than its length: the old and new ranges
// share interior chunks, which must stay in use (and committed, with the contents) after the move.
TEST(GPUMemoryManager, ABlockSlidDownOverItsOwnChunksKeepsThemCommitted) {
  MemoryManagerOptions o = host_pool(64 * kMiB, true, false);
  o.gc_idle = std::chrono::milliseconds(0);  // every emptied chunk goes back at once
  o.fragmentation_threshold = 1.0;
  GPUMemoryManager m(o);
  const MemoryBlock low = m.allocate(3 * kMiB);
  const MemoryBlock big = m.allocate(20 * kMiB);  // chunks 1..11, its interior 2..10
  fill(m, big, 7);
  m.free(low);
  EXPECT_GT(m.compact(), 0U);
  m.check_invariants();
  // From chunks 1..11 to 0..9: only 10 and 11, which it left, are empty.
  EXPECT_EQ(m.collect_garbage(std::chrono::milliseconds(0)), 4 * kMiB);
  EXPECT_EQ(m.get_stats().reserved, 20 * kMiB) << "exactly the block's ten chunks";
  EXPECT_TRUE(intact(m, big, 7));
  m.free(big);
  EXPECT_EQ(m.get_stats().reserved, 0U);
  m.check_invariants();
}

// Chunks emptied, reused and emptied again are released once, when idle since the last emptying.
TEST(GPUMemoryManager, AChunkEmptiedAgainWaitsFromTheLastTime) {
  MemoryManagerOptions o = host_pool(64 * kMiB);
  o.gc_idle = std::chrono::hours(1);
  GPUMemoryManager m(o);
  m.free(m.allocate(8 * kMiB));    // chunks 0..3 queued
  m.free(m.allocate(4 * kMiB));    // chunks 0..1 reused and queued again (later)
  m.free(m.allocate(16 * kMiB));   // 0..7: 4..7 newly queued
  EXPECT_EQ(m.get_stats().reserved, 16 * kMiB);
  EXPECT_EQ(m.collect_garbage(), 0U) << "nothing idle for an hour";
  EXPECT_EQ(m.collect_garbage(std::chrono::milliseconds(0)), 16 * kMiB);
  EXPECT_EQ(m.get_stats().chunks_released, 8U) << "each chunk released once";
  EXPECT_EQ(m.collect_garbage(std::chrono::milliseconds(0)), 0U);
  m.check_invariants();
}

TEST(GPUMemoryManager, FragmentationAboveTheThresholdCompactsAfterEnoughFrees) {
  MemoryManagerOptions o = host_pool(32 * kMiB, true, false);
  o.fragmentation_threshold = 0.5;
  GPUMemoryManager m(o);
  std::vector<MemoryBlock> blocks;
  for (int i = 0; i < 32; ++i) blocks.push_back(m.allocate(kMiB));
  // One free of 1 MiB: fragmentation is 0 (one piece), nothing to do.
  m.free(blocks[0]);
  EXPECT_EQ(m.get_stats().compactions, 0U);
  // Freeing every other block fragments the pool; once 2 MiB (a sixteenth) has
  // been freed since the last compaction and fragmentation exceeds 0.5, it compacts.
  for (int i = 2; i < 32; i += 2) m.free(blocks[static_cast<std::size_t>(i)]);
  const MemoryStats s = m.get_stats();
  EXPECT_GE(s.compactions, 1U);
  // Each compaction after the first waits for as many freed bytes as the previous
  // one moved: moves are bounded by the bytes freed plus one pool's worth.
  EXPECT_LE(s.bytes_moved, 16 * kMiB + 32 * kMiB);
  m.check_invariants();
  // A pool with a large free tail is left alone however holey the rest is.
  GPUMemoryManager roomy(host_pool(64 * kMiB, true, false));
  std::vector<MemoryBlock> few;
  for (int i = 0; i < 16; ++i) few.push_back(roomy.allocate(kMiB));
  for (int i = 0; i < 16; i += 2) roomy.free(few[static_cast<std::size_t>(i)]);
  EXPECT_GT(roomy.get_stats().fragmentation, 0.1);
  EXPECT_EQ(roomy.get_stats().compactions, 0U);
}

TEST(GPUMemoryManager, WithoutCompactionAFragmentedPoolFails) {
  GPUMemoryManager m(host_pool(32 * kMiB, false, false));
  std::vector<MemoryBlock> blocks;
  for (int i = 0; i < 32; ++i) blocks.push_back(m.allocate(kMiB));
  for (int i = 0; i < 32; i += 2) m.free(blocks[static_cast<std::size_t>(i)]);
  try {
    (void)m.allocate(2 * kMiB);
    FAIL();
  } catch (const OutOfMemoryError& e) {
    EXPECT_FALSE(e.tenant_limited());
    EXPECT_NE(std::string(e.what()).find("largest piece is 1.05 MB"), std::string::npos) << e.what();
  }
  EXPECT_EQ(m.get_stats().failed_allocations, 1U);
}

TEST(GPUMemoryManager, EvictionSpillsLruBlocksAndRestoresTheirContents) {
  GPUMemoryManager m(host_pool(16 * kMiB));
  std::vector<MemoryBlock> blocks;
  for (int i = 0; i < 4; ++i) {
    blocks.push_back(m.allocate(4 * kMiB, evictable()));
    fill(m, blocks.back(), static_cast<std::uint8_t>(10 + i));
  }
  (void)m.address(blocks[0]);  // block 0 is now the most recently used; block 1 the least
  const MemoryBlock fresh = m.allocate(4 * kMiB);
  MemoryStats s = m.get_stats();
  EXPECT_EQ(s.evictions, 1U);
  EXPECT_EQ(s.spilled_bytes, 4 * kMiB);
  EXPECT_FALSE(m.resident(blocks[1]));
  EXPECT_TRUE(m.resident(blocks[0]));
  m.free(fresh);
  // Touching the spilled block brings it back with its contents.
  EXPECT_TRUE(intact(m, blocks[1], 11));
  s = m.get_stats();
  EXPECT_EQ(s.restores, 1U);
  EXPECT_EQ(s.spilled_bytes, 0U);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(intact(m, blocks[static_cast<std::size_t>(i)], static_cast<std::uint8_t>(10 + i)));
  m.check_invariants();
}

TEST(GPUMemoryManager, PinnedAndNonEvictableBlocksAreNeverEvicted) {
  GPUMemoryManager m(host_pool(16 * kMiB));
  const MemoryBlock fixed = m.allocate(4 * kMiB, pinned());
  const MemoryBlock plain = m.allocate(4 * kMiB);
  const MemoryBlock spillable = m.allocate(4 * kMiB, evictable());
  const MemoryBlock in_use = m.allocate(4 * kMiB, evictable());
  auto guard = m.pin(in_use);
  fill(m, in_use, 5);
  EXPECT_NO_THROW((void)m.allocate(4 * kMiB));  // evicts `spillable`, the only candidate
  EXPECT_FALSE(m.resident(spillable));
  EXPECT_THROW((void)m.allocate(4 * kMiB), OutOfMemoryError);
  EXPECT_TRUE(m.resident(fixed));
  EXPECT_TRUE(m.resident(plain));
  EXPECT_TRUE(m.resident(in_use));
  EXPECT_TRUE(intact(m, in_use, 5));
  EXPECT_THROW(m.free(in_use), InvalidArgument) << "freeing a pinned block is refused";
  m.check_invariants();
}

TEST(GPUMemoryManager, LazyBackingCommitsOnUseAndReleasesIdleChunks) {
  MemoryManagerOptions o = host_pool(256 * kMiB);
  o.gc_idle = std::chrono::milliseconds(0);
  GPUMemoryManager m(o);
  EXPECT_EQ(m.get_stats().reserved, 0U) << "nothing committed before first use";
  const MemoryBlock a = m.allocate(10 * kMiB);
  MemoryStats s = m.get_stats();
  EXPECT_EQ(s.reserved, 10 * kMiB) << "five 2 MiB chunks";
  fill(m, a, 3);  // writable: committed for real
  const MemoryBlock b = m.allocate(kMiB);
  EXPECT_EQ(m.get_stats().reserved, 12 * kMiB);
  m.free(a);
  EXPECT_EQ(m.get_stats().reserved, 2 * kMiB) << "idle chunks went back (gc_idle 0)";
  EXPECT_EQ(m.get_stats().chunks_released, 5U);
  // Re-committed chunks are usable again.
  const MemoryBlock c = m.allocate(6 * kMiB);
  fill(m, c, 4);
  EXPECT_TRUE(intact(m, c, 4));
  m.free(b);
  m.free(c);
  m.check_invariants();
}

// A chunk is released only once no block lies on any part of it: one shared by two blocks stays while
// either is live, whichever goes first; the pool's last chunk, cut short by the pool's end, goes too.
TEST(GPUMemoryManager, AChunkSharedByTwoBlocksIsReleasedOnlyWhenBothAreGone) {
  MemoryManagerOptions o = host_pool(7 * kMiB);  // chunks 0..3; chunk 3 is 1 MiB long
  o.gc_idle = std::chrono::milliseconds(0);
  o.compaction = false;
  GPUMemoryManager m(o);
  const MemoryBlock a = m.allocate(3 * kMiB);  // [0, 3 MiB): chunks 0 and 1
  const MemoryBlock b = m.allocate(3 * kMiB);  // [3, 6 MiB): chunks 1 and 2; chunk 1 is shared
  const MemoryBlock c = m.allocate(kMiB);      // [6, 7 MiB): the short last chunk
  EXPECT_EQ(m.get_stats().reserved, 8 * kMiB);
  m.free(a);
  EXPECT_EQ(m.get_stats().chunks_released, 1U) << "chunk 0 only: b still lies on chunk 1";
  m.check_invariants();
  m.free(c);
  EXPECT_EQ(m.get_stats().chunks_released, 2U) << "the last chunk, though the free space ends at the pool's end";
  m.check_invariants();
  m.free(b);
  EXPECT_EQ(m.get_stats().chunks_released, 4U);
  EXPECT_EQ(m.get_stats().reserved, 0U);
  m.check_invariants();
  // The other order: the block on the higher half of the shared chunk goes first.
  const MemoryBlock d = m.allocate(3 * kMiB);
  const MemoryBlock e = m.allocate(3 * kMiB);
  m.free(e);
  EXPECT_EQ(m.get_stats().chunks_released, 5U) << "chunk 2 only: d still lies on chunk 1";
  m.free(d);
  EXPECT_EQ(m.get_stats().chunks_released, 7U);
  m.check_invariants();
}

TEST(GPUMemoryManager, IdleTimeDelaysRelease) {
  MemoryManagerOptions o = host_pool(64 * kMiB);
  o.gc_idle = std::chrono::hours(1);
  GPUMemoryManager m(o);
  m.free(m.allocate(8 * kMiB));
  EXPECT_EQ(m.get_stats().reserved, 8 * kMiB) << "kept for reuse until idle long enough";
  EXPECT_EQ(m.collect_garbage(), 0U);
  EXPECT_EQ(m.collect_garbage(std::chrono::milliseconds(0)), 8 * kMiB);
  EXPECT_EQ(m.get_stats().reserved, 0U);
}

TEST(GPUMemoryManager, EagerBackingCommitsEverythingUpFront) {
  MemoryManagerOptions o = host_pool(16 * kMiB);
  o.lazy = false;
  o.gc_idle = std::chrono::milliseconds(0);
  GPUMemoryManager m(o);
  EXPECT_EQ(m.get_stats().reserved, 16 * kMiB);
  m.free(m.allocate(4 * kMiB));
  EXPECT_EQ(m.collect_garbage(), 0U);
  EXPECT_EQ(m.get_stats().reserved, 16 * kMiB);
}

TEST(GPUMemoryManager, OptionsFromAProfile) {
  config::MemorySection section;
  section.fragmentation_threshold = 0.05;
  section.eviction = "none";
  section.lazy = false;
  MemoryManagerOptions o = MemoryManagerOptions::from_config(section, 80'000'000'000ULL);
  EXPECT_EQ(o.pool_size, 80'000'000'000ULL);
  EXPECT_EQ(o.fragmentation_threshold, 0.05);
  EXPECT_FALSE(o.eviction);
  EXPECT_FALSE(o.lazy);
  section.pool_size = 20'000'000'000ULL;
  EXPECT_EQ(MemoryManagerOptions::from_config(section, 80'000'000'000ULL).pool_size, 20'000'000'000ULL);
}

TEST(GPUMemoryManager, NoneBackingAccountsWithoutMemory) {
  GPUMemoryManager m("1TB", 0.1, pool_options(0, BackingKind::none));
  const MemoryBlock b = m.allocate("500GB", evictable());
  EXPECT_EQ(m.address(b), 0U) << "the address is the offset";
  const MemoryBlock c = m.allocate("600GB");  // evicts b (no data to copy)
  EXPECT_FALSE(m.resident(b));
  m.free(c);
  EXPECT_EQ(m.address(b), 0U);
  EXPECT_EQ(m.backing_kind(), BackingKind::none);
}

TEST(GPUMemoryManager, CudaBackingWithoutADriverIsAClearError) {
  try {
    GPUMemoryManager m(pool_options(1ULL << 30U, BackingKind::cuda));
    GTEST_SKIP() << "a CUDA driver is present; the GPU-labelled tests cover it";
  } catch (const DeviceError& e) {
    EXPECT_NE(std::string(e.what()).find("cuda backing"), std::string::npos) << e.what();
  }
}

TEST(GPUMemoryManager, PropertyRandomOperationsKeepTheBooksExact) {
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    std::mt19937_64 rng(seed);
    MemoryManagerOptions o = host_pool(64 * kMiB);
    o.gc_idle = std::chrono::milliseconds(0);
    GPUMemoryManager m(o);
    m.set_quota("t1", 24 * kMiB);
    struct Live {
      MemoryBlock block;
      std::uint8_t pattern;
      std::uint64_t requested;
    };
    std::vector<Live> live;
    std::uint64_t requested = 0;
    // A spilled block may not fit back when the pool is full of unevictable
    // blocks: address() then throws OutOfMemoryError, which is correct.
    auto check = [&](MemoryBlock b, std::uint8_t pattern) {
      try {
        return intact(m, b, pattern);
      } catch (const OutOfMemoryError&) {
        return !m.resident(b);
      }
    };
    for (int step = 0; step < 2000; ++step) {
      const int action = static_cast<int>(rng() % 10);
      if (action < 5 || live.empty()) {
        const std::uint64_t size = 1 + rng() % (rng() % 8 == 0 ? 2 * kMiB : 64 * 1024);
        AllocationOptions opts;
        opts.tenant = rng() % 2 == 0 ? "t1" : "t2";
        opts.evictable = rng() % 3 == 0;
        try {
          const MemoryBlock b = m.allocate(size, opts);
          const auto pattern = static_cast<std::uint8_t>(rng());
          fill(m, b, pattern);
          live.push_back({b, pattern, size});
          requested += size;
        } catch (const OutOfMemoryError&) {
        }
      } else if (action < 8) {
        const std::size_t i = rng() % live.size();
        ASSERT_TRUE(check(live[i].block, live[i].pattern)) << "seed " << seed << " step " << step;
        m.free(live[i].block);
        requested -= live[i].requested;
        live[i] = live.back();
        live.pop_back();
      } else if (action == 8) {
        (void)m.compact();
      } else {
        const std::size_t i = rng() % live.size();
        ASSERT_TRUE(check(live[i].block, live[i].pattern));
      }
      ASSERT_EQ(m.get_stats().requested, requested);
      if (step % 250 == 0) m.check_invariants();
    }
    for (const Live& l : live) EXPECT_TRUE(check(l.block, l.pattern));
    m.check_invariants();
  }
}

TEST(GPUMemoryManager, ConcurrentThreadsNeverLoseOrShareBlocks) {
  GPUMemoryManager m(pool_options(256 * kMiB, BackingKind::host));
  std::atomic<bool> overlap{false};
  auto worker = [&](std::uint8_t id) {
    std::mt19937 rng(id);
    std::vector<MemoryBlock> mine;
    for (int i = 0; i < 20000; ++i) {
      if (mine.size() < 64 && rng() % 2 == 0) {
        try {
          const MemoryBlock b = m.allocate(256 + rng() % 16384);
          auto pin = m.pin(b);
          std::memset(pin.as<void>(), id, 256);
          mine.push_back(b);
        } catch (const OutOfMemoryError&) {
        }
      } else if (!mine.empty()) {
        const MemoryBlock b = mine.back();
        mine.pop_back();
        {
          auto pin = m.pin(b);
          const auto* p = pin.as<std::uint8_t>();
          for (int k = 0; k < 256; ++k) {
            if (p[k] != id) overlap = true;
          }
        }
        m.free(b);
      }
    }
    for (const MemoryBlock& b : mine) m.free(b);
  };
  std::thread a(worker, 1);
  std::thread b(worker, 2);
  a.join();
  b.join();
  EXPECT_FALSE(overlap.load()) << "a block was handed to both threads";
  const MemoryStats s = m.get_stats();
  EXPECT_EQ(s.used, 0U);
  EXPECT_EQ(s.live_blocks, 0U);
  EXPECT_EQ(s.allocations, s.frees);
  m.check_invariants();
}

}  // namespace
}  // namespace apt::vgpu::memory

namespace apt::vgpu::memory {
namespace {

// A host backing that fails on demand: after `commits_before_failure` more
// commits, or on the next move / copy out / copy in. It stands in for
// cuMemCreate running out of memory or mprotect failing with ENOMEM.
class FailingBacking final : public Backing {
 public:
  struct Switches {
    int commits_before_failure = -1;  // -1: never fail
    bool fail_move = false;
    bool fail_copy_out = false;
    bool fail_copy_in = false;
  };
  FailingBacking(std::uint64_t capacity, std::shared_ptr<Switches> switches)
      : inner_(make_backing(BackingKind::host, capacity)), switches_(std::move(switches)) {}
  BackingKind kind() const noexcept override { return inner_->kind(); }
  std::uint64_t chunk_size() const noexcept override { return inner_->chunk_size(); }
  std::uintptr_t base() const noexcept override { return inner_->base(); }
  bool holds_data() const noexcept override { return true; }
  void commit(std::uint64_t offset, std::uint64_t length) override {
    if (switches_->commits_before_failure == 0) throw DeviceError("injected: commit failed (out of memory)");
    if (switches_->commits_before_failure > 0) --switches_->commits_before_failure;
    inner_->commit(offset, length);
  }
  void decommit(std::uint64_t offset, std::uint64_t length) override { inner_->decommit(offset, length); }
  void move(std::uint64_t to, std::uint64_t from, std::uint64_t length) override {
    if (switches_->fail_move) throw DeviceError("injected: move failed");
    inner_->move(to, from, length);
  }
  void copy_to_host(void* host, std::uint64_t from, std::uint64_t length) override {
    if (switches_->fail_copy_out) throw DeviceError("injected: copy to host failed");
    inner_->copy_to_host(host, from, length);
  }
  void copy_from_host(std::uint64_t to, const void* host, std::uint64_t length) override {
    if (switches_->fail_copy_in) throw DeviceError("injected: copy from host failed");
    inner_->copy_from_host(to, host, length);
  }

 private:
  std::unique_ptr<Backing> inner_;
  std::shared_ptr<Switches> switches_;
};


struct FailingPool {
  std::shared_ptr<FailingBacking::Switches> switches = std::make_shared<FailingBacking::Switches>();
  std::unique_ptr<GPUMemoryManager> pool;
  explicit FailingPool(std::uint64_t size, bool eviction = false) {
    MemoryManagerOptions o;
    o.pool_size = size;
    o.compaction = false;
    o.eviction = eviction;
    o.gc_idle = std::chrono::hours(1);  // chunks are released only when a test asks
    pool = std::make_unique<GPUMemoryManager>(o, std::make_unique<FailingBacking>(size, switches));
  }
};

TEST(GPUMemoryManagerFailures, AFailedCommitChargesNothingAndLeaksNothing) {
  FailingPool p(16 * kMiB);
  AllocationOptions team;
  team.tenant = "team";
  p.pool->set_quota("team", 8 * kMiB);
  p.switches->commits_before_failure = 0;
  EXPECT_THROW((void)p.pool->allocate(4 * kMiB, team), DeviceError);
  MemoryStats s = p.pool->get_stats();
  EXPECT_EQ(s.used, 0U) << "the block went back to the arena";
  EXPECT_EQ(s.requested, 0U);
  EXPECT_EQ(s.allocations, 0U);
  EXPECT_EQ(s.failed_allocations, 1U);
  EXPECT_EQ(p.pool->tenant_usage("team"), 0U) << "the quota was not charged";
  p.pool->check_invariants();
  // With the driver healthy again, the whole quota and pool are there.
  p.switches->commits_before_failure = -1;
  const MemoryBlock b = p.pool->allocate(8 * kMiB, team);
  EXPECT_EQ(p.pool->tenant_usage("team"), 8 * kMiB);
  p.pool->free(b);
  p.pool->check_invariants();
}

TEST(GPUMemoryManagerFailures, ChunksCommittedBeforeTheFailureAreReleasedLater) {
  FailingPool p(16 * kMiB);
  // Chunk 1 stays committed (empty); chunks 0 and 2 are released.
  const MemoryBlock a = p.pool->allocate(2 * kMiB);
  const MemoryBlock b = p.pool->allocate(2 * kMiB);
  const MemoryBlock c = p.pool->allocate(2 * kMiB);
  p.pool->free(a);
  p.pool->free(c);
  (void)p.pool->collect_garbage(std::chrono::milliseconds(0));
  p.pool->free(b);
  ASSERT_EQ(p.pool->get_stats().reserved, 2 * kMiB);
  // 6 MiB over chunks 0..2: chunk 0 is committed, then committing chunk 2 fails.
  p.switches->commits_before_failure = 1;
  EXPECT_THROW((void)p.pool->allocate(6 * kMiB), DeviceError);
  p.pool->check_invariants();
  p.switches->commits_before_failure = -1;
  (void)p.pool->collect_garbage(std::chrono::milliseconds(0));
  EXPECT_EQ(p.pool->get_stats().reserved, 0U) << "chunk 0, committed for the failed allocation, was collected";
}

TEST(GPUMemoryManagerFailures, AFailedEvictionCopyLeavesTheBlockResident) {
  FailingPool p(8 * kMiB, /*eviction=*/true);
  AllocationOptions lru;
  lru.evictable = true;
  const MemoryBlock old_block = p.pool->allocate(6 * kMiB, lru);
  p.switches->fail_copy_out = true;
  EXPECT_THROW((void)p.pool->allocate(6 * kMiB), DeviceError);
  EXPECT_TRUE(p.pool->resident(old_block)) << "not evicted: its contents could not be saved";
  EXPECT_EQ(p.pool->get_stats().used, 6 * kMiB);
  p.pool->check_invariants();
  p.switches->fail_copy_out = false;
  const MemoryBlock fresh = p.pool->allocate(6 * kMiB);  // now it is evicted
  EXPECT_FALSE(p.pool->resident(old_block));
  p.pool->free(fresh);
  // Restoring it fails on the copy back: it stays spilled, with its contents, and a later try works.
  p.switches->fail_copy_in = true;
  EXPECT_THROW((void)p.pool->address(old_block), DeviceError);
  EXPECT_FALSE(p.pool->resident(old_block));
  p.pool->check_invariants();
  p.switches->fail_copy_in = false;
  EXPECT_NE(p.pool->address(old_block), 0U);
  EXPECT_TRUE(p.pool->resident(old_block));
  p.pool->free(old_block);
  p.pool->check_invariants();
}

TEST(GPUMemoryManagerFailures, AFailedCompactionMoveKeepsEveryBlockWhereItWas) {
  MemoryManagerOptions o;
  o.pool_size = 8 * kMiB;
  o.compaction = true;
  o.eviction = false;
  auto switches = std::make_shared<FailingBacking::Switches>();
  GPUMemoryManager pool(o, std::make_unique<FailingBacking>(o.pool_size, switches));
  const MemoryBlock a = pool.allocate(2 * kMiB);
  const MemoryBlock b = pool.allocate(2 * kMiB);
  const MemoryBlock c = pool.allocate(2 * kMiB);
  const MemoryBlock tail = pool.allocate(2 * kMiB);
  pool.free(a);  // holes at 0..2 and 4..6 MiB: 4 MiB free in 2 MiB pieces, so 4 MiB needs a compaction
  pool.free(c);
  switches->fail_move = true;
  const std::uintptr_t where = pool.address(b);
  EXPECT_THROW((void)pool.allocate(4 * kMiB), DeviceError);
  EXPECT_EQ(pool.address(b), where) << "the block did not move";
  pool.check_invariants();
  switches->fail_move = false;
  const MemoryBlock d = pool.allocate(4 * kMiB);
  EXPECT_NE(pool.address(b), where) << "compacted this time";
  pool.free(d);
  pool.free(b);
  pool.free(tail);
  pool.check_invariants();
}

}  // namespace
}  // namespace apt::vgpu::memory
