// A small CUDA driver-API program for the interception tests. It reaches the
// driver one of three ways, as real programs do:
//   direct    linked against libcuda.so.1
//   dlsym     dlopen("libcuda.so.1") + dlsym() for each entry point
//   getproc   dlopen + dlsym("cuGetProcAddress") once, then cuGetProcAddress_v2
//   getproc_ptds  the same, every lookup with CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
//             for everything (what the CUDA 12+ runtime and PyTorch do)
// and runs the operations given as arguments, printing one line each:
//   alloc:BYTES   free:INDEX   async:BYTES   managed:BYTES   pitch:WxH   create:BYTES
//   array:WxH     info         launch:N      sleep:MS        hold (sleep forever)
//   busy:MS:US    launch US-microsecond kernels for MS milliseconds (synchronising
//                 every 8, as a training loop does each step) and print the share
//                 of wall time the GPU ran this process's kernels
//   ctx / ctxrelease / ctxreset   retain (and make current) / release / reset device 0's primary context
//   ctxcreate / ctxdestroy        create (current) / destroy a context of its own
//   mipmap:W:LEVELS   a W x W mipmapped array of bytes     graphlaunch   launch a CUDA graph
//   concurrent    two threads launch at once; says whether both were inside the driver together
//   badrecords    events the driver refused to record (another context's stream)
#include "../../src/intercept/cuda_driver_api.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <dlfcn.h>
#include <string>
#include <thread>
#include <vector>

#ifdef CUDA_APP_LINKED
extern "C" {
CUresult cuInit(unsigned int);
CUresult cuMemAlloc_v2(CUdeviceptr*, size_t);
CUresult cuMemAllocPitch_v2(CUdeviceptr*, size_t*, size_t, size_t, unsigned int);
CUresult cuMemAllocManaged(CUdeviceptr*, size_t, unsigned int);
CUresult cuMemAllocAsync(CUdeviceptr*, size_t, CUstream);
CUresult cuMemFree_v2(CUdeviceptr);
CUresult cuMemCreate(CUmemGenericAllocationHandle*, size_t, const CUmemAllocationProp*, unsigned long long);
CUresult cuArrayCreate_v2(CUarray*, const CUDA_ARRAY_DESCRIPTOR*);
CUresult cuMemRelease(CUmemGenericAllocationHandle);
CUresult cuMemFreeAsync(CUdeviceptr, CUstream);
CUresult cuMemMap(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
CUresult cuMemUnmap(CUdeviceptr, size_t);
CUresult cuMemGetInfo_v2(size_t*, size_t*);
CUresult cuLaunchKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                        void**, void**);
CUresult cuStreamSynchronize(CUstream);
}
#endif

namespace {

struct Api {
  CUresult (*init)(unsigned int) = nullptr;
  CUresult (*alloc)(CUdeviceptr*, size_t) = nullptr;
  CUresult (*pitch)(CUdeviceptr*, size_t*, size_t, size_t, unsigned int) = nullptr;
  CUresult (*managed)(CUdeviceptr*, size_t, unsigned int) = nullptr;
  CUresult (*async)(CUdeviceptr*, size_t, CUstream) = nullptr;
  CUresult (*free)(CUdeviceptr) = nullptr;
  CUresult (*create)(CUmemGenericAllocationHandle*, size_t, const CUmemAllocationProp*, unsigned long long) = nullptr;
  CUresult (*array)(CUarray*, const CUDA_ARRAY_DESCRIPTOR*) = nullptr;
  CUresult (*info)(size_t*, size_t*) = nullptr;
  CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                     void**, void**) = nullptr;
  CUresult (*sync)(CUstream) = nullptr;
  CUresult (*release)(CUmemGenericAllocationHandle) = nullptr;
  CUresult (*free_async)(CUdeviceptr, CUstream) = nullptr;
  CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long) = nullptr;
  CUresult (*unmap)(CUdeviceptr, size_t) = nullptr;
};

std::string g_mode;
void* g_handle = RTLD_DEFAULT;
CUresult (*g_getproc)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*) = nullptr;

template <class F>
void load(F& f, void* handle, const char* name) {
  f = reinterpret_cast<F>(::dlsym(handle, name));
}

template <class F, class G>
void get(F& f, G getproc, const char* base, unsigned long long flags = 0) {
  void* p = nullptr;
  int status = 0;
  if (getproc(base, &p, 12000, flags, &status) == CUDA_SUCCESS) f = reinterpret_cast<F>(p);
}

Api bind(const std::string& mode) {
  Api api;
  if (mode == "direct") {
#ifdef CUDA_APP_LINKED
    api = Api{&cuInit,           &cuMemAlloc_v2,  &cuMemAllocPitch_v2, &cuMemAllocManaged, &cuMemAllocAsync,
              &cuMemFree_v2,     &cuMemCreate,    &cuArrayCreate_v2,   &cuMemGetInfo_v2,   &cuLaunchKernel,
              &cuStreamSynchronize, &cuMemRelease, &cuMemFreeAsync,   &cuMemMap,          &cuMemUnmap};
    return api;
#else
    std::printf("this build is not linked against libcuda; use dlsym or getproc\n");
    std::exit(2);
#endif
  }
  void* handle = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    std::printf("dlopen failed: %s\n", ::dlerror());
    std::exit(3);
  }
  g_handle = handle;
  if (mode == "dlsym") {
    load(api.init, handle, "cuInit");
    load(api.alloc, handle, "cuMemAlloc_v2");
    load(api.pitch, handle, "cuMemAllocPitch_v2");
    load(api.managed, handle, "cuMemAllocManaged");
    load(api.async, handle, "cuMemAllocAsync");
    load(api.free, handle, "cuMemFree_v2");
    load(api.create, handle, "cuMemCreate");
    load(api.array, handle, "cuArrayCreate_v2");
    load(api.info, handle, "cuMemGetInfo_v2");
    load(api.launch, handle, "cuLaunchKernel");
    load(api.sync, handle, "cuStreamSynchronize");
    load(api.release, handle, "cuMemRelease");
    load(api.free_async, handle, "cuMemFreeAsync");
    load(api.map, handle, "cuMemMap");
    load(api.unmap, handle, "cuMemUnmap");
    return api;
  }
  using GetProc = CUresult (*)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);
  auto getproc = reinterpret_cast<GetProc>(::dlsym(handle, "cuGetProcAddress_v2"));
  // getproc_ptds asks for every symbol with the per-thread-default-stream flag, as a cudart
  // built with `nvcc --default-stream per-thread` does, also for functions without a _ptsz form.
  const unsigned long long every = mode == "getproc_ptds" ? CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM : 0;
  // As the runtime does: ask the driver for cuGetProcAddress itself, then everything else.
  void* self = nullptr;
  int status = 0;
  if (getproc("cuGetProcAddress", &self, 12000, 0, &status) == CUDA_SUCCESS) getproc = reinterpret_cast<GetProc>(self);
  g_getproc = getproc;
  get(api.init, getproc, "cuInit", every);
  get(api.alloc, getproc, "cuMemAlloc", every);
  get(api.pitch, getproc, "cuMemAllocPitch", every);
  get(api.managed, getproc, "cuMemAllocManaged", every);
  get(api.async, getproc, "cuMemAllocAsync", every | CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
  get(api.free, getproc, "cuMemFree", every);
  get(api.create, getproc, "cuMemCreate", every);
  get(api.array, getproc, "cuArrayCreate", every);
  get(api.info, getproc, "cuMemGetInfo", every);
  get(api.launch, getproc, "cuLaunchKernel", every | CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
  get(api.sync, getproc, "cuStreamSynchronize", every);
  get(api.release, getproc, "cuMemRelease", every);
  get(api.free_async, getproc, "cuMemFreeAsync", every | CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
  get(api.map, getproc, "cuMemMap", every);
  get(api.unmap, getproc, "cuMemUnmap", every);
  return api;
}

// Entry points beyond the Api table, found the way the mode says: by cuGetProcAddress
// (base name) in the getproc modes, by dlsym on the driver's handle in dlsym mode, and
// by the global scope (where the preload's definitions come first) for direct.

template <class F>
F entry(const char* base, const char* versioned) {
  if (g_getproc != nullptr) {
    void* p = nullptr;
    int status = 0;
    const unsigned long long flags = g_mode == "getproc_ptds" ? CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM : 0;
    return g_getproc(base, &p, 12080, flags, &status) == CUDA_SUCCESS ? reinterpret_cast<F>(p) : nullptr;
  }
  return reinterpret_cast<F>(::dlsym(g_handle, versioned));
}

const char* result(CUresult rc) {
  return rc == CUDA_SUCCESS ? "ok" : rc == CUDA_ERROR_OUT_OF_MEMORY ? "oom" : rc == CUDA_ERROR_INVALID_VALUE ? "invalid" : "error";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: cuda_app direct|dlsym|getproc|getproc_ptds OP...\n");
    return 2;
  }
  g_mode = argv[1];
  const Api api = bind(argv[1]);
  std::vector<void*> contexts;  // ctxcreate's
  std::printf("init %s\n", result(api.init(0)));
  std::vector<CUdeviceptr> blocks;
  std::vector<std::pair<CUdeviceptr, unsigned long long>> mapped;  // vmmhold's mappings
  for (int i = 2; i < argc; ++i) {
    const std::string op = argv[i];
    const auto colon = op.find(':');
    const std::string name = op.substr(0, colon);
    const std::string arg = colon == std::string::npos ? "" : op.substr(colon + 1);
    const unsigned long long n = arg.empty() ? 0 : std::strtoull(arg.c_str(), nullptr, 10);
    CUdeviceptr p = 0;
    if (name == "alloc") {
      const CUresult rc = api.alloc(&p, n);
      if (rc == CUDA_SUCCESS) blocks.push_back(p);
      std::printf("alloc %s\n", result(rc));
    } else if (name == "async") {
      const CUresult rc = api.async(&p, n, nullptr);
      if (rc == CUDA_SUCCESS) blocks.push_back(p);
      std::printf("async %s\n", result(rc));
    } else if (name == "managed") {
      const CUresult rc = api.managed(&p, n, 1);
      if (rc == CUDA_SUCCESS) blocks.push_back(p);
      std::printf("managed %s\n", result(rc));
    } else if (name == "pitch") {
      size_t pitch = 0;
      const auto x = arg.find('x');
      const CUresult rc = api.pitch(&p, &pitch, std::strtoull(arg.substr(0, x).c_str(), nullptr, 10),
                                    std::strtoull(arg.substr(x + 1).c_str(), nullptr, 10), 4);
      if (rc == CUDA_SUCCESS) blocks.push_back(p);
      std::printf("pitch %s %zu\n", result(rc), pitch);
    } else if (name == "create") {
      CUmemGenericAllocationHandle h = 0;
      std::printf("create %s\n", result(api.create(&h, n, nullptr, 0)));
    } else if (name == "array") {
      const auto x = arg.find('x');
      CUDA_ARRAY_DESCRIPTOR d{std::strtoull(arg.substr(0, x).c_str(), nullptr, 10),
                              std::strtoull(arg.substr(x + 1).c_str(), nullptr, 10), 0x20, 1};
      CUarray a = nullptr;
      std::printf("array %s\n", result(api.array(&a, &d)));
    } else if (name == "free") {
      std::printf("free %s\n", n < blocks.size() ? result(api.free(blocks[n])) : "bad-index");
    } else if (name == "info") {
      size_t free_bytes = 0;
      size_t total_bytes = 0;
      const CUresult rc = api.info(&free_bytes, &total_bytes);
      std::printf("info %s free=%zu total=%zu\n", result(rc), free_bytes, total_bytes);
    } else if (name == "launch") {
      CUresult rc = CUDA_SUCCESS;
      for (unsigned long long k = 0; k < n && rc == CUDA_SUCCESS; ++k) rc = api.launch(nullptr, 1, 1, 1, 1, 1, 1, 0, nullptr, nullptr, nullptr);
      std::printf("launch %s\n", result(rc));
    } else if (name == "busy") {
      const auto second = arg.find(':');
      const auto wall = std::chrono::milliseconds(std::strtoull(arg.substr(0, second).c_str(), nullptr, 10));
      std::uint64_t us = std::strtoull(arg.substr(second + 1).c_str(), nullptr, 10);
      void* params[] = {&us};
      const auto start = std::chrono::steady_clock::now();
      unsigned long long kernels = 0;
      CUresult rc = CUDA_SUCCESS;
      while (rc == CUDA_SUCCESS && std::chrono::steady_clock::now() - start < wall) {
        rc = api.launch(nullptr, 1, 1, 1, 1, 1, 1, 0, nullptr, params, nullptr);
        if (++kernels % 8 == 0) api.sync(nullptr);
      }
      api.sync(nullptr);
      const double elapsed_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      const double gpu_ms = static_cast<double>(kernels) * static_cast<double>(us) / 1000.0;
      std::printf("busy %s kernels=%llu gpu_ms=%.1f wall_ms=%.1f share=%.3f\n", result(rc), kernels, gpu_ms, elapsed_ms,
                  gpu_ms / elapsed_ms);
    } else if (name == "vmmhold") {
      // llama.cpp's VMM pool: create, map, then release the handle while it stays mapped.
      CUmemGenericAllocationHandle h = 0;
      CUresult rc = api.create(&h, n, nullptr, 0);
      const CUdeviceptr va = 0x7f0000000000ULL + mapped.size() * 0x100000000ULL;
      if (rc == CUDA_SUCCESS) rc = api.map(va, n, 0, h, 0);
      if (rc == CUDA_SUCCESS) rc = api.release(h);
      if (rc == CUDA_SUCCESS) mapped.emplace_back(va, n);
      std::printf("vmmhold %s\n", result(rc));
    } else if (name == "unmapall") {
      CUresult rc = CUDA_SUCCESS;
      for (const auto& [va, size] : mapped) {
        if (rc == CUDA_SUCCESS) rc = api.unmap(va, size);
      }
      mapped.clear();
      std::printf("unmapall %s\n", result(rc));
    } else if (name == "poolhigh") {
      // As PyTorch's cudaMallocAsync backend does: the default pool never gives memory back.
      auto get_pool = reinterpret_cast<CUresult (*)(CUmemoryPool*, int)>(::dlsym(RTLD_DEFAULT, "cuDeviceGetDefaultMemPool"));
      auto set = reinterpret_cast<CUresult (*)(CUmemoryPool, int, void*)>(::dlsym(RTLD_DEFAULT, "cuMemPoolSetAttribute"));
      CUmemoryPool pool = nullptr;
      cuuint64_t threshold = ~0ULL;
      CUresult rc = get_pool != nullptr && set != nullptr ? get_pool(&pool, 0) : CUDA_ERROR_NOT_FOUND;
      if (rc == CUDA_SUCCESS) rc = set(pool, 4, &threshold);  // CU_MEMPOOL_ATTR_RELEASE_THRESHOLD
      std::printf("poolhigh %s\n", result(rc));
    } else if (name == "freeasync") {
      std::printf("freeasync %s\n", n < blocks.size() ? result(api.free_async(blocks[n], nullptr)) : "bad-index");
    } else if (name == "capturedrecords") {
      auto records = reinterpret_cast<unsigned long long (*)()>(::dlsym(RTLD_DEFAULT, "fake_cuda_records_while_capturing"));
      std::printf("capturedrecords %llu\n", records != nullptr ? records() : 0ULL);
    } else if (name == "drvused") {
      auto used = reinterpret_cast<std::size_t (*)()>(::dlsym(RTLD_DEFAULT, "fake_cuda_device_used"));
      std::printf("drvused %zu\n", used != nullptr ? used() : 0);
    } else if (name == "race") {
      // Two threads allocate and free 4 KiB n times each: the driver reuses addresses
      // between them, as a multi-threaded server's allocations do.
      std::atomic<unsigned long long> failures{0};
      auto churn = [&] {
        for (unsigned long long k = 0; k < n; ++k) {
          CUdeviceptr q = 0;
          if (api.alloc(&q, 4096) != CUDA_SUCCESS || api.free(q) != CUDA_SUCCESS) ++failures;
        }
      };
      std::thread a(churn);
      std::thread b(churn);
      a.join();
      b.join();
      std::printf("race %s\n", failures == 0 ? "ok" : ("failures=" + std::to_string(failures.load())).c_str());
    } else if (name == "ctx") {
      auto retain = entry<CUresult (*)(void**, int)>("cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRetain");
      auto set = entry<CUresult (*)(void*)>("cuCtxSetCurrent", "cuCtxSetCurrent");
      void* context = nullptr;
      CUresult rc = retain != nullptr && set != nullptr ? retain(&context, 0) : CUDA_ERROR_NOT_FOUND;
      if (rc == CUDA_SUCCESS) rc = set(context);
      std::printf("ctx %s\n", result(rc));
    } else if (name == "ctxrelease" || name == "ctxreset") {
      const bool reset = name == "ctxreset";
      auto fn = reset ? entry<CUresult (*)(int)>("cuDevicePrimaryCtxReset", "cuDevicePrimaryCtxReset_v2")
                      : entry<CUresult (*)(int)>("cuDevicePrimaryCtxRelease", "cuDevicePrimaryCtxRelease_v2");
      std::printf("%s %s\n", name.c_str(), fn != nullptr ? result(fn(0)) : "missing");
    } else if (name == "ctxcreate") {
      // cuCtxCreate as a CUDA 12.8 program asks for it: the driver answers with _v4.
      auto create = entry<CUresult (*)(void**, void*, unsigned, int)>("cuCtxCreate", "cuCtxCreate_v4");
      void* context = nullptr;
      const CUresult rc = create != nullptr ? create(&context, nullptr, 0, 0) : CUDA_ERROR_NOT_FOUND;
      if (rc == CUDA_SUCCESS) contexts.push_back(context);
      std::printf("ctxcreate %s\n", result(rc));
    } else if (name == "ctxdestroy") {
      auto destroy = entry<CUresult (*)(void*)>("cuCtxDestroy", "cuCtxDestroy_v2");
      const CUresult rc = contexts.empty() || destroy == nullptr ? CUDA_ERROR_INVALID_VALUE : destroy(contexts.back());
      if (rc == CUDA_SUCCESS) contexts.pop_back();
      std::printf("ctxdestroy %s\n", result(rc));
    } else if (name == "mipmap") {
      const auto second = arg.find(':');
      const std::size_t width = std::strtoull(arg.substr(0, second).c_str(), nullptr, 10);
      const auto levels = static_cast<unsigned>(std::strtoul(arg.substr(second + 1).c_str(), nullptr, 10));
      auto create = entry<CUresult (*)(CUmipmappedArray*, const CUDA_ARRAY3D_DESCRIPTOR*, unsigned)>(
          "cuMipmappedArrayCreate", "cuMipmappedArrayCreate");
      CUDA_ARRAY3D_DESCRIPTOR d{width, width, 0, 0x01, 1, 0};  // unsigned 8-bit, one channel
      CUmipmappedArray a = nullptr;
      std::printf("mipmap %s\n", create != nullptr ? result(create(&a, &d, levels)) : "missing");
    } else if (name == "graphlaunch") {
      auto launch = entry<CUresult (*)(CUgraphExec, CUstream)>("cuGraphLaunch", "cuGraphLaunch");
      std::printf("graphlaunch %s\n", launch != nullptr ? result(launch(nullptr, nullptr)) : "missing");
    } else if (name == "badrecords") {
      auto bad = reinterpret_cast<unsigned long long (*)()>(::dlsym(RTLD_DEFAULT, "fake_cuda_bad_records"));
      std::printf("badrecords %llu\n", bad != nullptr ? bad() : 0ULL);
    } else if (name == "concurrent") {
      auto one = [&] { (void)api.launch(nullptr, 1, 1, 1, 1, 1, 1, 0, nullptr, nullptr, nullptr); };
      std::thread a(one);
      std::thread b(one);
      a.join();
      b.join();
      auto met = reinterpret_cast<int (*)()>(::dlsym(RTLD_DEFAULT, "fake_cuda_rendezvous"));
      std::printf("concurrent %s\n", met != nullptr && met() == 1 ? "together" : "serialised");
    } else if (name == "sleep") {
      std::this_thread::sleep_for(std::chrono::milliseconds(n));
    } else if (name == "hold") {
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::hours(1));
    } else {
      std::printf("unknown op %s\n", op.c_str());
      return 2;
    }
    std::fflush(stdout);
  }
  return 0;
}
