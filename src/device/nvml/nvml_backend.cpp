#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/device/nvml_backend.hpp>

#include "../detail/proc_name.hpp"
#include "../detail/shared_library.hpp"
#include "nvml_api.hpp"

#include <cstdlib>
#include <deque>
#include <fmt/format.h>
#include <mutex>

namespace apt::vgpu::device {

struct NvmlBackend::Impl {
  detail::SharedLibrary library;
#define VGPU_NVML_POINTER(fn, ret, params) ret(*fn) params = nullptr;
  VGPU_NVML_FUNCTIONS(VGPU_NVML_POINTER)
#undef VGPU_NVML_POINTER

  std::mutex mutex;  // NVML is thread-safe, but our per-GPU state below is not
  std::vector<nvmlDevice_t> handles;
  std::vector<bool> lost;
  std::vector<std::deque<std::uint64_t>> xids;  // the last kRecentXids per GPU
  std::vector<std::uint64_t> xid_totals;
  nvmlEventSet_t events = nullptr;
  bool initialised = false;

  explicit Impl(const std::string& path) : library(path) {}

  [[nodiscard]] std::string describe(nvmlReturn_t rc) const {
    const char* text = nvmlErrorString != nullptr ? nvmlErrorString(rc) : nullptr;
    return text != nullptr ? fmt::format("{} (NVML error {})", text, rc) : fmt::format("NVML error {}", rc);
  }

  // Records GPU_IS_LOST; returns true when rc is success.
  bool ok(std::uint32_t index, nvmlReturn_t rc, const char* call) {
    if (rc == NVML_SUCCESS) return true;
    if (rc == NVML_ERROR_GPU_IS_LOST) {
      if (!lost[index]) log::error(fmt::format("GPU {}: {} reports the GPU is lost", index, call));
      lost[index] = true;
    } else if (rc != NVML_ERROR_NOT_SUPPORTED) {
      log::debug(fmt::format("GPU {}: {} failed: {}", index, call, describe(rc)));
    }
    return false;
  }

  void drain_events() {
    if (events == nullptr || nvmlEventSetWait_v2 == nullptr) return;
    nvmlEventData_t data{};
    while (nvmlEventSetWait_v2(events, &data, 0) == NVML_SUCCESS) {
      for (std::size_t i = 0; i < handles.size(); ++i) {
        if (handles[i] == data.device && (data.eventType & nvmlEventTypeXidCriticalError) != 0) {
          xids[i].push_back(data.eventData);
          if (xids[i].size() > kRecentXids) xids[i].pop_front();
          ++xid_totals[i];
        }
      }
    }
  }
};

std::string NvmlBackend::default_library() {
  const char* env = std::getenv("VGPU_NVML_LIBRARY");
  return env != nullptr && *env != '\0' ? env : "libnvidia-ml.so.1";
}

NvmlBackend::NvmlBackend(const std::string& library_path) {
  const std::string path = library_path.empty() ? default_library() : library_path;
  impl_ = std::make_unique<Impl>(path);
  Impl& n = *impl_;
  if (!n.library.loaded()) {
    throw DeviceError(fmt::format("nvml: cannot load {}: {}; install the NVIDIA driver or use --backend sim",
                                  path, n.library.error()));
  }
#define VGPU_NVML_RESOLVE(fn, ret, params) n.fn = n.library.symbol<ret(*) params>(#fn);
  VGPU_NVML_FUNCTIONS(VGPU_NVML_RESOLVE)
#undef VGPU_NVML_RESOLVE

  auto init = n.nvmlInit_v2 != nullptr ? n.nvmlInit_v2 : n.nvmlInit;
  auto count_fn = n.nvmlDeviceGetCount_v2 != nullptr ? n.nvmlDeviceGetCount_v2 : n.nvmlDeviceGetCount;
  auto handle_fn =
      n.nvmlDeviceGetHandleByIndex_v2 != nullptr ? n.nvmlDeviceGetHandleByIndex_v2 : n.nvmlDeviceGetHandleByIndex;
  if (init == nullptr || count_fn == nullptr || handle_fn == nullptr || n.nvmlShutdown == nullptr) {
    throw DeviceError(fmt::format("nvml: {} does not export nvmlInit/nvmlDeviceGetCount/nvmlDeviceGetHandleByIndex; "
                                  "it is not a usable NVML library",
                                  path));
  }
  if (nvmlReturn_t rc = init(); rc != NVML_SUCCESS) {
    throw DeviceError(fmt::format("nvml: initialisation failed: {}; check the driver with nvidia-smi or use --backend sim",
                                  n.describe(rc)));
  }
  n.initialised = true;

  unsigned int count = 0;
  if (nvmlReturn_t rc = count_fn(&count); rc != NVML_SUCCESS) {
    throw DeviceError(fmt::format("nvml: cannot count GPUs: {}", n.describe(rc)));
  }
  if (n.nvmlEventSetCreate != nullptr && n.nvmlEventSetCreate(&n.events) != NVML_SUCCESS) n.events = nullptr;

  n.handles.resize(count);
  n.lost.assign(count, false);
  n.xids.resize(count);
  n.xid_totals.assign(count, 0);
  for (unsigned int i = 0; i < count; ++i) {
    GpuInfo info;
    info.index = i;
    info.vendor = Vendor::nvidia;
    if (nvmlReturn_t rc = handle_fn(i, &n.handles[i]); rc != NVML_SUCCESS) {
      // Keep the GPU in the list so indices stay aligned with nvidia-smi; it is lost to us.
      n.lost[i] = true;
      info.name = "unavailable";
      log::error(fmt::format("GPU {}: cannot get an NVML handle: {}", i, n.describe(rc)));
      gpus_.push_back(std::move(info));
      continue;
    }
    nvmlDevice_t dev = n.handles[i];
    char text[NVML_DEVICE_NAME_V2_BUFFER_SIZE] = {};
    if (n.nvmlDeviceGetName != nullptr && n.ok(i, n.nvmlDeviceGetName(dev, text, sizeof text), "nvmlDeviceGetName")) {
      info.name = text;
    }
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE] = {};
    if (n.nvmlDeviceGetUUID != nullptr && n.ok(i, n.nvmlDeviceGetUUID(dev, uuid, sizeof uuid), "nvmlDeviceGetUUID")) {
      info.uuid = uuid;
    }
    int major = 0;
    int minor = 0;
    if (n.nvmlDeviceGetCudaComputeCapability != nullptr &&
        n.ok(i, n.nvmlDeviceGetCudaComputeCapability(dev, &major, &minor), "nvmlDeviceGetCudaComputeCapability")) {
      info.compute_capability = ComputeCapability{major, minor};
    }
    const GpuMetrics m = do_metrics(i);
    info.memory_total = m.memory_total_bytes.value_or(0);
    if (n.events != nullptr && n.nvmlDeviceRegisterEvents != nullptr) {
      // Not every GPU supports XID events (NOT_SUPPORTED is normal on some boards).
      (void)n.nvmlDeviceRegisterEvents(dev, nvmlEventTypeXidCriticalError, n.events);
    }
    gpus_.push_back(std::move(info));
  }
}

NvmlBackend::~NvmlBackend() {
  if (impl_ && impl_->initialised) {
    if (impl_->events != nullptr && impl_->nvmlEventSetFree != nullptr) (void)impl_->nvmlEventSetFree(impl_->events);
    (void)impl_->nvmlShutdown();
  }
}

GpuMetrics NvmlBackend::do_metrics(std::uint32_t index) {
  Impl& n = *impl_;
  std::lock_guard lock(n.mutex);
  GpuMetrics m;
  if (n.lost[index]) return m;
  nvmlDevice_t dev = n.handles[index];

  if (n.nvmlDeviceGetMemoryInfo_v2 != nullptr) {
    nvmlMemory_v2_t mem{};
    mem.version = nvmlMemory_v2;
    if (n.ok(index, n.nvmlDeviceGetMemoryInfo_v2(dev, &mem), "nvmlDeviceGetMemoryInfo_v2")) {
      m.memory_total_bytes = mem.total;
      m.memory_used_bytes = mem.used;
    }
  } else if (n.nvmlDeviceGetMemoryInfo != nullptr) {
    nvmlMemory_t mem{};
    if (n.ok(index, n.nvmlDeviceGetMemoryInfo(dev, &mem), "nvmlDeviceGetMemoryInfo")) {
      m.memory_total_bytes = mem.total;
      m.memory_used_bytes = mem.used;
    }
  }
  if (n.nvmlDeviceGetUtilizationRates != nullptr) {
    nvmlUtilization_t u{};
    if (n.ok(index, n.nvmlDeviceGetUtilizationRates(dev, &u), "nvmlDeviceGetUtilizationRates")) {
      m.utilization_percent = u.gpu;
      m.memory_bandwidth_utilization_percent = u.memory;
    }
  }
  unsigned int value = 0;
  if (n.nvmlDeviceGetTemperature != nullptr &&
      n.ok(index, n.nvmlDeviceGetTemperature(dev, NVML_TEMPERATURE_GPU, &value), "nvmlDeviceGetTemperature")) {
    m.temperature_celsius = value;
  }
  if (n.nvmlDeviceGetPowerUsage != nullptr &&
      n.ok(index, n.nvmlDeviceGetPowerUsage(dev, &value), "nvmlDeviceGetPowerUsage")) {
    m.power_watts = value / 1000.0;  // NVML reports milliwatts
  }
  if (n.nvmlDeviceGetEnforcedPowerLimit != nullptr &&
      n.ok(index, n.nvmlDeviceGetEnforcedPowerLimit(dev, &value), "nvmlDeviceGetEnforcedPowerLimit")) {
    m.power_limit_watts = value / 1000.0;
  }
  if (n.nvmlDeviceGetClockInfo != nullptr) {
    if (n.ok(index, n.nvmlDeviceGetClockInfo(dev, NVML_CLOCK_SM, &value), "nvmlDeviceGetClockInfo(SM)")) {
      m.sm_clock_mhz = value;
    }
    if (n.ok(index, n.nvmlDeviceGetClockInfo(dev, NVML_CLOCK_MEM, &value), "nvmlDeviceGetClockInfo(MEM)")) {
      m.memory_clock_mhz = value;
    }
  }
  if (n.nvmlDeviceGetPcieThroughput != nullptr) {
    // NVML reports KB/s over a 20 ms window.
    if (n.ok(index, n.nvmlDeviceGetPcieThroughput(dev, NVML_PCIE_UTIL_RX_BYTES, &value), "nvmlDeviceGetPcieThroughput(RX)")) {
      m.pcie_rx_bytes_per_second = static_cast<std::uint64_t>(value) * 1024U;
    }
    if (n.ok(index, n.nvmlDeviceGetPcieThroughput(dev, NVML_PCIE_UTIL_TX_BYTES, &value), "nvmlDeviceGetPcieThroughput(TX)")) {
      m.pcie_tx_bytes_per_second = static_cast<std::uint64_t>(value) * 1024U;
    }
  }
  if (n.lost[index]) return GpuMetrics{};  // lost part-way: report nothing rather than a mix
  return m;
}

std::vector<GpuProcess> NvmlBackend::do_processes(std::uint32_t index) {
  Impl& n = *impl_;
  std::lock_guard lock(n.mutex);
  std::vector<GpuProcess> out;
  if (n.lost[index]) return out;
  nvmlDevice_t dev = n.handles[index];

  auto add = [&out](unsigned int pid, unsigned long long used) {
    GpuProcess p;
    p.pid = pid;
    p.command = detail::process_command(pid);
    if (used != kNvmlValueNotAvailable) p.memory_bytes = used;
    out.push_back(std::move(p));
  };
  // The list can grow between the sizing call and the filling call; retry a few times.
  for (int attempt = 0; attempt < 4; ++attempt) {
    unsigned int count = 0;
    auto versioned = n.nvmlDeviceGetComputeRunningProcesses_v3 != nullptr ? n.nvmlDeviceGetComputeRunningProcesses_v3
                                                                           : n.nvmlDeviceGetComputeRunningProcesses_v2;
    nvmlReturn_t rc = NVML_ERROR_NOT_SUPPORTED;
    if (versioned != nullptr) {
      rc = versioned(dev, &count, nullptr);
      if (rc == NVML_SUCCESS) return out;  // no processes
      if (rc != NVML_ERROR_INSUFFICIENT_SIZE) break;
      std::vector<nvmlProcessInfo_t> infos(count + 8);
      count = static_cast<unsigned int>(infos.size());
      rc = versioned(dev, &count, infos.data());
      if (rc == NVML_ERROR_INSUFFICIENT_SIZE) continue;
      if (rc != NVML_SUCCESS) break;
      for (unsigned int i = 0; i < count; ++i) add(infos[i].pid, infos[i].usedGpuMemory);
      return out;
    }
    if (n.nvmlDeviceGetComputeRunningProcesses == nullptr) return out;
    rc = n.nvmlDeviceGetComputeRunningProcesses(dev, &count, nullptr);
    if (rc == NVML_SUCCESS) return out;
    if (rc != NVML_ERROR_INSUFFICIENT_SIZE) {
      (void)n.ok(index, rc, "nvmlDeviceGetComputeRunningProcesses");
      return out;
    }
    std::vector<nvmlProcessInfo_v1_t> infos(count + 8);
    count = static_cast<unsigned int>(infos.size());
    rc = n.nvmlDeviceGetComputeRunningProcesses(dev, &count, infos.data());
    if (rc == NVML_ERROR_INSUFFICIENT_SIZE) continue;
    if (!n.ok(index, rc, "nvmlDeviceGetComputeRunningProcesses")) return out;
    for (unsigned int i = 0; i < count; ++i) add(infos[i].pid, infos[i].usedGpuMemory);
    return out;
  }
  return out;
}

GpuHealth NvmlBackend::do_health(std::uint32_t index) {
  Impl& n = *impl_;
  std::lock_guard lock(n.mutex);
  GpuHealth h;
  n.drain_events();
  h.xid_events.assign(n.xids[index].begin(), n.xids[index].end());
  h.xid_total = n.xid_totals[index];
  if (!n.lost[index] && n.nvmlDeviceGetTotalEccErrors != nullptr) {
    unsigned long long count = 0;
    if (n.ok(index,
             n.nvmlDeviceGetTotalEccErrors(n.handles[index], NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC, &count),
             "nvmlDeviceGetTotalEccErrors")) {
      h.ecc_uncorrected_errors = count;
    }
  }
  // A cheap liveness probe: the GPU may have fallen off the bus since the last call.
  if (!n.lost[index] && n.nvmlDeviceGetTemperature != nullptr) {
    unsigned int t = 0;
    (void)n.ok(index, n.nvmlDeviceGetTemperature(n.handles[index], NVML_TEMPERATURE_GPU, &t), "nvmlDeviceGetTemperature");
  }
  if (n.lost[index]) {
    h.state = HealthState::lost;
    h.detail = "NVML reports the GPU is lost (NVML_ERROR_GPU_IS_LOST); it needs a reset or a reboot";
  } else if (!h.xid_events.empty()) {
    h.state = HealthState::unhealthy;
    h.detail = fmt::format("critical XID {} reported by the driver", h.xid_events.back());
  } else if (h.ecc_uncorrected_errors.value_or(0) > 0) {
    h.state = HealthState::unhealthy;
    h.detail = fmt::format("{} uncorrectable ECC error(s) since the driver loaded", *h.ecc_uncorrected_errors);
  }
  return h;
}

}  // namespace apt::vgpu::device
