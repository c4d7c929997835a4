// The memory pool: GPUMemoryManager over host memory (default), no backing
// (offsets only) or CUDA memory, with the seed's allocate/free/get_stats and
// the rest of the C++ API (tenants' quotas, pinning addresses, compaction,
// garbage collection). Exhaustion raises VGPUOutOfMemoryError (a MemoryError).
#include "bindings.hpp"

#include <apt/vgpu/memory/gpu_memory_manager.hpp>

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>

#include <chrono>

namespace apt::vgpu::python {

namespace {

using memory::GPUMemoryManager;
using memory::MemoryBlock;

nb::dict stats_dict(const memory::MemoryStats& s) {
  nb::dict d;
  d["pool_size"] = s.pool_size;
  d["used"] = s.used;
  d["free"] = s.free;
  d["reserved"] = s.reserved;
  d["requested"] = s.requested;
  d["peak_used"] = s.peak_used;
  d["peak_reserved"] = s.peak_reserved;
  d["peak_requested"] = s.peak_requested;
  d["peak_address"] = s.peak_address;
  d["largest_free_block"] = s.largest_free_block;
  d["fragmentation"] = s.fragmentation;
  d["spilled_bytes"] = s.spilled_bytes;
  d["live_blocks"] = s.live_blocks;
  d["allocations"] = s.allocations;
  d["frees"] = s.frees;
  d["failed_allocations"] = s.failed_allocations;
  d["compactions"] = s.compactions;
  d["bytes_moved"] = s.bytes_moved;
  d["evictions"] = s.evictions;
  d["restores"] = s.restores;
  d["chunks_committed"] = s.chunks_committed;
  d["chunks_released"] = s.chunks_released;
  d["commit_calls"] = s.commit_calls;
  d["release_calls"] = s.release_calls;
  return d;
}

memory::AllocationOptions allocation_options(const std::string& tenant, nb::handle alignment, bool evictable, bool pinned) {
  memory::AllocationOptions o;
  o.tenant = tenant;
  if (!alignment.is_none()) o.alignment = size_argument(alignment, "alignment");
  o.evictable = evictable;
  o.pinned = pinned;
  return o;
}

}  // namespace

void bind_memory(nb::module_& m) {
  nb::class_<MemoryBlock>(m, "MemoryBlock", "A handle to a block of the pool (stays valid when compaction moves it).")
      .def_prop_ro("valid", &MemoryBlock::valid)
      .def("__eq__", [](const MemoryBlock& a, const MemoryBlock& b) { return a == b; })
      .def("__hash__", [](const MemoryBlock& b) {
        return (static_cast<std::uint64_t>(b.manager) << 48) ^ (static_cast<std::uint64_t>(b.generation) << 24) ^ b.slot;
      })
      .def("__repr__", [](const MemoryBlock& b) {
        return "<MemoryBlock slot=" + std::to_string(b.slot) + " generation=" + std::to_string(b.generation) + ">";
      });

  nb::class_<GPUMemoryManager>(m, "GPUMemoryManager", "The C++ pool (see apt.vgpu.memory.GPUMemoryManager).")
      .def(
          "__init__",
          [](GPUMemoryManager* self, nb::handle pool_size, double fragmentation_threshold, nb::handle alignment,
             const std::string& backing, int device, bool compaction, bool eviction, bool lazy, double gc_idle) {
            memory::MemoryManagerOptions o;
            o.pool_size = size_argument(pool_size, "pool_size");
            o.fragmentation_threshold = fragmentation_threshold;
            o.alignment = size_argument(alignment, "alignment");
            o.backing = memory::parse_backing_kind(backing);
            o.device = device;
            o.compaction = compaction;
            o.eviction = eviction;
            o.lazy = lazy;
            if (!(gc_idle >= 0)) throw nb::value_error("gc_idle must be a number of seconds >= 0");
            o.gc_idle = std::chrono::milliseconds(static_cast<std::int64_t>(gc_idle * 1000.0));
            nb::gil_scoped_release release;
            new (self) GPUMemoryManager(o);
          },
          nb::arg("pool_size"), nb::arg("fragmentation_threshold") = 0.1, nb::arg("alignment") = 256,
          nb::arg("backing") = "host", nb::arg("device") = 0, nb::arg("compaction") = true,
          nb::arg("eviction") = true, nb::arg("lazy") = true, nb::arg("gc_idle") = 1.0)
      .def(
          "allocate",
          [](GPUMemoryManager& pool, nb::handle size, const std::string& tenant, nb::handle alignment, bool evictable,
             bool pinned) {
            const std::uint64_t bytes = size_argument(size, "size");
            const memory::AllocationOptions o = allocation_options(tenant, alignment, evictable, pinned);
            nb::gil_scoped_release release;  // may compact or evict
            return pool.allocate(bytes, o);
          },
          nb::arg("size"), nb::arg("tenant") = "", nb::arg("alignment").none() = nb::none(),
          nb::arg("evictable") = false, nb::arg("pinned") = false)
      .def("free", &GPUMemoryManager::free, nb::arg("block"), nb::call_guard<nb::gil_scoped_release>())
      .def("address", &GPUMemoryManager::address, nb::arg("block"), nb::call_guard<nb::gil_scoped_release>())
      .def("size", &GPUMemoryManager::size, nb::arg("block"))
      .def("resident", &GPUMemoryManager::resident, nb::arg("block"))
      .def(
          "set_quota",
          [](GPUMemoryManager& pool, const std::string& tenant, nb::handle bytes) {
            pool.set_quota(tenant, size_argument(bytes, "quota"));
          },
          nb::arg("tenant"), nb::arg("bytes"))
      .def("quota", &GPUMemoryManager::quota, nb::arg("tenant"))
      .def("tenant_usage", &GPUMemoryManager::tenant_usage, nb::arg("tenant"))
      .def("compact", &GPUMemoryManager::compact, nb::call_guard<nb::gil_scoped_release>())
      .def(
          "collect_garbage",
          [](GPUMemoryManager& pool, std::optional<double> idle) {
            std::optional<std::chrono::milliseconds> window;
            if (idle) window = std::chrono::milliseconds(static_cast<std::int64_t>(*idle * 1000.0));
            nb::gil_scoped_release release;
            return pool.collect_garbage(window);
          },
          nb::arg("idle").none() = nb::none())
      .def("get_stats", [](const GPUMemoryManager& pool) { return stats_dict(pool.get_stats()); })
      .def_prop_ro("backing", [](const GPUMemoryManager& pool) { return std::string(memory::to_string(pool.backing_kind())); })
      .def("check_invariants", &GPUMemoryManager::check_invariants);
}

}  // namespace apt::vgpu::python
