// What the monitor knows of a virtual GPU and of the processes it sees: the
// input and output of attribution. The runtime (which knows the vGPUs)
// provides VgpuView lists; the monitor joins them with the backend's process
// list to say who uses what.
//
// Thread safety: plain value types.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace apt::vgpu::monitoring {

struct VgpuView {
  std::string name;   // "vgpu-3"
  std::uint32_t gpu = 0;
  std::uint64_t lease_id = 0;
  std::optional<std::uint64_t> memory_limit;  // bytes
  std::optional<double> compute_share;
  bool active = false;                        // entered or running a process
  std::vector<std::int64_t> pids;             // processes started on it
};

struct ProcessUsage {
  std::int64_t pid = 0;
  std::string command;
  std::uint32_t gpu = 0;
  std::optional<std::uint64_t> memory_bytes;  // absent when the driver does not say
  std::string vgpu;                           // the vGPU it was started on, if known
};

struct VgpuUsage {
  VgpuView vgpu;
  std::vector<ProcessUsage> processes;
  std::optional<std::uint64_t> memory_used;  // sum over its processes; absent if none reports memory
  // memory_used / memory_limit x 100, when both are known.
  [[nodiscard]] std::optional<double> memory_percent() const {
    if (!memory_used || !vgpu.memory_limit || *vgpu.memory_limit == 0) return std::nullopt;
    return static_cast<double>(*memory_used) * 100.0 / static_cast<double>(*vgpu.memory_limit);
  }
};

}  // namespace apt::vgpu::monitoring
