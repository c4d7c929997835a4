// The YAML reader behind every validated config file (profiles and the vgpud
// config): it walks one document and collects every problem with its file,
// line, column and dotted key, instead of stopping at the first.
//
// Thread safety: one Reader per document, used by one thread.
#pragma once

#include <apt/vgpu/common/duration.hpp>
#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/common/suggest.hpp>
#include <apt/vgpu/config/config_error.hpp>
#include <apt/vgpu/config/vgpu_config.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fmt/format.h>
#include <optional>
#include <string_view>
#include <string>
#include <vector>
#include <yaml-cpp/yaml.h>

namespace apt::vgpu::config::detail {

// Walks one YAML document, collecting every problem with its position. Each
// read_* helper leaves the output untouched when the key is absent or bad.
class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  void issue(const YAML::Mark& mark, const std::string& key, const std::string& message) {
    issues_.push_back(ConfigIssue{file_, mark.is_null() ? 0 : mark.line + 1, mark.is_null() ? 0 : mark.column + 1, key,
                                  message});
  }
  [[nodiscard]] std::vector<ConfigIssue>& issues() { return issues_; }

  // A parser's error (parse_size, parse_duration) as an issue at `key`: the parser
  // names the key already, so its "key: " prefix is dropped.
  void issue_from_parser(const YAML::Mark& mark, const std::string& key, const InvalidArgument& error) {
    std::string message = error.what();
    const std::string prefix = key + ": ";
    if (message.rfind(prefix, 0) == 0) message.erase(0, prefix.size());
    issue(mark, key, message);
  }

  // Parses the document; YAML syntax errors are a ConfigError with their position.
  [[nodiscard]] YAML::Node load(std::string_view text) {
    try {
      return YAML::Load(std::string(text));
    } catch (const YAML::Exception& e) {
      issue(e.mark, "", fmt::format("not valid YAML: {}", e.msg));
      throw ConfigError(std::move(issues_));
    }
  }

  // Checks that `node` is a mapping whose keys are all in `allowed`.
  bool check_map(const YAML::Node& node, const std::string& path, const std::vector<std::string>& allowed) {
    if (!node.IsMap()) {
      issue(node.Mark(), path, fmt::format("expected a mapping of keys ({}), got {}", join(allowed), describe(node)));
      return false;
    }
    for (const auto& entry : node) {
      const std::string key = entry.first.Scalar();
      if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
      std::string message = "unknown key";
      if (auto guess = nearest(key, allowed)) {
        message += fmt::format("; did you mean '{}'?", *guess);
      } else {
        message += fmt::format("; valid keys here are: {}", join(allowed));
      }
      issue(entry.first.Mark(), dotted(path, key), message);
    }
    return true;
  }

  void read_bool(const YAML::Node& map, const std::string& path, const char* key, bool& out) {
    const YAML::Node node = map[key];
    if (!node) return;
    bool value = false;
    if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) {
      issue(node.Mark(), dotted(path, key), fmt::format("expected true or false, got {}", describe(node)));
      return;
    }
    out = value;
  }

  // Accepts true/false or the two words given (e.g. enabled/disabled).
  void read_switch(const YAML::Node& map, const std::string& path, const char* key, const char* on, const char* off,
                   bool& out) {
    const YAML::Node node = map[key];
    if (!node) return;
    if (node.IsScalar() && node.Scalar() == on) {
      out = true;
      return;
    }
    if (node.IsScalar() && node.Scalar() == off) {
      out = false;
      return;
    }
    bool value = false;
    if (node.IsScalar() && YAML::convert<bool>::decode(node, value)) {
      out = value;
      return;
    }
    issue(node.Mark(), dotted(path, key), fmt::format("expected {} or {}, got {}", on, off, describe(node)));
  }

  template <class Int>
  void read_int(const YAML::Node& map, const std::string& path, const char* key, long long min, long long max,
                Int& out) {
    const YAML::Node node = map[key];
    if (!node) return;
    long long value = 0;
    if (!node.IsScalar() || !YAML::convert<long long>::decode(node, value) || node.Scalar().find('.') != std::string::npos) {
      issue(node.Mark(), dotted(path, key), fmt::format("expected an integer, got {}", describe(node)));
      return;
    }
    if (value < min || value > max) {
      issue(node.Mark(), dotted(path, key), fmt::format("{} is out of range; use {}..{}", value, min, max));
      return;
    }
    out = static_cast<Int>(value);
  }

  template <class Int>
  void read_optional_int(const YAML::Node& map, const std::string& path, const char* key, long long min,
                         long long max, std::optional<Int>& out) {
    const YAML::Node node = map[key];
    if (!node) return;
    if (node.IsNull()) {
      out.reset();
      return;
    }
    Int value{};
    const std::size_t before = issues_.size();
    read_int(map, path, key, min, max, value);
    if (issues_.size() == before) out = value;
  }

  // `min_exclusive` makes the lower bound open (e.g. an interval must be > 0).
  void read_double(const YAML::Node& map, const std::string& path, const char* key, double min, double max,
                   bool min_exclusive, double& out) {
    const YAML::Node node = map[key];
    if (!node) return;
    double value = 0;
    if (!node.IsScalar() || !YAML::convert<double>::decode(node, value) || !std::isfinite(value)) {
      issue(node.Mark(), dotted(path, key), fmt::format("expected a number, got {}", describe(node)));
      return;
    }
    if ((min_exclusive ? value <= min : value < min) || value > max) {
      issue(node.Mark(), dotted(path, key),
            fmt::format("{} is out of range; use a number {} {} and <= {}", node.Scalar(), min_exclusive ? ">" : ">=",
                        min, max));
      return;
    }
    out = value;
  }

  void read_optional_double(const YAML::Node& map, const std::string& path, const char* key, double min, double max,
                            bool min_exclusive, std::optional<double>& out) {
    const YAML::Node node = map[key];
    if (!node) return;
    if (node.IsNull()) {
      out.reset();
      return;
    }
    double value = 0;
    const std::size_t before = issues_.size();
    read_double(map, path, key, min, max, min_exclusive, value);
    if (issues_.size() == before) out = value;
  }

  void read_size(const YAML::Node& map, const std::string& path, const char* key, bool allow_null,
                 std::optional<std::uint64_t>& out) {
    const YAML::Node node = map[key];
    if (!node) return;
    if (node.IsNull() && allow_null) {
      out.reset();
      return;
    }
    if (!node.IsScalar()) {
      issue(node.Mark(), dotted(path, key), fmt::format("expected a size like 20GB or 16GiB, got {}", describe(node)));
      return;
    }
    try {
      const std::uint64_t bytes = parse_size(node.Scalar(), dotted(path, key));
      if (bytes == 0) {
        issue(node.Mark(), dotted(path, key), "must be more than 0 bytes; write e.g. 20GB, or remove the key");
        return;
      }
      out = bytes;
    } catch (const InvalidArgument& e) {
      issue_from_parser(node.Mark(), dotted(path, key), e);
    }
  }

  // A duration ("250ms", "90s", "8h", or seconds) within [min, max].
  void read_duration(const YAML::Node& map, const std::string& path, const char* key, std::chrono::milliseconds min,
                     std::chrono::milliseconds max, std::optional<std::chrono::milliseconds>& out) {
    const YAML::Node node = map[key];
    if (!node) return;
    if (!node.IsScalar()) {
      issue(node.Mark(), dotted(path, key), fmt::format("expected a duration such as 90s or 8h, got {}", describe(node)));
      return;
    }
    try {
      const std::chrono::milliseconds value = parse_duration(node.Scalar(), dotted(path, key));
      if (value < min || value > max) {
        issue(node.Mark(), dotted(path, key),
              fmt::format("'{}' is out of range; use {}..{}", node.Scalar(), format_duration(min), format_duration(max)));
        return;
      }
      out = value;
    } catch (const InvalidArgument& e) {
      issue_from_parser(node.Mark(), dotted(path, key), e);
    }
  }

  void read_enum(const YAML::Node& map, const std::string& path, const char* key,
                 const std::vector<std::string>& choices, std::string& out) {
    const YAML::Node node = map[key];
    if (!node) return;
    if (!node.IsScalar()) {
      issue(node.Mark(), dotted(path, key), fmt::format("expected one of {}, got {}", join(choices), describe(node)));
      return;
    }
    if (std::find(choices.begin(), choices.end(), node.Scalar()) == choices.end()) {
      issue(node.Mark(), dotted(path, key), unknown_choice(node.Scalar(), choices));
      return;
    }
    out = node.Scalar();
  }

  void read_string(const YAML::Node& map, const std::string& path, const char* key, std::string& out) {
    const YAML::Node node = map[key];
    if (!node) return;
    if (!node.IsScalar() || node.Scalar().empty()) {
      issue(node.Mark(), dotted(path, key), fmt::format("expected a non-empty string, got {}", describe(node)));
      return;
    }
    out = node.Scalar();
  }

  static std::string unknown_choice(const std::string& value, const std::vector<std::string>& choices) {
    std::string message = fmt::format("'{}' is not valid; use one of {}", value, join(choices));
    if (auto guess = nearest(value, choices)) message += fmt::format(" (did you mean '{}'?)", *guess);
    return message;
  }

  static std::string dotted(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

  static std::string describe(const YAML::Node& node) {
    switch (node.Type()) {
      case YAML::NodeType::Null: return "nothing (null)";
      case YAML::NodeType::Scalar: return fmt::format("'{}'", node.Scalar());
      case YAML::NodeType::Sequence: return "a list";
      case YAML::NodeType::Map: return "a mapping";
      default: return "an undefined value";
    }
  }

 private:
  std::string file_;
  std::vector<ConfigIssue> issues_;
};

// Reads a profile's `vgpu:` mapping into `out` (shared by profiles and the daemon config).
void read_vgpu(Reader& r, const YAML::Node& node, VgpuConfig& out);

}  // namespace apt::vgpu::config::detail
