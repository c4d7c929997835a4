// How VirtualGPU::run() starts and supervises a child process, and what it
// reports back.
//
// Thread safety: plain value types; `stop` may be set from any thread while
// the child runs.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <sys/types.h>

namespace apt::vgpu::runtime {

struct RunOptions {
  // Collect the child's stdout and stderr (merged) into RunResult::output.
  bool capture_output = false;
  // Kill the child (SIGTERM, then SIGKILL after stop_grace) when it runs longer.
  std::optional<std::chrono::milliseconds> timeout;
  // Set to true from another thread to stop the child the same way.
  const std::atomic<bool>* stop = nullptr;
  std::chrono::milliseconds stop_grace{2000};
  // Start the child in its own process group, so stopping it also stops what it started.
  bool own_process_group = false;
  // Called with the child's pid right after it starts.
  std::function<void(pid_t)> on_start;
};

struct RunResult {
  int exit_code = 0;  // 128 + signal when killed by a signal
  std::string output;
  bool timed_out = false;
  bool stopped = false;  // ended because `stop` was set
};

}  // namespace apt::vgpu::runtime
