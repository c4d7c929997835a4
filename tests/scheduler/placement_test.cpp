#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/scheduler/cluster_state.hpp>

#include <gtest/gtest.h>

namespace apt::vgpu::scheduler {
namespace {

constexpr std::uint64_t kGB = 1'000'000'000ULL;

Demand slice(std::uint64_t memory_gb, std::uint32_t milli) { return Demand{memory_gb * kGB, milli, 1}; }

TEST(Placement, BestFitPacksSpreadSpreadsRoundRobinRotates) {
  ClusterState c(std::vector<std::uint64_t>(3, 80 * kGB));
  c.allocate({1}, slice(10, 500));  // GPU 1 half full
  std::uint32_t cursor = 0;
  EXPECT_EQ(place(c, slice(10, 300), PlacementStrategy::best_fit, cursor), std::vector<std::uint32_t>{1});
  EXPECT_EQ(place(c, slice(10, 300), PlacementStrategy::spread, cursor), std::vector<std::uint32_t>{0});
  cursor = 0;
  EXPECT_EQ(place(c, slice(1, 100), PlacementStrategy::round_robin, cursor), std::vector<std::uint32_t>{0});
  EXPECT_EQ(place(c, slice(1, 100), PlacementStrategy::round_robin, cursor), std::vector<std::uint32_t>{1});
  EXPECT_EQ(place(c, slice(1, 100), PlacementStrategy::round_robin, cursor), std::vector<std::uint32_t>{2});
  EXPECT_EQ(place(c, slice(1, 100), PlacementStrategy::round_robin, cursor), std::vector<std::uint32_t>{0});
}

TEST(Placement, NeverLandsWhereMemoryDoesNotFit) {
  ClusterState c(std::vector<std::uint64_t>{80 * kGB, 80 * kGB});
  c.allocate({0}, slice(70, 100));  // lots of compute left on GPU 0, little memory
  std::uint32_t cursor = 0;
  for (auto strategy : {PlacementStrategy::best_fit, PlacementStrategy::spread, PlacementStrategy::round_robin}) {
    EXPECT_EQ(place(c, slice(20, 100), strategy, cursor), std::vector<std::uint32_t>{1}) << to_string(strategy);
  }
  c.allocate({1}, slice(70, 100));
  EXPECT_TRUE(place(c, slice(20, 100), PlacementStrategy::best_fit, cursor).empty());
}

TEST(Placement, RespectsSliceCapHealthAndPreference) {
  ClusterState c(std::vector<std::uint64_t>(2, 80 * kGB), 1.0, 2);
  std::uint32_t cursor = 0;
  c.set_healthy(0, false);
  EXPECT_EQ(place(c, slice(1, 100), PlacementStrategy::best_fit, cursor), std::vector<std::uint32_t>{1});
  c.set_healthy(0, true);
  EXPECT_EQ(place(c, slice(1, 100), PlacementStrategy::spread, cursor, 1), std::vector<std::uint32_t>{1});
  c.allocate({0}, slice(1, 100));
  c.allocate({0}, slice(1, 100));
  EXPECT_FALSE(c.slices_available());
  EXPECT_TRUE(place(c, slice(1, 100), PlacementStrategy::best_fit, cursor).empty()) << "max_virtual_gpus reached";
}

TEST(Placement, GangsTakeWholeIdleGpusFillingNodesByStrategy) {
  ClusterState c(2, 4, 80 * kGB);  // GPUs 0-3 on node 0, 4-7 on node 1
  c.allocate({0}, slice(1, 100));  // node 0 has 3 idle GPUs, node 1 has 4
  std::uint32_t cursor = 0;
  const Demand two{80 * kGB, kWholeGpuMilli, 2};
  EXPECT_EQ(place(c, two, PlacementStrategy::best_fit, cursor), (std::vector<std::uint32_t>{1, 2}));
  EXPECT_EQ(place(c, two, PlacementStrategy::spread, cursor), (std::vector<std::uint32_t>{4, 5}));
  const Demand four{80 * kGB, kWholeGpuMilli, 4};
  EXPECT_EQ(place(c, four, PlacementStrategy::best_fit, cursor), (std::vector<std::uint32_t>{4, 5, 6, 7}))
      << "a node that holds the whole gang comes first";
  const Demand eight{80 * kGB, kWholeGpuMilli, 8};
  EXPECT_TRUE(place(c, eight, PlacementStrategy::best_fit, cursor).empty());
  EXPECT_FALSE(c.could_ever_fit(eight)) << "no node has 8 GPUs and the gang is not multi-node";
  Demand eight_anywhere = eight;
  eight_anywhere.multi_node = true;
  EXPECT_TRUE(c.could_ever_fit(eight_anywhere));
  EXPECT_FALSE(c.could_ever_fit(Demand{80 * kGB, kWholeGpuMilli, 9}));
  EXPECT_FALSE(c.could_ever_fit(slice(81, 100)));
}

TEST(Placement, RoundRobinGangsStayOnOneNodeWhenOneHasRoom) {
  ClusterState c(2, 4, 80 * kGB);  // GPUs 0-3 on node 0, 4-7 on node 1
  std::uint32_t cursor = 0;
  const Demand one{1 * kGB, kWholeGpuMilli, 1};
  auto take = [&](const Demand& d) {
    auto gpus = place(c, d, PlacementStrategy::round_robin, cursor);
    if (!gpus.empty()) c.allocate(gpus, d);
    return gpus;
  };
  EXPECT_EQ(take(one), std::vector<std::uint32_t>{0});
  EXPECT_EQ(take(one), std::vector<std::uint32_t>{1});
  // The cursor is now GPU 2 (node 0, which has 2 idle GPUs). A 4-GPU gang used to start at
  // "node 2 % 2" and take GPUs 2, 3 of node 0 and two of node 1; node 1 has room for all four.
  EXPECT_EQ(take(Demand{80 * kGB, kWholeGpuMilli, 4}), (std::vector<std::uint32_t>{4, 5, 6, 7}));
  EXPECT_EQ(cursor, 0U) << "the GPU after the gang's last";
  // Two idle on node 0, none on node 1: a 3-GPU gang waits.
  EXPECT_TRUE(take(Demand{80 * kGB, kWholeGpuMilli, 3}).empty());
}

TEST(Placement, ASingleNodeGangWaitsWhereAMultiNodeOneIsSplit) {
  ClusterState c(2, 4, 80 * kGB);
  c.allocate({0, 1}, slice(1, 100));
  c.allocate({4}, slice(1, 100));  // idle: 2 on node 0, 3 on node 1
  std::uint32_t cursor = 0;
  Demand four{80 * kGB, kWholeGpuMilli, 4};
  for (auto strategy : {PlacementStrategy::best_fit, PlacementStrategy::spread, PlacementStrategy::round_robin}) {
    EXPECT_TRUE(place(c, four, strategy, cursor).empty()) << to_string(strategy) << ": five idle GPUs, but on two nodes";
  }
  four.multi_node = true;
  EXPECT_EQ(place(c, four, PlacementStrategy::best_fit, cursor), (std::vector<std::uint32_t>{2, 3, 5, 6}))
      << "the node with fewer idle GPUs first under best fit";
  EXPECT_EQ(place(c, four, PlacementStrategy::spread, cursor), (std::vector<std::uint32_t>{5, 6, 7, 2}));
  four.gpu_count = 6;
  EXPECT_TRUE(place(c, four, PlacementStrategy::best_fit, cursor).empty()) << "a multi-node gang waits for enough GPUs";
}

TEST(ClusterModel, NodesCarryCpuHostMemoryAndAGpuModel) {
  // a: 2 T4 with 8 cores and 16 GB; b: 4 V100 with 64 cores and 256 GB.
  ClusterState c(std::vector<NodeShape>{{"a", 8000, 16 * kGB, 2, 16 * kGB, "T4"}, {"b", 64000, 256 * kGB, 4, 32 * kGB, "V100"}});
  ASSERT_EQ(c.node_count(), 2U);
  ASSERT_EQ(c.gpu_count(), 6U);
  EXPECT_EQ(c.gpu(2).node, 1U);
  EXPECT_EQ(c.model_mask(""), 0U);
  EXPECT_EQ(c.model_mask("T4"), 1U);
  EXPECT_EQ(c.model_mask("A100|V100"), 2U);
  const std::uint32_t nowhere = c.model_mask("A100");
  EXPECT_NE(nowhere, 0U) << "only unknown models: a mask no node matches, not 'any'";
  std::uint32_t cursor = 0;
  Demand d = slice(1, 100);
  d.cpu_milli = 4000;
  EXPECT_EQ(place(c, d, PlacementStrategy::best_fit, cursor), std::vector<std::uint32_t>{0});
  d.cpu_milli = 9000;  // more than a has
  EXPECT_EQ(place(c, d, PlacementStrategy::best_fit, cursor), std::vector<std::uint32_t>{2});
  d.cpu_milli = 1000;
  d.host_memory = 20 * kGB;  // more host memory than a has
  EXPECT_EQ(place(c, d, PlacementStrategy::best_fit, cursor), std::vector<std::uint32_t>{2});
  d.host_memory = 0;
  d.gpu_models = c.model_mask("V100");
  EXPECT_EQ(place(c, d, PlacementStrategy::best_fit, cursor), std::vector<std::uint32_t>{2});
  d.gpu_models = nowhere;
  EXPECT_TRUE(place(c, d, PlacementStrategy::best_fit, cursor).empty());
  EXPECT_FALSE(c.could_ever_fit(d));
  // Allocation charges the node's CPU and memory; a GPU pod then finds a out of CPU.
  Demand heavy = slice(1, 100);
  heavy.cpu_milli = 6000;
  heavy.host_memory = 8 * kGB;
  c.allocate({0}, heavy);
  EXPECT_EQ(c.node(0).cpu_used, 6000U);
  EXPECT_EQ(c.node(0).host_memory_used, 8 * kGB);
  Demand small = slice(1, 100);
  small.cpu_milli = 3000;
  EXPECT_EQ(place(c, small, PlacementStrategy::best_fit, cursor), std::vector<std::uint32_t>{2})
      << "GPU 1 of a is idle but a has 2 cores left";
  c.release({0}, heavy);
  EXPECT_EQ(c.node(0).cpu_used, 0U);
  EXPECT_THROW(c.release_host(0, heavy), std::logic_error);
}

TEST(ClusterModel, CpuOnlyTasksGoWhereTheyStrandTheFewestGpus) {
  // a: 8 GPUs, 32 cores; b: 2 GPUs, 104 cores. A 24-core CPU-only task on a would leave 1 core per
  // free GPU; on b it leaves 40.
  ClusterState c(std::vector<NodeShape>{{"a", 32000, 0, 8, 80 * kGB, "G2"}, {"b", 104000, 0, 2, 16 * kGB, "T4"}});
  Demand cpu_only{0, 0, 0};
  cpu_only.cpu_milli = 24000;
  EXPECT_EQ(place_host(c, cpu_only), std::optional<std::uint32_t>{1});
  c.allocate_host(1, cpu_only);
  c.allocate_host(1, cpu_only);
  c.allocate_host(1, cpu_only);
  c.allocate_host(1, cpu_only);  // b: 8 cores left
  EXPECT_EQ(place_host(c, cpu_only), std::optional<std::uint32_t>{0}) << "only a has the CPU now";
  cpu_only.cpu_milli = 40000;
  EXPECT_EQ(place_host(c, cpu_only), std::nullopt);
  EXPECT_TRUE(c.could_ever_fit(cpu_only)) << "b could hold it once the others leave";
  cpu_only.cpu_milli = 200000;
  EXPECT_FALSE(c.could_ever_fit(cpu_only));
  uint32_t cursor = 0;
  EXPECT_TRUE(place(c, cpu_only, PlacementStrategy::best_fit, cursor).empty()) << "place() gives CPU-only tasks no GPUs";
}

TEST(ClusterModel, AMultiNodeGangSplitsItsCpuByGpusPerNode) {
  ClusterState c(std::vector<NodeShape>{{"a", 16000, 0, 2, 80 * kGB, "G"}, {"b", 16000, 0, 2, 80 * kGB, "G"}});
  Demand gang{80 * kGB, kWholeGpuMilli, 4};
  gang.cpu_milli = 24000;  // 6 cores per GPU: 12 per node
  EXPECT_FALSE(c.could_ever_fit(gang)) << "single-node: no node has 4 GPUs";
  gang.multi_node = true;
  EXPECT_TRUE(c.could_ever_fit(gang));
  std::uint32_t cursor = 0;
  const auto gpus = place(c, gang, PlacementStrategy::best_fit, cursor);
  ASSERT_EQ(gpus.size(), 4U);
  c.allocate(gpus, gang);
  EXPECT_EQ(c.node(0).cpu_used, 12000U);
  EXPECT_EQ(c.node(1).cpu_used, 12000U);
  c.release(gpus, gang);
  gang.cpu_milli = 40000;  // 20 cores per node: more than either has
  EXPECT_TRUE(place(c, gang, PlacementStrategy::best_fit, cursor).empty());
  EXPECT_FALSE(c.could_ever_fit(gang));
}

TEST(ClusterState, AccountsAndRejectsBadReleases) {
  ClusterState c(1, 2, 80 * kGB);
  c.allocate({0, 1}, Demand{10 * kGB, 250, 2});
  EXPECT_EQ(c.slices_in_use(), 2U);
  EXPECT_DOUBLE_EQ(c.allocation_rate(), 0.25);
  c.release({0, 1}, Demand{10 * kGB, 250, 2});
  EXPECT_EQ(c.compute_used_milli(), 0U);
  EXPECT_THROW(c.release({0}, Demand{10 * kGB, 250, 1}), std::logic_error);
  EXPECT_THROW((void)parse_placement("first_fit"), InvalidArgument);
}

}  // namespace
}  // namespace apt::vgpu::scheduler
