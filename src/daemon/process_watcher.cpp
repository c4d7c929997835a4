#include "process_watcher.hpp"

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace apt::vgpu::daemon {

namespace {
constexpr std::uint64_t kWakeToken = ~std::uint64_t{0};
}

ProcessWatcher::ProcessWatcher() {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epoll_fd_ < 0 || wake_fd_ < 0) throw ProcessError(fmt::format("epoll/eventfd: {}", std::strerror(errno)));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeToken;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
}

ProcessWatcher::~ProcessWatcher() {
  stop();
  ::close(epoll_fd_);
  ::close(wake_fd_);
}

void ProcessWatcher::start(Callbacks callbacks) {
  callbacks_ = std::move(callbacks);
  thread_ = std::thread([this] { loop(); });
}

void ProcessWatcher::stop() {
  if (!thread_.joinable()) return;
  stopping_.store(true);
  wake();
  thread_.join();
}

void ProcessWatcher::add(int pidfd, std::uint64_t token) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = token;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, pidfd, &ev) != 0) {
    throw ProcessError(fmt::format("cannot watch a process (epoll_ctl): {}", std::strerror(errno)));
  }
}

void ProcessWatcher::remove(int pidfd) noexcept { (void)::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, pidfd, nullptr); }

void ProcessWatcher::wake() noexcept {
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void ProcessWatcher::loop() {
  epoll_event events[32];
  while (!stopping_.load()) {
    int timeout_ms = -1;
    if (const auto deadline = callbacks_.next_deadline()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now()).count();
      timeout_ms = static_cast<int>(std::clamp<long long>(left + 1, 0, 60'000));
    }
    const int n = ::epoll_wait(epoll_fd_, events, 32, timeout_ms);
    if (n < 0 && errno != EINTR) {
      log::error(fmt::format("process watcher: epoll_wait: {}", std::strerror(errno)));
      continue;
    }
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 == kWakeToken) {
        std::uint64_t drained = 0;
        [[maybe_unused]] const ssize_t r = ::read(wake_fd_, &drained, sizeof drained);
        continue;
      }
      try {
        callbacks_.on_exit(events[i].data.u64);
      } catch (const std::exception& e) {
        log::error(fmt::format("process watcher: {}", e.what()));
      }
    }
    if (const auto deadline = callbacks_.next_deadline(); deadline && *deadline <= Clock::now()) {
      try {
        callbacks_.on_deadline();
      } catch (const std::exception& e) {
        log::error(fmt::format("process watcher: {}", e.what()));
      }
    }
  }
}

}  // namespace apt::vgpu::daemon
