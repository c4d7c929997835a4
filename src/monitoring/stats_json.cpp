#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/monitoring/stats_json.hpp>

#include <fmt/format.h>

#include <cmath>

namespace apt::vgpu::monitoring {
namespace {

template <class T>
nlohmann::json opt(const std::optional<T>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

template <class T>
std::optional<T> read_opt(const nlohmann::json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  return it->get<T>();
}

nlohmann::json metrics_json(const device::GpuMetrics& m) {
  return {{"utilization_percent", opt(m.utilization_percent)},
          {"memory_used_bytes", opt(m.memory_used_bytes)},
          {"memory_total_bytes", opt(m.memory_total_bytes)},
          {"temperature_celsius", opt(m.temperature_celsius)},
          {"power_watts", opt(m.power_watts)},
          {"power_limit_watts", opt(m.power_limit_watts)},
          {"sm_clock_mhz", opt(m.sm_clock_mhz)},
          {"memory_clock_mhz", opt(m.memory_clock_mhz)},
          {"pcie_rx_bytes_per_second", opt(m.pcie_rx_bytes_per_second)},
          {"pcie_tx_bytes_per_second", opt(m.pcie_tx_bytes_per_second)},
          {"memory_bandwidth_utilization_percent", opt(m.memory_bandwidth_utilization_percent)}};
}

device::GpuMetrics read_metrics(const nlohmann::json& j) {
  device::GpuMetrics m;
  m.utilization_percent = read_opt<double>(j, "utilization_percent");
  m.memory_used_bytes = read_opt<std::uint64_t>(j, "memory_used_bytes");
  m.memory_total_bytes = read_opt<std::uint64_t>(j, "memory_total_bytes");
  m.temperature_celsius = read_opt<double>(j, "temperature_celsius");
  m.power_watts = read_opt<double>(j, "power_watts");
  m.power_limit_watts = read_opt<double>(j, "power_limit_watts");
  m.sm_clock_mhz = read_opt<std::uint32_t>(j, "sm_clock_mhz");
  m.memory_clock_mhz = read_opt<std::uint32_t>(j, "memory_clock_mhz");
  m.pcie_rx_bytes_per_second = read_opt<std::uint64_t>(j, "pcie_rx_bytes_per_second");
  m.pcie_tx_bytes_per_second = read_opt<std::uint64_t>(j, "pcie_tx_bytes_per_second");
  m.memory_bandwidth_utilization_percent = read_opt<double>(j, "memory_bandwidth_utilization_percent");
  return m;
}

device::HealthState read_health(const std::string& text) {
  for (auto state : {device::HealthState::healthy, device::HealthState::unhealthy, device::HealthState::lost}) {
    if (device::to_string(state) == text) return state;
  }
  throw InvalidArgument(fmt::format("gpus[].health.state: '{}' is not healthy, unhealthy or lost", text));
}

}  // namespace

nlohmann::json gpu_json(const device::GpuInfo& info, const device::GpuMetrics& metrics, const device::GpuHealth& health,
                        const std::vector<device::GpuProcess>& processes) {
  nlohmann::json j;
  j["index"] = info.index;
  j["uuid"] = info.uuid;
  j["name"] = info.name;
  j["vendor"] = std::string(device::to_string(info.vendor));
  j["memory_total_bytes"] = info.memory_total;
  j["compute_capability"] = info.compute_capability ? nlohmann::json(fmt::format("{}.{}", info.compute_capability->major,
                                                                                 info.compute_capability->minor))
                                                    : nlohmann::json(nullptr);
  j["sm_count"] = opt(info.sm_count);
  j["metrics"] = metrics_json(metrics);
  j["health"] = {{"state", std::string(device::to_string(health.state))},
                 {"detail", health.detail},
                 {"xid_events", health.xid_events},
                 {"xid_total", health.xid_total},
                 {"ecc_uncorrected_errors", opt(health.ecc_uncorrected_errors)}};
  nlohmann::json procs = nlohmann::json::array();
  for (const auto& p : processes) {
    procs.push_back({{"pid", p.pid}, {"command", p.command}, {"memory_bytes", opt(p.memory_bytes)}});
  }
  j["processes"] = procs;
  return j;
}

nlohmann::json stats_json(const NodeStats& s, const std::vector<device::GpuInfo>& gpus, const UtilizationHistory& history) {
  nlohmann::json j;
  j["time"] = std::chrono::duration<double>(s.time.time_since_epoch()).count();
  j["backend"] = s.backend;
  j["gpus"] = nlohmann::json::array();
  for (const auto& g : s.gpus) {
    device::GpuInfo info;
    if (g.gpu_id < gpus.size()) info = gpus[g.gpu_id];
    info.index = g.gpu_id;
    info.uuid = g.uuid;
    info.name = g.name;
    device::GpuHealth health;
    health.state = g.health;
    health.detail = g.health_detail;
    health.xid_total = g.xid_events;  // the monitor keeps the count, not the list
    health.ecc_uncorrected_errors = g.ecc_uncorrected_errors;
    nlohmann::json gj = gpu_json(info, g.metrics, health, {});
    gj.erase("processes");  // listed once, below, with their vGPU
    j["gpus"].push_back(std::move(gj));
  }
  j["aggregate"] = metrics_json(s.aggregate);
  j["processes"] = nlohmann::json::array();
  for (const auto& p : s.processes) {
    j["processes"].push_back(
        {{"pid", p.pid}, {"command", p.command}, {"gpu", p.gpu}, {"memory_bytes", opt(p.memory_bytes)}, {"vgpu", p.vgpu}});
  }
  j["vgpus"] = nlohmann::json::array();
  for (const auto& v : s.vgpus) {
    j["vgpus"].push_back({{"name", v.vgpu.name},
                          {"gpu", v.vgpu.gpu},
                          {"active", v.vgpu.active},
                          {"memory_limit_bytes", opt(v.vgpu.memory_limit)},
                          {"compute_share", opt(v.vgpu.compute_share)},
                          {"memory_used_bytes", opt(v.memory_used)},
                          {"processes", v.processes.size()}});
  }
  if (!history.empty()) {
    nlohmann::json h = nlohmann::json::object();
    for (const auto& [gpu, values] : history) h[std::to_string(gpu)] = values;
    j["utilization_history"] = std::move(h);
  }
  return j;
}

StatsDocument parse_stats_json(std::string_view text) {
  StatsDocument doc;
  NodeStats& s = doc.stats;
  const char* where = "document";
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    where = "time";
    s.time = std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
        std::chrono::duration<double>(j.at("time").get<double>())));
    where = "backend";
    s.backend = j.at("backend").get<std::string>();
    where = "gpus";
    for (const auto& g : j.at("gpus")) {
      GpuSample sample;
      sample.gpu_id = g.at("index").get<std::uint32_t>();
      sample.uuid = g.at("uuid").get<std::string>();
      sample.name = g.at("name").get<std::string>();
      sample.metrics = read_metrics(g.at("metrics"));
      const auto& health = g.at("health");
      sample.health = read_health(health.at("state").get<std::string>());
      sample.health_detail = health.value("detail", "");
      sample.xid_events = health.value("xid_total", std::uint64_t{0});
      sample.ecc_uncorrected_errors = read_opt<std::uint64_t>(health, "ecc_uncorrected_errors");
      s.gpus.push_back(std::move(sample));
    }
    where = "aggregate";
    s.aggregate = read_metrics(j.at("aggregate"));
    where = "processes";
    for (const auto& p : j.at("processes")) {
      s.processes.push_back(ProcessUsage{p.at("pid").get<std::int64_t>(), p.at("command").get<std::string>(),
                                         p.at("gpu").get<std::uint32_t>(), read_opt<std::uint64_t>(p, "memory_bytes"),
                                         p.at("vgpu").get<std::string>()});
    }
    where = "vgpus";
    for (const auto& v : j.at("vgpus")) {
      VgpuUsage usage;
      usage.vgpu.name = v.at("name").get<std::string>();
      usage.vgpu.gpu = v.at("gpu").get<std::uint32_t>();
      usage.vgpu.active = v.at("active").get<bool>();
      usage.vgpu.memory_limit = read_opt<std::uint64_t>(v, "memory_limit_bytes");
      usage.vgpu.compute_share = read_opt<double>(v, "compute_share");
      usage.memory_used = read_opt<std::uint64_t>(v, "memory_used_bytes");
      // Its processes are the ones attributed to it in the list above.
      for (const auto& p : s.processes) {
        if (p.vgpu == usage.vgpu.name) {
          usage.processes.push_back(p);
          usage.vgpu.pids.push_back(p.pid);
        }
      }
      s.vgpus.push_back(std::move(usage));
    }
    where = "utilization_history";
    if (const auto h = j.find("utilization_history"); h != j.end()) {
      for (const auto& [gpu, values] : h->items()) {
        doc.history[static_cast<std::uint32_t>(std::stoul(gpu))] = values.get<std::vector<double>>();
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(fmt::format("stats: field '{}' is missing or malformed ({})", where, e.what()));
  } catch (const std::invalid_argument& e) {  // stoul on a key that is not a GPU index
    throw InvalidArgument(fmt::format("stats: field '{}' is malformed ({})", where, e.what()));
  } catch (const std::out_of_range& e) {
    throw InvalidArgument(fmt::format("stats: field '{}' is malformed ({})", where, e.what()));
  }
  return doc;
}

}  // namespace apt::vgpu::monitoring
