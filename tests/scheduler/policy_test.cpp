// Exact schedules of every policy on hand-built scenarios, driven through the
// discrete-event simulator (the same policy code the live scheduler runs).
#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/scheduler/simulator.hpp>

#include <gtest/gtest.h>

namespace apt::vgpu::scheduler {
namespace {

constexpr std::uint64_t kGB = 1'000'000'000ULL;

SimJob job(std::uint64_t id, double submit, double duration, std::uint32_t milli, int priority = 0,
           std::string group = "") {
  SimJob j;
  j.id = id;
  j.submit = submit;
  j.duration = duration;
  j.demand = Demand{milli * 80 * kGB / 1000, milli, 1};
  j.priority = priority;
  j.group = std::move(group);
  return j;
}

SimulationReport run(const std::vector<SimJob>& jobs, const std::string& policy, std::uint32_t gpus = 1,
                     PolicyOptions po = {}) {
  SimulationOptions o;
  o.nodes = 1;
  o.gpus_per_node = gpus;
  o.policy = policy;
  o.policy_options = po;
  return simulate(jobs, o);
}

// (start, finish) of each job, by id.
std::vector<std::pair<double, double>> times(const SimulationReport& r) {
  std::vector<std::pair<double, double>> out(r.job_times.size());
  for (const JobTimes& t : r.job_times) out[t.id] = {t.start, t.finish};
  return out;
}

using Schedule = std::vector<std::pair<double, double>>;

TEST(Policies, FifoBlocksBehindTheHead) {
  const std::vector<SimJob> jobs{job(0, 0, 10, 600), job(1, 1, 5, 600), job(2, 2, 5, 300)};
  EXPECT_EQ(times(run(jobs, "fifo")), (Schedule{{0, 10}, {10, 15}, {10, 15}}))
      << "job 2 fits at t=2 but waits behind job 1";
}

TEST(Policies, AdaptiveBackfillsAHoleWithoutDelayingTheHead) {
  const std::vector<SimJob> jobs{job(0, 0, 10, 600), job(1, 1, 5, 600), job(2, 2, 5, 300), job(3, 3, 20, 300)};
  // Job 2 ends (t=7) before job 1's reservation (t=10): backfilled. Job 3 would
  // end at t=23, after the reservation: it waits.
  EXPECT_EQ(times(run(jobs, "adaptive")), (Schedule{{0, 10}, {10, 15}, {2, 7}, {10, 30}}));
}

TEST(Policies, PriorityRunsHigherFirstWhenRoomFrees) {
  const std::vector<SimJob> jobs{job(0, 0, 10, 600, 0), job(1, 1, 5, 600, 0), job(2, 2, 5, 600, 5)};
  EXPECT_EQ(times(run(jobs, "priority")), (Schedule{{0, 10}, {15, 20}, {10, 15}}));
}

TEST(Policies, PriorityBackfillsAHoleWithoutDelayingTheHead) {
  // Job 1 (priority 5) does not fit beside job 0 until t=10. Job 2 fits now and ends at t=7,
  // before that reservation: it runs in the hole. Job 3 would end at t=23: it waits. (The
  // policy once blocked the whole queue behind job 1: job 2 ran at t=10, job 3 at t=15.)
  const std::vector<SimJob> jobs{job(0, 0, 10, 600, 0), job(1, 1, 5, 600, 5), job(2, 2, 5, 300, 0),
                                 job(3, 3, 20, 300, 0)};
  EXPECT_EQ(times(run(jobs, "priority")), (Schedule{{0, 10}, {10, 15}, {2, 7}, {10, 30}}));
}

TEST(Policies, PriorityWithPreemptionSuspendsLowerPriorityWork) {
  const std::vector<SimJob> jobs{job(0, 0, 10, 600, 0), job(1, 1, 5, 600, 0), job(2, 2, 5, 600, 5)};
  PolicyOptions po;
  po.preemption = true;
  const SimulationReport r = run(jobs, "priority", 1, po);
  EXPECT_EQ(r.preemptions, 1U);
  // Job 0 is suspended at t=2 with 8 s left and resumes at t=7 when job 2 ends.
  EXPECT_EQ(times(r), (Schedule{{0, 15}, {15, 20}, {2, 7}}));
}

TEST(Policies, PreemptionNeverTouchesEqualOrHigherPriority) {
  const std::vector<SimJob> jobs{job(0, 0, 10, 600, 5), job(1, 1, 5, 600, 5)};
  PolicyOptions po;
  po.preemption = true;
  const SimulationReport r = run(jobs, "priority", 1, po);
  EXPECT_EQ(r.preemptions, 0U);
  EXPECT_EQ(times(r), (Schedule{{0, 10}, {10, 15}}));
}

TEST(Policies, FairInterleavesGroupsByServiceReceived) {
  // Group x floods the queue first; y's single job still goes second.
  const std::vector<SimJob> jobs{job(0, 0, 10, 1000, 0, "x"), job(1, 0, 10, 1000, 0, "x"), job(2, 0, 10, 1000, 0, "x"),
                                 job(3, 0.5, 10, 1000, 0, "y")};
  EXPECT_EQ(times(run(jobs, "fifo")), (Schedule{{0, 10}, {10, 20}, {20, 30}, {30, 40}}));
  EXPECT_EQ(times(run(jobs, "fair")), (Schedule{{0, 10}, {20, 30}, {30, 40}, {10, 20}}));
}

TEST(Policies, FairSharesFollowWeights) {
  std::vector<SimJob> jobs;
  for (std::uint64_t i = 0; i < 4; ++i) jobs.push_back(job(i, 0, 10, 1000, 0, "x"));
  for (std::uint64_t i = 4; i < 8; ++i) jobs.push_back(job(i, 0, 10, 1000, 0, "y"));
  auto running_at_zero = [](const SimulationReport& r, std::uint64_t first, std::uint64_t last) {
    int n = 0;
    for (const JobTimes& t : r.job_times) n += t.id >= first && t.id <= last && t.start == 0 ? 1 : 0;
    return n;
  };
  const SimulationReport equal = run(jobs, "fair", 4);
  EXPECT_EQ(running_at_zero(equal, 0, 3), 2);
  EXPECT_EQ(running_at_zero(equal, 4, 7), 2);
  PolicyOptions po;
  po.weights = {{"x", 3.0}, {"y", 1.0}};
  const SimulationReport weighted = run(jobs, "fair", 4, po);
  EXPECT_EQ(running_at_zero(weighted, 0, 3), 3);
  EXPECT_EQ(running_at_zero(weighted, 4, 7), 1);
}

TEST(Policies, FairSkipsAGroupWhoseHeadDoesNotFit) {
  // x's big job cannot start while y's small ones can: work-conserving.
  const std::vector<SimJob> jobs{job(0, 0, 10, 700), job(1, 1, 10, 700, 0, "x"), job(2, 1, 5, 200, 0, "y")};
  EXPECT_EQ(times(run(jobs, "fair")), (Schedule{{0, 10}, {10, 20}, {1, 6}}));
}

TEST(Policies, UnknownPolicyNamesAreClearErrors) {
  try {
    (void)make_queue_policy("fiar");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean 'fair'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace apt::vgpu::scheduler
