// A real vgpud for tests (after moby's testutil/daemon): its own temporary
// directory (socket, state, config, log), started with NOTIFY_SOCKET pointed at
// the test's own datagram socket so the test waits for READY=1 instead of
// sleeping; stop (SIGTERM), kill (SIGKILL) and restart; a long-poll helper that
// waits for an event. Also: children whose stdout the test reads line by line,
// and waiting on several processes through pidfds.
#pragma once

#include "support/shell.hpp"

#include <apt/vgpu/runtime/daemon_client.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <fcntl.h>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <poll.h>
#include <string>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace apt::vgpu::testing {

inline int pidfd_of(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// Waits (poll on pidfds, no sleeping) until one of `pids` exits or `guard_ms` passes
// (a hang guard, not a timing assertion); returns its index, or -1 on the guard.
inline int wait_first_exit(const std::vector<pid_t>& pids, int guard_ms = 120'000) {
  std::vector<pollfd> fds;
  for (pid_t p : pids) fds.push_back(pollfd{pidfd_of(p), POLLIN, 0});
  int which = -1;
  if (::poll(fds.data(), fds.size(), guard_ms) > 0) {
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents != 0) {
        which = static_cast<int>(i);
        break;
      }
    }
  }
  for (auto& f : fds) ::close(f.fd);
  return which;
}

inline int exit_code_of(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A shell command whose stdout the test reads line by line as it comes.
struct PipedChild {
  pid_t pid = -1;
  FILE* out = nullptr;

  static PipedChild start(const std::string& command) {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    PipedChild c;
    c.pid = ::fork();
    if (c.pid == 0) {
      ::dup2(fds[1], STDOUT_FILENO);
      ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    c.out = ::fdopen(fds[0], "r");
    return c;
  }
  // The next line (without '\n'), or nullopt at end of output.
  std::optional<std::string> line() {
    char buffer[4096];
    if (std::fgets(buffer, sizeof buffer, out) == nullptr) return std::nullopt;
    std::string s(buffer);
    if (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }
  int finish() {
    if (out != nullptr) std::fclose(out);
    out = nullptr;
    return exit_code_of(pid);
  }
};

class Daemon {
 public:
  explicit Daemon(std::string config_yaml = {}, std::vector<std::string> extra_env = {})
      : config_(std::move(config_yaml)), extra_env_(std::move(extra_env)) {
    char tmpl[] = "/tmp/vgpud-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    // Traversable by every user: the two-user tests connect as nobody.
    ::chmod(dir_.c_str(), 0755);
    std::ofstream(dir_ / "vgpud.yaml") << config_;
  }
  ~Daemon() {
    if (pid_ > 0) kill9();
    // Regions of this daemon's node id (tests may leave some after kill -9).
    std::error_code ec;
    if (!node_id_.empty()) {
      for (const auto& e : std::filesystem::directory_iterator("/dev/shm", ec)) {
        if (e.path().filename().string().rfind("vgpud-" + node_id_, 0) == 0) std::filesystem::remove(e.path(), ec);
      }
    }
    std::filesystem::remove_all(dir_, ec);
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  [[nodiscard]] std::string socket() const { return (dir_ / "vgpud.sock").string(); }
  [[nodiscard]] std::filesystem::path state_dir() const { return dir_ / "state"; }
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_; }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string log() const { return slurp(dir_ / "vgpud.log"); }
  [[nodiscard]] runtime::DaemonClient client() const { return runtime::DaemonClient(socket()); }
  [[nodiscard]] const std::string& node_id() const { return node_id_; }

  // Starts vgpud and returns once it said READY=1 (or failed: then the test fails with its log).
  void start() {
    const std::string notify = (dir_ / "notify").string();
    ::unlink(notify.c_str());
    const int sock = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, notify.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string log = (dir_ / "vgpud.log").string();
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, STDERR_FILENO);
      // Never hold the test's stdout (ctest waits on it), and die with the test.
      ::dup2(fd, STDOUT_FILENO);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::setenv("NOTIFY_SOCKET", notify.c_str(), 1);
      for (const auto& kv : extra_env_) ::putenv(const_cast<char*>(kv.c_str()));
      const std::string socket_path = socket();
      const std::string state = state_dir().string();
      const std::string config = (dir_ / "vgpud.yaml").string();
      ::execl(VGPUD_PATH, "vgpud", "--socket", socket_path.c_str(), "--state-dir", state.c_str(), "--config",
              config.c_str(), "--backend", "sim", "--metrics-listen", "127.0.0.1:0", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Wait for READY=1 or for the daemon to exit, whichever comes first (60 s hang guard).
    const int pidfd = pidfd_of(pid_);
    pollfd fds[2] = {{sock, POLLIN, 0}, {pidfd, POLLIN, 0}};
    bool ready = false;
    while (!ready && ::poll(fds, 2, 60'000) > 0) {
      if (fds[0].revents != 0) {
        char buffer[256] = {};
        const ssize_t n = ::recv(sock, buffer, sizeof buffer - 1, 0);
        ready = n > 0 && std::string(buffer, static_cast<std::size_t>(n)).find("READY=1") != std::string::npos;
      }
      if (fds[1].revents != 0) break;
    }
    ::close(pidfd);
    ::close(sock);
    if (!ready) {
      ADD_FAILURE() << "vgpud did not become ready:\n" << log();
      if (pid_ > 0) kill9();
      return;
    }
    node_id_ = nlohmann::json::parse(client().get_json("/v1"))["node_id"].get<std::string>();
  }
  // SIGTERM and wait; returns the exit code.
  int stop() {
    ::kill(pid_, SIGTERM);
    const int code = exit_code_of(pid_);
    pid_ = -1;
    return code;
  }
  void kill9() {
    ::kill(pid_, SIGKILL);
    (void)exit_code_of(pid_);
    pid_ = -1;
  }
  // Waits until the daemon exits by itself (e.g. at a failpoint); returns its status code.
  int wait_exit() {
    const int code = exit_code_of(pid_);
    pid_ = -1;
    return code;
  }

  // curl --unix-socket: the real HTTP client. Returns (status, body).
  std::pair<int, std::string> curl(const std::string& method, const std::string& path, const std::string& body = {},
                                   const std::string& as = {}) const {
    std::string command = as + " curl -s -w '\\n%{http_code}' --unix-socket " + socket() + " -X " +
                          method + " 'http://localhost" + path + "'";
    if (!body.empty()) command += " -H 'Content-Type: application/json' --data-binary @" + write_body(body);
    const auto r = run_shell(command);
    const auto cut = r.out.rfind('\n');
    if (cut == std::string::npos) return {0, r.out + r.err};
    return {std::atoi(r.out.c_str() + cut + 1), r.out.substr(0, cut)};
  }

  // Long-polls /v1/events from `since` until an event matches (120 s hang guard); returns it.
  nlohmann::json wait_event(std::uint64_t since, const std::function<bool(const nlohmann::json&)>& match) const {
    for (int round = 0; round < 4; ++round) {
      const auto page = nlohmann::json::parse(client().get_json("/v1/events?timeout=30&since=" + std::to_string(since)));
      for (const auto& e : page["events"]) {
        if (match(e)) return e;
      }
      since = page["next"].get<std::uint64_t>();
    }
    ADD_FAILURE() << "no matching event\n" << log();
    return nullptr;
  }
  [[nodiscard]] std::uint64_t last_event() const {
    return nlohmann::json::parse(client().get_json("/v1/events?timeout=0"))["next"].get<std::uint64_t>();
  }

 private:
  std::string write_body(const std::string& body) const {
    static int counter = 0;
    const auto path = dir_ / ("body-" + std::to_string(counter++) + ".json");
    std::ofstream(path) << body;
    return path.string();
  }
  std::string config_;
  std::vector<std::string> extra_env_;
  std::filesystem::path dir_;
  pid_t pid_ = -1;
  std::string node_id_;
};

inline bool running_as_root() { return ::geteuid() == 0; }
// Runs a command as nobody (uid/gid 65534, no groups).
inline const char* as_nobody() { return "setpriv --reuid=65534 --regid=65534 --clear-groups"; }

}  // namespace apt::vgpu::testing
