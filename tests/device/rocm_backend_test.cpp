#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/device/rocm_backend.hpp>

#include "support/fakes.hpp"

namespace apt::vgpu::device {
namespace {

TEST(RocmBackend, ReadsEveryScriptedValueWithUnitsConverted) {
  testing::configure_rocm(testing::kTwoAmdGpus);
  RocmBackend rocm(FAKE_ROCM_SMI_PATH);
  ASSERT_EQ(rocm.gpu_count(), 2U);
  const GpuInfo& gpu = rocm.gpu(0);
  EXPECT_EQ(gpu.name, "AMD Instinct MI210");
  EXPECT_EQ(gpu.uuid, "GPU-0000000000abcdef");
  EXPECT_EQ(gpu.vendor, Vendor::amd);
  EXPECT_EQ(gpu.memory_total, 68702699520ULL);
  EXPECT_FALSE(gpu.compute_capability.has_value());

  const GpuMetrics m = rocm.metrics(0);
  EXPECT_EQ(m.utilization_percent, 40.0);
  EXPECT_EQ(m.memory_bandwidth_utilization_percent, 10.0);
  EXPECT_EQ(m.memory_used_bytes, 2000000000ULL);
  EXPECT_DOUBLE_EQ(*m.temperature_celsius, 45.5);  // millidegrees
  EXPECT_DOUBLE_EQ(*m.power_watts, 150.0);         // microwatts
  EXPECT_DOUBLE_EQ(*m.power_limit_watts, 300.0);
  EXPECT_EQ(m.sm_clock_mhz, 1700U);  // current entry of the frequency table, in Hz
  EXPECT_EQ(m.memory_clock_mhz, 1600U);
  EXPECT_EQ(m.pcie_tx_bytes_per_second, 1000U);
  EXPECT_EQ(m.pcie_rx_bytes_per_second, 2000U);
}

TEST(RocmBackend, ProcessesAreFilteredToTheirGpu) {
  testing::configure_rocm(testing::kTwoAmdGpus);
  RocmBackend rocm(FAKE_ROCM_SMI_PATH);
  const auto on0 = rocm.processes(0);
  ASSERT_EQ(on0.size(), 1U);
  EXPECT_EQ(on0[0].pid, 4243);
  EXPECT_EQ(on0[0].memory_bytes, 2000000000ULL);
  EXPECT_TRUE(rocm.processes(1).empty());
}

TEST(RocmBackend, NotSupportedMetricsAreAbsent) {
  testing::configure_rocm(R"({"devices": [{"name": "gpu", "vram_total": 1000,
      "errors": {"rsmi_dev_temp_metric_get": "NOT_SUPPORTED", "rsmi_dev_power_ave_get": "NOT_SUPPORTED",
                 "rsmi_dev_pci_throughput_get": "NOT_SUPPORTED", "rsmi_dev_memory_busy_percent_get": "NOT_SUPPORTED"}},
      {"name": "gpu2", "vram_total": 1000}]})");
  RocmBackend rocm(FAKE_ROCM_SMI_PATH);
  const GpuMetrics m = rocm.metrics(0);
  EXPECT_FALSE(m.temperature_celsius.has_value());
  EXPECT_FALSE(m.power_watts.has_value());
  EXPECT_FALSE(m.pcie_tx_bytes_per_second.has_value());
  EXPECT_FALSE(m.memory_bandwidth_utilization_percent.has_value());
  EXPECT_TRUE(m.utilization_percent.has_value());
  EXPECT_EQ(rocm.health(0).state, HealthState::healthy);
}

TEST(RocmBackend, FailingDeviceAndEccAreUnhealthy) {
  testing::configure_rocm(R"({"devices": [
      {"name": "a", "vram_total": 1000, "errors": {"rsmi_dev_busy_percent_get": "UNKNOWN"}},
      {"name": "b", "vram_total": 1000, "ecc_uncorrectable": 2}]})");
  RocmBackend rocm(FAKE_ROCM_SMI_PATH);
  const GpuHealth a = rocm.health(0);
  EXPECT_EQ(a.state, HealthState::unhealthy);
  EXPECT_NE(a.detail.find("rsmi_dev_busy_percent_get"), std::string::npos) << a.detail;
  const GpuHealth b = rocm.health(1);
  EXPECT_EQ(b.state, HealthState::unhealthy);
  EXPECT_EQ(b.ecc_uncorrected_errors, 2U);
}

TEST(RocmBackend, InitFailureIsADeviceError) {
  testing::configure_rocm(R"({"init_error": "INIT_ERROR", "devices": []})");
  try {
    RocmBackend rocm(FAKE_ROCM_SMI_PATH);
    FAIL();
  } catch (const DeviceError& e) {
    EXPECT_NE(std::string(e.what()).find("initialization"), std::string::npos) << e.what();
  }
}

TEST(RocmBackend, MissingLibraryIsADeviceError) {
  EXPECT_THROW(RocmBackend("/nonexistent/librocm_smi64.so"), DeviceError);
}

}  // namespace
}  // namespace apt::vgpu::device
