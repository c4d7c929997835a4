#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/suggest.hpp>
#include <apt/vgpu/scheduler/queue_policy.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <fmt/format.h>
#include <unordered_map>
#include <unordered_set>

namespace apt::vgpu::scheduler {

double QueuePolicy::next_wakeup(double now) const {
  double earliest = std::numeric_limits<double>::infinity();
  for (const QueuedTask* t : waiting()) {
    if (t->not_before > now) earliest = std::min(earliest, t->not_before);
  }
  return earliest;
}

namespace {

// Waiting tasks in submission order, erasable by id.
class SequenceQueue {
 public:
  void push(const QueuedTask& t) {
    tasks_.emplace(t.sequence, t);
    index_[t.id] = t.sequence;
  }
  bool erase(TaskId id) {
    auto it = index_.find(id);
    if (it == index_.end()) return false;
    tasks_.erase(it->second);
    index_.erase(it);
    return true;
  }
  [[nodiscard]] std::size_t size() const noexcept { return tasks_.size(); }
  [[nodiscard]] bool empty() const noexcept { return tasks_.empty(); }
  std::map<std::uint64_t, QueuedTask>& tasks() { return tasks_; }
  [[nodiscard]] const std::map<std::uint64_t, QueuedTask>& tasks() const { return tasks_; }

 private:
  std::map<std::uint64_t, QueuedTask> tasks_;
  std::unordered_map<TaskId, std::uint64_t> index_;
};

// Within one scheduling pass resources only shrink, so once a demand failed to
// place, any demand at least as large in every dimension fails too. Remembering
// failures lets a pass skip hopeless placement scans.
class FailedDemands {
 public:
  [[nodiscard]] bool hopeless(const QueuedTask& t) const {
    if (t.preferred_gpu >= 0) return false;
    for (const Demand& f : failed_) {
      if (f.compute_milli <= t.demand.compute_milli && f.memory <= t.demand.memory && f.gpu_count <= t.demand.gpu_count) {
        return true;
      }
    }
    return false;
  }
  void add(const QueuedTask& t) {
    if (t.preferred_gpu < 0) failed_.push_back(t.demand);
  }

 private:
  std::vector<Demand> failed_;
};

std::vector<QueuedTask> values(const std::map<std::uint64_t, QueuedTask>& m) {
  std::vector<QueuedTask> out;
  out.reserve(m.size());
  for (const auto& [k, t] : m) out.push_back(t);
  return out;
}

// Policies that keep one queue in submission order (fifo, adaptive).
class SequencePolicy : public QueuePolicy {
 public:
  explicit SequencePolicy(const PolicyOptions& o) : options_(o) {}
  void enqueue(const QueuedTask& t) override { queue_.push(t); }
  bool erase(TaskId id) override { return queue_.erase(id); }
  std::size_t size() const noexcept override { return queue_.size(); }
  std::vector<QueuedTask> ordered() const override { return values(queue_.tasks()); }

 protected:
  std::vector<const QueuedTask*> waiting() const override {
    std::vector<const QueuedTask*> out;
    for (const auto& [k, t] : queue_.tasks()) out.push_back(&t);
    return out;
  }

  // Starts eligible tasks in submission order until one does not fit and
  // returns that one (the blocked head), or end(). Tasks backing off after a
  // failure are passed over: they are not the head yet.
  template <class Strategy>
  std::map<std::uint64_t, QueuedTask>::iterator start_in_order(SchedulingContext& ctx, Strategy strategy) {
    auto& tasks = queue_.tasks();
    auto it = tasks.begin();
    while (it != tasks.end()) {
      if (it->second.not_before > ctx.now()) {
        ++it;
        continue;
      }
      if (!ctx.try_start(it->second, strategy())) return it;
      const TaskId id = it->second.id;
      ++it;
      queue_.erase(id);
    }
    return it;
  }

  PolicyOptions options_;
  SequenceQueue queue_;
};

// ---------------------------------------------------------------- fifo
class FifoPolicy final : public SequencePolicy {
 public:
  using SequencePolicy::SequencePolicy;
  std::string_view name() const noexcept override { return "fifo"; }
  // Head-of-line blocking: nothing passes a head that does not fit.
  void schedule(SchedulingContext& ctx) override {
    (void)start_in_order(ctx, [this] { return options_.placement; });
  }
};

// ---------------------------------------------------------------- backfilling
// EASY backfilling, shared by priority and adaptive: the blocked head gets a reservation at the
// earliest time running tasks free enough room (from their expected ends); tasks after it (in the
// policy's order, up to `window`) whose expected runtime ends before then start in the holes.
// Tasks without an expected runtime never backfill, so without estimates the head simply waits.
  // The earliest time the head fits if running tasks end when expected;
// +inf when tasks without an expected end stand in the way.
double reservation_time(SchedulingContext& ctx, const QueuedTask& head) {
  std::vector<RunningTask> running = ctx.running();
  std::vector<const RunningTask*> ending;
  for (const RunningTask& r : running) {
    if (r.task.expected_duration) ending.push_back(&r);
  }
  std::sort(ending.begin(), ending.end(), [](const RunningTask* a, const RunningTask* b) {
    return a->start + *a->task.expected_duration < b->start + *b->task.expected_duration;
  });
  ClusterState future = ctx.cluster();
  std::uint32_t cursor = 0;
  for (const RunningTask* r : ending) {
    future.release(r->gpus, r->task.demand);
    bool fits = false;
    if (head.demand.gpu_count == 1) {
      // Only the GPUs just released can have become able to hold the head.
      for (std::uint32_t g : r->gpus) {
        fits = fits || (future.fits(g, head.demand.memory, head.demand.compute_milli) &&
                        future.node_admits(future.gpu(g).node, head.demand, 1));
      }
    } else if (!head.demand.multi_node) {
      // A single-node gang: only the nodes just released on can have become able to hold it.
      fits = future.slices_available(head.demand.gpu_count) &&
             std::any_of(r->gpus.begin(), r->gpus.end(), [&](std::uint32_t released) {
               const NodeCapacityState& node = future.node(future.gpu(released).node);
               std::uint32_t idle = 0;
               for (std::uint32_t g = node.first_gpu; g < node.first_gpu + node.gpu_count; ++g) {
                 const GpuCapacityState& gpu = future.gpu(g);
                 if (gpu.healthy && gpu.idle() && head.demand.memory <= gpu.memory_capacity) ++idle;
               }
               return idle >= head.demand.gpu_count &&
                      future.node_admits(future.gpu(released).node, head.demand, head.demand.gpu_count);
             });
    } else {
      fits = !place(future, head.demand, PlacementStrategy::best_fit, cursor).empty();
    }
    if (fits) return r->start + *r->task.expected_duration;
  }
  return std::numeric_limits<double>::infinity();
}

template <class Tasks, class Erase>
void backfill_behind(SchedulingContext& ctx, Tasks& tasks, typename Tasks::iterator head, std::uint32_t window,
                     PlacementStrategy placement, Erase&& erase) {
  const double shadow = reservation_time(ctx, head->second);
  std::uint32_t looked = 0;
  FailedDemands failed;
  failed.add(head->second);
  for (auto next = std::next(head); next != tasks.end() && looked < window;) {
    ++looked;
    const QueuedTask& t = next->second;
    const bool ends_in_time = t.expected_duration && ctx.now() + *t.expected_duration <= shadow;
    if (t.not_before > ctx.now() || !ends_in_time || failed.hopeless(t)) {
      ++next;
      continue;
    }
    if (ctx.try_start(t, placement)) {
      const TaskId id = t.id;
      ++next;
      erase(id);
    } else {
      failed.add(t);
      ++next;
    }
  }
}

// ---------------------------------------------------------------- priority
class PriorityPolicy final : public QueuePolicy {
 public:
  explicit PriorityPolicy(const PolicyOptions& o) : options_(o) {}
  std::string_view name() const noexcept override { return "priority"; }
  void enqueue(const QueuedTask& t) override {
    queue_.emplace(Key{-static_cast<long long>(t.priority), t.sequence}, t);
    index_[t.id] = Key{-static_cast<long long>(t.priority), t.sequence};
  }
  bool erase(TaskId id) override {
    auto it = index_.find(id);
    if (it == index_.end()) return false;
    queue_.erase(it->second);
    index_.erase(it);
    return true;
  }
  std::size_t size() const noexcept override { return queue_.size(); }
  std::vector<QueuedTask> ordered() const override {
    std::vector<QueuedTask> out;
    for (const auto& [k, t] : queue_) out.push_back(t);
    return out;
  }

  void schedule(SchedulingContext& ctx) override {
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (it->second.not_before > ctx.now()) {
        ++it;
        continue;
      }
      if (!ctx.try_start(it->second, options_.placement)) {
        if (options_.preemption && preempt_for(ctx, it->second)) return;  // room is being made for the head
        // Lower priorities may use the holes, but only where they end before the head can start.
        backfill_behind(ctx, queue_, it, options_.backfill_window, options_.placement,
                        [this](TaskId id) { erase(id); });
        return;
      }
      const TaskId id = it->second.id;
      ++it;
      erase(id);
    }
  }

 protected:
  std::vector<const QueuedTask*> waiting() const override {
    std::vector<const QueuedTask*> out;
    for (const auto& [k, t] : queue_) out.push_back(&t);
    return out;
  }

 private:
  using Key = std::pair<long long, std::uint64_t>;

  // Stops the fewest lower-priority tasks that make room for `head`; true when it stopped some (or
  // room is already coming: the head then just waits).
  bool preempt_for(SchedulingContext& ctx, const QueuedTask& head) {
    ClusterState future = ctx.cluster();
    std::vector<RunningTask> victims;
    for (RunningTask& r : ctx.running()) {
      if (r.stopping) {
        future.release(r.gpus, r.task.demand);  // already on its way out
      } else if (r.task.priority < head.priority) {
        victims.push_back(std::move(r));
      }
    }
    std::uint32_t cursor = 0;
    if (!place(future, head.demand, options_.placement, cursor, head.preferred_gpu).empty()) return true;  // wait
    std::sort(victims.begin(), victims.end(), [](const RunningTask& a, const RunningTask& b) {
      if (a.task.priority != b.task.priority) return a.task.priority < b.task.priority;
      return a.start > b.start;
    });
    std::vector<TaskId> chosen;
    for (const RunningTask& v : victims) {
      future.release(v.gpus, v.task.demand);
      chosen.push_back(v.task.id);
      if (!place(future, head.demand, options_.placement, cursor, head.preferred_gpu).empty()) {
        for (TaskId id : chosen) ctx.preempt(id);
        return true;
      }
    }
    return false;
  }

  PolicyOptions options_;
  std::map<Key, QueuedTask> queue_;
  std::unordered_map<TaskId, Key> index_;
};

// ---------------------------------------------------------------- fair
class FairPolicy final : public QueuePolicy {
 public:
  explicit FairPolicy(const PolicyOptions& o) : options_(o) {}
  std::string_view name() const noexcept override { return "fair"; }
  void enqueue(const QueuedTask& t) override {
    Group& g = group(t.group);
    g.queue.push(t);
    group_of_[t.id] = t.group;
    ++size_;
    if (!g.listed) list(g);
  }
  bool erase(TaskId id) override {
    auto it = group_of_.find(id);
    if (it == group_of_.end()) return false;
    Group& g = groups_.at(it->second);
    g.queue.erase(id);
    group_of_.erase(it);
    --size_;
    if (g.queue.empty() && g.listed) unlist(g);
    return true;
  }
  std::size_t size() const noexcept override { return size_; }

  std::vector<QueuedTask> ordered() const override {
    // Simulate the pick order with current usage, assuming every head fits: the group with the
    // lowest key picks, its key grows, and so on (a set keeps the groups in key order).
    struct Pending {
      std::vector<QueuedTask> tasks;  // reversed: next at the back
      double compute = 0;
      double memory = 0;
    };
    std::map<std::string, Pending> pending;
    std::set<Key> order;
    for (const Key& k : order_) {
      const Group& g = groups_.at(k.name);
      Pending& p = pending[k.name];
      p.tasks = values(g.queue.tasks());
      std::reverse(p.tasks.begin(), p.tasks.end());
      p.compute = g.compute;
      p.memory = g.memory;
      order.insert(k);
    }
    std::vector<QueuedTask> out;
    while (!order.empty()) {
      Key k = *order.begin();
      order.erase(order.begin());
      Pending& p = pending[k.name];
      QueuedTask t = p.tasks.back();
      p.tasks.pop_back();
      p.compute += static_cast<double>(t.demand.compute_milli) * t.demand.gpu_count;
      p.memory += static_cast<double>(t.demand.memory) * t.demand.gpu_count;
      out.push_back(std::move(t));
      if (!p.tasks.empty()) {
        k.share = dominant(p.compute, p.memory, groups_.at(k.name).weight);
        order.insert(k);
      }
    }
    return out;
  }

  void schedule(SchedulingContext& ctx) override {
    const auto compute = static_cast<double>(ctx.cluster().total_compute_milli());
    const auto memory = static_cast<double>(ctx.cluster().total_memory());
    if (compute != total_compute_ || memory != total_memory_) {
      total_compute_ = compute;
      total_memory_ = memory;
      relist_all();  // shares are relative to the cluster's totals
    }
    FailedDemands failed;
    // One pass in key order (lowest dominant share, then least service received, then name).
    // Every group passed over is blocked for the rest of the pass; a group that starts a task
    // moves later in the order (its share grew), so the pass never goes back.
    auto it = order_.begin();
    while (it != order_.end()) {
      Group& g = groups_.at(it->name);
      // The group's first eligible task (tasks backing off are skipped).
      auto& tasks = g.queue.tasks();
      auto task = std::find_if(tasks.begin(), tasks.end(), [&](const auto& kv) { return kv.second.not_before <= ctx.now(); });
      if (task == tasks.end() || failed.hopeless(task->second) || !ctx.try_start(task->second, options_.placement)) {
        if (task != tasks.end()) failed.add(task->second);
        ++it;  // blocked for this pass
        continue;
      }
      const QueuedTask t = task->second;
      g.compute += static_cast<double>(t.demand.compute_milli) * t.demand.gpu_count;
      g.memory += static_cast<double>(t.demand.memory) * t.demand.gpu_count;
      const auto next = std::next(it);
      const std::string name = it->name;
      erase(t.id);  // may unlist the group (its queue emptied)
      Group& started = groups_.at(name);
      if (!started.listed) {
        it = next;
        continue;
      }
      // Re-key the group; it is tried again at once if it is still ahead of `next`.
      order_.erase(started.key_it);
      started.listed = false;
      list(started);
      it = (next == order_.end() || *started.key_it < *next) ? started.key_it : next;
    }
  }

  void on_finished(const RunningTask& r, double now) override {
    auto it = groups_.find(r.task.group);
    if (it == groups_.end()) return;
    Group& g = it->second;
    // Service: the dominant resource-seconds this run consumed.
    const double c = total_compute_ > 0 ? static_cast<double>(r.task.demand.compute_milli) * r.task.demand.gpu_count / total_compute_ : 0.0;
    const double m = total_memory_ > 0 ? static_cast<double>(r.task.demand.memory) * r.task.demand.gpu_count / total_memory_ : 0.0;
    g.service += std::max(c, m) * std::max(0.0, now - r.start);
    g.compute -= static_cast<double>(r.task.demand.compute_milli) * r.task.demand.gpu_count;
    g.memory -= static_cast<double>(r.task.demand.memory) * r.task.demand.gpu_count;
    if (g.compute < 0.5) g.compute = 0;
    if (g.memory < 0.5) g.memory = 0;
    if (g.listed) {  // its key changed
      unlist(g);
      list(g);
    }
  }

 protected:
  std::vector<const QueuedTask*> waiting() const override {
    std::vector<const QueuedTask*> out;
    for (const Key& k : order_) {
      for (const auto& [seq, t] : groups_.at(k.name).queue.tasks()) out.push_back(&t);
    }
    return out;
  }

 private:
  // A group's place in the order: the lowest dominant share picks first, then the least service
  // received (per weight), then the name (a stable, deterministic tie).
  struct Key {
    double share = 0;
    double service = 0;
    std::string name;
    friend bool operator<(const Key& a, const Key& b) {
      if (a.share != b.share) return a.share < b.share;
      if (a.service != b.service) return a.service < b.service;
      return a.name < b.name;
    }
  };
  struct Group {
    SequenceQueue queue;
    double compute = 0;  // milli x GPUs running now
    double memory = 0;   // bytes running now
    double service = 0;  // dominant resource-seconds received so far
    double weight = 1.0;
    std::string name;
    bool listed = false;  // in order_ (it has queued tasks)
    std::set<Key>::iterator key_it;
  };

  Group& group(const std::string& name) {
    auto [it, inserted] = groups_.try_emplace(name);
    if (inserted) {
      it->second.name = name;
      auto w = options_.weights.find(name);
      it->second.weight = w == options_.weights.end() ? 1.0 : w->second;
    }
    return it->second;
  }

  void list(Group& g) {
    g.key_it = order_.insert(Key{dominant(g.compute, g.memory, g.weight), g.service / g.weight, g.name}).first;
    g.listed = true;
  }
  void unlist(Group& g) {
    order_.erase(g.key_it);
    g.listed = false;
  }
  void relist_all() {
    std::vector<Group*> listed;
    for (const Key& k : order_) listed.push_back(&groups_.at(k.name));
    order_.clear();
    for (Group* g : listed) {
      g->listed = false;
      list(*g);
    }
  }
  [[nodiscard]] double dominant(double compute, double memory, double weight) const {
    const double c = total_compute_ > 0 ? compute / total_compute_ : compute;
    const double m = total_memory_ > 0 ? memory / total_memory_ : 0.0;
    return std::max(c, m) / weight;
  }

  PolicyOptions options_;
  std::map<std::string, Group> groups_;
  std::set<Key> order_;
  std::unordered_map<TaskId, std::string> group_of_;
  std::size_t size_ = 0;
  double total_compute_ = 0;
  double total_memory_ = 0;
};

// ---------------------------------------------------------------- adaptive
class AdaptivePolicy final : public SequencePolicy {
 public:
  using SequencePolicy::SequencePolicy;
  std::string_view name() const noexcept override { return "adaptive"; }

  void schedule(SchedulingContext& ctx) override {
    auto& tasks = queue_.tasks();
    // Pack (best fit) once the cluster is half allocated, spread while it is lighter.
    const auto it = start_in_order(ctx, [&ctx] {
      return ctx.cluster().allocation_rate() >= 0.5 ? PlacementStrategy::best_fit : PlacementStrategy::spread;
    });
    if (it == tasks.end()) return;
    // The head is blocked: reserve for it, then backfill behind it.
    backfill_behind(ctx, tasks, it, options_.backfill_window, PlacementStrategy::best_fit,
                    [this](TaskId id) { queue_.erase(id); });
  }
};

}  // namespace

const std::vector<std::string>& policy_names() {
  static const std::vector<std::string> names{"fifo", "priority", "fair", "adaptive"};
  return names;
}

std::unique_ptr<QueuePolicy> make_queue_policy(std::string_view name, const PolicyOptions& options) {
  if (name == "fifo") return std::make_unique<FifoPolicy>(options);
  if (name == "priority") return std::make_unique<PriorityPolicy>(options);
  if (name == "fair") return std::make_unique<FairPolicy>(options);
  if (name == "adaptive") return std::make_unique<AdaptivePolicy>(options);
  std::string message = fmt::format("scheduling_policy: '{}' is not a policy; use one of {}", name, join(policy_names()));
  if (auto guess = nearest(name, policy_names())) message += fmt::format(" (did you mean '{}'?)", *guess);
  throw InvalidArgument(message);
}

}  // namespace apt::vgpu::scheduler
