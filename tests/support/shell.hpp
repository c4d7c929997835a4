// Runs a shell command line and captures its exit code, stdout and stderr, for
// tests that drive real programs (the vgpu CLI, programs under LD_PRELOAD).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace apt::vgpu::testing {

struct ShellResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

inline ShellResult run_shell(const std::string& command) {
  // CTest runs tests in parallel processes: name the capture files per process and call.
  static int counter = 0;
  const auto dir = std::filesystem::temp_directory_path();
  const std::string stem = "vgpu-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  const auto out = dir / (stem + ".out");
  const auto err = dir / (stem + ".err");
  const int status = std::system((command + " >" + out.string() + " 2>" + err.string()).c_str());
  ShellResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

}  // namespace apt::vgpu::testing
