// Helpers for scripting the fake NVML and ROCm SMI libraries from tests. The
// test dlopens the same path the backend will, so both see one library instance.
#pragma once

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <string>

namespace apt::vgpu::testing {

inline void configure_fake(const char* library, const char* symbol, const std::string& json) {
  void* handle = ::dlopen(library, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(handle, nullptr) << ::dlerror();
  auto configure = reinterpret_cast<int (*)(const char*)>(::dlsym(handle, symbol));
  ASSERT_NE(configure, nullptr) << symbol;
  ASSERT_EQ(configure(json.c_str()), 0) << "bad fake script: " << json;
  // Keep the handle open: the library's script must outlive this call.
}

inline void configure_nvml(const std::string& json, const char* library = FAKE_NVML_PATH) {
  configure_fake(library, "fake_nvml_configure", json);
}

inline void configure_rocm(const std::string& json) {
  configure_fake(FAKE_ROCM_SMI_PATH, "fake_rocm_configure", json);
}

// Two GPUs with every reading scripted; the conformance tests use these.
inline const char* kTwoNvidiaGpus = R"({"devices": [
  {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-11111111-2222-3333-4444-555555555555",
   "memory_total": 85520809984, "memory_used": 1048576000, "memory_reserved": 536870912,
   "utilization_gpu": 37, "utilization_memory": 12, "temperature": 45, "power_mw": 123456,
   "power_limit_mw": 700000, "sm_clock": 1980, "mem_clock": 2619, "pcie_tx_kbps": 100,
   "pcie_rx_kbps": 200, "cc": [9, 0], "processes": [{"pid": 4242, "used": 1048576000}]},
  {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-66666666-7777-8888-9999-000000000000",
   "memory_total": 85520809984, "memory_used": 0, "utilization_gpu": 0, "cc": [9, 0]}]})";

inline const char* kTwoAmdGpus = R"({"devices": [
  {"name": "AMD Instinct MI210", "unique_id": 11259375, "vram_total": 68702699520, "vram_used": 2000000000,
   "busy_percent": 40, "memory_busy_percent": 10, "temperature_mc": 45500, "power_uw": 150000000,
   "power_cap_uw": 300000000, "sys_clock_hz": 1700000000, "mem_clock_hz": 1600000000,
   "pci_sent": 1000, "pci_received": 2000, "processes": [{"pid": 4243, "vram": 2000000000}]},
  {"name": "AMD Instinct MI210", "unique_id": 11259376, "vram_total": 68702699520, "vram_used": 0}]})";

}  // namespace apt::vgpu::testing
