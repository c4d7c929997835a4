#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>

#include <array>
#include <charconv>
#include <cctype>
#include <cmath>
#include <fmt/format.h>
#include <limits>

namespace apt::vgpu {
namespace {

struct Unit {
  std::string_view suffix;
  std::uint64_t factor;
};

constexpr std::uint64_t kKi = 1024;
constexpr std::array<Unit, 11> kUnits{{
    {"B", 1},
    {"KB", 1000},
    {"MB", 1000 * 1000},
    {"GB", 1000ULL * 1000 * 1000},
    {"TB", 1000ULL * 1000 * 1000 * 1000},
    {"KIB", kKi},
    {"MIB", kKi * kKi},
    {"GIB", kKi * kKi * kKi},
    {"TIB", kKi * kKi * kKi * kKi},
    {"K", 1000},  // rejected below: kept so the message can say what was meant
    {"G", 1000ULL * 1000 * 1000},
}};

[[noreturn]] void bad_size(std::string_view text, std::string_view what, std::string_view why) {
  throw InvalidArgument(fmt::format(
      "{}: '{}' is not a valid size ({}); write a number with a unit, e.g. 20GB (20*10^9 bytes), "
      "20GiB (20*2^30 bytes), 512MiB, or a plain byte count",
      what, text, why));
}

}  // namespace

std::uint64_t parse_size(std::string_view text, std::string_view what) {
  std::string_view s = text;
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  if (s.empty()) bad_size(text, what, "empty");
  if (s.front() == '-') bad_size(text, what, "negative");

  std::size_t pos = 0;
  bool seen_dot = false;
  while (pos < s.size() && (std::isdigit(static_cast<unsigned char>(s[pos])) || (s[pos] == '.' && !seen_dot))) {
    seen_dot = seen_dot || s[pos] == '.';
    ++pos;
  }
  std::string_view number = s.substr(0, pos);
  std::string_view suffix = s.substr(pos);
  while (!suffix.empty() && suffix.front() == ' ') suffix.remove_prefix(1);
  if (number.empty() || number == ".") bad_size(text, what, "no number");

  std::string upper;
  for (char c : suffix) upper.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  std::uint64_t factor = 1;
  if (!upper.empty()) {
    bool found = false;
    for (const Unit& u : kUnits) {
      if (upper == u.suffix) {
        if (u.suffix.size() == 1 && u.suffix != "B") {
          bad_size(text, what, fmt::format("ambiguous unit '{}': write {}B or {}iB", suffix, suffix, suffix));
        }
        factor = u.factor;
        found = true;
        break;
      }
    }
    if (!found) bad_size(text, what, fmt::format("unknown unit '{}'", suffix));
  }

  if (!seen_dot) {
    std::uint64_t value = 0;
    for (char c : number) {
      const auto digit = static_cast<std::uint64_t>(c - '0');
      if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) bad_size(text, what, "too large");
      value = value * 10 + digit;
    }
    if (value > std::numeric_limits<std::uint64_t>::max() / factor) bad_size(text, what, "too large");
    return value * factor;
  }
  if (factor == 1) bad_size(text, what, "a fraction of a byte");
  // from_chars, not stod: stod throws std::out_of_range past DBL_MAX (a 300-digit size did).
  double mantissa = 0;
  const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), mantissa);
  if (ec != std::errc{} || end != number.data() + number.size()) {
    bad_size(text, what, "too large (at most 2^64-1 bytes, about 18.4 EB)");
  }
  const double value = mantissa * static_cast<double>(factor);
  // 2^64 is the first double past every uint64_t; llround would also cap at 2^63.
  if (!std::isfinite(value) || value >= 18446744073709551616.0) {
    bad_size(text, what, "too large (at most 2^64-1 bytes, about 18.4 EB)");
  }
  return static_cast<std::uint64_t>(std::round(value));
}

std::string format_size(std::uint64_t bytes) {
  static constexpr std::array<std::string_view, 5> names{"B", "KB", "MB", "GB", "TB"};
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1000.0 && unit + 1 < names.size()) {
    value /= 1000.0;
    ++unit;
  }
  std::string number = unit == 0 ? fmt::format("{}", bytes) : fmt::format("{:.2f}", value);
  if (number.find('.') != std::string::npos) {
    while (number.back() == '0') number.pop_back();
    if (number.back() == '.') number.pop_back();
  }
  return fmt::format("{} {}", number, names[unit]);
}

}  // namespace apt::vgpu

namespace apt::vgpu {

std::string format_size_exact(std::uint64_t bytes) {
  if (bytes == 0) return "0";
  static constexpr std::array<Unit, 8> kExact{{
      {"TiB", kKi * kKi * kKi * kKi},
      {"TB", 1000ULL * 1000 * 1000 * 1000},
      {"GiB", kKi * kKi * kKi},
      {"GB", 1000ULL * 1000 * 1000},
      {"MiB", kKi * kKi},
      {"MB", 1000 * 1000},
      {"KiB", kKi},
      {"KB", 1000},
  }};
  for (const Unit& u : kExact) {
    if (bytes % u.factor == 0) return fmt::format("{}{}", bytes / u.factor, u.suffix);
  }
  return fmt::format("{}", bytes);
}

}  // namespace apt::vgpu
