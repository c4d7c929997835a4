#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/device/sim_backend.hpp>
#include <apt/vgpu/monitoring/gpu_monitor.hpp>
#include <apt/vgpu/monitoring/stats_json.hpp>

#include <gtest/gtest.h>

namespace apt::vgpu::monitoring {
namespace {

NodeStats sample_with_a_vgpu() {
  device::SimConfig c;
  c.gpu_count = 2;
  device::SimBackend backend(c);
  backend.add_process(1, 4242, "train.py", 3'000'000'000ULL);
  MonitorOptions o;
  o.vgpus = [] {
    VgpuView v;
    v.name = "team-a";
    v.gpu = 1;
    v.lease_id = 7;
    v.memory_limit = 8'000'000'000ULL;
    v.compute_share = 0.5;
    v.active = true;
    v.pids = {4242};
    return std::vector<VgpuView>{v};
  };
  GPUMonitor monitor(backend, 1.0, config::known_metrics(), o);
  return monitor.sample();
}

TEST(StatsJson, ASampleReadsBackAsItWasWritten) {
  const NodeStats stats = sample_with_a_vgpu();
  ASSERT_EQ(stats.gpus.size(), 2U);
  ASSERT_EQ(stats.vgpus.size(), 1U);
  device::SimConfig c;
  c.gpu_count = 2;
  const device::SimBackend backend(c);
  const UtilizationHistory history{{0, {1.0, 2.5}}, {1, {}}};
  const nlohmann::json j = stats_json(stats, backend.gpus(), history);
  EXPECT_EQ(j["gpus"][1]["memory_total_bytes"], backend.gpu(1).memory_total) << "facts come from the backend's GpuInfo";

  const StatsDocument back = parse_stats_json(j.dump());
  EXPECT_EQ(back.stats.backend, stats.backend);
  ASSERT_EQ(back.stats.gpus.size(), 2U);
  EXPECT_EQ(back.stats.gpus[1].uuid, stats.gpus[1].uuid);
  EXPECT_EQ(back.stats.gpus[1].metrics.memory_used_bytes, stats.gpus[1].metrics.memory_used_bytes);
  EXPECT_EQ(back.stats.gpus[1].metrics.utilization_percent, stats.gpus[1].metrics.utilization_percent);
  ASSERT_EQ(back.stats.processes.size(), stats.processes.size());
  ASSERT_EQ(back.stats.vgpus.size(), 1U);
  const VgpuUsage& v = back.stats.vgpus[0];
  EXPECT_EQ(v.vgpu.name, "team-a");
  EXPECT_EQ(v.vgpu.memory_limit, 8'000'000'000ULL);
  EXPECT_EQ(v.vgpu.compute_share, 0.5);
  EXPECT_EQ(v.memory_used, stats.vgpus[0].memory_used);
  ASSERT_EQ(v.processes.size(), 1U) << "its processes are the ones attributed to it";
  EXPECT_EQ(v.processes[0].pid, 4242);
  EXPECT_EQ(back.history, history);
}

TEST(StatsJson, AMalformedDocumentNamesTheField) {
  try {
    (void)parse_stats_json(R"({"time": 1, "backend": "sim", "gpus": [{"index": "zero"}]})");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'gpus'"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)parse_stats_json("not json"), InvalidArgument);
  EXPECT_THROW((void)parse_stats_json(R"({"time": 1, "backend": "sim", "gpus": [], "aggregate": {}, "processes": [],
                                          "vgpus": [], "utilization_history": {"x": [1]}})"),
               InvalidArgument);
}

}  // namespace
}  // namespace apt::vgpu::monitoring
