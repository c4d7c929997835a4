#include <apt/vgpu/scheduler/simulator.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <deque>
#include <optional>
#include <queue>
#include <unordered_map>

namespace apt::vgpu::scheduler {
namespace {

struct JobState {
  const SimJob* job = nullptr;
  double remaining = 0;
  double first_start = -1;
  double finish = -1;
  bool rejected = false;
  bool withdrawn = false;
};

class Simulation final : public SchedulingContext {
 public:
  Simulation(const std::vector<SimJob>& jobs, const SimulationOptions& o)
      : options_(o), cluster_(make_cluster(o)), policy_(make_queue_policy(o.policy, o.policy_options)) {
    states_.reserve(jobs.size());
    const bool cpu_modelled = !o.cluster.empty();
    for (const SimJob& j : jobs) {
      if (j.demand.gpu_count == 0 && !cpu_modelled) {
        ++report_.cpu_only_skipped;
        continue;
      }
      SimJob copy = j;
      copy.submit *= o.arrival_scale;
      copy.demand.gpu_models = cluster_.model_mask(j.gpu_models);
      if (!cpu_modelled) {  // nodes x GPUs: CPU and host memory are not part of the model
        copy.demand.cpu_milli = 0;
        copy.demand.host_memory = 0;
      }
      if (o.whole_gpu && copy.demand.gpu_count > 0) {
        copy.demand.compute_milli = kWholeGpuMilli;
        copy.demand.memory = o.memory_per_gpu;
      }
      jobs_.push_back(std::move(copy));
    }
    // Jobs arrive in submission order, whatever order the trace file lists them in (Philly's
    // rows are not sorted: replayed in row order, 82,169 of its 82,247 jobs started ahead of an
    // earlier-submitted one). Ties keep the file's order.
    std::stable_sort(jobs_.begin(), jobs_.end(), [](const SimJob& a, const SimJob& b) { return a.submit < b.submit; });
    for (const SimJob& j : jobs_) {
      states_[j.id] = JobState{&j, j.duration, -1, -1};
      if (std::isfinite(j.patience)) withdrawals_.push({j.submit + j.patience, j.id, 0});
    }
  }

  static ClusterState make_cluster(const SimulationOptions& o) {
    if (o.cluster.empty()) return ClusterState(o.nodes, o.gpus_per_node, o.memory_per_gpu);
    std::vector<NodeShape> nodes = o.cluster;
    for (NodeShape& n : nodes) {
      if (n.gpu_memory == 0) n.gpu_memory = o.memory_per_gpu;
    }
    return ClusterState(nodes);
  }

  double now() const override { return now_; }
  const ClusterState& cluster() const override { return cluster_; }

  bool try_start(const QueuedTask& task, PlacementStrategy strategy) override {
    std::vector<std::uint32_t> gpus = place(cluster_, task.demand, strategy, cursor_, task.preferred_gpu);
    if (gpus.empty()) return false;
    cluster_.allocate(gpus, task.demand);
    JobState& s = states_.at(task.id);
    if (s.first_start < 0) s.first_start = now_;
    cap_at_deadline(s);
    QueuedTask running = task;
    running.expected_duration = s.remaining;  // a replay knows the truth: perfect estimates
    const std::uint64_t token = ++token_;
    running_[task.id] = Running{RunningTask{running, gpus, now_, false}, token};
    completions_.push({now_ + s.remaining, task.id, token});
    return true;
  }

  std::vector<RunningTask> running() const override {
    std::vector<RunningTask> out;
    out.reserve(running_.size());
    for (const auto& [id, r] : running_) out.push_back(r.info);
    return out;
  }

  void preempt(TaskId id) override {
    auto it = running_.find(id);
    if (it == running_.end()) return;
    // Suspend now: the job keeps the work it did and waits again.
    JobState& s = states_.at(id);
    s.remaining = std::max(0.0, s.remaining - (now_ - it->second.info.start));
    finish_running(it);
    QueuedTask again = make_queued(*s.job);
    policy_->enqueue(again);
    ++report_.preemptions;
    preempted_ = true;
  }

  SimulationReport run() {
    const auto wall_start = std::chrono::steady_clock::now();
    report_.policy = options_.policy;
    report_.whole_gpu = options_.whole_gpu;
    report_.jobs = static_cast<std::uint64_t>(
        std::count_if(jobs_.begin(), jobs_.end(), [](const SimJob& j) { return j.demand.gpu_count > 0; }));
    // Sample over the submission window, where queues form; long tails of a few
    // stragglers would otherwise dilute allocation and fragmentation to nothing.
    double horizon = 0;
    for (const SimJob& j : jobs_) horizon = std::max(horizon, j.submit);
    const double sample_every = options_.samples == 0 ? 0 : std::max(1e-3, horizon / options_.samples);
    double next_sample = 0;
    std::size_t next_arrival = 0;
    std::vector<double> fragmentation;
    while (next_arrival < jobs_.size() || !completions_.empty()) {
      const double arrival_time = next_arrival < jobs_.size() ? jobs_[next_arrival].submit : INFINITY;
      const double completion_time = completions_.empty() ? INFINITY : completions_.top().time;
      const double withdrawal_time = withdrawals_.empty() ? INFINITY : withdrawals_.top().time;
      const double t = std::min({arrival_time, completion_time, withdrawal_time});
      while (sample_every > 0 && next_sample <= t && next_sample <= horizon) {
        report_.allocation_over_time.emplace_back(next_sample, cluster_.allocation_rate());
        fragmentation.push_back(fragmented_share());
        next_sample += sample_every;
      }
      now_ = t;
      while (!completions_.empty() && completions_.top().time <= now_) {
        const Completion c = completions_.top();
        completions_.pop();
        auto host = running_host_.find(c.id);
        if (host != running_host_.end() && host->second.token == c.token) {
          cluster_.release_host(host->second.node, states_.at(c.id).job->demand);
          states_.at(c.id).finish = now_;
          running_host_.erase(host);
          continue;
        }
        auto it = running_.find(c.id);
        if (it == running_.end() || it->second.token != c.token) continue;  // preempted meanwhile
        states_.at(c.id).finish = now_;
        finish_running(it);
        ++report_.completed;
      }
      while (!withdrawals_.empty() && withdrawals_.top().time <= now_) {
        const TaskId id = withdrawals_.top().id;
        withdrawals_.pop();
        withdraw(id);
      }
      while (next_arrival < jobs_.size() && jobs_[next_arrival].submit <= now_) {
        const SimJob& j = jobs_[next_arrival++];
        if (!cluster_.could_ever_fit(j.demand)) {
          if (j.demand.gpu_count > 0) ++report_.rejected;
          states_.at(j.id).rejected = true;
          continue;
        }
        if (j.demand.gpu_count == 0) {
          host_queue_.push_back(&j);
        } else {
          policy_->enqueue(make_queued(j));
        }
      }
      schedule_host();
      // Preemption suspends jobs at once here, so schedule again until no more happen.
      do {
        preempted_ = false;
        policy_->schedule(*this);
      } while (preempted_);
      if (completions_.empty() && next_arrival >= jobs_.size() && withdrawals_.empty() &&
          (policy_->size() > 0 || !host_queue_.empty())) {
        break;  // stuck (cannot happen: what could never fit is rejected)
      }
    }
    summarise(fragmentation);
    report_.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    return report_;
  }

 private:
  struct Running {
    RunningTask info;
    std::uint64_t token = 0;
  };
  struct Completion {
    double time;
    TaskId id;
    std::uint64_t token;
    bool operator>(const Completion& o) const { return time > o.time; }
  };
  struct RunningHost {
    std::uint32_t node = 0;
    std::uint64_t token = 0;
  };

  // A job's work never runs past its deadline (the trace deleted the pod then).
  void cap_at_deadline(JobState& s) const {
    if (std::isfinite(s.job->patience)) s.remaining = std::min(s.remaining, std::max(0.0, s.job->submit + s.job->patience - now_));
  }

  // Starts waiting CPU-only jobs in submission order, any that fits.
  void schedule_host() {
    for (auto it = host_queue_.begin(); it != host_queue_.end();) {
      const SimJob& j = **it;
      const std::optional<std::uint32_t> node = place_host(cluster_, j.demand);
      if (!node) {
        ++it;
        continue;
      }
      cluster_.allocate_host(*node, j.demand);
      JobState& s = states_.at(j.id);
      s.first_start = now_;
      cap_at_deadline(s);
      const std::uint64_t token = ++token_;
      running_host_[j.id] = RunningHost{*node, token};
      completions_.push({now_ + s.remaining, j.id, token});
      it = host_queue_.erase(it);
    }
  }

  // The job's patience ran out: a waiting job leaves the queue (withdrawn if it never started).
  void withdraw(TaskId id) {
    JobState& s = states_.at(id);
    if (s.finish >= 0 || s.rejected || running_.count(id) != 0 || running_host_.count(id) != 0) return;
    const bool waiting_gpu = policy_->erase(id);
    auto host = std::find(host_queue_.begin(), host_queue_.end(), s.job);
    const bool waiting_host = host != host_queue_.end();
    if (waiting_host) host_queue_.erase(host);
    if (!waiting_gpu && !waiting_host) return;
    if (s.first_start < 0) {
      s.withdrawn = true;
      if (s.job->demand.gpu_count > 0) ++report_.withdrawn;
    } else {
      s.finish = now_;  // preempted earlier and deleted while suspended
      if (s.job->demand.gpu_count > 0) ++report_.completed;
    }
  }

  QueuedTask make_queued(const SimJob& j) const {
    QueuedTask q;
    q.id = j.id;
    q.demand = j.demand;
    q.priority = j.priority;
    q.group = j.group;
    q.sequence = j.id;
    q.submit_time = j.submit;
    q.expected_duration = states_.at(j.id).remaining;
    return q;
  }

  void finish_running(std::unordered_map<TaskId, Running>::iterator it) {
    cluster_.release(it->second.info.gpus, it->second.info.task.demand);
    policy_->on_finished(it->second.info, now_);
    running_.erase(it);
  }

  // Free compute on GPUs where no waiting single-GPU job fits, over total compute.
  double fragmented_share() const {
    std::uint32_t min_compute = UINT32_MAX;
    std::uint64_t min_memory = UINT64_MAX;
    bool any = false;
    for (const QueuedTask& t : policy_->ordered()) {
      if (t.demand.gpu_count != 1) continue;
      any = true;
      min_compute = std::min(min_compute, t.demand.compute_milli);
      min_memory = std::min(min_memory, t.demand.memory);
    }
    if (!any) return 0.0;
    std::uint64_t stranded = 0;
    for (const GpuCapacityState& g : cluster_.gpus()) {
      if (g.compute_free() == 0) continue;
      if (g.compute_free() < min_compute || g.memory_free() < min_memory) stranded += g.compute_free();
    }
    return static_cast<double>(stranded) / static_cast<double>(cluster_.total_compute_milli());
  }

  static double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const auto k = static_cast<std::size_t>(std::ceil(p * static_cast<double>(v.size()))) - 1;
    return v[std::min(k, v.size() - 1)];
  }

  void summarise(const std::vector<double>& fragmentation) {
    std::vector<double> jct;
    std::vector<double> wait;
    std::map<std::string, std::pair<double, std::uint64_t>> speed;  // group -> (sum duration/JCT, count)
    double first_submit = INFINITY;
    double last_finish = 0;
    double host_wait = 0;
    for (const SimJob& j : jobs_) {
      const JobState& s = states_.at(j.id);
      if (j.demand.gpu_count == 0) {
        ++report_.cpu_only_jobs;
        if (s.first_start >= 0) host_wait += s.first_start - j.submit;
        continue;
      }
      report_.job_times.push_back(JobTimes{j.id, j.submit, s.first_start, s.finish});
      if (s.finish < 0) continue;
      jct.push_back(s.finish - j.submit);
      wait.push_back(s.first_start - j.submit);
      first_submit = std::min(first_submit, j.submit);
      last_finish = std::max(last_finish, s.finish);
      auto& g = speed[j.group];
      g.first += j.duration / std::max(s.finish - j.submit, 1e-9);
      ++g.second;
    }
    auto mean = [](const std::vector<double>& v) {
      double sum = 0;
      for (double x : v) sum += x;
      return v.empty() ? 0.0 : sum / static_cast<double>(v.size());
    };
    report_.cpu_only_avg_wait = report_.cpu_only_jobs == 0 ? 0 : host_wait / static_cast<double>(report_.cpu_only_jobs);
    report_.avg_jct = mean(jct);
    report_.p99_jct = percentile(jct, 0.99);
    report_.avg_queueing_delay = mean(wait);
    report_.p99_queueing_delay = percentile(wait, 0.99);
    report_.makespan = jct.empty() ? 0 : last_finish - first_submit;
    double allocation = 0;
    for (const auto& [t, a] : report_.allocation_over_time) allocation += a;
    report_.mean_allocation =
        report_.allocation_over_time.empty() ? 0 : allocation / static_cast<double>(report_.allocation_over_time.size());
    report_.mean_fragmentation = mean(fragmentation);
    double sum = 0;
    double sum_sq = 0;
    for (const auto& [group, v] : speed) {
      const double x = v.first / static_cast<double>(v.second);
      sum += x;
      sum_sq += x * x;
    }
    report_.jain_fairness = speed.empty() ? 1.0 : sum * sum / (static_cast<double>(speed.size()) * sum_sq);
  }

  SimulationOptions options_;
  std::vector<SimJob> jobs_;
  ClusterState cluster_;
  std::unique_ptr<QueuePolicy> policy_;
  std::unordered_map<TaskId, JobState> states_;
  std::unordered_map<TaskId, Running> running_;
  std::priority_queue<Completion, std::vector<Completion>, std::greater<>> completions_;
  std::priority_queue<Completion, std::vector<Completion>, std::greater<>> withdrawals_;  // token unused
  std::deque<const SimJob*> host_queue_;  // CPU-only jobs waiting, in submission order
  std::unordered_map<TaskId, RunningHost> running_host_;
  std::uint64_t token_ = 0;
  std::uint32_t cursor_ = 0;
  double now_ = 0;
  bool preempted_ = false;
  SimulationReport report_;
};

}  // namespace

SimulationReport simulate(const std::vector<SimJob>& jobs, const SimulationOptions& options) {
  Simulation sim(jobs, options);
  return sim.run();
}

}  // namespace apt::vgpu::scheduler
