// Scheduler benchmarks (docs/benchmarks.md):
//   build/release/bench/scheduler_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <apt/vgpu/device/sim_backend.hpp>
#include <apt/vgpu/scheduler/gpu_scheduler.hpp>

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <algorithm>
#include <random>

namespace {

using namespace apt::vgpu;
using namespace apt::vgpu::scheduler;
using Clock = std::chrono::steady_clock;

std::shared_ptr<runtime::Node> sim_node(std::uint32_t gpus, std::uint32_t slices) {
  device::SimConfig c;
  c.gpu_count = gpus;
  return std::make_shared<runtime::Node>(std::make_unique<device::SimBackend>(c), runtime::LedgerOptions{slices, 1.0});
}

// Latency from submit_task() returning control to the scheduler until the
// callable's first instruction, one task at a time on an idle scheduler.
void BM_SubmitToStart(benchmark::State& state) {
  SchedulerOptions o;
  o.node = sim_node(8, 32);
  GPUScheduler scheduler(8, 32, "fifo", o);
  std::atomic<std::int64_t> started{0};
  std::vector<double> latencies;
  latencies.reserve(static_cast<std::size_t>(state.max_iterations));
  for (auto _ : state) {
    const auto t0 = Clock::now();
    const TaskId id = scheduler.submit_task([&] { started.store(Clock::now().time_since_epoch().count()); });
    scheduler.wait_for_task(id);
    const auto t1 = Clock::time_point(Clock::duration(started.load()));
    const double seconds = std::chrono::duration<double>(t1 - t0).count();
    latencies.push_back(seconds);
    state.SetIterationTime(seconds);
  }
  std::sort(latencies.begin(), latencies.end());
  state.counters["p50_us"] = latencies[latencies.size() / 2] * 1e6;
  state.counters["p99_us"] = latencies[latencies.size() * 99 / 100] * 1e6;
}
BENCHMARK(BM_SubmitToStart)->UseManualTime()->Iterations(20000);

// No-op tasks through submit + wait_all, in batches.
void BM_Throughput(benchmark::State& state) {
  SchedulerOptions o;
  o.node = sim_node(8, 32);
  GPUScheduler scheduler(8, 32, "fifo", o);
  const auto batch = static_cast<std::size_t>(state.range(0));
  std::vector<TaskId> ids;
  ids.reserve(batch);
  for (auto _ : state) {
    ids.clear();
    for (std::size_t i = 0; i < batch; ++i) ids.push_back(scheduler.submit_task([] {}));
    scheduler.wait_all(ids);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));
}
BENCHMARK(BM_Throughput)->Arg(10000)->Unit(benchmark::kMillisecond)->UseRealTime();

// One scheduling decision with 1,000 GPUs and 10,000 queued tasks: the cluster
// is full but for half of one GPU. fifo and priority find their head does not
// fit (head-of-line blocking: 0 starts); fair looks for the group whose head
// fits and starts it; adaptive reserves for the head and backfills one task.
// A started task is undone between passes (not timed).
class BenchContext final : public SchedulingContext {
 public:
  BenchContext() : cluster_(125, 8, 80'000'000'000ULL) {
    std::mt19937 rng(7);
    for (std::uint32_t g = 0; g < cluster_.gpu_count(); ++g) {
      const std::uint32_t used = g == 777 ? 500 : 1000;  // one GPU has half its compute free
      cluster_.allocate({g}, Demand{40'000'000'000ULL * used / 1000, used, 1});
      RunningTask r;
      r.task.id = 1'000'000 + g;
      r.task.demand = Demand{40'000'000'000ULL * used / 1000, used, 1};
      r.task.expected_duration = 100.0 + rng() % 1000;
      r.gpus = {g};
      running_.push_back(r);
    }
  }
  double now() const override { return 0; }
  const ClusterState& cluster() const override { return cluster_; }
  bool try_start(const QueuedTask& t, PlacementStrategy s) override {
    auto gpus = place(cluster_, t.demand, s, cursor_);
    if (gpus.empty()) return false;
    cluster_.allocate(gpus, t.demand);
    started_ = t;
    started_gpus_ = gpus;
    ++starts_;
    return true;
  }
  std::vector<RunningTask> running() const override { return running_; }
  void preempt(TaskId) override {}
  void undo(QueuePolicy& policy) {
    if (started_gpus_.empty()) return;  // the pass started nothing (the head blocks)
    cluster_.release(started_gpus_, started_.demand);
    policy.enqueue(started_);
    started_gpus_.clear();
  }
  std::uint64_t starts_ = 0;

 private:
  ClusterState cluster_;
  std::vector<RunningTask> running_;
  std::uint32_t cursor_ = 0;
  QueuedTask started_;
  std::vector<std::uint32_t> started_gpus_;
};

void BM_SchedulingDecision(benchmark::State& state, const char* policy_name) {
  BenchContext ctx;
  PolicyOptions po;
  auto policy = make_queue_policy(policy_name, po);
  std::mt19937 rng(3);
  for (std::uint64_t i = 0; i < 10'000; ++i) {
    QueuedTask t;
    t.id = i;
    t.sequence = i;
    // Most tasks need more than the one free half-GPU; every 50th fits.
    const std::uint32_t milli = i % 50 == 49 ? 250 : 600 + rng() % 400;
    t.demand = Demand{40'000'000'000ULL * milli / 1000, milli, 1};
    t.group = "user" + std::to_string(i % 100);
    t.priority = static_cast<int>(rng() % 4);
    t.expected_duration = 50.0;
    policy->enqueue(t);
  }
  for (auto _ : state) {
    policy->schedule(ctx);
    state.PauseTiming();
    ctx.undo(*policy);
    state.ResumeTiming();
  }
  state.counters["starts_per_pass"] =
      static_cast<double>(ctx.starts_) / static_cast<double>(std::max<std::int64_t>(1, state.iterations()));
}
BENCHMARK_CAPTURE(BM_SchedulingDecision, fifo, "fifo")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_SchedulingDecision, priority, "priority")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_SchedulingDecision, fair, "fair")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_SchedulingDecision, adaptive_backfill, "adaptive")->Unit(benchmark::kMicrosecond);

// Placement alone: one slice on 1,000 GPUs.
void BM_Place(benchmark::State& state) {
  ClusterState cluster(125, 8, 80'000'000'000ULL);
  std::mt19937 rng(5);
  for (std::uint32_t g = 0; g < cluster.gpu_count(); ++g) {
    const std::uint32_t used = static_cast<std::uint32_t>(rng() % 900);
    cluster.allocate({g}, Demand{80'000'000ULL * used, used, 1});
  }
  std::uint32_t cursor = 0;
  const Demand d{20'000'000'000ULL, 250, 1};
  for (auto _ : state) benchmark::DoNotOptimize(place(cluster, d, PlacementStrategy::best_fit, cursor));
}
BENCHMARK(BM_Place)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
