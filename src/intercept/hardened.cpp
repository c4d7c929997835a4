// See hardened.hpp.
#include "hardened.hpp"

#include <apt/vgpu/intercept/slurm_job.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace vgpu_cuda {
namespace {

// Whole small file into `out` (false when it cannot be read).
bool read_small_file(int fd, std::string& out) {
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    out.append(buffer, static_cast<std::size_t>(n));
    if (out.size() > (1u << 20)) return false;
  }
}

// Root's, and writable by no one else: what a job's processes cannot have written.
bool trusted(const struct stat& st) { return st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IWOTH)) == 0; }

}  // namespace

HardenedLimits read_hardened_limits(Config& config, const char* cgroup_file, const char* directory) {
  std::string cgroups;
  const int cgroup_fd = ::open(cgroup_file, O_RDONLY | O_CLOEXEC);
  if (cgroup_fd < 0) return HardenedLimits::none;
  const bool read_ok = read_small_file(cgroup_fd, cgroups);
  ::close(cgroup_fd);
  if (!read_ok) return HardenedLimits::none;
  int ambiguous = 0;
  const unsigned long long job = vgpu_job_of_cgroups(cgroups.data(), cgroups.size(), &ambiguous);
  if (job == 0) return HardenedLimits::none;

  struct stat dir_stat {};
  if (::stat(directory, &dir_stat) != 0) return HardenedLimits::none;  // no hardened Slurm on this node
  char path[512];
  std::snprintf(path, sizeof path, "%s/job_%llu.limits", directory, job);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT && !ambiguous) return HardenedLimits::none;  // the job is not a hardened vGPU job
  if (ambiguous) {
    if (fd >= 0) ::close(fd);
    log(Level::error, "this process's cgroups name more than one Slurm job (%s); refusing CUDA calls rather than "
                      "choosing the limits of one", cgroup_file);
    return HardenedLimits::broken;
  }
  if (fd < 0) {
    log(Level::error, "cannot open Slurm job %llu's limits %s: %s; refusing CUDA calls",
        job, path, std::strerror(errno));
    return HardenedLimits::broken;
  }
  struct stat file_stat {};
  std::string text;
  const bool ok = ::fstat(fd, &file_stat) == 0 && S_ISREG(file_stat.st_mode) && read_small_file(fd, text);
  ::close(fd);
  if (!ok || !S_ISDIR(dir_stat.st_mode) || !trusted(dir_stat) || !trusted(file_stat)) {
    log(Level::error, "Slurm job %llu's limits %s are not a root-owned file that only root may write, in such a "
                      "directory; refusing CUDA calls (the plugin writes them: is it the one in plugstack.conf?)",
        job, path);
    return HardenedLimits::broken;
  }

  config.memory_limit = 0;
  config.compute_share = 1.0;
  config.shm_name.clear();
  config.gpu_shm_name.clear();
  bool valid = true;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    const std::size_t equals = line.find('=');
    if (line.empty() || equals == std::string::npos) continue;
    const std::string key = line.substr(0, equals);
    const std::string value = line.substr(equals + 1);
    if (key == VGPU_HARDENED_KEY_MEMORY_LIMIT) {
      valid = valid && parse_u64(value.c_str(), config.memory_limit);
    } else if (key == VGPU_HARDENED_KEY_COMPUTE_SHARE) {
      char* parse_end = nullptr;
      config.compute_share = std::strtod(value.c_str(), &parse_end);
      valid = valid && parse_end != value.c_str() && *parse_end == '\0' && config.compute_share > 0.0 &&
              config.compute_share <= 1.0;
    } else if (key == VGPU_HARDENED_KEY_SHM_NAME) {
      config.shm_name = value;
    } else if (key == VGPU_HARDENED_KEY_GPU_SHM_NAME) {
      config.gpu_shm_name = value;
    } else if (key == VGPU_HARDENED_KEY_GPU_UUID) {
      config.gpu_uuid = value;
    }
  }
  if (!valid || config.shm_name.empty()) {
    log(Level::error, "Slurm job %llu's limits %s are malformed (a byte count for %s, a share in (0, 1] for %s, a "
                      "region for %s); refusing CUDA calls",
        job, path, VGPU_HARDENED_KEY_MEMORY_LIMIT, VGPU_HARDENED_KEY_COMPUTE_SHARE,
        VGPU_HARDENED_KEY_SHM_NAME);
    return HardenedLimits::broken;
  }
  config.hardened = true;
  config.memory_limited = config.memory_limit != 0;
  config.pacing = config.compute_share < 1.0;
  config.burst = false;             // bursting past the share is not the job's to choose
  config.context_bytes_set = false;  // contexts are measured, not taken at the job's word
  config.id = "slurm-" + std::to_string(job);
  return HardenedLimits::applied;
}

}  // namespace vgpu_cuda
