// PoolLock: the memory manager's lock (src/memory/pool_lock.hpp).
#include "pool_lock.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace {

using apt::vgpu::memory::PoolLock;

// Threads that each add to a plain counter under the lock many times: every increment is counted
// (a lost update would show a lock that let two in), and no two threads are ever inside at once.
// With four threads on two cores they keep finding it held, so the sleeping path and the wake-ups
// are taken too; TSan checks the same test for races.
TEST(PoolLock, NoTwoThreadsAreInsideAtOnceAndNoIncrementIsLost) {
  PoolLock lock;
  std::uint64_t counter = 0;
  std::atomic<int> inside{0};
  std::atomic<bool> overlapped{false};
  constexpr int kThreads = 4;
  constexpr int kRounds = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kRounds; ++i) {
        std::lock_guard guard(lock);
        if (inside.fetch_add(1) != 0) overlapped = true;
        ++counter;
        if (i % 64 == 0) std::this_thread::yield();  // hold it across a yield now and then: others wait
        inside.fetch_sub(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(overlapped.load());
  EXPECT_EQ(counter, std::uint64_t{kThreads} * kRounds);
}

// A thread blocked on the lock gets it once the holder lets go (no lost wake-up).
TEST(PoolLock, AWaitingThreadGetsItWhenItIsReleased) {
  PoolLock lock;
  lock.lock();
  std::atomic<bool> started{false};
  std::atomic<bool> acquired{false};
  std::thread waiter([&] {
    started = true;
    lock.lock();
    acquired = true;
    lock.unlock();
  });
  while (!started) std::this_thread::yield();
  EXPECT_FALSE(acquired.load()) << "it got in while the lock was held";
  lock.unlock();
  waiter.join();
  EXPECT_TRUE(acquired.load());
  // Free again: this thread takes it at once.
  std::unique_lock again(lock);
  EXPECT_TRUE(again.owns_lock());
}

}  // namespace
