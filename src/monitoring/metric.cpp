#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/suggest.hpp>
#include <apt/vgpu/config/vgpu_config.hpp>
#include <apt/vgpu/monitoring/metric.hpp>

#include <algorithm>
#include <fmt/format.h>

namespace apt::vgpu::monitoring {

const std::vector<MetricInfo>& all_metrics() noexcept {
  static const std::vector<MetricInfo> table{
      {Metric::utilization, "utilization", "%", "GPU utilization: share of time a kernel was running"},
      {Metric::memory_used, "memory_used", "bytes", "GPU memory in use"},
      {Metric::memory_total, "memory_total", "bytes", "GPU memory installed"},
      {Metric::temperature, "temperature", "°C", "GPU temperature"},
      {Metric::power, "power", "W", "Power draw"},
      {Metric::power_limit, "power_limit", "W", "Enforced power limit"},
      {Metric::sm_clock, "sm_clock", "MHz", "SM clock"},
      {Metric::memory_clock, "memory_clock", "MHz", "Memory clock"},
      {Metric::pcie_rx, "pcie_rx", "bytes/s", "PCIe receive throughput"},
      {Metric::pcie_tx, "pcie_tx", "bytes/s", "PCIe transmit throughput"},
      {Metric::memory_bandwidth, "memory_bandwidth", "%", "Memory-bandwidth utilization: share of time memory was read or written"},
  };
  return table;
}

const MetricInfo& info(Metric metric) noexcept { return all_metrics()[static_cast<std::size_t>(metric)]; }

Metric parse_metric(std::string_view name) {
  std::vector<std::string> names;
  for (const MetricInfo& m : all_metrics()) {
    if (m.name == name) return m.metric;
    names.emplace_back(m.name);
  }
  // Seed group names that stand for one metric.
  if (name == "memory") return Metric::memory_used;
  if (name == "power") return Metric::power;
  if (name == "bandwidth") return Metric::memory_bandwidth;
  std::string message = fmt::format("metric: '{}' is not a metric; use one of {}", name, join(names));
  if (auto guess = nearest(name, names)) message += fmt::format(" (did you mean '{}'?)", *guess);
  throw InvalidArgument(message);
}

std::vector<Metric> expand_metric_names(const std::vector<std::string>& names, bool* processes) {
  std::vector<Metric> out;
  auto add = [&out](std::initializer_list<Metric> ms) {
    for (Metric m : ms) {
      if (std::find(out.begin(), out.end(), m) == out.end()) out.push_back(m);
    }
  };
  if (processes != nullptr) *processes = false;
  for (const std::string& n : names) {
    if (n == "utilization") add({Metric::utilization});
    else if (n == "memory") add({Metric::memory_used, Metric::memory_total});
    else if (n == "temperature") add({Metric::temperature});
    else if (n == "power") add({Metric::power, Metric::power_limit});
    else if (n == "clocks") add({Metric::sm_clock, Metric::memory_clock});
    else if (n == "pcie") add({Metric::pcie_rx, Metric::pcie_tx});
    else if (n == "bandwidth") add({Metric::memory_bandwidth});
    else if (n == "processes") {
      if (processes != nullptr) *processes = true;
    } else {
      std::string message = fmt::format("metrics: '{}' is not a metric name; use any of {}", n, join(config::known_metrics()));
      if (auto guess = nearest(n, config::known_metrics())) message += fmt::format(" (did you mean '{}'?)", *guess);
      throw InvalidArgument(message);
    }
  }
  return out;
}

std::optional<double> value_of(const device::GpuMetrics& m, Metric metric) noexcept {
  auto d = [](const auto& v) -> std::optional<double> {
    if (!v) return std::nullopt;
    return static_cast<double>(*v);
  };
  switch (metric) {
    case Metric::utilization: return m.utilization_percent;
    case Metric::memory_used: return d(m.memory_used_bytes);
    case Metric::memory_total: return d(m.memory_total_bytes);
    case Metric::temperature: return m.temperature_celsius;
    case Metric::power: return m.power_watts;
    case Metric::power_limit: return m.power_limit_watts;
    case Metric::sm_clock: return d(m.sm_clock_mhz);
    case Metric::memory_clock: return d(m.memory_clock_mhz);
    case Metric::pcie_rx: return d(m.pcie_rx_bytes_per_second);
    case Metric::pcie_tx: return d(m.pcie_tx_bytes_per_second);
    case Metric::memory_bandwidth: return m.memory_bandwidth_utilization_percent;
  }
  return std::nullopt;
}

}  // namespace apt::vgpu::monitoring
