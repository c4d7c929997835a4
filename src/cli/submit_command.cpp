#include "command.hpp"
#include "output.hpp"

#include <apt/vgpu/config/task_file.hpp>

#include <apt/vgpu/common/duration.hpp>
#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/common/suggest.hpp>
#include <apt/vgpu/runtime/daemon_client.hpp>
#include <apt/vgpu/scheduler/gpu_scheduler.hpp>

#include <fmt/format.h>
#include <iostream>
#include <thread>

namespace apt::vgpu::cli {
namespace {

using namespace std::chrono_literals;

struct TaskSpec {
  std::string name;
  std::vector<std::string> argv;
  scheduler::GpuRequirements requirements;
  bool isolation_set = false;  // else the profile's isolation applies
};

std::string substitute(std::string text, int index) {
  for (std::size_t pos = text.find("{i}"); pos != std::string::npos; pos = text.find("{i}", pos)) {
    text.replace(pos, 3, std::to_string(index));
  }
  return text;
}

// The task file's entries (validated by config::parse_task_file), expanded by count.
std::vector<TaskSpec> read_task_file(const std::string& path) {
  std::vector<TaskSpec> out;
  for (const config::TaskFileEntry& entry : config::load_task_file(path)) {
    TaskSpec base;
    base.name = entry.name;
    base.argv = entry.argv;
    auto& r = base.requirements;
    r.memory = entry.memory;
    r.compute = entry.compute;
    r.priority = entry.priority;
    r.user = entry.user;
    r.group = entry.group;
    r.max_retries = entry.max_retries;
    r.timeout = entry.timeout;
    r.gpu = entry.gpu;
    r.fallback_gpu = entry.fallback_gpu;
    if (entry.isolation) {
      r.isolation = *entry.isolation;
      base.isolation_set = true;
    }
    const int count = static_cast<int>(entry.count);
    for (int i = 0; i < count; ++i) {
      TaskSpec spec = base;
      for (auto& a : spec.argv) a = substitute(a, i);
      spec.name = base.name.empty() ? "" : (count > 1 ? substitute(base.name.find("{i}") == std::string::npos ? base.name + "-{i}" : base.name, i) : base.name);
      spec.requirements.name = spec.name;
      out.push_back(std::move(spec));
    }
  }
  return out;
}

std::string seconds_text(double s) { return s < 0 ? "-" : s < 100 ? fmt::format("{:.2f}s", s) : fmt::format("{:.0f}s", s); }

std::string queue_table(const scheduler::SchedulerSnapshot& s) {
  Table table({"TASK", "STATE", "GPU", "MEMORY", "COMPUTE", "PRIO", "USER", "ATTEMPTS"});
  auto add = [&table](const scheduler::TaskStatus& t) {
    table.add({t.name, std::string(scheduler::to_string(t.state)), t.gpu ? std::to_string(*t.gpu) : "-",
               t.requirements.memory ? format_size(t.requirements.memory) : "-",
               t.requirements.compute ? fmt::format("{:.2f}", *t.requirements.compute) : "-",
               std::to_string(t.requirements.priority), t.requirements.share_key().empty() ? "-" : t.requirements.share_key(),
               std::to_string(t.attempts.size())});
  };
  for (const auto& t : s.running) add(t);
  for (const auto& t : s.queued) add(t);
  Table gpus({"GPU", "SLICES", "MEMORY USED", "COMPUTE USED"});
  for (std::size_t g = 0; g < s.gpus.size(); ++g) {
    gpus.add({std::to_string(g), std::to_string(s.gpus[g].slices),
              fmt::format("{} / {}", format_size(s.gpus[g].memory_used), format_size(s.gpus[g].memory_capacity)),
              fmt::format("{:.2f}", s.gpus[g].compute_used / 1000.0)});
  }
  return fmt::format("policy {}: {} running, {} queued, {}/{} slices\n{}\n{}", s.policy, s.running.size(),
                     s.queued.size(), s.slices_in_use, s.max_slices, table.render(), gpus.render());
}

class SubmitCommand final : public Command {
 public:
  SubmitCommand(const GlobalOptions& globals, bool queue_view) : globals_(globals), queue_view_(queue_view) {}

  void attach(CLI::App& parent) override {
    if (queue_view_) {
      app_ = parent.add_subcommand("queue",
                                   "Like submit, but shows the live queue and placements (refreshed) until all tasks end");
    } else {
      app_ = parent.add_subcommand(
          "submit", "Run process tasks through the scheduler in this invocation: a YAML task file and/or one "
                    "command after -- (repeated with --count, '{i}' replaced by the index); prints a report; exit "
                    "code 0 when every task succeeded, 1 otherwise");
      app_->add_option("--watch", watch_seconds_, "Also print the queue and placements every SECONDS")
          ->check(in_range(0.05, 3600.0));
    }
    app_->add_option("--file", file_, "Task file (YAML: tasks: [{command, memory, compute, priority, user, ...}])")
        ->check(CLI::ExistingFile);
    app_->add_option("--policy", policy_, "fifo | priority | fair | adaptive (default: the profile's)");
    app_->add_option("--placement", placement_, "best_fit | spread | round_robin (default: the profile's)");
    app_->add_flag("--preemption,!--no-preemption", preemption_, "Let higher-priority tasks preempt (default: the profile's)");
    app_->add_option("--max-vgpus", max_vgpus_, "Slices at once (default: the profile's max_virtual_gpus)")
        ->check(in_range(1, 4096));
    app_->add_option("--memory", memory_, "Memory per task for the -- command, e.g. 8GB");
    app_->add_option("--compute", compute_, "Compute share per task for the -- command")->check(in_range(0.0, 1.0));
    app_->add_option("--priority", priority_, "Priority of the -- command's tasks");
    app_->add_option("--user", user_, "Fair-share user of the -- command's tasks");
    app_->add_option("--retries", retries_, "Retries after a failure");
    app_->add_option("--timeout", timeout_, "Stop a task after this long, e.g. 90s, 5m");
    app_->add_option("--count", count_, "Run the -- command this many times")->check(in_range(1, 100000));
    app_->add_option("command", command_, "The command after --");
  }

  int run() override {
    std::vector<TaskSpec> specs;
    if (!file_.empty()) specs = read_task_file(file_);
    if (!command_.empty()) {
      TaskSpec base;
      base.argv = command_;
      auto& r = base.requirements;
      if (!memory_.empty()) r.memory = parse_size(memory_, "--memory");
      if (compute_) r.compute = *compute_;
      r.priority = priority_;
      r.user = user_;
      r.max_retries = retries_;
      if (!timeout_.empty()) r.timeout = parse_duration(timeout_, "--timeout");
      for (int i = 0; i < count_; ++i) {
        TaskSpec s = base;
        for (auto& a : s.argv) a = substitute(a, i);
        specs.push_back(std::move(s));
      }
    }
    if (specs.empty()) throw InvalidArgument("submit: nothing to run; give --file TASKS.yaml or a command after --");

    auto config = globals_.load_config();
    if (!policy_.empty()) config.vgpu.scheduling = policy_;
    if (!placement_.empty()) config.vgpu.scheduler.placement = placement_;
    if (preemption_) config.vgpu.runtime.preemption = *preemption_;
    if (max_vgpus_) config.vgpu.max_virtual_gpus = *max_vgpus_;
    auto node = globals_.open_node(config);
    // With vgpud, each task's slice is a daemon slice held by this process: the node's one book
    // decides, and a task whose room another user holds waits for it.
    if (const auto socket = globals_.daemon_socket()) node->set_daemon(std::make_shared<const runtime::DaemonClient>(*socket));
    auto scheduler = scheduler::GPUScheduler::from_config(config.vgpu, node);
    const auto started = std::chrono::steady_clock::now();
    std::vector<scheduler::TaskId> ids;
    for (TaskSpec& spec : specs) {
      if (!spec.isolation_set) spec.requirements.isolation = config.vgpu.isolation;
      ids.push_back(scheduler->submit_command(spec.argv, spec.requirements));
    }

    const double interval = queue_view_ ? 0.5 : watch_seconds_;
    auto all_done = [&] {
      for (auto id : ids) {
        if (!scheduler::is_terminal(scheduler->status(id).state)) return false;
      }
      return true;
    };
    while (interval > 0 && !all_done()) {
      if (queue_view_) std::cout << "\x1b[H\x1b[2J";  // redraw in place
      std::cout << queue_table(scheduler->snapshot()) << std::flush;
      std::this_thread::sleep_for(std::chrono::duration<double>(interval));
    }
    int failures = 0;
    Table report({"TASK", "STATE", "GPU", "ATTEMPTS", "WAIT", "RUN", "RESULT"});
    std::string details;
    for (auto id : ids) {
      std::string result = "exit 0";
      try {
        (void)scheduler->wait_for_task(id);
      } catch (const scheduler::TaskError& e) {
        ++failures;
        result = e.reason() == scheduler::TaskError::Reason::command_failed ? fmt::format("exit {}", e.exit_code())
                 : e.reason() == scheduler::TaskError::Reason::timed_out    ? "timed out"
                 : e.reason() == scheduler::TaskError::Reason::cancelled    ? "cancelled"
                                                                            : "could not start";
        details += fmt::format("{}\n", e.what());
      }
      const scheduler::TaskStatus s = scheduler->status(id);
      const double wait = s.attempts.empty() ? -1
                                             : std::chrono::duration<double>(s.attempts.front().start - s.submitted).count();
      const double run = s.attempts.empty()
                             ? -1
                             : std::chrono::duration<double>(s.attempts.back().end - s.attempts.back().start).count();
      report.add({s.name, std::string(scheduler::to_string(s.state)),
                  s.attempts.empty() ? "-" : std::to_string(s.attempts.back().gpu), std::to_string(s.attempts.size()),
                  seconds_text(wait), seconds_text(run), result});
    }
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::cout << report.render()
              << fmt::format("{} task{} in {:.2f}s: {} succeeded, {} failed (policy {}, {} GPUs)\n", ids.size(),
                             ids.size() == 1 ? "" : "s", total, ids.size() - static_cast<std::size_t>(failures),
                             failures, config.vgpu.scheduling, scheduler->num_physical_gpus());
    if (!details.empty()) std::cerr << details;
    return failures == 0 ? 0 : 1;
  }

 private:
  const GlobalOptions& globals_;
  bool queue_view_;
  double watch_seconds_ = 0;
  std::string file_;
  std::string policy_;
  std::string placement_;
  std::optional<bool> preemption_;
  std::optional<std::uint32_t> max_vgpus_;
  std::string memory_;
  std::optional<double> compute_;
  int priority_ = 0;
  std::string user_;
  std::optional<std::uint32_t> retries_;
  std::string timeout_;
  int count_ = 1;
  std::vector<std::string> command_;
};

}  // namespace

std::unique_ptr<Command> make_submit_command(const GlobalOptions& globals) {
  return std::make_unique<SubmitCommand>(globals, false);
}
std::unique_ptr<Command> make_queue_command(const GlobalOptions& globals) {
  return std::make_unique<SubmitCommand>(globals, true);
}

}  // namespace apt::vgpu::cli
