// A fake librocm_smi64.so for tests: implements the ROCm SMI subset our
// backend calls (signatures checked against the real rocm_smi.h) and returns
// scripted values and errors. Script: JSON from FAKE_ROCM_SMI_CONFIG (read at
// rsmi_init) or fake_rocm_configure(). Shape:
//
// {"init_error": "INIT_ERROR",
//  "devices": [{"name": "AMD Instinct MI210", "unique_id": 1234, "vram_total": 68702699520,
//               "vram_used": 1000, "busy_percent": 40, "memory_busy_percent": 10,
//               "temperature_mc": 45000, "power_uw": 150000000, "power_cap_uw": 300000000,
//               "sys_clock_hz": 1700000000, "mem_clock_hz": 1600000000,
//               "pci_sent": 1000, "pci_received": 2000, "ecc_uncorrectable": 0,
//               "processes": [{"pid": 42, "vram": 1000}],
//               "errors": {"rsmi_dev_temp_metric_get": "NOT_SUPPORTED"}}]}
#include <rocm_smi/rocm_smi.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>

namespace {

std::mutex g_mutex;
nlohmann::json g_config = nlohmann::json::object();

const nlohmann::json& devices() {
  static const nlohmann::json empty = nlohmann::json::array();
  return g_config.contains("devices") ? g_config["devices"] : empty;
}

rsmi_status_t code_of(const std::string& name) {
  if (name == "NOT_SUPPORTED") return RSMI_STATUS_NOT_SUPPORTED;
  if (name == "INVALID_ARGS") return RSMI_STATUS_INVALID_ARGS;
  if (name == "PERMISSION") return RSMI_STATUS_PERMISSION;
  if (name == "INIT_ERROR") return RSMI_STATUS_INIT_ERROR;
  if (name == "NOT_FOUND") return RSMI_STATUS_NOT_FOUND;
  return RSMI_STATUS_UNKNOWN_ERROR;
}

// Looks up device `index` and its scripted error for `function`.
rsmi_status_t check(uint32_t index, const char* function, const nlohmann::json** out) {
  if (index >= devices().size()) return RSMI_STATUS_INVALID_ARGS;
  const nlohmann::json& d = devices()[index];
  if (d.contains("errors") && d["errors"].contains(function)) return code_of(d["errors"][function].get<std::string>());
  *out = &d;
  return RSMI_STATUS_SUCCESS;
}

template <class T>
rsmi_status_t get(uint32_t index, const char* function, const char* key, T fallback, T* out) {
  std::lock_guard lock(g_mutex);
  const nlohmann::json* d = nullptr;
  if (rsmi_status_t rc = check(index, function, &d); rc != RSMI_STATUS_SUCCESS) return rc;
  if (out == nullptr) return RSMI_STATUS_INVALID_ARGS;
  *out = d->value(key, fallback);
  return RSMI_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int fake_rocm_configure(const char* json) {
  auto parsed = nlohmann::json::parse(json, nullptr, false);
  if (parsed.is_discarded()) return -1;
  std::lock_guard lock(g_mutex);
  g_config = parsed;
  return 0;
}

rsmi_status_t rsmi_init(uint64_t) {
  std::lock_guard lock(g_mutex);
  if (!g_config.contains("devices")) {
    if (const char* path = std::getenv("FAKE_ROCM_SMI_CONFIG"); path != nullptr) {
      std::ifstream in(path);
      if (in) g_config = nlohmann::json::parse(in, nullptr, false);
    }
  }
  if (g_config.contains("init_error")) return code_of(g_config["init_error"].get<std::string>());
  return RSMI_STATUS_SUCCESS;
}

rsmi_status_t rsmi_shut_down(void) { return RSMI_STATUS_SUCCESS; }

rsmi_status_t rsmi_status_string(rsmi_status_t status, const char** text) {
  switch (status) {
    case RSMI_STATUS_SUCCESS: *text = "RSMI_STATUS_SUCCESS: The function has been executed successfully."; break;
    case RSMI_STATUS_NOT_SUPPORTED: *text = "RSMI_STATUS_NOT_SUPPORTED: The function is not supported."; break;
    case RSMI_STATUS_INIT_ERROR: *text = "RSMI_STATUS_INIT_ERROR: An error occurred during initialization."; break;
    default: *text = "RSMI_STATUS_UNKNOWN_ERROR: An unknown error occurred."; break;
  }
  return RSMI_STATUS_SUCCESS;
}

rsmi_status_t rsmi_num_monitor_devices(uint32_t* count) {
  std::lock_guard lock(g_mutex);
  *count = static_cast<uint32_t>(devices().size());
  return RSMI_STATUS_SUCCESS;
}

rsmi_status_t rsmi_dev_name_get(uint32_t index, char* name, size_t len) {
  std::lock_guard lock(g_mutex);
  const nlohmann::json* d = nullptr;
  if (rsmi_status_t rc = check(index, "rsmi_dev_name_get", &d); rc != RSMI_STATUS_SUCCESS) return rc;
  const std::string text = d->value("name", std::string("Fake AMD GPU"));
  if (text.size() + 1 > len) return RSMI_STATUS_INSUFFICIENT_SIZE;
  std::memcpy(name, text.c_str(), text.size() + 1);
  return RSMI_STATUS_SUCCESS;
}

rsmi_status_t rsmi_dev_unique_id_get(uint32_t index, uint64_t* id) {
  return get<uint64_t>(index, "rsmi_dev_unique_id_get", "unique_id", index + 1, id);
}

rsmi_status_t rsmi_dev_memory_total_get(uint32_t index, rsmi_memory_type_t, uint64_t* total) {
  return get<uint64_t>(index, "rsmi_dev_memory_total_get", "vram_total", 0, total);
}

rsmi_status_t rsmi_dev_memory_usage_get(uint32_t index, rsmi_memory_type_t, uint64_t* used) {
  return get<uint64_t>(index, "rsmi_dev_memory_usage_get", "vram_used", 0, used);
}

rsmi_status_t rsmi_dev_busy_percent_get(uint32_t index, uint32_t* busy) {
  return get<uint32_t>(index, "rsmi_dev_busy_percent_get", "busy_percent", 0, busy);
}

rsmi_status_t rsmi_dev_memory_busy_percent_get(uint32_t index, uint32_t* busy) {
  return get<uint32_t>(index, "rsmi_dev_memory_busy_percent_get", "memory_busy_percent", 0, busy);
}

rsmi_status_t rsmi_dev_temp_metric_get(uint32_t index, uint32_t, rsmi_temperature_metric_t, int64_t* temperature) {
  return get<int64_t>(index, "rsmi_dev_temp_metric_get", "temperature_mc", 30000, temperature);
}

rsmi_status_t rsmi_dev_power_ave_get(uint32_t index, uint32_t, uint64_t* power) {
  return get<uint64_t>(index, "rsmi_dev_power_ave_get", "power_uw", 0, power);
}

rsmi_status_t rsmi_dev_power_cap_get(uint32_t index, uint32_t, uint64_t* cap) {
  return get<uint64_t>(index, "rsmi_dev_power_cap_get", "power_cap_uw", 0, cap);
}

rsmi_status_t rsmi_dev_gpu_clk_freq_get(uint32_t index, rsmi_clk_type_t type, rsmi_frequencies_t* f) {
  std::lock_guard lock(g_mutex);
  const nlohmann::json* d = nullptr;
  if (rsmi_status_t rc = check(index, "rsmi_dev_gpu_clk_freq_get", &d); rc != RSMI_STATUS_SUCCESS) return rc;
  *f = rsmi_frequencies_t{};
  f->num_supported = 2;
  f->current = 1;
  f->frequency[0] = 500000000;
  f->frequency[1] = d->value(type == RSMI_CLK_TYPE_MEM ? "mem_clock_hz" : "sys_clock_hz", uint64_t{1000000000});
  return RSMI_STATUS_SUCCESS;
}

rsmi_status_t rsmi_dev_pci_throughput_get(uint32_t index, uint64_t* sent, uint64_t* received, uint64_t* max_pkt_sz) {
  std::lock_guard lock(g_mutex);
  const nlohmann::json* d = nullptr;
  if (rsmi_status_t rc = check(index, "rsmi_dev_pci_throughput_get", &d); rc != RSMI_STATUS_SUCCESS) return rc;
  *sent = d->value("pci_sent", uint64_t{0});
  *received = d->value("pci_received", uint64_t{0});
  *max_pkt_sz = 256;
  return RSMI_STATUS_SUCCESS;
}

rsmi_status_t rsmi_dev_ecc_count_get(uint32_t index, rsmi_gpu_block_t, rsmi_error_count_t* ec) {
  std::lock_guard lock(g_mutex);
  const nlohmann::json* d = nullptr;
  if (rsmi_status_t rc = check(index, "rsmi_dev_ecc_count_get", &d); rc != RSMI_STATUS_SUCCESS) return rc;
  ec->correctable_err = 0;
  ec->uncorrectable_err = d->value("ecc_uncorrectable", uint64_t{0});
  return RSMI_STATUS_SUCCESS;
}

rsmi_status_t rsmi_compute_process_info_get(rsmi_process_info_t* procs, uint32_t* num_items) {
  std::lock_guard lock(g_mutex);
  std::vector<rsmi_process_info_t> all;
  for (const auto& d : devices()) {
    for (const auto& p : d.value("processes", nlohmann::json::array())) {
      rsmi_process_info_t info{};
      info.process_id = p.value("pid", 0U);
      info.vram_usage = p.value("vram", uint64_t{0});
      all.push_back(info);
    }
  }
  if (procs == nullptr) {
    *num_items = static_cast<uint32_t>(all.size());
    return RSMI_STATUS_SUCCESS;
  }
  const uint32_t n = std::min<uint32_t>(*num_items, static_cast<uint32_t>(all.size()));
  for (uint32_t i = 0; i < n; ++i) procs[i] = all[i];
  *num_items = n;
  return n < all.size() ? RSMI_STATUS_INSUFFICIENT_SIZE : RSMI_STATUS_SUCCESS;
}

rsmi_status_t rsmi_compute_process_gpus_get(uint32_t pid, uint32_t* dv_indices, uint32_t* num_devices) {
  std::lock_guard lock(g_mutex);
  uint32_t n = 0;
  for (uint32_t i = 0; i < devices().size(); ++i) {
    for (const auto& p : devices()[i].value("processes", nlohmann::json::array())) {
      if (p.value("pid", 0U) == pid && n < *num_devices) dv_indices[n++] = i;
    }
  }
  if (n == 0) return RSMI_STATUS_NOT_FOUND;
  *num_devices = n;
  return RSMI_STATUS_SUCCESS;
}

}  // extern "C"
