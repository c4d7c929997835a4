// The monitor's timing, measured: samples per interval and how fast stop()
// returns. Wall-clock assertions, so label perf (run once, serially, release).
#include <apt/vgpu/device/sim_backend.hpp>
#include <apt/vgpu/monitoring/gpu_monitor.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace apt::vgpu::monitoring {
namespace {

using namespace std::chrono_literals;

TEST(GPUMonitorTiming, AboutOneSamplePerIntervalAndStopDoesNotWaitOutTheInterval) {
  device::SimBackend sim;
  GPUMonitor monitor(sim, 0.01, {"utilization", "memory"});
  monitor.start();
  std::this_thread::sleep_for(150ms);
  monitor.stop();
  const auto taken = monitor.samples_taken();
  EXPECT_GE(taken, 5U);
  EXPECT_LE(taken, 30U) << "about one sample per 10 ms";

  GPUMonitor slow(sim, 30.0);
  slow.start();
  const auto start = std::chrono::steady_clock::now();
  slow.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms) << "stop does not wait out the interval";
}

}  // namespace
}  // namespace apt::vgpu::monitoring
