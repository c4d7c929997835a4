// Tasks as the GPUScheduler runs them: their state, attempts, the context a
// callable receives, the result of a command, and the error a failed task
// rethrows from wait_for_task().
//
// Thread safety: value types, except TaskContext, which belongs to the
// running task (stop_requested() may be polled from the task's own threads).
#pragma once

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/scheduler/gpu_requirements.hpp>
#include <apt/vgpu/scheduler/queue_policy.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace apt::vgpu::runtime {
class VirtualGPU;
}

namespace apt::vgpu::scheduler {

enum class TaskState { queued, running, succeeded, failed, cancelled };
[[nodiscard]] std::string_view to_string(TaskState state) noexcept;
[[nodiscard]] inline bool is_terminal(TaskState s) noexcept {
  return s == TaskState::succeeded || s == TaskState::failed || s == TaskState::cancelled;
}

struct TaskAttempt {
  std::uint32_t number = 0;  // 1-based
  std::uint32_t gpu = 0;
  std::chrono::system_clock::time_point start;
  std::chrono::system_clock::time_point end;
  std::string outcome;  // "running", "succeeded", "failed: ...", "timed out", "preempted", "cancelled"
};

struct TaskStatus {
  TaskId id = 0;
  std::string name;
  TaskState state = TaskState::queued;
  std::optional<std::uint32_t> gpu;  // while running
  GpuRequirements requirements;
  std::vector<TaskAttempt> attempts;
  std::string error;  // why it failed or was cancelled
  std::chrono::system_clock::time_point submitted;
};

// The result of a command task that exited 0.
struct CommandResult {
  int exit_code = 0;
  std::string output;  // stdout and stderr, merged
};

// What wait_for_task() throws for a task that did not succeed, unless the
// task's own callable threw (then that exception is rethrown as it was).
class TaskError : public Error {
 public:
  enum class Reason { cancelled, timed_out, command_failed, could_not_start };
  TaskError(Reason reason, const std::string& message, int exit_code = 0, std::string output = {})
      : Error(ErrorKind::process, message), reason_(reason), exit_code_(exit_code), output_(std::move(output)) {}
  [[nodiscard]] Reason reason() const noexcept { return reason_; }
  [[nodiscard]] int exit_code() const noexcept { return exit_code_; }
  [[nodiscard]] const std::string& output() const noexcept { return output_; }

 private:
  Reason reason_;
  int exit_code_;
  std::string output_;
};

// Handed to a callable task: its virtual GPU and a cooperative stop signal
// (set on preemption, cancellation and timeout; the task should return soon).
class TaskContext {
 public:
  TaskContext(TaskId id, std::uint32_t attempt, runtime::VirtualGPU& vgpu, const std::atomic<bool>& stop)
      : id_(id), attempt_(attempt), vgpu_(vgpu), stop_(stop) {}
  [[nodiscard]] TaskId id() const noexcept { return id_; }
  [[nodiscard]] std::uint32_t attempt() const noexcept { return attempt_; }
  [[nodiscard]] runtime::VirtualGPU& vgpu() const noexcept { return vgpu_; }
  [[nodiscard]] bool stop_requested() const noexcept { return stop_.load(std::memory_order_relaxed); }

 private:
  TaskId id_;
  std::uint32_t attempt_;
  runtime::VirtualGPU& vgpu_;
  const std::atomic<bool>& stop_;
};

}  // namespace apt::vgpu::scheduler
