#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/scheduler/simulator.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include <filesystem>
#include <fstream>
#include <unistd.h>

namespace apt::vgpu::scheduler {
namespace {

constexpr std::uint64_t k80GB = 80'000'000'000ULL;

std::string write_temp(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / (std::to_string(::getpid()) + "-" + name);
  std::ofstream(path) << text;
  return path.string();
}

TEST(TraceJobs, ReadsTheAlibabaPodList) {
  const std::string path = write_temp(
      "pods.csv",
      "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"
      "p0,12000,16384,1,1000,,LS,Running,100,1100,100\n"
      "p1,6000,12288,1,460,,BE,Running,200,700,250\n"
      "p2,6000,12288,0,0,,BE,Running,300,900,300\n"           // CPU only
      "p3,6000,12288,1,1000,,BE,Pending,400,500,\n"            // pending until deleted
      "p4,88000,327680,8,1000,V100M32|V100M16,Burstable,Running,500,2500,600\n");
  const TraceLoadResult r = load_trace_jobs(path, k80GB);
  EXPECT_EQ(r.format, "alibaba");
  ASSERT_EQ(r.jobs.size(), 5U);
  EXPECT_EQ(r.skipped, 0U);
  EXPECT_EQ(r.jobs[0].submit, 0.0) << "times start at the first submission";
  EXPECT_EQ(r.jobs[0].duration, 1000.0);
  EXPECT_EQ(r.jobs[0].priority, 3);
  EXPECT_EQ(r.jobs[0].demand.cpu_milli, 12000U);
  EXPECT_EQ(r.jobs[0].demand.host_memory, 16384ULL << 20);
  EXPECT_FALSE(std::isfinite(r.jobs[0].patience)) << "a pod that ran waits as long as it takes";
  EXPECT_EQ(r.jobs[1].demand.compute_milli, 460U);
  EXPECT_EQ(r.jobs[1].demand.memory, k80GB / 1000 * 460);
  EXPECT_EQ(r.jobs[1].duration, 450.0);
  EXPECT_EQ(r.jobs[1].group, "BE");
  EXPECT_EQ(r.jobs[2].demand.gpu_count, 0U) << "CPU-only pods are jobs too";
  EXPECT_EQ(r.jobs[2].demand.cpu_milli, 6000U);
  EXPECT_EQ(r.jobs[3].patience, 100.0) << "pending for 100 s, then deleted";
  EXPECT_EQ(r.jobs[3].duration, 100.0);
  EXPECT_EQ(r.jobs[4].demand.gpu_count, 8U);
  EXPECT_EQ(r.jobs[4].demand.compute_milli, kWholeGpuMilli);
  EXPECT_FALSE(r.jobs[4].demand.multi_node) << "a pod lives on one node";
  EXPECT_EQ(r.jobs[4].gpu_models, "V100M32|V100M16");
  EXPECT_EQ(r.jobs[4].submit, 400.0);
  std::filesystem::remove(path);
}

TEST(TraceJobs, ReadsPhillyAndOurCsv) {
  const std::string philly = write_temp("philly.csv",
                                        "timestamp,duration,num_gpus,gpu_time,cluster\n"
                                        "2017-10-09 07:01:55,66.0,1,66.0,11cb48\n"
                                        "2017-10-09 06:13:03,2951.0,4,11804.0,6214e9\n"
                                        "2017-10-09 08:00:00,10.0,16,160.0,6214e9\n");
  TraceLoadResult r = load_trace_jobs(philly, k80GB);
  EXPECT_EQ(r.format, "philly");
  ASSERT_EQ(r.jobs.size(), 3U);
  EXPECT_EQ(r.jobs[0].group, "6214e9") << "sorted by submit time";
  EXPECT_EQ(r.jobs[1].submit, 48.0 * 60 + 52);
  EXPECT_EQ(r.jobs[0].demand.gpu_count, 4U);
  EXPECT_FALSE(r.jobs[0].demand.multi_node);
  EXPECT_TRUE(r.jobs[2].demand.multi_node) << "16 GPUs: more than a Philly server's 8";

  const std::string ours = write_temp("ours.csv",
                                      "submit,duration,gpus,gpu_share,memory,priority,group\n"
                                      "0,100,1,0.25,16GB,2,alice\n"
                                      "5,50,2,1,,0,bob\n");
  r = load_trace_jobs(ours, k80GB);
  EXPECT_EQ(r.format, "csv");
  ASSERT_EQ(r.jobs.size(), 2U);
  EXPECT_EQ(r.jobs[0].demand.memory, 16'000'000'000ULL);
  EXPECT_EQ(r.jobs[0].demand.compute_milli, 250U);
  EXPECT_EQ(r.jobs[0].priority, 2);
  EXPECT_EQ(r.jobs[1].demand.gpu_count, 2U);
  std::filesystem::remove(philly);
  std::filesystem::remove(ours);
}

TEST(TraceJobs, BadInputNamesFileAndLine) {
  auto error_of = [](const std::string& text) {
    const std::string path = write_temp("bad.csv", text);
    std::string message = "accepted";
    try {
      (void)load_trace_jobs(path, k80GB);
    } catch (const InvalidArgument& e) {
      message = e.what();
    }
    std::filesystem::remove(path);
    return message;
  };
  EXPECT_NE(error_of("a,b,c\n").find(":1: unknown trace format"), std::string::npos);
  EXPECT_NE(error_of("submit,duration,gpus,gpu_share,memory,priority,group\n0,x,1,0.5,,0,a\n").find(":2: duration 'x'"),
            std::string::npos);
  EXPECT_NE(error_of("submit,duration,gpus,gpu_share,memory,priority,group\n0,10,1,1.5,,0,a\n").find("gpu_share 1.5"),
            std::string::npos);
  EXPECT_NE(error_of("submit,duration,gpus,gpu_share,memory,priority,group\n0,10,1,0.5,9XB,0,a\n").find(":2:"),
            std::string::npos);
  EXPECT_NE(error_of("timestamp,duration,num_gpus,gpu_time,cluster\nyesterday,1,1,1,c\n").find("timestamp 'yesterday'"),
            std::string::npos);
  // Non-finite numbers (a NaN duration once hung `vgpu simulate`) and counts that do not fit.
  const std::string ours = "submit,duration,gpus,gpu_share,memory,priority,group\n";
  EXPECT_NE(error_of(ours + "0,nan,1,0.5,,0,a\n").find(":2: duration 'nan' is not a finite number"), std::string::npos);
  EXPECT_NE(error_of(ours + "inf,10,1,0.5,,0,a\n").find("submit 'inf' is not a finite number"), std::string::npos);
  EXPECT_NE(error_of(ours + "0,10,4294967297,1,,0,a\n").find("gpus '4294967297' is not a whole number"), std::string::npos);
  EXPECT_NE(error_of(ours + "0,10,1.5,1,,0,a\n").find("gpus '1.5'"), std::string::npos);
  EXPECT_NE(error_of(ours + "0,10,1,1,,1e12,a\n").find("priority '1e12'"), std::string::npos);
  EXPECT_NE(error_of("timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09 07:01:55,nan,1,1,c\n").find("not a finite"),
            std::string::npos);
  EXPECT_THROW((void)load_trace_jobs("/nonexistent.csv", k80GB), InvalidArgument);
}

TEST(Simulator, MetricsOnAHandBuiltScenario) {
  // 1 GPU; job 0 runs 0-10 alone, job 1 (t=0) waits 10 s and runs 10-20.
  std::vector<SimJob> jobs(2);
  for (std::uint64_t i = 0; i < 2; ++i) {
    jobs[i].id = i;
    jobs[i].duration = 10;
    jobs[i].demand = Demand{k80GB, kWholeGpuMilli, 1};
    jobs[i].group = i == 0 ? "a" : "b";
  }
  SimulationOptions o;
  o.nodes = 1;
  o.gpus_per_node = 1;
  const SimulationReport r = simulate(jobs, o);
  EXPECT_EQ(r.completed, 2U);
  EXPECT_DOUBLE_EQ(r.avg_jct, 15.0);
  EXPECT_DOUBLE_EQ(r.p99_jct, 20.0);
  EXPECT_DOUBLE_EQ(r.avg_queueing_delay, 5.0);
  EXPECT_DOUBLE_EQ(r.makespan, 20.0);
  // Jain over groups of duration/JCT: a = 1, b = 0.5 -> (1.5)^2 / (2 * 1.25) = 0.9.
  EXPECT_NEAR(r.jain_fairness, 0.9, 1e-12);
}

TEST(Simulator, SharingBeatsWholeGpusOnFractionalJobs) {
  // Four quarter-GPU jobs on one GPU: shared, all run at once; whole-GPU, one at a time.
  std::vector<SimJob> jobs(4);
  for (std::uint64_t i = 0; i < 4; ++i) {
    jobs[i].id = i;
    jobs[i].duration = 100;
    jobs[i].demand = Demand{k80GB / 4, 250, 1};
  }
  SimulationOptions o;
  o.nodes = 1;
  o.gpus_per_node = 1;
  const SimulationReport shared = simulate(jobs, o);
  o.whole_gpu = true;
  const SimulationReport whole = simulate(jobs, o);
  EXPECT_DOUBLE_EQ(shared.avg_queueing_delay, 0.0);
  EXPECT_DOUBLE_EQ(shared.makespan, 100.0);
  EXPECT_DOUBLE_EQ(whole.avg_queueing_delay, (0 + 100 + 200 + 300) / 4.0);
  EXPECT_DOUBLE_EQ(whole.makespan, 400.0);
}

TEST(Simulator, RejectsJobsThatCanNeverFitAndReportsFragmentation) {
  std::vector<SimJob> jobs(3);
  jobs[0] = SimJob{0, 0, 100, Demand{k80GB / 2, 600, 1}, 0, ""};
  jobs[1] = SimJob{1, 1, 10, Demand{k80GB / 2, 600, 1}, 0, ""};  // waits: 400 milli free but it needs 600
  jobs[2] = SimJob{2, 2, 10, Demand{k80GB, kWholeGpuMilli, 2}, 0, ""};  // 2 GPUs on a 1-GPU cluster
  SimulationOptions o;
  o.nodes = 1;
  o.gpus_per_node = 1;
  o.samples = 100;
  const SimulationReport r = simulate(jobs, o);
  EXPECT_EQ(r.rejected, 1U);
  EXPECT_EQ(r.completed, 2U);
  EXPECT_GT(r.mean_fragmentation, 0.0) << "0.4 of the GPU is free but no queued job fits it";
  EXPECT_FALSE(r.allocation_over_time.empty());
}

TEST(Simulator, JobsArriveInSubmissionOrderWhateverTheFileOrder) {
  // Listed out of order, as Philly's rows are: the job submitted first must not wait behind a
  // later one that the file lists first.
  std::vector<SimJob> jobs(3);
  jobs[0] = SimJob{0, 100, 10, Demand{k80GB, kWholeGpuMilli, 1}, 0, ""};
  jobs[1] = SimJob{1, 0, 50, Demand{k80GB, kWholeGpuMilli, 1}, 0, ""};
  jobs[2] = SimJob{2, 20, 10, Demand{k80GB, kWholeGpuMilli, 1}, 0, ""};
  SimulationOptions o;
  o.nodes = 1;
  o.gpus_per_node = 1;
  o.policy = "fifo";
  const SimulationReport r = simulate(jobs, o);
  ASSERT_EQ(r.completed, 3U);
  std::map<std::uint64_t, JobTimes> by_id;
  for (const JobTimes& t : r.job_times) by_id[t.id] = t;
  EXPECT_DOUBLE_EQ(by_id[1].start, 0.0) << "submitted first, started first";
  EXPECT_DOUBLE_EQ(by_id[2].start, 50.0) << "then the job submitted at 20, when the GPU frees";
  EXPECT_DOUBLE_EQ(by_id[0].start, 100.0);
  // Invariants of every replay: no start before submission, no finish before start.
  for (const JobTimes& t : r.job_times) {
    EXPECT_GE(t.start, t.submit);
    EXPECT_GE(t.finish, t.start);
  }
  // In submission order in the report, too.
  for (std::size_t i = 1; i < r.job_times.size(); ++i) EXPECT_GE(r.job_times[i].submit, r.job_times[i - 1].submit);
}

TEST(Simulator, EveryReplayOfTheAlibabaTraceKeepsItsInvariants) {
  const std::filesystem::path path = std::filesystem::path(VGPU_SOURCE_DIR).parent_path() / "shared" / "data" /
                                     "alibaba-pai-2023" / "openb_pod_list_default.csv";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "public traces not present at " << path;
  const TraceLoadResult trace = load_trace_jobs(path.string(), k80GB);
  std::map<std::uint64_t, const SimJob*> job_of;
  double work = 0;  // GPU-seconds asked for by the jobs that ran in the trace (the others end at their deletion)
  std::uint64_t gpu_jobs = 0;
  for (const SimJob& j : trace.jobs) {
    job_of[j.id] = &j;
    if (j.demand.gpu_count > 0) ++gpu_jobs;
    if (std::isfinite(j.patience)) continue;
    work += j.duration * j.demand.gpu_count * j.demand.compute_milli / 1000.0;
  }
  for (const std::string policy : {"fifo", "priority", "fair", "adaptive"}) {
    SimulationOptions o;  // 125 x 8, no preemption: every job runs once, for its duration
    o.policy = policy;
    o.arrival_scale = 0.01;
    const SimulationReport r = simulate(trace.jobs, o);
    EXPECT_EQ(r.completed + r.rejected + r.withdrawn, gpu_jobs) << policy;
    EXPECT_EQ(r.jobs, gpu_jobs);
    EXPECT_EQ(r.cpu_only_skipped, trace.jobs.size() - gpu_jobs) << "125 x 8 GPUs model no CPU";
    double done = 0;
    for (const JobTimes& t : r.job_times) {
      if (t.finish < 0) continue;
      const SimJob& j = *job_of.at(t.id);
      EXPECT_GE(t.start, t.submit) << policy << ": job " << t.id << " started before it was submitted";
      // A pod pending until deleted in the trace runs at most until that deletion.
      const double runs = std::isfinite(j.patience) ? std::min(j.duration, t.submit + j.patience - t.start) : j.duration;
      EXPECT_NEAR(t.finish - t.start, runs, 1e-6 * std::max(1.0, j.duration)) << policy << ": job " << t.id;
      if (!std::isfinite(j.patience)) done += (t.finish - t.start) * j.demand.gpu_count * j.demand.compute_milli / 1000.0;
    }
    EXPECT_NEAR(done, work, 1e-6 * work) << policy << ": GPU-seconds are conserved";
    for (const auto& [time, allocation] : r.allocation_over_time) {
      EXPECT_LE(allocation, 1.0 + 1e-9) << policy << " at " << time;
      EXPECT_GE(allocation, 0.0);
    }
  }
}

TEST(Simulator, ReplaysTheAlibabaSliceOnAThousandGpus) {
  const std::filesystem::path path = std::filesystem::path(VGPU_SOURCE_DIR).parent_path() / "shared" / "data" /
                                     "alibaba-pai-2023" / "openb_pod_list_default.csv";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "public traces not present at " << path;
  const TraceLoadResult trace = load_trace_jobs(path.string(), k80GB);
  EXPECT_GT(trace.jobs.size(), 6000U);
  SimulationOptions o;  // 125 x 8
  o.arrival_scale = 0.001;
  const SimulationReport shared = simulate(trace.jobs, o);
  o.whole_gpu = true;
  const SimulationReport whole = simulate(trace.jobs, o);
  EXPECT_EQ(shared.completed + shared.rejected + shared.withdrawn, shared.jobs);
  EXPECT_LT(shared.avg_queueing_delay, whole.avg_queueing_delay) << "sharing fractional GPUs cuts waiting";
}

}  // namespace
}  // namespace apt::vgpu::scheduler

namespace apt::vgpu::scheduler {
namespace {

SimJob job(std::uint64_t id, double submit, double duration, Demand demand) {
  SimJob j;
  j.id = id;
  j.submit = submit;
  j.duration = duration;
  j.demand = demand;
  return j;
}

TEST(Simulator, OnANodeListCpuOnlyJobsTakeCpuThatGpuJobsWaitFor) {
  SimulationOptions o;
  o.cluster = {NodeShape{"n0", 8000, 64ULL << 30, 1, 0, "T4"}};
  Demand cpu_only{0, 0, 0};
  cpu_only.cpu_milli = 6000;
  Demand gpu{k80GB, kWholeGpuMilli, 1};
  gpu.cpu_milli = 4000;
  const std::vector<SimJob> jobs{job(0, 0, 100, cpu_only), job(1, 1, 10, gpu)};
  const SimulationReport r = simulate(jobs, o);
  EXPECT_EQ(r.cpu_only_jobs, 1U);
  EXPECT_EQ(r.jobs, 1U);
  ASSERT_EQ(r.job_times.size(), 1U) << "the GPU jobs' statistics leave CPU-only jobs out";
  EXPECT_EQ(r.job_times[0].start, 100.0) << "2 cores free until the CPU-only job ends";
  EXPECT_EQ(r.cpu_only_avg_wait, 0.0);

  o.cluster.clear();  // 125 x 8 GPUs: CPU is not modelled
  const SimulationReport flat = simulate(jobs, o);
  EXPECT_EQ(flat.cpu_only_skipped, 1U);
  EXPECT_EQ(flat.job_times.at(0).start, 1.0);
}

TEST(Simulator, APodPendingUntilDeletedIsWithdrawnOrRunsOnlyUntilThen) {
  SimulationOptions o;
  o.nodes = 1;
  o.gpus_per_node = 1;
  const Demand gpu{k80GB, kWholeGpuMilli, 1};
  std::vector<SimJob> jobs{job(0, 0, 100, gpu), job(1, 10, 50, gpu), job(2, 20, 200, gpu)};
  jobs[1].patience = 50;   // gone at 60, before the GPU frees at 100
  jobs[2].patience = 200;  // gone at 220: starts at 100, runs until 220
  const SimulationReport r = simulate(jobs, o);
  EXPECT_EQ(r.withdrawn, 1U);
  EXPECT_EQ(r.completed, 2U);
  ASSERT_EQ(r.job_times.size(), 3U);
  EXPECT_EQ(r.job_times[1].start, -1.0);
  EXPECT_EQ(r.job_times[2].start, 100.0);
  EXPECT_EQ(r.job_times[2].finish, 220.0);
}

TEST(Simulator, PhillysLargeJobsSpanNodesAndSmallGangsWaitForOne) {
  SimulationOptions o;
  o.nodes = 2;
  o.gpus_per_node = 8;
  Demand sixteen{k80GB, kWholeGpuMilli, 16};
  sixteen.multi_node = true;
  // A 5-GPU job takes node 0 (3 idle left), a 4-GPU job node 1 (4 idle left): 7 GPUs are idle, but a
  // 6-GPU job waits until one node has 6 (node 1 at 70) instead of being split across the two.
  const std::vector<SimJob> jobs{job(0, 0, 10, sixteen), job(1, 20, 100, Demand{k80GB, kWholeGpuMilli, 5}),
                                 job(2, 20, 50, Demand{k80GB, kWholeGpuMilli, 4}),
                                 job(3, 21, 10, Demand{k80GB, kWholeGpuMilli, 6})};
  const SimulationReport r = simulate(jobs, o);
  EXPECT_EQ(r.rejected, 0U) << "a multi-node job may span the two nodes";
  ASSERT_EQ(r.job_times.size(), 4U);
  EXPECT_EQ(r.job_times[0].finish, 10.0);
  EXPECT_EQ(r.job_times[3].start, 70.0) << "the 6-GPU job waits for one node with room";
}

}  // namespace
}  // namespace apt::vgpu::scheduler
