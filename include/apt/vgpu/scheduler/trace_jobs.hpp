// Jobs for the trace-replay simulator, read from public cluster traces or a
// CSV of our own.
//
//   alibaba  Alibaba PAI 2023 pod list (openb_pod_list_*.csv): a 1-GPU pod
//            asks for gpu_milli/1000 of a GPU, a multi-GPU pod for whole GPUs,
//            a CPU-only pod (num_gpu 0) for CPU and memory only; every pod
//            carries cpu_milli, memory_mib and gpu_spec (accepted models);
//            submit = creation_time, duration = deletion_time -
//            scheduled_time. A pod that never ran in the trace (no
//            scheduled_time: it was pending until deleted) waits at most
//            until its deletion_time (patience) and, if started, runs until
//            then. group = qos, priority LS 3 > Guaranteed 2 > Burstable 1 > BE 0.
//   philly   Philly-derived job list (timestamp, duration, num_gpus, gpu_time,
//            cluster): whole GPUs; a job of more than 8 GPUs (a Philly
//            server's) is multi-node; group = virtual cluster.
//   csv      ours: header "submit,duration,gpus,gpu_share,memory,priority,group"
//            (memory as bytes or a size like 16GB; empty: share x GPU memory).
//
// GPU memory: traces give none, so a fractional job asks for its share of the
// GPU's memory (gpu_milli/1000 x memory_per_gpu).
//
// Thread safety: pure functions.
#pragma once

#include <apt/vgpu/scheduler/cluster_state.hpp>

#include <cmath>
#include <cstdint>
#include <istream>
#include <string>
#include <string_view>
#include <vector>

namespace apt::vgpu::scheduler {

struct SimJob {
  std::uint64_t id = 0;
  double submit = 0.0;    // seconds from the first submission
  double duration = 0.0;  // seconds of work
  Demand demand;
  int priority = 0;
  std::string group;
  std::string gpu_models{};        // accepted GPU models, '|'-separated; empty: any
  double patience = INFINITY;      // withdrawn this long after submission unless started; ends then if running
};

struct TraceLoadResult {
  std::vector<SimJob> jobs;  // sorted by submit time
  std::uint64_t skipped = 0; // rows that ask for nothing (Philly jobs of 0 GPUs)
  std::string format;        // "alibaba", "philly" or "csv"
};

// Detects the format from the header. Throws InvalidArgument naming file and
// line for malformed input.
[[nodiscard]] TraceLoadResult load_trace_jobs(const std::string& path, std::uint64_t memory_per_gpu);
// The same from a stream; `path` names it in errors.
[[nodiscard]] TraceLoadResult parse_trace_jobs(std::istream& in, const std::string& path, std::uint64_t memory_per_gpu);

}  // namespace apt::vgpu::scheduler
