// The churn workload of the pool benchmarks (memory_bench) and of memory_churn, which runs it for a
// fixed number of pairs under cachegrind: a pool filled with `live` blocks, half of them freed and
// refilled so the free space is fragmented like a pool in use, then pairs of "free a random live
// block, allocate a random size in its place". Sizes are uniform in 256 B .. 64 KiB or log-uniform in
// 256 B .. 64 MiB (many small, some huge). Every allocator sees the same sizes and victims.
//
// Also the adapters that give each allocator the same allocate()/free() shape: the offset-allocator
// model with its ids held as 8 bytes, and the whole GPUMemoryManager.
#pragma once

#include "binned_offset_allocator.hpp"

#include <apt/vgpu/memory/gpu_memory_manager.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <type_traits>
#include <vector>

namespace apt::vgpu::bench {

inline constexpr std::uint64_t kUniformCapacity = 64ULL << 30U;  // 64 GiB of offsets: never the limit for uniform sizes
// Log-uniform sizes average ~5 MiB: 100k live blocks need ~540 GB. Just under 2^32 granules of 256 B,
// so 32-bit offsets (the offset allocator's) still hold it.
inline constexpr std::uint64_t kLogUniformCapacity = (1ULL << 40U) - (1ULL << 20U);
inline constexpr std::uint32_t kMaxBlocks = 1U << 20U;  // the offset allocator's fixed node array

enum Distribution : std::int64_t { kUniform = 0, kLogUniform = 1 };

inline std::uint64_t capacity_for(std::int64_t distribution) {
  return distribution == kUniform ? kUniformCapacity : kLogUniformCapacity;
}

inline std::vector<std::uint64_t> random_sizes(std::size_t n, std::uint64_t seed, std::int64_t distribution = kUniform) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint64_t> sizes(n);
  std::uniform_real_distribution<double> exponent(8.0, 26.0);
  for (auto& s : sizes) {
    s = distribution == kUniform ? 256 + rng() % (64 * 1024) : static_cast<std::uint64_t>(std::exp2(exponent(rng)));
  }
  return sizes;
}

// Random indices into the live set, precomputed so the loop measures only the allocator.
inline std::vector<std::uint32_t> random_victims(std::size_t n, std::size_t live, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint32_t> v(n);
  for (auto& i : v) i = static_cast<std::uint32_t>(rng() % live);
  return v;
}

// Fills `allocator` with `live` blocks, then frees a random half and refills it.
template <class Allocator>
auto fragmented_blocks(Allocator& allocator, std::size_t live, std::int64_t distribution = kUniform) {
  std::vector<std::remove_cvref_t<decltype(*allocator.allocate(1))>> blocks;
  for (std::uint64_t s : random_sizes(live, 1, distribution)) blocks.push_back(*allocator.allocate(s));
  const auto victims = random_victims(live, live, 2);
  const auto refill = random_sizes(live / 2, 5, distribution);
  for (std::size_t i = 0; i < live / 2; ++i) {
    allocator.free(blocks[victims[i]]);
    blocks[victims[i]] = *allocator.allocate(refill[i]);
  }
  return blocks;
}

// The pairs: pair i frees blocks[victim(i)] and allocates size(i) in its place (a cycle of 65,536).
struct ChurnOps {
  std::vector<std::uint64_t> sizes;
  std::vector<std::uint32_t> victims;
  ChurnOps(std::size_t live, std::int64_t distribution)
      : sizes(random_sizes(kCycle, 3, distribution)), victims(random_victims(kCycle, live, 4)) {}
  static constexpr std::size_t kCycle = 1 << 16;
};

// The offset-allocator model with its ids held as 8 bytes, the size of TlsfArena's (a node index and
// the allocation's stamp, which is how ours refuses a double free): the caller's table of ids is then
// as large as it is for TlsfArena, so the two differ in the allocators alone.
struct WideIdOffsetAllocator {
  BinnedOffsetAllocator inner;
  std::optional<std::uint64_t> allocate(std::uint64_t size) {
    const auto b = inner.allocate(size);
    return b ? std::optional<std::uint64_t>(*b) : std::nullopt;
  }
  void free(std::uint64_t b) { inner.free(static_cast<BinnedOffsetAllocator::Block>(b)); }
};

// The whole manager (handles, tenants, chunk accounting, lock) over the none backing, sized for the
// distribution, with idle chunks kept (gc_idle of an hour) as a pool in steady use keeps them.
inline memory::MemoryManagerOptions churn_manager_options(std::int64_t distribution) {
  memory::MemoryManagerOptions o;
  o.pool_size = capacity_for(distribution);
  o.backing = memory::BackingKind::none;
  o.gc_idle = std::chrono::hours(1);
  return o;
}
struct ManagerAdapter {
  memory::GPUMemoryManager& m;
  std::optional<memory::MemoryBlock> allocate(std::uint64_t size) { return m.allocate(size); }
  void free(const memory::MemoryBlock& b) { m.free(b); }
};

}  // namespace apt::vgpu::bench
