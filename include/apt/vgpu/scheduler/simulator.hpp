// A discrete-event simulator that replays jobs through the same queue
// policies and placement code as the live GPUScheduler, on a simulated
// cluster of nodes x GPUs, with no real time passing.
//
// Events are job arrivals, completions and withdrawals; after each batch of
// events at one instant the policy schedules. Jobs arrive in submission order
// whatever the trace file's row order. Preempted jobs are suspended and
// resume with their remaining work. A job with a patience (a pod the trace
// shows pending until deleted) is withdrawn when it runs out unless started,
// and ends then if it is running.
//
// The cluster is `nodes x gpus_per_node` identical GPUs, or a node list
// (`cluster`, e.g. the Alibaba openb_node_list) with each node's CPU, host
// memory and GPU model, which jobs' CPU, memory and model constraints then
// meet. CPU-only jobs take part only on a node list (elsewhere CPU is not
// modelled and they are counted as skipped): they are started in submission
// order, any that fits (the way Kubernetes' default scheduler serves them
// beside the GPU scheduler), on the node they strand the fewest GPUs on
// (place_host), and are reported apart from the GPU jobs. Statistics are taken at completion and on a regular
// sampling grid (allocation rate, fragmentation).
//
// Definitions:
//   JCT            finish - submit
//   queueing delay first start - submit
//   makespan       last finish - first submit
//   allocation     allocated compute / total compute, averaged over samples
//                  evenly spaced across the submission window (first to last arrival)
//   fragmentation  at a sample, the share of total compute that is free but on
//                  GPUs where no queued single-GPU job fits; averaged the same way
//   Jain's index   over groups, of each group's mean (duration / JCT)
//
// Thread safety: simulate() is reentrant.
#pragma once

#include <apt/vgpu/scheduler/queue_policy.hpp>
#include <apt/vgpu/scheduler/trace_jobs.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace apt::vgpu::scheduler {

struct SimulationOptions {
  std::uint32_t nodes = 125;
  std::uint32_t gpus_per_node = 8;
  // A node list instead of nodes x gpus_per_node; a node's gpu_memory 0 means memory_per_gpu.
  std::vector<NodeShape> cluster;
  std::uint64_t memory_per_gpu = 80'000'000'000ULL;
  std::string policy = "fifo";
  PolicyOptions policy_options;
  // Baseline: every job takes whole GPUs (fractional requests rounded up to one GPU).
  bool whole_gpu = false;
  // Multiplies every submit time: below 1 compresses arrivals to raise the load
  // (the Alibaba slice spans 150 days at ~2% load on 1,000 GPUs).
  double arrival_scale = 1.0;
  std::uint32_t samples = 200;
};

struct JobTimes {
  std::uint64_t id = 0;
  double submit = 0;
  double start = -1;   // first start; -1 if it never ran
  double finish = -1;
};

struct SimulationReport {
  std::string policy;
  bool whole_gpu = false;
  std::uint64_t jobs = 0;       // GPU jobs (the statistics below are theirs)
  std::uint64_t completed = 0;
  std::uint64_t rejected = 0;  // could never fit on this cluster
  std::uint64_t withdrawn = 0; // ran out of patience before they started
  std::uint64_t cpu_only_jobs = 0;      // replayed (node lists only)
  std::uint64_t cpu_only_skipped = 0;   // not replayed: the cluster does not model CPU
  double cpu_only_avg_wait = 0;
  std::uint64_t preemptions = 0;
  double avg_jct = 0;
  double p99_jct = 0;
  double avg_queueing_delay = 0;
  double p99_queueing_delay = 0;
  double makespan = 0;
  double mean_allocation = 0;
  double mean_fragmentation = 0;
  double jain_fairness = 0;
  std::vector<std::pair<double, double>> allocation_over_time;  // (time, allocation)
  std::vector<JobTimes> job_times;  // per job, in submission order
  double wall_seconds = 0;
};

[[nodiscard]] SimulationReport simulate(const std::vector<SimJob>& jobs, const SimulationOptions& options);

}  // namespace apt::vgpu::scheduler
