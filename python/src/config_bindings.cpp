// Profiles: load_profile(name_or_path) and the validated configuration as
// read-only objects (config.vgpu.monitoring.interval_seconds, ...), which
// VirtualGPU.from_config, GPUScheduler.from_config and GPUMonitor.from_config take.
#include "bindings.hpp"

#include <apt/vgpu/config/load_profile.hpp>
#include <apt/vgpu/config/vgpu_config.hpp>

#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

namespace apt::vgpu::python {

void bind_config(nb::module_& m) {
  using namespace apt::vgpu::config;
  nb::class_<VirtualGpuDefaults>(m, "VirtualGpuDefaults", "The profile's vgpu.virtual_gpu section.")
      .def_ro("gpu", &VirtualGpuDefaults::gpu)
      .def_ro("memory_limit", &VirtualGpuDefaults::memory_limit)
      .def_ro("compute_ratio", &VirtualGpuDefaults::compute_ratio)
      .def_ro("priority", &VirtualGpuDefaults::priority)
      .def_ro("auto_recover", &VirtualGpuDefaults::auto_recover)
      .def_ro("fallback_gpu", &VirtualGpuDefaults::fallback_gpu);
  nb::class_<RuntimeSection>(m, "RuntimeSection", "The profile's vgpu.runtime section.")
      .def_ro("context_switching", &RuntimeSection::context_switching)
      .def_ro("preemption", &RuntimeSection::preemption);
  nb::class_<MemorySection>(m, "MemorySection", "The profile's vgpu.memory section.")
      .def_ro("pool_size", &MemorySection::pool_size)
      .def_ro("fragmentation_threshold", &MemorySection::fragmentation_threshold)
      .def_ro("alignment", &MemorySection::alignment)
      .def_ro("eviction", &MemorySection::eviction)
      .def_ro("lazy", &MemorySection::lazy);
  nb::class_<SchedulerSection>(m, "SchedulerSection", "The profile's vgpu.scheduler section.")
      .def_ro("placement", &SchedulerSection::placement)
      .def_ro("max_retries", &SchedulerSection::max_retries)
      .def_ro("retry_backoff_seconds", &SchedulerSection::retry_backoff_seconds)
      .def_ro("weights", &SchedulerSection::weights);
  nb::class_<MonitoringSection>(m, "MonitoringSection", "The profile's vgpu.monitoring section.")
      .def_ro("enabled", &MonitoringSection::enabled)
      .def_ro("interval_seconds", &MonitoringSection::interval_seconds)
      .def_prop_ro("interval", [](const MonitoringSection& s) { return s.interval_seconds; }, "Alias of interval_seconds (the seed's key).")
      .def_ro("metrics", &MonitoringSection::metrics)
      .def_ro("history", &MonitoringSection::history);
  nb::class_<VgpuConfig>(m, "VgpuConfig", "A profile's vgpu section, validated.")
      .def_ro("enabled", &VgpuConfig::enabled)
      .def_ro("max_virtual_gpus", &VgpuConfig::max_virtual_gpus)
      .def_ro("scheduling", &VgpuConfig::scheduling)
      .def_prop_ro("isolation", [](const VgpuConfig& c) { return std::string(to_string(c.isolation)); })
      .def_ro("memory_pooling", &VgpuConfig::memory_pooling)
      .def_ro("oversubscription", &VgpuConfig::oversubscription)
      .def_ro("backend", &VgpuConfig::backend)
      .def_ro("virtual_gpu", &VgpuConfig::virtual_gpu)
      .def_ro("runtime", &VgpuConfig::runtime)
      .def_ro("memory", &VgpuConfig::memory)
      .def_ro("scheduler", &VgpuConfig::scheduler)
      .def_ro("monitoring", &VgpuConfig::monitoring);
  nb::class_<Config>(m, "Config", "A loaded profile: its name, the file it came from, and its vgpu section.")
      .def_ro("name", &Config::name)
      .def_prop_ro("source", [](const Config& c) { return c.source.string(); })
      .def_ro("vgpu", &Config::vgpu)
      .def("to_yaml", [](const Config& c) { return to_yaml(c); }, "The profile with every default written out.");
  m.def("load_profile", &load_profile, nb::arg("name_or_path"),
        "Loads and validates a profile by name (searched on VGPU_PROFILE_PATH, ./profiles, the installed "
        "profiles) or path; raises VGPUConfigError naming file, line and key.");
  m.def("available_profiles", &available_profiles, "Profile names found on the search path.");
  m.def("default_config", [] { return VgpuConfig{}; }, "A vgpu section with every default.");
}

}  // namespace apt::vgpu::python
