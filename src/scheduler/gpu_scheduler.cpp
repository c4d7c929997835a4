#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/scheduler/gpu_scheduler.hpp>
#include <apt/vgpu/runtime/vgpu_scope.hpp>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <deque>
#include <fmt/format.h>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace apt::vgpu::scheduler {

std::string_view to_string(TaskState state) noexcept {
  switch (state) {
    case TaskState::queued: return "queued";
    case TaskState::running: return "running";
    case TaskState::succeeded: return "succeeded";
    case TaskState::failed: return "failed";
    case TaskState::cancelled: return "cancelled";
  }
  return "unknown";
}

GpuRequirements GpuRequirements::with(std::string_view memory, std::optional<double> compute) {
  GpuRequirements r;
  r.memory = parse_size(memory, "memory");
  r.compute = compute;
  return r;
}

namespace {

using Clock = std::chrono::steady_clock;
using SystemClock = std::chrono::system_clock;

enum class StopReason { none, preempt, cancel, timeout };

struct Task {
  TaskId id = 0;
  std::string name;
  GPUScheduler::TaskFunction function;
  std::vector<std::string> argv;  // command task when non-empty
  GpuRequirements requirements;
  QueuedTask queued;
  TaskState state = TaskState::queued;
  std::vector<TaskAttempt> attempts;
  std::uint32_t failures = 0;
  std::any result;
  std::exception_ptr error;
  std::string error_text;
  SystemClock::time_point submitted;
  std::optional<Clock::time_point> deadline;  // callable timeout of the running attempt
  std::atomic<bool> stop{false};
  StopReason stop_reason = StopReason::none;  // guarded by the scheduler mutex
  std::vector<std::uint32_t> gpus;            // of the running attempt
  std::uint32_t waiters = 0;                  // threads in wait_for_task(); guarded by the scheduler mutex
};

// How an attempt ended, as the worker saw it.
struct Outcome {
  bool success = false;
  bool stopped = false;  // ended because it was asked to stop
  bool timed_out = false;
  // The slice could not be leased: its room is held outside this scheduler (another
  // process, or vgpud's other clients). The task waits and tries again; not a failure.
  bool blocked = false;
  std::any result;
  std::exception_ptr error;
  std::string text;
};

double seconds_since(Clock::time_point origin) {
  return std::chrono::duration<double>(Clock::now() - origin).count();
}

}  // namespace

struct GPUScheduler::Impl final : SchedulingContext {
  // ---- configuration ----
  std::shared_ptr<runtime::Node> node;
  std::uint32_t gpu_count = 0;
  SchedulerOptions options;
  Clock::time_point origin = Clock::now();

  // ---- guarded by mutex ----
  mutable std::mutex mutex;
  std::condition_variable done_cv;
  std::condition_variable timer_cv;
  ClusterState capacity;
  std::unique_ptr<QueuePolicy> policy;
  std::unordered_map<TaskId, std::shared_ptr<Task>> tasks;
  std::unordered_map<TaskId, RunningTask> running_tasks;
  std::deque<TaskId> finished;  // ids of finished tasks still kept, oldest first
  std::uint64_t forgotten = 0;  // finished tasks erased by forget_old_finished()
  TaskId next_id = 1;
  std::uint64_t next_sequence = 0;
  std::uint32_t cursor = 0;
  bool shutting_down = false;
  bool wake_timer_ = false;  // the timer must recompute its wake-up time
  // The view of the node's ledger (see ClusterState): when it was last read, and
  // whether a refused lease says it is out of date. Only the timer thread reads it.
  Clock::time_point view_read{};
  bool view_stale = false;

  // ---- workers (their own lock, never taken before `mutex`) ----
  struct Worker {
    std::deque<std::shared_ptr<Task>> queue;
    std::condition_variable cv;
    bool idle = false;  // asleep on cv (and not yet claimed by a dispatch)
    std::thread thread;
  };
  std::mutex worker_mutex;
  std::vector<std::unique_ptr<Worker>> workers;
  bool workers_stop = false;
  // Workers awake and looking for work (not running a task). While one is
  // searching, dispatch wakes nobody: searchers take the tasks, and a worker
  // that finishes a short task searches again at once. This keeps short tasks
  // from paying a thread wake-up each.
  std::atomic<int> searching{0};
  int pending = 0;                 // tasks in worker queues; guarded by worker_mutex
  Clock::time_point last_take{};   // guarded by worker_mutex
  std::condition_variable watchdog_cv;
  bool watchdog_sleeping = false;  // guarded by worker_mutex
  std::thread watchdog;
  std::thread timer;

  Impl(std::shared_ptr<runtime::Node> n, std::uint32_t gpus, std::uint32_t max_slices, std::string_view policy_name,
       SchedulerOptions o)
      : node(std::move(n)), gpu_count(gpus), options(std::move(o)),
        capacity(gpu_memory(*node, gpus), options.oversubscription, max_slices, machine_cpu_milli()),
        policy(make_queue_policy(policy_name, PolicyOptions{options.placement, options.preemption, options.weights,
                                                            options.backfill_window})) {
    for (std::uint32_t g = 0; g < gpus; ++g) capacity.set_healthy(g, node->backend().health(g).usable());
    const std::uint32_t count = options.workers != 0 ? options.workers : std::min<std::uint32_t>(max_slices, 256);
    for (std::uint32_t w = 0; w < std::max<std::uint32_t>(count, 1); ++w) workers.push_back(std::make_unique<Worker>());
    for (std::uint32_t w = 0; w < workers.size(); ++w) workers[w]->thread = std::thread([this, w] { work(w); });
    {
      std::unique_lock lock(mutex);  // before any task: placement sees what others hold already
      refresh_view(lock);
    }
    timer = std::thread([this] { tick(); });
    watchdog = std::thread([this] { watch(); });
  }

  // How often the timer re-reads the node's ledger while tasks wait. A refused
  // lease re-reads it at once.
  static constexpr auto kViewRefresh = std::chrono::seconds(1);

  // Keeps `capacity` a view of the node's ledger (vgpud's book when a daemon
  // serves the node): reads it without the lock, then records per GPU what it
  // holds beyond this scheduler's own slices. Our own book is charged before a
  // lease is taken and credited after it is dropped, so the difference never
  // counts our slices as someone else's; a transient undercount only means a
  // lease may be refused, which makes the task wait and the view refresh.
  // When the ledger cannot be read the last view stays (and a warning says why).
  void refresh_view(std::unique_lock<std::mutex>& lock) {
    view_stale = false;
    view_read = Clock::now();
    lock.unlock();
    std::vector<runtime::GpuCapacity> view;
    try {
      view = node->capacity();
    } catch (const std::exception& e) {
      log::warn(fmt::format("scheduler: cannot read the node's ledger ({}); placing by the last view", e.what()));
    }
    lock.lock();
    for (const runtime::GpuCapacity& c : view) {
      if (c.gpu >= gpu_count) continue;
      const GpuCapacityState& own = capacity.gpu(c.gpu);
      const auto leased_milli = static_cast<std::uint32_t>(std::lround(std::max(0.0, c.compute_leased) * kWholeGpuMilli));
      capacity.set_held_elsewhere(c.gpu, c.memory_leased > own.memory_used ? c.memory_leased - own.memory_used : 0,
                                  leased_milli > own.compute_used ? leased_milli - own.compute_used : 0,
                                  c.slices > own.slices ? c.slices - own.slices : 0);
    }
  }

  static std::vector<std::uint64_t> gpu_memory(runtime::Node& node, std::uint32_t gpus) {
    std::vector<std::uint64_t> memory;
    for (std::uint32_t g = 0; g < gpus; ++g) memory.push_back(node.backend().gpu(g).memory_total);
    return memory;
  }

  // The live case of the cluster model is one node: its GPUs and this machine's CPUs, against which
  // tasks' `cpu` counts (host memory is not reserved).
  static std::uint64_t machine_cpu_milli() {
    return static_cast<std::uint64_t>(std::max(1U, std::thread::hardware_concurrency())) * 1000U;
  }

  // ---- SchedulingContext (called with `mutex` held) ----
  double now() const override { return seconds_since(origin); }
  const ClusterState& cluster() const override { return capacity; }

  bool try_start(const QueuedTask& q, PlacementStrategy strategy) override {
    auto it = tasks.find(q.id);
    if (it == tasks.end()) return true;  // vanished: let the policy drop it
    std::vector<std::uint32_t> gpus = place(capacity, q.demand, strategy, cursor, q.preferred_gpu);
    if (gpus.empty()) return false;
    Task& t = *it->second;
    if (t.requirements.gpu && gpus.front() != *t.requirements.gpu) return false;  // pinned elsewhere
    capacity.allocate(gpus, q.demand);
    running_tasks[q.id] = RunningTask{q, gpus, now(), false};
    t.state = TaskState::running;
    t.gpus = gpus;
    t.stop.store(false, std::memory_order_relaxed);
    t.stop_reason = StopReason::none;
    t.attempts.push_back(TaskAttempt{static_cast<std::uint32_t>(t.attempts.size() + 1), gpus.front(), SystemClock::now(),
                                     {}, "running"});
    if (t.argv.empty() && t.requirements.timeout) {
      t.deadline = Clock::now() + *t.requirements.timeout;
      wake_timer_ = true;
    }
    dispatch(it->second);
    return true;
  }

  std::vector<RunningTask> running() const override {
    std::vector<RunningTask> out;
    out.reserve(running_tasks.size());
    for (const auto& [id, r] : running_tasks) out.push_back(r);
    return out;
  }

  void preempt(TaskId id) override {
    auto r = running_tasks.find(id);
    if (r == running_tasks.end() || r->second.stopping) return;
    r->second.stopping = true;
    Task& t = *tasks.at(id);
    t.stop_reason = StopReason::preempt;
    t.stop.store(true);
    log::info(fmt::format("preempting {} (priority {}) for a higher-priority task", t.name, t.requirements.priority));
  }

  // ---- workers ----
  void dispatch(const std::shared_ptr<Task>& task) {
    std::lock_guard lock(worker_mutex);
    const std::size_t home = task->gpus.front() % workers.size();
    workers[home]->queue.push_back(task);
    ++pending;
    if (searching.load(std::memory_order_acquire) > 0) {
      // A searcher will take it. Should the searchers all get stuck in long
      // tasks, the watchdog wakes a sleeper for whatever is left.
      if (watchdog_sleeping) {
        watchdog_sleeping = false;
        watchdog_cv.notify_one();
      }
      return;
    }
    // A woken worker is marked busy at once, so the next dispatch wakes another.
    if (workers[home]->idle) {
      workers[home]->idle = false;
      workers[home]->cv.notify_one();
      return;
    }
    for (auto& w : workers) {  // the home worker is busy: wake a thief
      if (w->idle) {
        w->idle = false;
        w->cv.notify_one();
        return;
      }
    }
  }

  // Takes a task from this worker's queue, else steals from the back of another's.
  std::shared_ptr<Task> take_locked(std::size_t self) {
    Worker& me = *workers[self];
    if (!me.queue.empty()) {
      auto t = std::move(me.queue.front());
      me.queue.pop_front();
      --pending;
      last_take = Clock::now();
      return t;
    }
    for (std::size_t k = 1; k < workers.size(); ++k) {
      Worker& victim = *workers[(self + k) % workers.size()];
      if (!victim.queue.empty()) {
        auto t = std::move(victim.queue.back());
        victim.queue.pop_back();
        --pending;
        last_take = Clock::now();
        return t;
      }
    }
    return nullptr;
  }

  std::shared_ptr<Task> next_task(std::size_t self) {
    searching.fetch_add(1, std::memory_order_acq_rel);
    // Spin a little before sleeping: under a stream of short tasks the next one
    // usually arrives within microseconds.
    const auto spin_until = Clock::now() + std::chrono::microseconds(50);
    std::unique_lock lock(worker_mutex);
    while (true) {
      if (auto t = take_locked(self)) {
        searching.fetch_sub(1, std::memory_order_acq_rel);
        return t;
      }
      if (workers_stop) {
        searching.fetch_sub(1, std::memory_order_acq_rel);
        return nullptr;
      }
      if (Clock::now() < spin_until) {
        lock.unlock();
        std::this_thread::yield();
        lock.lock();
        continue;
      }
      Worker& me = *workers[self];
      searching.fetch_sub(1, std::memory_order_acq_rel);
      me.idle = true;
      // Re-check after leaving the searchers: a dispatch that saw us searching did not wake anyone.
      if (auto t = take_locked(self)) {
        me.idle = false;
        return t;
      }
      me.cv.wait(lock, [&] { return !me.idle || workers_stop; });
      me.idle = false;
      searching.fetch_add(1, std::memory_order_acq_rel);
    }
  }

  void work(std::size_t self) {
    while (auto task = next_task(self)) finish(*task, execute(*task));
  }

  // Wakes a sleeping worker when queued tasks have not been taken for a while
  // (every awake worker is busy with a long task). Polls only while there is
  // work about; sleeps otherwise.
  void watch() {
    constexpr auto kStall = std::chrono::microseconds(200);
    constexpr auto kQuiet = std::chrono::milliseconds(10);
    std::unique_lock lock(worker_mutex);
    auto quiet_since = Clock::now();
    while (!workers_stop) {
      if (pending == 0 && Clock::now() - quiet_since > kQuiet) {
        watchdog_sleeping = true;
        watchdog_cv.wait(lock, [&] { return !watchdog_sleeping || workers_stop; });
        quiet_since = Clock::now();
        continue;
      }
      watchdog_cv.wait_for(lock, kStall);
      if (pending == 0) continue;
      quiet_since = Clock::now();
      if (Clock::now() - last_take < kStall) continue;
      for (auto& w : workers) {
        if (w->idle) {
          w->idle = false;
          w->cv.notify_one();
          break;
        }
      }
    }
  }

  Outcome execute(Task& t) {
    Outcome out;
    try {
      runtime::VirtualGpuOptions o;
      o.gpu_id = t.gpus.front();
      if (t.requirements.memory > 0) o.memory_limit = t.requirements.memory;
      o.compute_ratio = t.requirements.compute;
      o.priority = t.requirements.priority;
      o.isolation = t.requirements.isolation;
      o.name = t.name;
      std::optional<runtime::VirtualGPU> lease;
      try {
        lease.emplace(o, node);
      } catch (const CapacityError& e) {
        out.blocked = true;
        out.text = e.what();
        return out;
      }
      runtime::VirtualGPU& vgpu = *lease;
      if (t.argv.empty()) {
        runtime::VgpuScope scope(vgpu);
        TaskContext ctx(t.id, static_cast<std::uint32_t>(t.attempts.size()), vgpu, t.stop);
        out.result = t.function(ctx);
        out.success = true;
      } else {
        runtime::RunOptions ro;
        ro.capture_output = true;
        ro.own_process_group = true;
        ro.stop = &t.stop;
        ro.stop_grace = options.stop_grace;
        if (t.requirements.timeout) ro.timeout = *t.requirements.timeout;
        const runtime::RunResult r = vgpu.run(t.argv, ro);
        out.timed_out = r.timed_out;
        if (r.exit_code == 0 && !r.timed_out) {
          out.success = true;
          out.result = CommandResult{0, r.output};
        } else {
          out.text = r.timed_out ? "timed out" : fmt::format("exit code {}", r.exit_code);
          out.error = std::make_exception_ptr(
              TaskError(r.timed_out ? TaskError::Reason::timed_out : TaskError::Reason::command_failed,
                        fmt::format("{}: '{}' {}{}", t.name, t.argv.front(), out.text,
                                    r.output.empty() ? "" : "; output ends: " + tail(r.output)),
                        r.exit_code, r.output));
        }
      }
    } catch (const ProcessError& e) {
      out.error = std::make_exception_ptr(TaskError(TaskError::Reason::could_not_start, fmt::format("{}: {}", t.name, e.what())));
      out.text = e.what();
    } catch (const std::exception& e) {
      out.error = std::current_exception();
      out.text = e.what();
    } catch (...) {
      out.error = std::current_exception();
      out.text = "unknown exception";
    }
    out.stopped = t.stop.load();
    return out;
  }

  static std::string tail(const std::string& text) {
    constexpr std::size_t kTail = 400;
    std::string s = text.size() > kTail ? "..." + text.substr(text.size() - kTail) : text;
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  }

  // An attempt ended: free its slice, decide what happens next, schedule.
  void finish(Task& t, Outcome out) {
    std::unique_lock lock(mutex);
    auto r = running_tasks.find(t.id);
    if (r != running_tasks.end()) {
      capacity.release(r->second.gpus, r->second.task.demand);
      policy->on_finished(r->second, now());
      running_tasks.erase(r);
    }
    t.deadline.reset();
    TaskAttempt& attempt = t.attempts.back();
    attempt.end = SystemClock::now();
    const StopReason why = t.stop_reason;
    t.stop_reason = StopReason::none;
    t.stop.store(false);
    // Once a task was asked to stop, the reason decides the outcome even if the
    // callable returned normally: it was told to give up and may have done so early.
    if (why == StopReason::cancel) {
      attempt.outcome = "cancelled";
      conclude(t, TaskState::cancelled, std::make_exception_ptr(TaskError(TaskError::Reason::cancelled,
                                                                          fmt::format("{} was cancelled", t.name))),
               "cancelled while running");
    } else if (why == StopReason::preempt) {
      attempt.outcome = "preempted";
      t.state = TaskState::queued;
      policy->enqueue(t.queued);
    } else if (out.blocked) {
      // Our book said the GPU had room but the node's ledger (or vgpud) did not:
      // someone outside holds it. Wait, as for any full GPU, and look again later.
      attempt.outcome = "waited: room held outside the scheduler";
      // One record for a whole wait, not one per look (a long wait would grow the history).
      if (t.attempts.size() >= 2 && t.attempts[t.attempts.size() - 2].outcome == attempt.outcome) {
        t.attempts[t.attempts.size() - 2].end = attempt.end;
        t.attempts.pop_back();
      }
      t.state = TaskState::queued;
      t.queued.not_before = now() + std::chrono::duration<double>(options.retry_backoff).count();
      t.queued.preferred_gpu = -1;
      policy->enqueue(t.queued);
      view_stale = true;  // the timer re-reads the ledger, so the retry places by what is really free
      wake_timer_ = true;
      log::info(fmt::format("{}: GPU {} is full outside the scheduler ({}); waiting", t.name, t.attempts.back().gpu, out.text));
    } else if (out.success && why != StopReason::timeout) {
      attempt.outcome = "succeeded";
      t.result = std::move(out.result);
      conclude(t, TaskState::succeeded, nullptr, {});
    } else {
      if (why == StopReason::timeout || out.timed_out) {
        attempt.outcome = "timed out";
        out.error = std::make_exception_ptr(TaskError(
            TaskError::Reason::timed_out,
            fmt::format("{} timed out after {} ms", t.name, t.requirements.timeout ? t.requirements.timeout->count() : 0)));
        out.text = "timed out";
      } else {
        attempt.outcome = "failed: " + out.text;
      }
      retry_or_fail(t, out);
    }
    policy->schedule(*this);
    // Wake only who cares: waiters on this task (or shutdown), and the timer
    // when a retry now waits for its backoff or a new attempt has a deadline.
    const bool wake_waiters = t.waiters > 0 || shutting_down;
    const bool wake_timer = wake_timer_;
    wake_timer_ = false;
    lock.unlock();
    if (wake_waiters) done_cv.notify_all();
    if (wake_timer) timer_cv.notify_one();
  }

  void retry_or_fail(Task& t, const Outcome& out) {
    ++t.failures;
    const std::uint32_t gpu = t.attempts.back().gpu;
    const device::GpuHealth health = node->backend().health(gpu);
    capacity.set_healthy(gpu, health.usable());
    const std::uint32_t max_retries = t.requirements.max_retries.value_or(options.default_max_retries);
    if (!t.requirements.auto_recover || t.failures > max_retries) {
      conclude(t, TaskState::failed, out.error, out.text);
      return;
    }
    const double backoff = std::chrono::duration<double>(options.retry_backoff).count() *
                           std::pow(2.0, static_cast<double>(t.failures - 1));
    t.queued.not_before = now() + backoff;
    t.queued.preferred_gpu = -1;
    if (!health.usable()) {
      log::warn(fmt::format("{}: GPU {} is {} ({}); retrying elsewhere", t.name, gpu, device::to_string(health.state),
                            health.detail));
      if (t.requirements.fallback_gpu) t.queued.preferred_gpu = *t.requirements.fallback_gpu;
    }
    log::info(fmt::format("{}: attempt {} failed ({}); retry {} of {} in {:.2f}s", t.name, t.attempts.size(), out.text,
                          t.failures, max_retries, backoff));
    t.state = TaskState::queued;
    policy->enqueue(t.queued);
    wake_timer_ = true;
  }

  void conclude(Task& t, TaskState state, std::exception_ptr error, std::string text) {
    t.state = state;
    t.error = std::move(error);
    t.error_text = std::move(text);
    t.function = nullptr;  // release captured state early
    finished.push_back(t.id);
    forget_old_finished();
  }

  // Keeps the last options.finished_history finished tasks; older ones are erased
  // (their results and output with them) unless a thread is waiting on them now.
  void forget_old_finished() {
    if (shutting_down) return;  // shutdown concludes tasks while it walks `tasks`
    while (finished.size() > options.finished_history) {
      const TaskId id = finished.front();
      auto it = tasks.find(id);
      if (it != tasks.end() && it->second->waiters > 0) break;  // erased after its waiter returns
      finished.pop_front();
      if (it != tasks.end()) tasks.erase(it);
      ++forgotten;
    }
  }

  // ---- timer: retry backoffs and callable timeouts ----
  void tick() {
    std::unique_lock lock(mutex);
    while (!shutting_down) {
      auto wake = Clock::now() + std::chrono::seconds(1);
      const double next = policy->next_wakeup(now());
      if (std::isfinite(next)) {
        wake = std::min(wake, origin + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(next)));
      }
      for (const auto& [id, r] : running_tasks) {
        const Task& t = *tasks.at(id);
        if (t.deadline) wake = std::min(wake, *t.deadline);
      }
      if (!view_stale) timer_cv.wait_until(lock, wake);
      if (shutting_down) break;
      if (view_stale || (policy->size() > 0 && Clock::now() - view_read >= kViewRefresh)) {
        refresh_view(lock);
        if (shutting_down) break;
      }
      for (auto& [id, r] : running_tasks) {
        Task& t = *tasks.at(id);
        if (t.deadline && Clock::now() >= *t.deadline && t.stop_reason == StopReason::none) {
          t.stop_reason = StopReason::timeout;
          t.stop.store(true);
          r.stopping = true;
        }
      }
      policy->schedule(*this);
      wake_timer_ = false;  // the loop recomputes its wake-up time anyway
    }
  }

  TaskStatus status_of(const Task& t) const {
    TaskStatus s;
    s.id = t.id;
    s.name = t.name;
    s.state = t.state;
    if (t.state == TaskState::running) s.gpu = t.gpus.front();
    s.requirements = t.requirements;
    s.attempts = t.attempts;
    s.error = t.error_text;
    s.submitted = t.submitted;
    return s;
  }

  Task& find(TaskId id) const {
    auto it = tasks.find(id);
    if (it == tasks.end()) {
      if (id > 0 && id < next_id) {
        throw InvalidArgument(fmt::format("task: task {} finished and was forgotten: the scheduler keeps the last {} "
                                          "finished tasks (SchedulerOptions::finished_history); wait for tasks "
                                          "sooner or keep more",
                                          id, options.finished_history));
      }
      throw InvalidArgument(fmt::format("task: there is no task {} in this scheduler", id));
    }
    return *it->second;
  }

  TaskId submit(std::shared_ptr<Task> t) {
    const GpuRequirements& r = t->requirements;
    if (r.compute && !(*r.compute > 0.0 && *r.compute <= 1.0)) {
      throw InvalidArgument(fmt::format("compute: {} is out of range; use a share of one GPU in (0, 1], e.g. 0.25", *r.compute));
    }
    if (r.gpu && *r.gpu >= gpu_count) {
      throw InvalidArgument(fmt::format("gpu: there is no GPU {}; this scheduler has GPUs 0..{}", *r.gpu, gpu_count - 1));
    }
    if (r.fallback_gpu && *r.fallback_gpu >= gpu_count) {
      throw InvalidArgument(fmt::format("fallback_gpu: there is no GPU {}; this scheduler has GPUs 0..{}", *r.fallback_gpu,
                                        gpu_count - 1));
    }
    const std::uint64_t cores = capacity.node(0).cpu_capacity / 1000;
    if (r.cpu && !(*r.cpu > 0.0 && *r.cpu <= static_cast<double>(cores))) {
      throw InvalidArgument(fmt::format("cpu: {} cores is out of range; this node has {} (ask for 0 < cpu <= {})", *r.cpu,
                                        cores, cores));
    }
    Demand demand;
    demand.memory = r.memory;
    demand.compute_milli = r.compute ? static_cast<std::uint32_t>(std::ceil(*r.compute * kWholeGpuMilli - 1e-9)) : 0;
    demand.gpu_count = 1;
    demand.cpu_milli = r.cpu ? static_cast<std::uint64_t>(std::ceil(*r.cpu * 1000.0 - 1e-9)) : 0;
    std::unique_lock lock(mutex);
    if (shutting_down) throw InvalidArgument("submit: the scheduler is shutting down");
    if (!capacity.could_ever_fit(demand)) {
      std::uint64_t largest = 0;
      for (const auto& g : capacity.gpus()) largest = std::max(largest, g.memory_capacity);
      throw InvalidArgument(fmt::format(
          "gpu_requirements: {} of memory and {} compute can never fit: the largest GPU has {} and 1.00 compute; "
          "ask for less",
          format_size(r.memory), r.compute ? fmt::format("{:.2f}", *r.compute) : "no", format_size(largest)));
    }
    t->id = next_id++;
    if (t->name.empty()) t->name = r.name.empty() ? fmt::format("task-{}", t->id) : r.name;
    t->submitted = SystemClock::now();
    QueuedTask& q = t->queued;
    q.id = t->id;
    q.demand = demand;
    q.priority = r.priority;
    q.group = r.share_key();
    q.sequence = next_sequence++;
    q.submit_time = now();
    if (r.expected_duration) q.expected_duration = std::chrono::duration<double>(*r.expected_duration).count();
    else if (r.timeout) q.expected_duration = std::chrono::duration<double>(*r.timeout).count();
    if (r.gpu) q.preferred_gpu = *r.gpu;
    const TaskId id = t->id;
    tasks.emplace(id, std::move(t));
    policy->enqueue(q);
    policy->schedule(*this);
    const bool wake_timer = wake_timer_;
    wake_timer_ = false;
    lock.unlock();
    if (wake_timer) timer_cv.notify_one();
    return id;
  }

  void shutdown() {
    {
      std::lock_guard lock(mutex);
      shutting_down = true;
      for (auto& [id, t] : tasks) {
        if (t->state == TaskState::queued) {
          policy->erase(id);
          conclude(*t, TaskState::cancelled,
                   std::make_exception_ptr(TaskError(TaskError::Reason::cancelled, fmt::format("{} was cancelled: the scheduler shut down", t->name))),
                   "scheduler shut down");
        } else if (t->state == TaskState::running) {
          t->stop_reason = StopReason::cancel;
          t->stop.store(true);
        }
      }
    }
    done_cv.notify_all();
    timer_cv.notify_all();
    {
      std::unique_lock lock(mutex);
      done_cv.wait(lock, [this] { return running_tasks.empty(); });
    }
    {
      std::lock_guard lock(worker_mutex);
      workers_stop = true;
      for (auto& w : workers) w->cv.notify_all();
      watchdog_cv.notify_all();
    }
    for (auto& w : workers) w->thread.join();
    watchdog.join();
    timer.join();
  }
};

// ---------------------------------------------------------------------------

namespace {

std::shared_ptr<runtime::Node> default_scheduler_node(std::uint32_t gpus, std::uint32_t max_slices) {
  config::VgpuConfig config;
  config.simulated_node.gpus = gpus;
  config.max_virtual_gpus = max_slices;
  auto node = runtime::Node::open(config, device::backend_from_environment());
  node->use_daemon_if_running();  // as Node::default_node(): slices come from vgpud when it runs
  return node;
}

}  // namespace

GPUScheduler::GPUScheduler(std::uint32_t num_physical_gpus, std::uint32_t max_virtual_gpus,
                           std::string_view scheduling_policy, SchedulerOptions options) {
  if (num_physical_gpus == 0) throw InvalidArgument("num_physical_gpus: 0; a scheduler needs at least one GPU");
  if (max_virtual_gpus == 0) throw InvalidArgument("max_virtual_gpus: 0; allow at least one slice");
  if (options.finished_history == 0) {
    throw InvalidArgument("finished_history: 0; keep at least one finished task so that wait_for_task can return it");
  }
  (void)make_queue_policy(scheduling_policy);  // validate the name before starting anything
  std::shared_ptr<runtime::Node> node =
      options.node ? options.node : default_scheduler_node(num_physical_gpus, max_virtual_gpus);
  if (node->backend().gpu_count() < num_physical_gpus) {
    throw InvalidArgument(fmt::format("num_physical_gpus: {} asked, but the {} backend has {} GPU{}; ask for at most {}",
                                      num_physical_gpus, node->backend().name(), node->backend().gpu_count(),
                                      node->backend().gpu_count() == 1 ? "" : "s", node->backend().gpu_count()));
  }
  impl_ = std::make_unique<Impl>(std::move(node), num_physical_gpus, max_virtual_gpus, scheduling_policy,
                                 std::move(options));
}

std::unique_ptr<GPUScheduler> GPUScheduler::from_config(const config::VgpuConfig& config,
                                                        std::shared_ptr<runtime::Node> node) {
  SchedulerOptions o;
  o.placement = parse_placement(config.scheduler.placement);
  o.preemption = config.runtime.preemption;
  o.weights = config.scheduler.weights;
  o.retry_backoff = std::chrono::milliseconds(static_cast<long>(config.scheduler.retry_backoff_seconds * 1000));
  o.default_max_retries = config.scheduler.max_retries;
  o.oversubscription = config.oversubscription;
  if (!node) {
    node = runtime::Node::open(config);
    node->use_daemon_if_running();
  }
  o.node = node;
  const std::uint32_t gpus = o.node->backend().gpu_count();
  return std::make_unique<GPUScheduler>(gpus, config.max_virtual_gpus, config.scheduling, std::move(o));
}

GPUScheduler::~GPUScheduler() { impl_->shutdown(); }

TaskId GPUScheduler::submit_function(TaskFunction task, GpuRequirements requirements) {
  if (!task) throw InvalidArgument("task: empty function");
  auto t = std::make_shared<Task>();
  t->function = std::move(task);
  t->requirements = std::move(requirements);
  return impl_->submit(std::move(t));
}

TaskId GPUScheduler::submit_command(std::vector<std::string> argv, GpuRequirements requirements) {
  if (argv.empty() || argv.front().empty()) throw InvalidArgument("command: empty; give a program and its arguments");
  auto t = std::make_shared<Task>();
  t->argv = std::move(argv);
  t->requirements = std::move(requirements);
  return impl_->submit(std::move(t));
}

std::any GPUScheduler::wait_for_task(TaskId id) {
  Impl& m = *impl_;
  std::unique_lock lock(m.mutex);
  Task& t = m.find(id);
  ++t.waiters;
  m.done_cv.wait(lock, [&] { return is_terminal(t.state); });
  --t.waiters;
  // Copies: forgetting old tasks may erase `t` now that nobody waits on it.
  const bool succeeded = t.state == TaskState::succeeded;
  std::any result = succeeded ? t.result : std::any{};
  const std::exception_ptr error = t.error;
  m.forget_old_finished();
  if (succeeded) return result;
  std::rethrow_exception(error);
}

std::vector<std::any> GPUScheduler::wait_all(const std::vector<TaskId>& ids) {
  std::vector<std::any> results;
  results.reserve(ids.size());
  std::exception_ptr first;
  for (TaskId id : ids) {
    try {
      results.push_back(wait_for_task(id));
    } catch (...) {
      if (!first) first = std::current_exception();
      results.emplace_back();
    }
  }
  if (first) std::rethrow_exception(first);
  return results;
}

bool GPUScheduler::cancel(TaskId id) {
  Impl& m = *impl_;
  std::unique_lock lock(m.mutex);
  Task& t = m.find(id);
  if (t.state == TaskState::queued) {
    m.policy->erase(id);
    m.conclude(t, TaskState::cancelled,
                   std::make_exception_ptr(TaskError(TaskError::Reason::cancelled, fmt::format("{} was cancelled", t.name))),
                   "cancelled while queued");
    lock.unlock();
    m.done_cv.notify_all();
    return true;
  }
  if (t.state == TaskState::running) {
    t.stop_reason = StopReason::cancel;
    t.stop.store(true);
    if (auto r = m.running_tasks.find(id); r != m.running_tasks.end()) r->second.stopping = true;
    return true;
  }
  return false;
}

TaskStatus GPUScheduler::status(TaskId id) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->status_of(impl_->find(id));
}

SchedulerSnapshot GPUScheduler::snapshot() const {
  const Impl& m = *impl_;
  std::lock_guard lock(m.mutex);
  SchedulerSnapshot s;
  for (const QueuedTask& q : m.policy->ordered()) s.queued.push_back(m.status_of(m.find(q.id)));
  for (const auto& [id, r] : m.running_tasks) s.running.push_back(m.status_of(m.find(id)));
  std::sort(s.running.begin(), s.running.end(), [](const TaskStatus& a, const TaskStatus& b) { return a.id < b.id; });
  s.gpus = m.capacity.gpus();
  s.slices_in_use = m.capacity.slices_in_use();
  s.max_slices = m.capacity.max_slices();
  s.policy = std::string(m.policy->name());
  return s;
}

runtime::Node& GPUScheduler::node() const noexcept { return *impl_->node; }
std::uint32_t GPUScheduler::num_physical_gpus() const noexcept { return impl_->gpu_count; }

}  // namespace apt::vgpu::scheduler
