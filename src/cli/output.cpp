#include "output.hpp"

#include <apt/vgpu/common/size.hpp>

#include <algorithm>
#include <fmt/format.h>

namespace apt::vgpu::cli {

std::string Table::render() const {
  std::vector<std::size_t> widths;
  for (const auto& row : rows_) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string or_na(const std::optional<double>& value, const char* suffix) {
  if (!value) return "n/a";
  return fmt::format("{:.0f}{}", *value, suffix);
}

namespace {

template <class T>
nlohmann::json opt(const std::optional<T>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

std::optional<double> as_double(const std::optional<std::uint32_t>& v) {
  return v ? std::optional<double>(*v) : std::nullopt;
}

}  // namespace

nlohmann::json gpu_json(const device::GpuInfo& info, const device::GpuMetrics& m, const device::GpuHealth& health,
                        const std::vector<device::GpuProcess>& processes) {
  nlohmann::json j;
  j["index"] = info.index;
  j["uuid"] = info.uuid;
  j["name"] = info.name;
  j["vendor"] = std::string(device::to_string(info.vendor));
  j["memory_total_bytes"] = info.memory_total;
  j["compute_capability"] = info.compute_capability
                                ? nlohmann::json(fmt::format("{}.{}", info.compute_capability->major,
                                                             info.compute_capability->minor))
                                : nlohmann::json(nullptr);
  j["sm_count"] = opt(info.sm_count);
  nlohmann::json metrics;
  metrics["utilization_percent"] = opt(m.utilization_percent);
  metrics["memory_used_bytes"] = opt(m.memory_used_bytes);
  metrics["memory_total_bytes"] = opt(m.memory_total_bytes);
  metrics["temperature_celsius"] = opt(m.temperature_celsius);
  metrics["power_watts"] = opt(m.power_watts);
  metrics["power_limit_watts"] = opt(m.power_limit_watts);
  metrics["sm_clock_mhz"] = opt(m.sm_clock_mhz);
  metrics["memory_clock_mhz"] = opt(m.memory_clock_mhz);
  metrics["pcie_rx_bytes_per_second"] = opt(m.pcie_rx_bytes_per_second);
  metrics["pcie_tx_bytes_per_second"] = opt(m.pcie_tx_bytes_per_second);
  metrics["memory_bandwidth_utilization_percent"] = opt(m.memory_bandwidth_utilization_percent);
  j["metrics"] = metrics;
  j["health"] = {{"state", std::string(device::to_string(health.state))},
                 {"detail", health.detail},
                 {"xid_events", health.xid_events},
                 {"ecc_uncorrected_errors", opt(health.ecc_uncorrected_errors)}};
  nlohmann::json procs = nlohmann::json::array();
  for (const auto& p : processes) {
    procs.push_back({{"pid", p.pid}, {"command", p.command}, {"memory_bytes", opt(p.memory_bytes)}});
  }
  j["processes"] = procs;
  return j;
}

std::string devices_table(device::Backend& backend) {
  Table table({"GPU", "NAME", "UUID", "MEMORY USED/TOTAL", "CC", "SMS", "UTIL", "TEMP", "POWER/LIMIT", "SM CLOCK",
               "HEALTH"});
  for (const auto& gpu : backend.gpus()) {
    const device::GpuMetrics m = backend.metrics(gpu.index);
    const device::GpuHealth h = backend.health(gpu.index);
    const std::string memory = fmt::format("{} / {}", m.memory_used_bytes ? format_size(*m.memory_used_bytes) : "n/a",
                                           format_size(gpu.memory_total));
    const std::string cc = gpu.compute_capability
                               ? fmt::format("{}.{}", gpu.compute_capability->major, gpu.compute_capability->minor)
                               : "n/a";
    table.add({std::to_string(gpu.index), gpu.name, gpu.uuid, memory, cc,
               gpu.sm_count ? std::to_string(*gpu.sm_count) : "n/a", or_na(m.utilization_percent, "%"),
               or_na(m.temperature_celsius, "C"),
               fmt::format("{} / {}", or_na(m.power_watts, "W"), or_na(m.power_limit_watts, "W")),
               or_na(as_double(m.sm_clock_mhz), "MHz"),
               h.usable() ? "healthy" : fmt::format("{} ({})", device::to_string(h.state), h.detail)});
  }
  return table.render();
}

std::string capacity_table(const runtime::NodeLedger& ledger) {
  Table table({"GPU", "SLICES", "MEMORY LEASED", "MEMORY FREE", "COMPUTE LEASED", "COMPUTE FREE"});
  for (const auto& g : ledger.capacity()) {
    table.add({std::to_string(g.gpu), std::to_string(g.slices), format_size(g.memory_leased),
               format_size(g.memory_free()), fmt::format("{:.2f}", g.compute_leased),
               fmt::format("{:.2f}", g.compute_free())});
  }
  return table.render();
}

}  // namespace apt::vgpu::cli
