// ChunkMap: the lazy backing's chunk state as bitmaps and runs (src/memory/chunk_map.hpp).
#include "chunk_map.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace {

using apt::vgpu::memory::ChunkMap;

std::vector<std::pair<std::uint64_t, std::uint64_t>> uncommitted(const ChunkMap& map, std::uint64_t first,
                                                                  std::uint64_t last) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
  map.for_each_uncommitted_run(first, last, [&](std::uint64_t start, std::uint64_t count) { runs.emplace_back(start, count); });
  return runs;
}

TEST(ChunkMap, UncommittedRunsAcrossWordsAndPages) {
  const std::uint64_t page = ChunkMap::kPageChunks;
  ChunkMap map(3 * page);
  using Runs = std::vector<std::pair<std::uint64_t, std::uint64_t>>;
  EXPECT_EQ(uncommitted(map, 0, 3 * page - 1), (Runs{{0, 3 * page}})) << "untouched pages read as uncommitted";
  map.set_committed(60, 130, true);          // across two words
  map.set_committed(page - 2, page + 1, true);  // across two pages
  EXPECT_EQ(uncommitted(map, 0, 200), (Runs{{0, 60}, {131, 70}}));
  EXPECT_EQ(uncommitted(map, 64, 128), Runs{});
  EXPECT_EQ(uncommitted(map, page - 10, page + 10), (Runs{{page - 10, 8}, {page + 2, 9}}));
  EXPECT_TRUE(map.committed(page - 1));
  EXPECT_FALSE(map.committed(page + 2));
  map.set_committed(100, 100, false);
  EXPECT_EQ(uncommitted(map, 60, 130), (Runs{{100, 1}}));
  // all_committed: within one word, across words, across pages, on an untouched page.
  EXPECT_TRUE(map.all_committed(64, 99));
  EXPECT_FALSE(map.all_committed(99, 101));
  EXPECT_TRUE(map.all_committed(101, 127));
  EXPECT_FALSE(map.all_committed(59, 60));
  EXPECT_TRUE(map.all_committed(60, 99));
  EXPECT_FALSE(map.all_committed(60, 130));
  EXPECT_TRUE(map.all_committed(page - 2, page + 1));
  EXPECT_FALSE(map.all_committed(page - 2, page + 2));
  EXPECT_FALSE(map.all_committed(2 * page + 5, 2 * page + 5));
}

TEST(ChunkMap, UsedBitsAreSetAndClearedInRunsAcrossWordsAndPages) {
  const std::uint64_t page = ChunkMap::kPageChunks;
  ChunkMap map(3 * page);
  EXPECT_FALSE(map.used(5)) << "an untouched page reads as unused";
  map.set_used(10, 20);               // one block over chunks 10..20
  map.set_used(20, 20);               // a small block sharing chunk 20: one bit says "some block"
  map.set_used(page - 3, page + 70);  // across a page and two words of the next
  for (std::uint64_t c = 10; c <= 20; ++c) EXPECT_TRUE(map.used(c)) << c;
  EXPECT_FALSE(map.used(9));
  EXPECT_FALSE(map.used(21));
  EXPECT_TRUE(map.used(page - 3));
  EXPECT_TRUE(map.used(page + 64));
  EXPECT_TRUE(map.used(page + 70));
  EXPECT_FALSE(map.used(page + 71));
  map.clear_used(12, 18);  // the manager clears only what it found wholly in free space
  EXPECT_TRUE(map.used(11));
  EXPECT_FALSE(map.used(12));
  EXPECT_FALSE(map.used(18));
  EXPECT_TRUE(map.used(19));
  map.clear_used(page - 1, page + 65);
  EXPECT_TRUE(map.used(page - 2));
  EXPECT_FALSE(map.used(page));
  EXPECT_FALSE(map.used(page + 65));
  EXPECT_TRUE(map.used(page + 66));
}

// The common case of placing a block, in one step: it marks chunks used only when every one of them
// is committed and they lie in one bitmap group, and otherwise changes nothing.
TEST(ChunkMap, UseIfCommittedMarksOnlyCommittedChunksInOneGroup) {
  const std::uint64_t page = ChunkMap::kPageChunks;
  ChunkMap map(2 * page);
  EXPECT_FALSE(map.use_if_committed(page + 3, page + 3)) << "an untouched page is not committed";
  EXPECT_FALSE(map.used(page + 3));
  map.set_committed(page + 3, page + 5, true);
  EXPECT_FALSE(map.use_if_committed(page + 4, page + 6)) << "chunk page + 6 is not committed";
  EXPECT_FALSE(map.used(page + 4)) << "nothing changes when it says no";
  ASSERT_TRUE(map.use_if_committed(page + 3, page + 5));
  EXPECT_TRUE(map.used(page + 3));
  EXPECT_TRUE(map.used(page + 5));
  EXPECT_FALSE(map.used(page + 6));
  map.set_committed(60, 70, true);
  EXPECT_FALSE(map.use_if_committed(62, 66)) << "two groups: the caller's general path";
  EXPECT_FALSE(map.used(63));
  map.set_used(62, 66);
  EXPECT_TRUE(map.used(64));
  EXPECT_TRUE(map.all_committed(60, 70));
  EXPECT_FALSE(map.all_committed(60, 71));
}

TEST(ChunkMap, MarkEmptyQueuesEachChunkOnceAndKeepsTheLatestTime) {
  ChunkMap map(10000);
  EXPECT_TRUE(map.mark_empty(100, 200, 5));
  EXPECT_TRUE(map.queued(150));
  EXPECT_EQ(map.empty_since(150), 5);
  EXPECT_FALSE(map.mark_empty(120, 130, 9)) << "all already queued";
  EXPECT_EQ(map.empty_since(125), 9) << "emptied again: the later time";
  EXPECT_EQ(map.empty_since(150), 5);
  EXPECT_TRUE(map.mark_empty(190, 210, 11)) << "201..210 were not queued";
  map.clear_queued(150, 150);
  EXPECT_FALSE(map.queued(150));
  EXPECT_TRUE(map.mark_empty(150, 150, 12));
  EXPECT_TRUE(map.mark_empty(4000, 4200, 1)) << "across a page boundary";
  EXPECT_TRUE(map.queued(4095));
  EXPECT_TRUE(map.queued(4096));
  EXPECT_EQ(map.empty_since(4200), 1);
}

TEST(ChunkMap, ASweepReleasesIdleEmptyChunksAndKeepsTheRest) {
  ChunkMap map(10000);
  map.set_committed(0, 199, true);
  map.mark_empty(0, 199, 10);  // all queued at time 10
  map.set_used(50, 52);         // reused since
  map.mark_empty(100, 109, 30); // emptied again later
  map.set_committed(150, 150, false);  // released already
  std::vector<std::uint64_t> released;
  std::uint64_t wait_first = UINT64_MAX;
  std::uint64_t wait_last = 0;
  map.sweep(0, 199, 20, [&](std::uint64_t c) { released.push_back(c); }, &wait_first, &wait_last);
  EXPECT_EQ(released.size(), 200U - 3U - 10U - 1U);
  EXPECT_EQ(wait_first, 100U) << "emptied at 30, after the idle line at 20";
  EXPECT_EQ(wait_last, 109U);
  EXPECT_FALSE(map.queued(51)) << "used again: leaves the queue";
  EXPECT_FALSE(map.queued(150)) << "not committed: leaves the queue";
  EXPECT_TRUE(map.queued(105));
  EXPECT_FALSE(map.committed(0)) << "released";
  EXPECT_TRUE(map.committed(105));
  EXPECT_TRUE(map.committed(51));
}

}  // namespace
