// libvgpu-torch.so, the pool as PyTorch's CUDA allocator, through its C entry points over the fake
// CUDA driver (tests/fakes/fake_cuda.cpp as libcuda.so.1): the VMM backing, scopes and their limits,
// and stream order (a fake stream can be held so its events stay pending as long as the test wants).
#include <apt/vgpu/memory/torch_allocator.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <dlfcn.h>
#include <string>
#include <thread>

namespace {

constexpr std::uint64_t kMiB = 1ULL << 20;

struct Allocator {
  void* handle = ::dlopen(VGPU_TORCH_PATH, RTLD_NOW | RTLD_LOCAL);
  template <class F>
  F get(const char* name) const {
    return reinterpret_cast<F>(::dlsym(handle, name));
  }
  decltype(&vgpu_torch_malloc) malloc = get<decltype(&vgpu_torch_malloc)>("vgpu_torch_malloc");
  decltype(&vgpu_torch_free) free = get<decltype(&vgpu_torch_free)>("vgpu_torch_free");
  decltype(&vgpu_torch_set_scope) set_scope = get<decltype(&vgpu_torch_set_scope)>("vgpu_torch_set_scope");
  decltype(&vgpu_torch_clear_scope) clear_scope = get<decltype(&vgpu_torch_clear_scope)>("vgpu_torch_clear_scope");
  decltype(&vgpu_torch_usage) usage = get<decltype(&vgpu_torch_usage)>("vgpu_torch_usage");
  decltype(&vgpu_torch_pending_frees) pending = get<decltype(&vgpu_torch_pending_frees)>("vgpu_torch_pending_frees");
  decltype(&vgpu_torch_last_error) last_error = get<decltype(&vgpu_torch_last_error)>("vgpu_torch_last_error");
};

struct FakeDriver {
  void* handle = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  void hold(void* stream, bool on) const {
    reinterpret_cast<void (*)(void*, int)>(::dlsym(handle, "fake_cuda_hold_stream"))(stream, on ? 1 : 0);
  }
  [[nodiscard]] std::size_t mappings() const {
    return reinterpret_cast<std::size_t (*)()>(::dlsym(handle, "fake_cuda_mappings"))();
  }
};

// Distinct fake streams (the fake keys its bookkeeping by the handle).
void* stream(int n) { return reinterpret_cast<void*>(static_cast<std::uintptr_t>(0x1000 + n)); }

class TorchAllocator : public ::testing::Test {
 protected:
  void SetUp() override {
    ::setenv("VGPU_TORCH_POOL_SIZE", "256MiB", 1);
    ASSERT_NE(fake.handle, nullptr) << "the fake libcuda.so.1 is not on LD_LIBRARY_PATH";
    ASSERT_NE(a.handle, nullptr) << ::dlerror();
    ASSERT_NE(a.malloc, nullptr);
  }
  FakeDriver fake;
  Allocator a;
};

TEST_F(TorchAllocator, AllocationsComeFromThePoolAndAreChargedToTheScope) {
  ASSERT_EQ(a.set_scope("vgpu-a", 64 * kMiB, 0), 0);
  void* x = a.malloc(static_cast<ssize_t>(3 * kMiB), 0, stream(0));
  ASSERT_NE(x, nullptr) << a.last_error();
  EXPECT_GE(fake.mappings(), 2U) << "2 MiB chunks of the VMM reservation were mapped for it";
  EXPECT_EQ(a.usage("vgpu-a", 0), 3 * kMiB);
  a.free(x, static_cast<ssize_t>(3 * kMiB), 0, stream(0));
  void* y = a.malloc(static_cast<ssize_t>(kMiB), 0, stream(0));  // reaps the finished free first
  ASSERT_NE(y, nullptr);
  EXPECT_EQ(a.pending(0), 0U);
  EXPECT_EQ(a.usage("vgpu-a", 0), kMiB);
  a.free(y, static_cast<ssize_t>(kMiB), 0, stream(0));
  a.clear_scope(0);
  EXPECT_EQ(a.malloc(0, 0, stream(0)), nullptr) << "nothing to allocate";
}

TEST_F(TorchAllocator, AScopeOverItsLimitGetsNullAndAnotherScopeKeepsItsOwn) {
  ASSERT_EQ(a.set_scope("small", 8 * kMiB, 0), 0);
  void* first = a.malloc(static_cast<ssize_t>(6 * kMiB), 0, stream(1));
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(a.malloc(static_cast<ssize_t>(4 * kMiB), 0, stream(1)), nullptr) << "6 + 4 MiB is over 8 MiB";
  EXPECT_NE(std::string(a.last_error()).find("small"), std::string::npos) << a.last_error();
  // Another thread in another scope (the seed's three VirtualGPUs in one process).
  void* other = nullptr;
  std::thread([&] {
    ASSERT_EQ(a.set_scope("large", 64 * kMiB, 0), 0);
    other = a.malloc(static_cast<ssize_t>(32 * kMiB), 0, stream(2));
  }).join();
  EXPECT_NE(other, nullptr);
  EXPECT_EQ(a.usage("large", 0), 32 * kMiB);
  EXPECT_EQ(a.usage("small", 0), 6 * kMiB);
  a.free(first, 0, 0, stream(1));
  a.free(other, 0, 0, stream(2));
  EXPECT_EQ(a.set_scope("", 1, 0), -1) << "a scope needs a name";
  a.clear_scope(0);
}

TEST_F(TorchAllocator, AProcessWideScopeCoversThreadsWithoutTheirOwn) {
  ASSERT_EQ(a.set_scope("everyone", 16 * kMiB, 1), 0);
  void* p = nullptr;
  std::thread([&] { p = a.malloc(static_cast<ssize_t>(kMiB), 0, stream(3)); }).join();  // an autograd-like thread
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(a.usage("everyone", 0), kMiB);
  a.free(p, 0, 0, stream(3));
  a.clear_scope(1);
}

TEST_F(TorchAllocator, AFreedBlockIsNotHandedToAnotherStreamBeforeItsStreamIsDone) {
  ASSERT_EQ(a.set_scope("streams", 0, 0), 0);
  fake.hold(stream(4), true);  // stream 4's queued work does not finish until released
  void* x = a.malloc(static_cast<ssize_t>(4 * kMiB), 0, stream(4));
  ASSERT_NE(x, nullptr);
  a.free(x, static_cast<ssize_t>(4 * kMiB), 0, stream(4));
  EXPECT_EQ(a.pending(0), 1U);
  EXPECT_EQ(a.usage("streams", 0), 4 * kMiB) << "still charged: a kernel on stream 4 may be using it";
  void* y = a.malloc(static_cast<ssize_t>(4 * kMiB), 0, stream(5));
  ASSERT_NE(y, nullptr);
  EXPECT_NE(y, x) << "stream 5 got memory stream 4 may still be using";
  fake.hold(stream(4), false);
  void* z = a.malloc(static_cast<ssize_t>(4 * kMiB), 0, stream(5));
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(a.pending(0), 0U) << "stream 4 is done: its block went back to the pool";
  EXPECT_EQ(z, x) << "and is reused (best fit puts the new block where the freed one was)";
  a.free(y, 0, 0, stream(5));
  a.free(z, 0, 0, stream(5));
  a.clear_scope(0);
}

TEST_F(TorchAllocator, WhenNothingFitsItWaitsForFreesInFlightBeforeGivingUp) {
  ASSERT_EQ(a.set_scope("tight", 8 * kMiB, 0), 0);
  fake.hold(stream(6), true);
  void* x = a.malloc(static_cast<ssize_t>(8 * kMiB), 0, stream(6));
  ASSERT_NE(x, nullptr);
  a.free(x, 0, 0, stream(6));
  // Over the limit until the free completes: the allocation waits for stream 6, released here.
  std::thread release([&] { fake.hold(stream(6), false); });
  void* y = a.malloc(static_cast<ssize_t>(8 * kMiB), 0, stream(7));
  release.join();
  EXPECT_NE(y, nullptr) << a.last_error();
  EXPECT_EQ(a.pending(0), 0U);
  a.free(y, 0, 0, stream(7));
  a.clear_scope(0);
}

TEST_F(TorchAllocator, BadFreesAreReportedNotFatal) {
  int local = 0;
  a.free(&local, 4, 0, stream(0));
  EXPECT_NE(std::string(a.last_error()).find("not allocated here"), std::string::npos) << a.last_error();
  a.free(nullptr, 0, 0, stream(0));  // PyTorch frees nullptr for empty tensors: nothing happens
}

}  // namespace
