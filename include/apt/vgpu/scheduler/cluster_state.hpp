// ClusterState: the scheduler's book of what is allocated on every GPU of a
// node or a simulated cluster, in the units placement works with: memory in
// bytes and compute in thousandths of a GPU ("milli", as Kubernetes GPU-share
// schedulers and the Alibaba PAI trace count it), so shares add up exactly.
//
// A Demand is what one task needs: `gpu_count` GPUs, each with `memory` bytes
// and `compute_milli` thousandths of compute. A task asking for more than one
// GPU takes whole GPUs (compute_milli 1000 each).
//
// Room held elsewhere: on a live node other holders (other processes, other
// users' vgpud slices) lease parts of the same GPUs. The live scheduler keeps
// its book a view of the node's ledger by recording, per GPU, what the ledger
// shows beyond the scheduler's own slices (set_held_elsewhere); placement then
// counts that room as taken. The simulator never sets it.
//
// The live GPUScheduler and the trace simulator share this type, the
// placement functions and the queue policies, so a replay exercises the same
// code as production.
//
// Thread safety: none; owners serialise access.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace apt::vgpu::scheduler {

inline constexpr std::uint32_t kWholeGpuMilli = 1000;

struct Demand {
  std::uint64_t memory = 0;
  std::uint32_t compute_milli = 0;
  std::uint32_t gpu_count = 1;

  friend bool operator==(const Demand&, const Demand&) = default;
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
  // One node whose GPUs have the given memory sizes.
  explicit ClusterState(const std::vector<std::uint64_t>& gpu_memory, double oversubscription = 1.0,
                        std::uint32_t max_slices = UINT32_MAX);

  [[nodiscard]] std::uint32_t gpu_count() const noexcept { return static_cast<std::uint32_t>(gpus_.size()); }
  [[nodiscard]] std::uint32_t node_count() const noexcept { return nodes_; }
  [[nodiscard]] const GpuCapacityState& gpu(std::uint32_t index) const { return gpus_[index]; }
  [[nodiscard]] const std::vector<GpuCapacityState>& gpus() const noexcept { return gpus_; }

  // Whether one slice of `memory` / `compute_milli` fits on GPU `index` now
  // (healthy, room in memory, compute and the slice cap).
  [[nodiscard]] bool fits(std::uint32_t index, std::uint64_t memory, std::uint32_t compute_milli) const;
  // Whether the demand could ever fit on an empty cluster of this shape.
  [[nodiscard]] bool could_ever_fit(const Demand& demand) const;

  void allocate(const std::vector<std::uint32_t>& gpus, const Demand& demand);
  void release(const std::vector<std::uint32_t>& gpus, const Demand& demand);
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
  std::vector<GpuCapacityState> gpus_;
  std::uint32_t nodes_ = 1;
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
// now. Never picks a GPU where the memory does not fit. For one slice:
// best_fit takes the GPU left with the least free compute (then memory),
// spread the one left with the most, round_robin the first that fits after
// `cursor` (which it advances). Multi-GPU demands take whole idle GPUs,
// filling the fullest nodes first for best_fit and the emptiest for spread.
// `preferred`, when it fits, wins.
[[nodiscard]] std::vector<std::uint32_t> place(const ClusterState& cluster, const Demand& demand,
                                               PlacementStrategy strategy, std::uint32_t& cursor,
                                               std::int64_t preferred = -1);

}  // namespace apt::vgpu::scheduler
