// GPUScheduler: runs tasks on slices of a node's GPUs (the seed's scheduler).
//
//   GPUScheduler scheduler(/*num_physical_gpus=*/8, /*max_virtual_gpus=*/32, "fair");
//   TaskId id = scheduler.submit_task(train, GpuRequirements::with("16GB", 0.25));
//   std::any result = scheduler.wait_for_task(id);
//
// Tasks are callables (given their TaskContext, their VirtualGPU, or nothing)
// or commands run as child processes bound to their slice. Each running task
// holds a lease on a slice sized to its requirements on a GPU chosen by
// placement; never more than max_virtual_gpus slices at once. The queue
// policy (queue_policy.hpp) decides the order; per-GPU workers run tasks and
// idle workers steal from busy ones. Failures are retried with exponential
// backoff (retry_backoff x 2^(n-1)) up to max_retries, away from GPUs the
// backend reports unhealthy (fallback_gpu first).
//
// Preemption (priority policy, `preemption`): a callable is asked to stop
// cooperatively (TaskContext::stop_requested), a command gets SIGTERM and
// then SIGKILL after stop_grace; both are requeued and start over. Once a task
// has been asked to stop (preemption, cancel, timeout), that reason decides
// the attempt's outcome even if the task then returns normally.
//
// Destruction cancels queued tasks, asks running ones to stop and waits.
//
// Thread safety: every public method may be called from any thread.
#pragma once

#include <apt/vgpu/config/vgpu_config.hpp>
#include <apt/vgpu/runtime/node.hpp>
#include <apt/vgpu/runtime/virtual_gpu.hpp>
#include <apt/vgpu/scheduler/cluster_state.hpp>
#include <apt/vgpu/scheduler/gpu_requirements.hpp>
#include <apt/vgpu/scheduler/queue_policy.hpp>
#include <apt/vgpu/scheduler/task.hpp>

#include <any>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace apt::vgpu::scheduler {

struct SchedulerOptions {
  PlacementStrategy placement = PlacementStrategy::best_fit;
  bool preemption = false;
  std::map<std::string, double> weights;  // fair policy
  std::chrono::milliseconds retry_backoff{1000};
  std::uint32_t default_max_retries = 0;  // for tasks that do not set max_retries
  std::uint32_t workers = 0;  // 0: one per slice (max_virtual_gpus), at most 256
  std::chrono::milliseconds stop_grace{2000};
  std::uint32_t backfill_window = 64;
  double oversubscription = 1.0;
  // Finished tasks (succeeded, failed, cancelled) whose status and result are kept,
  // oldest forgotten first: a long-running scheduler does not grow without bound.
  // Wait for a task (or read its status) within this many later finishes.
  std::uint32_t finished_history = 10000;
  // The node to lease from; default: a new node from the environment
  // (VGPU_BACKEND, auto) whose simulated shape has num_physical_gpus GPUs.
  std::shared_ptr<runtime::Node> node;
};

struct SchedulerSnapshot {
  std::vector<TaskStatus> queued;   // in the policy's order
  std::vector<TaskStatus> running;
  std::vector<GpuCapacityState> gpus;
  std::uint32_t slices_in_use = 0;
  std::uint32_t max_slices = 0;
  std::string policy;
};

class GPUScheduler {
 public:
  using TaskFunction = std::function<std::any(TaskContext&)>;

  GPUScheduler(std::uint32_t num_physical_gpus, std::uint32_t max_virtual_gpus = 32,
               std::string_view scheduling_policy = "fifo", SchedulerOptions options = {});
  // Policy, placement, preemption, weights, retries and limits from a profile.
  [[nodiscard]] static std::unique_ptr<GPUScheduler> from_config(const config::VgpuConfig& config,
                                                                 std::shared_ptr<runtime::Node> node = nullptr);
  ~GPUScheduler();
  GPUScheduler(const GPUScheduler&) = delete;
  GPUScheduler& operator=(const GPUScheduler&) = delete;

  // Callables: f(TaskContext&), f(runtime::VirtualGPU&) or f(); the return
  // value (if any) is what wait_for_task() returns. Throws InvalidArgument
  // when the requirements can never be met on this node.
  template <class F>
  TaskId submit_task(F&& task, GpuRequirements requirements = {}) {
    return submit_function(wrap(std::forward<F>(task)), std::move(requirements));
  }
  TaskId submit_function(TaskFunction task, GpuRequirements requirements);
  // A command run as a child process bound to the task's slice; its result is
  // a CommandResult (exit code 0 and the output). A non-zero exit is a failure.
  TaskId submit_command(std::vector<std::string> argv, GpuRequirements requirements = {});

  // Blocks until the task ends; returns its result or rethrows its error
  // (TaskError for cancellation, timeout, a failed command).
  std::any wait_for_task(TaskId id);
  template <class T>
  T wait_for_task_as(TaskId id) {
    return std::any_cast<T>(wait_for_task(id));
  }
  // Waits for all; rethrows the first failure (in the order given) after all have ended.
  std::vector<std::any> wait_all(const std::vector<TaskId>& ids);
  // Cancels a queued or running task; false when it had already ended.
  bool cancel(TaskId id);

  [[nodiscard]] TaskStatus status(TaskId id) const;
  [[nodiscard]] SchedulerSnapshot snapshot() const;
  [[nodiscard]] runtime::Node& node() const noexcept;
  [[nodiscard]] std::uint32_t num_physical_gpus() const noexcept;

  struct Impl;

 private:
  template <class F>
  static TaskFunction wrap(F&& f) {
    using Fn = std::decay_t<F>;
    return [fn = Fn(std::forward<F>(f))](TaskContext& ctx) mutable -> std::any {
      if constexpr (std::is_invocable_v<Fn&, TaskContext&>) {
        return call(fn, ctx);
      } else if constexpr (std::is_invocable_v<Fn&, runtime::VirtualGPU&>) {
        return call(fn, ctx.vgpu());
      } else {
        static_assert(std::is_invocable_v<Fn&>, "a task takes TaskContext&, VirtualGPU& or nothing");
        return call(fn);
      }
    };
  }
  template <class Fn, class... Args>
  static std::any call(Fn& fn, Args&... args) {
    if constexpr (std::is_void_v<std::invoke_result_t<Fn&, Args&...>>) {
      fn(args...);
      return {};
    } else {
      return std::any(fn(args...));
    }
  }

  std::unique_ptr<Impl> impl_;
};

}  // namespace apt::vgpu::scheduler
