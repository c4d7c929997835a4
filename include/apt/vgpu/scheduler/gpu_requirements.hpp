// What a task asks of the scheduler (the seed's gpu_requirements).
//
//   GpuRequirements req = GpuRequirements::with("16GB", 0.25);   // {'memory': '16GB', 'compute': 0.25}
//   req.priority = 5; req.max_retries = 2; req.timeout = std::chrono::minutes(30);
//
// Thread safety: a plain value type.
#pragma once

#include <apt/vgpu/config/vgpu_config.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace apt::vgpu::scheduler {

struct GpuRequirements {
  std::uint64_t memory = 0;        // bytes of GPU memory reserved and enforced; 0: none
  std::optional<double> compute;   // share of one GPU in (0, 1]; absent: none reserved
  std::optional<double> cpu;       // CPU cores reserved on the node (> 0, up to its cores); absent: none
  int priority = 0;                // higher first (priority policy; preemption)
  std::string user;                // fair-share key when `group` is empty
  std::string group;               // fair-share key (team, project)
  std::optional<std::uint32_t> max_retries;  // extra attempts after a failure (with auto_recover); default: the scheduler's
  bool auto_recover = true;        // retry failures, moving off unhealthy GPUs
  std::optional<std::uint32_t> fallback_gpu;  // tried first when the task's GPU turned unhealthy
  std::optional<std::uint32_t> gpu;           // run only on this GPU
  std::optional<std::chrono::milliseconds> timeout;            // stop the task after this long
  std::optional<std::chrono::milliseconds> expected_duration;  // backfilling hint (adaptive policy)
  config::Isolation isolation = config::Isolation::none;       // for command tasks
  std::string name;                // shown in listings; default "task-<id>"

  // {'memory': ..., 'compute': ...} as the seed writes it; throws InvalidArgument for a bad size.
  [[nodiscard]] static GpuRequirements with(std::string_view memory, std::optional<double> compute = std::nullopt);
  // The fair-share key: group, else user.
  [[nodiscard]] const std::string& share_key() const noexcept { return group.empty() ? user : group; }
};

}  // namespace apt::vgpu::scheduler
