// Replaying an allocation trace through a GPUMemoryManager and reporting what
// a pool would have done with it (`vgpu memory replay`).
//
// Thread safety: replay() builds its own manager; reentrant.
#pragma once

#include <apt/vgpu/memory/allocation_trace.hpp>
#include <apt/vgpu/memory/backing.hpp>

#include <cstdint>
#include <utility>
#include <vector>

namespace apt::vgpu::memory {

struct ReplayOptions {
  // 0: the trace's peak live bytes x 1.05 (rounded up to the chunk): a tight pool.
  std::uint64_t pool_size = 0;
  bool compaction = true;
  double fragmentation_threshold = 0.1;
  BackingKind backing = BackingKind::none;
  std::uint32_t samples = 50;  // fragmentation samples over the replay
};

struct ReplayReport {
  std::uint64_t pool_size = 0;
  std::uint64_t events = 0;
  std::uint64_t allocations = 0;
  std::uint64_t frees = 0;
  std::uint64_t peak_requested = 0;
  std::uint64_t peak_used = 0;
  std::uint64_t peak_reserved = 0;  // backing committed at once, at most (lazy: idle chunks released)
  std::uint64_t peak_address = 0;   // the allocator's address high-water mark
  std::uint64_t commit_calls = 0;   // backing calls (driver calls on CUDA)
  std::uint64_t release_calls = 0;
  std::uint64_t failures = 0;
  // Failures although the pool had at least the request free in total: what
  // compaction exists to prevent.
  std::uint64_t failures_with_enough_free = 0;
  std::uint64_t compactions = 0;
  std::uint64_t bytes_moved = 0;
  double ns_per_op = 0.0;  // mean wall time per allocate or free
  std::vector<std::pair<std::uint64_t, double>> fragmentation;  // (event index, fragmentation)

  [[nodiscard]] double reserved_over_requested() const {
    return peak_requested == 0 ? 0.0 : static_cast<double>(peak_reserved) / static_cast<double>(peak_requested);
  }
  [[nodiscard]] double address_over_requested() const {
    return peak_requested == 0 ? 0.0 : static_cast<double>(peak_address) / static_cast<double>(peak_requested);
  }
};

[[nodiscard]] ReplayReport replay(const std::vector<TraceEvent>& events, const ReplayOptions& options = {});

}  // namespace apt::vgpu::memory
