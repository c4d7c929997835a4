// ConfigError: a profile that cannot be found or does not validate.
//
// It carries every problem found in one file (not just the first), each with
// file, line, column and the dotted key, so `vgpu profile validate` can list
// them all. what() is the full, multi-line report.
//
// Thread safety: an immutable value.
#pragma once

#include <apt/vgpu/common/error.hpp>

#include <string>
#include <vector>

namespace apt::vgpu::config {

struct ConfigIssue {
  std::string file;
  int line = 0;    // 1-based; 0 when not tied to a line
  int column = 0;  // 1-based
  std::string key;  // dotted path, e.g. "vgpu.monitoring.interval"
  std::string message;

  [[nodiscard]] std::string to_string() const;
};

class ConfigError : public Error {
 public:
  explicit ConfigError(std::vector<ConfigIssue> issues);
  explicit ConfigError(const std::string& message);  // not tied to a file position
  [[nodiscard]] const std::vector<ConfigIssue>& issues() const noexcept { return issues_; }

 private:
  std::vector<ConfigIssue> issues_;
};

}  // namespace apt::vgpu::config
