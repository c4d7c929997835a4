#include "spawn.hpp"

#include <apt/vgpu/common/error.hpp>

#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>

extern char** environ;

namespace apt::vgpu::runtime::detail {

pid_t spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& overrides) {
  if (argv.empty() || argv.front().empty()) {
    throw InvalidArgument("command: nothing to run; give a program and its arguments, e.g. -- python3 train.py");
  }
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string entry(*e);
    const auto eq = entry.find('=');
    if (eq != std::string::npos && overrides.count(entry.substr(0, eq)) != 0) continue;
    env_strings.push_back(entry);
  }
  for (const auto& [key, value] : overrides) env_strings.push_back(key + "=" + value);

  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> argp;
  for (std::string& s : args) argp.push_back(s.data());
  argp.push_back(nullptr);

  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, argp[0], nullptr, nullptr, argp.data(), envp.data());
  if (rc != 0) {
    throw ProcessError(fmt::format("cannot start '{}': {}{}", argv.front(), std::strerror(rc),
                                   rc == ENOENT ? " (is it installed and on PATH?)" : ""));
  }
  return pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw ProcessError(fmt::format("waiting for process {} failed: {}", pid, std::strerror(errno)));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace apt::vgpu::runtime::detail
