// A simulated GPU node: the embedded default that makes everything run on a
// machine with no GPU.
//
// Its readings follow the work placed on it. Loads are keyed (the runtime
// uses one key per lease): utilization is the sum of the active compute
// shares (capped at 100%), memory used is the sum of load memory plus the
// memory of registered processes, and temperature and power follow a
// first-order model from idle toward the loaded values: each metrics() call
// moves the temperature 30% of the way to its target, so a sequence of calls
// is deterministic. Small readout noise comes from a splitmix64 stream
// seeded by (seed, gpu index), so two nodes with the same seed and the same
// history give identical samples.
//
// Tests and the CLI can also mark a GPU unhealthy or lost (set_health) to
// exercise fault handling.
//
// Thread safety: every method may be called concurrently.
#pragma once

#include <apt/vgpu/device/backend.hpp>
#include <apt/vgpu/device/sim_config.hpp>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace apt::vgpu::device {

struct SimLoad {
  double compute_share = 0.0;   // fraction of the GPU's SMs busy, 0..1
  std::uint64_t memory_bytes = 0;
};

class SimBackend final : public Backend {
 public:
  explicit SimBackend(SimConfig config = {});

  [[nodiscard]] std::string_view name() const noexcept override { return "sim"; }
  [[nodiscard]] std::string_view device_type() const noexcept override { return "sim"; }
  [[nodiscard]] SimBackend* simulator() noexcept override { return this; }
  [[nodiscard]] const SimConfig& config() const noexcept { return config_; }

  // Sets (or replaces) the load named `key` on GPU `index`.
  void set_load(std::uint32_t index, const std::string& key, SimLoad load);
  // Removes the load named `key`; removing an absent key is a no-op.
  void clear_load(std::uint32_t index, const std::string& key);
  // Registers a process as using `memory_bytes` on GPU `index` until removed.
  void add_process(std::uint32_t index, std::int64_t pid, std::string command, std::uint64_t memory_bytes);
  void remove_process(std::uint32_t index, std::int64_t pid);
  // Marks a GPU healthy, unhealthy (with an optional XID) or lost.
  void set_health(std::uint32_t index, HealthState state, std::string detail = {}, std::uint64_t xid = 0);

 private:
  struct GpuState {
    std::map<std::string, SimLoad> loads;
    std::map<std::int64_t, std::pair<std::string, std::uint64_t>> processes;
    double temperature_celsius = 0.0;
    std::uint64_t rng_state = 0;
    GpuHealth health;
  };

  GpuMetrics do_metrics(std::uint32_t index) override;
  std::vector<GpuProcess> do_processes(std::uint32_t index) override;
  GpuHealth do_health(std::uint32_t index) override;

  SimConfig config_;
  mutable std::mutex mutex_;
  std::vector<GpuState> state_;  // guarded by mutex_
};

}  // namespace apt::vgpu::device
