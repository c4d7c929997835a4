// Starting and waiting for a child process with extra environment variables.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <sys/types.h>
#include <vector>

namespace apt::vgpu::runtime::detail {

// Starts argv[0] (PATH search) with the current environment plus `overrides`
// (which replace same-named variables). Throws ProcessError naming the
// command and the OS error when it cannot start.
[[nodiscard]] pid_t spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& overrides);

// Waits for `pid`; returns its exit code, or 128 + signal when killed.
[[nodiscard]] int wait_for(pid_t pid);

}  // namespace apt::vgpu::runtime::detail
