// Hardened Slurm mode, the library's half: which job a process's cgroups name, and when a job's
// limits file is believed (root's alone) or refused (anything a job's user could have written).
#include "hardened.hpp"

#include <apt/vgpu/intercept/slurm_job.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>

namespace {

unsigned long long job_of(std::string_view text, int& ambiguous) {
  return vgpu_job_of_cgroups(text.data(), text.size(), &ambiguous);
}

TEST(SlurmJobOfCgroups, SlurmsLayoutsAndOursNameTheJob) {
  int ambiguous = -1;
  EXPECT_EQ(job_of("12:freezer:/slurm/uid_1000/job_4242/step_0/task_1\n11:pids:/\n0::/\n", ambiguous), 4242u);
  EXPECT_EQ(ambiguous, 0);
  EXPECT_EQ(job_of("0::/system.slice/slurmstepd.scope/job_77/step_batch/user/task_0\n", ambiguous), 77u);
  EXPECT_EQ(job_of("0::/vgpu_slurm/job_5", ambiguous), 5u);  // no final newline
  EXPECT_EQ(ambiguous, 0);
}

TEST(SlurmJobOfCgroups, NoJobIsZero) {
  int ambiguous = -1;
  EXPECT_EQ(job_of("", ambiguous), 0u);
  EXPECT_EQ(job_of("0::/user.slice/user-1000.slice/session-3.scope\n", ambiguous), 0u);
  // Look-alikes are not jobs: no digits, trailing letters, a prefix, job 0, no path field.
  EXPECT_EQ(job_of("0::/job_/x\n0::/job_12a\n0::/myjob_3\n0::/job_0\njob_9\n1:job_8\n", ambiguous), 0u);
  EXPECT_EQ(ambiguous, 0);
}

TEST(SlurmJobOfCgroups, TheOutermostJobComponentWinsOverOnesAJobCouldMakeBelowIt) {
  // Under cgroup v1 Slurm may give a job's user its cgroup: a job_ made inside it does not count.
  int ambiguous = -1;
  EXPECT_EQ(job_of("4:memory:/slurm/uid_1000/job_10/step_0/job_99\n", ambiguous), 10u);
  EXPECT_EQ(ambiguous, 0);
}

TEST(SlurmJobOfCgroups, TwoHierarchiesNamingDifferentJobsAreAmbiguous) {
  int ambiguous = 0;
  job_of("6:freezer:/slurm/uid_0/job_3/step_0\n9:name=systemd:/user.slice/job_4\n", ambiguous);
  EXPECT_EQ(ambiguous, 1);
  EXPECT_EQ(job_of("6:freezer:/slurm/uid_0/job_3/step_0\n0::/vgpu_slurm/job_3\n", ambiguous), 3u);
  EXPECT_EQ(ambiguous, 0);
}

// A scratch directory with a fake /proc/self/cgroup and a limits directory.
class HardenedLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/vgpu-hardened-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    root_ = pattern;
    dir_ = root_ + "/limits";
    ASSERT_EQ(::mkdir(dir_.c_str(), 0755), 0);
    ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
    cgroup_ = root_ + "/cgroup";
    write(cgroup_, "0::/vgpu_slurm/job_31\n");
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  static void write(const std::string& path, const std::string& text, mode_t mode = 0644) {
    std::ofstream(path) << text;
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
  }
  std::string limits_path() const { return dir_ + "/job_31.limits"; }
  vgpu_cuda::HardenedLimits read(vgpu_cuda::Config& config) const {
    return vgpu_cuda::read_hardened_limits(config, cgroup_.c_str(), dir_.c_str());
  }
  static bool root() { return ::geteuid() == 0; }

  std::string root_;
  std::string dir_;
  std::string cgroup_;
};

constexpr const char* kLimits =
    "memory_limit=1073741824\ncompute_share=0.250000\nshm_name=/vgpu-slurm-job-31\ngpu_shm_name=\ngpu_uuid=GPU-x\n";

TEST_F(HardenedLimitsTest, AProcessInNoJobOrAJobWithoutLimitsIsLeftToTheEnvironment) {
  vgpu_cuda::Config config;
  write(cgroup_, "0::/user.slice\n");
  EXPECT_EQ(read(config), vgpu_cuda::HardenedLimits::none);
  write(cgroup_, "0::/vgpu_slurm/job_31\n");
  EXPECT_EQ(read(config), vgpu_cuda::HardenedLimits::none);  // no job_31.limits
  EXPECT_FALSE(config.hardened);
}

TEST_F(HardenedLimitsTest, RootsFileReplacesTheEnvironmentsLimits) {
  if (!root()) GTEST_SKIP() << "the limits must be root's: run as root (CI does)";
  write(limits_path(), kLimits);
  vgpu_cuda::Config config;
  config.memory_limit = 99;
  config.burst = true;
  config.context_bytes_set = true;
  config.shm_name = "/elsewhere";
  ASSERT_EQ(read(config), vgpu_cuda::HardenedLimits::applied);
  EXPECT_TRUE(config.hardened);
  EXPECT_TRUE(config.memory_limited);
  EXPECT_EQ(config.memory_limit, 1073741824u);
  EXPECT_TRUE(config.pacing);
  EXPECT_DOUBLE_EQ(config.compute_share, 0.25);
  EXPECT_EQ(config.shm_name, "/vgpu-slurm-job-31");
  EXPECT_EQ(config.gpu_uuid, "GPU-x");
  EXPECT_FALSE(config.burst);              // not the job's to choose
  EXPECT_FALSE(config.context_bytes_set);  // measured, not taken from VGPU_CONTEXT_BYTES
  EXPECT_EQ(config.id, "slurm-31");
}

TEST_F(HardenedLimitsTest, AFileOrDirectoryOthersMayWriteIsRefused) {
  vgpu_cuda::Config config;
  write(limits_path(), kLimits, 0666);
  EXPECT_EQ(read(config), vgpu_cuda::HardenedLimits::broken);
  write(limits_path(), kLimits, 0644);
  ASSERT_EQ(::chmod(dir_.c_str(), 0777), 0);
  EXPECT_EQ(read(config), vgpu_cuda::HardenedLimits::broken);
  EXPECT_FALSE(config.hardened);
}

TEST_F(HardenedLimitsTest, ASymlinkIsRefusedNotFollowed) {
  write(root_ + "/elsewhere", kLimits);
  ASSERT_EQ(::symlink((root_ + "/elsewhere").c_str(), limits_path().c_str()), 0);
  vgpu_cuda::Config config;
  EXPECT_EQ(read(config), vgpu_cuda::HardenedLimits::broken);
}

TEST_F(HardenedLimitsTest, MalformedLimitsAreRefused) {
  if (!root()) GTEST_SKIP() << "the limits must be root's to be parsed: run as root (CI does)";
  vgpu_cuda::Config config;
  write(limits_path(), "memory_limit=20G\nshm_name=/r\n");
  EXPECT_EQ(read(config), vgpu_cuda::HardenedLimits::broken);
  write(limits_path(), "memory_limit=1\ncompute_share=1.5\nshm_name=/r\n");
  EXPECT_EQ(read(config), vgpu_cuda::HardenedLimits::broken);
  write(limits_path(), "memory_limit=1\n");  // no region
  EXPECT_EQ(read(config), vgpu_cuda::HardenedLimits::broken);
}

TEST_F(HardenedLimitsTest, CgroupsNamingTwoJobsAreRefused) {
  write(cgroup_, "6:freezer:/slurm/uid_0/job_31/step_0\n0::/vgpu_slurm/job_32\n");
  vgpu_cuda::Config config;
  EXPECT_EQ(read(config), vgpu_cuda::HardenedLimits::broken);
}

}  // namespace
