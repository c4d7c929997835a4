#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/config/load_profile.hpp>
#include <apt/vgpu/device/sim_backend.hpp>
#include <apt/vgpu/scheduler/gpu_scheduler.hpp>

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include <optional>

#include <atomic>
#include <csignal>
#include <cerrno>
#include <fstream>
#include <filesystem>
#include <latch>
#include <set>
#include <thread>

namespace apt::vgpu::scheduler {
namespace {

using namespace std::chrono_literals;
constexpr std::uint64_t kGB = 1'000'000'000ULL;

std::shared_ptr<runtime::Node> sim_node(std::uint32_t gpus, std::uint32_t max_slices = 64) {
  device::SimConfig c;
  c.gpu_count = gpus;
  return std::make_shared<runtime::Node>(std::make_unique<device::SimBackend>(c),
                                         runtime::LedgerOptions{max_slices, 1.0});
}

SchedulerOptions on(std::shared_ptr<runtime::Node> node) {
  SchedulerOptions o;
  o.node = std::move(node);
  o.retry_backoff = 10ms;
  o.stop_grace = 200ms;
  return o;
}

// Blocks tasks until released, so tests can look at what is running.
struct Gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock l(m);
    cv.wait(l, [&] { return open; });
  }
  void release() {
    {
      std::lock_guard l(m);
      open = true;
    }
    cv.notify_all();
  }
};

// Waits for an event the test cannot be told about directly. No time limit: a
// loaded machine may be slow, and ctest's timeout bounds a real bug.
void wait_until(const std::function<bool()>& condition) {
  while (!condition()) std::this_thread::sleep_for(1ms);
}

// Whether `pid` still runs (a zombie waiting for its reaper does not).
bool running_process(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  std::getline(stat, text);
  const auto paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] != 'Z' && text[paren + 2] != 'X';
}

TEST(GPUScheduler, SeedApiRunsCallablesWithTheirVirtualGpu) {
  GPUScheduler scheduler(8, 32, "fair", on(sim_node(8)));
  const TaskId id = scheduler.submit_task(
      [](runtime::VirtualGPU& vgpu) { return vgpu.device() + " " + std::to_string(*vgpu.options().memory_limit); },
      GpuRequirements::with("16GB", 0.25));
  const std::string result = scheduler.wait_for_task_as<std::string>(id);
  EXPECT_EQ(result.rfind("sim:", 0), 0U) << result;
  EXPECT_NE(result.find("16000000000"), std::string::npos);
  EXPECT_EQ(scheduler.status(id).state, TaskState::succeeded);
  EXPECT_EQ(scheduler.status(id).attempts.size(), 1U);
}

TEST(GPUScheduler, RoomHeldOutsideTheSchedulerMakesATaskWaitNotFail) {
  // Another holder of the node's ledger (another part of the process, or vgpud's other
  // clients) has 70 of GPU 0's 80 GB, which the scheduler's own book does not know.
  auto node = sim_node(1);
  GPUScheduler scheduler(1, 8, "fifo", on(node));
  std::optional<runtime::VirtualGPU> outside;
  outside.emplace(runtime::create_vgpu(0, "70GB", std::nullopt, {}, node));
  const TaskId id = scheduler.submit_task([](runtime::VirtualGPU&) { return std::string("ran"); },
                                          GpuRequirements::with("20GB", 0.25));
  wait_until([&] {
    const auto st = scheduler.status(id);
    return !st.attempts.empty() && st.attempts.front().outcome.rfind("waited", 0) == 0;
  });
  EXPECT_NE(scheduler.status(id).state, TaskState::failed) << "it waits for the room instead of failing";
  outside.reset();  // the room comes back
  EXPECT_EQ(scheduler.wait_for_task_as<std::string>(id), "ran");
  EXPECT_EQ(scheduler.status(id).state, TaskState::succeeded);
}

TEST(GPUScheduler, PlacesByTheNodesLedgerNotOnlyItsOwnBook) {
  // Another holder has 70 of GPU 0's 80 GB before the scheduler starts. The
  // scheduler's book is a view of the node's ledger, so a 20 GB task goes to GPU 1
  // at once instead of being refused on GPU 0 first.
  auto node = sim_node(2);
  runtime::VirtualGPU outside = runtime::create_vgpu(0, "70GB", std::nullopt, {}, node);
  GPUScheduler scheduler(2, 8, "fifo", on(node));
  EXPECT_EQ(scheduler.snapshot().gpus[0].memory_elsewhere, 70 * kGB);
  EXPECT_EQ(scheduler.snapshot().gpus[0].slices_elsewhere, 1U);
  const TaskId id = scheduler.submit_task([](runtime::VirtualGPU& v) { return v.gpu_id(); },
                                          GpuRequirements::with("20GB", 0.25));
  EXPECT_EQ(scheduler.wait_for_task_as<std::uint32_t>(id), 1U);
  ASSERT_EQ(scheduler.status(id).attempts.size(), 1U);
  EXPECT_EQ(scheduler.status(id).attempts.front().outcome, "succeeded");
}

TEST(GPUScheduler, ARefusedLeaseRefreshesTheViewAndTheRetryGoesWhereThereIsRoom) {
  auto node = sim_node(2);
  GPUScheduler scheduler(2, 8, "fifo", on(node));
  // Taken after the scheduler read the ledger: its first choice, GPU 0, is refused.
  runtime::VirtualGPU outside = runtime::create_vgpu(0, "70GB", std::nullopt, {}, node);
  const TaskId id = scheduler.submit_task([](runtime::VirtualGPU& v) { return v.gpu_id(); },
                                          GpuRequirements::with("20GB", 0.25));
  EXPECT_EQ(scheduler.wait_for_task_as<std::uint32_t>(id), 1U);
  const auto attempts = scheduler.status(id).attempts;
  ASSERT_EQ(attempts.size(), 2U);
  EXPECT_EQ(attempts[0].gpu, 0U);
  EXPECT_EQ(attempts[0].outcome.rfind("waited", 0), 0U) << attempts[0].outcome;
  EXPECT_EQ(attempts[1].gpu, 1U);
}

TEST(GPUScheduler, TasksReserveTheNodesCpuTheLiveCaseOfTheClusterModel) {
  // One node is the live case of the cluster model: a task's `cpu` counts against this machine's
  // cores. Two tasks that each want every core run one after the other, though GPU room abounds.
  GPUScheduler scheduler(2, 8, "fifo", on(sim_node(2)));
  const double cores = std::max(1U, std::thread::hardware_concurrency());
  std::promise<void> release_first;
  std::shared_future<void> first_may_end = release_first.get_future().share();
  GpuRequirements all_cores = GpuRequirements::with("1GB", 0.1);
  all_cores.cpu = cores;
  const TaskId first = scheduler.submit_task([first_may_end](runtime::VirtualGPU&) { first_may_end.wait(); return 1; },
                                             all_cores);
  const TaskId second = scheduler.submit_task([](runtime::VirtualGPU&) { return 2; }, all_cores);
  wait_until([&] { return scheduler.status(first).state == TaskState::running; });
  EXPECT_EQ(scheduler.status(second).state, TaskState::queued) << "no CPU left for it";
  release_first.set_value();
  EXPECT_EQ(scheduler.wait_for_task_as<int>(second), 2);
  EXPECT_EQ(scheduler.wait_for_task_as<int>(first), 1);
  GpuRequirements too_many = GpuRequirements::with("1GB", 0.1);
  too_many.cpu = cores + 1;
  EXPECT_THROW((void)scheduler.submit_task([](runtime::VirtualGPU&) { return 0; }, too_many), InvalidArgument);
  too_many.cpu = 0.0;
  EXPECT_THROW((void)scheduler.submit_task([](runtime::VirtualGPU&) { return 0; }, too_many), InvalidArgument);
}

TEST(GPUScheduler, FinishedTasksAreForgottenBeyondTheHistory) {
  SchedulerOptions o = on(sim_node(1));
  o.finished_history = 3;
  GPUScheduler scheduler(1, 4, "fifo", o);
  std::vector<TaskId> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(scheduler.submit_task([i] { return i; }));
    EXPECT_EQ(scheduler.wait_for_task_as<int>(ids.back()), i);
  }
  for (int i = 2; i < 5; ++i) EXPECT_EQ(scheduler.status(ids[static_cast<std::size_t>(i)]).state, TaskState::succeeded);
  try {
    (void)scheduler.status(ids[0]);
    FAIL() << "task 1 is still kept";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("finished and was forgotten"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)scheduler.status(999), InvalidArgument);
  o.finished_history = 0;
  EXPECT_THROW(GPUScheduler(1, 4, "fifo", o), InvalidArgument);
}

TEST(GPUScheduler, ManyTasksSeedExample) {
  GPUScheduler scheduler(4, 16, "fifo", on(sim_node(4)));
  std::vector<TaskId> ids;
  for (int i = 0; i < 10; ++i) {
    ids.push_back(scheduler.submit_task([i] { return "model_" + std::to_string(i); }, GpuRequirements::with("10GB")));
  }
  const auto results = scheduler.wait_all(ids);
  ASSERT_EQ(results.size(), 10U);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(std::any_cast<std::string>(results[static_cast<std::size_t>(i)]), "model_" + std::to_string(i));
}

TEST(GPUScheduler, ErrorsAreRethrownAsThemselves) {
  GPUScheduler scheduler(1, 4, "fifo", on(sim_node(1)));
  const TaskId id = scheduler.submit_task([]() -> int { throw std::out_of_range("bad index 7"); });
  try {
    (void)scheduler.wait_for_task(id);
    FAIL();
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "bad index 7");
  }
  EXPECT_EQ(scheduler.status(id).state, TaskState::failed);
  EXPECT_NE(scheduler.status(id).attempts.back().outcome.find("bad index 7"), std::string::npos);
}

TEST(GPUScheduler, SlicesNeverExceedMemoryOrTheSliceCap) {
  GPUScheduler scheduler(2, 3, "fifo", on(sim_node(2)));
  Gate gate;
  std::atomic<int> running{0};
  std::atomic<int> peak{0};
  std::vector<TaskId> ids;
  for (int i = 0; i < 6; ++i) {
    ids.push_back(scheduler.submit_task(
        [&] {
          const int now = ++running;
          int seen = peak.load();
          while (now > seen && !peak.compare_exchange_weak(seen, now)) {
          }
          gate.wait();
          --running;
        },
        GpuRequirements::with("30GB")));
  }
  wait_until([&] { return running.load() == 3; });
  const SchedulerSnapshot s = scheduler.snapshot();
  EXPECT_EQ(s.running.size(), 3U) << "max_virtual_gpus = 3";
  EXPECT_EQ(s.queued.size(), 3U);
  for (const auto& g : s.gpus) EXPECT_LE(g.memory_used, g.memory_capacity);
  gate.release();
  scheduler.wait_all(ids);
  EXPECT_EQ(peak.load(), 3);
  EXPECT_EQ(scheduler.node().ledger().active_slices(), 0U) << "no lease leaked";
}

TEST(GPUScheduler, RequirementsThatCanNeverFitAreRejectedAtSubmit) {
  GPUScheduler scheduler(2, 8, "fifo", on(sim_node(2)));
  try {
    (void)scheduler.submit_task([] {}, GpuRequirements::with("81GB"));
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("can never fit"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)scheduler.submit_task([] {}, GpuRequirements::with("1GB", 1.5)), InvalidArgument);
  EXPECT_THROW((void)scheduler.submit_task([] {}, GpuRequirements::with("1GB", 0.0)), InvalidArgument);
  EXPECT_THROW((void)GpuRequirements::with("lots"), InvalidArgument);
  GpuRequirements pinned;
  pinned.gpu = 5;
  EXPECT_THROW((void)scheduler.submit_task([] {}, pinned), InvalidArgument);
  EXPECT_THROW((void)scheduler.submit_command({}, {}), InvalidArgument);
  EXPECT_THROW((void)scheduler.wait_for_task(999), InvalidArgument);
  EXPECT_THROW(GPUScheduler(9, 8, "fifo", on(sim_node(2))), InvalidArgument) << "more GPUs than the node has";
  EXPECT_THROW(GPUScheduler(2, 8, "lottery", on(sim_node(2))), InvalidArgument);
}

TEST(GPUScheduler, CommandsSeeTheirSliceAndReportExitCodesAndOutput) {
  GPUScheduler scheduler(2, 8, "fifo", on(sim_node(2)));
  GpuRequirements r = GpuRequirements::with("8GB", 0.5);
  const TaskId ok = scheduler.submit_command(
      {"/bin/sh", "-c", "echo limit=$VGPU_MEMORY_LIMIT share=$VGPU_COMPUTE_SHARE visible=$CUDA_VISIBLE_DEVICES"}, r);
  const auto result = scheduler.wait_for_task_as<CommandResult>(ok);
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_NE(result.output.find("limit=8000000000 share=0.5 visible=GPU-"), std::string::npos) << result.output;

  const TaskId bad = scheduler.submit_command({"/bin/sh", "-c", "echo oops >&2; exit 3"});
  try {
    (void)scheduler.wait_for_task(bad);
    FAIL();
  } catch (const TaskError& e) {
    EXPECT_EQ(e.reason(), TaskError::Reason::command_failed);
    EXPECT_EQ(e.exit_code(), 3);
    EXPECT_NE(e.output().find("oops"), std::string::npos);
  }
  const TaskId missing = scheduler.submit_command({"/nonexistent/tool"});
  try {
    (void)scheduler.wait_for_task(missing);
    FAIL();
  } catch (const TaskError& e) {
    EXPECT_EQ(e.reason(), TaskError::Reason::could_not_start);
  }
}

TEST(GPUScheduler, CommandTimeoutKillsTheProcessGroup) {
  GPUScheduler scheduler(1, 4, "fifo", on(sim_node(1)));
  GpuRequirements r;
  r.timeout = 200ms;
  // The shell starts a background sleeper and waits; the timeout must kill both (the group).
  const auto pid_file = std::filesystem::temp_directory_path() / ("vgpu-timeout-" + std::to_string(::getpid()));
  const TaskId id =
      scheduler.submit_command({"/bin/sh", "-c", "sleep 300 & echo $! > " + pid_file.string() + "; wait"}, r);
  try {
    (void)scheduler.wait_for_task(id);
    FAIL();
  } catch (const TaskError& e) {
    EXPECT_EQ(e.reason(), TaskError::Reason::timed_out);
  }
  EXPECT_EQ(scheduler.status(id).attempts.back().outcome, "timed out");
  pid_t sleeper = 0;
  std::ifstream(pid_file) >> sleeper;
  ASSERT_GT(sleeper, 0);
  // Killed with its group (it may linger as a zombie until its reaper gets to it).
  wait_until([&] { return !running_process(sleeper); });
  std::filesystem::remove(pid_file);
}

TEST(GPUScheduler, CallableTimeoutSignalsStop) {
  GPUScheduler scheduler(1, 4, "fifo", on(sim_node(1)));
  GpuRequirements r;
  r.timeout = 100ms;
  const TaskId id = scheduler.submit_task(
      [](TaskContext& ctx) {
        while (!ctx.stop_requested()) std::this_thread::sleep_for(1ms);
      },
      r);
  try {
    (void)scheduler.wait_for_task(id);
    FAIL();
  } catch (const TaskError& e) {
    EXPECT_EQ(e.reason(), TaskError::Reason::timed_out);
  }
}

TEST(GPUScheduler, CancelAtEveryState) {
  GPUScheduler scheduler(1, 1, "fifo", on(sim_node(1)));
  Gate gate;
  std::atomic<bool> started{false};
  const TaskId running = scheduler.submit_task([&](TaskContext& ctx) {
    started = true;
    while (!ctx.stop_requested()) std::this_thread::sleep_for(1ms);
  });
  const TaskId queued = scheduler.submit_task([] { return 1; });
  wait_until([&] { return started.load(); });
  EXPECT_EQ(scheduler.status(queued).state, TaskState::queued);
  EXPECT_TRUE(scheduler.cancel(queued));
  EXPECT_EQ(scheduler.status(queued).state, TaskState::cancelled);
  EXPECT_TRUE(scheduler.cancel(running));
  try {
    (void)scheduler.wait_for_task(running);
    FAIL();
  } catch (const TaskError& e) {
    EXPECT_EQ(e.reason(), TaskError::Reason::cancelled);
  }
  EXPECT_FALSE(scheduler.cancel(running)) << "already ended";
  const TaskId done = scheduler.submit_task([] { return 2; });
  EXPECT_EQ(scheduler.wait_for_task_as<int>(done), 2);
  EXPECT_FALSE(scheduler.cancel(done));
  // A running command is killed.
  const TaskId sleeper = scheduler.submit_command({"/bin/sh", "-c", "sleep 30"});
  wait_until([&] { return scheduler.status(sleeper).state == TaskState::running; });
  EXPECT_TRUE(scheduler.cancel(sleeper));
  EXPECT_THROW((void)scheduler.wait_for_task(sleeper), TaskError);
  EXPECT_EQ(scheduler.status(sleeper).state, TaskState::cancelled);
  EXPECT_EQ(scheduler.node().ledger().active_slices(), 0U);
}

TEST(GPUScheduler, PriorityPreemptionStopsAndRequeuesLowerPriorityWork) {
  SchedulerOptions o = on(sim_node(1));
  o.preemption = true;
  GPUScheduler scheduler(1, 4, "priority", o);
  std::atomic<int> low_starts{0};
  GpuRequirements low = GpuRequirements::with("60GB", 0.8);
  const TaskId background = scheduler.submit_task(
      [&](TaskContext& ctx) {
        // The first attempt runs until it is preempted (an event, not a time budget); the second finishes.
        if (++low_starts == 1) {
          while (!ctx.stop_requested()) std::this_thread::sleep_for(1ms);
        }
        return ctx.attempt();
      },
      low);
  wait_until([&] { return low_starts.load() == 1; });
  GpuRequirements high = GpuRequirements::with("60GB", 0.8);
  high.priority = 10;
  const TaskId urgent = scheduler.submit_task([] { return 42; }, high);
  EXPECT_EQ(scheduler.wait_for_task_as<int>(urgent), 42);
  EXPECT_EQ(scheduler.wait_for_task_as<std::uint32_t>(background), 2U) << "requeued and run again";
  const TaskStatus s = scheduler.status(background);
  ASSERT_EQ(s.attempts.size(), 2U);
  EXPECT_EQ(s.attempts[0].outcome, "preempted");
  EXPECT_EQ(s.attempts[1].outcome, "succeeded");
}

TEST(GPUScheduler, RetriesWithBackoffAndMovesOffALostGpu) {
  auto node = sim_node(2);
  GPUScheduler scheduler(2, 8, "fifo", on(node));
  GpuRequirements r = GpuRequirements::with("10GB", 0.5);
  r.max_retries = 3;
  r.gpu = std::nullopt;
  r.fallback_gpu = 1;
  std::atomic<int> calls{0};
  const TaskId id = scheduler.submit_task(
      [&](runtime::VirtualGPU& vgpu) {
        if (++calls == 1) {
          // The GPU dies under the first attempt.
          node->backend().simulator()->set_health(vgpu.gpu_id(), device::HealthState::lost, "injected");
          throw std::runtime_error("CUDA error: an illegal memory access was encountered");
        }
        return vgpu.gpu_id();
      },
      r);
  const auto gpu = scheduler.wait_for_task_as<std::uint32_t>(id);
  const TaskStatus s = scheduler.status(id);
  ASSERT_EQ(s.attempts.size(), 2U);
  EXPECT_NE(s.attempts[0].outcome.find("illegal memory access"), std::string::npos);
  EXPECT_NE(s.attempts[1].gpu, s.attempts[0].gpu) << "retried on another GPU";
  EXPECT_EQ(gpu, s.attempts[1].gpu);
}

TEST(GPUScheduler, GivesUpAfterMaxRetries) {
  GPUScheduler scheduler(1, 4, "fifo", on(sim_node(1)));
  GpuRequirements r;
  r.max_retries = 2;
  std::atomic<int> calls{0};
  const TaskId id = scheduler.submit_task([&]() -> int { throw std::runtime_error("flaky " + std::to_string(++calls)); }, r);
  EXPECT_THROW((void)scheduler.wait_for_task(id), std::runtime_error);
  EXPECT_EQ(calls.load(), 3);
  EXPECT_EQ(scheduler.status(id).attempts.size(), 3U);
  GpuRequirements no_recover = r;
  no_recover.auto_recover = false;
  calls = 0;
  const TaskId once = scheduler.submit_task([&]() -> int { throw std::runtime_error("x" + std::to_string(++calls)); }, no_recover);
  EXPECT_THROW((void)scheduler.wait_for_task(once), std::runtime_error);
  EXPECT_EQ(calls.load(), 1) << "no retries without auto_recover";
}

TEST(GPUScheduler, AdaptiveSpreadsWhenLightAndPlacementsAreVisible) {
  GPUScheduler scheduler(2, 8, "adaptive", on(sim_node(2)));
  Gate gate;
  std::vector<TaskId> ids;
  for (int i = 0; i < 2; ++i) ids.push_back(scheduler.submit_task([&] { gate.wait(); }, GpuRequirements::with("10GB", 0.2)));
  wait_until([&] { return scheduler.snapshot().running.size() == 2; });
  std::set<std::uint32_t> gpus;
  for (const auto& t : scheduler.snapshot().running) gpus.insert(*t.gpu);
  EXPECT_EQ(gpus.size(), 2U) << "a light cluster spreads";
  gate.release();
  scheduler.wait_all(ids);
}

TEST(GPUScheduler, FromAProfile) {
  const auto config = config::load_profile("research");
  auto scheduler = GPUScheduler::from_config(config.vgpu, sim_node(8, 80));
  EXPECT_EQ(scheduler->snapshot().policy, "adaptive");
  EXPECT_EQ(scheduler->snapshot().max_slices, 80U);
  const TaskId id = scheduler->submit_task([] { return 7; }, GpuRequirements::with("8GB", 0.1));
  EXPECT_EQ(scheduler->wait_for_task_as<int>(id), 7);
}

TEST(GPUScheduler, ProfileRetriesApplyToTasksThatDoNotSetTheirOwn) {
  config::VgpuConfig config;
  config.scheduler.max_retries = 2;
  config.scheduler.retry_backoff_seconds = 0.005;
  auto scheduler = GPUScheduler::from_config(config, sim_node(2));
  std::atomic<int> calls{0};
  const TaskId id = scheduler->submit_task([&]() -> int { throw std::runtime_error(std::to_string(++calls)); });
  EXPECT_THROW((void)scheduler->wait_for_task(id), std::runtime_error);
  EXPECT_EQ(calls.load(), 3);
  GpuRequirements none;
  none.max_retries = 0;
  calls = 0;
  const TaskId once = scheduler->submit_task([&]() -> int { throw std::runtime_error(std::to_string(++calls)); }, none);
  EXPECT_THROW((void)scheduler->wait_for_task(once), std::runtime_error);
  EXPECT_EQ(calls.load(), 1) << "an explicit 0 wins over the profile";
}

TEST(GPUScheduler, ConcurrentSubmittersLoseNothingAndLeakNoLease) {
  auto node = sim_node(4);
  std::atomic<long> runs{0};
  {
    GPUScheduler scheduler(4, 16, "fair", on(node));
    constexpr int kThreads = 6;
    constexpr int kPerThread = 300;
    std::vector<std::vector<TaskId>> ids(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          GpuRequirements r = GpuRequirements::with("5GB", 0.25);
          r.user = "user" + std::to_string(t % 3);
          ids[static_cast<std::size_t>(t)].push_back(scheduler.submit_task(
              [&runs, t, i] {
                ++runs;
                return t * 100000 + i;
              },
              r));
          if (i % 50 == 0) (void)scheduler.snapshot();
        }
      });
    }
    for (auto& th : threads) th.join();
    std::set<TaskId> unique;
    for (int t = 0; t < kThreads; ++t) {
      const auto results = scheduler.wait_all(ids[static_cast<std::size_t>(t)]);
      for (int i = 0; i < kPerThread; ++i) {
        EXPECT_EQ(std::any_cast<int>(results[static_cast<std::size_t>(i)]), t * 100000 + i);
      }
      unique.insert(ids[static_cast<std::size_t>(t)].begin(), ids[static_cast<std::size_t>(t)].end());
    }
    EXPECT_EQ(unique.size(), static_cast<std::size_t>(kThreads * kPerThread)) << "no duplicated ids";
    EXPECT_EQ(runs.load(), kThreads * kPerThread) << "every task ran exactly once";
  }
  EXPECT_EQ(node->ledger().active_slices(), 0U);
}

TEST(GPUScheduler, DestructionCancelsQueuedAndStopsRunning) {
  auto node = sim_node(1);
  std::atomic<bool> stopped{false};
  {
    GPUScheduler scheduler(1, 1, "fifo", on(node));
    std::atomic<bool> started{false};
    (void)scheduler.submit_task([&](TaskContext& ctx) {
      started = true;
      while (!ctx.stop_requested()) std::this_thread::sleep_for(1ms);
      stopped = true;
    });
    (void)scheduler.submit_task([] {});
    wait_until([&] { return started.load(); });
  }
  EXPECT_TRUE(stopped.load());
  EXPECT_EQ(node->ledger().active_slices(), 0U);
}

}  // namespace
}  // namespace apt::vgpu::scheduler
