#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/monitoring/alert.hpp>

#include <fmt/format.h>

namespace apt::vgpu::monitoring {

AlertThresholds AlertThresholds::from_config(const config::AlertThresholds& c) {
  AlertThresholds t;
  t.temperature_celsius = c.temperature_celsius;
  t.memory_percent = c.memory_percent;
  t.power_percent = c.power_percent;
  t.vgpu_memory_percent = c.memory_percent;
  return t;
}

void AlertTracker::check(std::vector<AlertEvent>& out, const std::string& kind, std::uint32_t gpu,
                         const std::string& vgpu, std::optional<double> value, std::optional<double> threshold,
                         double hysteresis, const char* unit, std::chrono::system_clock::time_point time) {
  if (!threshold) return;
  const auto key = std::make_tuple(kind, gpu, vgpu);
  bool& raised = raised_[key];
  if (!value) return;  // unknown: keep the state
  const std::string who = vgpu.empty() ? fmt::format("GPU {}", gpu) : fmt::format("{} on GPU {}", vgpu, gpu);
  if (!raised && *value > *threshold) {
    raised = true;
    out.push_back(AlertEvent{AlertEvent::State::raised, kind, gpu, vgpu, *value, *threshold, time,
                             fmt::format("{} {} is {:.1f}{}, above {:.1f}{}", who, kind, *value, unit, *threshold, unit)});
  } else if (raised && *value < *threshold - hysteresis) {
    raised = false;
    out.push_back(AlertEvent{AlertEvent::State::cleared, kind, gpu, vgpu, *value, *threshold, time,
                             fmt::format("{} {} back to {:.1f}{} (threshold {:.1f}{})", who, kind, *value, unit,
                                         *threshold, unit)});
  }
}

std::vector<AlertEvent> AlertTracker::update(const NodeStats& stats) {
  std::vector<AlertEvent> out;
  const auto& t = thresholds_;
  for (const GpuSample& g : stats.gpus) {
    const auto& m = g.metrics;
    check(out, "temperature", g.gpu_id, "", m.temperature_celsius, t.temperature_celsius, t.temperature_hysteresis, "°C",
          stats.time);
    std::optional<double> memory;
    if (m.memory_used_bytes && m.memory_total_bytes && *m.memory_total_bytes > 0) {
      memory = static_cast<double>(*m.memory_used_bytes) * 100.0 / static_cast<double>(*m.memory_total_bytes);
    }
    check(out, "memory", g.gpu_id, "", memory, t.memory_percent, t.percent_hysteresis, "%", stats.time);
    std::optional<double> power;
    if (m.power_watts && m.power_limit_watts && *m.power_limit_watts > 0) power = *m.power_watts * 100.0 / *m.power_limit_watts;
    check(out, "power", g.gpu_id, "", power, t.power_percent, t.percent_hysteresis, "%", stats.time);
    if (t.gpu_lost) {
      const double lost = g.health == device::HealthState::lost ? 1.0 : 0.0;
      auto key = std::make_tuple(std::string("gpu_lost"), g.gpu_id, std::string());
      bool& raised = raised_[key];
      if (!raised && lost > 0) {
        raised = true;
        out.push_back(AlertEvent{AlertEvent::State::raised, "gpu_lost", g.gpu_id, "", 1, 0, stats.time,
                                 fmt::format("GPU {} is lost: {}", g.gpu_id, g.health_detail)});
      } else if (raised && lost == 0) {
        raised = false;
        out.push_back(AlertEvent{AlertEvent::State::cleared, "gpu_lost", g.gpu_id, "", 0, 0, stats.time,
                                 fmt::format("GPU {} answers again", g.gpu_id)});
      }
    }
  }
  for (const VgpuUsage& v : stats.vgpus) {
    check(out, "vgpu_memory", v.vgpu.gpu, v.vgpu.name, v.memory_percent(), t.vgpu_memory_percent, t.percent_hysteresis,
          "%", stats.time);
  }
  for (const AlertEvent& e : out) {
    if (e.state == AlertEvent::State::raised) {
      log::warn(fmt::format("alert: {}", e.message));
    } else {
      log::notice(fmt::format("alert cleared: {}", e.message));
    }
  }
  return out;
}

std::vector<std::tuple<std::string, std::uint32_t, std::string>> AlertTracker::active() const {
  std::vector<std::tuple<std::string, std::uint32_t, std::string>> out;
  for (const auto& [key, raised] : raised_) {
    if (raised) out.push_back(key);
  }
  return out;
}

}  // namespace apt::vgpu::monitoring
