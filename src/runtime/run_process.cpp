#include <apt/vgpu/runtime/run_process.hpp>

#include "detail/spawn.hpp"

#include <csignal>

namespace apt::vgpu::runtime {

RunResult run_process(const std::vector<std::string>& argv, const std::map<std::string, std::string>& environment,
                      const RunOptions& options) {
  const detail::Spawned child = detail::spawn(argv, environment, options.capture_output, options.own_process_group);
  if (options.on_start) {
    try {
      options.on_start(child.pid);
    } catch (...) {
      // Never leave the child running unowned.
      ::kill(child.pid, SIGKILL);
      (void)detail::wait_for(child.pid);
      throw;
    }
  }
  const bool supervised = options.capture_output || options.timeout || options.stop != nullptr;
  if (!supervised) return RunResult{detail::wait_for(child.pid), {}, false, false};
  return detail::supervise(child, options);
}

}  // namespace apt::vgpu::runtime
