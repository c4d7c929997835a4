#include <apt/vgpu/config/config_error.hpp>

#include <fmt/format.h>

namespace apt::vgpu::config {
namespace {

std::string render(const std::vector<ConfigIssue>& issues) {
  std::string out;
  for (std::size_t i = 0; i < issues.size(); ++i) {
    if (i != 0) out += '\n';
    out += issues[i].to_string();
  }
  return out;
}

}  // namespace

std::string ConfigIssue::to_string() const {
  std::string where = file;
  if (line > 0) where += fmt::format(":{}:{}", line, column);
  if (!key.empty()) return fmt::format("{}: {}: {}", where, key, message);
  return fmt::format("{}: {}", where, message);
}

ConfigError::ConfigError(std::vector<ConfigIssue> issues)
    : Error(ErrorKind::config, render(issues)), issues_(std::move(issues)) {}

ConfigError::ConfigError(const std::string& message) : Error(ErrorKind::config, message) {}

}  // namespace apt::vgpu::config
