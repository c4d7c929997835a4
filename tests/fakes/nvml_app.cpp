// Asks NVML (dlopen + dlsym, as pynvml does) for GPU 0's memory, both versions;
// with "procs", for its running compute processes instead (sizing call, _v3, v1).
#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <unistd.h>

struct Memory {
  unsigned long long total, free, used;
};
struct MemoryV2 {
  unsigned int version;
  unsigned long long total, reserved, free, used;
};

struct ProcessV1 {
  unsigned int pid;
  unsigned long long used;
};
struct ProcessV2 {
  unsigned int pid;
  unsigned long long used;
  unsigned int gpu_instance, compute_instance;
};

template <class Info>
int count_self(const Info* infos, unsigned n) {
  int self = 0;
  for (unsigned i = 0; i < n; ++i) self += infos[i].pid == static_cast<unsigned>(::getpid()) ? 1 : 0;
  return self;
}

int processes(void* lib, void* device) {
  auto v3 = reinterpret_cast<int (*)(void*, unsigned*, ProcessV2*)>(::dlsym(lib, "nvmlDeviceGetComputeRunningProcesses_v3"));
  auto v1 = reinterpret_cast<int (*)(void*, unsigned*, ProcessV1*)>(::dlsym(lib, "nvmlDeviceGetComputeRunningProcesses"));
  unsigned n = 0;
  const int sizing = v3(device, &n, nullptr);
  std::printf("sizing %d n=%u\n", sizing, n);
  ProcessV2 two[8] = {};
  n = 8;
  const int rc3 = v3(device, &n, two);
  std::printf("v3 %d n=%u self=%d\n", rc3, n, count_self(two, n));
  ProcessV1 one[8] = {};
  n = 8;
  const int rc1 = v1(device, &n, one);
  std::printf("v1 %d n=%u self=%d\n", rc1, n, count_self(one, n));
  return 0;
}

int main(int argc, char** argv) {
  void* lib = ::dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    std::printf("dlopen failed: %s\n", ::dlerror());
    return 3;
  }
  auto init = reinterpret_cast<int (*)()>(::dlsym(lib, "nvmlInit_v2"));
  auto handle = reinterpret_cast<int (*)(unsigned, void**)>(::dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
  auto v1 = reinterpret_cast<int (*)(void*, Memory*)>(::dlsym(lib, "nvmlDeviceGetMemoryInfo"));
  auto v2 = reinterpret_cast<int (*)(void*, MemoryV2*)>(::dlsym(lib, "nvmlDeviceGetMemoryInfo_v2"));
  void* device = nullptr;
  if (init() != 0 || handle(0, &device) != 0) return 4;
  if (argc > 1 && std::strcmp(argv[1], "procs") == 0) return processes(lib, device);
  Memory m{};
  MemoryV2 m2{};
  m2.version = static_cast<unsigned>(sizeof(MemoryV2)) | (2U << 24U);
  const int rc1 = v1(device, &m);
  const int rc2 = v2(device, &m2);
  std::printf("v1 %d total=%llu used=%llu free=%llu\n", rc1, m.total, m.used, m.free);
  std::printf("v2 %d total=%llu used=%llu free=%llu\n", rc2, m2.total, m2.used, m2.free);
  return 0;
}
