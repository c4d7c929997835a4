// ClusterState: the scheduler's book of what is allocated on every GPU and
// every node of a node or a simulated cluster, in the units placement works
// with: GPU memory in bytes and GPU compute in thousandths of a GPU ("milli",
// as Kubernetes GPU-share schedulers and the Alibaba PAI trace count it), so
// shares add up exactly; per node CPU in milli-cores and host memory in bytes.
//
// The cluster model: nodes, each with CPU, host memory, a GPU model and its
// GPUs. The live GPUScheduler's book is one node (its CPU and host memory are
// not modelled: capacity 0 means "not counted"); the trace simulator's is
// `nodes x gpus_per_node` identical GPUs, or a node list (the Alibaba
// openb_node_list) with every node's CPU, memory and GPU model.
//
// A Demand is what one task needs: `gpu_count` GPUs, each with `memory` bytes
// and `compute_milli` thousandths of compute, plus CPU and host memory on the
// node and optionally the GPU models it accepts. A task asking for more than
// one GPU takes whole idle GPUs, all on one node unless it is marked
// multi-node (it then waits rather than being split). A task with no GPUs
// (gpu_count 0) takes CPU and host memory only; place_host() places it.
//
// Room held elsewhere: on a live node other holders (other processes, other
// users' vgpud slices) lease parts of the same GPUs. The live scheduler keeps
// its book a view of the node's ledger by recording, per GPU, what the ledger
// shows beyond the scheduler's own slices (set_held_elsewhere); placement then
// counts that room as taken. The simulator never sets it.
//
// The live GPUScheduler and the trace simulator share this type, the
// placement functions and the queue policies, so a replay exercises the same
// code as production. (The fill experiment, fill_experiment.hpp, keeps its own
// grouped copy of the same node model for speed: it scores each pod against
// every node state.)
//
// Thread safety: none; owners serialise access.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace apt::vgpu::scheduler {

inline constexpr std::uint32_t kWholeGpuMilli = 1000;

struct Demand {
  std::uint64_t memory = 0;          // GPU memory per GPU, bytes
  std::uint32_t compute_milli = 0;   // per GPU
  std::uint32_t gpu_count = 1;       // 0: a CPU-only task (place_host)
  std::uint64_t cpu_milli = 0;       // on the node; a multi-node task's is split by its GPUs per node
  std::uint64_t host_memory = 0;     // bytes, split the same way
  std::uint32_t gpu_models = 0;      // accepted GPU models (ClusterState::model_mask); 0: any
  bool multi_node = false;           // a gang that may span nodes (Philly's large jobs)

  friend bool operator==(const Demand&, const Demand&) = default;
};

// One node of a cluster model.
struct NodeShape {
  std::string name;
  std::uint64_t cpu_milli = 0;    // 0: not counted
  std::uint64_t host_memory = 0;  // bytes; 0: not counted
  std::uint32_t gpus = 0;
  std::uint64_t gpu_memory = 0;   // per GPU, bytes
  std::string model;              // GPU model ("" when not known)
};

struct NodeCapacityState {
  std::string name;
  std::uint32_t model = 0;  // index into ClusterState::models()
  std::uint64_t cpu_capacity = 0;          // 0: not counted
  std::uint64_t host_memory_capacity = 0;  // 0: not counted
  std::uint64_t cpu_used = 0;
  std::uint64_t host_memory_used = 0;
  std::uint32_t first_gpu = 0;
  std::uint32_t gpu_count = 0;

  [[nodiscard]] std::uint64_t cpu_free() const noexcept {
    if (cpu_capacity == 0) return UINT64_MAX;
    return cpu_capacity > cpu_used ? cpu_capacity - cpu_used : 0;
  }
  [[nodiscard]] std::uint64_t host_memory_free() const noexcept {
    if (host_memory_capacity == 0) return UINT64_MAX;
    return host_memory_capacity > host_memory_used ? host_memory_capacity - host_memory_used : 0;
  }
};

struct GpuCapacityState {
  std::uint32_t node = 0;
  std::uint64_t memory_capacity = 0;
  std::uint32_t compute_capacity = kWholeGpuMilli;
  std::uint64_t memory_used = 0;
  std::uint32_t compute_used = 0;
  std::uint32_t slices = 0;
  bool healthy = true;
  // Held by others on the same GPU (see above); not part of the *_used totals.
  std::uint64_t memory_elsewhere = 0;
  std::uint32_t compute_elsewhere = 0;
  std::uint32_t slices_elsewhere = 0;

  [[nodiscard]] std::uint64_t memory_free() const noexcept {
    const std::uint64_t taken = memory_used + memory_elsewhere;
    return memory_capacity > taken ? memory_capacity - taken : 0;
  }
  [[nodiscard]] std::uint32_t compute_free() const noexcept {
    const std::uint32_t taken = compute_used + compute_elsewhere;
    return compute_capacity > taken ? compute_capacity - taken : 0;
  }
  [[nodiscard]] bool idle() const noexcept { return slices == 0 && slices_elsewhere == 0; }
};

class ClusterState {
 public:
  // nodes x gpus_per_node GPUs of `memory_per_gpu` bytes; capacities are
  // multiplied by `oversubscription` (>= 1); at most `max_slices` slices at once.
  ClusterState(std::uint32_t nodes, std::uint32_t gpus_per_node, std::uint64_t memory_per_gpu,
               double oversubscription = 1.0, std::uint32_t max_slices = UINT32_MAX);
  // One node whose GPUs have the given memory sizes, with `cpu_milli` of CPU (0: not counted).
  explicit ClusterState(const std::vector<std::uint64_t>& gpu_memory, double oversubscription = 1.0,
                        std::uint32_t max_slices = UINT32_MAX, std::uint64_t cpu_milli = 0);
  // A node list (at most 32 GPU models). Throws InvalidArgument for an empty list or no GPUs at all.
  explicit ClusterState(const std::vector<NodeShape>& nodes, double oversubscription = 1.0,
                        std::uint32_t max_slices = UINT32_MAX);

  [[nodiscard]] const NodeCapacityState& node(std::uint32_t index) const { return node_states_[index]; }
  [[nodiscard]] const std::vector<NodeCapacityState>& nodes() const noexcept { return node_states_; }
  [[nodiscard]] const std::vector<std::string>& models() const noexcept { return models_; }
  // The Demand::gpu_models mask of a '|'-separated list of model names ("" -> 0: any). Names no
  // node has are left out; a list of only such names gives a mask no node matches.
  [[nodiscard]] std::uint32_t model_mask(std::string_view models) const;
  // Whether node `index` has the CPU, host memory and GPU model for `gpus_here` of the demand's GPUs
  // (all of them for a single-node demand; the CPU-only demand with 0).
  [[nodiscard]] bool node_admits(std::uint32_t index, const Demand& demand, std::uint32_t gpus_here) const;

  [[nodiscard]] std::uint32_t gpu_count() const noexcept { return static_cast<std::uint32_t>(gpus_.size()); }
  [[nodiscard]] std::uint32_t node_count() const noexcept { return static_cast<std::uint32_t>(node_states_.size()); }
  [[nodiscard]] const GpuCapacityState& gpu(std::uint32_t index) const { return gpus_[index]; }
  [[nodiscard]] const std::vector<GpuCapacityState>& gpus() const noexcept { return gpus_; }

  // Whether one slice of `memory` / `compute_milli` fits on GPU `index` now
  // (healthy, room in memory, compute and the slice cap).
  [[nodiscard]] bool fits(std::uint32_t index, std::uint64_t memory, std::uint32_t compute_milli) const;
  // Whether the demand could ever fit on an empty cluster of this shape.
  [[nodiscard]] bool could_ever_fit(const Demand& demand) const;

  // GPU demands: the GPUs placed, and the node's CPU and host memory with them.
  void allocate(const std::vector<std::uint32_t>& gpus, const Demand& demand);
  void release(const std::vector<std::uint32_t>& gpus, const Demand& demand);
  // CPU-only demands on one node.
  void allocate_host(std::uint32_t node, const Demand& demand);
  void release_host(std::uint32_t node, const Demand& demand);
  void set_healthy(std::uint32_t index, bool healthy);
  // Records what GPU `index` has leased outside this book (replaces the last record).
  void set_held_elsewhere(std::uint32_t index, std::uint64_t memory, std::uint32_t compute_milli, std::uint32_t slices);

  [[nodiscard]] std::uint32_t slices_in_use() const noexcept { return slices_; }
  [[nodiscard]] std::uint32_t max_slices() const noexcept { return max_slices_; }
  // The node's cap counts every slice, ours and those held elsewhere.
  [[nodiscard]] bool slices_available(std::uint32_t count = 1) const noexcept {
    return slices_ + slices_elsewhere_ + count <= max_slices_;
  }
  // Allocated compute over all GPUs, as a fraction of the cluster (0..1).
  [[nodiscard]] double allocation_rate() const noexcept;
  [[nodiscard]] std::uint64_t total_compute_milli() const noexcept { return total_compute_; }
  [[nodiscard]] std::uint64_t total_memory() const noexcept { return total_memory_; }
  [[nodiscard]] std::uint64_t compute_used_milli() const noexcept { return compute_used_; }
  [[nodiscard]] std::uint64_t memory_used() const noexcept { return memory_used_; }

 private:
  void charge_nodes(const std::vector<std::uint32_t>& gpus, const Demand& demand, bool add);
  void add_node(std::string name, std::uint32_t model, std::uint64_t cpu, std::uint64_t host_memory, std::uint32_t gpus);

  std::vector<GpuCapacityState> gpus_;
  std::vector<NodeCapacityState> node_states_;
  std::vector<std::string> models_;
  std::uint32_t max_slices_;
  std::uint32_t slices_ = 0;
  std::uint32_t slices_elsewhere_ = 0;
  std::uint64_t total_compute_ = 0;
  std::uint64_t total_memory_ = 0;
  std::uint64_t compute_used_ = 0;
  std::uint64_t memory_used_ = 0;
};

enum class PlacementStrategy { best_fit, spread, round_robin };

[[nodiscard]] std::string_view to_string(PlacementStrategy strategy) noexcept;
// "best_fit" | "spread" | "round_robin"; throws InvalidArgument listing them.
[[nodiscard]] PlacementStrategy parse_placement(std::string_view text);

// Chooses GPUs for `demand`, or returns an empty vector when it does not fit
// now. Never picks a GPU where the memory does not fit, nor one on a node
// without the demand's CPU, host memory or GPU model. For one slice:
// best_fit takes the GPU left with the least free compute (then memory),
// spread the one left with the most, round_robin the first that fits after
// `cursor` (which it advances). Multi-GPU demands take whole idle GPUs on one
// node: the node with the fewest idle GPUs that hold the gang for best_fit,
// the most for spread, the first from the cursor for round_robin; a
// multi-node demand that no node holds alone fills nodes in that order.
// `preferred`, when it fits, wins. A CPU-only demand (gpu_count 0) gets none.
[[nodiscard]] std::vector<std::uint32_t> place(const ClusterState& cluster, const Demand& demand,
                                               PlacementStrategy strategy, std::uint32_t& cursor,
                                               std::int64_t preferred = -1);

// Chooses a node for a CPU-only demand, or nullopt when none has the CPU and host memory now: the
// node that keeps the most CPU per idle GPU afterwards (a node without idle GPUs first), so CPU-only
// work strands as few GPUs as it can (the rule of the fill experiment's fgd_stranding).
[[nodiscard]] std::optional<std::uint32_t> place_host(const ClusterState& cluster, const Demand& demand);

}  // namespace apt::vgpu::scheduler
