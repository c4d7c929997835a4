// See config.hpp.
#include "config.hpp"

#include "hardened.hpp"
#include "process_identity.hpp"

#include <apt/vgpu/intercept/abi.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <unistd.h>

namespace vgpu_cuda {

Config g_config;

void log(Level level, const char* format, ...) {
  if (static_cast<int>(level) > static_cast<int>(g_config.level)) return;
  char line[512];
  va_list args;
  va_start(args, format);
  const int n = std::vsnprintf(line, sizeof line, format, args);
  va_end(args);
  if (n <= 0) return;
  char out[640];
  const int m = std::snprintf(out, sizeof out, "vgpu-cuda[%s pid %d]: %s\n", g_config.id.c_str(), static_cast<int>(g_pid), line);
  if (m > 0) {
    const auto length = static_cast<std::size_t>(m);
    (void)!::write(STDERR_FILENO, out, length < sizeof out ? length : sizeof out - 1);
  }
}

bool parse_u64(const char* text, std::uint64_t& out) {
  if (text == nullptr || *text == '\0') return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == nullptr || *end != '\0' || text[0] == '-' || text[0] == '+' || text[0] == ' ') return false;
  out = v;
  return true;
}

std::int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void read_config() {
  Config& c = g_config;
  if (const char* level = std::getenv(VGPU_ENV_LOG_LEVEL)) {
    const std::string v(level);
    c.level = v == "error" ? Level::error : v == "warn" ? Level::warn : v == "info" ? Level::info : v == "debug" ? Level::debug : Level::notice;
  }
  // In a hardened Slurm job the job's root-owned limits file decides, and the environment, which
  // the job's user controls, is not read for anything that limits.
  switch (read_hardened_limits(c)) {
    case HardenedLimits::applied:
      c.configured = c.memory_limited || c.pacing;
      return;
    case HardenedLimits::broken:
      c.broken = true;
      c.configured = true;
      return;
    case HardenedLimits::none:
      break;
  }
  if (const char* id = std::getenv(VGPU_ENV_ID); id != nullptr && *id != '\0') c.id = id;
  if (const char* shm = std::getenv(VGPU_ENV_SHM_NAME); shm != nullptr) c.shm_name = shm;
  if (const char* gpu_shm = std::getenv(VGPU_ENV_GPU_SHM_NAME); gpu_shm != nullptr) c.gpu_shm_name = gpu_shm;
  if (const char* limit = std::getenv(VGPU_ENV_MEMORY_LIMIT)) {
    if (!parse_u64(limit, c.memory_limit) || c.memory_limit == 0) {
      c.broken = true;
      log(Level::error, "%s='%s' is not a positive byte count; refusing CUDA calls rather than running without the "
                        "limit (the runtime writes e.g. 20000000000)", VGPU_ENV_MEMORY_LIMIT, limit);
    } else {
      c.memory_limited = true;
    }
  }
  if (const char* context = std::getenv(VGPU_ENV_CONTEXT_BYTES)) {
    if (!parse_u64(context, c.context_bytes)) {
      c.broken = true;
      log(Level::error, "%s='%s' is not a byte count; refusing CUDA calls (e.g. 536870912 for 512 MiB, 0 to charge "
                        "nothing, or unset it to measure the context through NVML)", VGPU_ENV_CONTEXT_BYTES, context);
    } else {
      c.context_bytes_set = true;
    }
  }
  if (const char* share = std::getenv(VGPU_ENV_COMPUTE_SHARE)) {
    char* end = nullptr;
    c.compute_share = std::strtod(share, &end);
    if (end == share || *end != '\0' || !(c.compute_share > 0.0 && c.compute_share <= 1.0)) {
      c.broken = true;
      log(Level::error, "%s='%s' is not a share in (0, 1]; refusing CUDA calls", VGPU_ENV_COMPUTE_SHARE, share);
    } else {
      c.pacing = c.compute_share < 1.0;  // a whole GPU needs no pacing
    }
  }
  if (const char* burst = std::getenv(VGPU_ENV_BURST)) c.burst = std::string(burst) == "1";
  if (const char* uuid = std::getenv(VGPU_ENV_GPU_UUID)) c.gpu_uuid = uuid;
  c.configured = c.memory_limited || c.pacing || c.broken;
}

}  // namespace vgpu_cuda
