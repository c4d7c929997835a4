// Threshold alerts with hysteresis.
//
// An alert is raised when its value goes above the threshold and cleared only
// when it falls below threshold - hysteresis, so a value hovering at the
// threshold raises once, not on every sample. A lost GPU raises `gpu_lost`
// until it is healthy again.
//
// Thread safety: plain value types; AlertTracker is not synchronised (the
// monitor calls it from its sampling thread).
#pragma once

#include <apt/vgpu/config/vgpu_config.hpp>
#include <apt/vgpu/monitoring/node_stats.hpp>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace apt::vgpu::monitoring {

struct AlertThresholds {
  std::optional<double> temperature_celsius = 85.0;
  std::optional<double> memory_percent = 95.0;       // of the GPU's memory
  std::optional<double> power_percent;               // of the power limit
  std::optional<double> vgpu_memory_percent = 95.0;  // of a vGPU's memory limit
  bool gpu_lost = true;
  double temperature_hysteresis = 3.0;  // °C
  double percent_hysteresis = 5.0;      // percentage points

  [[nodiscard]] static AlertThresholds from_config(const config::AlertThresholds& c);
};

struct AlertEvent {
  enum class State { raised, cleared };
  State state = State::raised;
  std::string kind;    // temperature | memory | power | vgpu_memory | gpu_lost
  std::uint32_t gpu = 0;
  std::string vgpu;    // for vgpu_memory
  double value = 0;
  double threshold = 0;
  std::chrono::system_clock::time_point time;
  std::string message;
};

class AlertTracker {
 public:
  explicit AlertTracker(AlertThresholds thresholds) : thresholds_(thresholds) {}
  // Compares a sample with the thresholds; returns the alerts that changed state.
  std::vector<AlertEvent> update(const NodeStats& stats);
  // Alerts raised now: (kind, gpu, vgpu).
  [[nodiscard]] std::vector<std::tuple<std::string, std::uint32_t, std::string>> active() const;
  [[nodiscard]] const AlertThresholds& thresholds() const noexcept { return thresholds_; }

 private:
  void check(std::vector<AlertEvent>& out, const std::string& kind, std::uint32_t gpu, const std::string& vgpu,
             std::optional<double> value, std::optional<double> threshold, double hysteresis, const char* unit,
             std::chrono::system_clock::time_point time);

  AlertThresholds thresholds_;
  std::map<std::tuple<std::string, std::uint32_t, std::string>, bool> raised_;
};

}  // namespace apt::vgpu::monitoring
