// GPUMonitor samples a device backend on its own thread into bounded
// histories, keeps the latest node-wide sample, attributes GPU use to
// processes and virtual GPUs, raises threshold alerts, and calls subscribers.
//
//   GPUMonitor monitor(1.0, {"utilization", "memory", "temperature"});   // the seed's API
//   monitor.start();
//   NodeStats stats = monitor.get_current_stats();
//   auto last_minute = monitor.history("temperature", std::chrono::minutes(1));
//   monitor.stop();
//
// Only the selected metrics are kept (others read as absent); "processes"
// turns on per-process attribution. Per-vGPU attribution needs a source of
// VgpuView (runtime::Node::vgpu_views) in MonitorOptions.
//
// Thread safety: every public method may be called from any thread.
// Callbacks run on the sampling thread (or the thread calling sample()) and
// must not call stop() on their own monitor.
#pragma once

#include <apt/vgpu/device/backend.hpp>
#include <apt/vgpu/monitoring/alert.hpp>
#include <apt/vgpu/monitoring/history.hpp>
#include <apt/vgpu/monitoring/metric.hpp>
#include <apt/vgpu/monitoring/node_stats.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace apt::vgpu::monitoring {

struct MonitorOptions {
  std::size_t history_capacity = 3600;  // samples kept per GPU and metric
  AlertThresholds alerts;
  // Who knows the virtual GPUs (e.g. [&node] { return node.vgpu_views(); }).
  std::function<std::vector<VgpuView>()> vgpus;
};

class GPUMonitor {
 public:
  using SampleCallback = std::function<void(const NodeStats&)>;
  using AlertCallback = std::function<void(const AlertEvent&)>;
  using SubscriptionId = std::uint64_t;

  // Monitors `backend`, which must outlive the monitor.
  GPUMonitor(device::Backend& backend, double update_interval_seconds = 1.0,
             const std::vector<std::string>& metrics = {"utilization", "memory", "temperature"},
             MonitorOptions options = {});
  // The seed's form: opens the default backend (VGPU_BACKEND, else auto) and owns it.
  explicit GPUMonitor(double update_interval_seconds = 1.0,
                      const std::vector<std::string>& metrics = {"utilization", "memory", "temperature"},
                      MonitorOptions options = {});
  ~GPUMonitor();
  GPUMonitor(const GPUMonitor&) = delete;
  GPUMonitor& operator=(const GPUMonitor&) = delete;

  void start();  // no-op when running
  void stop();   // prompt: wakes the sampler and joins it; safe to call twice
  [[nodiscard]] bool running() const noexcept;

  // Takes a sample now (as the sampler does each tick) and returns it.
  NodeStats sample();
  // The latest sample; takes one if there is none yet.
  [[nodiscard]] NodeStats get_current_stats();
  // Summary of `metric` over the last `window` (zero: everything kept), for one
  // GPU or, without `gpu`, the node aggregate. nullopt when no value was seen.
  [[nodiscard]] std::optional<WindowStats> history(std::string_view metric, std::chrono::nanoseconds window,
                                                   std::optional<std::uint32_t> gpu = std::nullopt) const;
  // The raw values (oldest first), e.g. for sparklines.
  [[nodiscard]] std::vector<double> history_values(std::string_view metric, std::chrono::nanoseconds window,
                                                   std::optional<std::uint32_t> gpu = std::nullopt) const;

  SubscriptionId subscribe(SampleCallback callback);
  SubscriptionId on_alert(AlertCallback callback);
  void unsubscribe(SubscriptionId id);

  [[nodiscard]] std::vector<std::tuple<std::string, std::uint32_t, std::string>> active_alerts() const;
  [[nodiscard]] const std::vector<Metric>& metrics() const noexcept;
  [[nodiscard]] std::chrono::nanoseconds interval() const noexcept;
  [[nodiscard]] std::uint64_t samples_taken() const noexcept;
  [[nodiscard]] device::Backend& backend() const noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace apt::vgpu::monitoring
