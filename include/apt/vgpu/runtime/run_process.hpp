// Runs a command with extra environment variables and waits for it: the
// process half of VirtualGPU::run(), for callers that bind the child to a
// slice themselves (the CLI with a vgpud slice).
//
// Thread safety: reentrant.
#pragma once

#include <apt/vgpu/runtime/run_options.hpp>

#include <map>
#include <string>
#include <vector>

namespace apt::vgpu::runtime {

// Starts argv[0] (searched on PATH) with this process's environment plus
// `environment`, calls options.on_start with its pid, and waits (supervised
// when output is captured, a timeout or a stop flag is set). Throws
// ProcessError when it cannot start.
RunResult run_process(const std::vector<std::string>& argv, const std::map<std::string, std::string>& environment,
                      const RunOptions& options = {});

}  // namespace apt::vgpu::runtime
