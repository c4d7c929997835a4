// A fake libnvidia-ml.so.1 for tests, in the spirit of DCGM's nvml-injection:
// it implements the NVML subset our backend calls, returning scripted values
// and errors. The script is JSON, from the file named by FAKE_NVML_CONFIG (read
// at nvmlInit) or passed to fake_nvml_configure(). Shape:
//
// {"init_error": "DRIVER_NOT_LOADED",            // optional: nvmlInit fails with it
//  "devices": [{"name": "...", "uuid": "GPU-...", "memory_total": 80000000000,
//               "memory_used": 1000, "memory_reserved": 0, "utilization_gpu": 37,
//               "utilization_memory": 12, "temperature": 45, "power_mw": 123456,
//               "power_limit_mw": 700000, "sm_clock": 1980, "mem_clock": 2619,
//               "pcie_tx_kbps": 100, "pcie_rx_kbps": 200, "cc": [9, 0],
//               "processes": [{"pid": 10, "used": 1000}],   // "used": null -> not available
//               "ecc_uncorrected": 0, "xid_events": [79], "lost": false,
//               "errors": {"nvmlDeviceGetTemperature": "NOT_SUPPORTED"}}]}
//
// Built twice: the modern library, and with FAKE_NVML_LEGACY a driver that
// predates the versioned entry points (_v2/_v3), to test our fallbacks.
#include "../../src/device/nvml/nvml_api.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

struct FakeDevice {
  nlohmann::json spec;
  std::deque<unsigned long long> pending_xids;
  bool registered = false;
};

std::mutex g_mutex;
nlohmann::json g_config = nlohmann::json::object();
std::vector<FakeDevice> g_devices;
int g_init_count = 0;

int code_of(const std::string& name) {
  static const std::pair<const char*, int> kCodes[] = {
      {"UNINITIALIZED", NVML_ERROR_UNINITIALIZED}, {"INVALID_ARGUMENT", NVML_ERROR_INVALID_ARGUMENT},
      {"NOT_SUPPORTED", NVML_ERROR_NOT_SUPPORTED}, {"NO_PERMISSION", NVML_ERROR_NO_PERMISSION},
      {"NOT_FOUND", NVML_ERROR_NOT_FOUND},         {"DRIVER_NOT_LOADED", NVML_ERROR_DRIVER_NOT_LOADED},
      {"TIMEOUT", NVML_ERROR_TIMEOUT},             {"GPU_IS_LOST", NVML_ERROR_GPU_IS_LOST},
      {"UNKNOWN", NVML_ERROR_UNKNOWN},
  };
  for (const auto& [n, c] : kCodes) {
    if (name == n) return c;
  }
  return NVML_ERROR_UNKNOWN;
}

void apply(const nlohmann::json& config) {
  g_config = config;
  g_devices.clear();
  for (const auto& spec : config.value("devices", nlohmann::json::array())) {
    FakeDevice d;
    d.spec = spec;
    for (const auto& x : spec.value("xid_events", nlohmann::json::array())) d.pending_xids.push_back(x.get<unsigned long long>());
    g_devices.push_back(std::move(d));
  }
}

void load_from_env() {
  const char* path = std::getenv("FAKE_NVML_CONFIG");
  if (path == nullptr) return;
  std::ifstream in(path);
  if (in) apply(nlohmann::json::parse(in, nullptr, false));
}

// Index of a handle, or -1. Handles are index+1 so reconfiguring never dangles them.
long index_of(nvmlDevice_t device) {
  const auto i = static_cast<long>(reinterpret_cast<std::uintptr_t>(device)) - 1;
  return i >= 0 && i < static_cast<long>(g_devices.size()) ? i : -1;
}

// The scripted result of `function` on `device`: lost, a scripted error, or success.
int check(nvmlDevice_t device, const char* function, FakeDevice** out) {
  const long i = index_of(device);
  if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
  FakeDevice& d = g_devices[static_cast<std::size_t>(i)];
  if (d.spec.value("lost", false)) return NVML_ERROR_GPU_IS_LOST;
  if (d.spec.contains("errors") && d.spec["errors"].contains(function)) {
    return code_of(d.spec["errors"][function].get<std::string>());
  }
  *out = &d;
  return NVML_SUCCESS;
}

template <class T>
T value(const FakeDevice* d, const char* key, T fallback) {
  return d->spec.value(key, fallback);
}

nvmlReturn_t do_init() {
  std::lock_guard lock(g_mutex);
  if (g_config.empty() || g_config.value("devices", nlohmann::json::array()).empty()) load_from_env();
  if (g_config.contains("init_error")) return code_of(g_config["init_error"].get<std::string>());
  ++g_init_count;
  return NVML_SUCCESS;
}

nvmlReturn_t do_count(unsigned int* count) {
  std::lock_guard lock(g_mutex);
  if (count == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *count = static_cast<unsigned int>(g_devices.size());
  return NVML_SUCCESS;
}

nvmlReturn_t do_handle(unsigned int index, nvmlDevice_t* device) {
  std::lock_guard lock(g_mutex);
  if (device == nullptr || index >= g_devices.size()) return NVML_ERROR_INVALID_ARGUMENT;
  *device = reinterpret_cast<nvmlDevice_t>(static_cast<std::uintptr_t>(index) + 1);
  return NVML_SUCCESS;
}

template <class Info>
nvmlReturn_t do_processes(nvmlDevice_t device, unsigned int* count, Info* infos, const char* name) {
  std::lock_guard lock(g_mutex);
  FakeDevice* d = nullptr;
  if (int rc = check(device, name, &d); rc != NVML_SUCCESS) return rc;
  const auto procs = d->spec.value("processes", nlohmann::json::array());
  if (*count < procs.size() || infos == nullptr) {
    const bool enough = procs.empty();
    *count = static_cast<unsigned int>(procs.size());
    return enough ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
  }
  *count = static_cast<unsigned int>(procs.size());
  for (std::size_t i = 0; i < procs.size(); ++i) {
    Info info{};
    // "pid": "self" is the process asking (a test of a program's own view).
    info.pid = procs[i]["pid"].is_string() ? static_cast<unsigned int>(::getpid()) : procs[i].value("pid", 0U);
    info.usedGpuMemory = procs[i]["used"].is_null() ? kNvmlValueNotAvailable : procs[i]["used"].get<unsigned long long>();
    infos[i] = info;
  }
  return NVML_SUCCESS;
}

}  // namespace

extern "C" {

// Test control: replace the script. Returns 0, or -1 when the JSON is invalid.
__attribute__((visibility("default"))) int fake_nvml_configure(const char* json) {
  auto parsed = nlohmann::json::parse(json, nullptr, false);
  if (parsed.is_discarded()) return -1;
  std::lock_guard lock(g_mutex);
  apply(parsed);
  return 0;
}

// Test control: how many times nvmlInit succeeded (to check init/shutdown pairing).
__attribute__((visibility("default"))) int fake_nvml_init_count() {
  std::lock_guard lock(g_mutex);
  return g_init_count;
}

nvmlReturn_t nvmlInit() { return do_init(); }
nvmlReturn_t nvmlShutdown() {
  std::lock_guard lock(g_mutex);
  --g_init_count;
  return NVML_SUCCESS;
}

const char* nvmlErrorString(nvmlReturn_t rc) {
  switch (rc) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    default: return "Unknown Error";
  }
}

nvmlReturn_t nvmlDeviceGetCount(unsigned int* count) { return do_count(count); }
nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t* device) { return do_handle(index, device); }

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char* name, unsigned int length) {
  std::lock_guard lock(g_mutex);
  FakeDevice* d = nullptr;
  if (int rc = check(device, "nvmlDeviceGetName", &d); rc != NVML_SUCCESS) return rc;
  const std::string text = value<std::string>(d, "name", "Fake GPU");
  if (text.size() + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
  std::memcpy(name, text.c_str(), text.size() + 1);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char* uuid, unsigned int length) {
  std::lock_guard lock(g_mutex);
  FakeDevice* d = nullptr;
  if (int rc = check(device, "nvmlDeviceGetUUID", &d); rc != NVML_SUCCESS) return rc;
  const std::string text = value<std::string>(d, "uuid", "GPU-00000000-0000-0000-0000-000000000000");
  if (text.size() + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
  std::memcpy(uuid, text.c_str(), text.size() + 1);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int* major, int* minor) {
  std::lock_guard lock(g_mutex);
  FakeDevice* d = nullptr;
  if (int rc = check(device, "nvmlDeviceGetCudaComputeCapability", &d); rc != NVML_SUCCESS) return rc;
  const auto cc = d->spec.value("cc", nlohmann::json::array({9, 0}));
  *major = cc[0].get<int>();
  *minor = cc[1].get<int>();
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t* memory) {
  std::lock_guard lock(g_mutex);
  FakeDevice* d = nullptr;
  if (int rc = check(device, "nvmlDeviceGetMemoryInfo", &d); rc != NVML_SUCCESS) return rc;
  // Version 1 folds the driver's reserved memory into "used".
  memory->total = value<unsigned long long>(d, "memory_total", 0);
  memory->used = value<unsigned long long>(d, "memory_used", 0) + value<unsigned long long>(d, "memory_reserved", 0);
  memory->free = memory->total - memory->used;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t* utilization) {
  std::lock_guard lock(g_mutex);
  FakeDevice* d = nullptr;
  if (int rc = check(device, "nvmlDeviceGetUtilizationRates", &d); rc != NVML_SUCCESS) return rc;
  utilization->gpu = value<unsigned int>(d, "utilization_gpu", 0);
  utilization->memory = value<unsigned int>(d, "utilization_memory", 0);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int* temperature) {
  std::lock_guard lock(g_mutex);
  FakeDevice* d = nullptr;
  if (int rc = check(device, "nvmlDeviceGetTemperature", &d); rc != NVML_SUCCESS) return rc;
  if (sensor != NVML_TEMPERATURE_GPU) return NVML_ERROR_INVALID_ARGUMENT;
  *temperature = value<unsigned int>(d, "temperature", 30);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int* power) {
  std::lock_guard lock(g_mutex);
  FakeDevice* d = nullptr;
  if (int rc = check(device, "nvmlDeviceGetPowerUsage", &d); rc != NVML_SUCCESS) return rc;
  *power = value<unsigned int>(d, "power_mw", 60000);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int* limit) {
  std::lock_guard lock(g_mutex);
  FakeDevice* d = nullptr;
  if (int rc = check(device, "nvmlDeviceGetEnforcedPowerLimit", &d); rc != NVML_SUCCESS) return rc;
  *limit = value<unsigned int>(d, "power_limit_mw", 700000);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, int type, unsigned int* clock) {
  std::lock_guard lock(g_mutex);
  FakeDevice* d = nullptr;
  if (int rc = check(device, "nvmlDeviceGetClockInfo", &d); rc != NVML_SUCCESS) return rc;
  if (type == NVML_CLOCK_SM) *clock = value<unsigned int>(d, "sm_clock", 1980);
  else if (type == NVML_CLOCK_MEM) *clock = value<unsigned int>(d, "mem_clock", 2619);
  else return NVML_ERROR_INVALID_ARGUMENT;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t device, int counter, unsigned int* value_kbps) {
  std::lock_guard lock(g_mutex);
  FakeDevice* d = nullptr;
  if (int rc = check(device, "nvmlDeviceGetPcieThroughput", &d); rc != NVML_SUCCESS) return rc;
  *value_kbps = counter == NVML_PCIE_UTIL_TX_BYTES ? value<unsigned int>(d, "pcie_tx_kbps", 0)
                                                   : value<unsigned int>(d, "pcie_rx_kbps", 0);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int* count, nvmlProcessInfo_v1_t* infos) {
  return do_processes(device, count, infos, "nvmlDeviceGetComputeRunningProcesses");
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, int error_type, int counter_type, unsigned long long* count) {
  std::lock_guard lock(g_mutex);
  FakeDevice* d = nullptr;
  if (int rc = check(device, "nvmlDeviceGetTotalEccErrors", &d); rc != NVML_SUCCESS) return rc;
  if (error_type != NVML_MEMORY_ERROR_TYPE_UNCORRECTED || counter_type != NVML_VOLATILE_ECC) return NVML_ERROR_INVALID_ARGUMENT;
  *count = value<unsigned long long>(d, "ecc_uncorrected", 0);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t* set) {
  static int token = 0;
  *set = reinterpret_cast<nvmlEventSet_t>(&token);
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long types, nvmlEventSet_t) {
  std::lock_guard lock(g_mutex);
  FakeDevice* d = nullptr;
  if (int rc = check(device, "nvmlDeviceRegisterEvents", &d); rc != NVML_SUCCESS) return rc;
  d->registered = (types & nvmlEventTypeXidCriticalError) != 0;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t) { return NVML_SUCCESS; }

#ifndef FAKE_NVML_LEGACY
nvmlReturn_t nvmlInit_v2() { return do_init(); }
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int* count) { return do_count(count); }
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t* device) { return do_handle(index, device); }

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t* memory) {
  std::lock_guard lock(g_mutex);
  FakeDevice* d = nullptr;
  if (int rc = check(device, "nvmlDeviceGetMemoryInfo_v2", &d); rc != NVML_SUCCESS) return rc;
  if (memory->version != nvmlMemory_v2) return NVML_ERROR_INVALID_ARGUMENT;  // real NVML: ARGUMENT_VERSION_MISMATCH
  memory->total = value<unsigned long long>(d, "memory_total", 0);
  memory->reserved = value<unsigned long long>(d, "memory_reserved", 0);
  memory->used = value<unsigned long long>(d, "memory_used", 0);
  memory->free = memory->total - memory->used - memory->reserved;
  return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int* count, nvmlProcessInfo_t* infos) {
  return do_processes(device, count, infos, "nvmlDeviceGetComputeRunningProcesses_v3");
}

nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t, nvmlEventData_t* data, unsigned int) {
  std::lock_guard lock(g_mutex);
  for (std::size_t i = 0; i < g_devices.size(); ++i) {
    FakeDevice& d = g_devices[i];
    if (d.registered && !d.pending_xids.empty()) {
      *data = nvmlEventData_t{};
      data->device = reinterpret_cast<nvmlDevice_t>(static_cast<std::uintptr_t>(i) + 1);
      data->eventType = nvmlEventTypeXidCriticalError;
      data->eventData = d.pending_xids.front();
      d.pending_xids.pop_front();
      return NVML_SUCCESS;
    }
  }
  return NVML_ERROR_TIMEOUT;
}
#endif

}  // extern "C"
