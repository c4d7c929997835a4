// The fill experiment: see fill_experiment.hpp.
//
// Speed comes from two observations. Nodes in the same state (GPU model, CPU and
// memory left, the multiset of milli-GPU left) score the same for every pod, so
// the nodes are kept in groups by state and each pod is scored once per group
// (the group's first node wins a tie). And a node's fragmentation against the
// workload's pod shapes only needs, per (milli-GPU, GPU count, models) class of
// shapes, the weight of the shapes whose CPU fits: shapes are grouped that way
// and sorted by CPU, so a node's fragmentation costs a few binary searches.
#include <apt/vgpu/scheduler/fill_experiment.hpp>

#include <apt/vgpu/common/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>

namespace apt::vgpu::scheduler::fill {

namespace {

// ---- reading the CSVs ----------------------------------------------------------------

std::vector<std::string> split(const std::string& line, char separator) {
  std::vector<std::string> out;
  std::string cell;
  std::istringstream in(line);
  while (std::getline(in, cell, separator)) out.push_back(cell);
  if (!line.empty() && line.back() == separator) out.emplace_back();
  return out;
}

std::int64_t number(const std::string& text, const std::filesystem::path& path, std::size_t line, const char* column) {
  std::size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || v < 0) {
    throw InvalidArgument(fmt::format("{}:{}: column {} is '{}', not a count >= 0", path.string(), line, column, text));
  }
  return v;
}

template <class Row>
std::vector<Row> read_csv(const std::filesystem::path& path, const std::vector<std::string>& header,
                          Row (*parse)(const std::vector<std::string>&, const std::filesystem::path&, std::size_t)) {
  std::ifstream in(path);
  if (!in) throw InvalidArgument(fmt::format("{}: cannot be read", path.string()));
  std::string line;
  if (!std::getline(in, line)) throw InvalidArgument(fmt::format("{}: empty, expected a header line", path.string()));
  if (!line.empty() && line.back() == '\r') line.pop_back();
  const std::vector<std::string> got = split(line, ',');
  for (std::size_t i = 0; i < header.size(); ++i) {
    if (i >= got.size() || got[i] != header[i]) {
      throw InvalidArgument(fmt::format("{}:1: expected column {} to be '{}' (header {}), found '{}'", path.string(), i + 1,
                                        header[i], fmt::join(header, ","), i < got.size() ? got[i] : ""));
    }
  }
  std::vector<Row> rows;
  std::size_t number_of_line = 1;
  while (std::getline(in, line)) {
    ++number_of_line;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const std::vector<std::string> cells = split(line, ',');
    if (cells.size() < header.size()) {
      throw InvalidArgument(fmt::format("{}:{}: {} columns, expected at least {}", path.string(), number_of_line,
                                        cells.size(), header.size()));
    }
    rows.push_back(parse(cells, path, number_of_line));
  }
  if (rows.empty()) throw InvalidArgument(fmt::format("{}: no rows after the header", path.string()));
  return rows;
}

NodeSpec parse_node(const std::vector<std::string>& c, const std::filesystem::path& path, std::size_t line) {
  NodeSpec n;
  n.name = c[0];
  n.cpu_milli = number(c[1], path, line, "cpu_milli");
  n.memory_mib = number(c[2], path, line, "memory_mib");
  const std::int64_t gpus = number(c[3], path, line, "gpu");
  if (gpus > kMaxGpusPerNode) {
    throw InvalidArgument(fmt::format("{}:{}: {} GPUs on one node; at most {} are modelled", path.string(), line, gpus,
                                      kMaxGpusPerNode));
  }
  n.gpus = static_cast<int>(gpus);
  n.model = c[4];
  return n;
}

PodSpec parse_pod(const std::vector<std::string>& c, const std::filesystem::path& path, std::size_t line) {
  PodSpec p;
  p.name = c[0];
  p.cpu_milli = number(c[1], path, line, "cpu_milli");
  p.memory_mib = number(c[2], path, line, "memory_mib");
  const std::int64_t gpus = number(c[3], path, line, "num_gpu");
  const std::int64_t milli = number(c[4], path, line, "gpu_milli");
  if (gpus > kMaxGpusPerNode || milli > kMilliPerGpu || (gpus > 1 && milli != kMilliPerGpu && milli != 0)) {
    throw InvalidArgument(fmt::format("{}:{}: num_gpu {} with gpu_milli {}: a pod asks for whole GPUs (1000 each, up to "
                                      "{}) or a share of one GPU (num_gpu 1, gpu_milli 1..1000)",
                                      path.string(), line, gpus, milli, kMaxGpusPerNode));
  }
  p.gpus = static_cast<int>(gpus);
  p.gpu_milli = gpus == 0 ? 0 : (milli == 0 ? kMilliPerGpu : static_cast<int>(milli));
  if (!c[5].empty()) p.models = split(c[5], '|');
  return p;
}

// ---- the cluster's state ----------------------------------------------------------------

using GpuLeft = std::array<std::int16_t, kMaxGpusPerNode>;

struct Node {
  std::int64_t cpu_left = 0;
  std::int64_t memory_left = 0;
  int gpus = 0;
  int model = 0;
  GpuLeft left{};  // by GPU index
};

// What decides a node's score for every pod: equal keys, equal scores.
struct StateKey {
  std::int64_t cpu_left;
  std::int64_t memory_left;
  int model;
  int gpus;
  GpuLeft sorted_left;  // ascending
  friend bool operator==(const StateKey&, const StateKey&) = default;
};
struct StateKeyHash {
  std::size_t operator()(const StateKey& k) const noexcept {
    std::uint64_t h = 1469598103934665603ULL;
    auto mix = [&h](std::uint64_t v) { h = (h ^ v) * 1099511628211ULL; };
    mix(static_cast<std::uint64_t>(k.cpu_left));
    mix(static_cast<std::uint64_t>(k.memory_left));
    mix(static_cast<std::uint64_t>(k.model));
    for (int i = 0; i < k.gpus; ++i) mix(static_cast<std::uint64_t>(k.sorted_left[static_cast<std::size_t>(i)]));
    return static_cast<std::size_t>(h);
  }
};

StateKey key_of(const Node& n) {
  StateKey k{n.cpu_left, n.memory_left, n.model, n.gpus, n.left};
  std::sort(k.sorted_left.begin(), k.sorted_left.begin() + n.gpus);
  for (std::size_t i = static_cast<std::size_t>(n.gpus); i < k.sorted_left.size(); ++i) k.sorted_left[i] = 0;
  return k;
}

// A pod with its GPU models as a bit set (0: any).
struct Pod {
  std::int64_t cpu = 0;
  std::int64_t memory = 0;
  int gpus = 0;
  int milli = 0;
  std::uint32_t models = 0;
  [[nodiscard]] std::int64_t gpu_request() const noexcept { return static_cast<std::int64_t>(gpus) * milli; }
  [[nodiscard]] bool share() const noexcept { return gpus == 1 && milli < kMilliPerGpu; }
};

bool accessible(const StateKey& s, std::uint32_t models) { return models == 0 || ((models >> s.model) & 1U) != 0; }

// GPUs with at least `milli` left, and the milli-GPU on those with less.
std::pair<int, std::int64_t> gpu_fit(const StateKey& s, int milli) {
  int fitting = 0;
  std::int64_t stranded = 0;
  for (int i = 0; i < s.gpus; ++i) {
    const std::int16_t left = s.sorted_left[static_cast<std::size_t>(i)];
    if (left >= milli) {
      ++fitting;
    } else {
      stranded += left;
    }
  }
  return {fitting, stranded};
}

std::int64_t gpu_total(const StateKey& s) {
  std::int64_t total = 0;
  for (int i = 0; i < s.gpus; ++i) total += s.sorted_left[static_cast<std::size_t>(i)];
  return total;
}

bool fits(const StateKey& s, const Pod& p) {
  if (s.cpu_left < p.cpu || s.memory_left < p.memory) return false;
  if (p.gpus == 0) return true;
  if (!accessible(s, p.models)) return false;
  return gpu_fit(s, p.milli).first >= p.gpus;
}

// ---- the workload's pod shapes, for fragmentation ----------------------------------------

// Shapes of one (milli-GPU, GPU count, models) class, sorted by CPU, with running weights.
struct ShapeClass {
  int milli = 0;
  int gpus = 0;
  std::uint32_t models = 0;
  double weight = 0;                 // all shapes of the class
  std::vector<std::int64_t> cpu;     // ascending
  std::vector<std::int64_t> memory;  // of the same shapes
  std::vector<double> weights;       // of the same shapes
  std::vector<double> cumulative;    // weights[0..i]
};

class Fragmentation {
 public:
  Fragmentation(const std::vector<Pod>& workload, bool count_memory) : count_memory_(count_memory) {
    // The distribution of GPU pod shapes (the reference's typical pods, CPU-only pods left out).
    std::map<std::tuple<int, int, std::uint32_t>, std::map<std::pair<std::int64_t, std::int64_t>, double>> counts;
    double total = 0;
    for (const Pod& p : workload) {
      if (p.gpus == 0) continue;
      counts[{p.milli, p.gpus, p.models}][{p.cpu, count_memory ? p.memory : 0}] += 1;
      total += 1;
    }
    for (const auto& [klass, shapes] : counts) {
      ShapeClass c;
      std::tie(c.milli, c.gpus, c.models) = klass;
      for (const auto& [resources, n] : shapes) {
        c.cpu.push_back(resources.first);
        c.memory.push_back(resources.second);
        c.weights.push_back(n / total);
        c.weight += n / total;
        c.cumulative.push_back(c.weight);
      }
      classes_.push_back(std::move(c));
    }
  }

  // The node's expected idle GPU milli that a pod drawn from the workload could not use.
  [[nodiscard]] double of(const StateKey& s) const {
    const auto total = static_cast<double>(gpu_total(s));
    if (total == 0) return 0;
    double frag = 0;
    for (const ShapeClass& c : classes_) {
      if (!accessible(s, c.models)) {
        frag += c.weight * total;
        continue;
      }
      const auto [fitting, stranded] = gpu_fit(s, c.milli);
      if (fitting < c.gpus) {  // no shape of the class fits the GPUs: all idle GPU is fragment
        frag += c.weight * total;
        continue;
      }
      // Shapes whose CPU (and memory) fit see only the too-small GPUs as fragment; the others all of it.
      const auto end = std::upper_bound(c.cpu.begin(), c.cpu.end(), s.cpu_left) - c.cpu.begin();
      double satisfied = 0;
      if (!count_memory_) {
        satisfied = end == 0 ? 0.0 : c.cumulative[static_cast<std::size_t>(end - 1)];
      } else {
        for (std::ptrdiff_t i = 0; i < end; ++i) {
          if (c.memory[static_cast<std::size_t>(i)] <= s.memory_left) satisfied += c.weights[static_cast<std::size_t>(i)];
        }
      }
      frag += satisfied * static_cast<double>(stranded) + (c.weight - satisfied) * total;
    }
    return frag;
  }

 private:
  bool count_memory_;
  std::vector<ShapeClass> classes_;
};

// ---- placing one pod ----------------------------------------------------------------------

constexpr double kMaxSpecCpu = 128000;  // the reference's normalisation: a 128-core node...
constexpr double kMaxSpecGpu = 8000;    // ... with 8 GPUs

// The state after `p` lands on `s` using GPU slot `share_left` (the left value of the GPU a share takes).
StateKey after(const StateKey& s, const Pod& p, int share_left) {
  StateKey a = s;
  a.cpu_left -= p.cpu;
  a.memory_left -= p.memory;
  if (p.gpus > 0) {
    if (p.share()) {
      for (int i = 0; i < a.gpus; ++i) {
        auto& left = a.sorted_left[static_cast<std::size_t>(i)];
        if (left == share_left) {
          left = static_cast<std::int16_t>(left - p.milli);
          break;
        }
      }
    } else {
      int taken = 0;
      for (int i = a.gpus - 1; i >= 0 && taken < p.gpus; --i) {  // whole GPUs: the fully free ones (sorted last)
        auto& left = a.sorted_left[static_cast<std::size_t>(i)];
        if (left >= p.milli) {
          left = static_cast<std::int16_t>(left - p.milli);
          ++taken;
        }
      }
    }
    std::sort(a.sorted_left.begin(), a.sorted_left.begin() + a.gpus);
  }
  return a;
}

double best_fit_raw(const StateKey& s, const Pod& p) {
  const double cpu = static_cast<double>(s.cpu_left - p.cpu) / kMaxSpecCpu;
  const double gpu = static_cast<double>(gpu_total(s) - p.gpu_request()) / kMaxSpecGpu;
  return (1.0 - (0.5 * cpu + 0.5 * gpu)) * 100.0;
}

// The share's GPU under best fit: the fitting GPU with the least left.
int best_fit_share_left(const StateKey& s, const Pod& p) {
  for (int i = 0; i < s.gpus; ++i) {
    if (s.sorted_left[static_cast<std::size_t>(i)] >= p.milli) return s.sorted_left[static_cast<std::size_t>(i)];
  }
  return -1;
}

struct Choice {
  double score = -1e300;
  double tie = -1e300;  // secondary score (fgd_stranding: best fit)
  int share_left = -1;  // for a share: the left value of the GPU it takes
};

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// What fgd_stranding charges per GPU stranded for want of CPU: fgd's whole score range, so that
// stranding comes first (a larger weight measured the same, a weight of 1-10 worse).
constexpr double kStrandedGpuCost = 100.0;

class Placer {
 public:
  Placer(Placement placement, const std::vector<Pod>& workload)
      : placement_(placement),
        fgd_(workload, /*count_memory=*/false),
        stranding_(workload, /*count_memory=*/true) {
    // The CPU each free GPU should keep: 9/10 of what the workload's GPU pods ask per GPU (measured
    // on both Alibaba traces: 3/4 strands more, the full average reserves CPU that CPU-only pods need).
    double cpu = 0;
    double gpus = 0;
    for (const Pod& p : workload) {
      if (p.gpus == 0) continue;
      cpu += static_cast<double>(p.cpu);
      gpus += static_cast<double>(p.gpu_request()) / kMilliPerGpu;
    }
    cpu_reserve_per_gpu_ = gpus > 0 ? 0.9 * cpu / gpus : 0.0;
  }

  // Free GPUs (in GPUs) of a node state beyond what its CPU can serve at the reserve per GPU.
  [[nodiscard]] double stranded_gpus(const StateKey& s) const {
    const double free_gpus = static_cast<double>(gpu_total(s)) / kMilliPerGpu;
    if (free_gpus <= 0 || cpu_reserve_per_gpu_ <= 0) return 0.0;
    return std::max(0.0, free_gpus - static_cast<double>(s.cpu_left) / cpu_reserve_per_gpu_);
  }

  // The group state's score for `p` (higher wins), or nullopt-like score -inf when it does not fit.
  Choice score(const StateKey& s, const Pod& p, double frag_before_fgd, double frag_before_stranding) const {
    Choice best;
    switch (placement_) {
      case Placement::random:
        best.score = 0;
        best.share_left = p.share() ? best_fit_share_left(s, p) : -1;
        return best;
      case Placement::best_fit:
        best.score = std::trunc(best_fit_raw(s, p));  // the reference's integer scores
        best.share_left = p.share() ? best_fit_share_left(s, p) : -1;
        return best;
      case Placement::fgd:
      case Placement::fgd_stranding: {
        const bool ours = placement_ == Placement::fgd_stranding;
        const Fragmentation& frag = ours ? stranding_ : fgd_;
        const double before = ours ? frag_before_stranding : frag_before_fgd;
        const double stranded_before = ours ? stranded_gpus(s) : 0.0;  // the same for every GPU a share may take
        auto evaluate = [&](int share_left) {
          const StateKey placed = after(s, p, share_left);
          const double delta = before - frag.of(placed);
          Choice c;
          // The reference's score: sigmoid(delta / 1000) x 100 rounded down to an integer.
          c.score = std::trunc(sigmoid(delta / 1000.0) * 100.0);
          if (ours) {
            // Ours charges every GPU the placement strands for want of CPU (free GPUs beyond what
            // the node's CPU left can serve) the whole range of fgd's score, so fragmentation only
            // decides among placements that strand equally; then best fit instead of the name.
            // The same rule places CPU-only pods: they go where their CPU strands no GPU.
            c.score -= kStrandedGpuCost * (stranded_gpus(placed) - stranded_before);
            c.tie = best_fit_raw(s, p);
          }
          c.share_left = share_left;
          return c;
        };
        if (!p.share()) return evaluate(-1);
        int previous = -1;
        for (int i = 0; i < s.gpus; ++i) {  // each distinct left value that fits, smallest first
          const int left = s.sorted_left[static_cast<std::size_t>(i)];
          if (left < p.milli || left == previous) continue;
          previous = left;
          const Choice c = evaluate(left);
          if (c.score > best.score || (c.score == best.score && c.tie > best.tie)) best = c;
        }
        return best;
      }
    }
    return best;
  }

  [[nodiscard]] double frag_fgd(const StateKey& s) const { return fgd_.of(s); }
  [[nodiscard]] double frag_stranding(const StateKey& s) const { return stranding_.of(s); }
  [[nodiscard]] Placement placement() const noexcept { return placement_; }

 private:
  Placement placement_;
  Fragmentation fgd_;
  Fragmentation stranding_;
  double cpu_reserve_per_gpu_ = 0;
};

// Nodes grouped by state; a group's nodes in index order.
class Cluster {
 public:
  Cluster(const std::vector<NodeSpec>& specs, const std::map<std::string, int>& model_ids, const Placer& placer)
      : placer_(placer) {
    nodes_.reserve(specs.size());
    for (const NodeSpec& spec : specs) {
      Node n;
      n.cpu_left = spec.cpu_milli;
      n.memory_left = spec.memory_mib;
      n.gpus = spec.gpus;
      n.model = model_ids.at(spec.model);
      for (int i = 0; i < n.gpus; ++i) n.left[static_cast<std::size_t>(i)] = kMilliPerGpu;
      nodes_.push_back(n);
    }
    group_of_node_.resize(nodes_.size());
    for (std::size_t i = 0; i < nodes_.size(); ++i) join(static_cast<int>(i));
  }

  // Places `p` by the placement; returns the node or -1.
  int place(const Pod& p, std::mt19937_64& random) {
    int chosen_group = -1;
    Choice chosen;
    int feasible = 0;
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      Group& group = groups_[g];
      if (group.nodes.empty() || !fits(group.key, p)) continue;
      if (placer_.placement() == Placement::random) {
        // Uniform over feasible nodes: reservoir sampling by node count.
        const int count = static_cast<int>(group.nodes.size());
        feasible += count;
        if (std::uniform_int_distribution<int>(1, feasible)(random) <= count) {
          chosen_group = static_cast<int>(g);
          chosen = placer_.score(group.key, p, 0, 0);
        }
        continue;
      }
      const Choice c = placer_.score(group.key, p, group.frag_fgd, group.frag_stranding);
      const bool better = chosen_group < 0 || c.score > chosen.score ||
                          (c.score == chosen.score && (c.tie > chosen.tie ||
                                                       (c.tie == chosen.tie && *group.nodes.begin() <
                                                                                   *groups_[static_cast<std::size_t>(chosen_group)].nodes.begin())));
      if (better) {
        chosen_group = static_cast<int>(g);
        chosen = c;
      }
    }
    if (chosen_group < 0) return -1;
    Group& group = groups_[static_cast<std::size_t>(chosen_group)];
    int node = *group.nodes.begin();
    if (placer_.placement() == Placement::random) {
      auto it = group.nodes.begin();
      std::advance(it, std::uniform_int_distribution<std::size_t>(0, group.nodes.size() - 1)(random));
      node = *it;
    }
    apply(node, p, chosen.share_left);
    return node;
  }

  [[nodiscard]] const Node& node(int i) const { return nodes_[static_cast<std::size_t>(i)]; }

 private:
  struct Group {
    StateKey key;
    std::set<int> nodes;
    double frag_fgd = 0;
    double frag_stranding = 0;
  };

  void join(int node) {
    const StateKey key = key_of(nodes_[static_cast<std::size_t>(node)]);
    auto [it, inserted] = index_.try_emplace(key, static_cast<int>(groups_.size()));
    if (inserted) {
      Group g;
      g.key = key;
      const bool frag = placer_.placement() == Placement::fgd || placer_.placement() == Placement::fgd_stranding;
      if (frag) {
        g.frag_fgd = placer_.placement() == Placement::fgd ? placer_.frag_fgd(key) : 0.0;
        g.frag_stranding = placer_.placement() == Placement::fgd_stranding ? placer_.frag_stranding(key) : 0.0;
      }
      groups_.push_back(std::move(g));
    }
    groups_[static_cast<std::size_t>(it->second)].nodes.insert(node);
    group_of_node_[static_cast<std::size_t>(node)] = it->second;
  }

  void apply(int node, const Pod& p, int share_left) {
    groups_[static_cast<std::size_t>(group_of_node_[static_cast<std::size_t>(node)])].nodes.erase(node);
    Node& n = nodes_[static_cast<std::size_t>(node)];
    n.cpu_left -= p.cpu;
    n.memory_left -= p.memory;
    if (p.gpus > 0) {
      if (p.share()) {
        for (int i = 0; i < n.gpus; ++i) {  // the first GPU with that much left
          auto& left = n.left[static_cast<std::size_t>(i)];
          if (left == share_left) {
            left = static_cast<std::int16_t>(left - p.milli);
            break;
          }
        }
      } else {
        int taken = 0;
        for (int i = 0; i < n.gpus && taken < p.gpus; ++i) {
          auto& left = n.left[static_cast<std::size_t>(i)];
          if (left == kMilliPerGpu) {
            left = 0;
            ++taken;
          }
        }
      }
    }
    join(node);
  }

  const Placer& placer_;
  std::vector<Node> nodes_;
  std::vector<Group> groups_;
  std::unordered_map<StateKey, int, StateKeyHash> index_;
  std::vector<int> group_of_node_;
};

std::map<std::string, int> model_ids(const std::vector<NodeSpec>& nodes) {
  std::map<std::string, int> ids;
  for (const NodeSpec& n : nodes) ids.try_emplace(n.model, static_cast<int>(ids.size()));
  if (ids.size() > 32) throw InvalidArgument(fmt::format("{} GPU models in the node list; at most 32 are modelled", ids.size()));
  return ids;
}

Pod to_pod(const PodSpec& spec, const std::map<std::string, int>& ids) {
  Pod p;
  p.cpu = spec.cpu_milli;
  p.memory = spec.memory_mib;
  p.gpus = spec.gpus;
  p.milli = spec.gpu_milli;
  for (const std::string& m : spec.models) {
    auto it = ids.find(m);
    if (it != ids.end()) p.models |= 1U << it->second;
  }
  if (!spec.models.empty() && p.models == 0) p.models = 1U << 31;  // only models no node has: fits nowhere
  return p;
}

FillRun run_one(const std::vector<NodeSpec>& nodes, const std::vector<Pod>& workload, Placement placement,
                std::uint64_t seed, const FillOptions& options, std::int64_t capacity, const std::map<std::string, int>& ids) {
  std::mt19937_64 random(seed);
  // The arrival order: the workload shuffled, topped up with random draws until GPU requests reach
  // the inflation target.
  std::vector<Pod> arrivals = workload;
  std::shuffle(arrivals.begin(), arrivals.end(), random);
  std::int64_t requested = 0;
  for (const Pod& p : arrivals) requested += p.gpu_request();
  const auto target = static_cast<std::int64_t>(options.inflation * static_cast<double>(capacity));
  std::uniform_int_distribution<std::size_t> any(0, workload.size() - 1);
  const bool asks_for_gpus = std::any_of(workload.begin(), workload.end(), [](const Pod& q) { return q.gpu_request() > 0; });
  while (asks_for_gpus && requested < target) {  // without GPU pods no draw could ever reach the target
    const Pod& p = workload[any(random)];
    arrivals.push_back(p);
    requested += p.gpu_request();
  }
  const Placer placer(placement, workload);
  Cluster cluster(nodes, ids, placer);
  FillRun run;
  run.seed = seed;
  run.pods = arrivals.size();
  std::int64_t arrived = 0;
  std::int64_t allocated = 0;
  bool measured = false;
  std::uint32_t next_point = 0;
  const double step = options.curve_points > 1 ? options.inflation / static_cast<double>(options.curve_points - 1) : 1.0;
  std::mt19937_64 tie_random(seed ^ 0x9e3779b97f4a7c15ULL);
  for (const Pod& p : arrivals) {
    arrived += p.gpu_request();
    const int node = cluster.place(p, tie_random);
    if (node < 0) {
      ++run.dropped;
      if (p.gpus > 0) ++run.dropped_gpu_pods;
    } else {
      allocated += p.gpu_request();
    }
    const double arrived_share = static_cast<double>(arrived) / static_cast<double>(capacity);
    const double allocated_share = static_cast<double>(allocated) / static_cast<double>(capacity);
    // A point each time arrived requests cross the next step of the grid (at what they really are:
    // one large pod may cross several steps).
    if (next_point < options.curve_points && arrived_share >= static_cast<double>(next_point) * step - 1e-12) {
      run.curve.emplace_back(arrived_share * 100.0, allocated_share * 100.0);
      while (next_point < options.curve_points && arrived_share >= static_cast<double>(next_point) * step - 1e-12) ++next_point;
    }
    if (!measured && arrived_share >= options.measure_at) {
      measured = true;
      run.unallocated_gpu_pct_at_100 = 100.0 - allocated_share * 100.0;
    }
  }
  if (!measured) run.unallocated_gpu_pct_at_100 = 100.0 - static_cast<double>(allocated) * 100.0 / static_cast<double>(capacity);
  return run;
}

}  // namespace

std::vector<NodeSpec> read_node_list(const std::filesystem::path& path) {
  return read_csv<NodeSpec>(path, {"sn", "cpu_milli", "memory_mib", "gpu", "model"}, &parse_node);
}

std::vector<PodSpec> read_pod_list(const std::filesystem::path& path) {
  return read_csv<PodSpec>(path, {"name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec"}, &parse_pod);
}

std::string_view to_string(Placement placement) noexcept {
  switch (placement) {
    case Placement::random: return "random";
    case Placement::best_fit: return "best_fit";
    case Placement::fgd: return "fgd";
    case Placement::fgd_stranding: return "fgd_stranding";
  }
  return "?";
}

Placement parse_fill_placement(std::string_view name) {
  for (Placement p : {Placement::random, Placement::best_fit, Placement::fgd, Placement::fgd_stranding}) {
    if (name == to_string(p)) return p;
  }
  throw InvalidArgument(fmt::format("placement '{}' is not one of random, best_fit, fgd, fgd_stranding (or all)", name));
}

std::vector<Placement> parse_placements(std::string_view list) {
  if (list == "all") return {Placement::random, Placement::best_fit, Placement::fgd, Placement::fgd_stranding};
  std::vector<Placement> out;
  std::size_t start = 0;
  while (start <= list.size()) {
    const std::size_t comma = list.find(',', start);
    const std::string_view name = list.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    out.push_back(parse_fill_placement(name));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

std::int64_t gpu_capacity(const std::vector<NodeSpec>& nodes) {
  std::int64_t total = 0;
  for (const NodeSpec& n : nodes) total += static_cast<std::int64_t>(n.gpus) * kMilliPerGpu;
  return total;
}

std::vector<FillResult> run_fill(const std::vector<NodeSpec>& nodes, const std::vector<PodSpec>& pods,
                                 const FillOptions& options) {
  if (nodes.empty()) throw InvalidArgument("the node list is empty");
  if (pods.empty()) throw InvalidArgument("the pod list is empty");
  if (options.seeds == 0) throw InvalidArgument("seeds: give at least 1");
  if (!(options.inflation >= options.measure_at && options.measure_at > 0)) {
    throw InvalidArgument(fmt::format("inflation {} must be at least measure_at {} (> 0)", options.inflation, options.measure_at));
  }
  const std::int64_t capacity = gpu_capacity(nodes);
  if (capacity == 0) throw InvalidArgument("the node list has no GPUs");
  const std::map<std::string, int> ids = model_ids(nodes);
  std::vector<Pod> workload;
  workload.reserve(pods.size());
  for (const PodSpec& p : pods) workload.push_back(to_pod(p, ids));

  std::vector<FillResult> results;
  for (Placement placement : options.placements) {
    FillResult result;
    result.placement = placement;
    result.runs.resize(options.seeds);
    const auto start = std::chrono::steady_clock::now();
    std::mutex failure_mutex;
    std::exception_ptr failure;
    std::atomic<std::uint32_t> next{0};
    auto worker = [&] {
      for (std::uint32_t i = next++; i < options.seeds; i = next++) {
        try {
          result.runs[i] = run_one(nodes, workload, placement, options.first_seed + i, options, capacity, ids);
        } catch (...) {
          std::lock_guard lock(failure_mutex);
          if (!failure) failure = std::current_exception();
        }
      }
    };
    const std::uint32_t threads = std::max<std::uint32_t>(1, std::min(options.threads, options.seeds));
    std::vector<std::thread> pool;
    for (std::uint32_t t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (std::thread& t : pool) t.join();
    if (failure) std::rethrow_exception(failure);
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    double sum = 0;
    for (const FillRun& r : result.runs) sum += r.unallocated_gpu_pct_at_100;
    result.mean_unallocated_pct = sum / static_cast<double>(result.runs.size());
    double squares = 0;
    for (const FillRun& r : result.runs) squares += std::pow(r.unallocated_gpu_pct_at_100 - result.mean_unallocated_pct, 2);
    result.sd_unallocated_pct = result.runs.size() > 1 ? std::sqrt(squares / static_cast<double>(result.runs.size() - 1)) : 0.0;
    results.push_back(std::move(result));
  }
  return results;
}

std::vector<int> place_in_order(const std::vector<NodeSpec>& nodes, const std::vector<PodSpec>& arrivals,
                                const std::vector<PodSpec>& workload_specs, Placement placement, std::uint64_t seed) {
  const std::map<std::string, int> ids = model_ids(nodes);
  std::vector<Pod> workload;
  for (const PodSpec& p : workload_specs) workload.push_back(to_pod(p, ids));
  const Placer placer(placement, workload);
  Cluster cluster(nodes, ids, placer);
  std::mt19937_64 random(seed);
  std::vector<int> where;
  for (const PodSpec& spec : arrivals) where.push_back(cluster.place(to_pod(spec, ids), random));
  return where;
}

}  // namespace apt::vgpu::scheduler::fill
