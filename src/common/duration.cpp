#include <apt/vgpu/common/duration.hpp>
#include <apt/vgpu/common/error.hpp>

#include <charconv>
#include <cmath>
#include <fmt/format.h>

namespace apt::vgpu {

std::chrono::milliseconds parse_duration(std::string_view text, std::string_view what) {
  const auto bad = [&](std::string_view why) {
    return InvalidArgument(fmt::format("{}: '{}' {}; write e.g. 250ms, 90s, 5m, 2h or 1d", what, text, why));
  };
  std::size_t digits = 0;
  while (digits < text.size() && ((text[digits] >= '0' && text[digits] <= '9') || text[digits] == '.')) ++digits;
  if (digits == 0) throw bad("is not a duration");
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + digits, value);
  if (ec != std::errc{} || end != text.data() + digits) throw bad("is not a duration");
  const std::string_view unit = text.substr(digits);
  double seconds_per_unit = 0;
  if (unit.empty() || unit == "s") seconds_per_unit = 1;
  else if (unit == "ms") seconds_per_unit = 0.001;
  else if (unit == "m" || unit == "min") seconds_per_unit = 60;
  else if (unit == "h") seconds_per_unit = 3600;
  else if (unit == "d") seconds_per_unit = 86400;
  else throw bad(fmt::format("has an unknown unit '{}'", unit));
  const double ms = value * seconds_per_unit * 1000.0;
  constexpr double kMaxMs = 10.0 * 365 * 86400 * 1000;
  if (!std::isfinite(ms) || !(ms >= 1.0)) throw bad("must be at least 1ms");
  if (ms > kMaxMs) throw bad("is more than 10 years");
  return std::chrono::milliseconds(std::llround(ms));
}

std::string format_duration(std::chrono::milliseconds duration) {
  const long long ms = duration.count();
  if (ms % 86'400'000 == 0) return fmt::format("{}d", ms / 86'400'000);
  if (ms % 3'600'000 == 0) return fmt::format("{}h", ms / 3'600'000);
  if (ms % 60'000 == 0) return fmt::format("{}m", ms / 60'000);
  if (ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
  return fmt::format("{}ms", ms);
}

}  // namespace apt::vgpu
