// Backend conformance: one set of expectations, run against every backend
// (the simulated node, the NVML backend over the fake NVML, the NVML backend
// over a legacy fake without versioned symbols, and ROCm SMI over its fake).
#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/device/nvml_backend.hpp>
#include <apt/vgpu/device/rocm_backend.hpp>
#include <apt/vgpu/device/sim_backend.hpp>

#include "support/fakes.hpp"

#include <functional>
#include <set>
#include <thread>
#include <unistd.h>

namespace apt::vgpu::device {
namespace {

struct BackendCase {
  std::string label;
  std::function<std::unique_ptr<Backend>()> open;
};

std::ostream& operator<<(std::ostream& os, const BackendCase& c) { return os << c.label; }

class BackendConformance : public ::testing::TestWithParam<BackendCase> {
 protected:
  void SetUp() override { backend_ = GetParam().open(); }
  std::unique_ptr<Backend> backend_;
};

TEST_P(BackendConformance, EnumeratesAStableListOfGpus) {
  const auto& gpus = backend_->gpus();
  ASSERT_GE(gpus.size(), 2U);
  std::set<std::string> uuids;
  for (std::uint32_t i = 0; i < gpus.size(); ++i) {
    EXPECT_EQ(gpus[i].index, i);
    EXPECT_FALSE(gpus[i].name.empty());
    EXPECT_TRUE(gpus[i].uuid.rfind("GPU-", 0) == 0) << gpus[i].uuid;
    EXPECT_GT(gpus[i].memory_total, 0U);
    uuids.insert(gpus[i].uuid);
  }
  EXPECT_EQ(uuids.size(), gpus.size()) << "UUIDs must be unique";
  EXPECT_EQ(&backend_->gpus(), &backend_->gpus());
  EXPECT_EQ(backend_->gpu_count(), gpus.size());
}

TEST_P(BackendConformance, MetricsAreConsistentWithTheGpu) {
  for (const auto& gpu : backend_->gpus()) {
    const GpuMetrics m = backend_->metrics(gpu.index);
    ASSERT_TRUE(m.memory_total_bytes.has_value());
    EXPECT_EQ(*m.memory_total_bytes, gpu.memory_total);
    ASSERT_TRUE(m.memory_used_bytes.has_value());
    EXPECT_LE(*m.memory_used_bytes, *m.memory_total_bytes);
    ASSERT_TRUE(m.utilization_percent.has_value());
    EXPECT_GE(*m.utilization_percent, 0.0);
    EXPECT_LE(*m.utilization_percent, 100.0);
    if (m.temperature_celsius) {
      EXPECT_GT(*m.temperature_celsius, 0.0);
      EXPECT_LT(*m.temperature_celsius, 150.0);
    }
    if (m.power_watts && m.power_limit_watts) {
      EXPECT_LE(*m.power_watts, *m.power_limit_watts);
    }
  }
}

TEST_P(BackendConformance, ProcessesHaveRealPids) {
  // Every backend must list one process here: the fakes script one; on the
  // simulated node this test registers itself, as VirtualGPU::run does for its child.
  if (auto* sim = backend_->simulator()) sim->add_process(0, ::getpid(), "conformance", 1 << 20);
  std::size_t listed = 0;
  for (const auto& gpu : backend_->gpus()) {
    for (const auto& p : backend_->processes(gpu.index)) {
      EXPECT_GT(p.pid, 0);
      ++listed;
    }
  }
  EXPECT_GE(listed, 1U) << "a backend that lists no process proves nothing here";
}

TEST_P(BackendConformance, FreshGpusAreHealthy) {
  for (const auto& gpu : backend_->gpus()) {
    const GpuHealth h = backend_->health(gpu.index);
    EXPECT_EQ(h.state, HealthState::healthy) << h.detail;
    EXPECT_TRUE(h.usable());
  }
}

TEST_P(BackendConformance, OutOfRangeIndexIsAnInvalidArgument) {
  const std::uint32_t bad = backend_->gpu_count();
  EXPECT_THROW((void)backend_->metrics(bad), InvalidArgument);
  EXPECT_THROW((void)backend_->processes(bad), InvalidArgument);
  EXPECT_THROW((void)backend_->health(bad), InvalidArgument);
  EXPECT_THROW((void)backend_->gpu(bad), InvalidArgument);
}

TEST_P(BackendConformance, ConcurrentReadsAgree) {
  const GpuMetrics reference = backend_->metrics(0);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        const GpuMetrics m = backend_->metrics(0);
        if (m.memory_total_bytes != reference.memory_total_bytes) ++mismatches;
        (void)backend_->health(1);
        (void)backend_->processes(0);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_P(BackendConformance, NamesItsFrameworkDeviceType) {
  const std::string type(backend_->device_type());
  EXPECT_TRUE(type == "cuda" || type == "sim") << type;
  EXPECT_FALSE(backend_->name().empty());
}

std::unique_ptr<Backend> open_fake_nvml(const char* path) {
  testing::configure_nvml(testing::kTwoNvidiaGpus, path);
  return std::make_unique<NvmlBackend>(path);
}

INSTANTIATE_TEST_SUITE_P(
    AllBackends, BackendConformance,
    ::testing::Values(
        BackendCase{"sim", [] { return std::unique_ptr<Backend>(std::make_unique<SimBackend>(SimConfig{})); }},
        BackendCase{"nvml", [] { return open_fake_nvml(FAKE_NVML_PATH); }},
        BackendCase{"nvml_legacy", [] { return open_fake_nvml(FAKE_NVML_LEGACY_PATH); }},
        BackendCase{"rocm",
                    [] {
                      testing::configure_rocm(testing::kTwoAmdGpus);
                      return std::unique_ptr<Backend>(std::make_unique<RocmBackend>(FAKE_ROCM_SMI_PATH));
                    }}),
    [](const ::testing::TestParamInfo<BackendCase>& param_info) { return param_info.param.label; });

}  // namespace
}  // namespace apt::vgpu::device
