#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/memory/gpu_memory_manager.hpp>
#include <apt/vgpu/memory/trace_replay.hpp>

#include <fmt/format.h>

#include <chrono>
#include <unordered_map>

namespace apt::vgpu::memory {

ReplayReport replay(const std::vector<TraceEvent>& events, const ReplayOptions& options) {
  ReplayReport report;
  constexpr std::uint64_t kChunk = 2ULL << 20U;
  std::uint64_t pool = options.pool_size;
  if (pool == 0) {
    // GPUMemoryManager's largest pool (16 PiB): past it, say so here with the trace's peak.
    constexpr std::uint64_t kLargestPool = std::uint64_t{1} << 54;
    const std::uint64_t peak = peak_live_bytes(events);
    if (peak > kLargestPool) {
      throw InvalidArgument(fmt::format("trace: {} bytes live at its peak; a replay pool holds at most {}; "
                                        "give --pool-size or a smaller trace", peak, kLargestPool));
    }
    pool = peak / 100 * 105;
    pool = (pool + kChunk - 1) / kChunk * kChunk;
    if (pool == 0) pool = kChunk;
  }
  MemoryManagerOptions mo;
  mo.pool_size = pool;
  mo.backing = options.backing;
  mo.compaction = options.compaction;
  mo.fragmentation_threshold = options.fragmentation_threshold;
  mo.eviction = false;                  // a trace's blocks are all in use
  mo.gc_idle = std::chrono::milliseconds(0);  // reserved = what is committed right now
  GPUMemoryManager manager(mo);
  report.pool_size = manager.get_stats().pool_size;

  std::unordered_map<std::uint64_t, MemoryBlock> live;
  live.reserve(1024);
  const std::uint64_t every = options.samples == 0 ? 0 : std::max<std::uint64_t>(1, events.size() / options.samples);
  std::chrono::nanoseconds spent{0};
  std::uint64_t ops = 0;
  for (std::uint64_t i = 0; i < events.size(); ++i) {
    const TraceEvent& e = events[i];
    if (e.kind == TraceEvent::Kind::allocate) {
      const auto start = std::chrono::steady_clock::now();
      try {
        const MemoryBlock block = manager.allocate(e.size);
        spent += std::chrono::steady_clock::now() - start;
        live[e.id] = block;
        ++report.allocations;
      } catch (const OutOfMemoryError&) {
        spent += std::chrono::steady_clock::now() - start;
        ++report.failures;
        const MemoryStats s = manager.get_stats();
        if (s.free >= e.size) ++report.failures_with_enough_free;
      }
      ++ops;
    } else if (auto it = live.find(e.id); it != live.end()) {
      const auto start = std::chrono::steady_clock::now();
      manager.free(it->second);
      spent += std::chrono::steady_clock::now() - start;
      live.erase(it);
      ++report.frees;
      ++ops;
    }
    if (every != 0 && i % every == 0) report.fragmentation.emplace_back(i, manager.get_stats().fragmentation);
  }
  const MemoryStats s = manager.get_stats();
  report.events = events.size();
  report.peak_requested = s.peak_requested;
  report.peak_used = s.peak_used;
  report.peak_reserved = s.peak_reserved;
  report.peak_address = s.peak_address;
  report.commit_calls = s.commit_calls;
  report.release_calls = s.release_calls;
  report.compactions = s.compactions;
  report.bytes_moved = s.bytes_moved;
  report.ns_per_op = ops == 0 ? 0.0 : static_cast<double>(spent.count()) / static_cast<double>(ops);
  return report;
}

}  // namespace apt::vgpu::memory
