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
  EXPECT_TRUE(c.could_ever_fit(eight));
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
  // Only when no node has room is a gang split (two idle on node 0, none on node 1: nothing fits).
  EXPECT_TRUE(take(Demand{80 * kGB, kWholeGpuMilli, 3}).empty());
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
