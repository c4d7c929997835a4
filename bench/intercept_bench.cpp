// Cost the interception library adds to a launch and to an allocation, against
// the fake CUDA driver (docs/benchmarks.md). The library reads its
// configuration from the environment once, so run the binary once per setting:
//   build/release/bench/intercept_bench                                   # no limit
//   VGPU_MEMORY_LIMIT=1000000000000 VGPU_COMPUTE_SHARE=0.999 build/release/bench/intercept_bench
// (a 0.999 share paces every launch but zero-length kernels never exhaust it,
// so the figure is the bookkeeping, not waiting).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <dlfcn.h>

namespace {

using LaunchFn = int (*)(void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void*, void**,
                         void**);
using AllocFn = int (*)(unsigned long long*, std::size_t);
using FreeFn = int (*)(unsigned long long);

struct Api {
  LaunchFn launch;
  AllocFn alloc;
  FreeFn free;
};

Api load(void* handle) {
  return Api{reinterpret_cast<LaunchFn>(::dlsym(handle, "cuLaunchKernel")),
             reinterpret_cast<AllocFn>(::dlsym(handle, "cuMemAlloc_v2")),
             reinterpret_cast<FreeFn>(::dlsym(handle, "cuMemFree_v2"))};
}

Api& driver() {
  static Api api = load(::dlopen(FAKE_CUDA_PATH, RTLD_NOW | RTLD_GLOBAL));
  return api;
}

Api& hooked() {
  static Api api = [] {
    ::setenv("VGPU_REAL_LIBCUDA", FAKE_CUDA_PATH, 1);
    return load(::dlopen(VGPU_CUDA_PATH, RTLD_NOW | RTLD_LOCAL));
  }();
  return api;
}

void launch_loop(benchmark::State& state, const Api& api) {
  std::uint64_t zero = 0;
  void* params[] = {&zero};
  for (auto _ : state) benchmark::DoNotOptimize(api.launch(nullptr, 1, 1, 1, 1, 1, 1, 0, nullptr, params, nullptr));
}

void alloc_loop(benchmark::State& state, const Api& api) {
  for (auto _ : state) {
    unsigned long long p = 0;
    benchmark::DoNotOptimize(api.alloc(&p, 1 << 20));
    benchmark::DoNotOptimize(api.free(p));
  }
}

// What pacing asks of the driver per launch of a short kernel: two event
// records and an elapsed-time read, and one query per 8 launches (a batch of
// pairs on one stream is collected with one query). Subtract it from the paced
// launch to get the interposer's own cost.
void BM_EventWorkDriver(benchmark::State& state) {
  void* lib = ::dlopen(FAKE_CUDA_PATH, RTLD_NOW | RTLD_GLOBAL);
  auto create = reinterpret_cast<int (*)(void**, unsigned)>(::dlsym(lib, "cuEventCreate"));
  auto record = reinterpret_cast<int (*)(void*, void*)>(::dlsym(lib, "cuEventRecord"));
  auto query = reinterpret_cast<int (*)(void*)>(::dlsym(lib, "cuEventQuery"));
  auto elapsed = reinterpret_cast<int (*)(float*, void*, void*)>(::dlsym(lib, "cuEventElapsedTime_v2"));
  void* a = nullptr;
  void* b = nullptr;
  create(&a, 0);
  create(&b, 0);
  float ms = 0;
  unsigned launches = 0;
  for (auto _ : state) {
    record(a, nullptr);
    record(b, nullptr);
    if (++launches % 8 == 0) benchmark::DoNotOptimize(query(b));
    benchmark::DoNotOptimize(elapsed(&ms, a, b));
  }
}
BENCHMARK(BM_EventWorkDriver);

void BM_LaunchDriver(benchmark::State& s) { launch_loop(s, driver()); }
void BM_LaunchIntercepted(benchmark::State& s) { launch_loop(s, hooked()); }
void BM_AllocFreeDriver(benchmark::State& s) { alloc_loop(s, driver()); }
void BM_AllocFreeIntercepted(benchmark::State& s) { alloc_loop(s, hooked()); }

BENCHMARK(BM_LaunchDriver);
BENCHMARK(BM_LaunchIntercepted);
BENCHMARK(BM_AllocFreeDriver);
BENCHMARK(BM_AllocFreeIntercepted);

}  // namespace

BENCHMARK_MAIN();
