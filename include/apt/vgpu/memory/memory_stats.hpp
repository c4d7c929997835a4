// A snapshot of a GPUMemoryManager (the seed's get_stats()).
//
// Definitions (bytes unless stated):
//   used                bytes in resident blocks (sizes rounded up to the alignment)
//   free                pool_size - used
//   reserved            backing committed right now (whole chunks; lazy backings grow and shrink)
//   requested           bytes asked for by live blocks (before rounding), resident or spilled
//   largest_free_block  the largest allocation that can succeed without compaction or eviction
//   fragmentation       1 - largest_free_block / free (0 when free is one piece or zero)
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
  std::uint64_t chunks_committed = 0;  // commit operations, cumulative
  std::uint64_t chunks_released = 0;   // decommit operations, cumulative
};

}  // namespace apt::vgpu::memory
