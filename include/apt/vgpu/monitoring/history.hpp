// A bounded ring buffer of timestamped values and the summary of a window of it.
//
// Thread safety: none; GPUMonitor guards its histories with its own mutex.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <vector>

namespace apt::vgpu::monitoring {

struct WindowStats {
  std::size_t count = 0;  // samples in the window that had a value
  double min = 0;
  double avg = 0;
  double max = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double last = 0;
};

class History {
 public:
  using Clock = std::chrono::steady_clock;
  explicit History(std::size_t capacity);

  void push(Clock::time_point when, std::optional<double> value);
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return values_.size(); }
  // Samples newer than now - window (all when window is zero), oldest first; absent values skipped.
  [[nodiscard]] std::vector<double> values(std::chrono::nanoseconds window, Clock::time_point now) const;
  // nullopt when the window holds no value.
  [[nodiscard]] std::optional<WindowStats> stats(std::chrono::nanoseconds window, Clock::time_point now) const;

 private:
  std::vector<Clock::time_point> times_;
  std::vector<std::optional<double>> values_;
  std::size_t next_ = 0;
  std::size_t size_ = 0;
};

}  // namespace apt::vgpu::monitoring
