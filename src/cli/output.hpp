// Shared rendering for the CLI: aligned text tables of device readings and of
// the ledger (absent metrics are "n/a"). JSON forms are monitoring/stats_json.hpp.
#pragma once

#include <apt/vgpu/device/backend.hpp>
#include <apt/vgpu/runtime/node_ledger.hpp>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace apt::vgpu::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  [[nodiscard]] std::string render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

[[nodiscard]] std::string or_na(const std::optional<double>& value, const char* format_suffix);
// The devices table (one row per GPU) that `vgpu devices` and `vgpu demo` print.
[[nodiscard]] std::string devices_table(device::Backend& backend);
// The ledger table: what is leased and free on each GPU.
[[nodiscard]] std::string capacity_table(const runtime::NodeLedger& ledger);

}  // namespace apt::vgpu::cli
