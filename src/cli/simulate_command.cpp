#include "command.hpp"
#include "output.hpp"

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/common/suggest.hpp>
#include <apt/vgpu/scheduler/simulator.hpp>

#include <fmt/format.h>
#include <iostream>

namespace apt::vgpu::cli {
namespace {

std::string duration_text(double seconds) {
  if (seconds < 120) return fmt::format("{:.0f}s", seconds);
  if (seconds < 7200) return fmt::format("{:.1f}m", seconds / 60);
  if (seconds < 172800) return fmt::format("{:.1f}h", seconds / 3600);
  return fmt::format("{:.1f}d", seconds / 86400);
}

class SimulateCommand final : public Command {
 public:
  explicit SimulateCommand(const GlobalOptions& globals) : globals_(globals) {}

  void attach(CLI::App& parent) override {
    app_ = parent.add_subcommand(
        "simulate", "Replay a cluster trace (Alibaba PAI pod list, Philly job list, or our CSV) through the "
                    "scheduler's policies on a simulated cluster; reports JCT, queueing delay, makespan, allocation, "
                    "fragmentation and Jain's fairness, with whole-GPU allocation as the baseline");
    app_->add_option("--trace", trace_, "Trace file")->required()->check(CLI::ExistingFile);
    app_->add_option("--nodes", nodes_, "Simulated nodes (default 125)")->check(in_range(1, 100000));
    app_->add_option("--gpus-per-node", gpus_per_node_, "GPUs per node (default 8)")->check(in_range(1, 64));
    app_->add_option("--gpu-memory", gpu_memory_, "Memory per GPU (default 80GB)");
    app_->add_option("--policy", policies_,
                     "Policies to compare, comma-separated: fifo, priority, fair, adaptive, or all (default all)")
        ->delimiter(',');
    app_->add_option("--placement", placement_, "Placement for fifo/priority/fair: best_fit, spread, round_robin")
        ->check(CLI::IsMember({"best_fit", "spread", "round_robin"}));
    app_->add_option("--arrival-scale", arrival_scale_,
                     "Multiply submit times by this (e.g. 0.05 = arrivals 20x denser, to raise the load; default 1)")
        ->check(in_range(1e-6, 1e6));
    app_->add_flag("--preemption", preemption_, "Let the priority policy preempt lower-priority jobs");
    app_->add_flag("--no-baseline", no_baseline_, "Skip the whole-GPU-per-task baseline runs");
    app_->add_flag("--json", json_, "Print JSON");
  }

  int run() override {
    const std::uint64_t memory = parse_size(gpu_memory_, "--gpu-memory");
    auto loaded = scheduler::load_trace_jobs(trace_, memory);
    std::vector<std::string> policies = policies_;
    if (policies.empty() || (policies.size() == 1 && policies[0] == "all")) policies = scheduler::policy_names();
    for (const std::string& p : policies) (void)scheduler::make_queue_policy(p);  // validate names up front
    scheduler::SimulationOptions options;
    options.nodes = nodes_;
    options.gpus_per_node = gpus_per_node_;
    options.memory_per_gpu = memory;
    options.policy_options.placement = scheduler::parse_placement(placement_);
    options.policy_options.preemption = preemption_;
    options.arrival_scale = arrival_scale_;
    std::vector<scheduler::SimulationReport> reports;
    for (bool whole : {false, true}) {
      if (whole && no_baseline_) continue;
      for (const std::string& p : policies) {
        options.policy = p;
        options.whole_gpu = whole;
        reports.push_back(scheduler::simulate(loaded.jobs, options));
      }
    }
    if (json_) {
      nlohmann::json j;
      j["trace"] = trace_;
      j["format"] = loaded.format;
      j["jobs"] = loaded.jobs.size();
      j["skipped_rows"] = loaded.skipped;
      j["gpus"] = nodes_ * gpus_per_node_;
      j["arrival_scale"] = arrival_scale_;
      for (const auto& r : reports) {
        j["runs"].push_back({{"policy", r.policy}, {"whole_gpu", r.whole_gpu}, {"completed", r.completed},
                             {"rejected", r.rejected}, {"preemptions", r.preemptions}, {"avg_jct", r.avg_jct},
                             {"p99_jct", r.p99_jct}, {"avg_queueing_delay", r.avg_queueing_delay},
                             {"p99_queueing_delay", r.p99_queueing_delay}, {"makespan", r.makespan},
                             {"mean_allocation", r.mean_allocation}, {"mean_fragmentation", r.mean_fragmentation},
                             {"jain_fairness", r.jain_fairness}, {"wall_seconds", r.wall_seconds},
                             {"allocation_over_time", r.allocation_over_time}});
      }
      std::cout << j.dump(2) << "\n";
      return 0;
    }
    std::cout << fmt::format("{} ({} format): {} GPU jobs, {} rows skipped (not GPU jobs or never ran); "
                             "cluster {} x {} GPUs of {}; arrival scale {}\n\n",
                             trace_, loaded.format, loaded.jobs.size(), loaded.skipped, nodes_, gpus_per_node_,
                             format_size(memory), arrival_scale_);
    Table table({"POLICY", "ALLOCATION", "AVG JCT", "P99 JCT", "AVG WAIT", "P99 WAIT", "MAKESPAN", "ALLOC", "FRAG",
                 "JAIN", "PREEMPT", "REJECTED", "WALL"});
    for (const auto& r : reports) {
      table.add({r.policy, r.whole_gpu ? "whole GPU" : "shared", duration_text(r.avg_jct), duration_text(r.p99_jct),
                 duration_text(r.avg_queueing_delay), duration_text(r.p99_queueing_delay), duration_text(r.makespan),
                 fmt::format("{:.1f}%", r.mean_allocation * 100), fmt::format("{:.1f}%", r.mean_fragmentation * 100),
                 fmt::format("{:.3f}", r.jain_fairness), std::to_string(r.preemptions), std::to_string(r.rejected),
                 fmt::format("{:.2f}s", r.wall_seconds)});
    }
    std::cout << table.render();
    if (!no_baseline_) {
      std::cout << "\nSharing vs whole GPU (same policy):\n";
      const std::size_t n = policies.size();
      for (std::size_t i = 0; i < n; ++i) {
        const auto& shared = reports[i];
        const auto& whole = reports[i + n];
        std::cout << fmt::format("  {:<9} avg wait {:+.1f}%, avg JCT {:+.1f}%\n", shared.policy,
                                 change(shared.avg_queueing_delay, whole.avg_queueing_delay),
                                 change(shared.avg_jct, whole.avg_jct));
      }
    }
    std::cout << "\nEach policy vs fifo (shared):\n";
    for (const auto& r : reports) {
      if (r.whole_gpu || r.policy == "fifo" || reports.front().policy != "fifo") continue;
      std::cout << fmt::format("  {:<9} avg wait {:+.1f}%, avg JCT {:+.1f}%, p99 JCT {:+.1f}%\n", r.policy,
                               change(r.avg_queueing_delay, reports.front().avg_queueing_delay),
                               change(r.avg_jct, reports.front().avg_jct), change(r.p99_jct, reports.front().p99_jct));
    }
    return 0;
  }

 private:
  static double change(double value, double baseline) {
    return baseline == 0 ? 0.0 : (value - baseline) / baseline * 100.0;
  }

  const GlobalOptions& globals_;
  std::string trace_;
  std::uint32_t nodes_ = 125;
  std::uint32_t gpus_per_node_ = 8;
  std::string gpu_memory_ = "80GB";
  std::vector<std::string> policies_;
  std::string placement_ = "best_fit";
  double arrival_scale_ = 1.0;
  bool preemption_ = false;
  bool no_baseline_ = false;
  bool json_ = false;
};

}  // namespace

std::unique_ptr<Command> make_simulate_command(const GlobalOptions& globals) {
  return std::make_unique<SimulateCommand>(globals);
}

}  // namespace apt::vgpu::cli
