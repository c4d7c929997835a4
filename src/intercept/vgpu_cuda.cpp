// libvgpu-cuda.so: LD_PRELOAD interposer that enforces a virtual GPU's memory
// limit inside CUDA programs (see include/apt/vgpu/intercept/abi.h for the
// contract with the runtime, and docs/intercept.md).
//
// Every hooked driver entry point comes from VGPU_CUDA_HOOKS. Programs reach a
// hook three ways, all covered: direct linking (the preloaded symbol wins),
// dlsym() on a handle to libcuda (our dlsym returns the hook), and
// cuGetProcAddress / cuGetProcAddress_v2 (the runtime's way since CUDA 12; we
// return the hook in place of the driver's pointer). Nothing throws across
// the C ABI; without configuration every hook is a pass-through.
#include "cuda_driver_api.h"

#include <apt/vgpu/intercept/abi.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <pthread.h>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#define VGPU_EXPORT __attribute__((visibility("default")))

namespace {

// ---- configuration and logging ------------------------------------------------
enum class Level { error = 0, warn = 1, notice = 2, info = 3, debug = 4 };

struct Config {
  bool configured = false;   // any limit applies
  bool broken = false;       // configuration invalid: refuse CUDA calls
  bool memory_limited = false;
  std::uint64_t memory_limit = 0;
  bool pacing = false;       // a compute share applies
  double compute_share = 0;
  bool burst = false;        // may use idle GPU time beyond the share
  std::string shm_name;
  std::string gpu_shm_name;  // the GPU's pacing region (burst coordination), when given
  std::string gpu_uuid;
  std::string id = "vgpu";
  Level level = Level::notice;
};

Config g_config;
pthread_once_t g_once = PTHREAD_ONCE_INIT;

void log(Level level, const char* format, ...) __attribute__((format(printf, 2, 3)));
void log(Level level, const char* format, ...) {
  if (static_cast<int>(level) > static_cast<int>(g_config.level)) return;
  char line[512];
  va_list args;
  va_start(args, format);
  const int n = std::vsnprintf(line, sizeof line, format, args);
  va_end(args);
  if (n <= 0) return;
  char out[640];
  const int m = std::snprintf(out, sizeof out, "vgpu-cuda[%s pid %d]: %s\n", g_config.id.c_str(), static_cast<int>(::getpid()), line);
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
  if (errno != 0 || end == nullptr || *end != '\0' || text[0] == '-') return false;
  out = v;
  return true;
}

// ---- the real driver ------------------------------------------------------------
using DlsymFn = void* (*)(void*, const char*);

DlsymFn real_dlsym() {
  static DlsymFn fn = [] {
    auto f = reinterpret_cast<DlsymFn>(::dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34"));
    if (f == nullptr) f = reinterpret_cast<DlsymFn>(::dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5"));
    return f;
  }();
  return fn;
}

using GetProcFn = CUresult (*)(const char*, void**, int, cuuint64_t);
using GetProcV2Fn = CUresult (*)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);

struct RealDriver {
#define VGPU_REAL_POINTER(sym, base, ret, params, args) ret(*sym) params = nullptr;
  VGPU_CUDA_HOOKS(VGPU_REAL_POINTER)
#undef VGPU_REAL_POINTER
#define VGPU_REAL_PTSZ(sym, base, ret, params, args) ret(*sym##_ptsz) params = nullptr;
  VGPU_CUDA_HOOKS(VGPU_REAL_PTSZ)
#undef VGPU_REAL_PTSZ
  GetProcFn cuGetProcAddress = nullptr;
  GetProcV2Fn cuGetProcAddress_v2 = nullptr;
};

RealDriver g_real;
void* g_libcuda = nullptr;

void resolve_real() {
  const char* path = std::getenv("VGPU_REAL_LIBCUDA");
  g_libcuda = ::dlopen(path != nullptr && *path != '\0' ? path : "libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (g_libcuda == nullptr) {
    log(Level::debug, "libcuda.so.1 not loadable (%s); hooks will report CUDA_ERROR_NOT_INITIALIZED", ::dlerror());
    return;
  }
  DlsymFn lookup = real_dlsym();
#define VGPU_RESOLVE(sym, base, ret, params, args)                                   \
  g_real.sym = reinterpret_cast<ret(*) params>(lookup(g_libcuda, #sym));            \
  g_real.sym##_ptsz = reinterpret_cast<ret(*) params>(lookup(g_libcuda, #sym "_ptsz"));
  VGPU_CUDA_HOOKS(VGPU_RESOLVE)
#undef VGPU_RESOLVE
  g_real.cuGetProcAddress = reinterpret_cast<GetProcFn>(lookup(g_libcuda, "cuGetProcAddress"));
  g_real.cuGetProcAddress_v2 = reinterpret_cast<GetProcV2Fn>(lookup(g_libcuda, "cuGetProcAddress_v2"));
}

// ---- the shared accounting region -------------------------------------------------
vgpu_shm_region g_local_region{};  // when no VGPU_SHM_NAME: this process alone
vgpu_shm_region* g_region = &g_local_region;
vgpu_shm_slot* g_slot = nullptr;
pid_t g_slot_pid = 0;

// getpid() is a system call; keep it, refreshed in forked children.
pid_t g_pid = ::getpid();
void refresh_pid() { g_pid = ::getpid(); }

// A process's start time (clock ticks since boot, /proc/PID/stat field 22), low 32
// bits; 0 when it cannot be read.
std::uint32_t start_time_of(const char* stat_path) {
  const int fd = ::open(stat_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char text[1024];
  const ssize_t n = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  if (n <= 0) return 0;
  text[n] = '\0';
  const char* p = std::strrchr(text, ')');  // the command may hold spaces and parentheses
  if (p == nullptr) return 0;
  // Fields after ")": state is field 3, starttime field 22.
  for (int field = 3; field <= 22 && p != nullptr; ++field) p = std::strchr(p + 1, ' ');  // p: the space before it
  if (p == nullptr) return 0;
  return static_cast<std::uint32_t>(std::strtoull(p + 1, nullptr, 10));
}

// Whether the slot's process still runs: its pid exists and, when the slot knows its
// start time, started then (a recycled pid belongs to another process).
bool slot_process_alive(std::int32_t pid, std::uint32_t start_time) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  if (start_time == 0) return true;  // being claimed, or written by a process that could not tell
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const std::uint32_t now = start_time_of(path);
  return now == 0 || now == start_time;  // unreadable: assume alive
}

// Subtracts without ever wrapping: the slice total and a slot are changed in two
// steps, so a process killed between them can leave them skewed, and a wrapped
// total ("17 TB in use") would refuse every allocation from then on. Clamped at 0.
void subtract_saturating(std::uint64_t* counter, std::uint64_t bytes) {
  std::uint64_t current = __atomic_load_n(counter, __ATOMIC_ACQUIRE);
  while (!__atomic_compare_exchange_n(counter, &current, current - std::min(current, bytes), true, __ATOMIC_ACQ_REL,
                                      __ATOMIC_ACQUIRE)) {
  }
}

// Reclaim is serialised by an open-file-description lock on the region's
// `reclaim_lock` bytes, which the kernel drops when its holder dies: a process
// killed in the middle of a reclaim no longer leaves the region un-reclaimable
// forever, as a flag in shared memory did. The descriptor is this process's own
// (re-opened after a fork: a child shares its parent's description, and so its
// locks), and threads of one process take turns on a mutex first.
int g_region_fd = -1;
pid_t g_region_fd_pid = 0;
std::mutex g_reclaim_mutex;

bool lock_reclaim(bool lock) {
  if (g_region_fd < 0) return true;  // this process's own region: the mutex suffices
  if (lock && g_region_fd_pid != g_pid) {
    const int fd = ::shm_open(g_config.shm_name.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) return false;
    ::close(g_region_fd);
    g_region_fd = fd;
    g_region_fd_pid = g_pid;
  }
  struct flock range {};
  range.l_type = lock ? F_WRLCK : F_UNLCK;
  range.l_whence = SEEK_SET;
  range.l_start = static_cast<off_t>(offsetof(vgpu_shm_region, reclaim_lock));
  range.l_len = sizeof(std::uint32_t);
  return ::fcntl(g_region_fd, F_OFD_SETLK, &range) == 0;
}

void reclaim_dead_slots() {
  vgpu_shm_region* r = g_region;
  std::unique_lock<std::mutex> in_process(g_reclaim_mutex, std::try_to_lock);
  if (!in_process.owns_lock() || !lock_reclaim(true)) return;  // someone else is reclaiming now
  for (vgpu_shm_slot& s : r->slots) {
    const std::int32_t pid = __atomic_load_n(&s.pid, __ATOMIC_ACQUIRE);
    if (pid == 0 || pid == g_pid) continue;
    if (slot_process_alive(pid, __atomic_load_n(&s.start_time, __ATOMIC_ACQUIRE))) continue;
    const std::uint64_t bytes = __atomic_exchange_n(&s.used_bytes, 0ULL, __ATOMIC_ACQ_REL);
    subtract_saturating(&r->used_bytes, bytes);
    __atomic_store_n(&s.start_time, 0U, __ATOMIC_RELEASE);
    __atomic_store_n(&s.pid, 0, __ATOMIC_RELEASE);
    if (bytes > 0) log(Level::notice, "reclaimed %llu bytes left by exited process %d", static_cast<unsigned long long>(bytes), pid);
  }
  (void)lock_reclaim(false);
}

// One slot per process: threads that allocate at once must not each claim one.
std::mutex g_slot_mutex;

vgpu_shm_slot* my_slot() {
  std::lock_guard<std::mutex> lock(g_slot_mutex);
  const pid_t me = g_pid;
  if (g_slot != nullptr && g_slot_pid == me) return g_slot;
  for (int attempt = 0; attempt < 2; ++attempt) {
    for (vgpu_shm_slot& s : g_region->slots) {
      std::int32_t expected = 0;
      if (__atomic_compare_exchange_n(&s.pid, &expected, static_cast<std::int32_t>(me), false, __ATOMIC_ACQ_REL,
                                      __ATOMIC_RELAXED)) {
        __atomic_store_n(&s.used_bytes, 0ULL, __ATOMIC_RELEASE);
        __atomic_store_n(&s.start_time, start_time_of("/proc/self/stat"), __ATOMIC_RELEASE);
        g_slot = &s;
        g_slot_pid = me;
        return g_slot;
      }
    }
    reclaim_dead_slots();
  }
  return nullptr;
}

bool open_region() {
  if (g_config.shm_name.empty()) {
    g_local_region.magic = VGPU_SHM_MAGIC;
    g_local_region.abi_version = VGPU_ABI_VERSION;
    g_local_region.memory_limit = g_config.memory_limit;
    return true;
  }
  // The node's authority (vgpud, or the embedded runtime) creates every region
  // and writes its header first; this library never creates one, so a name
  // that does not exist, or holds something else, is refused.
  const int fd = ::shm_open(g_config.shm_name.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) {
    log(Level::error, "cannot open the slice's shared memory %s: %s (it is created by vgpud or the vgpu runtime; "
                      "start work with 'vgpu run')", g_config.shm_name.c_str(), std::strerror(errno));
    return false;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) < sizeof(vgpu_shm_region)) {
    log(Level::error, "shared memory %s is not a vgpu accounting region (size %lld)", g_config.shm_name.c_str(),
        static_cast<long long>(st.st_size));
    ::close(fd);
    return false;
  }
  void* p = ::mmap(nullptr, sizeof(vgpu_shm_region), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    log(Level::error, "cannot map shared memory %s: %s", g_config.shm_name.c_str(), std::strerror(errno));
    ::close(fd);
    return false;
  }
  g_region_fd = fd;  // kept open: reclaim locks a byte range of it
  g_region_fd_pid = g_pid;
  auto* r = static_cast<vgpu_shm_region*>(p);
  if (__atomic_load_n(&r->magic, __ATOMIC_ACQUIRE) != VGPU_SHM_MAGIC || r->abi_version != VGPU_ABI_VERSION) {
    log(Level::error, "shared memory %s has magic 0x%x, ABI %u; expected 0x%x, ABI %u (a library from another "
                      "release?)", g_config.shm_name.c_str(), r->magic, r->abi_version, VGPU_SHM_MAGIC, VGPU_ABI_VERSION);
    ::munmap(p, sizeof(vgpu_shm_region));
    ::close(g_region_fd);
    g_region_fd = -1;
    return false;
  }
  // A region created without a limit takes the first limit a process brings.
  std::uint64_t none = 0;
  (void)__atomic_compare_exchange_n(&r->memory_limit, &none, g_config.memory_limit, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
  g_region = r;
  reclaim_dead_slots();
  return true;
}


// ---- compute pacing -----------------------------------------------------------------
// Launches are held while the slice has used more GPU time than its share over
// a 100 ms window. GPU time is measured, not counted: an event is recorded on
// the launch's stream just before and just after each kernel, and the elapsed
// time between them (when both have completed) is drawn from a token bucket
// shared by all the slice's processes. The bucket refills at `share` GPU-ns per
// wall-ns, up to share x window (so a slice idle for a while can run a short
// burst at full speed).
using EventCreateFn = CUresult (*)(CUevent*, unsigned int);
using EventRecordFn = CUresult (*)(CUevent, CUstream);
using EventQueryFn = CUresult (*)(CUevent);
using EventElapsedFn = CUresult (*)(float*, CUevent, CUevent);

constexpr std::int64_t kWindowNs = 100'000'000;
constexpr std::size_t kMaxInFlight = 32;

using StreamIsCapturingFn = CUresult (*)(CUstream, int*);

struct Pacer {
  EventCreateFn create = nullptr;
  StreamIsCapturingFn is_capturing = nullptr;       // cuStreamIsCapturing (absent on old drivers)
  StreamIsCapturingFn is_capturing_ptsz = nullptr;
  EventRecordFn record = nullptr;
  EventRecordFn record_ptsz = nullptr;
  EventQueryFn query = nullptr;
  EventQueryFn synchronize = nullptr;
  EventElapsedFn elapsed = nullptr;
  std::mutex mutex;
  std::vector<CUevent> spare;
  std::vector<std::pair<CUevent, CUevent>> in_flight;  // oldest first
  std::size_t head = 0;                                // first live entry of in_flight
  const void* in_flight_stream = nullptr;              // the stream of every in-flight pair, when one_stream
  bool one_stream = true;
  std::uint32_t harvest_every = 1;                     // launches between collections (see harvest())
  std::uint32_t until_harvest = 0;                     // launches left before the next collection
  double mean_kernel_ns = 1e9;                         // moving average of measured kernel time
  vgpu_gpu_region* gpu = nullptr;                      // the slices sharing this GPU
  std::uint64_t key = 0;
  vgpu_gpu_slot* my_gpu_slot = nullptr;
  std::int64_t used_since_publish = 0;
  std::int64_t last_publish_ns = 0;
  double usage = 0;
  std::uint64_t launches = 0;
  std::int64_t now = 0;  // the last clock reading
};

Pacer g_pacer;
thread_local bool t_ptsz = false;  // the current hook is a per-thread-default-stream variant

std::int64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t budget_cap() { return static_cast<std::int64_t>(g_config.compute_share * kWindowNs); }

void refill(std::int64_t now) {
  std::int64_t last = __atomic_load_n(&g_region->gpu_refill_ns, __ATOMIC_ACQUIRE);
  if (last == 0) {
    // First process of the slice: start with a full bucket.
    if (__atomic_compare_exchange_n(&g_region->gpu_refill_ns, &last, now, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      __atomic_store_n(&g_region->gpu_budget_ns, budget_cap(), __ATOMIC_RELEASE);
    }
    return;
  }
  if (now <= last) return;
  if (!__atomic_compare_exchange_n(&g_region->gpu_refill_ns, &last, now, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    return;  // another thread or process refilled
  }
  const auto add = static_cast<std::int64_t>(g_config.compute_share * static_cast<double>(now - last));
  std::int64_t budget = __atomic_add_fetch(&g_region->gpu_budget_ns, add, __ATOMIC_ACQ_REL);
  while (budget > budget_cap() &&
         !__atomic_compare_exchange_n(&g_region->gpu_budget_ns, &budget, budget_cap(), true, __ATOMIC_ACQ_REL,
                                      __ATOMIC_ACQUIRE)) {
  }
}

// Draws the GPU time of finished kernels from the bucket. Called with the pacer's mutex held.
void harvest(bool wait_for_oldest, std::int64_t now) {
  Pacer& p = g_pacer;
  // When every pair in flight is on one stream, the newest having finished
  // means all have (a stream runs in order): one query answers for the lot.
  const bool all_done = !wait_for_oldest && p.one_stream && p.head < p.in_flight.size() &&
                  p.query(p.in_flight.back().second) == CUDA_SUCCESS;
  std::int64_t measured_ns = 0;
  std::size_t measured = 0;
  while (p.head < p.in_flight.size()) {
    auto [start, end] = p.in_flight[p.head];
    if (wait_for_oldest) {
      (void)p.synchronize(end);
      wait_for_oldest = false;
    } else if (!all_done && p.query(end) != CUDA_SUCCESS) {
      break;
    }
    float ms = 0;
    if (p.elapsed(&ms, start, end) == CUDA_SUCCESS && ms >= 0) {
      const auto ns = static_cast<std::int64_t>(static_cast<double>(ms) * 1e6);
      measured_ns += ns;
      ++measured;
    }
    p.spare.push_back(start);
    p.spare.push_back(end);
    ++p.head;
  }
  if (measured_ns > 0) {
    __atomic_fetch_sub(&g_region->gpu_budget_ns, measured_ns, __ATOMIC_ACQ_REL);
    __atomic_fetch_add(&g_region->gpu_time_ns, static_cast<std::uint64_t>(measured_ns), __ATOMIC_ACQ_REL);
    p.used_since_publish += measured_ns;
  }
  if (measured > 0) {
    // Collecting every launch costs a query per kernel. For short kernels,
    // collect every 8th launch instead: the bucket then lags the GPU by under
    // 8 x 100 us, well inside the window. Long kernels are collected at once
    // so that a slice cannot overshoot by several of them.
    const double mean = static_cast<double>(measured_ns) / static_cast<double>(measured);
    p.mean_kernel_ns = p.mean_kernel_ns * 0.75 + mean * 0.25;
    p.harvest_every = p.mean_kernel_ns < 100'000 ? 8 : 1;
  }
  if (p.head == p.in_flight.size()) {
    p.in_flight.clear();
    p.head = 0;
  }
  // Publish recent use (a moving average over about one window) for burst decisions.
  if (p.my_gpu_slot != nullptr && now - p.last_publish_ns >= 10'000'000) {
    const double dt = static_cast<double>(now - p.last_publish_ns);
    const double rate = p.last_publish_ns == 0 ? 0.0 : static_cast<double>(p.used_since_publish) / dt;
    const double alpha = std::min(1.0, dt / static_cast<double>(kWindowNs));
    p.usage = p.usage * (1.0 - alpha) + rate * alpha;
    __atomic_store_n(&p.my_gpu_slot->usage_milli, static_cast<std::uint32_t>(std::clamp(p.usage, 0.0, 1.0) * 1000), __ATOMIC_RELEASE);
    p.used_since_publish = 0;
    p.last_publish_ns = now;
  }
}

// Burst is allowed while no other slice on the GPU is short of its share: one
// that wants time (launched within 20 ms), is not being held back by its own
// share, and uses less than it. Slices at their cap or idle leave time unused.
bool another_slice_is_short(std::int64_t now) {
  if (g_pacer.gpu == nullptr) return true;  // cannot see the others: do not burst
  constexpr std::int64_t kRecent = 20'000'000;
  for (const vgpu_gpu_slot& s : g_pacer.gpu->slots) {
    const std::uint64_t key = __atomic_load_n(&s.key, __ATOMIC_ACQUIRE);
    if (key == 0 || key == g_pacer.key) continue;
    if (now - __atomic_load_n(&s.last_demand_ns, __ATOMIC_ACQUIRE) >= kRecent) continue;        // idle
    if (now - __atomic_load_n(&s.last_throttled_ns, __ATOMIC_ACQUIRE) < kRecent) continue;      // at its cap
    const std::uint32_t share = __atomic_load_n(&s.share_milli, __ATOMIC_ACQUIRE);
    const std::uint32_t usage = __atomic_load_n(&s.usage_milli, __ATOMIC_ACQUIRE);
    if (usage + 50 < share) return true;
  }
  return false;
}

void mark(std::int64_t vgpu_gpu_slot::*field, std::int64_t now) {
  if (g_pacer.my_gpu_slot != nullptr) __atomic_store_n(&(g_pacer.my_gpu_slot->*field), now, __ATOMIC_RELEASE);
}

CUevent take_event() {
  Pacer& p = g_pacer;
  if (!p.spare.empty()) {
    CUevent e = p.spare.back();
    p.spare.pop_back();
    return e;
  }
  CUevent e = nullptr;
  return p.create(&e, 0) == CUDA_SUCCESS ? e : nullptr;
}

// Waits for budget, runs `launch`, and brackets it with timing events.
template <class Launch>
CUresult paced(CUstream stream, Launch&& launch) {
  Pacer& p = g_pacer;
  std::unique_lock lock(p.mutex);
  // Finished kernels are collected every launch, or every 8th while kernels
  // are short (see harvest()), so the bucket never lags the GPU by much (a
  // lagging bucket lets a slice overshoot and then stall).
  // The clock is read only every 16th launch (to refill and stamp demand) and
  // while the bucket is empty: clock reads are most of the cost of a launch.
  if (++p.launches % 16 == 0) {
    p.now = monotonic_ns();
    mark(&vgpu_gpu_slot::last_demand_ns, p.now);
    refill(p.now);
  }
  if (p.until_harvest == 0) {
    harvest(false, p.now);
    p.until_harvest = p.harvest_every;
  }
  --p.until_harvest;
  while (__atomic_load_n(&g_region->gpu_budget_ns, __ATOMIC_ACQUIRE) < 0) {
    const std::int64_t now = p.now = monotonic_ns();
    harvest(false, now);
    mark(&vgpu_gpu_slot::last_demand_ns, now);
    refill(now);
    const std::int64_t budget = __atomic_load_n(&g_region->gpu_budget_ns, __ATOMIC_ACQUIRE);
    if (budget >= 0 || (g_config.burst && !another_slice_is_short(now))) break;
    mark(&vgpu_gpu_slot::last_throttled_ns, now);
    // Sleep about as long as the bucket needs to climb back to zero.
    const auto wait = static_cast<std::int64_t>(static_cast<double>(-budget) / g_config.compute_share);
    lock.unlock();
    timespec ts{0, static_cast<long>(std::clamp<std::int64_t>(wait, 50'000, 5'000'000))};
    ::nanosleep(&ts, nullptr);
    lock.lock();
  }
  if (p.in_flight.size() - p.head >= kMaxInFlight) harvest(true, monotonic_ns());  // bound unmeasured work
  // A stream being captured into a CUDA graph runs nothing now: timing events recorded
  // there become graph nodes, and querying them fails (CUDA_ERROR_STREAM_CAPTURE_*). The
  // launch goes into the graph unmeasured; the graph is paced when cuGraphLaunch runs it.
  StreamIsCapturingFn capturing = t_ptsz && p.is_capturing_ptsz != nullptr ? p.is_capturing_ptsz : p.is_capturing;
  int capture_status = 0;  // CU_STREAM_CAPTURE_STATUS_NONE
  if (capturing != nullptr && capturing(stream, &capture_status) == CUDA_SUCCESS && capture_status != 0) {
    return launch();
  }
  EventRecordFn record = t_ptsz && p.record_ptsz != nullptr ? p.record_ptsz : p.record;
  CUevent start = take_event();
  CUevent end = take_event();
  if (start == nullptr || end == nullptr) return launch();  // no events: run unmeasured
  (void)record(start, stream);
  const CUresult rc = launch();
  (void)record(end, stream);
  // The per-thread default stream is a different stream in every thread.
  const void* stream_identity = stream == nullptr && t_ptsz ? static_cast<const void*>(&t_ptsz) : stream;
  if (p.in_flight.size() == p.head) {
    p.in_flight_stream = stream_identity;
    p.one_stream = true;
  } else if (p.in_flight_stream != stream_identity) {
    p.one_stream = false;
  }
  p.in_flight.emplace_back(start, end);
  return rc;
}

std::uint64_t hash_name(const std::string& s) {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  return h == 0 ? 1 : h;
}

bool init_pacing() {
  Pacer& p = g_pacer;
  if (g_libcuda == nullptr) return true;  // no driver: hooks report NOT_INITIALIZED anyway
  DlsymFn lookup = real_dlsym();
  p.create = reinterpret_cast<EventCreateFn>(lookup(g_libcuda, "cuEventCreate"));
  p.is_capturing = reinterpret_cast<StreamIsCapturingFn>(lookup(g_libcuda, "cuStreamIsCapturing"));
  p.is_capturing_ptsz = reinterpret_cast<StreamIsCapturingFn>(lookup(g_libcuda, "cuStreamIsCapturing_ptsz"));
  p.record = reinterpret_cast<EventRecordFn>(lookup(g_libcuda, "cuEventRecord"));
  p.record_ptsz = reinterpret_cast<EventRecordFn>(lookup(g_libcuda, "cuEventRecord_ptsz"));
  p.query = reinterpret_cast<EventQueryFn>(lookup(g_libcuda, "cuEventQuery"));
  p.synchronize = reinterpret_cast<EventQueryFn>(lookup(g_libcuda, "cuEventSynchronize"));
  p.elapsed = reinterpret_cast<EventElapsedFn>(lookup(g_libcuda, "cuEventElapsedTime_v2"));
  if (p.elapsed == nullptr) p.elapsed = reinterpret_cast<EventElapsedFn>(lookup(g_libcuda, "cuEventElapsedTime"));
  if (p.create == nullptr || p.record == nullptr || p.query == nullptr || p.synchronize == nullptr || p.elapsed == nullptr) {
    log(Level::error, "the driver lacks the event API needed to pace launches; refusing CUDA calls");
    return false;
  }
  if (!g_config.gpu_shm_name.empty()) {
    // The GPU's region is created by the node's authority too; without it the
    // slice paces alone (no burst into idle neighbours' shares).
    const int fd = ::shm_open(g_config.gpu_shm_name.c_str(), O_RDWR | O_CLOEXEC, 0);
    struct stat st {};
    if (fd >= 0 && ::fstat(fd, &st) == 0 && static_cast<std::size_t>(st.st_size) >= sizeof(vgpu_gpu_region)) {
      void* m = ::mmap(nullptr, sizeof(vgpu_gpu_region), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (m != MAP_FAILED && __atomic_load_n(&static_cast<vgpu_gpu_region*>(m)->magic, __ATOMIC_ACQUIRE) == VGPU_SHM_MAGIC) {
        p.gpu = static_cast<vgpu_gpu_region*>(m);
      } else if (m != MAP_FAILED) {
        ::munmap(m, sizeof(vgpu_gpu_region));
      }
    }
    if (fd >= 0) ::close(fd);
    if (p.gpu == nullptr) {
      log(Level::warn, "cannot use the GPU's pacing region %s; pacing this slice alone", g_config.gpu_shm_name.c_str());
    }
  }
  if (p.gpu != nullptr) {
    p.key = hash_name(g_config.shm_name.empty() ? std::to_string(::getpid()) : g_config.shm_name);
    for (vgpu_gpu_slot& s : p.gpu->slots) {
      std::uint64_t expected = 0;
      if (__atomic_load_n(&s.key, __ATOMIC_ACQUIRE) == p.key ||
          __atomic_compare_exchange_n(&s.key, &expected, p.key, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        p.my_gpu_slot = &s;
        __atomic_store_n(&s.share_milli, static_cast<std::uint32_t>(g_config.compute_share * 1000), __ATOMIC_RELEASE);
        break;
      }
    }
  }
  return true;
}

void init() {
  Config& c = g_config;
  refresh_pid();
  ::pthread_atfork(nullptr, nullptr, refresh_pid);
  if (const char* level = std::getenv(VGPU_ENV_LOG_LEVEL)) {
    const std::string v(level);
    c.level = v == "error" ? Level::error : v == "warn" ? Level::warn : v == "info" ? Level::info : v == "debug" ? Level::debug : Level::notice;
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
  resolve_real();
  if ((c.memory_limited || c.pacing) && !c.broken && !open_region()) c.broken = true;
  if (c.pacing && !c.broken && !init_pacing()) c.broken = true;
  if (c.pacing && !c.broken) {
    log(Level::info, "compute share %.3f%s", c.compute_share, c.burst ? " (burst into idle time allowed)" : "");
  }
  if (c.memory_limited && !c.broken) {
    log(Level::info, "memory limit %llu bytes (region %s)", static_cast<unsigned long long>(g_region->memory_limit),
        c.shm_name.empty() ? "private" : c.shm_name.c_str());
  }
}

inline void ensure_init() { pthread_once(&g_once, init); }

// ---- admission ----------------------------------------------------------------------
std::uint64_t limit() { return __atomic_load_n(&g_region->memory_limit, __ATOMIC_ACQUIRE); }
std::uint64_t used() { return __atomic_load_n(&g_region->used_bytes, __ATOMIC_ACQUIRE); }

void reconcile_with_driver(bool always);

// Charges `bytes` to the slice if they fit (reclaiming dead processes' shares once).
bool try_admit(std::uint64_t bytes) {
  reconcile_with_driver(false);  // at most once a second: what NVML sees beyond the hooks
  vgpu_shm_slot* slot = my_slot();
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::uint64_t current = used();
    // Written so that no sum can wrap: cuMemAlloc(2^64-1) once passed as "current + bytes <= limit".
    while (bytes <= limit() && current <= limit() - bytes) {
      if (__atomic_compare_exchange_n(&g_region->used_bytes, &current, current + bytes, true, __ATOMIC_ACQ_REL,
                                      __ATOMIC_ACQUIRE)) {
        if (slot != nullptr) __atomic_fetch_add(&slot->used_bytes, bytes, __ATOMIC_ACQ_REL);
        return true;
      }
    }
    reclaim_dead_slots();  // a crashed process may still hold some
  }
  return false;
}

void log_refusal(std::uint64_t bytes, const char* call) {
  log(Level::warn, "%s of %llu bytes refused: %llu of %llu in use on this vGPU (CUDA_ERROR_OUT_OF_MEMORY)", call,
      static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(used()),
      static_cast<unsigned long long>(limit()));
}

std::uint64_t reconcile_pools(bool trim);  // below, with the stream-ordered pools

// Admission: what fits is charged; before refusing, the process's stream-ordered pools
// are trimmed and what they let go is given back, then it looks once more.
bool admit(std::uint64_t bytes, const char* call) {
  if (try_admit(bytes)) return true;
  if (reconcile_pools(/*trim=*/true) != 0 && try_admit(bytes)) return true;
  log_refusal(bytes, call);
  return false;
}

void release(std::uint64_t bytes) {
  subtract_saturating(&g_region->used_bytes, bytes);
  if (vgpu_shm_slot* slot = my_slot()) subtract_saturating(&slot->used_bytes, bytes);
}

// Sizes of live allocations, to return them on free.
std::mutex g_sizes_mutex;
std::unordered_map<unsigned long long, std::uint64_t>& sizes() {
  static auto* m = new std::unordered_map<unsigned long long, std::uint64_t>();  // outlives static destruction
  return *m;
}

// Nothing may throw across the C ABI: if the table cannot grow, the block stays
// charged to the slice (safe) and the loss is logged.
void remember(unsigned long long key, std::uint64_t bytes) noexcept {
  try {
    std::lock_guard lock(g_sizes_mutex);
    sizes()[key] = bytes;
  } catch (...) {
    log(Level::error, "out of host memory recording an allocation of %llu bytes; it stays charged to the vGPU",
        static_cast<unsigned long long>(bytes));
  }
}

std::uint64_t forget(unsigned long long key) noexcept {
  std::lock_guard lock(g_sizes_mutex);
  auto it = sizes().find(key);
  if (it == sizes().end()) return 0;
  const std::uint64_t bytes = it->second;
  sizes().erase(it);
  return bytes;
}

std::uint64_t array_bytes(std::size_t width, std::size_t height, std::size_t depth, int format, unsigned channels) {
  std::uint64_t element = 4;
  switch (format) {
    case 0x01: case 0x08: element = 1; break;               // (un)signed int8
    case 0x02: case 0x09: case 0x10: element = 2; break;     // (un)signed int16, half
    case 0x03: case 0x0a: case 0x20: element = 4; break;     // (un)signed int32, float
    default: element = 8; break;                             // unknown: count generously
  }
  // Checked: a product past 2^64 is more than any GPU holds, so it saturates and is refused.
  std::uint64_t bytes = element;
  for (const std::uint64_t factor : {static_cast<std::uint64_t>(width), static_cast<std::uint64_t>(height == 0 ? 1 : height),
                                     static_cast<std::uint64_t>(depth == 0 ? 1 : depth),
                                     static_cast<std::uint64_t>(channels == 0 ? 1 : channels)}) {
    if (__builtin_mul_overflow(bytes, factor, &bytes)) return UINT64_MAX;
  }
  return bytes;
}

// The checks every hook starts with. Returns true with `rc` set when the call must not proceed.
template <class Fn>
bool refuse(Fn real, CUresult& rc) {
  ensure_init();
  if (g_config.broken) {
    rc = CUDA_ERROR_INVALID_VALUE;
    return true;
  }
  if (real == nullptr) {
    rc = CUDA_ERROR_NOT_INITIALIZED;
    return true;
  }
  return false;
}

// ---- hook bodies (shared by the plain and the _ptsz exports) -------------------------
// Admits `bytes`, runs the allocation, and remembers it under the key it
// produced (a device pointer, a handle, an array), or gives the bytes back.
template <class Fn, class Invoke, class Key>
CUresult admitted(Fn real, std::uint64_t bytes, const char* call, Invoke&& invoke, Key&& key) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.memory_limited) return invoke();
  if (!admit(bytes, call)) return CUDA_ERROR_OUT_OF_MEMORY;
  rc = invoke();
  if (rc != CUDA_SUCCESS) {
    release(bytes);
    return rc;
  }
  remember(key(), bytes);
  return rc;
}

template <class Fn, class Invoke>
CUresult alloc_like(Fn real, CUdeviceptr* dptr, std::uint64_t bytes, const char* call, Invoke&& invoke) {
  return admitted(real, bytes, call, invoke, [dptr] { return *dptr; });
}

// The record is taken out before the real free: once the driver has freed an address
// it may hand it to another thread at once, whose record must not be the one erased
// (that race leaked tens of MiB per 100k frees in multi-threaded programs). A free
// that fails puts the record back.
template <class Fn>
CUresult free_like(Fn real, CUdeviceptr dptr, auto&& invoke) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.memory_limited) return invoke();
  const std::uint64_t bytes = forget(dptr);
  rc = invoke();
  if (rc == CUDA_SUCCESS) {
    release(bytes);
  } else if (bytes != 0) {
    remember(dptr, bytes);
  }
  return rc;
}

template <class Fn>
CUresult pass(Fn real, auto&& invoke) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  return invoke();
}

CUresult do_cuInit(decltype(g_real.cuInit) real, unsigned int flags) {
  return pass(real, [&] { return real(flags); });
}
CUresult do_cuMemAlloc_v2(decltype(g_real.cuMemAlloc_v2) real, CUdeviceptr* dptr, size_t bytes) {
  return alloc_like(real, dptr, bytes, "cuMemAlloc", [&] { return real(dptr, bytes); });
}
CUresult do_cuMemAllocPitch_v2(decltype(g_real.cuMemAllocPitch_v2) real, CUdeviceptr* dptr, size_t* pitch,
                               size_t width, size_t height, unsigned int element) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.memory_limited) return real(dptr, pitch, width, height, element);
  // The driver pads rows; admit the unpadded size first, then the padding.
  std::uint64_t base = 0;
  if (__builtin_mul_overflow(static_cast<std::uint64_t>(width), static_cast<std::uint64_t>(height), &base)) {
    return CUDA_ERROR_OUT_OF_MEMORY;  // more than 2^64 bytes
  }
  if (!admit(base, "cuMemAllocPitch")) return CUDA_ERROR_OUT_OF_MEMORY;
  rc = real(dptr, pitch, width, height, element);
  if (rc != CUDA_SUCCESS) {
    release(base);
    return rc;
  }
  const std::uint64_t actual = static_cast<std::uint64_t>(*pitch) * height;
  if (actual > base && !admit(actual - base, "cuMemAllocPitch (row padding)")) {
    if (g_real.cuMemFree_v2 != nullptr) (void)g_real.cuMemFree_v2(*dptr);
    release(base);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  remember(*dptr, actual > base ? actual : base);
  return rc;
}
CUresult do_cuMemAllocManaged(decltype(g_real.cuMemAllocManaged) real, CUdeviceptr* dptr, size_t bytes,
                              unsigned int flags) {
  return alloc_like(real, dptr, bytes, "cuMemAllocManaged", [&] { return real(dptr, bytes, flags); });
}
// ---- stream-ordered pools ----
// cuMemFreeAsync gives a block back to its pool, and a pool keeps freed memory up to
// its release threshold: PyTorch's cudaMallocAsync backend, RMM and CuPy set it to
// the maximum, so the memory stays on the GPU. Such bytes stay charged to the slice
// ("pool-held") and are used first by the process's next stream-ordered allocations.
// They are given back when the pools are seen to hold less: cuMemGetInfo and every
// refused admission read what the pools really reserve (CU_MEMPOOL_ATTR_RESERVED_MEM_
// CURRENT, less the live stream-ordered blocks), and a refusal first trims the pools
// (cuMemPoolTrimTo), as the driver would under memory pressure.
constexpr int kPoolAttrReservedCurrent = 5;  // CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT
using CtxGetDeviceFn = CUresult (*)(CUdevice*);
using DeviceGetMemPoolFn = CUresult (*)(CUmemoryPool*, CUdevice);
using PoolTrimFn = CUresult (*)(CUmemoryPool, size_t);
using PoolGetAttributeFn = CUresult (*)(CUmemoryPool, int, void*);

struct PoolBook {
  std::mutex mutex;
  std::uint64_t held = 0;        // freed into pools, still charged
  std::uint64_t live = 0;        // stream-ordered blocks alive, charged
  std::vector<CUmemoryPool> pools;  // explicit pools seen (cuMemAllocFromPoolAsync)
  CtxGetDeviceFn ctx_device = nullptr;
  DeviceGetMemPoolFn device_pool = nullptr;
  PoolTrimFn trim = nullptr;
  PoolGetAttributeFn get_attribute = nullptr;
  bool resolved = false;
};
PoolBook& pool_book() {
  static auto* b = new PoolBook();  // outlives static destruction
  return *b;
}

// What the process's pools reserve now (after trimming them when `trim`), or -1
// when the driver cannot tell. Called with the book's mutex held.
long double pools_reserved_locked(PoolBook& b, bool trim) {
  if (!b.resolved) {
    const DlsymFn lookup = real_dlsym();
    b.ctx_device = reinterpret_cast<CtxGetDeviceFn>(lookup(g_libcuda, "cuCtxGetDevice"));
    b.device_pool = reinterpret_cast<DeviceGetMemPoolFn>(lookup(g_libcuda, "cuDeviceGetMemPool"));
    b.trim = reinterpret_cast<PoolTrimFn>(lookup(g_libcuda, "cuMemPoolTrimTo"));
    b.get_attribute = reinterpret_cast<PoolGetAttributeFn>(lookup(g_libcuda, "cuMemPoolGetAttribute"));
    b.resolved = true;
  }
  if (b.ctx_device == nullptr || b.device_pool == nullptr || b.get_attribute == nullptr) return -1;
  std::vector<CUmemoryPool> pools = b.pools;
  CUdevice device = 0;
  CUmemoryPool current = nullptr;
  if (b.ctx_device(&device) == CUDA_SUCCESS && b.device_pool(&current, device) == CUDA_SUCCESS && current != nullptr &&
      std::find(pools.begin(), pools.end(), current) == pools.end()) {
    pools.push_back(current);
  }
  long double reserved = 0;
  for (CUmemoryPool pool : pools) {
    if (trim && b.trim != nullptr) (void)b.trim(pool, 0);
    cuuint64_t value = 0;
    if (b.get_attribute(pool, kPoolAttrReservedCurrent, &value) != CUDA_SUCCESS) return -1;
    reserved += static_cast<long double>(value);
  }
  return reserved;
}

// Lowers the pool-held charge to what the pools really keep; returns the bytes given back.
std::uint64_t reconcile_pools(bool trim) {
  PoolBook& b = pool_book();
  std::uint64_t give_back = 0;
  {
    std::lock_guard<std::mutex> lock(b.mutex);
    if (b.held == 0) return 0;
    const long double reserved = pools_reserved_locked(b, trim);
    if (reserved < 0) return 0;
    const long double cached = reserved > static_cast<long double>(b.live) ? reserved - static_cast<long double>(b.live) : 0;
    if (cached < static_cast<long double>(b.held)) {
      give_back = b.held - static_cast<std::uint64_t>(cached);
      b.held -= give_back;
    }
  }
  if (give_back != 0) release(give_back);
  return give_back;
}

// A stream-ordered allocation: pool-held bytes first, then admission (trimming the
// pools before refusing).
template <class Invoke>
CUresult pooled_alloc(CUdeviceptr* dptr, std::uint64_t bytes, const char* call, CUmemoryPool explicit_pool,
                      Invoke&& invoke) {
  PoolBook& b = pool_book();
  std::uint64_t taken = 0;
  {
    std::lock_guard<std::mutex> lock(b.mutex);
    if (explicit_pool != nullptr && std::find(b.pools.begin(), b.pools.end(), explicit_pool) == b.pools.end()) {
      b.pools.push_back(explicit_pool);
    }
    taken = std::min(b.held, bytes);
    b.held -= taken;
  }
  const std::uint64_t need = bytes - taken;
  auto put_back = [&] {
    std::lock_guard<std::mutex> lock(b.mutex);
    b.held += taken;
  };
  if (need != 0 && !try_admit(need)) {
    // Give the pools' idle memory back to the device, and to the slice, then look again.
    put_back();
    taken = 0;
    if (reconcile_pools(/*trim=*/true) == 0) {
      log_refusal(need, call);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return pooled_alloc(dptr, bytes, call, explicit_pool, std::forward<Invoke>(invoke));
  }
  const CUresult rc = invoke();
  if (rc != CUDA_SUCCESS) {
    if (need != 0) release(need);
    put_back();
    return rc;
  }
  remember(*dptr, bytes);
  std::lock_guard<std::mutex> lock(b.mutex);
  b.live += bytes;
  return rc;
}

CUresult do_cuMemAllocAsync(decltype(g_real.cuMemAllocAsync) real, CUdeviceptr* dptr, size_t bytes, CUstream s) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.memory_limited) return real(dptr, bytes, s);
  return pooled_alloc(dptr, bytes, "cuMemAllocAsync", nullptr, [&] { return real(dptr, bytes, s); });
}
CUresult do_cuMemAllocFromPoolAsync(decltype(g_real.cuMemAllocFromPoolAsync) real, CUdeviceptr* dptr, size_t bytes,
                                    CUmemoryPool pool, CUstream s) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.memory_limited) return real(dptr, bytes, pool, s);
  return pooled_alloc(dptr, bytes, "cuMemAllocFromPoolAsync", pool, [&] { return real(dptr, bytes, pool, s); });
}
CUresult do_cuMemFree_v2(decltype(g_real.cuMemFree_v2) real, CUdeviceptr dptr) {
  return free_like(real, dptr, [&] { return real(dptr); });
}
// The block goes back to its pool, which may keep it: its bytes stay charged as
// pool-held (see "stream-ordered pools" above) instead of returning to the slice.
CUresult do_cuMemFreeAsync(decltype(g_real.cuMemFreeAsync) real, CUdeviceptr dptr, CUstream s) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.memory_limited) return real(dptr, s);
  const std::uint64_t bytes = forget(dptr);
  rc = real(dptr, s);
  if (rc != CUDA_SUCCESS) {
    if (bytes != 0) remember(dptr, bytes);
    return rc;
  }
  PoolBook& b = pool_book();
  std::lock_guard<std::mutex> lock(b.mutex);
  b.live -= std::min(b.live, bytes);
  b.held += bytes;
  return rc;
}
CUresult do_cuMemCreate(decltype(g_real.cuMemCreate) real, CUmemGenericAllocationHandle* handle, size_t bytes,
                        const CUmemAllocationProp* prop, unsigned long long flags) {
  return admitted(real, bytes, "cuMemCreate", [&] { return real(handle, bytes, prop, flags); },
                  [handle] { return *handle; });
}
// Physical memory from cuMemCreate stays allocated until its handle is released AND
// its last mapping is unmapped: cuMemRelease while mapped (llama.cpp's VMM pool does
// it) gives nothing back yet. Mappings are kept by start address.
struct VmmHandle {
  std::uint32_t mappings = 0;
  bool released = false;
};
std::mutex g_vmm_mutex;
std::unordered_map<unsigned long long, VmmHandle>& vmm_handles() {
  static auto* m = new std::unordered_map<unsigned long long, VmmHandle>();  // outlives static destruction
  return *m;
}
std::map<unsigned long long, std::pair<unsigned long long, std::uint64_t>>& vmm_mappings() {  // ptr -> (handle, size)
  static auto* m = new std::map<unsigned long long, std::pair<unsigned long long, std::uint64_t>>();
  return *m;
}

CUresult do_cuMemRelease(decltype(g_real.cuMemRelease) real, CUmemGenericAllocationHandle handle) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (g_config.memory_limited) {
    std::lock_guard<std::mutex> lock(g_vmm_mutex);
    auto it = vmm_handles().find(handle);
    if (it != vmm_handles().end() && it->second.mappings > 0) {
      rc = real(handle);
      if (rc == CUDA_SUCCESS) it->second.released = true;  // counted until the last unmap
      return rc;
    }
    vmm_handles().erase(handle);
  }
  return free_like(real, handle, [&] { return real(handle); });
}
CUresult do_cuMemMap(decltype(g_real.cuMemMap) real, CUdeviceptr ptr, size_t size, size_t offset,
                     CUmemGenericAllocationHandle handle, unsigned long long flags) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  rc = real(ptr, size, offset, handle, flags);
  if (rc != CUDA_SUCCESS || !g_config.memory_limited) return rc;
  std::lock_guard<std::mutex> lock(g_vmm_mutex);
  ++vmm_handles()[handle].mappings;
  vmm_mappings()[ptr] = {handle, size};
  return rc;
}
CUresult do_cuMemUnmap(decltype(g_real.cuMemUnmap) real, CUdeviceptr ptr, size_t size) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  rc = real(ptr, size);
  if (rc != CUDA_SUCCESS || !g_config.memory_limited) return rc;
  std::vector<unsigned long long> freed;  // handles released whose last mapping went
  {
    std::lock_guard<std::mutex> lock(g_vmm_mutex);
    auto& mappings = vmm_mappings();
    for (auto it = mappings.lower_bound(ptr); it != mappings.end() && it->first < ptr + size;) {
      const unsigned long long handle = it->second.first;
      it = mappings.erase(it);
      auto h = vmm_handles().find(handle);
      if (h == vmm_handles().end()) continue;
      if (h->second.mappings > 0) --h->second.mappings;
      if (h->second.mappings == 0 && h->second.released) {
        vmm_handles().erase(h);
        freed.push_back(handle);
      }
    }
  }
  for (const unsigned long long handle : freed) release(forget(handle));
  return rc;
}
CUresult do_cuArrayCreate_v2(decltype(g_real.cuArrayCreate_v2) real, CUarray* array, const CUDA_ARRAY_DESCRIPTOR* d) {
  if (d == nullptr) return pass(real, [&] { return real(array, d); });
  return admitted(real, array_bytes(d->Width, d->Height, 1, d->Format, d->NumChannels), "cuArrayCreate",
                  [&] { return real(array, d); }, [array] { return reinterpret_cast<unsigned long long>(*array); });
}
CUresult do_cuArray3DCreate_v2(decltype(g_real.cuArray3DCreate_v2) real, CUarray* array,
                               const CUDA_ARRAY3D_DESCRIPTOR* d) {
  if (d == nullptr) return pass(real, [&] { return real(array, d); });
  return admitted(real, array_bytes(d->Width, d->Height, d->Depth, d->Format, d->NumChannels), "cuArray3DCreate",
                  [&] { return real(array, d); }, [array] { return reinterpret_cast<unsigned long long>(*array); });
}
CUresult do_cuArrayDestroy(decltype(g_real.cuArrayDestroy) real, CUarray array) {
  return free_like(real, reinterpret_cast<unsigned long long>(array), [&] { return real(array); });
}
CUresult do_cuMemGetInfo_v2(decltype(g_real.cuMemGetInfo_v2) real, size_t* free_bytes, size_t* total_bytes) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  rc = real(free_bytes, total_bytes);
  if (rc != CUDA_SUCCESS || !g_config.memory_limited) return rc;
  (void)reconcile_pools(/*trim=*/false);  // pools that let memory go no longer count
  reconcile_with_driver(false);           // and what NVML sees beyond the hooks does
  // The vGPU's limit is the device's memory; what the slice has left is what is free.
  const std::uint64_t cap = limit();
  const std::uint64_t in_use = used();
  const std::uint64_t left = in_use >= cap ? 0 : cap - in_use;
  // Never more than the device has: a limit above the physical memory (oversubscription)
  // must not make a framework size its pools for memory that is not there.
  if (total_bytes != nullptr) *total_bytes = static_cast<size_t>(std::min<std::uint64_t>(cap, *total_bytes));
  if (free_bytes != nullptr && left < *free_bytes) *free_bytes = static_cast<size_t>(left);
  return rc;
}
// Launches: a pass-through unless the slice has a compute share (then paced);
// no allocation or lock on the path without one.
CUresult do_cuLaunchKernel(decltype(g_real.cuLaunchKernel) real, CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                           unsigned bx, unsigned by, unsigned bz, unsigned shared, CUstream s, void** params,
                           void** extra) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.pacing) return real(f, gx, gy, gz, bx, by, bz, shared, s, params, extra);
  return paced(s, [&] { return real(f, gx, gy, gz, bx, by, bz, shared, s, params, extra); });
}
CUresult do_cuLaunchKernelEx(decltype(g_real.cuLaunchKernelEx) real, const CUlaunchConfig* config, CUfunction f,
                             void** params, void** extra) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.pacing) return real(config, f, params, extra);
  return paced(config != nullptr ? config->hStream : nullptr, [&] { return real(config, f, params, extra); });
}
CUresult do_cuLaunchCooperativeKernel(decltype(g_real.cuLaunchCooperativeKernel) real, CUfunction f, unsigned gx,
                                      unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                      unsigned shared, CUstream s, void** params) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.pacing) return real(f, gx, gy, gz, bx, by, bz, shared, s, params);
  return paced(s, [&] { return real(f, gx, gy, gz, bx, by, bz, shared, s, params); });
}
CUresult do_cuGraphLaunch(decltype(g_real.cuGraphLaunch) real, CUgraphExec graph, CUstream s) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.pacing) return real(graph, s);
  return paced(s, [&] { return real(graph, s); });
}


// ---- NVML memory queries made by the process ----------------------------------------
// A process that asks NVML about its own GPU (pynvml in a training script, a
// framework's memory report) sees the slice: the limit as total, the slice's
// use as used. Other GPUs, and processes without a memory limit, see NVML's answer.
struct NvmlMemory {
  unsigned long long total, free, used;
};
struct NvmlMemoryV2 {
  unsigned int version;
  unsigned long long total, reserved, free, used;
};
using NvmlMemoryFn = int (*)(void*, NvmlMemory*);
using NvmlMemoryV2Fn = int (*)(void*, NvmlMemoryV2*);
using NvmlUuidFn = int (*)(void*, char*, unsigned int);

std::atomic<void*> g_nvml_memory{nullptr};     // the real functions, as found by dlsym or RTLD_NEXT
std::atomic<void*> g_nvml_memory_v2{nullptr};

// The NVML library to use: $VGPU_REAL_LIBNVML (tests), else the driver's.
const char* nvml_library() {
  const char* path = std::getenv("VGPU_REAL_LIBNVML");
  return path != nullptr && *path != '\0' ? path : "libnvidia-ml.so.1";
}

void* nvml_real(const char* name, std::atomic<void*>& cached) {
  if (void* p = cached.load()) return p;
  void* p = real_dlsym()(RTLD_NEXT, name);
  if (p == nullptr) {
    if (void* lib = ::dlopen(nvml_library(), RTLD_NOW | RTLD_NOLOAD)) {
      p = real_dlsym()(lib, name);
    }
  }
  cached.store(p);
  return p;
}

// Whether `device` is this slice's GPU.
bool is_my_gpu(void* device) {
  if (g_config.gpu_uuid.empty()) return false;
  static std::atomic<void*> uuid_fn{nullptr};
  auto get_uuid = reinterpret_cast<NvmlUuidFn>(nvml_real("nvmlDeviceGetUUID", uuid_fn));
  char uuid[96] = {};
  return get_uuid != nullptr && get_uuid(device, uuid, sizeof uuid) == 0 && g_config.gpu_uuid == uuid;
}

// ---- the driver's own figure: a safety net ----------------------------------------
// Whatever this library does not see allocated (the CUDA context, loaded modules,
// paths it does not hook) still takes GPU memory. At most once a second, and before
// any refusal, NVML's per-process figure for this process on the slice's GPU is
// compared with what the library charged it; the difference is charged too (even
// past the limit: the memory is already taken), and given back when it shrinks.
// Without NVML, or without the slice's GPU UUID, the net is off.
struct NvmlProcessInfo {  // nvmlProcessInfo_t, as ..._v2 and _v3 fill it
  unsigned int pid;
  unsigned long long used;
  unsigned int gpu_instance;
  unsigned int compute_instance;
};
using NvmlInitFn = int (*)();
using NvmlCountFn = int (*)(unsigned int*);
using NvmlHandleFn = int (*)(unsigned int, void**);
using NvmlProcessesFn = int (*)(void*, unsigned int*, NvmlProcessInfo*);

struct DriverView {
  std::mutex mutex;
  bool resolved = false;
  void* device = nullptr;
  NvmlProcessesFn processes = nullptr;
  std::uint64_t charged = 0;   // bytes charged because NVML saw more than the library counted
  std::int64_t last_ns = 0;
  bool told = false;
};
DriverView& driver_view() {
  static auto* v = new DriverView();  // outlives static destruction
  return *v;
}

// What NVML says this process holds on the slice's GPU; -1 when it cannot tell.
long long driver_reported_locked(DriverView& v) {
  if (!v.resolved) {
    v.resolved = true;
    if (g_config.gpu_uuid.empty()) return -1;
    void* lib = ::dlopen(nvml_library(), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return -1;
    const DlsymFn find = real_dlsym();
    auto init = reinterpret_cast<NvmlInitFn>(find(lib, "nvmlInit_v2"));
    auto count = reinterpret_cast<NvmlCountFn>(find(lib, "nvmlDeviceGetCount_v2"));
    auto handle = reinterpret_cast<NvmlHandleFn>(find(lib, "nvmlDeviceGetHandleByIndex_v2"));
    auto uuid_of = reinterpret_cast<NvmlUuidFn>(find(lib, "nvmlDeviceGetUUID"));
    auto processes = reinterpret_cast<NvmlProcessesFn>(find(lib, "nvmlDeviceGetComputeRunningProcesses_v3"));
    if (processes == nullptr) processes = reinterpret_cast<NvmlProcessesFn>(find(lib, "nvmlDeviceGetComputeRunningProcesses_v2"));
    unsigned int devices = 0;
    if (init == nullptr || count == nullptr || handle == nullptr || uuid_of == nullptr || processes == nullptr ||
        init() != 0 || count(&devices) != 0) {
      return -1;
    }
    for (unsigned int i = 0; i < devices && v.device == nullptr; ++i) {
      void* device = nullptr;
      char uuid[96] = {};
      if (handle(i, &device) == 0 && uuid_of(device, uuid, sizeof uuid) == 0 && g_config.gpu_uuid == uuid) {
        v.device = device;
      }
    }
    if (v.device != nullptr) v.processes = processes;
  }
  if (v.processes == nullptr) return -1;
  NvmlProcessInfo infos[128];
  unsigned int n = 128;
  if (v.processes(v.device, &n, infos) != 0) return -1;
  const auto me = static_cast<unsigned int>(g_pid);
  for (unsigned int i = 0; i < n && i < 128; ++i) {
    if (infos[i].pid != me) continue;
    return infos[i].used == ~0ULL ? -1 : static_cast<long long>(std::min<unsigned long long>(infos[i].used, 1ULL << 62));
  }
  return 0;  // not listed: NVML lists a process once it has a context
}

// Brings the charge in line with NVML's figure; `always` skips the once-a-second limit.
void reconcile_with_driver(bool always) {
  if (!g_config.memory_limited || g_config.gpu_uuid.empty()) return;
  DriverView& v = driver_view();
  std::int64_t charge = 0;  // > 0: charge more; < 0: give back
  {
    std::unique_lock<std::mutex> lock(v.mutex, std::try_to_lock);
    if (!lock.owns_lock()) return;  // another thread is at it
    const std::int64_t now = monotonic_ns();
    if (!always && now - v.last_ns < 1'000'000'000) return;
    v.last_ns = now;
    const long long reported = driver_reported_locked(v);
    if (reported < 0) return;
    vgpu_shm_slot* slot = my_slot();
    const std::uint64_t mine = slot != nullptr ? __atomic_load_n(&slot->used_bytes, __ATOMIC_ACQUIRE) : 0;
    const std::uint64_t counted = mine > v.charged ? mine - v.charged : 0;  // what the library saw allocated
    const auto target = static_cast<std::uint64_t>(reported) > counted ? static_cast<std::uint64_t>(reported) - counted : 0;
    charge = static_cast<std::int64_t>(target) - static_cast<std::int64_t>(v.charged);
    v.charged = target;
    if (target > 0 && !v.told) {
      v.told = true;
      log(Level::notice, "NVML says this process holds %llu bytes more than it allocated through the hooks "
                         "(its context, modules, or paths not hooked): counted against the slice",
          static_cast<unsigned long long>(target));
    }
  }
  if (charge > 0) {
    // Already on the GPU, so charged even past the limit.
    __atomic_fetch_add(&g_region->used_bytes, static_cast<std::uint64_t>(charge), __ATOMIC_ACQ_REL);
    if (vgpu_shm_slot* slot = my_slot()) __atomic_fetch_add(&slot->used_bytes, static_cast<std::uint64_t>(charge), __ATOMIC_ACQ_REL);
  } else if (charge < 0) {
    release(static_cast<std::uint64_t>(-charge));
  }
}

template <class Memory>
void virtualise(void* device, Memory* m) {
  if (!g_config.memory_limited || m == nullptr || !is_my_gpu(device)) return;
  const std::uint64_t cap = limit();
  const std::uint64_t in_use = std::min(used(), cap);
  m->total = cap;
  m->used = in_use;
  m->free = cap - in_use;
}
}  // namespace

// ---- exported hooks ------------------------------------------------------------------------
extern "C" {

// Nothing throws across the C ABI: an exception (only bad_alloc is possible)
// becomes CUDA_ERROR_UNKNOWN.
#define VGPU_DEFINE_HOOK(sym, base, ret, params, args)                                   \
  VGPU_EXPORT ret sym params {                                                           \
    try {                                                                                \
      ensure_init();                                                                     \
      return do_##sym(g_real.sym, VGPU_UNPACK args);                                     \
    } catch (...) {                                                                      \
      return CUDA_ERROR_UNKNOWN;                                                         \
    }                                                                                    \
  }                                                                                      \
  /* The driver has _ptsz forms of stream functions only: for the rest (cuInit,     */ \
  /* cuMemAlloc...) a per-thread-default-stream lookup gets the plain function.      */ \
  VGPU_EXPORT ret sym##_ptsz params {                                                    \
    ret rc = CUDA_ERROR_UNKNOWN;                                                         \
    try {                                                                                \
      ensure_init();                                                                     \
      if (g_real.sym##_ptsz == nullptr) return do_##sym(g_real.sym, VGPU_UNPACK args);   \
      t_ptsz = true;                                                                     \
      rc = do_##sym(g_real.sym##_ptsz, VGPU_UNPACK args);                                \
    } catch (...) {                                                                      \
    }                                                                                    \
    t_ptsz = false;                                                                      \
    return rc;                                                                           \
  }
#define VGPU_UNPACK(...) __VA_ARGS__
VGPU_CUDA_HOOKS(VGPU_DEFINE_HOOK)
#undef VGPU_DEFINE_HOOK

}  // extern "C"

namespace {

struct HookEntry {
  const char* symbol;  // exported name
  const char* base;    // name cuGetProcAddress is asked for
  void* hook;
  void* hook_ptsz;
  bool versioned;  // a _v2 symbol: only for cudaVersion >= 3020 (CUDA 3.2 moved to 64-bit sizes)
};

const HookEntry kHooks[] = {
#define VGPU_ENTRY(sym, base, ret, params, args) \
  {#sym, base, reinterpret_cast<void*>(&sym), reinterpret_cast<void*>(&sym##_ptsz), std::strstr(#sym, "_v2") != nullptr},
    VGPU_CUDA_HOOKS(VGPU_ENTRY)
#undef VGPU_ENTRY
};

void* hook_for_base(const char* symbol, int cuda_version, cuuint64_t flags) {
  for (const HookEntry& h : kHooks) {
    if (std::strcmp(h.base, symbol) != 0) continue;
    if (h.versioned && cuda_version < 3020) return nullptr;
    return (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0 ? h.hook_ptsz : h.hook;
  }
  return nullptr;
}

}  // namespace

extern "C" {

VGPU_EXPORT CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cuda_version, cuuint64_t flags,
                                         CUdriverProcAddressQueryResult* status);

VGPU_EXPORT CUresult cuGetProcAddress(const char* symbol, void** pfn, int cuda_version, cuuint64_t flags) {
  try {
    ensure_init();
    if (g_real.cuGetProcAddress == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
    const CUresult rc = g_real.cuGetProcAddress(symbol, pfn, cuda_version, flags);
    if (rc != CUDA_SUCCESS || pfn == nullptr || *pfn == nullptr || symbol == nullptr) return rc;
    if (std::strcmp(symbol, "cuGetProcAddress") == 0) {
      *pfn = reinterpret_cast<void*>(cuda_version >= 12000 ? reinterpret_cast<void*>(&cuGetProcAddress_v2)
                                                           : reinterpret_cast<void*>(&cuGetProcAddress));
    } else if (void* hook = hook_for_base(symbol, cuda_version, flags)) {
      *pfn = hook;
    }
    return rc;
  } catch (...) {  // nothing may cross the C ABI
    return CUDA_ERROR_UNKNOWN;
  }
}

VGPU_EXPORT CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cuda_version, cuuint64_t flags,
                                         CUdriverProcAddressQueryResult* status) {
  try {
    ensure_init();
    if (g_real.cuGetProcAddress_v2 == nullptr) return CUDA_ERROR_NOT_INITIALIZED;
    const CUresult rc = g_real.cuGetProcAddress_v2(symbol, pfn, cuda_version, flags, status);
    if (rc != CUDA_SUCCESS || pfn == nullptr || *pfn == nullptr || symbol == nullptr) return rc;
    if (std::strcmp(symbol, "cuGetProcAddress") == 0) {
      *pfn = reinterpret_cast<void*>(&cuGetProcAddress_v2);
    } else if (void* hook = hook_for_base(symbol, cuda_version, flags)) {
      *pfn = hook;
    }
    return rc;
  } catch (...) {  // nothing may cross the C ABI
    return CUDA_ERROR_UNKNOWN;
  }
}

VGPU_EXPORT int nvmlDeviceGetMemoryInfo(void* device, NvmlMemory* memory) {
  try {
    ensure_init();
    auto real = reinterpret_cast<NvmlMemoryFn>(nvml_real("nvmlDeviceGetMemoryInfo", g_nvml_memory));
    if (real == nullptr) return 12;  // NVML_ERROR_LIBRARY_NOT_FOUND
    const int rc = real(device, memory);
    if (rc == 0) virtualise(device, memory);
    return rc;
  } catch (...) {  // nothing may cross the C ABI
    return 999;  // NVML_ERROR_UNKNOWN
  }
}

VGPU_EXPORT int nvmlDeviceGetMemoryInfo_v2(void* device, NvmlMemoryV2* memory) {
  try {
    ensure_init();
    auto real = reinterpret_cast<NvmlMemoryV2Fn>(nvml_real("nvmlDeviceGetMemoryInfo_v2", g_nvml_memory_v2));
    if (real == nullptr) return 12;
    const int rc = real(device, memory);
    if (rc == 0 && memory != nullptr && g_config.memory_limited && is_my_gpu(device)) {
      virtualise(device, memory);
      memory->reserved = 0;
    }
    return rc;
  } catch (...) {  // nothing may cross the C ABI
    return 999;  // NVML_ERROR_UNKNOWN
  }
}

// dlsym() on a handle to libcuda returns our hook for a hooked symbol. The
// exported `dlsym` is the assembly trampoline below: dlsym(RTLD_NEXT, ...)
// must be resolved relative to its real caller, which glibc finds from the
// return address, so that case jumps straight to the real dlsym (a tail jump
// keeps the caller's return address); every other call comes here.
__attribute__((visibility("hidden"))) void* vgpu_dlsym_impl(void* handle, const char* symbol) {
  DlsymFn real = real_dlsym();
  if (real == nullptr || symbol == nullptr) return nullptr;
  void* found = real(handle, symbol);
  if (found != nullptr && std::strncmp(symbol, "nvmlDeviceGetMemoryInfo", 23) == 0) {
    if (std::strcmp(symbol + 23, "") == 0) {
      g_nvml_memory.store(found);
      return reinterpret_cast<void*>(&nvmlDeviceGetMemoryInfo);
    }
    if (std::strcmp(symbol + 23, "_v2") == 0) {
      g_nvml_memory_v2.store(found);
      return reinterpret_cast<void*>(&nvmlDeviceGetMemoryInfo_v2);
    }
  }
  if (found == nullptr || symbol[0] != 'c' || symbol[1] != 'u') return found;
  if (std::strcmp(symbol, "cuGetProcAddress") == 0) return reinterpret_cast<void*>(&cuGetProcAddress);
  if (std::strcmp(symbol, "cuGetProcAddress_v2") == 0) return reinterpret_cast<void*>(&cuGetProcAddress_v2);
  for (const HookEntry& h : kHooks) {
    if (std::strcmp(h.symbol, symbol) == 0) return h.hook;
    const std::size_t n = std::strlen(h.symbol);
    if (std::strncmp(h.symbol, symbol, n) == 0 && std::strcmp(symbol + n, "_ptsz") == 0) return h.hook_ptsz;
  }
  return found;
}

}  // extern "C"

extern "C" {
__attribute__((visibility("hidden"))) void* vgpu_real_dlsym_ptr = nullptr;
}

#if defined(__x86_64__)
asm(R"(
  .text
  .globl dlsym
  .type dlsym, @function
dlsym:
  cmpq $-1, %rdi
  jne 1f
  movq vgpu_real_dlsym_ptr(%rip), %rax
  testq %rax, %rax
  je 1f
  jmp *%rax
1:
  jmp vgpu_dlsym_impl
  .size dlsym, .-dlsym
)");
#else
extern "C" VGPU_EXPORT void* dlsym(void* handle, const char* symbol) {
  // Without the trampoline, dlsym(RTLD_NEXT, ...) resolves relative to this library.
  return vgpu_dlsym_impl(handle, symbol);
}
#endif

// Set before any constructor of the program can call dlsym(RTLD_NEXT, ...) through us.
__attribute__((constructor(101))) static void vgpu_cuda_load() {
  vgpu_real_dlsym_ptr = reinterpret_cast<void*>(real_dlsym());
}

// A process that exits normally gives its share back (the driver frees its memory).
__attribute__((destructor)) static void vgpu_cuda_exit() {
  if (!g_config.memory_limited || g_slot == nullptr || g_slot_pid != ::getpid()) return;
  const std::uint64_t bytes = __atomic_exchange_n(&g_slot->used_bytes, 0ULL, __ATOMIC_ACQ_REL);
  subtract_saturating(&g_region->used_bytes, bytes);
  __atomic_store_n(&g_slot->start_time, 0U, __ATOMIC_RELEASE);
  __atomic_store_n(&g_slot->pid, 0, __ATOMIC_RELEASE);
}
