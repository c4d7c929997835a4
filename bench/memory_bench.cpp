// Pool allocator benchmarks (docs/benchmarks.md):
//   build/release/bench/memory_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// Each iteration is one allocate + one free of a random live block, with the
// number of live blocks held constant (1k, 10k, 100k); sizes 256 B .. 64 KiB.
// items_per_second counts both operations, so ns/op = 1e9 / items_per_second.
#include "best_fit_free_list.hpp"

#include <apt/vgpu/memory/gpu_memory_manager.hpp>
#include <apt/vgpu/memory/tlsf_arena.hpp>

#include <benchmark/benchmark.h>

#include <random>
#include <type_traits>
#include <vector>

namespace {

using apt::vgpu::bench::BestFitFreeList;
using apt::vgpu::memory::TlsfArena;

constexpr std::uint64_t kCapacity = 64ULL << 30U;  // 64 GiB of offsets: never the limit here

std::vector<std::uint64_t> random_sizes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint64_t> sizes(n);
  for (auto& s : sizes) s = 256 + rng() % (64 * 1024);
  return sizes;
}

// Random indices into the live set, precomputed so the loop measures only the allocator.
std::vector<std::uint32_t> random_victims(std::size_t n, std::size_t live, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint32_t> v(n);
  for (auto& i : v) i = static_cast<std::uint32_t>(rng() % live);
  return v;
}

// Fills `allocator` with `live` blocks, then frees a random half and refills
// it, so the free space is fragmented like a pool in use.
template <class Allocator>
auto fragmented_blocks(Allocator& allocator, std::size_t live) {
  std::vector<std::remove_cvref_t<decltype(*allocator.allocate(1))>> blocks;
  for (std::uint64_t s : random_sizes(live, 1)) blocks.push_back(*allocator.allocate(s));
  const auto victims = random_victims(live, live, 2);
  for (std::size_t i = 0; i < live / 2; ++i) {
    allocator.free(blocks[victims[i]]);
    blocks[victims[i]] = *allocator.allocate(256 + (victims[i] * 977) % 65536);
  }
  return blocks;
}

// The measured loop, the same for every allocator: free a random live block
// and allocate a random size in its place.
template <class Block, class Release, class Acquire>
void churn(benchmark::State& state, std::vector<Block>& blocks, Release release, Acquire acquire) {
  const auto sizes = random_sizes(1 << 16, 3);
  const auto which = random_victims(1 << 16, blocks.size(), 4);
  std::size_t i = 0;
  for (auto _ : state) {
    const std::size_t k = i & 0xffff;
    release(blocks[which[k]]);
    blocks[which[k]] = acquire(sizes[k]);
    ++i;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * 2);
}

void BM_TlsfAllocFree(benchmark::State& state) {
  TlsfArena arena(kCapacity);
  auto blocks = fragmented_blocks(arena, static_cast<std::size_t>(state.range(0)));
  churn(state, blocks, [&](TlsfArena::BlockId b) { arena.free(b); },
        [&](std::uint64_t size) { return *arena.allocate(size); });
}

void BM_BestFitFreeListAllocFree(benchmark::State& state) {
  BestFitFreeList list(kCapacity);
  auto blocks = fragmented_blocks(list, static_cast<std::size_t>(state.range(0)));
  churn(state, blocks, [&](const BestFitFreeList::Block& b) { list.free(b); },
        [&](std::uint64_t size) { return *list.allocate(size); });
  state.counters["free_blocks"] = static_cast<double>(list.free_blocks());
}

// The whole manager (handles, tenants, chunk accounting, mutex) over the none backing.
void BM_ManagerAllocFree(benchmark::State& state) {
  apt::vgpu::memory::MemoryManagerOptions o;
  o.pool_size = kCapacity;
  o.backing = apt::vgpu::memory::BackingKind::none;
  o.gc_idle = std::chrono::hours(1);
  apt::vgpu::memory::GPUMemoryManager manager(o);
  std::vector<apt::vgpu::memory::MemoryBlock> blocks;
  for (std::uint64_t s : random_sizes(static_cast<std::size_t>(state.range(0)), 1)) {
    blocks.push_back(manager.allocate(s));
  }
  churn(state, blocks, [&](const apt::vgpu::memory::MemoryBlock& b) { manager.free(b); },
        [&](std::uint64_t size) { return manager.allocate(size); });
}

BENCHMARK(BM_TlsfAllocFree)->Arg(1000)->Arg(10000)->Arg(100000);
BENCHMARK(BM_BestFitFreeListAllocFree)->Arg(1000)->Arg(10000)->Arg(100000);
BENCHMARK(BM_ManagerAllocFree)->Arg(1000)->Arg(10000)->Arg(100000);

}  // namespace

BENCHMARK_MAIN();
