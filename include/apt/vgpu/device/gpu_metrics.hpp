// One sample of a GPU's dynamic readings. Every field is optional: a metric
// the hardware or driver does not support is absent (std::nullopt), never 0,
// so that monitors and exporters can tell "idle" from "unknown".
//
// Units are in the field names. Thread safety: a plain value type.
#pragma once

#include <cstdint>
#include <optional>

namespace apt::vgpu::device {

struct GpuMetrics {
  std::optional<double> utilization_percent;           // SM busy time over the driver's window
  std::optional<std::uint64_t> memory_used_bytes;
  std::optional<std::uint64_t> memory_total_bytes;
  std::optional<double> temperature_celsius;
  std::optional<double> power_watts;
  std::optional<double> power_limit_watts;
  std::optional<std::uint32_t> sm_clock_mhz;
  std::optional<std::uint32_t> memory_clock_mhz;
  std::optional<std::uint64_t> pcie_rx_bytes_per_second;
  std::optional<std::uint64_t> pcie_tx_bytes_per_second;
  std::optional<double> memory_bandwidth_utilization_percent;  // DRAM busy time
};

}  // namespace apt::vgpu::device
