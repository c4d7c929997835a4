#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/runtime/node_ledger.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

namespace apt::vgpu::runtime {
namespace {

constexpr std::uint64_t k80GB = 80'000'000'000ULL;
constexpr std::uint64_t kGB = 1'000'000'000ULL;

NodeLedger make_ledger(std::uint32_t gpus = 2, LedgerOptions options = {}) {
  return NodeLedger(std::vector<std::uint64_t>(gpus, k80GB), options);
}

TEST(NodeLedger, GrantsSlicesThatFitAndAccountsForThem) {
  auto ledger = make_ledger();
  Lease a = ledger.acquire({0, 60 * kGB, 0.8, "training"});
  Lease b = ledger.acquire({0, 20 * kGB, 0.2, "inference"});
  const auto gpus = ledger.capacity();
  EXPECT_EQ(gpus[0].memory_leased, 80 * kGB);
  EXPECT_EQ(gpus[0].memory_free(), 0U);
  EXPECT_NEAR(gpus[0].compute_free(), 0.0, 1e-9);
  EXPECT_EQ(gpus[0].slices, 2U);
  EXPECT_EQ(gpus[1].slices, 0U);
  EXPECT_EQ(ledger.active_slices(), 2U);
  EXPECT_NE(a.info().id, b.info().id);
  EXPECT_EQ(a.info().owner, "training");
}

TEST(NodeLedger, RefusesWhatDoesNotFitAndSaysWhatIsFree) {
  auto ledger = make_ledger();
  Lease a = ledger.acquire({0, 70 * kGB, 0.5, "a"});
  try {
    (void)ledger.acquire({0, 20 * kGB, 0.25, "b"});
    FAIL();
  } catch (const CapacityError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("GPU 0"), std::string::npos) << message;
    EXPECT_NE(message.find("20 GB of memory asked, 10 GB free"), std::string::npos) << message;
    EXPECT_NE(message.find("GPU 1: 80 GB and 1.00 compute free"), std::string::npos) << message;
    EXPECT_NE(message.find("oversubscription"), std::string::npos) << message;
  }
  EXPECT_THROW((void)ledger.acquire({0, 1 * kGB, 0.75, "c"}), CapacityError) << "compute is a limit too";
  EXPECT_EQ(ledger.active_slices(), 1U) << "a refused request leaves nothing behind";
  EXPECT_EQ(ledger.capacity()[0].memory_leased, 70 * kGB);
}

TEST(NodeLedger, QuartersFillAGpuExactly) {
  auto ledger = make_ledger(1, {8, 1.0});
  std::vector<Lease> leases;
  for (int i = 0; i < 4; ++i) leases.push_back(ledger.acquire({0, 20 * kGB, 0.25, ""}));
  EXPECT_THROW((void)ledger.acquire({0, 0, 0.01, ""}), CapacityError);
  EXPECT_NO_THROW((void)ledger.acquire({0, 0, 0.0, ""})) << "a slice with no limits reserves nothing";
}

TEST(NodeLedger, EnforcesMaxVirtualGpus) {
  auto ledger = make_ledger(2, {3, 1.0});
  std::vector<Lease> leases;
  for (int i = 0; i < 3; ++i) leases.push_back(ledger.acquire({static_cast<std::uint32_t>(i % 2), kGB, 0.1, ""}));
  try {
    (void)ledger.acquire({1, kGB, 0.1, ""});
    FAIL();
  } catch (const CapacityError& e) {
    EXPECT_NE(std::string(e.what()).find("max_virtual_gpus"), std::string::npos) << e.what();
  }
  leases.pop_back();
  EXPECT_NO_THROW((void)ledger.acquire({1, kGB, 0.1, ""}));
}

TEST(NodeLedger, OversubscriptionStretchesCapacityByItsFactor) {
  auto ledger = make_ledger(1, {8, 1.5});
  Lease a = ledger.acquire({0, 80 * kGB, 1.0, ""});
  Lease b = ledger.acquire({0, 40 * kGB, 0.5, ""});
  EXPECT_THROW((void)ledger.acquire({0, 1 * kGB, 0.0, ""}), CapacityError);
  EXPECT_EQ(ledger.capacity()[0].memory_capacity, 120 * kGB);
}

TEST(NodeLedger, RejectsBadRequestsAndOptions) {
  auto ledger = make_ledger();
  EXPECT_THROW((void)ledger.acquire({2, kGB, 0.1, ""}), InvalidArgument);
  EXPECT_THROW((void)ledger.acquire({0, kGB, 1.5, ""}), InvalidArgument);
  EXPECT_THROW((void)ledger.acquire({0, kGB, -0.1, ""}), InvalidArgument);
  EXPECT_THROW(make_ledger(1, {8, 0.9}), InvalidArgument);
  EXPECT_THROW(make_ledger(1, {0, 1.0}), InvalidArgument);
}

TEST(NodeLedger, ALeaseIsReturnedExactlyOnce) {
  auto ledger = make_ledger();
  Lease a = ledger.acquire({0, 40 * kGB, 0.5, ""});
  EXPECT_TRUE(a.release());
  EXPECT_FALSE(a.release());
  EXPECT_FALSE(a.active());
  EXPECT_EQ(ledger.capacity()[0].memory_leased, 0U);
  {
    Lease moved_from = ledger.acquire({0, 10 * kGB, 0.1, ""});
    Lease moved_to = std::move(moved_from);
    EXPECT_FALSE(moved_from.active());  // NOLINT(bugprone-use-after-move): checking the moved-from state
    EXPECT_FALSE(moved_from.release());
    EXPECT_EQ(ledger.capacity()[0].memory_leased, 10 * kGB);
  }
  EXPECT_EQ(ledger.capacity()[0].memory_leased, 0U);
  EXPECT_EQ(ledger.capacity()[0].slices, 0U);
}

TEST(NodeLedger, LeasesOutliveTheLedgerObject) {
  Lease survivor;
  {
    auto ledger = make_ledger();
    survivor = ledger.acquire({0, kGB, 0.1, ""});
  }
  EXPECT_TRUE(survivor.release());
}

TEST(NodeLedger, MoveRelocatesAtomically) {
  auto ledger = make_ledger(3);
  Lease a = ledger.acquire({0, 30 * kGB, 0.5, "a"});
  Lease blocker = ledger.acquire({1, 60 * kGB, 0.6, "blocker"});
  EXPECT_THROW(ledger.move(a, 1), CapacityError);
  EXPECT_EQ(a.info().gpu, 0U) << "a failed move changes nothing";
  EXPECT_EQ(ledger.capacity()[0].memory_leased, 30 * kGB);
  ledger.move(a, 2);
  EXPECT_EQ(a.info().gpu, 2U);
  const auto gpus = ledger.capacity();
  EXPECT_EQ(gpus[0].memory_leased, 0U);
  EXPECT_EQ(gpus[0].slices, 0U);
  EXPECT_EQ(gpus[2].memory_leased, 30 * kGB);
  EXPECT_NEAR(gpus[2].compute_leased, 0.5, 1e-9);
  a.release();
  EXPECT_EQ(ledger.capacity()[2].memory_leased, 0U) << "release returns to the GPU the lease moved to";
}

TEST(NodeLedger, ConcurrentLeasingNeverExceedsCapacity) {
  auto ledger = make_ledger(4, {64, 1.0});
  std::atomic<bool> over{false};
  std::atomic<int> granted{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      std::vector<Lease> held;
      for (int i = 0; i < 2000; ++i) {
        if (!held.empty() && rng() % 3 == 0) {
          held.erase(held.begin() + static_cast<long>(rng() % held.size()));
          continue;
        }
        const SliceRequest r{static_cast<std::uint32_t>(rng() % 4), (1 + rng() % 30) * kGB,
                             static_cast<double>(1 + rng() % 5) / 10.0, ""};
        try {
          held.push_back(ledger.acquire(r));
          ++granted;
        } catch (const CapacityError&) {
          ++refused;
        }
        for (const auto& g : ledger.capacity()) {
          if (g.memory_leased > g.memory_capacity || g.compute_leased > g.compute_capacity + 1e-6) over = true;
        }
        if (ledger.active_slices() > 64) over = true;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(over.load());
  EXPECT_GT(granted.load(), 1000);
  EXPECT_GT(refused.load(), 0) << "the test must actually hit the capacity limits";
  EXPECT_EQ(ledger.active_slices(), 0U) << "every lease came back";
  for (const auto& g : ledger.capacity()) {
    EXPECT_EQ(g.memory_leased, 0U);
    EXPECT_NEAR(g.compute_leased, 0.0, 1e-9);
    EXPECT_EQ(g.slices, 0U);
  }
}

}  // namespace
}  // namespace apt::vgpu::runtime
