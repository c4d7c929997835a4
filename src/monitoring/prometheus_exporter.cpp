#include <apt/vgpu/monitoring/prometheus_exporter.hpp>

#include <fmt/format.h>

#include <cmath>
#include <functional>

namespace apt::vgpu::monitoring {
namespace {

std::string escape(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{:.0f}", v);
  return fmt::format("{:.6g}", v);
}

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  // Starts a metric family (HELP/TYPE) once, then lines are added with sample().
  void family(const char* name, const char* type, const char* help) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    name_ = name;
  }
  void sample(const std::string& labels, double value) {
    out_ += name_;
    if (!labels.empty()) {
      out_ += '{';
      out_ += labels;
      out_ += '}';
    }
    out_ += ' ';
    out_ += number(value);
    out_ += '\n';
  }

 private:
  std::string& out_;
  const char* name_ = "";
};

std::string gpu_labels(const GpuSample& g) {
  return fmt::format("gpu=\"{}\",uuid=\"{}\",name=\"{}\"", g.gpu_id, escape(g.uuid), escape(g.name));
}

}  // namespace

std::string render_prometheus(const NodeStats& stats, const ExporterExtras& extras) {
  std::string out;
  out.reserve(512 + stats.gpus.size() * 1600 + stats.vgpus.size() * 600 + stats.processes.size() * 200);
  Writer w(out);
  std::vector<std::string> labels;
  labels.reserve(stats.gpus.size());
  for (const GpuSample& g : stats.gpus) labels.push_back(gpu_labels(g));

  struct Gauge {
    const char* name;
    const char* help;
    std::function<std::optional<double>(const device::GpuMetrics&)> read;
  };
  const Gauge gauges[] = {
      {"vgpu_gpu_utilization_ratio", "Share of time a kernel was running on the GPU (0..1).",
       [](const device::GpuMetrics& m) -> std::optional<double> {
         if (!m.utilization_percent) return std::nullopt;
         return *m.utilization_percent / 100.0;
       }},
      {"vgpu_gpu_memory_used_bytes", "GPU memory in use.",
       [](const device::GpuMetrics& m) -> std::optional<double> {
         if (!m.memory_used_bytes) return std::nullopt;
         return static_cast<double>(*m.memory_used_bytes);
       }},
      {"vgpu_gpu_memory_total_bytes", "GPU memory installed.",
       [](const device::GpuMetrics& m) -> std::optional<double> {
         if (!m.memory_total_bytes) return std::nullopt;
         return static_cast<double>(*m.memory_total_bytes);
       }},
      {"vgpu_gpu_temperature_celsius", "GPU temperature.",
       [](const device::GpuMetrics& m) { return m.temperature_celsius; }},
      {"vgpu_gpu_power_watts", "GPU power draw.", [](const device::GpuMetrics& m) { return m.power_watts; }},
      {"vgpu_gpu_power_limit_watts", "Enforced GPU power limit.",
       [](const device::GpuMetrics& m) { return m.power_limit_watts; }},
      {"vgpu_gpu_sm_clock_hertz", "SM clock.",
       [](const device::GpuMetrics& m) -> std::optional<double> {
         if (!m.sm_clock_mhz) return std::nullopt;
         return *m.sm_clock_mhz * 1e6;
       }},
      {"vgpu_gpu_memory_clock_hertz", "Memory clock.",
       [](const device::GpuMetrics& m) -> std::optional<double> {
         if (!m.memory_clock_mhz) return std::nullopt;
         return *m.memory_clock_mhz * 1e6;
       }},
      {"vgpu_gpu_pcie_rx_bytes_per_second", "PCIe receive throughput.",
       [](const device::GpuMetrics& m) -> std::optional<double> {
         if (!m.pcie_rx_bytes_per_second) return std::nullopt;
         return static_cast<double>(*m.pcie_rx_bytes_per_second);
       }},
      {"vgpu_gpu_pcie_tx_bytes_per_second", "PCIe transmit throughput.",
       [](const device::GpuMetrics& m) -> std::optional<double> {
         if (!m.pcie_tx_bytes_per_second) return std::nullopt;
         return static_cast<double>(*m.pcie_tx_bytes_per_second);
       }},
      {"vgpu_gpu_memory_bandwidth_utilization_ratio", "Share of time GPU memory was read or written (0..1).",
       [](const device::GpuMetrics& m) -> std::optional<double> {
         if (!m.memory_bandwidth_utilization_percent) return std::nullopt;
         return *m.memory_bandwidth_utilization_percent / 100.0;
       }},
  };
  for (const Gauge& gauge : gauges) {
    bool any = false;
    for (std::size_t i = 0; i < stats.gpus.size(); ++i) {
      const auto v = gauge.read(stats.gpus[i].metrics);
      if (!v) continue;
      if (!any) w.family(gauge.name, "gauge", gauge.help);
      any = true;
      w.sample(labels[i], *v);
    }
  }
  if (!stats.gpus.empty()) {
    w.family("vgpu_gpu_healthy", "gauge", "1 when the GPU is healthy, 0 when unhealthy or lost.");
    for (std::size_t i = 0; i < stats.gpus.size(); ++i) {
      w.sample(labels[i], stats.gpus[i].health == device::HealthState::healthy ? 1 : 0);
    }
    w.family("vgpu_gpu_lost", "gauge", "1 when the driver reports the GPU lost.");
    for (std::size_t i = 0; i < stats.gpus.size(); ++i) {
      w.sample(labels[i], stats.gpus[i].health == device::HealthState::lost ? 1 : 0);
    }
    w.family("vgpu_gpu_xid_errors_total", "counter", "Critical XID events seen since the monitor started.");
    for (std::size_t i = 0; i < stats.gpus.size(); ++i) w.sample(labels[i], static_cast<double>(stats.gpus[i].xid_events));
    bool any_ecc = false;
    for (std::size_t i = 0; i < stats.gpus.size(); ++i) {
      if (!stats.gpus[i].ecc_uncorrected_errors) continue;
      if (!any_ecc) w.family("vgpu_gpu_ecc_uncorrected_errors_total", "counter", "Uncorrectable ECC errors (volatile).");
      any_ecc = true;
      w.sample(labels[i], static_cast<double>(*stats.gpus[i].ecc_uncorrected_errors));
    }
  }
  bool any_process_memory = false;
  for (const ProcessUsage& p : stats.processes) {
    if (!p.memory_bytes) continue;
    if (!any_process_memory) w.family("vgpu_process_memory_used_bytes", "gauge", "GPU memory used by a process.");
    any_process_memory = true;
    const GpuSample* g = p.gpu < stats.gpus.size() ? &stats.gpus[p.gpu] : nullptr;
    w.sample(fmt::format("{},pid=\"{}\",command=\"{}\",vgpu=\"{}\"", g != nullptr ? labels[p.gpu] : fmt::format("gpu=\"{}\"", p.gpu),
                         p.pid, escape(p.command), escape(p.vgpu)),
             static_cast<double>(*p.memory_bytes));
  }
  if (!stats.vgpus.empty()) {
    auto vgpu_labels = [&](const VgpuUsage& v) {
      const GpuSample* g = v.vgpu.gpu < stats.gpus.size() ? &stats.gpus[v.vgpu.gpu] : nullptr;
      return fmt::format("vgpu=\"{}\",{}", escape(v.vgpu.name),
                         g != nullptr ? labels[v.vgpu.gpu] : fmt::format("gpu=\"{}\"", v.vgpu.gpu));
    };
    w.family("vgpu_vgpu_info", "gauge", "A virtual GPU leased on this node (always 1).");
    for (const VgpuUsage& v : stats.vgpus) w.sample(vgpu_labels(v), 1);
    bool any = false;
    for (const VgpuUsage& v : stats.vgpus) {
      if (!v.vgpu.memory_limit) continue;
      if (!any) w.family("vgpu_vgpu_memory_limit_bytes", "gauge", "Memory limit of a virtual GPU.");
      any = true;
      w.sample(vgpu_labels(v), static_cast<double>(*v.vgpu.memory_limit));
    }
    any = false;
    for (const VgpuUsage& v : stats.vgpus) {
      if (!v.vgpu.compute_share) continue;
      if (!any) w.family("vgpu_vgpu_compute_share_ratio", "gauge", "Compute share of a virtual GPU (0..1).");
      any = true;
      w.sample(vgpu_labels(v), *v.vgpu.compute_share);
    }
    any = false;
    for (const VgpuUsage& v : stats.vgpus) {
      if (!v.memory_used) continue;
      if (!any) w.family("vgpu_vgpu_memory_used_bytes", "gauge", "GPU memory used by a virtual GPU's processes.");
      any = true;
      w.sample(vgpu_labels(v), static_cast<double>(*v.memory_used));
    }
    w.family("vgpu_vgpu_active", "gauge", "1 while a virtual GPU is entered or runs a process.");
    for (const VgpuUsage& v : stats.vgpus) w.sample(vgpu_labels(v), v.vgpu.active ? 1 : 0);
    w.family("vgpu_vgpu_processes", "gauge", "Processes running on a virtual GPU.");
    for (const VgpuUsage& v : stats.vgpus) w.sample(vgpu_labels(v), static_cast<double>(v.processes.size()));
  }
  w.family("vgpu_alert_active", "gauge", "1 for each alert raised now (kind: temperature, memory, power, vgpu_memory, gpu_lost).");
  if (extras.active_alerts.empty()) {
    w.sample("alert=\"none\"", 0);
  }
  for (const auto& [kind, gpu, vgpu] : extras.active_alerts) {
    w.sample(fmt::format("alert=\"{}\",gpu=\"{}\",vgpu=\"{}\"", escape(kind), gpu, escape(vgpu)), 1);
  }
  w.family("vgpu_monitor_samples_total", "counter", "Samples taken by the monitor.");
  w.sample("", static_cast<double>(extras.samples_taken));
  w.family("vgpu_monitor_sample_duration_seconds", "gauge", "Time the last sample took.");
  w.sample("", stats.sample_seconds);
  w.family("vgpu_monitor_last_sample_timestamp_seconds", "gauge", "Unix time of the last sample.");
  w.sample("", std::chrono::duration<double>(stats.time.time_since_epoch()).count());
  return out;
}

}  // namespace apt::vgpu::monitoring
