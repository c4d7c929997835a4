#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/device/backend_factory.hpp>
#include <apt/vgpu/monitoring/gpu_monitor.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace apt::vgpu::monitoring {
namespace {

using Clock = std::chrono::steady_clock;

// Keeps the selected metrics and clears the rest.
device::GpuMetrics filtered(const device::GpuMetrics& m, const std::vector<bool>& keep) {
  device::GpuMetrics out;
  auto k = [&keep](Metric metric) { return keep[static_cast<std::size_t>(metric)]; };
  if (k(Metric::utilization)) out.utilization_percent = m.utilization_percent;
  if (k(Metric::memory_used)) out.memory_used_bytes = m.memory_used_bytes;
  if (k(Metric::memory_total)) out.memory_total_bytes = m.memory_total_bytes;
  if (k(Metric::temperature)) out.temperature_celsius = m.temperature_celsius;
  if (k(Metric::power)) out.power_watts = m.power_watts;
  if (k(Metric::power_limit)) out.power_limit_watts = m.power_limit_watts;
  if (k(Metric::sm_clock)) out.sm_clock_mhz = m.sm_clock_mhz;
  if (k(Metric::memory_clock)) out.memory_clock_mhz = m.memory_clock_mhz;
  if (k(Metric::pcie_rx)) out.pcie_rx_bytes_per_second = m.pcie_rx_bytes_per_second;
  if (k(Metric::pcie_tx)) out.pcie_tx_bytes_per_second = m.pcie_tx_bytes_per_second;
  if (k(Metric::memory_bandwidth)) out.memory_bandwidth_utilization_percent = m.memory_bandwidth_utilization_percent;
  return out;
}

template <class T>
void add(std::optional<T>& total, const std::optional<T>& v) {
  if (v) total = total.value_or(T{}) + *v;
}

device::GpuMetrics aggregate(const std::vector<GpuSample>& gpus) {
  device::GpuMetrics a;
  int util_n = 0;
  int bw_n = 0;
  int sm_n = 0;
  int mem_clock_n = 0;
  std::uint64_t sm_sum = 0;
  std::uint64_t mem_clock_sum = 0;
  for (const GpuSample& g : gpus) {
    const auto& m = g.metrics;
    if (m.utilization_percent) {
      a.utilization_percent = a.utilization_percent.value_or(0) + *m.utilization_percent;
      ++util_n;
    }
    if (m.memory_bandwidth_utilization_percent) {
      a.memory_bandwidth_utilization_percent =
          a.memory_bandwidth_utilization_percent.value_or(0) + *m.memory_bandwidth_utilization_percent;
      ++bw_n;
    }
    if (m.sm_clock_mhz) {
      sm_sum += *m.sm_clock_mhz;
      ++sm_n;
    }
    if (m.memory_clock_mhz) {
      mem_clock_sum += *m.memory_clock_mhz;
      ++mem_clock_n;
    }
    add(a.memory_used_bytes, m.memory_used_bytes);
    add(a.memory_total_bytes, m.memory_total_bytes);
    add(a.power_watts, m.power_watts);
    add(a.power_limit_watts, m.power_limit_watts);
    add(a.pcie_rx_bytes_per_second, m.pcie_rx_bytes_per_second);
    add(a.pcie_tx_bytes_per_second, m.pcie_tx_bytes_per_second);
    if (m.temperature_celsius) a.temperature_celsius = std::max(a.temperature_celsius.value_or(-1e9), *m.temperature_celsius);
  }
  if (util_n > 0) *a.utilization_percent /= util_n;
  if (bw_n > 0) *a.memory_bandwidth_utilization_percent /= bw_n;
  if (sm_n > 0) a.sm_clock_mhz = static_cast<std::uint32_t>(sm_sum / static_cast<std::uint64_t>(sm_n));
  if (mem_clock_n > 0) a.memory_clock_mhz = static_cast<std::uint32_t>(mem_clock_sum / static_cast<std::uint64_t>(mem_clock_n));
  return a;
}

}  // namespace

struct GPUMonitor::Impl {
  std::unique_ptr<device::Backend> owned;
  device::Backend* backend = nullptr;
  std::chrono::nanoseconds interval;
  std::vector<Metric> metrics;
  std::vector<bool> keep = std::vector<bool>(kMetricCount, false);
  bool processes = false;
  MonitorOptions options;

  mutable std::mutex mutex;
  std::condition_variable wake;
  std::optional<NodeStats> latest;                 // guarded by mutex
  std::vector<std::vector<History>> histories;     // [gpu][metric], guarded by mutex
  std::vector<History> aggregate_history;          // [metric], guarded by mutex
  AlertTracker alerts;                             // guarded by sample_mutex
  std::map<SubscriptionId, SampleCallback> sample_callbacks;  // guarded by mutex
  std::map<SubscriptionId, AlertCallback> alert_callbacks;    // guarded by mutex
  SubscriptionId next_id = 1;
  std::mutex sample_mutex;  // one sample at a time (sampler thread vs sample())
  std::thread thread;
  bool stop_requested = false;  // guarded by mutex
  std::atomic<bool> running{false};
  std::atomic<std::uint64_t> samples{0};

  Impl(device::Backend* b, double seconds, const std::vector<std::string>& names, MonitorOptions o)
      : backend(b), options(std::move(o)), alerts(options.alerts) {
    if (!(seconds > 0.0) || !std::isfinite(seconds)) {
      throw InvalidArgument(fmt::format("update_interval: {} seconds is not positive; use e.g. 1.0", seconds));
    }
    interval = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds));
    metrics = expand_metric_names(names, &processes);
    for (Metric m : metrics) keep[static_cast<std::size_t>(m)] = true;
    histories.resize(backend->gpu_count());
    for (auto& per_gpu : histories) {
      for (int m = 0; m < kMetricCount; ++m) per_gpu.emplace_back(options.history_capacity);
    }
    for (int m = 0; m < kMetricCount; ++m) aggregate_history.emplace_back(options.history_capacity);
  }

  NodeStats take() {
    const auto start = Clock::now();
    NodeStats s;
    s.time = std::chrono::system_clock::now();
    s.backend = std::string(backend->name());
    const bool attribute = processes || static_cast<bool>(options.vgpus);
    for (const device::GpuInfo& info : backend->gpus()) {
      GpuSample g;
      g.gpu_id = info.index;
      g.uuid = info.uuid;
      g.name = info.name;
      g.metrics = filtered(backend->metrics(info.index), keep);
      const device::GpuHealth h = backend->health(info.index);
      g.health = h.state;
      g.health_detail = h.detail;
      g.xid_events = h.xid_total;
      g.ecc_uncorrected_errors = h.ecc_uncorrected_errors;
      s.gpus.push_back(std::move(g));
      if (attribute) {
        for (const device::GpuProcess& p : backend->processes(info.index)) {
          s.processes.push_back(ProcessUsage{p.pid, p.command, info.index, p.memory_bytes, {}});
        }
      }
    }
    s.aggregate = aggregate(s.gpus);
    if (options.vgpus) {
      for (VgpuView& v : options.vgpus()) {
        VgpuUsage u;
        for (ProcessUsage& p : s.processes) {
          if (p.gpu == v.gpu && std::find(v.pids.begin(), v.pids.end(), p.pid) != v.pids.end()) {
            p.vgpu = v.name;
            u.processes.push_back(p);
            if (p.memory_bytes) u.memory_used = u.memory_used.value_or(0) + *p.memory_bytes;
          }
        }
        u.vgpu = std::move(v);
        s.vgpus.push_back(std::move(u));
      }
    }
    s.sample_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    return s;
  }

  NodeStats sample_now() {
    std::lock_guard sampling(sample_mutex);
    NodeStats s = take();
    const std::vector<AlertEvent> events = alerts.update(s);
    std::vector<SampleCallback> sample_cbs;
    std::vector<AlertCallback> alert_cbs;
    {
      std::lock_guard lock(mutex);
      const auto now = Clock::now();
      for (const GpuSample& g : s.gpus) {
        for (Metric m : metrics) histories[g.gpu_id][static_cast<std::size_t>(m)].push(now, value_of(g.metrics, m));
      }
      for (Metric m : metrics) aggregate_history[static_cast<std::size_t>(m)].push(now, value_of(s.aggregate, m));
      latest = s;
      for (const auto& [id, cb] : sample_callbacks) sample_cbs.push_back(cb);
      for (const auto& [id, cb] : alert_callbacks) alert_cbs.push_back(cb);
    }
    samples.fetch_add(1, std::memory_order_relaxed);
    for (const auto& cb : sample_cbs) cb(s);
    for (const AlertEvent& e : events) {
      for (const auto& cb : alert_cbs) cb(e);
    }
    return s;
  }

  void loop() {
    std::unique_lock lock(mutex);
    auto next = Clock::now();
    while (!stop_requested) {
      lock.unlock();
      try {
        sample_now();
      } catch (const std::exception& e) {
        log::error(fmt::format("monitor: sampling failed: {}", e.what()));
      }
      lock.lock();
      next += interval;
      const auto now = Clock::now();
      if (next < now) next = now;  // fell behind: do not burst to catch up
      wake.wait_until(lock, next, [this] { return stop_requested; });
    }
  }

  const History& history_of(std::string_view metric, std::optional<std::uint32_t> gpu) const {
    const Metric m = parse_metric(metric);
    if (std::find(metrics.begin(), metrics.end(), m) == metrics.end()) {
      std::vector<std::string> names;
      for (Metric k : metrics) names.emplace_back(info(k).name);
      throw InvalidArgument(fmt::format("history: metric '{}' is not sampled by this monitor (it samples {})", metric,
                                        fmt::join(names, ", ")));
    }
    if (!gpu) return aggregate_history[static_cast<std::size_t>(m)];
    if (*gpu >= histories.size()) {
      throw InvalidArgument(fmt::format("gpu: there is no GPU {} (the node has {})", *gpu, histories.size()));
    }
    return histories[*gpu][static_cast<std::size_t>(m)];
  }
};

namespace {

std::unique_ptr<device::Backend> default_backend() {
  const device::BackendKind kind = device::backend_from_environment().value_or(device::BackendKind::automatic);
  device::SimConfig sim;
  sim.apply_environment();
  return device::open_backend(kind, sim);
}

}  // namespace

GPUMonitor::GPUMonitor(device::Backend& backend, double update_interval_seconds, const std::vector<std::string>& metrics,
                       MonitorOptions options)
    : impl_(std::make_unique<Impl>(&backend, update_interval_seconds, metrics, std::move(options))) {}

GPUMonitor::GPUMonitor(double update_interval_seconds, const std::vector<std::string>& metrics, MonitorOptions options) {
  auto backend = default_backend();
  impl_ = std::make_unique<Impl>(backend.get(), update_interval_seconds, metrics, std::move(options));
  impl_->owned = std::move(backend);
}

GPUMonitor::~GPUMonitor() { stop(); }

void GPUMonitor::start() {
  std::lock_guard lock(impl_->mutex);
  if (impl_->running.load()) return;
  impl_->stop_requested = false;
  impl_->running = true;
  impl_->thread = std::thread([this] { impl_->loop(); });
}

void GPUMonitor::stop() {
  {
    std::lock_guard lock(impl_->mutex);
    if (!impl_->running.load()) return;
    impl_->stop_requested = true;
  }
  impl_->wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->running = false;
}

bool GPUMonitor::running() const noexcept { return impl_->running.load(); }
NodeStats GPUMonitor::sample() { return impl_->sample_now(); }

NodeStats GPUMonitor::get_current_stats() {
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->latest) return *impl_->latest;
  }
  return impl_->sample_now();
}

std::optional<WindowStats> GPUMonitor::history(std::string_view metric, std::chrono::nanoseconds window,
                                               std::optional<std::uint32_t> gpu) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->history_of(metric, gpu).stats(window, Clock::now());
}

std::vector<double> GPUMonitor::history_values(std::string_view metric, std::chrono::nanoseconds window,
                                               std::optional<std::uint32_t> gpu) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->history_of(metric, gpu).values(window, Clock::now());
}

GPUMonitor::SubscriptionId GPUMonitor::subscribe(SampleCallback callback) {
  std::lock_guard lock(impl_->mutex);
  const SubscriptionId id = impl_->next_id++;
  impl_->sample_callbacks[id] = std::move(callback);
  return id;
}

GPUMonitor::SubscriptionId GPUMonitor::on_alert(AlertCallback callback) {
  std::lock_guard lock(impl_->mutex);
  const SubscriptionId id = impl_->next_id++;
  impl_->alert_callbacks[id] = std::move(callback);
  return id;
}

void GPUMonitor::unsubscribe(SubscriptionId id) {
  std::lock_guard lock(impl_->mutex);
  impl_->sample_callbacks.erase(id);
  impl_->alert_callbacks.erase(id);
}

std::vector<std::tuple<std::string, std::uint32_t, std::string>> GPUMonitor::active_alerts() const {
  std::lock_guard sampling(impl_->sample_mutex);
  return impl_->alerts.active();
}

const std::vector<Metric>& GPUMonitor::metrics() const noexcept { return impl_->metrics; }
std::chrono::nanoseconds GPUMonitor::interval() const noexcept { return impl_->interval; }
std::uint64_t GPUMonitor::samples_taken() const noexcept { return impl_->samples.load(); }
device::Backend& GPUMonitor::backend() const noexcept { return *impl_->backend; }

}  // namespace apt::vgpu::monitoring
