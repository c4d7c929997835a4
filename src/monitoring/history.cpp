#include <apt/vgpu/monitoring/history.hpp>

#include <algorithm>
#include <cmath>

namespace apt::vgpu::monitoring {

History::History(std::size_t capacity) : times_(std::max<std::size_t>(capacity, 1)), values_(std::max<std::size_t>(capacity, 1)) {}

void History::push(Clock::time_point when, std::optional<double> value) {
  times_[next_] = when;
  values_[next_] = value;
  next_ = (next_ + 1) % values_.size();
  size_ = std::min(size_ + 1, values_.size());
}

std::vector<double> History::values(std::chrono::nanoseconds window, Clock::time_point now) const {
  std::vector<double> out;
  out.reserve(size_);
  const std::size_t cap = values_.size();
  for (std::size_t k = 0; k < size_; ++k) {
    const std::size_t i = (next_ + cap - size_ + k) % cap;  // oldest first
    if (window.count() > 0 && now - times_[i] > window) continue;
    if (values_[i]) out.push_back(*values_[i]);
  }
  return out;
}

std::optional<WindowStats> History::stats(std::chrono::nanoseconds window, Clock::time_point now) const {
  std::vector<double> v = values(window, now);
  if (v.empty()) return std::nullopt;
  WindowStats s;
  s.count = v.size();
  s.last = v.back();
  double sum = 0;
  for (double x : v) sum += x;
  s.avg = sum / static_cast<double>(v.size());
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  auto pct = [&v](double p) {
    const auto k = static_cast<std::size_t>(std::ceil(p * static_cast<double>(v.size())));
    return v[std::min(v.size() - 1, k == 0 ? 0 : k - 1)];
  };
  s.p50 = pct(0.50);
  s.p90 = pct(0.90);
  s.p99 = pct(0.99);
  return s;
}

}  // namespace apt::vgpu::monitoring
