#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/scheduler/cluster_state.hpp>

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <stdexcept>

namespace apt::vgpu::scheduler {

namespace {

GpuCapacityState gpu_state(std::uint32_t node, std::uint64_t memory, double oversubscription) {
  GpuCapacityState s;
  s.node = node;
  s.memory_capacity = static_cast<std::uint64_t>(static_cast<long double>(memory) * oversubscription);
  s.compute_capacity = static_cast<std::uint32_t>(std::lround(kWholeGpuMilli * oversubscription));
  return s;
}

// A node's share of a demand's CPU (or host memory) for `gpus_here` of its GPUs: all of it for a
// single-node demand, in proportion (rounded up) for a multi-node one.
std::uint64_t share_of(std::uint64_t amount, const Demand& d, std::uint32_t gpus_here) {
  if (d.gpu_count <= 1 || !d.multi_node || gpus_here >= d.gpu_count) return amount;
  return (amount * gpus_here + d.gpu_count - 1) / d.gpu_count;
}

}  // namespace

void ClusterState::add_node(std::string name, std::uint32_t model, std::uint64_t cpu, std::uint64_t host_memory,
                            std::uint32_t gpus) {
  NodeCapacityState n;
  n.name = std::move(name);
  n.model = model;
  n.cpu_capacity = cpu;
  n.host_memory_capacity = host_memory;
  n.first_gpu = static_cast<std::uint32_t>(gpus_.size() - gpus);
  n.gpu_count = gpus;
  node_states_.push_back(std::move(n));
}

ClusterState::ClusterState(std::uint32_t nodes, std::uint32_t gpus_per_node, std::uint64_t memory_per_gpu,
                           double oversubscription, std::uint32_t max_slices)
    : max_slices_(max_slices) {
  if (nodes == 0 || gpus_per_node == 0) throw InvalidArgument("cluster: needs at least one node with one GPU");
  if (!(oversubscription >= 1.0)) throw InvalidArgument("oversubscription: must be >= 1.0");
  models_.emplace_back();
  for (std::uint32_t n = 0; n < nodes; ++n) {
    for (std::uint32_t g = 0; g < gpus_per_node; ++g) {
      gpus_.push_back(gpu_state(n, memory_per_gpu, oversubscription));
      total_compute_ += gpus_.back().compute_capacity;
      total_memory_ += gpus_.back().memory_capacity;
    }
    add_node(fmt::format("node-{}", n), 0, 0, 0, gpus_per_node);
  }
}

ClusterState::ClusterState(const std::vector<std::uint64_t>& gpu_memory, double oversubscription,
                           std::uint32_t max_slices, std::uint64_t cpu_milli)
    : max_slices_(max_slices) {
  if (!(oversubscription >= 1.0)) throw InvalidArgument("oversubscription: must be >= 1.0");
  models_.emplace_back();
  for (std::uint64_t memory : gpu_memory) {
    gpus_.push_back(gpu_state(0, memory, oversubscription));
    total_compute_ += gpus_.back().compute_capacity;
    total_memory_ += gpus_.back().memory_capacity;
  }
  add_node("node-0", 0, cpu_milli, 0, static_cast<std::uint32_t>(gpu_memory.size()));
}

ClusterState::ClusterState(const std::vector<NodeShape>& nodes, double oversubscription, std::uint32_t max_slices)
    : max_slices_(max_slices) {
  if (nodes.empty()) throw InvalidArgument("cluster: the node list is empty");
  if (!(oversubscription >= 1.0)) throw InvalidArgument("oversubscription: must be >= 1.0");
  for (const NodeShape& shape : nodes) {
    auto it = std::find(models_.begin(), models_.end(), shape.model);
    if (it == models_.end()) {
      if (models_.size() == 32) {
        throw InvalidArgument(fmt::format("cluster: node {} brings a 33rd GPU model '{}'; at most 32 are modelled",
                                          shape.name, shape.model));
      }
      it = models_.insert(models_.end(), shape.model);
    }
    const auto node = static_cast<std::uint32_t>(node_states_.size());
    for (std::uint32_t g = 0; g < shape.gpus; ++g) {
      gpus_.push_back(gpu_state(node, shape.gpu_memory, oversubscription));
      total_compute_ += gpus_.back().compute_capacity;
      total_memory_ += gpus_.back().memory_capacity;
    }
    add_node(shape.name, static_cast<std::uint32_t>(it - models_.begin()), shape.cpu_milli, shape.host_memory, shape.gpus);
  }
  if (gpus_.empty()) throw InvalidArgument("cluster: the node list has no GPUs");
}

std::uint32_t ClusterState::model_mask(std::string_view models) const {
  if (models.empty()) return 0;
  std::uint32_t mask = 0;
  while (true) {
    const std::size_t bar = models.find('|');
    const std::string_view name = models.substr(0, bar);
    for (std::size_t i = 0; i < models_.size(); ++i) {
      if (models_[i] == name) mask |= 1U << i;
    }
    if (bar == std::string_view::npos) break;
    models.remove_prefix(bar + 1);
  }
  // Only models no node has: a mask no node matches (models are at most 32, bit 31 is then unused
  // or names a model the demand did accept).
  return mask != 0 ? mask : (models_.size() < 32 ? 1U << 31 : mask);
}

bool ClusterState::node_admits(std::uint32_t index, const Demand& d, std::uint32_t gpus_here) const {
  const NodeCapacityState& n = node_states_[index];
  if (d.gpu_count > 0 && d.gpu_models != 0 && ((d.gpu_models >> n.model) & 1U) == 0) return false;
  return share_of(d.cpu_milli, d, gpus_here) <= n.cpu_free() &&
         share_of(d.host_memory, d, gpus_here) <= n.host_memory_free();
}

bool ClusterState::fits(std::uint32_t index, std::uint64_t memory, std::uint32_t compute_milli) const {
  const GpuCapacityState& g = gpus_[index];
  return g.healthy && memory <= g.memory_free() && compute_milli <= g.compute_free() && slices_available();
}

bool ClusterState::could_ever_fit(const Demand& d) const {
  auto room = [](std::uint64_t capacity) { return capacity == 0 ? UINT64_MAX : capacity; };
  if (d.gpu_count == 0) {
    return std::any_of(node_states_.begin(), node_states_.end(), [&](const NodeCapacityState& n) {
      return d.cpu_milli <= room(n.cpu_capacity) && d.host_memory <= room(n.host_memory_capacity);
    });
  }
  if (d.gpu_count > gpus_.size() || d.gpu_count > max_slices_) return false;
  std::uint32_t candidates = 0;  // multi-node: GPUs on nodes that could take their share
  for (const NodeCapacityState& n : node_states_) {
    if (d.gpu_models != 0 && ((d.gpu_models >> n.model) & 1U) == 0) continue;
    std::uint32_t here = 0;
    for (std::uint32_t g = n.first_gpu; g < n.first_gpu + n.gpu_count; ++g) {
      if (d.memory <= gpus_[g].memory_capacity && d.compute_milli <= gpus_[g].compute_capacity) ++here;
    }
    if (!d.multi_node || d.gpu_count == 1) {
      if (here >= d.gpu_count && d.cpu_milli <= room(n.cpu_capacity) && d.host_memory <= room(n.host_memory_capacity)) {
        return true;
      }
      continue;
    }
    // The most of the gang this node could hold with its CPU and memory.
    while (here > 0 && (share_of(d.cpu_milli, d, here) > room(n.cpu_capacity) ||
                        share_of(d.host_memory, d, here) > room(n.host_memory_capacity))) {
      --here;
    }
    candidates += here;
  }
  return d.multi_node && d.gpu_count > 1 && candidates >= d.gpu_count;
}

void ClusterState::charge_nodes(const std::vector<std::uint32_t>& gpus, const Demand& d, bool add) {
  // GPUs per node, in the order the allocation lists them.
  std::vector<std::pair<std::uint32_t, std::uint32_t>> per_node;
  for (std::uint32_t i : gpus) {
    const std::uint32_t node = gpus_[i].node;
    auto it = std::find_if(per_node.begin(), per_node.end(), [&](const auto& p) { return p.first == node; });
    if (it == per_node.end()) {
      per_node.emplace_back(node, 1);
    } else {
      ++it->second;
    }
  }
  for (const auto& [node, count] : per_node) {
    NodeCapacityState& n = node_states_[node];
    const std::uint64_t cpu = share_of(d.cpu_milli, d, count);
    const std::uint64_t memory = share_of(d.host_memory, d, count);
    if (add) {
      n.cpu_used += cpu;
      n.host_memory_used += memory;
    } else {
      if (n.cpu_used < cpu || n.host_memory_used < memory) {
        throw std::logic_error(fmt::format("ClusterState::release: node {} does not hold this task's CPU/memory", n.name));
      }
      n.cpu_used -= cpu;
      n.host_memory_used -= memory;
    }
  }
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
  charge_nodes(gpus, d, true);
}

void ClusterState::allocate_host(std::uint32_t node, const Demand& d) {
  NodeCapacityState& n = node_states_.at(node);
  n.cpu_used += d.cpu_milli;
  n.host_memory_used += d.host_memory;
}

void ClusterState::release_host(std::uint32_t node, const Demand& d) {
  NodeCapacityState& n = node_states_.at(node);
  if (n.cpu_used < d.cpu_milli || n.host_memory_used < d.host_memory) {
    throw std::logic_error(fmt::format("ClusterState::release_host: node {} does not hold this task", n.name));
  }
  n.cpu_used -= d.cpu_milli;
  n.host_memory_used -= d.host_memory;
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
  charge_nodes(gpus, d, false);
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

bool slice_fits(const ClusterState& c, std::uint32_t i, const Demand& d) {
  return c.fits(i, d.memory, d.compute_milli) && c.node_admits(c.gpu(i).node, d, 1);
}

std::vector<std::uint32_t> place_slice(const ClusterState& c, const Demand& d, PlacementStrategy strategy,
                                       std::uint32_t& cursor, std::int64_t preferred) {
  const std::uint32_t n = c.gpu_count();
  if (preferred >= 0 && preferred < n && slice_fits(c, static_cast<std::uint32_t>(preferred), d)) {
    return {static_cast<std::uint32_t>(preferred)};
  }
  if (!c.slices_available()) return {};
  if (strategy == PlacementStrategy::round_robin) {
    for (std::uint32_t k = 0; k < n; ++k) {
      const std::uint32_t i = (cursor + k) % n;
      if (slice_fits(c, i, d)) {
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
    if (!slice_fits(c, i, d)) continue;
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
  // Idle, healthy GPUs grouped by node, on nodes with the GPU model.
  std::vector<std::vector<std::uint32_t>> idle(c.node_count());
  for (std::uint32_t i = 0; i < c.gpu_count(); ++i) {
    const GpuCapacityState& g = c.gpu(i);
    if (g.healthy && g.idle() && d.memory <= g.memory_capacity && d.compute_milli <= g.compute_capacity) {
      idle[g.node].push_back(i);
    }
  }
  // How much of the gang each node can hold, with its CPU and host memory.
  std::vector<std::uint32_t> holds(c.node_count(), 0);
  for (std::uint32_t node = 0; node < c.node_count(); ++node) {
    auto here = static_cast<std::uint32_t>(std::min<std::size_t>(idle[node].size(), d.gpu_count));
    if (!d.multi_node) {
      holds[node] = here == d.gpu_count && c.node_admits(node, d, here) ? here : 0;
      continue;
    }
    while (here > 0 && !c.node_admits(node, d, here)) --here;
    holds[node] = here;
  }
  std::vector<std::uint32_t> order;
  for (std::uint32_t node = 0; node < c.node_count(); ++node) {
    if (holds[node] > 0) order.push_back(node);
  }
  if (order.empty()) return {};
  if (strategy == PlacementStrategy::round_robin) {
    // The cursor is a GPU index, for slices and gangs alike: start at the node of the cursor's GPU,
    // and take nodes that can hold the whole gang first.
    const std::uint32_t start = c.gpu(cursor % c.gpu_count()).node;
    std::stable_partition(order.begin(), order.end(), [&](std::uint32_t node) { return node >= start; });
    std::stable_partition(order.begin(), order.end(), [&](std::uint32_t node) { return holds[node] == d.gpu_count; });
  } else {
    // Nodes that can hold the whole gang first, then by how many idle GPUs they have (fewest for
    // best fit: the gang fills a node's hole; most for spread).
    std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
      const bool whole_a = holds[a] == d.gpu_count;
      const bool whole_b = holds[b] == d.gpu_count;
      if (whole_a != whole_b) return whole_a;
      return strategy == PlacementStrategy::best_fit ? idle[a].size() < idle[b].size() : idle[a].size() > idle[b].size();
    });
  }
  std::vector<std::uint32_t> chosen;
  for (std::uint32_t node : order) {
    std::uint32_t taken_here = 0;
    for (std::uint32_t gpu : idle[node]) {
      if (chosen.size() == d.gpu_count || taken_here == holds[node]) break;
      chosen.push_back(gpu);
      ++taken_here;
    }
    if (chosen.size() == d.gpu_count) {
      cursor = (chosen.back() + 1) % c.gpu_count();  // a GPU index: the one after the gang's last
      return chosen;
    }
  }
  return {};  // a multi-node gang the idle GPUs cannot hold yet: it waits
}

}  // namespace

std::vector<std::uint32_t> place(const ClusterState& cluster, const Demand& demand, PlacementStrategy strategy,
                                 std::uint32_t& cursor, std::int64_t preferred) {
  if (demand.gpu_count == 0) return {};
  if (demand.gpu_count == 1) return place_slice(cluster, demand, strategy, cursor, preferred);
  return place_gang(cluster, demand, strategy, cursor);
}

std::optional<std::uint32_t> place_host(const ClusterState& cluster, const Demand& demand) {
  std::optional<std::uint32_t> best;
  double best_score = -1;
  for (std::uint32_t node = 0; node < cluster.node_count(); ++node) {
    if (!cluster.node_admits(node, demand, 0)) continue;
    const NodeCapacityState& n = cluster.node(node);
    std::uint32_t idle_gpus = 0;
    for (std::uint32_t g = n.first_gpu; g < n.first_gpu + n.gpu_count; ++g) idle_gpus += cluster.gpu(g).idle() ? 1U : 0U;
    const double cpu_after = n.cpu_capacity == 0 ? 1e18 : static_cast<double>(n.cpu_free() - demand.cpu_milli);
    const double score = idle_gpus == 0 ? 1e300 : cpu_after / idle_gpus;
    if (!best || score > best_score) {
      best = node;
      best_score = score;
    }
  }
  return best;
}

}  // namespace apt::vgpu::scheduler
