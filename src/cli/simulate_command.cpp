#include "command.hpp"
#include "output.hpp"

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/common/suggest.hpp>
#include <apt/vgpu/scheduler/fill_experiment.hpp>
#include <apt/vgpu/scheduler/simulator.hpp>

#include <fmt/format.h>
#include <filesystem>
#include <cstdlib>
#include <sys/wait.h>
#include <unistd.h>
#include <fstream>
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
    app_->add_option("--placement", placement_,
                     "Placement for fifo/priority/fair: best_fit, spread, round_robin; with --experiment fill a "
                     "comma-separated list of random, best_fit, fgd, fgd_stranding, or all (default "
                     "best_fit,fgd,fgd_stranding)");
    app_->add_option("--cluster", cluster_,
                     "Node list (Alibaba openb_node_list CSV: sn,cpu_milli,memory_mib,gpu,model) instead of --nodes x "
                     "--gpus-per-node: jobs then meet each node's CPU, memory and GPU model, and CPU-only pods take part")
        ->check(CLI::ExistingFile);
    app_->add_option("--experiment", experiment_,
                     "fill: the FGD paper's experiment on --cluster: pods shuffled per seed, topped up to 130% of GPU "
                     "capacity, never leaving, dropped when they fit nowhere; reports GPUs unallocated at 100% arrived")
        ->check(CLI::IsMember({"fill"}));
    app_->add_option("--seeds", seeds_, "Seeds for --experiment fill (default 10)")->check(in_range(1, 1000));
    app_->add_option("--csv", csv_, "With --experiment fill: write the allocation curves (per placement and seed) here");
    app_->add_option("--plot", plot_,
                     "With --experiment fill: draw the curves (the FGD paper's figure) into this SVG or PNG with "
                     "scripts/plot-fill (matplotlib)");
    app_->add_option("--arrival-scale", arrival_scale_,
                     "Multiply submit times by this (e.g. 0.05 = arrivals 20x denser, to raise the load; default 1)")
        ->check(in_range(1e-6, 1e6));
    app_->add_flag("--preemption", preemption_, "Let the priority policy preempt lower-priority jobs");
    app_->add_flag("--no-baseline", no_baseline_, "Skip the whole-GPU-per-task baseline runs");
    app_->add_flag("--json", json_, "Print JSON");
  }

  int run() override {
    if (!experiment_.empty()) return run_fill();
    if (placement_.find(',') != std::string::npos || !(placement_ == "best_fit" || placement_ == "spread" ||
                                                       placement_ == "round_robin")) {
      throw InvalidArgument(fmt::format("--placement '{}': the replay takes one of best_fit, spread, round_robin "
                                        "(lists and fgd are for --experiment fill)", placement_));
    }
    const std::uint64_t memory = parse_size(gpu_memory_, "--gpu-memory");
    auto loaded = scheduler::load_trace_jobs(trace_, memory);
    std::vector<std::string> policies = policies_;
    if (policies.empty() || (policies.size() == 1 && policies[0] == "all")) policies = scheduler::policy_names();
    for (const std::string& p : policies) (void)scheduler::make_queue_policy(p);  // validate names up front
    scheduler::SimulationOptions options;
    options.nodes = nodes_;
    options.gpus_per_node = gpus_per_node_;
    options.memory_per_gpu = memory;
    std::uint64_t cluster_gpus = static_cast<std::uint64_t>(nodes_) * gpus_per_node_;
    if (!cluster_.empty()) {  // a node list: CPU, host memory and GPU models count
      cluster_gpus = 0;
      for (const auto& n : scheduler::fill::read_node_list(cluster_)) {
        options.cluster.push_back(scheduler::NodeShape{n.name, static_cast<std::uint64_t>(n.cpu_milli),
                                                       static_cast<std::uint64_t>(n.memory_mib) << 20,
                                                       static_cast<std::uint32_t>(n.gpus), memory, n.model});
        cluster_gpus += static_cast<std::uint64_t>(n.gpus);
      }
    }
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
      j["gpus"] = cluster_gpus;
      if (!cluster_.empty()) j["cluster"] = cluster_;
      j["arrival_scale"] = arrival_scale_;
      for (const auto& r : reports) {
        j["runs"].push_back({{"policy", r.policy}, {"whole_gpu", r.whole_gpu}, {"gpu_jobs", r.jobs},
                             {"completed", r.completed}, {"rejected", r.rejected}, {"withdrawn", r.withdrawn},
                             {"cpu_only_jobs", r.cpu_only_jobs}, {"cpu_only_skipped", r.cpu_only_skipped},
                             {"cpu_only_avg_wait", r.cpu_only_avg_wait}, {"preemptions", r.preemptions}, {"avg_jct", r.avg_jct},
                             {"p99_jct", r.p99_jct}, {"avg_queueing_delay", r.avg_queueing_delay},
                             {"p99_queueing_delay", r.p99_queueing_delay}, {"makespan", r.makespan},
                             {"mean_allocation", r.mean_allocation}, {"mean_fragmentation", r.mean_fragmentation},
                             {"jain_fairness", r.jain_fairness}, {"wall_seconds", r.wall_seconds},
                             {"allocation_over_time", r.allocation_over_time}});
      }
      std::cout << j.dump(2) << "\n";
      return 0;
    }
    const auto& first = reports.front();
    const std::string cluster_text =
        cluster_.empty() ? fmt::format("cluster {} x {} GPUs of {} (CPU not modelled: {} CPU-only jobs skipped)", nodes_,
                                       gpus_per_node_, format_size(memory), first.cpu_only_skipped)
                         : fmt::format("cluster {}: {} nodes, {} GPUs of {}, with CPU, memory and GPU models ({} CPU-only "
                                       "jobs replayed beside the GPU jobs)",
                                       cluster_, options.cluster.size(), cluster_gpus, format_size(memory),
                                       first.cpu_only_jobs);
    std::cout << fmt::format("{} ({} format): {} GPU jobs, {} rows skipped; {}; arrival scale {}\n\n", trace_,
                             loaded.format, first.jobs, loaded.skipped, cluster_text, arrival_scale_);
    Table table({"POLICY", "ALLOCATION", "AVG JCT", "P99 JCT", "AVG WAIT", "P99 WAIT", "MAKESPAN", "ALLOC", "FRAG",
                 "JAIN", "PREEMPT", "REJECTED", "WITHDRAWN", "WALL"});
    for (const auto& r : reports) {
      table.add({r.policy, r.whole_gpu ? "whole GPU" : "shared", duration_text(r.avg_jct), duration_text(r.p99_jct),
                 duration_text(r.avg_queueing_delay), duration_text(r.p99_queueing_delay), duration_text(r.makespan),
                 fmt::format("{:.1f}%", r.mean_allocation * 100), fmt::format("{:.1f}%", r.mean_fragmentation * 100),
                 fmt::format("{:.3f}", r.jain_fairness), std::to_string(r.preemptions), std::to_string(r.rejected),
                 std::to_string(r.withdrawn), fmt::format("{:.2f}s", r.wall_seconds)});
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
  int run_fill() {
    namespace fill = scheduler::fill;
    if (cluster_.empty()) throw InvalidArgument("--experiment fill needs --cluster NODES.csv");
    const auto nodes = fill::read_node_list(cluster_);
    const auto pods = fill::read_pod_list(trace_);
    fill::FillOptions options;
    if (placement_set_by_user()) options.placements = fill::parse_placements(placement_);
    options.seeds = seeds_;
    const auto results = fill::run_fill(nodes, pods, options);
    // The plot is drawn from the CSV: a temporary one when --csv was not given.
    std::string csv = csv_;
    std::filesystem::path temporary;
    if (!plot_.empty() && csv.empty()) {
      temporary = std::filesystem::temp_directory_path() / fmt::format("vgpu-fill-{}.csv", ::getpid());
      csv = temporary.string();
    }
    if (!csv.empty()) {
      std::ofstream out(csv);
      if (!out) throw InvalidArgument(fmt::format("--csv {}: cannot be written", csv));
      out << "placement,seed,arrived_gpu_pct,allocated_gpu_pct\n";
      for (const auto& r : results) {
        for (const auto& run : r.runs) {
          for (const auto& [arrived, allocated] : run.curve) {
            out << fill::to_string(r.placement) << ',' << run.seed << ',' << fmt::format("{:.2f},{:.4f}", arrived, allocated) << '\n';
          }
        }
      }
    }
    if (!plot_.empty()) {
      const std::string script = plot_fill_script();
      const std::string command = fmt::format("/usr/bin/python3 '{}' '{}' '{}'", script, csv, plot_);
      const int status = std::system(command.c_str());
      if (!temporary.empty()) std::filesystem::remove(temporary);
      if (status != 0) {
        throw ProcessError(fmt::format("--plot {}: {} failed (exit {}); it needs matplotlib (apt-get install "
                                       "python3-matplotlib)", plot_, script, WIFEXITED(status) ? WEXITSTATUS(status) : -1));
      }
    }
    if (json_) {
      nlohmann::json j;
      j["cluster"] = cluster_;
      j["trace"] = trace_;
      j["nodes"] = nodes.size();
      j["gpus"] = fill::gpu_capacity(nodes) / fill::kMilliPerGpu;
      j["pods"] = pods.size();
      j["seeds"] = seeds_;
      for (const auto& r : results) {
        nlohmann::json runs = nlohmann::json::array();
        for (const auto& run : r.runs) {
          runs.push_back({{"seed", run.seed}, {"unallocated_gpu_pct_at_100", run.unallocated_gpu_pct_at_100},
                          {"pods", run.pods}, {"dropped", run.dropped}, {"dropped_gpu_pods", run.dropped_gpu_pods}});
        }
        j["placements"].push_back({{"placement", std::string(fill::to_string(r.placement))},
                                   {"unallocated_gpu_pct_at_100", {{"mean", r.mean_unallocated_pct}, {"sd", r.sd_unallocated_pct}}},
                                   {"seconds", r.seconds}, {"runs", runs}});
      }
      std::cout << j.dump(2) << "\n";
      return 0;
    }
    std::cout << fmt::format("{}: {} nodes, {} GPUs; {}: {} pods, topped up to 130% of GPU capacity; {} seeds\n\n",
                             cluster_, nodes.size(), fill::gpu_capacity(nodes) / fill::kMilliPerGpu, trace_, pods.size(),
                             seeds_);
    Table table({"PLACEMENT", "UNALLOCATED GPU AT 100%", "SD", "PODS", "DROPPED", "WALL"});
    for (const auto& r : results) {
      double pods_mean = 0;
      double dropped_mean = 0;
      for (const auto& run : r.runs) {
        pods_mean += static_cast<double>(run.pods) / static_cast<double>(r.runs.size());
        dropped_mean += static_cast<double>(run.dropped) / static_cast<double>(r.runs.size());
      }
      table.add({std::string(fill::to_string(r.placement)), fmt::format("{:.2f}%", r.mean_unallocated_pct),
                 fmt::format("{:.2f}", r.sd_unallocated_pct), fmt::format("{:.0f}", pods_mean),
                 fmt::format("{:.0f}", dropped_mean), fmt::format("{:.1f}s", r.seconds)});
    }
    std::cout << table.render();
    return 0;
  }

  bool placement_set_by_user() const { return app_->count("--placement") > 0; }

  // scripts/plot-fill: $VGPU_PLOT_FILL, installed (<prefix>/share/apt-vgpu), or in the source tree
  // this binary was built from.
  static std::string plot_fill_script() {
    namespace fs = std::filesystem;
    std::vector<fs::path> candidates;
    if (const char* env = std::getenv("VGPU_PLOT_FILL"); env != nullptr && *env != '\0') candidates.emplace_back(env);
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
      candidates.push_back(exe.parent_path().parent_path() / "share" / "apt-vgpu" / "plot-fill");
    }
    candidates.emplace_back(VGPU_SOURCE_SCRIPTS "/plot-fill");
    for (const fs::path& p : candidates) {
      if (fs::is_regular_file(p, ec)) return p.string();
    }
    throw ProcessError("--plot: scripts/plot-fill was not found (set VGPU_PLOT_FILL to its path)");
  }

  std::string cluster_;
  std::string experiment_;
  std::uint32_t seeds_ = 10;
  std::string csv_;
  std::string plot_;
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
