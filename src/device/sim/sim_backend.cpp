#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/device/sim_backend.hpp>

#include <algorithm>
#include <cmath>
#include <fmt/format.h>

namespace apt::vgpu::device {
namespace {

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Uniform in [-1, 1).
double noise(std::uint64_t& state) {
  return static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-52 - 1.0;
}

// A UUID in NVIDIA's textual form, derived from the seed and index so it is
// stable for a given configuration.
std::string sim_uuid(std::uint64_t seed, std::uint32_t index) {
  std::uint64_t s = seed * 1000003ULL + index;
  const std::uint64_t a = splitmix64(s);
  const std::uint64_t b = splitmix64(s);
  return fmt::format("GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xffff,
                     b >> 48, b & 0xffffffffffffULL);
}

constexpr std::uint32_t kIdleSmClockMhz = 345;
constexpr std::uint32_t kBoostSmClockMhz = 1980;
constexpr std::uint32_t kMemoryClockMhz = 2619;
constexpr double kPcieBytesPerSecondAtFullLoad = 12.0e9;
constexpr double kTemperatureStep = 0.3;  // fraction of the gap closed per sample

}  // namespace

SimBackend::SimBackend(SimConfig config) : config_(std::move(config)) {
  state_.resize(config_.gpu_count);
  for (std::uint32_t i = 0; i < config_.gpu_count; ++i) {
    GpuInfo info;
    info.index = i;
    info.uuid = sim_uuid(config_.seed, i);
    info.name = config_.name;
    info.vendor = Vendor::simulated;
    info.memory_total = config_.memory_per_gpu;
    info.compute_capability = config_.compute_capability;
    info.sm_count = config_.sm_count;
    gpus_.push_back(std::move(info));
    state_[i].temperature_celsius = config_.idle_temperature_celsius;
    state_[i].rng_state = config_.seed ^ (0xa0761d6478bd642fULL * (i + 1));
  }
  for (std::uint32_t lost : config_.lost_gpus) {
    if (lost >= config_.gpu_count) {
      throw InvalidArgument(fmt::format("VGPU_SIM_LOST: GPU {} does not exist on a simulated node of {} GPUs",
                                        lost, config_.gpu_count));
    }
    state_[lost].health.state = HealthState::lost;
    state_[lost].health.detail = "marked lost by VGPU_SIM_LOST";
  }
}

void SimBackend::set_load(std::uint32_t index, const std::string& key, SimLoad load) {
  (void)gpu(index);
  std::lock_guard lock(mutex_);
  state_[index].loads[key] = load;
}

void SimBackend::clear_load(std::uint32_t index, const std::string& key) {
  (void)gpu(index);
  std::lock_guard lock(mutex_);
  state_[index].loads.erase(key);
}

void SimBackend::add_process(std::uint32_t index, std::int64_t pid, std::string command, std::uint64_t memory_bytes) {
  (void)gpu(index);
  std::lock_guard lock(mutex_);
  state_[index].processes[pid] = {std::move(command), memory_bytes};
}

void SimBackend::remove_process(std::uint32_t index, std::int64_t pid) {
  (void)gpu(index);
  std::lock_guard lock(mutex_);
  state_[index].processes.erase(pid);
}

void SimBackend::set_health(std::uint32_t index, HealthState state, std::string detail, std::uint64_t xid) {
  (void)gpu(index);
  std::lock_guard lock(mutex_);
  GpuHealth& h = state_[index].health;
  h.state = state;
  h.detail = state == HealthState::healthy ? std::string{} : std::move(detail);
  if (xid != 0) {
    h.xid_events.push_back(xid);
    h.xid_total = 1;
  }
}

GpuMetrics SimBackend::do_metrics(std::uint32_t index) {
  std::lock_guard lock(mutex_);
  GpuState& s = state_[index];
  GpuMetrics m;
  if (s.health.state == HealthState::lost) return m;  // a lost GPU answers nothing

  double share = 0.0;
  std::uint64_t memory = 0;
  for (const auto& [key, load] : s.loads) {
    share += load.compute_share;
    memory += load.memory_bytes;
  }
  for (const auto& [pid, process] : s.processes) memory += process.second;
  const double load = std::clamp(share, 0.0, 1.0);

  // Readout jitter of +-1 point while busy; an idle GPU reads exactly 0.
  const double utilization = load > 0.0 ? std::clamp(load * 100.0 + noise(s.rng_state), 0.0, 100.0) : 0.0;
  const double target_temperature =
      config_.idle_temperature_celsius + (config_.loaded_temperature_celsius - config_.idle_temperature_celsius) * load;
  s.temperature_celsius += (target_temperature - s.temperature_celsius) * kTemperatureStep;
  const double power = config_.idle_power_watts + (config_.power_limit_watts * 0.95 - config_.idle_power_watts) * load +
                       2.0 * noise(s.rng_state);

  m.utilization_percent = std::round(utilization * 10.0) / 10.0;
  m.memory_total_bytes = config_.memory_per_gpu;
  m.memory_used_bytes = std::min(memory, config_.memory_per_gpu);
  m.temperature_celsius = std::round(s.temperature_celsius * 10.0) / 10.0;
  m.power_watts = std::round(std::max(power, 0.0) * 10.0) / 10.0;
  m.power_limit_watts = config_.power_limit_watts;
  m.sm_clock_mhz = load > 0.0 ? kBoostSmClockMhz : kIdleSmClockMhz;
  m.memory_clock_mhz = kMemoryClockMhz;
  m.pcie_rx_bytes_per_second = static_cast<std::uint64_t>(kPcieBytesPerSecondAtFullLoad * load * 0.6);
  m.pcie_tx_bytes_per_second = static_cast<std::uint64_t>(kPcieBytesPerSecondAtFullLoad * load * 0.4);
  m.memory_bandwidth_utilization_percent = std::round(load * 60.0 * 10.0) / 10.0;
  return m;
}

std::vector<GpuProcess> SimBackend::do_processes(std::uint32_t index) {
  std::lock_guard lock(mutex_);
  std::vector<GpuProcess> out;
  for (const auto& [pid, process] : state_[index].processes) {
    out.push_back(GpuProcess{pid, process.first, process.second});
  }
  return out;
}

GpuHealth SimBackend::do_health(std::uint32_t index) {
  std::lock_guard lock(mutex_);
  return state_[index].health;
}

}  // namespace apt::vgpu::device
