// See pacing.hpp.
#include "pacing.hpp"

#include "accounting.hpp"
#include "config.hpp"
#include "hook_support.hpp"
#include "real_driver.hpp"

#include <algorithm>
#include <apt/vgpu/intercept/abi.h>
#include <fcntl.h>
#include <mutex>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace vgpu_cuda {

namespace {

using EventCreateFn = CUresult (*)(CUevent*, unsigned int);
using EventRecordFn = CUresult (*)(CUevent, CUstream);
using EventQueryFn = CUresult (*)(CUevent);
using EventElapsedFn = CUresult (*)(float*, CUevent, CUevent);
using CtxGetCurrentFn = CUresult (*)(CUcontext*);

constexpr std::int64_t kWindowNs = 100'000'000;
constexpr std::size_t kMaxInFlight = 32;

struct InFlight {
  CUevent start;
  CUevent end;
  CUcontext context;
};

struct SpareEvents {
  CUcontext context;
  std::vector<CUevent> events;
};

struct Pacer {
  EventCreateFn create = nullptr;
  CtxGetCurrentFn current_context = nullptr;
  EventRecordFn record = nullptr;
  EventRecordFn record_ptsz = nullptr;
  EventQueryFn query = nullptr;
  EventQueryFn synchronize = nullptr;
  EventElapsedFn elapsed = nullptr;
  std::mutex mutex;                                    // guards everything below
  std::vector<SpareEvents> spare;                      // per context
  std::vector<InFlight> in_flight;                     // oldest first
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

std::vector<CUevent>* spare_of(Pacer& p, CUcontext context) {
  for (SpareEvents& s : p.spare) {
    if (s.context == context) return &s.events;
  }
  return nullptr;
}

void give_back_event(Pacer& p, CUevent e, CUcontext context) {
  if (std::vector<CUevent>* spare = spare_of(p, context)) spare->push_back(e);
  // else: its context was destroyed, and the event with it
}

// Draws the GPU time of finished kernels from the bucket. Called with the pacer's mutex held.
void harvest(std::int64_t now) {
  Pacer& p = g_pacer;
  // When every pair in flight is on one stream, the newest having finished
  // means all have (a stream runs in order; end events are recorded in the order
  // they are queued, under the mutex): one query answers for the lot.
  const bool all_done = p.one_stream && p.head < p.in_flight.size() && p.query(p.in_flight.back().end) == CUDA_SUCCESS;
  std::int64_t measured_ns = 0;
  std::size_t measured = 0;
  while (p.head < p.in_flight.size()) {
    const InFlight f = p.in_flight[p.head];
    if (!all_done && p.query(f.end) != CUDA_SUCCESS) break;
    float ms = 0;
    if (p.elapsed(&ms, f.start, f.end) == CUDA_SUCCESS && ms >= 0) {
      measured_ns += static_cast<std::int64_t>(static_cast<double>(ms) * 1e6);
      ++measured;
    }
    give_back_event(p, f.start, f.context);
    give_back_event(p, f.end, f.context);
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

// Waits (without the mutex) for the oldest launch in flight to finish, then collects.
void wait_for_oldest(std::unique_lock<std::mutex>& lock) {
  Pacer& p = g_pacer;
  const CUevent oldest = p.in_flight[p.head].end;
  lock.unlock();
  // Another thread may collect and reuse this event meanwhile; waiting on its newer
  // record then only waits a little longer.
  (void)p.synchronize(oldest);
  lock.lock();
  harvest(monotonic_ns());
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

// An event of `context` (the current one). Called with the mutex held.
CUevent take_event(CUcontext context) {
  Pacer& p = g_pacer;
  std::vector<CUevent>* spare = spare_of(p, context);
  if (spare == nullptr) {
    p.spare.push_back(SpareEvents{context, {}});
    spare = &p.spare.back().events;
  }
  if (!spare->empty()) {
    CUevent e = spare->back();
    spare->pop_back();
    return e;
  }
  CUevent e = nullptr;
  return p.create(&e, 0) == CUDA_SUCCESS ? e : nullptr;
}

std::uint64_t hash_name(const std::string& s) {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  return h == 0 ? 1 : h;
}

}  // namespace

PacedLaunch pace_before(CUstream stream) {
  Pacer& p = g_pacer;
  PacedLaunch ticket;
  // A stream being captured into a CUDA graph runs nothing now: timing events recorded
  // there become graph nodes, and querying them fails (CUDA_ERROR_STREAM_CAPTURE_*). The
  // launch goes into the graph unmeasured; the graph is paced when cuGraphLaunch runs it.
  const bool capturing = stream_is_capturing(stream);
  if (p.current_context != nullptr) (void)p.current_context(&ticket.context);
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
    harvest(p.now);
    p.until_harvest = p.harvest_every;
  }
  --p.until_harvest;
  while (__atomic_load_n(&g_region->gpu_budget_ns, __ATOMIC_ACQUIRE) < 0) {
    const std::int64_t now = p.now = monotonic_ns();
    harvest(now);
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
  if (p.in_flight.size() - p.head >= kMaxInFlight) wait_for_oldest(lock);  // bound unmeasured work
  if (capturing) return ticket;
  ticket.record = t_ptsz && p.record_ptsz != nullptr ? p.record_ptsz : p.record;
  ticket.start = take_event(ticket.context);
  ticket.end = take_event(ticket.context);
  if (ticket.start == nullptr || ticket.end == nullptr) {  // no events: run unmeasured
    if (ticket.start != nullptr) give_back_event(p, ticket.start, ticket.context);
    if (ticket.end != nullptr) give_back_event(p, ticket.end, ticket.context);
    ticket.start = ticket.end = nullptr;
    return ticket;
  }
  lock.unlock();
  (void)ticket.record(ticket.start, stream);
  return ticket;
}

void pace_after(const PacedLaunch& ticket, CUstream stream) {
  if (ticket.start == nullptr) return;
  Pacer& p = g_pacer;
  std::lock_guard lock(p.mutex);
  if (spare_of(p, ticket.context) == nullptr) return;  // its context was destroyed meanwhile
  // Recorded under the mutex, so end events reach a stream in the order they are queued.
  (void)ticket.record(ticket.end, stream);
  // The per-thread default stream is a different stream in every thread.
  const void* stream_identity = stream == nullptr && t_ptsz ? static_cast<const void*>(&t_ptsz) : stream;
  if (p.in_flight.size() == p.head) {
    p.in_flight_stream = stream_identity;
    p.one_stream = true;
  } else if (p.in_flight_stream != stream_identity) {
    p.one_stream = false;
  }
  p.in_flight.push_back(InFlight{ticket.start, ticket.end, ticket.context});
}

void forget_context_events(CUcontext context) {
  if (!g_config.pacing) return;
  Pacer& p = g_pacer;
  std::lock_guard lock(p.mutex);
  p.spare.erase(std::remove_if(p.spare.begin(), p.spare.end(), [context](const SpareEvents& s) { return s.context == context; }),
                p.spare.end());
  const auto live_begin = p.in_flight.begin() + static_cast<std::ptrdiff_t>(p.head);
  p.in_flight.erase(std::remove_if(live_begin, p.in_flight.end(), [context](const InFlight& f) { return f.context == context; }),
                    p.in_flight.end());
  if (p.head >= p.in_flight.size()) {
    p.in_flight.clear();
    p.head = 0;
  }
}

bool init_pacing() {
  Pacer& p = g_pacer;
  if (g_libcuda == nullptr) return true;  // no driver: hooks report NOT_INITIALIZED anyway
  p.create = driver_function<EventCreateFn>("cuEventCreate");
  p.current_context = driver_function<CtxGetCurrentFn>("cuCtxGetCurrent");
  p.record = driver_function<EventRecordFn>("cuEventRecord");
  p.record_ptsz = driver_function<EventRecordFn>("cuEventRecord_ptsz");
  p.query = driver_function<EventQueryFn>("cuEventQuery");
  p.synchronize = driver_function<EventQueryFn>("cuEventSynchronize");
  p.elapsed = driver_function<EventElapsedFn>("cuEventElapsedTime_v2");
  if (p.elapsed == nullptr) p.elapsed = driver_function<EventElapsedFn>("cuEventElapsedTime");
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

}  // namespace vgpu_cuda
