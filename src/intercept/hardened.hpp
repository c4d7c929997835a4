// Slurm's hardened mode, the library's half (the contract is in abi.h, the threat model in
// docs/slurm.md).
//
// A process belongs to the Slurm job named by the `job_<id>` component of its cgroups, which the
// job's processes cannot change (the cgroups are root's). When that job has a limits file under
// VGPU_HARDENED_DIR, root-owned and writable by no one else, in a directory of the same kind, the
// file's limits replace the environment's: a task that unsets or edits VGPU_* gets the job's limits
// all the same. Read once, by read_config(), before any hook runs; not thread-safe on its own.
#ifndef APT_VGPU_INTERCEPT_HARDENED_HPP
#define APT_VGPU_INTERCEPT_HARDENED_HPP

#include "config.hpp"

#include <apt/vgpu/intercept/abi.h>

namespace vgpu_cuda {

enum class HardenedLimits {
  none,     // the process is in no hardened job: the environment configures it
  applied,  // the job's limits file configured it
  broken,   // the process is in a hardened job whose limits cannot be read: refuse CUDA
};

// Fills `config`'s limits, region and GPU from the limits file of the process's job, if it has one.
// The paths are parameters so that tests can point them elsewhere; the library passes the fixed ones
// (never anything from the environment).
HardenedLimits read_hardened_limits(Config& config, const char* cgroup_file = "/proc/self/cgroup",
                                    const char* directory = VGPU_HARDENED_DIR);

}  // namespace vgpu_cuda

#endif  // APT_VGPU_INTERCEPT_HARDENED_HPP
