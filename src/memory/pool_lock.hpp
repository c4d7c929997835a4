// PoolLock: the GPUMemoryManager's lock. A mutual-exclusion lock (BasicLockable, for std::unique_lock
// and std::lock_guard) on one 32-bit atomic: 0 free, 1 held, 2 held with threads waiting. Taking and
// releasing it uncontended is one atomic instruction each and a handful of others; a thread that
// finds it held sleeps in std::atomic::wait (a futex on Linux) and is woken by the release.
//
// Why not std::mutex: the manager takes its lock twice per allocate + free, and glibc's
// pthread_mutex_lock/unlock ran about 110 instructions for the two (type dispatch, owner and
// recursion bookkeeping the manager never uses), a fifth of the manager's own instructions with
// 1,000 blocks live. The algorithm is the three-state futex mutex of Drepper's "Futexes Are Tricky"
// (mutex 3), on the standard library's atomic wait/notify rather than raw futex calls.
//
// Not recursive, not fair (a releasing thread may take it again before a woken one does, as with
// std::mutex). Internal to src/memory. Thread safety: that is its purpose.
#pragma once

#include <atomic>
#include <cstdint>

namespace apt::vgpu::memory {

class PoolLock {
 public:
  void lock() noexcept {
    std::uint32_t expected = kFree;
    if (state_.compare_exchange_strong(expected, kHeld, std::memory_order_acquire, std::memory_order_relaxed))
        [[likely]] {
      return;
    }
    lock_contended();
  }
  void unlock() noexcept {
    // Whoever marked it kWaiting is asleep or about to be: wake one. (A woken thread takes it as
    // kWaiting, so the threads still asleep are woken in turn.)
    if (state_.exchange(kFree, std::memory_order_release) == kWaiting) state_.notify_one();
  }

 private:
  static constexpr std::uint32_t kFree = 0;
  static constexpr std::uint32_t kHeld = 1;
  static constexpr std::uint32_t kWaiting = 2;

  [[gnu::noinline]] void lock_contended() noexcept {
    // Mark it contended; if it was free meanwhile, that took it. Otherwise sleep until it changes.
    while (state_.exchange(kWaiting, std::memory_order_acquire) != kFree) {
      state_.wait(kWaiting, std::memory_order_relaxed);
    }
  }

  std::atomic<std::uint32_t> state_{kFree};
};

}  // namespace apt::vgpu::memory
