#include <apt/vgpu/runtime/run_process.hpp>

#include "detail/spawn.hpp"


namespace apt::vgpu::runtime {

RunResult run_process(const std::vector<std::string>& argv, const std::map<std::string, std::string>& environment,
                      const RunOptions& options) {
  const detail::Spawned child = detail::spawn(argv, environment, options.capture_output, options.own_process_group);
  detail::ChildGuard guard(child);  // never leave the child running unowned
  if (options.on_start) options.on_start(child.pid);
  guard.release();
  const bool supervised = options.capture_output || options.timeout || options.stop != nullptr;
  if (!supervised) return RunResult{detail::wait_for(child.pid), {}, false, false};
  return detail::supervise(child, options);
}

}  // namespace apt::vgpu::runtime
