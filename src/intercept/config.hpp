// Configuration of libvgpu-cuda.so and its log.
//
// The configuration is read once from the environment (the contract in
// include/apt/vgpu/intercept/abi.h), or in a hardened Slurm job from the job's
// limits file (hardened.hpp), by read_config(), which init() runs under a
// pthread_once before any hook does its work. It is read-only afterwards, so
// every thread reads g_config without a lock. A value that cannot be used marks
// the configuration broken: every CUDA call then fails rather than the process
// running without its limit.
#ifndef APT_VGPU_INTERCEPT_CONFIG_HPP
#define APT_VGPU_INTERCEPT_CONFIG_HPP

#include <cstdint>
#include <string>

namespace vgpu_cuda {

enum class Level { error = 0, warn = 1, notice = 2, info = 3, debug = 4 };

struct Config {
  bool configured = false;   // any limit applies
  bool broken = false;       // configuration invalid: refuse CUDA calls
  bool hardened = false;     // limits from a hardened Slurm job's root-owned file (hardened.hpp)
  bool memory_limited = false;
  std::uint64_t memory_limit = 0;
  bool context_bytes_set = false;  // VGPU_CONTEXT_BYTES given; otherwise measured through NVML
  std::uint64_t context_bytes = 0;
  bool pacing = false;       // a compute share applies
  double compute_share = 0;
  bool burst = false;        // may use idle GPU time beyond the share
  std::string shm_name;
  std::string gpu_shm_name;  // the GPU's pacing region (burst coordination), when given
  std::string gpu_uuid;
  std::string id = "vgpu";
  Level level = Level::notice;
};

extern Config g_config;

// One line on stderr, "vgpu-cuda[ID pid N]: ...", when `level` is enabled. No allocation.
void log(Level level, const char* format, ...) __attribute__((format(printf, 2, 3)));

// A decimal byte count; false for anything else (signs, spaces, units, overflow).
bool parse_u64(const char* text, std::uint64_t& out);

// Reads the environment (or a hardened Slurm job's limits) into g_config; problems are logged
// and mark it broken.
void read_config();

std::int64_t monotonic_ns();

}  // namespace vgpu_cuda

#endif  // APT_VGPU_INTERCEPT_CONFIG_HPP
