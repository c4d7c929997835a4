#include "spawn.hpp"

#include <apt/vgpu/common/error.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <optional>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace apt::vgpu::runtime::detail {

Spawned spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& overrides,
              bool capture_output, bool own_process_group) {
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

  int pipe_fds[2] = {-1, -1};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  if (capture_output) {
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
      throw ProcessError(fmt::format("cannot create a pipe for '{}': {}", argv.front(), std::strerror(errno)));
    }
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
  }
  if (own_process_group) {
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
  }
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, argp[0], &actions, &attr, argp.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (capture_output) ::close(pipe_fds[1]);
  if (rc != 0) {
    if (capture_output) ::close(pipe_fds[0]);
    throw ProcessError(fmt::format("cannot start '{}': {}{}", argv.front(), std::strerror(rc),
                                   rc == ENOENT ? " (is it installed and on PATH?)" : ""));
  }
  return Spawned{pid, capture_output ? pipe_fds[0] : -1};
}

namespace {

int decode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

ChildGuard::~ChildGuard() {
  if (!armed_) return;
  ::kill(child_.pid, SIGKILL);
  int status = 0;
  while (::waitpid(child_.pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (child_.output_fd >= 0) ::close(child_.output_fd);
}

int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw ProcessError(fmt::format("waiting for process {} failed: {}", pid, std::strerror(errno)));
  }
  return decode(status);
}

namespace {

// Reads what is in the pipe now, without waiting (a grandchild may hold it open).
void drain_available(int fd, std::string& out) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  char buffer[4096];
  ssize_t n = 0;
  while ((n = ::read(fd, buffer, sizeof buffer)) > 0) out.append(buffer, static_cast<std::size_t>(n));
}

}  // namespace

// Waits on the child's pidfd and its output pipe with poll(2): it wakes when the
// child exits, when it writes, or at the next deadline (timeout, SIGKILL after the
// grace period), never on a timer. Only a caller's `stop` flag, which cannot be
// waited on, is looked at every 50 ms. The child's exit ends the wait even when a
// process it left behind still holds the pipe: what is in the pipe then is kept.
RunResult supervise(const Spawned& child, const RunOptions& options) {
  using Clock = std::chrono::steady_clock;
  constexpr auto kStopCheck = std::chrono::milliseconds(50);
  RunResult result;
  const auto start = Clock::now();
  std::optional<Clock::time_point> kill_at;  // SIGKILL deadline once SIGTERM was sent
  const pid_t target = options.own_process_group ? -child.pid : child.pid;
  int fd = child.output_fd;
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, child.pid, 0));
  if (pidfd < 0) {
    throw ProcessError(fmt::format("cannot watch process {} (pidfd_open: {}); Linux 5.3 or newer is needed",
                                   child.pid, std::strerror(errno)));
  }
  bool exited = false;
  while (!exited) {
    // The next moment something must be done without an event.
    std::optional<Clock::time_point> wake = kill_at;
    if (!kill_at && options.timeout) wake = start + *options.timeout;
    if (!kill_at && options.stop != nullptr) {
      const auto check = Clock::now() + kStopCheck;
      wake = wake ? std::min(*wake, check) : check;
    }
    int wait_ms = -1;
    if (wake) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(*wake - Clock::now()).count();
      wait_ms = static_cast<int>(std::clamp<long long>(left, 0, 60'000));
    }
    pollfd fds[2] = {{pidfd, POLLIN, 0}, {fd, POLLIN, 0}};
    const int ready = ::poll(fds, fd >= 0 ? 2 : 1, wait_ms);
    if (ready < 0 && errno != EINTR) {
      ::close(pidfd);
      throw ProcessError(fmt::format("waiting for process {} failed: {}", child.pid, std::strerror(errno)));
    }
    if (ready > 0 && fd >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      char buffer[4096];
      const ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n > 0) {
        result.output.append(buffer, static_cast<std::size_t>(n));
      } else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        ::close(fd);
        fd = -1;
      }
    }
    if (ready > 0 && (fds[0].revents & POLLIN) != 0) {
      int status = 0;
      while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
      }
      result.exit_code = decode(status);
      exited = true;
      break;
    }
    const auto now = Clock::now();
    if (!kill_at) {
      const bool timed_out = options.timeout && now - start >= *options.timeout;
      const bool stopped = options.stop != nullptr && options.stop->load(std::memory_order_relaxed);
      if (timed_out || stopped) {
        result.timed_out = timed_out;
        result.stopped = !timed_out && stopped;
        ::kill(target, SIGTERM);
        kill_at = now + options.stop_grace;
      }
    } else if (now >= *kill_at) {
      ::kill(target, SIGKILL);
      kill_at = now + std::chrono::hours(24);  // once; from now on only the exit wakes us
    }
  }
  ::close(pidfd);
  if (fd >= 0) {
    drain_available(fd, result.output);  // whatever the child wrote last
    ::close(fd);
  }
  return result;
}

}  // namespace apt::vgpu::runtime::detail
