#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/config/config.hpp>
#include <apt/vgpu/config/vgpu_config.hpp>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

namespace apt::vgpu::config {

std::string_view to_string(Isolation isolation) noexcept {
  switch (isolation) {
    case Isolation::none: return "none";
    case Isolation::intercept: return "intercept";
    case Isolation::mps: return "mps";
  }
  return "none";
}

Isolation parse_isolation(std::string_view text) {
  if (text == "none" || text == "false") return Isolation::none;
  if (text == "intercept" || text == "true") return Isolation::intercept;
  if (text == "mps") return Isolation::mps;
  throw InvalidArgument(fmt::format("isolation: '{}' is not an isolation mode; use none, intercept or mps", text));
}

const std::vector<std::string>& known_metrics() {
  static const std::vector<std::string> names{"utilization", "memory",    "temperature", "power",
                                              "clocks",      "pcie",      "bandwidth",   "processes"};
  return names;
}

std::string to_yaml(const Config& config) {
  const VgpuConfig& v = config.vgpu;
  YAML::Emitter out;
  out.SetDoublePrecision(10);
  auto size_or_null = [&out](const std::optional<std::uint64_t>& bytes) {
    if (bytes) out << format_size_exact(*bytes); else out << YAML::Null;
  };
  auto double_or_null = [&out](const std::optional<double>& value) {
    if (value) out << *value; else out << YAML::Null;
  };
  out << YAML::Comment(fmt::format("profile '{}' from {}", config.name, config.source.string()));
  out << YAML::BeginMap << YAML::Key << "vgpu" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "enabled" << YAML::Value << v.enabled;
  out << YAML::Key << "max_virtual_gpus" << YAML::Value << v.max_virtual_gpus;
  out << YAML::Key << "scheduling" << YAML::Value << v.scheduling;
  out << YAML::Key << "isolation" << YAML::Value << std::string(to_string(v.isolation));
  out << YAML::Key << "memory_pooling" << YAML::Value << v.memory_pooling;
  out << YAML::Key << "oversubscription" << YAML::Value << v.oversubscription;
  out << YAML::Key << "backend" << YAML::Value << v.backend;

  out << YAML::Key << "virtual_gpu" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "gpu" << YAML::Value << v.virtual_gpu.gpu;
  out << YAML::Key << "memory_limit" << YAML::Value;
  size_or_null(v.virtual_gpu.memory_limit);
  out << YAML::Key << "compute_ratio" << YAML::Value;
  double_or_null(v.virtual_gpu.compute_ratio);
  out << YAML::Key << "priority" << YAML::Value << v.virtual_gpu.priority;
  out << YAML::Key << "auto_recover" << YAML::Value << v.virtual_gpu.auto_recover;
  out << YAML::Key << "fallback_gpu" << YAML::Value;
  if (v.virtual_gpu.fallback_gpu) out << *v.virtual_gpu.fallback_gpu; else out << YAML::Null;
  out << YAML::EndMap;

  out << YAML::Key << "runtime" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "context_switching" << YAML::Value << v.runtime.context_switching;
  out << YAML::Key << "preemption" << YAML::Value << (v.runtime.preemption ? "enabled" : "disabled");
  out << YAML::EndMap;

  out << YAML::Key << "memory" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "pool_size" << YAML::Value;
  size_or_null(v.memory.pool_size);
  out << YAML::Key << "fragmentation_threshold" << YAML::Value << v.memory.fragmentation_threshold;
  out << YAML::Key << "alignment" << YAML::Value << v.memory.alignment;
  out << YAML::Key << "eviction" << YAML::Value << v.memory.eviction;
  out << YAML::Key << "lazy" << YAML::Value << v.memory.lazy;
  out << YAML::EndMap;

  out << YAML::Key << "scheduler" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "placement" << YAML::Value << v.scheduler.placement;
  out << YAML::Key << "max_retries" << YAML::Value << v.scheduler.max_retries;
  out << YAML::Key << "retry_backoff" << YAML::Value << v.scheduler.retry_backoff_seconds;
  out << YAML::Key << "weights" << YAML::Value << YAML::BeginMap;
  for (const auto& [who, weight] : v.scheduler.weights) out << YAML::Key << who << YAML::Value << weight;
  out << YAML::EndMap << YAML::EndMap;

  out << YAML::Key << "monitoring" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "enabled" << YAML::Value << v.monitoring.enabled;
  out << YAML::Key << "interval" << YAML::Value << v.monitoring.interval_seconds;
  out << YAML::Key << "metrics" << YAML::Value << YAML::Flow << v.monitoring.metrics;
  out << YAML::Key << "history" << YAML::Value << v.monitoring.history;
  out << YAML::Key << "alerts" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "temperature_celsius" << YAML::Value;
  double_or_null(v.monitoring.alerts.temperature_celsius);
  out << YAML::Key << "memory_percent" << YAML::Value;
  double_or_null(v.monitoring.alerts.memory_percent);
  out << YAML::Key << "power_percent" << YAML::Value;
  double_or_null(v.monitoring.alerts.power_percent);
  out << YAML::EndMap << YAML::EndMap;

  out << YAML::Key << "simulated_node" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "gpus" << YAML::Value << v.simulated_node.gpus;
  out << YAML::Key << "memory" << YAML::Value << format_size_exact(v.simulated_node.memory);
  out << YAML::Key << "name" << YAML::Value << v.simulated_node.name;
  out << YAML::Key << "seed" << YAML::Value << v.simulated_node.seed;
  out << YAML::EndMap;

  out << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace apt::vgpu::config
