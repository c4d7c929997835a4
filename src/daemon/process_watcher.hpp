// ProcessWatcher: one thread that waits, with epoll, on the pidfds of every
// process a slice holds (a pidfd turns readable when its process exits), and
// on the next deadline (a slice's TTL). No /proc polling: an exit is seen the
// moment it happens.
//
// The owner adds pidfds with a token of its choosing and keeps the fds (it
// closes them after remove()); `on_exit(token)` runs on the watcher thread,
// `on_deadline()` when the time returned by `next_deadline()` has come. Both
// callbacks may call add(), remove() and wake().
//
// Thread safety: add/remove/wake may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <thread>

namespace apt::vgpu::daemon {

class ProcessWatcher {
 public:
  using Clock = std::chrono::system_clock;
  struct Callbacks {
    std::function<void(std::uint64_t token)> on_exit;
    std::function<std::optional<Clock::time_point>()> next_deadline;
    std::function<void()> on_deadline;
  };

  ProcessWatcher();
  ~ProcessWatcher();
  ProcessWatcher(const ProcessWatcher&) = delete;
  ProcessWatcher& operator=(const ProcessWatcher&) = delete;

  void start(Callbacks callbacks);
  void stop();

  void add(int pidfd, std::uint64_t token);
  void remove(int pidfd) noexcept;
  // Makes the thread re-read next_deadline() (after a TTL was added).
  void wake() noexcept;

 private:
  void loop();
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  Callbacks callbacks_;
  std::thread thread_;
};

}  // namespace apt::vgpu::daemon
