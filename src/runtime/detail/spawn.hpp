// Starting and waiting for a child process with extra environment variables.
#pragma once

#include <apt/vgpu/runtime/run_options.hpp>

#include <map>
#include <string>
#include <sys/types.h>
#include <vector>

namespace apt::vgpu::runtime::detail {

struct Spawned {
  pid_t pid = -1;
  int output_fd = -1;  // read end of the child's stdout+stderr when captured, else -1
};

// Starts argv[0] (PATH search) with the current environment plus `overrides`
// (which replace same-named variables). Throws ProcessError naming the
// command and the OS error when it cannot start.
[[nodiscard]] Spawned spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& overrides,
                            bool capture_output = false, bool own_process_group = false);

// Owns a started child until the code that waits for it takes over: if anything
// throws in between (a caller's on_start, bookkeeping), the destructor kills and
// reaps the child and closes its output pipe, so no child runs unowned.
class ChildGuard {
 public:
  explicit ChildGuard(const Spawned& child) : child_(child) {}
  ~ChildGuard();
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  // The waiting code owns the child from here on.
  void release() noexcept { armed_ = false; }

 private:
  Spawned child_;
  bool armed_ = true;
};

// Waits for `pid`; returns its exit code, or 128 + signal when killed.
[[nodiscard]] int wait_for(pid_t pid);

// Waits while collecting output and enforcing the timeout and stop flag of `options`.
[[nodiscard]] RunResult supervise(const Spawned& child, const RunOptions& options);

}  // namespace apt::vgpu::runtime::detail
