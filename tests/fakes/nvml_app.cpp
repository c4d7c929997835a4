// Asks NVML (dlopen + dlsym, as pynvml does) for GPU 0's memory, both versions.
#include <cstdio>
#include <dlfcn.h>

struct Memory {
  unsigned long long total, free, used;
};
struct MemoryV2 {
  unsigned int version;
  unsigned long long total, reserved, free, used;
};

int main() {
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
  Memory m{};
  MemoryV2 m2{};
  m2.version = static_cast<unsigned>(sizeof(MemoryV2)) | (2U << 24U);
  const int rc1 = v1(device, &m);
  const int rc2 = v2(device, &m2);
  std::printf("v1 %d total=%llu used=%llu free=%llu\n", rc1, m.total, m.used, m.free);
  std::printf("v2 %d total=%llu used=%llu free=%llu\n", rc2, m2.total, m2.used, m2.free);
  return 0;
}
