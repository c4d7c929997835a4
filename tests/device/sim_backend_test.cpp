#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/device/sim_backend.hpp>

#include <gtest/gtest.h>

#include <cstdlib>

namespace apt::vgpu::device {
namespace {

TEST(SimBackend, DefaultShapeIsEightH100s) {
  SimBackend sim;
  ASSERT_EQ(sim.gpu_count(), 8U);
  for (const auto& gpu : sim.gpus()) {
    EXPECT_EQ(gpu.name, "Simulated H100 80GB");
    EXPECT_EQ(gpu.memory_total, 80'000'000'000ULL);
    EXPECT_EQ(gpu.sm_count, 132U);
    EXPECT_EQ(gpu.vendor, Vendor::simulated);
  }
  EXPECT_EQ(sim.device_type(), "sim");
  EXPECT_EQ(sim.simulator(), &sim);
}

TEST(SimBackend, IdleGpuReadsIdle) {
  SimBackend sim;
  const GpuMetrics m = sim.metrics(0);
  EXPECT_EQ(m.utilization_percent, 0.0);
  EXPECT_EQ(m.memory_used_bytes, 0U);
  EXPECT_NEAR(*m.temperature_celsius, 32.0, 0.01);
  EXPECT_NEAR(*m.power_watts, 70.0, 2.5);
}

TEST(SimBackend, MetricsFollowPlacedWork) {
  SimBackend sim;
  sim.set_load(0, "a", SimLoad{0.25, 20'000'000'000ULL});
  sim.set_load(0, "b", SimLoad{0.5, 10'000'000'000ULL});
  sim.add_process(0, 1234, "python3", 5'000'000'000ULL);
  GpuMetrics m = sim.metrics(0);
  EXPECT_NEAR(*m.utilization_percent, 75.0, 1.0);
  EXPECT_EQ(m.memory_used_bytes, 35'000'000'000ULL);
  EXPECT_GT(*m.power_watts, 400.0);
  EXPECT_EQ(m.sm_clock_mhz, 1980U);
  // Temperature climbs toward the loaded value over successive samples.
  double previous = *m.temperature_celsius;
  for (int i = 0; i < 20; ++i) {
    m = sim.metrics(0);
    EXPECT_GE(*m.temperature_celsius, previous - 1e-9);
    previous = *m.temperature_celsius;
  }
  EXPECT_NEAR(previous, 32.0 + (78.0 - 32.0) * 0.75, 0.5);
  // Other GPUs are unaffected.
  EXPECT_EQ(sim.metrics(1).utilization_percent, 0.0);

  const auto procs = sim.processes(0);
  ASSERT_EQ(procs.size(), 1U);
  EXPECT_EQ(procs[0].pid, 1234);
  EXPECT_EQ(procs[0].command, "python3");

  sim.clear_load(0, "a");
  sim.clear_load(0, "b");
  sim.remove_process(0, 1234);
  m = sim.metrics(0);
  EXPECT_EQ(m.utilization_percent, 0.0);
  EXPECT_EQ(m.memory_used_bytes, 0U);
}

TEST(SimBackend, UtilizationIsCappedAtOneHundred) {
  SimBackend sim;
  sim.set_load(2, "a", SimLoad{0.8, 0});
  sim.set_load(2, "b", SimLoad{0.8, 0});
  EXPECT_LE(*sim.metrics(2).utilization_percent, 100.0);
  EXPECT_GE(*sim.metrics(2).utilization_percent, 99.0);
}

TEST(SimBackend, DeterministicUnderAFixedSeed) {
  auto run = [](std::uint64_t seed) {
    SimConfig config;
    config.seed = seed;
    SimBackend sim(config);
    sim.set_load(0, "x", SimLoad{0.6, 1000});
    std::vector<double> samples;
    for (int i = 0; i < 10; ++i) {
      const auto m = sim.metrics(0);
      samples.push_back(*m.utilization_percent);
      samples.push_back(*m.power_watts);
      samples.push_back(*m.temperature_celsius);
    }
    return std::make_pair(samples, sim.gpu(0).uuid);
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7).second, run(8).second) << "UUIDs derive from the seed";
  EXPECT_NE(run(7).first, run(8).first);
}

TEST(SimBackend, HealthCanBeInjected) {
  SimBackend sim;
  sim.set_health(3, HealthState::unhealthy, "XID 79", 79);
  GpuHealth h = sim.health(3);
  EXPECT_EQ(h.state, HealthState::unhealthy);
  EXPECT_EQ(h.xid_events, std::vector<std::uint64_t>{79});
  sim.set_health(3, HealthState::lost, "fell off the bus");
  EXPECT_EQ(sim.health(3).state, HealthState::lost);
  EXPECT_FALSE(sim.metrics(3).utilization_percent.has_value()) << "a lost GPU answers nothing";
  sim.set_health(3, HealthState::healthy);
  EXPECT_TRUE(sim.health(3).usable());
  EXPECT_TRUE(sim.health(3).detail.empty());
}

TEST(SimConfig, ShapeStrings) {
  SimConfig c;
  c.apply_shape("4");
  EXPECT_EQ(c.gpu_count, 4U);
  EXPECT_EQ(c.memory_per_gpu, 80'000'000'000ULL);
  c.apply_shape("2x24GiB:Simulated L4");
  EXPECT_EQ(c.gpu_count, 2U);
  EXPECT_EQ(c.memory_per_gpu, 24ULL << 30U);
  EXPECT_EQ(c.name, "Simulated L4");
  for (const char* bad : {"", "x40GB", "0", "4x", "4x40XB", "four", "4x40GB:", "2000"}) {
    EXPECT_THROW(c.apply_shape(bad), InvalidArgument) << bad;
  }
}

TEST(SimConfig, Environment) {
  ::setenv("VGPU_SIM_GPUS", "3x40GB:Sim A100", 1);
  ::setenv("VGPU_SIM_SEED", "99", 1);
  ::setenv("VGPU_SIM_LOST", "0,2", 1);
  SimConfig c;
  c.apply_environment();
  ::unsetenv("VGPU_SIM_GPUS");
  ::unsetenv("VGPU_SIM_SEED");
  ::unsetenv("VGPU_SIM_LOST");
  EXPECT_EQ(c.gpu_count, 3U);
  EXPECT_EQ(c.memory_per_gpu, 40'000'000'000ULL);
  EXPECT_EQ(c.name, "Sim A100");
  EXPECT_EQ(c.seed, 99U);
  SimBackend sim(c);
  EXPECT_EQ(sim.health(0).state, HealthState::lost);
  EXPECT_EQ(sim.health(1).state, HealthState::healthy);
  EXPECT_EQ(sim.health(2).state, HealthState::lost);

  ::setenv("VGPU_SIM_GPUS", "lots", 1);
  SimConfig bad;
  try {
    bad.apply_environment();
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("VGPU_SIM_GPUS"), std::string::npos) << e.what();
  }
  ::unsetenv("VGPU_SIM_GPUS");
  SimConfig lost_out_of_range;
  lost_out_of_range.lost_gpus = {9};
  EXPECT_THROW(SimBackend{lost_out_of_range}, InvalidArgument);
}

}  // namespace
}  // namespace apt::vgpu::device
