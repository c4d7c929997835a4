// A snapshot of a GPUMemoryManager (the seed's get_stats()).
//
// Definitions (bytes unless stated):
//   used                bytes in resident blocks (sizes rounded up to the alignment)
//   free                pool_size - used
//   reserved            backing committed right now (whole chunks; lazy backings grow and shrink)
//   requested           bytes asked for by live blocks (before rounding), resident or spilled
//   largest_free_block  the largest allocation that can succeed without compaction or eviction
//   fragmentation       1 - largest_free_block / free (0 when free is one piece or zero)
//   peak_reserved       the most backing committed at once (whole chunks; with lazy backing, chunks
//                       are released once idle, so this is what the backing really held)
//   peak_address        the allocator's address high-water mark: the highest end of any block ever
//                       placed (what a non-lazy backing would have to hold)
//   commit_calls, release_calls  calls to the backing (each a driver call on CUDA: cuMemCreate+cuMemMap,
//                       cuMemUnmap+cuMemRelease); chunks_committed/released count the chunks
//
// Thread safety: a plain value type.
#pragma once

#include <cstdint>

namespace apt::vgpu::memory {

struct MemoryStats {
  std::uint64_t pool_size = 0;
  std::uint64_t used = 0;
  std::uint64_t free = 0;
  std::uint64_t reserved = 0;
  std::uint64_t requested = 0;
  std::uint64_t peak_used = 0;
  std::uint64_t peak_reserved = 0;
  std::uint64_t peak_requested = 0;
  std::uint64_t peak_address = 0;
  std::uint64_t largest_free_block = 0;
  double fragmentation = 0.0;
  std::uint64_t spilled_bytes = 0;  // live blocks currently in host memory
  std::uint64_t live_blocks = 0;

  std::uint64_t allocations = 0;
  std::uint64_t frees = 0;
  std::uint64_t failed_allocations = 0;
  std::uint64_t compactions = 0;
  std::uint64_t bytes_moved = 0;  // by compaction
  std::uint64_t evictions = 0;
  std::uint64_t restores = 0;
  std::uint64_t chunks_committed = 0;  // chunks committed, cumulative
  std::uint64_t chunks_released = 0;   // chunks decommitted, cumulative
  std::uint64_t commit_calls = 0;      // backing commit calls, cumulative
  std::uint64_t release_calls = 0;     // backing decommit calls, cumulative
};

}  // namespace apt::vgpu::memory
