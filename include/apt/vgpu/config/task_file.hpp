// Task files for `vgpu submit` and `vgpu queue`: YAML with a top-level `tasks:`
// list, each task a mapping of command, name, memory, compute, priority, user,
// group, max_retries, timeout, count, gpu, fallback_gpu and isolation (see
// docs/scheduler.md). Validated by the same reader as profiles: every problem
// is collected and reported as a ConfigError with file:line:column, the dotted
// key (tasks[2].compute), the value and the accepted range, with the nearest
// valid key for a likely typo.
//
// Thread safety: pure functions (load_task_file reads the file).
#pragma once

#include <apt/vgpu/config/vgpu_config.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace apt::vgpu::config {

struct TaskFileEntry {
  std::string name;                // may hold "{i}", replaced by the copy's index
  std::vector<std::string> argv;   // a shell string becomes /bin/sh -c STRING
  std::uint64_t memory = 0;        // bytes; 0: no memory limit
  std::optional<double> compute;   // share in (0, 1]
  int priority = 0;                // -1000..1000
  std::string user;
  std::string group;
  std::optional<std::uint32_t> max_retries;        // 0..100
  std::optional<std::chrono::milliseconds> timeout;  // 1 ms..30 days
  std::uint32_t count = 1;         // copies, 1..100000
  std::optional<std::uint32_t> gpu;           // 0..1023
  std::optional<std::uint32_t> fallback_gpu;  // 0..1023
  std::optional<Isolation> isolation;         // absent: the profile's
};

// `file` only names the text in messages.
[[nodiscard]] std::vector<TaskFileEntry> parse_task_file(std::string_view yaml_text, const std::string& file);
[[nodiscard]] std::vector<TaskFileEntry> load_task_file(const std::filesystem::path& file);

}  // namespace apt::vgpu::config
