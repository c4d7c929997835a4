#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/common/suggest.hpp>
#include <apt/vgpu/config/config_error.hpp>
#include <apt/vgpu/config/load_profile.hpp>

#include "detail/yaml_reader.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fmt/format.h>
#include <fstream>
#include <set>
#include <sstream>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#ifndef VGPU_INSTALL_PROFILE_DIR
#define VGPU_INSTALL_PROFILE_DIR "/usr/local/share/apt-vgpu/profiles"
#endif

namespace apt::vgpu::config {
namespace {

using detail::Reader;

namespace fs = std::filesystem;

const std::vector<std::string> kTopKeys{"vgpu"};
const std::vector<std::string> kVgpuKeys{"enabled",     "max_virtual_gpus", "scheduling", "isolation",
                                         "memory_pooling", "oversubscription", "backend",  "virtual_gpu",
                                         "runtime",     "memory",           "scheduler",  "monitoring",
                                         "simulated_node"};
const std::vector<std::string> kVirtualGpuKeys{"gpu", "memory_limit", "compute_ratio", "priority", "auto_recover",
                                               "fallback_gpu"};
const std::vector<std::string> kRuntimeKeys{"context_switching", "preemption"};
const std::vector<std::string> kMemoryKeys{"pool_size", "fragmentation_threshold", "alignment", "eviction", "lazy"};
const std::vector<std::string> kSchedulerKeys{"placement", "max_retries", "retry_backoff", "weights"};
const std::vector<std::string> kMonitoringKeys{"enabled", "interval", "metrics", "history", "alerts"};
const std::vector<std::string> kAlertKeys{"temperature_celsius", "memory_percent", "power_percent"};
const std::vector<std::string> kSimKeys{"gpus", "memory", "name", "seed"};
const std::vector<std::string> kPolicies{"fifo", "priority", "fair", "adaptive"};
const std::vector<std::string> kIsolationModes{"none", "intercept", "mps", "true", "false"};
const std::vector<std::string> kBackends{"auto", "nvml", "rocm", "sim"};
const std::vector<std::string> kContextSwitching{"fast", "balanced", "strict"};
const std::vector<std::string> kEvictions{"lru", "none"};
const std::vector<std::string> kPlacements{"best_fit", "spread", "round_robin"};

void read_virtual_gpu(Reader& r, const YAML::Node& node, VirtualGpuDefaults& out) {
  const std::string path = "vgpu.virtual_gpu";
  if (!r.check_map(node, path, kVirtualGpuKeys)) return;
  r.read_int(node, path, "gpu", 0, 1023, out.gpu);
  r.read_size(node, path, "memory_limit", true, out.memory_limit);
  r.read_optional_double(node, path, "compute_ratio", 0.0, 1.0, true, out.compute_ratio);
  r.read_int(node, path, "priority", -1000, 1000, out.priority);
  r.read_bool(node, path, "auto_recover", out.auto_recover);
  r.read_optional_int(node, path, "fallback_gpu", 0, 1023, out.fallback_gpu);
}

void read_monitoring(Reader& r, const YAML::Node& node, MonitoringSection& out) {
  const std::string path = "vgpu.monitoring";
  if (!r.check_map(node, path, kMonitoringKeys)) return;
  r.read_bool(node, path, "enabled", out.enabled);
  r.read_double(node, path, "interval", 0.001, 3600.0, false, out.interval_seconds);
  r.read_int(node, path, "history", 1, 10'000'000, out.history);
  if (const YAML::Node metrics = node["metrics"]) {
    if (!metrics.IsSequence()) {
      r.issue(metrics.Mark(), path + ".metrics",
              fmt::format("expected a list of metric names ({}), got {}", join(known_metrics()), Reader::describe(metrics)));
    } else {
      std::vector<std::string> names;
      for (const auto& item : metrics) {
        if (!item.IsScalar() ||
            std::find(known_metrics().begin(), known_metrics().end(), item.Scalar()) == known_metrics().end()) {
          r.issue(item.Mark(), path + ".metrics",
                  item.IsScalar() ? Reader::unknown_choice(item.Scalar(), known_metrics())
                                  : fmt::format("expected a metric name, got {}", Reader::describe(item)));
          continue;
        }
        if (std::find(names.begin(), names.end(), item.Scalar()) == names.end()) names.push_back(item.Scalar());
      }
      out.metrics = names;
    }
  }
  if (const YAML::Node alerts = node["alerts"]) {
    const std::string alert_path = path + ".alerts";
    if (r.check_map(alerts, alert_path, kAlertKeys)) {
      r.read_optional_double(alerts, alert_path, "temperature_celsius", 0.0, 150.0, true, out.alerts.temperature_celsius);
      r.read_optional_double(alerts, alert_path, "memory_percent", 0.0, 100.0, true, out.alerts.memory_percent);
      r.read_optional_double(alerts, alert_path, "power_percent", 0.0, 100.0, true, out.alerts.power_percent);
    }
  }
}

void read_scheduler(Reader& r, const YAML::Node& node, SchedulerSection& out) {
  const std::string path = "vgpu.scheduler";
  if (!r.check_map(node, path, kSchedulerKeys)) return;
  r.read_enum(node, path, "placement", kPlacements, out.placement);
  r.read_int(node, path, "max_retries", 0, 100, out.max_retries);
  r.read_double(node, path, "retry_backoff", 0.0, 3600.0, false, out.retry_backoff_seconds);
  if (const YAML::Node weights = node["weights"]) {
    if (!weights.IsMap()) {
      r.issue(weights.Mark(), path + ".weights",
              fmt::format("expected a mapping of user or group to weight, got {}", Reader::describe(weights)));
      return;
    }
    for (const auto& entry : weights) {
      double weight = 0;
      const std::string who = entry.first.Scalar();
      if (!entry.second.IsScalar() || !YAML::convert<double>::decode(entry.second, weight) || !(weight > 0.0) ||
          !std::isfinite(weight)) {
        r.issue(entry.second.Mark(), path + ".weights." + who,
                fmt::format("expected a positive number, got {}", Reader::describe(entry.second)));
        continue;
      }
      out.weights[who] = weight;
    }
  }
}

fs::path executable_dir() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path{} : self.parent_path();
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(fmt::format("{}: cannot read the profile: {}", path.string(), std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool looks_like_path(std::string_view text) {
  return text.find('/') != std::string_view::npos || text.ends_with(".yaml") || text.ends_with(".yml");
}

}  // namespace

namespace detail {

void read_vgpu(Reader& r, const YAML::Node& node, VgpuConfig& out) {
  const std::string path = "vgpu";
  if (!r.check_map(node, path, kVgpuKeys)) return;
  r.read_bool(node, path, "enabled", out.enabled);
  r.read_int(node, path, "max_virtual_gpus", 1, 4096, out.max_virtual_gpus);
  r.read_enum(node, path, "scheduling", kPolicies, out.scheduling);
  std::string isolation;
  r.read_enum(node, path, "isolation", kIsolationModes, isolation);
  if (!isolation.empty()) out.isolation = parse_isolation(isolation);
  r.read_bool(node, path, "memory_pooling", out.memory_pooling);
  r.read_double(node, path, "oversubscription", 1.0, 16.0, false, out.oversubscription);
  r.read_enum(node, path, "backend", kBackends, out.backend);
  if (const YAML::Node n = node["virtual_gpu"]) read_virtual_gpu(r, n, out.virtual_gpu);
  if (const YAML::Node n = node["runtime"]) {
    if (r.check_map(n, "vgpu.runtime", kRuntimeKeys)) {
      r.read_enum(n, "vgpu.runtime", "context_switching", kContextSwitching, out.runtime.context_switching);
      r.read_switch(n, "vgpu.runtime", "preemption", "enabled", "disabled", out.runtime.preemption);
    }
  }
  if (const YAML::Node n = node["memory"]) {
    const std::string mpath = "vgpu.memory";
    if (r.check_map(n, mpath, kMemoryKeys)) {
      r.read_size(n, mpath, "pool_size", true, out.memory.pool_size);
      r.read_double(n, mpath, "fragmentation_threshold", 0.0, 1.0, false, out.memory.fragmentation_threshold);
      std::optional<std::uint64_t> alignment;
      r.read_size(n, mpath, "alignment", false, alignment);
      if (alignment) {
        if (*alignment == 0 || (*alignment & (*alignment - 1)) != 0) {
          r.issue(n["alignment"].Mark(), mpath + ".alignment",
                  fmt::format("{} is not a power of two; use e.g. 256 or 2MiB", *alignment));
        } else if (*alignment > MemorySection::kLargestAlignment) {
          r.issue(n["alignment"].Mark(), mpath + ".alignment",
                  fmt::format("{} is larger than a pool's largest alignment (16MiB); use at most 16MiB", *alignment));
        } else {
          out.memory.alignment = *alignment;
        }
      }
      r.read_enum(n, mpath, "eviction", kEvictions, out.memory.eviction);
      r.read_bool(n, mpath, "lazy", out.memory.lazy);
    }
  }
  if (const YAML::Node n = node["scheduler"]) read_scheduler(r, n, out.scheduler);
  if (const YAML::Node n = node["monitoring"]) read_monitoring(r, n, out.monitoring);
  if (const YAML::Node n = node["simulated_node"]) {
    const std::string spath = "vgpu.simulated_node";
    if (r.check_map(n, spath, kSimKeys)) {
      r.read_int(n, spath, "gpus", 1, 1024, out.simulated_node.gpus);
      std::optional<std::uint64_t> memory;
      r.read_size(n, spath, "memory", false, memory);
      if (memory) out.simulated_node.memory = *memory;
      r.read_string(n, spath, "name", out.simulated_node.name);
      r.read_int(n, spath, "seed", 0, std::numeric_limits<long long>::max(), out.simulated_node.seed);
    }
  }
  // Cross-field checks.
  const auto& vg = out.virtual_gpu;
  if (vg.fallback_gpu && *vg.fallback_gpu == vg.gpu) {
    r.issue(node["virtual_gpu"]["fallback_gpu"].Mark(), "vgpu.virtual_gpu.fallback_gpu",
            fmt::format("is the same GPU as vgpu.virtual_gpu.gpu ({}); pick another GPU or remove it", vg.gpu));
  }
}

}  // namespace detail

Config parse_profile(std::string_view yaml_text, const std::string& file, const std::string& name) {
  Reader reader(file);
  const YAML::Node root = reader.load(yaml_text);
  Config config;
  config.name = name;
  config.source = file;
  if (!root || root.IsNull()) {
    reader.issue(YAML::Mark::null_mark(), "", "the profile is empty; it needs a 'vgpu:' section (see profiles/standard.yaml)");
  } else if (reader.check_map(root, "", kTopKeys)) {
    if (const YAML::Node vgpu = root["vgpu"]) {
      detail::read_vgpu(reader, vgpu, config.vgpu);
    } else {
      reader.issue(root.Mark(), "vgpu", "missing; a profile must have a 'vgpu:' section");
    }
  }
  if (!reader.issues().empty()) throw ConfigError(std::move(reader.issues()));
  return config;
}

std::optional<std::string> profile_from_environment() {
  const char* value = std::getenv("VGPU_PROFILE");
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

std::vector<fs::path> profile_search_path() {
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("VGPU_PROFILE_PATH"); env != nullptr) {
    std::string_view list(env);
    while (!list.empty()) {
      const auto colon = list.find(':');
      if (const auto item = list.substr(0, colon); !item.empty()) dirs.emplace_back(item);
      list = colon == std::string_view::npos ? std::string_view{} : list.substr(colon + 1);
    }
  }
  dirs.emplace_back("profiles");
  if (const fs::path exe = executable_dir(); !exe.empty()) dirs.push_back(exe.parent_path() / "share/apt-vgpu/profiles");
  dirs.emplace_back(VGPU_INSTALL_PROFILE_DIR);
  return dirs;
}

std::vector<std::string> available_profiles() {
  std::set<std::string> names;
  for (const fs::path& dir : profile_search_path()) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.path().extension() == ".yaml") names.insert(entry.path().stem().string());
    }
  }
  return {names.begin(), names.end()};
}

Config load_profile(std::string_view name_or_path) {
  if (name_or_path.empty()) throw ConfigError("profile: empty name; give a profile name (e.g. standard) or a path");
  fs::path file;
  if (looks_like_path(name_or_path)) {
    file = fs::path(name_or_path);
    if (!fs::exists(file)) {
      throw ConfigError(fmt::format("profile: {} does not exist; give an existing file or a profile name ({})",
                                    file.string(), join(available_profiles())));
    }
  } else {
    std::vector<std::string> searched;
    for (const fs::path& dir : profile_search_path()) {
      const fs::path candidate = dir / (std::string(name_or_path) + ".yaml");
      searched.push_back(dir.string());
      if (fs::is_regular_file(candidate)) {
        file = candidate;
        break;
      }
    }
    if (file.empty()) {
      const auto names = available_profiles();
      std::string message = fmt::format("profile '{}' not found; searched {}", name_or_path, join(searched));
      message += names.empty() ? std::string("; no profiles are installed (set VGPU_PROFILE_PATH)")
                               : fmt::format("; available: {}", join(names));
      if (auto guess = nearest(name_or_path, names)) message += fmt::format("; did you mean '{}'?", *guess);
      throw ConfigError(message);
    }
  }
  return parse_profile(read_file(file), file.string(), file.stem().string());
}

}  // namespace apt::vgpu::config
