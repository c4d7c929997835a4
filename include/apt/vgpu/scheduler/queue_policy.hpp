// Queue policies: which waiting task starts next.
//
// A QueuePolicy holds the waiting tasks and, in schedule(), asks its
// SchedulingContext to start them in its order. The context (the live
// GPUScheduler or the trace simulator) does placement, leasing and starting,
// and tells the policy when a started task finishes. Policies never look at
// the clock themselves: ctx.now() is wall time in the live scheduler and
// simulated time in a replay.
//
//   fifo      submission order; the head blocks the queue until it fits.
//   priority  higher priority first (then submission order); the head blocks.
//             With preemption, a blocked head stops just enough lower-priority
//             running tasks (lowest priority, most recently started first) to
//             fit, and they are requeued.
//   fair      weighted fair queueing across groups (users or teams) with
//             dominant resource fairness over compute and memory: the group
//             with the smallest dominant share / weight of what it runs now
//             goes next, ties broken by the least service received so far
//             (dominant resource-seconds / weight); a group whose head does not
//             fit is skipped for the pass (work-conserving).
//   adaptive  FIFO with EASY backfilling: when the head is blocked it gets a
//             reservation at the earliest time running tasks free enough room,
//             and later tasks whose expected runtime ends before then start in
//             the holes. Placement packs (best fit) when the cluster is at least
//             half allocated and spreads when it is lighter.
//
// Thread safety: none; the owner serialises calls.
#pragma once

#include <apt/vgpu/scheduler/cluster_state.hpp>

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace apt::vgpu::scheduler {

using TaskId = std::uint64_t;

struct QueuedTask {
  TaskId id = 0;
  Demand demand;
  int priority = 0;
  std::string group;
  std::uint64_t sequence = 0;   // submission order; kept across requeues
  double submit_time = 0.0;
  double not_before = 0.0;      // retry backoff: not eligible before this time
  std::optional<double> expected_duration;  // seconds; used by backfilling
  std::int64_t preferred_gpu = -1;
};

struct RunningTask {
  QueuedTask task;
  std::vector<std::uint32_t> gpus;
  double start = 0.0;
  bool stopping = false;  // preemption or cancellation requested
};

class SchedulingContext {
 public:
  virtual ~SchedulingContext() = default;
  [[nodiscard]] virtual double now() const = 0;
  [[nodiscard]] virtual const ClusterState& cluster() const = 0;
  // Places and starts `task`; false when it does not fit now.
  virtual bool try_start(const QueuedTask& task, PlacementStrategy strategy) = 0;
  [[nodiscard]] virtual std::vector<RunningTask> running() const = 0;
  // Asks a running task to stop; the context requeues it once it has stopped.
  virtual void preempt(TaskId id) = 0;
};

struct PolicyOptions {
  PlacementStrategy placement = PlacementStrategy::best_fit;  // fifo, priority, fair
  bool preemption = false;                                     // priority
  std::map<std::string, double> weights;                       // fair; groups not listed weigh 1
  std::uint32_t backfill_window = 64;                          // priority, adaptive: tasks looked at behind a blocked head
};

class QueuePolicy {
 public:
  virtual ~QueuePolicy() = default;
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  virtual void enqueue(const QueuedTask& task) = 0;
  virtual bool erase(TaskId id) = 0;
  [[nodiscard]] virtual std::size_t size() const noexcept = 0;
  // The waiting tasks in the order this policy would consider them now.
  [[nodiscard]] virtual std::vector<QueuedTask> ordered() const = 0;
  // Starts what it can now.
  virtual void schedule(SchedulingContext& ctx) = 0;
  // A task this policy started has finished or stopped at time `now` (fair-share accounting).
  virtual void on_finished(const RunningTask& /*task*/, double /*now*/) {}
  // The earliest not_before still in the future among waiting tasks (+inf if none).
  [[nodiscard]] double next_wakeup(double now) const;

 protected:
  // Every waiting task, for next_wakeup.
  [[nodiscard]] virtual std::vector<const QueuedTask*> waiting() const = 0;
};

// "fifo" | "priority" | "fair" | "adaptive"; throws InvalidArgument listing them.
[[nodiscard]] std::unique_ptr<QueuePolicy> make_queue_policy(std::string_view name, const PolicyOptions& options = {});
[[nodiscard]] const std::vector<std::string>& policy_names();

}  // namespace apt::vgpu::scheduler
