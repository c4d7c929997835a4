// The FGD-style fill experiment on a node-aware cluster model (issue 14).
//
// A cluster is a list of nodes, each with CPU (milli), host memory (MiB), a
// number of GPUs of one model, and per GPU the milli-GPU left. A pod asks for
// CPU, memory, a number of GPUs and milli-GPU per GPU (a share of one GPU when
// it asks for one GPU and less than 1000), and may name the GPU models it can
// use. A pod fits a node when the node has the CPU and memory left, a model the
// pod accepts, and enough GPUs with the milli-GPU left; it never spans nodes.
//
// The experiment (Weng et al., USENIX ATC'23, and its simulator): the pod list
// is shuffled per seed and topped up with pods drawn at random from it until
// the GPU requests reach `inflation` (130%) of the cluster's GPU capacity. Pods
// arrive one by one and never leave; each goes where the placement puts it, or
// is dropped when it fits nowhere. The result per placement is the share of the
// cluster's GPU capacity left unallocated when the arrived GPU requests reach
// 100% of it (mean and sd over seeds), the curve of allocation against arrived
// demand, and the pods dropped.
//
// Placements (scores are the reference simulator's; ties go to the node listed
// first, i.e. the smallest name in the Alibaba node lists):
//   random           a feasible node at random
//   best_fit         the node left with the least free CPU and GPU
//                    (0.5 x CPU / 128 cores + 0.5 x GPU / 8 GPUs), the best-fitting GPU for a share
//   fgd              fragmentation gradient descent: the node (and GPU) whose GPU fragmentation,
//                    measured against the workload's distribution of pod shapes, grows least
//   fgd_stranding    ours: fgd's rounded score, on a fragmentation that also counts host memory
//                    (a node out of memory for a pod shape strands its free GPUs, as fgd already
//                    counts one out of CPU), minus 100 per GPU the placement strands for want of CPU
//                    (free GPUs beyond what the node's CPU left serves at 9/10 of the workload's CPU
//                    per GPU); ties to best fit. CPU-only pods are placed by the same score
//                    (docs/scheduler.md)
//
// Thread safety: run_fill() is reentrant; it runs seeds on up to `threads` threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace apt::vgpu::scheduler::fill {

constexpr int kMilliPerGpu = 1000;
constexpr int kMaxGpusPerNode = 16;

struct NodeSpec {
  std::string name;
  std::int64_t cpu_milli = 0;
  std::int64_t memory_mib = 0;
  int gpus = 0;
  std::string model;
};

struct PodSpec {
  std::string name;
  std::int64_t cpu_milli = 0;
  std::int64_t memory_mib = 0;
  int gpus = 0;                     // 0: a CPU-only pod
  int gpu_milli = 0;                // per GPU; < 1000 only with gpus == 1 (a share)
  std::vector<std::string> models;  // GPU models it can use; empty: any
  [[nodiscard]] std::int64_t gpu_request() const noexcept { return static_cast<std::int64_t>(gpus) * gpu_milli; }
};

// The Alibaba CSVs: `sn,cpu_milli,memory_mib,gpu,model` and
// `name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,...` (gpu_spec: models joined by '|').
// Throws InvalidArgument naming the file, line, column and value.
[[nodiscard]] std::vector<NodeSpec> read_node_list(const std::filesystem::path& path);
[[nodiscard]] std::vector<PodSpec> read_pod_list(const std::filesystem::path& path);

enum class Placement { random, best_fit, fgd, fgd_stranding };
[[nodiscard]] std::string_view to_string(Placement placement) noexcept;
// Throws InvalidArgument listing the names ("all" is expanded by parse_placements).
[[nodiscard]] Placement parse_fill_placement(std::string_view name);
// "best_fit,fgd" or "all".
[[nodiscard]] std::vector<Placement> parse_placements(std::string_view list);

struct FillOptions {
  std::vector<Placement> placements{Placement::best_fit, Placement::fgd, Placement::fgd_stranding};
  std::uint32_t seeds = 10;
  std::uint64_t first_seed = 1;
  double inflation = 1.3;   // top the pods up until GPU requests reach this share of capacity
  double measure_at = 1.0;  // report allocation when arrived GPU requests reach this share
  std::uint32_t curve_points = 131;  // a point as arrived requests cross 0%, 1%, ..., 130%
  std::uint32_t threads = 2;
};

struct FillRun {
  std::uint64_t seed = 0;
  double unallocated_gpu_pct_at_100 = 0;  // of GPU capacity, when arrived requests reach measure_at
  std::uint64_t pods = 0;                 // arrived (after inflation)
  std::uint64_t dropped = 0;              // fitted nowhere
  std::uint64_t dropped_gpu_pods = 0;
  std::vector<std::pair<double, double>> curve;  // (arrived GPU requests %, allocated GPU %), as each 1% step is crossed
};

struct FillResult {
  Placement placement = Placement::best_fit;
  std::vector<FillRun> runs;  // by seed
  double mean_unallocated_pct = 0;
  double sd_unallocated_pct = 0;
  double seconds = 0;  // wall time of this placement's runs
};

// The GPU capacity of `nodes` in milli-GPU.
[[nodiscard]] std::int64_t gpu_capacity(const std::vector<NodeSpec>& nodes);

// Runs the experiment. Throws InvalidArgument for an empty cluster or pod list, or a
// pod that could never fit any node's shape is simply dropped when it arrives.
[[nodiscard]] std::vector<FillResult> run_fill(const std::vector<NodeSpec>& nodes, const std::vector<PodSpec>& pods,
                                               const FillOptions& options);

// One placement on a given arrival order, no inflation (tests and the CLI's single runs):
// returns the node index each pod went to (-1: dropped).
[[nodiscard]] std::vector<int> place_in_order(const std::vector<NodeSpec>& nodes, const std::vector<PodSpec>& arrivals,
                                              const std::vector<PodSpec>& workload, Placement placement,
                                              std::uint64_t seed = 1);

}  // namespace apt::vgpu::scheduler::fill
