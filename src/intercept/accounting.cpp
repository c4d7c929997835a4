// See accounting.hpp.
#include "accounting.hpp"

#include "config.hpp"
#include "pools.hpp"
#include "process_identity.hpp"
#include "safety_net.hpp"

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>

namespace vgpu_cuda {

namespace {

vgpu_shm_region g_local_region{};  // when no VGPU_SHM_NAME: this process alone
vgpu_shm_slot* g_slot = nullptr;   // guarded by g_slot_mutex
pid_t g_slot_pid = 0;
std::mutex g_slot_mutex;           // one slot per process: threads must not each claim one
std::uint64_t g_pid_namespace = 0;

// Subtracts without ever wrapping: a wrapped slot ("17 TB in use") would refuse every
// allocation from then on. Clamped at 0.
void subtract_saturating(std::uint64_t* counter, std::uint64_t bytes) {
  std::uint64_t current = __atomic_load_n(counter, __ATOMIC_SEQ_CST);
  while (!__atomic_compare_exchange_n(counter, &current, current - std::min(current, bytes), true, __ATOMIC_SEQ_CST,
                                      __ATOMIC_SEQ_CST)) {
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

std::mutex g_records_mutex;
std::unordered_map<unsigned long long, std::uint64_t>& records() {
  static auto* m = new std::unordered_map<unsigned long long, std::uint64_t>();  // outlives static destruction
  return *m;
}

}  // namespace

vgpu_shm_region* g_region = &g_local_region;

void reclaim_dead_slots() {
  std::unique_lock<std::mutex> in_process(g_reclaim_mutex, std::try_to_lock);
  if (!in_process.owns_lock() || !lock_reclaim(true)) return;  // someone else is reclaiming now
  for (vgpu_shm_slot& s : g_region->slots) {
    const std::int32_t pid = __atomic_load_n(&s.pid, __ATOMIC_ACQUIRE);
    if (pid == 0 || pid == g_pid) continue;
    // A pid of another PID namespace (another container on the slice) means nothing here:
    // kill() would ask about whichever process has that number in ours.
    const std::uint64_t ns = __atomic_load_n(&s.pid_namespace, __ATOMIC_ACQUIRE);
    if (ns != 0 && g_pid_namespace != 0 && ns != g_pid_namespace) continue;
    if (slot_process_alive(pid, __atomic_load_n(&s.start_time, __ATOMIC_ACQUIRE))) continue;
    const std::uint64_t bytes = __atomic_exchange_n(&s.used_bytes, 0ULL, __ATOMIC_SEQ_CST);
    __atomic_store_n(&s.start_time, 0U, __ATOMIC_RELEASE);
    __atomic_store_n(&s.pid_namespace, 0ULL, __ATOMIC_RELEASE);
    __atomic_store_n(&s.pid, 0, __ATOMIC_RELEASE);
    if (bytes > 0) log(Level::notice, "reclaimed %llu bytes left by exited process %d", static_cast<unsigned long long>(bytes), pid);
  }
  (void)lock_reclaim(false);
}

vgpu_shm_slot* my_slot() {
  std::lock_guard<std::mutex> lock(g_slot_mutex);
  const pid_t me = g_pid;
  if (g_slot != nullptr && g_slot_pid == me) return g_slot;
  for (int attempt = 0; attempt < 2; ++attempt) {
    for (vgpu_shm_slot& s : g_region->slots) {
      std::int32_t expected = 0;
      if (__atomic_compare_exchange_n(&s.pid, &expected, static_cast<std::int32_t>(me), false, __ATOMIC_ACQ_REL,
                                      __ATOMIC_RELAXED)) {
        __atomic_store_n(&s.used_bytes, 0ULL, __ATOMIC_SEQ_CST);
        __atomic_store_n(&s.pid_namespace, g_pid_namespace, __ATOMIC_RELEASE);
        __atomic_store_n(&s.start_time, start_time_of("/proc/self/stat"), __ATOMIC_RELEASE);
        g_slot = &s;
        g_slot_pid = me;
        return g_slot;
      }
    }
    reclaim_dead_slots();
  }
  static bool told = false;
  if (!told) {
    told = true;
    log(Level::error, "all %d process slots of the slice's region are taken; this process's allocations are refused",
        VGPU_SHM_SLOTS);
  }
  return nullptr;
}

bool open_region() {
  g_pid_namespace = own_pid_namespace();
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
    log(Level::error, "shared memory %s is not a vgpu accounting region of this release (size %lld, expected %zu)",
        g_config.shm_name.c_str(), static_cast<long long>(st.st_size), sizeof(vgpu_shm_region));
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

// A hardened Slurm job's limit is the root-owned file's, not the region's: the region is the job's
// to write.
std::uint64_t limit() {
  return g_config.hardened ? g_config.memory_limit : __atomic_load_n(&g_region->memory_limit, __ATOMIC_ACQUIRE);
}
std::uint64_t used() { return vgpu_shm_region_used(g_region); }

bool try_admit(std::uint64_t bytes) {
  reconcile_with_driver(false);  // at most once a second: what NVML sees beyond the hooks
  vgpu_shm_slot* slot = my_slot();
  if (slot == nullptr || bytes > limit()) return false;
  // Add to our own slot, then look at the sum: two processes admitting at once each
  // see the other's addition (all sequentially consistent), so at most one of them
  // can get past the limit's edge, and the one that sees too much takes its bytes
  // back. A process admitting at that moment (and about to take its bytes back) can
  // make a fitting request look too big: look again a few times before refusing.
  for (int attempt = 0; attempt < 4; ++attempt) {
    const std::uint64_t before = __atomic_fetch_add(&slot->used_bytes, bytes, __ATOMIC_SEQ_CST);
    if (before <= UINT64_MAX - bytes && used() <= limit()) return true;
    __atomic_fetch_sub(&slot->used_bytes, bytes, __ATOMIC_SEQ_CST);
    if (attempt == 0) {
      reclaim_dead_slots();  // a crashed process may still hold some
    } else {
      ::sched_yield();
    }
  }
  return false;
}

void log_refusal(std::uint64_t bytes, const char* call) {
  log(Level::warn, "%s of %llu bytes refused: %llu of %llu in use on this vGPU (CUDA_ERROR_OUT_OF_MEMORY)", call,
      static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(used()),
      static_cast<unsigned long long>(limit()));
}

bool admit(std::uint64_t bytes, const char* call) {
  if (try_admit(bytes)) return true;
  const std::uint64_t given_back = reconcile_pools(/*trim=*/true) + reconcile_graph_memory(/*trim=*/true);
  if (given_back != 0 && try_admit(bytes)) return true;
  log_refusal(bytes, call);
  return false;
}

void charge_unchecked(std::uint64_t bytes) {
  if (vgpu_shm_slot* slot = my_slot()) __atomic_fetch_add(&slot->used_bytes, bytes, __ATOMIC_SEQ_CST);
}

void release(std::uint64_t bytes) {
  if (bytes == 0) return;
  if (vgpu_shm_slot* slot = my_slot()) subtract_saturating(&slot->used_bytes, bytes);
}

// Nothing may throw across the C ABI: if the table cannot grow, the block stays
// charged to the slice (safe) and the loss is logged.
void remember(unsigned long long key, std::uint64_t bytes) noexcept {
  try {
    std::lock_guard lock(g_records_mutex);
    records()[key] = bytes;
  } catch (...) {
    log(Level::error, "out of host memory recording an allocation of %llu bytes; it stays charged to the vGPU",
        static_cast<unsigned long long>(bytes));
  }
}

std::uint64_t forget(unsigned long long key) noexcept {
  std::lock_guard lock(g_records_mutex);
  auto it = records().find(key);
  if (it == records().end()) return 0;
  const std::uint64_t bytes = it->second;
  records().erase(it);
  return bytes;
}

void give_slot_back() {
  if (g_slot == nullptr || g_slot_pid != ::getpid()) return;
  __atomic_store_n(&g_slot->used_bytes, 0ULL, __ATOMIC_SEQ_CST);
  __atomic_store_n(&g_slot->start_time, 0U, __ATOMIC_RELEASE);
  __atomic_store_n(&g_slot->pid_namespace, 0ULL, __ATOMIC_RELEASE);
  __atomic_store_n(&g_slot->pid, 0, __ATOMIC_RELEASE);
}

}  // namespace vgpu_cuda
