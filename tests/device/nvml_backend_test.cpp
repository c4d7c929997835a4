#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/device/nvml_backend.hpp>

#include "support/fakes.hpp"

#include <fmt/format.h>
#include <unistd.h>

namespace apt::vgpu::device {
namespace {

TEST(NvmlBackend, ReadsEveryScriptedValueWithUnitsConverted) {
  testing::configure_nvml(testing::kTwoNvidiaGpus);
  NvmlBackend nvml(FAKE_NVML_PATH);
  ASSERT_EQ(nvml.gpu_count(), 2U);
  const GpuInfo& gpu = nvml.gpu(0);
  EXPECT_EQ(gpu.name, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(gpu.uuid, "GPU-11111111-2222-3333-4444-555555555555");
  EXPECT_EQ(gpu.vendor, Vendor::nvidia);
  EXPECT_EQ(gpu.memory_total, 85520809984ULL);
  ASSERT_TRUE(gpu.compute_capability.has_value());
  EXPECT_EQ(*gpu.compute_capability, (ComputeCapability{9, 0}));
  EXPECT_FALSE(gpu.sm_count.has_value()) << "NVML has no SM count; it must be absent, not guessed";

  const GpuMetrics m = nvml.metrics(0);
  EXPECT_EQ(m.utilization_percent, 37.0);
  EXPECT_EQ(m.memory_bandwidth_utilization_percent, 12.0);
  EXPECT_EQ(m.memory_used_bytes, 1048576000ULL) << "v2 memory info excludes driver-reserved memory";
  EXPECT_EQ(m.temperature_celsius, 45.0);
  EXPECT_DOUBLE_EQ(*m.power_watts, 123.456);
  EXPECT_DOUBLE_EQ(*m.power_limit_watts, 700.0);
  EXPECT_EQ(m.sm_clock_mhz, 1980U);
  EXPECT_EQ(m.memory_clock_mhz, 2619U);
  EXPECT_EQ(m.pcie_tx_bytes_per_second, 100U * 1024U);
  EXPECT_EQ(m.pcie_rx_bytes_per_second, 200U * 1024U);
  EXPECT_EQ(nvml.name(), "nvml");
  EXPECT_EQ(nvml.device_type(), "cuda");
}

TEST(NvmlBackend, LegacyDriverFallsBackToUnversionedCalls) {
  testing::configure_nvml(testing::kTwoNvidiaGpus, FAKE_NVML_LEGACY_PATH);
  NvmlBackend nvml(FAKE_NVML_LEGACY_PATH);
  const GpuMetrics m = nvml.metrics(0);
  // Version 1 of nvmlDeviceGetMemoryInfo counts reserved memory as used.
  EXPECT_EQ(m.memory_used_bytes, 1048576000ULL + 536870912ULL);
  const auto procs = nvml.processes(0);
  ASSERT_EQ(procs.size(), 1U);
  EXPECT_EQ(procs[0].pid, 4242);
  EXPECT_EQ(procs[0].memory_bytes, 1048576000ULL);
}

TEST(NvmlBackend, NotSupportedMetricsAreAbsentNotZero) {
  testing::configure_nvml(R"({"devices": [{"name": "NVIDIA A10", "uuid": "GPU-a", "memory_total": 24000000000,
    "errors": {"nvmlDeviceGetTemperature": "NOT_SUPPORTED", "nvmlDeviceGetPowerUsage": "NOT_SUPPORTED",
               "nvmlDeviceGetPcieThroughput": "NOT_SUPPORTED", "nvmlDeviceGetTotalEccErrors": "NOT_SUPPORTED"}}]})");
  NvmlBackend nvml(FAKE_NVML_PATH);
  const GpuMetrics m = nvml.metrics(0);
  EXPECT_FALSE(m.temperature_celsius.has_value());
  EXPECT_FALSE(m.power_watts.has_value());
  EXPECT_FALSE(m.pcie_rx_bytes_per_second.has_value());
  EXPECT_FALSE(m.pcie_tx_bytes_per_second.has_value());
  EXPECT_TRUE(m.power_limit_watts.has_value());
  EXPECT_TRUE(m.utilization_percent.has_value());
  EXPECT_TRUE(m.memory_used_bytes.has_value());
  const GpuHealth h = nvml.health(0);
  EXPECT_FALSE(h.ecc_uncorrected_errors.has_value());
  EXPECT_EQ(h.state, HealthState::healthy) << "NOT_SUPPORTED is not a fault";
}

TEST(NvmlBackend, LostGpuAnswersNothingAndReportsLost) {
  testing::configure_nvml(testing::kTwoNvidiaGpus);
  NvmlBackend nvml(FAKE_NVML_PATH);
  ASSERT_TRUE(nvml.metrics(1).utilization_percent.has_value());
  // The GPU falls off the bus after the backend opened.
  testing::configure_nvml(R"({"devices": [{"name": "x", "uuid": "GPU-1", "memory_total": 1},
                                          {"name": "y", "uuid": "GPU-2", "memory_total": 1, "lost": true}]})");
  const GpuMetrics m = nvml.metrics(1);
  EXPECT_FALSE(m.utilization_percent.has_value());
  EXPECT_FALSE(m.memory_total_bytes.has_value());
  const GpuHealth h = nvml.health(1);
  EXPECT_EQ(h.state, HealthState::lost);
  EXPECT_NE(h.detail.find("GPU_IS_LOST"), std::string::npos) << h.detail;
  EXPECT_TRUE(nvml.processes(1).empty());
  EXPECT_EQ(nvml.health(0).state, HealthState::healthy) << "one lost GPU must not taint another";
}

TEST(NvmlBackend, LossDetectedByHealthProbeAlone) {
  testing::configure_nvml(testing::kTwoNvidiaGpus);
  NvmlBackend nvml(FAKE_NVML_PATH);
  testing::configure_nvml(R"({"devices": [{"name": "x", "uuid": "GPU-1", "memory_total": 1, "lost": true},
                                          {"name": "y", "uuid": "GPU-2", "memory_total": 1}]})");
  EXPECT_EQ(nvml.health(0).state, HealthState::lost);
}

TEST(NvmlBackend, XidEventsAndEccMakeAGpuUnhealthy) {
  testing::configure_nvml(R"({"devices": [
      {"name": "a", "uuid": "GPU-a", "memory_total": 1000, "xid_events": [79]},
      {"name": "b", "uuid": "GPU-b", "memory_total": 1000, "ecc_uncorrected": 3}]})");
  NvmlBackend nvml(FAKE_NVML_PATH);
  const GpuHealth a = nvml.health(0);
  EXPECT_EQ(a.state, HealthState::unhealthy);
  ASSERT_EQ(a.xid_events.size(), 1U);
  EXPECT_EQ(a.xid_events[0], 79U);
  EXPECT_NE(a.detail.find("XID 79"), std::string::npos) << a.detail;
  const GpuHealth b = nvml.health(1);
  EXPECT_EQ(b.state, HealthState::unhealthy);
  EXPECT_EQ(b.ecc_uncorrected_errors, 3U);
  EXPECT_TRUE(b.xid_events.empty());
}

TEST(NvmlBackend, AFlappingGpuKeepsOnlyItsRecentXids) {
  // 1,000 XIDs: the backend lists the last kRecentXids and counts them all.
  std::string xids;
  for (int i = 0; i < 1000; ++i) xids += (i ? "," : "") + std::to_string(i);
  testing::configure_nvml(R"({"devices": [{"name": "a", "uuid": "GPU-a", "memory_total": 1000, "xid_events": [)" + xids +
                          "]}]}");
  NvmlBackend nvml(FAKE_NVML_PATH);
  const GpuHealth h = nvml.health(0);
  EXPECT_EQ(h.xid_total, 1000U);
  ASSERT_EQ(h.xid_events.size(), kRecentXids);
  EXPECT_EQ(h.xid_events.front(), 1000U - kRecentXids);
  EXPECT_EQ(h.xid_events.back(), 999U);
  EXPECT_NE(h.detail.find("XID 999"), std::string::npos) << h.detail;
}

TEST(NvmlBackend, ProcessMemoryNotAvailableIsAbsentAndCommandsAreNamed) {
  const auto self = static_cast<long>(::getpid());
  testing::configure_nvml(fmt::format(R"({{"devices": [{{"name": "a", "uuid": "GPU-a", "memory_total": 1000,
      "processes": [{{"pid": {}, "used": 10}}, {{"pid": 2, "used": null}}, {{"pid": 3, "used": 30}}]}}]}})", self));
  NvmlBackend nvml(FAKE_NVML_PATH);
  const auto procs = nvml.processes(0);
  ASSERT_EQ(procs.size(), 3U);
  EXPECT_EQ(procs[0].pid, self);
  EXPECT_EQ(procs[0].memory_bytes, 10U);
  EXPECT_EQ(procs[0].command, "device_test") << "command comes from /proc/<pid>/comm";
  EXPECT_FALSE(procs[1].memory_bytes.has_value());
  EXPECT_EQ(procs[2].pid, 3);
  EXPECT_EQ(procs[2].memory_bytes, 30U);
}

TEST(NvmlBackend, InitFailureIsADeviceErrorWithTheDriversMessage) {
  testing::configure_nvml(R"({"init_error": "DRIVER_NOT_LOADED", "devices": []})");
  try {
    NvmlBackend nvml(FAKE_NVML_PATH);
    FAIL() << "init failure was ignored";
  } catch (const DeviceError& e) {
    EXPECT_NE(std::string(e.what()).find("Driver Not Loaded"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--backend sim"), std::string::npos) << e.what();
  }
  testing::configure_nvml(testing::kTwoNvidiaGpus);
}

TEST(NvmlBackend, MissingLibraryIsADeviceErrorNamingThePath) {
  try {
    NvmlBackend nvml("/nonexistent/libnvidia-ml.so.1");
    FAIL();
  } catch (const DeviceError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/libnvidia-ml.so.1"), std::string::npos) << e.what();
  }
}

TEST(NvmlBackend, ShutsDownWhatItInitialised) {
  testing::configure_nvml(testing::kTwoNvidiaGpus);
  void* handle = ::dlopen(FAKE_NVML_PATH, RTLD_NOW);
  auto init_count = reinterpret_cast<int (*)()>(::dlsym(handle, "fake_nvml_init_count"));
  ASSERT_NE(init_count, nullptr);
  const int before = init_count();
  {
    NvmlBackend nvml(FAKE_NVML_PATH);
    EXPECT_EQ(init_count(), before + 1);
  }
  EXPECT_EQ(init_count(), before);
}

}  // namespace
}  // namespace apt::vgpu::device
