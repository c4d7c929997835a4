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

std::optional<double> as_double(const std::optional<std::uint32_t>& v) {
  return v ? std::optional<double>(*v) : std::nullopt;
}

}  // namespace

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
