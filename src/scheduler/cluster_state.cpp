#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/scheduler/cluster_state.hpp>

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <stdexcept>

namespace apt::vgpu::scheduler {

ClusterState::ClusterState(std::uint32_t nodes, std::uint32_t gpus_per_node, std::uint64_t memory_per_gpu,
                           double oversubscription, std::uint32_t max_slices)
    : nodes_(nodes), max_slices_(max_slices) {
  if (nodes == 0 || gpus_per_node == 0) throw InvalidArgument("cluster: needs at least one node with one GPU");
  if (!(oversubscription >= 1.0)) throw InvalidArgument("oversubscription: must be >= 1.0");
  for (std::uint32_t n = 0; n < nodes; ++n) {
    for (std::uint32_t g = 0; g < gpus_per_node; ++g) {
      GpuCapacityState s;
      s.node = n;
      s.memory_capacity = static_cast<std::uint64_t>(static_cast<long double>(memory_per_gpu) * oversubscription);
      s.compute_capacity = static_cast<std::uint32_t>(std::lround(kWholeGpuMilli * oversubscription));
      total_compute_ += s.compute_capacity;
      total_memory_ += s.memory_capacity;
      gpus_.push_back(s);
    }
  }
}

ClusterState::ClusterState(const std::vector<std::uint64_t>& gpu_memory, double oversubscription,
                           std::uint32_t max_slices)
    : nodes_(1), max_slices_(max_slices) {
  if (!(oversubscription >= 1.0)) throw InvalidArgument("oversubscription: must be >= 1.0");
  for (std::uint64_t memory : gpu_memory) {
    GpuCapacityState s;
    s.memory_capacity = static_cast<std::uint64_t>(static_cast<long double>(memory) * oversubscription);
    s.compute_capacity = static_cast<std::uint32_t>(std::lround(kWholeGpuMilli * oversubscription));
    total_compute_ += s.compute_capacity;
    total_memory_ += s.memory_capacity;
    gpus_.push_back(s);
  }
}

bool ClusterState::fits(std::uint32_t index, std::uint64_t memory, std::uint32_t compute_milli) const {
  const GpuCapacityState& g = gpus_[index];
  return g.healthy && memory <= g.memory_free() && compute_milli <= g.compute_free() && slices_available();
}

bool ClusterState::could_ever_fit(const Demand& d) const {
  if (d.gpu_count == 0 || d.gpu_count > gpus_.size() || d.gpu_count > max_slices_) return false;
  std::uint32_t candidates = 0;
  for (const GpuCapacityState& g : gpus_) {
    if (d.memory <= g.memory_capacity && d.compute_milli <= g.compute_capacity) ++candidates;
  }
  return candidates >= d.gpu_count;
}

void ClusterState::allocate(const std::vector<std::uint32_t>& gpus, const Demand& d) {
  for (std::uint32_t i : gpus) {
    GpuCapacityState& g = gpus_[i];
    g.memory_used += d.memory;
    g.compute_used += d.compute_milli;
    ++g.slices;
    ++slices_;
    compute_used_ += d.compute_milli;
    memory_used_ += d.memory;
  }
}

void ClusterState::set_held_elsewhere(std::uint32_t index, std::uint64_t memory, std::uint32_t compute_milli,
                                      std::uint32_t slices) {
  GpuCapacityState& g = gpus_.at(index);
  slices_elsewhere_ = slices_elsewhere_ - g.slices_elsewhere + slices;
  g.memory_elsewhere = memory;
  g.compute_elsewhere = compute_milli;
  g.slices_elsewhere = slices;
}

void ClusterState::release(const std::vector<std::uint32_t>& gpus, const Demand& d) {
  for (std::uint32_t i : gpus) {
    GpuCapacityState& g = gpus_[i];
    if (g.slices == 0 || g.memory_used < d.memory || g.compute_used < d.compute_milli) {
      throw std::logic_error(fmt::format("ClusterState::release: GPU {} does not hold this slice", i));
    }
    g.memory_used -= d.memory;
    g.compute_used -= d.compute_milli;
    --g.slices;
    --slices_;
    compute_used_ -= d.compute_milli;
    memory_used_ -= d.memory;
  }
}

void ClusterState::set_healthy(std::uint32_t index, bool healthy) { gpus_[index].healthy = healthy; }

double ClusterState::allocation_rate() const noexcept {
  return total_compute_ == 0 ? 0.0 : static_cast<double>(compute_used_) / static_cast<double>(total_compute_);
}

std::string_view to_string(PlacementStrategy strategy) noexcept {
  switch (strategy) {
    case PlacementStrategy::best_fit: return "best_fit";
    case PlacementStrategy::spread: return "spread";
    case PlacementStrategy::round_robin: return "round_robin";
  }
  return "best_fit";
}

PlacementStrategy parse_placement(std::string_view text) {
  if (text == "best_fit") return PlacementStrategy::best_fit;
  if (text == "spread") return PlacementStrategy::spread;
  if (text == "round_robin") return PlacementStrategy::round_robin;
  throw InvalidArgument(fmt::format("placement: '{}' is not a placement; use best_fit, spread or round_robin", text));
}

namespace {

std::vector<std::uint32_t> place_slice(const ClusterState& c, const Demand& d, PlacementStrategy strategy,
                                       std::uint32_t& cursor, std::int64_t preferred) {
  const std::uint32_t n = c.gpu_count();
  if (preferred >= 0 && preferred < n && c.fits(static_cast<std::uint32_t>(preferred), d.memory, d.compute_milli)) {
    return {static_cast<std::uint32_t>(preferred)};
  }
  if (!c.slices_available()) return {};
  if (strategy == PlacementStrategy::round_robin) {
    for (std::uint32_t k = 0; k < n; ++k) {
      const std::uint32_t i = (cursor + k) % n;
      if (c.fits(i, d.memory, d.compute_milli)) {
        cursor = (i + 1) % n;
        return {i};
      }
    }
    return {};
  }
  std::int64_t best = -1;
  std::uint32_t best_compute = 0;
  std::uint64_t best_memory = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    if (!c.fits(i, d.memory, d.compute_milli)) continue;
    const GpuCapacityState& g = c.gpu(i);
    const std::uint32_t left_compute = g.compute_free() - d.compute_milli;
    const std::uint64_t left_memory = g.memory_free() - d.memory;
    bool better = best < 0;
    if (!better && strategy == PlacementStrategy::best_fit) {
      better = left_compute < best_compute || (left_compute == best_compute && left_memory < best_memory);
    } else if (!better) {
      better = left_compute > best_compute || (left_compute == best_compute && left_memory > best_memory);
    }
    if (better) {
      best = i;
      best_compute = left_compute;
      best_memory = left_memory;
    }
  }
  if (best < 0) return {};
  return {static_cast<std::uint32_t>(best)};
}

std::vector<std::uint32_t> place_gang(const ClusterState& c, const Demand& d, PlacementStrategy strategy,
                                      std::uint32_t& cursor) {
  if (!c.slices_available(d.gpu_count)) return {};
  // Idle, healthy GPUs grouped by node.
  std::vector<std::vector<std::uint32_t>> idle(c.node_count());
  std::uint32_t total = 0;
  for (std::uint32_t i = 0; i < c.gpu_count(); ++i) {
    const GpuCapacityState& g = c.gpu(i);
    if (g.healthy && g.idle() && d.memory <= g.memory_capacity) {
      idle[g.node].push_back(i);
      ++total;
    }
  }
  if (total < d.gpu_count) return {};
  std::vector<std::uint32_t> order(c.node_count());
  for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  if (strategy == PlacementStrategy::round_robin) {
    // The cursor is a GPU index, for slices and gangs alike (it once served as a node index here,
    // so a gang started at whatever node had the last slice's GPU number). Start at the node of the
    // cursor's GPU, and take nodes that can hold the whole gang first: a gang is split across nodes
    // only when no single node has room.
    const std::uint32_t start = c.gpu(cursor % c.gpu_count()).node;
    std::rotate(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(start % order.size()), order.end());
    std::stable_partition(order.begin(), order.end(), [&](std::uint32_t node) { return idle[node].size() >= d.gpu_count; });
  } else {
    // Nodes that can hold the whole gang first, then by how full they are.
    std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
      const bool whole_a = idle[a].size() >= d.gpu_count;
      const bool whole_b = idle[b].size() >= d.gpu_count;
      if (whole_a != whole_b) return whole_a;
      return strategy == PlacementStrategy::best_fit ? idle[a].size() < idle[b].size() : idle[a].size() > idle[b].size();
    });
  }
  std::vector<std::uint32_t> chosen;
  for (std::uint32_t node : order) {
    for (std::uint32_t gpu : idle[node]) {
      if (chosen.size() == d.gpu_count) break;
      chosen.push_back(gpu);
    }
    if (chosen.size() == d.gpu_count) {
      cursor = (chosen.back() + 1) % c.gpu_count();  // a GPU index: the one after the gang's last
      break;
    }
  }
  return chosen;
}

}  // namespace

std::vector<std::uint32_t> place(const ClusterState& cluster, const Demand& demand, PlacementStrategy strategy,
                                 std::uint32_t& cursor, std::int64_t preferred) {
  if (demand.gpu_count == 0) return {};
  if (demand.gpu_count == 1) return place_slice(cluster, demand, strategy, cursor, preferred);
  return place_gang(cluster, demand, strategy, cursor);
}

}  // namespace apt::vgpu::scheduler
