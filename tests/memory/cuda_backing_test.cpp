// GPUMemoryManager's CUDA backing over the fake driver (tests/fakes/fake_cuda.cpp,
// found as libcuda.so.1 through LD_LIBRARY_PATH, which CTest sets): the pool works
// on the VMM API, and when the driver fails part-way nothing it took is left held:
// not the primary context after a failed constructor, not the chunks of a commit
// that failed in the middle.
#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/memory/backing.hpp>
#include <apt/vgpu/memory/gpu_memory_manager.hpp>

#include <gtest/gtest.h>

#include <cstdlib>
#include <dlfcn.h>

namespace apt::vgpu::memory {
namespace {

constexpr std::uint64_t kMiB = 1ULL << 20;

// The fake's probes, through our own handle (it keeps the library loaded between backings).
struct FakeDriver {
  void* handle = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  template <class R>
  R call(const char* name) const {
    auto* f = reinterpret_cast<R (*)()>(::dlsym(handle, name));
    return f != nullptr ? f() : R{};
  }
  [[nodiscard]] int primary_refs() const { return call<int>("fake_cuda_primary_context_refs"); }
  [[nodiscard]] std::size_t allocations() const { return call<std::size_t>("fake_cuda_live_allocations"); }
  [[nodiscard]] std::size_t reservations() const { return call<std::size_t>("fake_cuda_reservations"); }
  [[nodiscard]] std::size_t mappings() const { return call<std::size_t>("fake_cuda_mappings"); }
};

struct FailOn {
  explicit FailOn(const char* spec) { ::setenv("FAKE_CUDA_FAIL", spec, 1); }
  ~FailOn() { ::unsetenv("FAKE_CUDA_FAIL"); }
};

TEST(CudaBacking, APoolRunsOnTheVirtualMemoryApi) {
  FakeDriver fake;
  ASSERT_NE(fake.handle, nullptr) << "the fake libcuda.so.1 is not on LD_LIBRARY_PATH";
  {
    MemoryManagerOptions o;
    o.pool_size = 64 * kMiB;
    o.backing = BackingKind::cuda;
    o.gc_idle = std::chrono::milliseconds(0);
    GPUMemoryManager pool(o);
    EXPECT_EQ(fake.primary_refs(), 1);
    EXPECT_EQ(fake.reservations(), 1U);
    const MemoryBlock a = pool.allocate(6 * kMiB);
    EXPECT_EQ(fake.mappings(), 3U) << "three 2 MiB chunks committed";
    pool.free(a);
    (void)pool.collect_garbage(std::chrono::milliseconds(0));
    EXPECT_EQ(fake.mappings(), 0U);
    EXPECT_EQ(fake.allocations(), 0U);
  }
  EXPECT_EQ(fake.primary_refs(), 0) << "the backing gave its context back";
  EXPECT_EQ(fake.reservations(), 0U);
}

TEST(CudaBacking, AFailedConstructorGivesBackTheContextItRetained) {
  FakeDriver fake;
  ASSERT_NE(fake.handle, nullptr);
  for (const char* step : {"cuMemGetAllocationGranularity", "cuMemAddressReserve"}) {
    FailOn fail(step);
    EXPECT_THROW((void)make_backing(BackingKind::cuda, 64 * kMiB), DeviceError) << step;
    EXPECT_EQ(fake.primary_refs(), 0) << "retained and never released when " << step << " failed";
  }
}

TEST(CudaBacking, ACommitThatFailsPartWayUnmapsWhatItMapped) {
  FakeDriver fake;
  ASSERT_NE(fake.handle, nullptr);
  auto backing = make_backing(BackingKind::cuda, 64 * kMiB);
  {
    FailOn fail("cuMemCreate:2");  // the third chunk of four cannot be created
    EXPECT_THROW(backing->commit(0, 8 * kMiB), DeviceError);
  }
  EXPECT_EQ(fake.mappings(), 0U) << "the two chunks mapped before the failure were unmapped";
  EXPECT_EQ(fake.allocations(), 0U) << "and released";
  backing->commit(0, 8 * kMiB);  // the driver is healthy again
  EXPECT_EQ(fake.mappings(), 4U);
  backing.reset();
  EXPECT_EQ(fake.mappings(), 0U);
  EXPECT_EQ(fake.primary_refs(), 0);
}

}  // namespace
}  // namespace apt::vgpu::memory
