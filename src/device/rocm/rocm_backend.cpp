#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/device/rocm_backend.hpp>

#include "../detail/proc_name.hpp"
#include "../detail/shared_library.hpp"

#include <rocm_smi/rocm_smi.h>

#include <cstdlib>
#include <fmt/format.h>
#include <mutex>

// Every ROCm SMI entry point we resolve; types come from the vendor header via decltype.
#define VGPU_RSMI_FUNCTIONS(X)        \
  X(rsmi_init)                        \
  X(rsmi_shut_down)                   \
  X(rsmi_status_string)               \
  X(rsmi_num_monitor_devices)         \
  X(rsmi_dev_name_get)                \
  X(rsmi_dev_unique_id_get)           \
  X(rsmi_dev_memory_total_get)        \
  X(rsmi_dev_memory_usage_get)        \
  X(rsmi_dev_busy_percent_get)        \
  X(rsmi_dev_memory_busy_percent_get) \
  X(rsmi_dev_temp_metric_get)         \
  X(rsmi_dev_power_ave_get)           \
  X(rsmi_dev_power_cap_get)           \
  X(rsmi_dev_gpu_clk_freq_get)        \
  X(rsmi_dev_pci_throughput_get)      \
  X(rsmi_dev_ecc_count_get)           \
  X(rsmi_compute_process_info_get)    \
  X(rsmi_compute_process_gpus_get)

namespace apt::vgpu::device {

struct RocmBackend::Impl {
  detail::SharedLibrary library;
#define VGPU_RSMI_POINTER(fn) decltype(&::fn) fn = nullptr;
  VGPU_RSMI_FUNCTIONS(VGPU_RSMI_POINTER)
#undef VGPU_RSMI_POINTER
  std::mutex mutex;
  std::vector<std::string> failures;  // last non-NOT_SUPPORTED failure per GPU
  bool initialised = false;

  explicit Impl(const std::string& path) : library(path) {}

  [[nodiscard]] std::string describe(rsmi_status_t rc) const {
    const char* text = nullptr;
    if (rsmi_status_string != nullptr && rsmi_status_string(rc, &text) == RSMI_STATUS_SUCCESS && text != nullptr) {
      return fmt::format("{} (rsmi status {})", text, static_cast<int>(rc));
    }
    return fmt::format("rsmi status {}", static_cast<int>(rc));
  }

  bool ok(std::uint32_t index, rsmi_status_t rc, const char* call) {
    if (rc == RSMI_STATUS_SUCCESS) return true;
    if (rc != RSMI_STATUS_NOT_SUPPORTED) {
      failures[index] = fmt::format("{} failed: {}", call, describe(rc));
      log::debug(fmt::format("GPU {}: {}", index, failures[index]));
    }
    return false;
  }
};

std::string RocmBackend::default_library() {
  const char* env = std::getenv("VGPU_ROCM_SMI_LIBRARY");
  return env != nullptr && *env != '\0' ? env : "librocm_smi64.so";
}

RocmBackend::RocmBackend(const std::string& library_path) {
  const std::string path = library_path.empty() ? default_library() : library_path;
  impl_ = std::make_unique<Impl>(path);
  Impl& r = *impl_;
  if (!r.library.loaded()) {
    throw DeviceError(fmt::format("rocm: cannot load {}: {}; install ROCm SMI or use --backend sim", path,
                                  r.library.error()));
  }
#define VGPU_RSMI_RESOLVE(fn) r.fn = r.library.symbol<decltype(&::fn)>(#fn);
  VGPU_RSMI_FUNCTIONS(VGPU_RSMI_RESOLVE)
#undef VGPU_RSMI_RESOLVE
  if (r.rsmi_init == nullptr || r.rsmi_shut_down == nullptr || r.rsmi_num_monitor_devices == nullptr) {
    throw DeviceError(fmt::format("rocm: {} does not export rsmi_init/rsmi_num_monitor_devices; not a ROCm SMI library",
                                  path));
  }
  if (rsmi_status_t rc = r.rsmi_init(0); rc != RSMI_STATUS_SUCCESS) {
    throw DeviceError(fmt::format("rocm: initialisation failed: {}; check the amdgpu driver or use --backend sim",
                                  r.describe(rc)));
  }
  r.initialised = true;
  std::uint32_t count = 0;
  if (rsmi_status_t rc = r.rsmi_num_monitor_devices(&count); rc != RSMI_STATUS_SUCCESS) {
    throw DeviceError(fmt::format("rocm: cannot count GPUs: {}", r.describe(rc)));
  }
  r.failures.resize(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    GpuInfo info;
    info.index = i;
    info.vendor = Vendor::amd;
    char name[256] = {};
    if (r.rsmi_dev_name_get != nullptr && r.ok(i, r.rsmi_dev_name_get(i, name, sizeof name), "rsmi_dev_name_get")) {
      info.name = name;
    }
    std::uint64_t id = 0;
    if (r.rsmi_dev_unique_id_get != nullptr && r.ok(i, r.rsmi_dev_unique_id_get(i, &id), "rsmi_dev_unique_id_get")) {
      // ROCR_VISIBLE_DEVICES accepts "GPU-<16 hex digits>".
      info.uuid = fmt::format("GPU-{:016x}", id);
    }
    std::uint64_t total = 0;
    if (r.rsmi_dev_memory_total_get != nullptr &&
        r.ok(i, r.rsmi_dev_memory_total_get(i, RSMI_MEM_TYPE_VRAM, &total), "rsmi_dev_memory_total_get")) {
      info.memory_total = total;
    }
    gpus_.push_back(std::move(info));
  }
}

RocmBackend::~RocmBackend() {
  if (impl_ && impl_->initialised) (void)impl_->rsmi_shut_down();
}

GpuMetrics RocmBackend::do_metrics(std::uint32_t index) {
  Impl& r = *impl_;
  std::lock_guard lock(r.mutex);
  GpuMetrics m;
  std::uint64_t u64 = 0;
  std::uint32_t u32 = 0;
  if (r.rsmi_dev_memory_total_get != nullptr &&
      r.ok(index, r.rsmi_dev_memory_total_get(index, RSMI_MEM_TYPE_VRAM, &u64), "rsmi_dev_memory_total_get")) {
    m.memory_total_bytes = u64;
  }
  if (r.rsmi_dev_memory_usage_get != nullptr &&
      r.ok(index, r.rsmi_dev_memory_usage_get(index, RSMI_MEM_TYPE_VRAM, &u64), "rsmi_dev_memory_usage_get")) {
    m.memory_used_bytes = u64;
  }
  if (r.rsmi_dev_busy_percent_get != nullptr &&
      r.ok(index, r.rsmi_dev_busy_percent_get(index, &u32), "rsmi_dev_busy_percent_get")) {
    m.utilization_percent = u32;
  }
  if (r.rsmi_dev_memory_busy_percent_get != nullptr &&
      r.ok(index, r.rsmi_dev_memory_busy_percent_get(index, &u32), "rsmi_dev_memory_busy_percent_get")) {
    m.memory_bandwidth_utilization_percent = u32;
  }
  std::int64_t millidegrees = 0;
  if (r.rsmi_dev_temp_metric_get != nullptr &&
      r.ok(index, r.rsmi_dev_temp_metric_get(index, RSMI_TEMP_TYPE_EDGE, RSMI_TEMP_CURRENT, &millidegrees),
           "rsmi_dev_temp_metric_get")) {
    m.temperature_celsius = static_cast<double>(millidegrees) / 1000.0;
  }
  if (r.rsmi_dev_power_ave_get != nullptr && r.ok(index, r.rsmi_dev_power_ave_get(index, 0, &u64), "rsmi_dev_power_ave_get")) {
    m.power_watts = static_cast<double>(u64) / 1e6;  // microwatts
  }
  if (r.rsmi_dev_power_cap_get != nullptr && r.ok(index, r.rsmi_dev_power_cap_get(index, 0, &u64), "rsmi_dev_power_cap_get")) {
    m.power_limit_watts = static_cast<double>(u64) / 1e6;
  }
  if (r.rsmi_dev_gpu_clk_freq_get != nullptr) {
    rsmi_frequencies_t f{};
    if (r.ok(index, r.rsmi_dev_gpu_clk_freq_get(index, RSMI_CLK_TYPE_SYS, &f), "rsmi_dev_gpu_clk_freq_get(SYS)") &&
        f.current < f.num_supported && f.current < RSMI_MAX_NUM_FREQUENCIES) {
      m.sm_clock_mhz = static_cast<std::uint32_t>(f.frequency[f.current] / 1'000'000);  // Hz
    }
    f = {};
    if (r.ok(index, r.rsmi_dev_gpu_clk_freq_get(index, RSMI_CLK_TYPE_MEM, &f), "rsmi_dev_gpu_clk_freq_get(MEM)") &&
        f.current < f.num_supported && f.current < RSMI_MAX_NUM_FREQUENCIES) {
      m.memory_clock_mhz = static_cast<std::uint32_t>(f.frequency[f.current] / 1'000'000);
    }
  }
  if (r.rsmi_dev_pci_throughput_get != nullptr) {
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
    std::uint64_t max_packet = 0;
    // ROCm SMI samples for one second and reports bytes in that second.
    if (r.ok(index, r.rsmi_dev_pci_throughput_get(index, &sent, &received, &max_packet), "rsmi_dev_pci_throughput_get")) {
      m.pcie_tx_bytes_per_second = sent;
      m.pcie_rx_bytes_per_second = received;
    }
  }
  return m;
}

std::vector<GpuProcess> RocmBackend::do_processes(std::uint32_t index) {
  Impl& r = *impl_;
  std::lock_guard lock(r.mutex);
  std::vector<GpuProcess> out;
  if (r.rsmi_compute_process_info_get == nullptr) return out;
  std::uint32_t count = 0;
  if (!r.ok(index, r.rsmi_compute_process_info_get(nullptr, &count), "rsmi_compute_process_info_get") || count == 0) {
    return out;
  }
  std::vector<rsmi_process_info_t> infos(count);
  rsmi_status_t rc = r.rsmi_compute_process_info_get(infos.data(), &count);
  if (rc != RSMI_STATUS_SUCCESS && rc != RSMI_STATUS_INSUFFICIENT_SIZE) return out;
  for (std::uint32_t i = 0; i < count && i < infos.size(); ++i) {
    // ROCm lists processes node-wide; keep those on this GPU.
    std::uint32_t devices[64] = {};
    std::uint32_t n_devices = 64;
    if (r.rsmi_compute_process_gpus_get == nullptr ||
        r.rsmi_compute_process_gpus_get(infos[i].process_id, devices, &n_devices) != RSMI_STATUS_SUCCESS) {
      continue;
    }
    for (std::uint32_t d = 0; d < n_devices && d < 64; ++d) {
      if (devices[d] == index) {
        out.push_back(GpuProcess{infos[i].process_id, detail::process_command(infos[i].process_id), infos[i].vram_usage});
        break;
      }
    }
  }
  return out;
}

GpuHealth RocmBackend::do_health(std::uint32_t index) {
  Impl& r = *impl_;
  std::lock_guard lock(r.mutex);
  GpuHealth h;
  if (r.rsmi_dev_ecc_count_get != nullptr) {
    rsmi_error_count_t ec{};
    if (r.ok(index, r.rsmi_dev_ecc_count_get(index, RSMI_GPU_BLOCK_UMC, &ec), "rsmi_dev_ecc_count_get")) {
      h.ecc_uncorrected_errors = ec.uncorrectable_err;
    }
  }
  // Liveness: a device that no longer answers its busy-percent query is unusable.
  r.failures[index].clear();
  std::uint32_t busy = 0;
  if (r.rsmi_dev_busy_percent_get != nullptr) {
    (void)r.ok(index, r.rsmi_dev_busy_percent_get(index, &busy), "rsmi_dev_busy_percent_get");
  }
  if (!r.failures[index].empty()) {
    h.state = HealthState::unhealthy;
    h.detail = r.failures[index];
  } else if (h.ecc_uncorrected_errors.value_or(0) > 0) {
    h.state = HealthState::unhealthy;
    h.detail = fmt::format("{} uncorrectable ECC error(s) in the memory controller", *h.ecc_uncorrected_errors);
  }
  return h;
}

}  // namespace apt::vgpu::device
