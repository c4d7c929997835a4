// Pool allocator benchmarks (docs/benchmarks.md):
//   build/release/bench/memory_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// Churn: each iteration is one allocate + one free of a random live block, with
// the number of live blocks held constant (1k, 10k, 100k); sizes uniform in
// 256 B .. 64 KiB or log-uniform in 256 B .. 64 MiB. items_per_second counts
// both operations, so ns/op = 1e9 / items_per_second. Trace: the transformer
// training trace (vgpu memory generate's) replayed through the allocator, one
// item per event, with its fit (the highest block end over the peak requested)
// and, in a pool 0.5% above the peak, its failures as counters.
//
// Allocators: TlsfArena (ours), BinnedOffsetAllocator (our model of
// OffsetAllocator's design; BM_BinnedOffsetWideIdAllocFree holds its ids as 8 bytes, as ours are),
// BestFitFreeList (our model of RMM's pool design),
// and the whole GPUMemoryManager. The churn benchmarks take /LIVE/0 for uniform
// sizes and /LIVE/1 for log-uniform ones.
#include "best_fit_free_list.hpp"
#include "binned_offset_allocator.hpp"
#include "churn_workload.hpp"

#include <apt/vgpu/memory/allocation_trace.hpp>
#include <apt/vgpu/memory/gpu_memory_manager.hpp>
#include <apt/vgpu/memory/tlsf_arena.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <optional>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace {

using apt::vgpu::bench::BestFitFreeList;
using apt::vgpu::bench::BinnedOffsetAllocator;
using apt::vgpu::bench::capacity_for;
using apt::vgpu::bench::ChurnOps;
using apt::vgpu::bench::fragmented_blocks;
using apt::vgpu::bench::kLogUniform;
using apt::vgpu::bench::kMaxBlocks;
using apt::vgpu::bench::kUniform;
using apt::vgpu::bench::kUniformCapacity;
using apt::vgpu::memory::TlsfArena;

// The measured loop, the same for every allocator: free a random live block
// and allocate a random size in its place.
template <class Block, class Release, class Acquire>
void churn(benchmark::State& state, std::vector<Block>& blocks, Release release, Acquire acquire,
           std::int64_t distribution = kUniform) {
  const ChurnOps ops(blocks.size(), distribution);
  std::size_t i = 0;
  for (auto _ : state) {
    const std::size_t k = i & (ChurnOps::kCycle - 1);
    release(blocks[ops.victims[k]]);
    blocks[ops.victims[k]] = acquire(ops.sizes[k]);
    ++i;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * 2);
}

void BM_TlsfAllocFree(benchmark::State& state) {
  TlsfArena arena(capacity_for(state.range(1)));
  auto blocks = fragmented_blocks(arena, static_cast<std::size_t>(state.range(0)), state.range(1));
  churn(state, blocks, [&](TlsfArena::BlockId b) { arena.free(b); },
        [&](std::uint64_t size) { return *arena.allocate(size); }, state.range(1));
}

void BM_BinnedOffsetAllocFree(benchmark::State& state) {
  BinnedOffsetAllocator allocator(capacity_for(state.range(1)), kMaxBlocks);
  auto blocks = fragmented_blocks(allocator, static_cast<std::size_t>(state.range(0)), state.range(1));
  churn(state, blocks, [&](BinnedOffsetAllocator::Block b) { allocator.free(b); },
        [&](std::uint64_t size) { return *allocator.allocate(size); }, state.range(1));
}

// The model with its ids held as 8 bytes, as ours are, so that the caller's table of ids is the same
// size for both: it tells the allocators' cost apart from that table's (docs/benchmarks.md).
void BM_BinnedOffsetWideIdAllocFree(benchmark::State& state) {
  apt::vgpu::bench::WideIdOffsetAllocator allocator{BinnedOffsetAllocator(capacity_for(state.range(1)), kMaxBlocks)};
  auto blocks = fragmented_blocks(allocator, static_cast<std::size_t>(state.range(0)), state.range(1));
  churn(state, blocks, [&](std::uint64_t b) { allocator.free(b); },
        [&](std::uint64_t size) { return *allocator.allocate(size); }, state.range(1));
}

void BM_BestFitFreeListAllocFree(benchmark::State& state) {
  BestFitFreeList list(kUniformCapacity);
  auto blocks = fragmented_blocks(list, static_cast<std::size_t>(state.range(0)));
  churn(state, blocks, [&](const BestFitFreeList::Block& b) { list.free(b); },
        [&](std::uint64_t size) { return *list.allocate(size); });
  state.counters["free_blocks"] = static_cast<double>(list.free_blocks());
}

// The training trace, with ids made dense so the replay's own bookkeeping is a vector lookup.
struct DenseTrace {
  std::vector<apt::vgpu::memory::TraceEvent> events;
  std::size_t ids = 0;
  std::uint64_t peak = 0;
};

const DenseTrace& training_trace() {
  static const DenseTrace trace = [] {
    DenseTrace t;
    t.events = apt::vgpu::memory::generate_transformer_trace({});
    std::unordered_map<std::uint64_t, std::uint64_t> dense;
    for (auto& e : t.events) {
      auto [it, inserted] = dense.try_emplace(e.id, dense.size());
      e.id = it->second;
    }
    t.ids = dense.size();
    t.peak = apt::vgpu::memory::peak_live_bytes(t.events);
    return t;
  }();
  return trace;
}

// Replays the trace through `allocator` once; returns the failures and raises `high_water` to the
// highest block end placed.
template <class Allocator>
std::uint64_t replay(Allocator& allocator, const DenseTrace& trace, std::uint64_t& high_water) {
  using Block = std::remove_cvref_t<decltype(*allocator.allocate(1))>;
  std::vector<std::optional<Block>> live(trace.ids);
  std::uint64_t failures = 0;
  for (const auto& e : trace.events) {
    if (e.kind == apt::vgpu::memory::TraceEvent::Kind::allocate) {
      live[e.id] = allocator.allocate(e.size);
      if (!live[e.id]) {
        ++failures;
        continue;
      }
      high_water = std::max(high_water, allocator.offset(*live[e.id]) + allocator.size(*live[e.id]));
    } else if (live[e.id]) {
      allocator.free(*live[e.id]);
      live[e.id].reset();
    }
  }
  for (auto& b : live) {
    if (b) allocator.free(*b);
  }
  return failures;
}

template <class Allocator, class Make>
void trace_benchmark(benchmark::State& state, Make make) {
  const DenseTrace& trace = training_trace();
  std::uint64_t high_water = 0;
  {
    Allocator allocator = make(80'000'000'000ULL);
    for (auto _ : state) (void)replay(allocator, trace, high_water);  // every replay ends with all freed
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * trace.events.size()));
  state.counters["peak_address_over_peak_requested"] = static_cast<double>(high_water) / static_cast<double>(trace.peak);
  Allocator tight = make(trace.peak + trace.peak / 200);  // 0.5% above the peak
  std::uint64_t ignored = 0;
  state.counters["failures_at_1.005x"] = static_cast<double>(replay(tight, trace, ignored));
}

void BM_TlsfTrainingTrace(benchmark::State& state) {
  trace_benchmark<TlsfArena>(state, [](std::uint64_t capacity) { return TlsfArena(capacity); });
}

void BM_BinnedOffsetTrainingTrace(benchmark::State& state) {
  trace_benchmark<BinnedOffsetAllocator>(state, [](std::uint64_t capacity) {
    return BinnedOffsetAllocator(capacity, kMaxBlocks);
  });
}

// The whole manager (handles, tenants, chunk accounting, lock) over the none backing.
void BM_ManagerAllocFree(benchmark::State& state) {
  apt::vgpu::memory::GPUMemoryManager manager(apt::vgpu::bench::churn_manager_options(state.range(1)));
  // The same operations as BM_TlsfAllocFree's on the same sizes (fill, free and refill a random half,
  // then churn), so the manager's time over its arena's is the cost of the manager alone.
  apt::vgpu::bench::ManagerAdapter adapter{manager};
  auto blocks = fragmented_blocks(adapter, static_cast<std::size_t>(state.range(0)), state.range(1));
  churn(state, blocks, [&](const apt::vgpu::memory::MemoryBlock& b) { manager.free(b); },
        [&](std::uint64_t size) { return manager.allocate(size); }, state.range(1));
}

BENCHMARK(BM_TlsfAllocFree)->ArgsProduct({{1000, 10000, 100000}, {kUniform, kLogUniform}});
BENCHMARK(BM_BinnedOffsetAllocFree)->ArgsProduct({{1000, 10000, 100000}, {kUniform, kLogUniform}});
BENCHMARK(BM_BinnedOffsetWideIdAllocFree)->ArgsProduct({{10000, 100000}, {kUniform, kLogUniform}});
BENCHMARK(BM_BestFitFreeListAllocFree)->Arg(1000)->Arg(10000)->Arg(100000);
BENCHMARK(BM_TlsfTrainingTrace);
BENCHMARK(BM_BinnedOffsetTrainingTrace);
BENCHMARK(BM_ManagerAllocFree)->ArgsProduct({{1000, 10000, 100000}, {kUniform, kLogUniform}});

}  // namespace

BENCHMARK_MAIN();
