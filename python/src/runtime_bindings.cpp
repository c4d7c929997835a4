// The runtime: VirtualGPU (a slice leased from the node: the embedded ledger, or
// vgpud when it runs), create_vgpu, the scope behind `with vgpu:`, and the node's
// capacity. Calls that may wait (leasing through vgpud, run) release the GIL.
#include "bindings.hpp"

#include <apt/vgpu/config/vgpu_config.hpp>
#include <apt/vgpu/runtime/node.hpp>
#include <apt/vgpu/runtime/virtual_gpu.hpp>
#include <apt/vgpu/runtime/vgpu_scope.hpp>

#include <nanobind/stl/chrono.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <chrono>

namespace apt::vgpu::python {

namespace {

using runtime::VirtualGPU;
using runtime::VirtualGpuOptions;

// `with vgpu:`: a VgpuScope the Python side opens on __enter__ and closes on __exit__,
// on the same thread and in reverse order (apt.vgpu.runtime keeps a per-thread stack).
struct Scope {
  std::unique_ptr<runtime::VgpuScope> scope;
  void close() { scope.reset(); }
};

VirtualGpuOptions options_from(std::uint32_t gpu_id, nb::handle memory_limit, std::optional<double> compute_ratio,
                               int priority, bool auto_recover, std::optional<std::uint32_t> fallback_gpu,
                               const std::string& isolation, bool burst, const std::string& name) {
  VirtualGpuOptions o;
  o.gpu_id = gpu_id;
  if (!memory_limit.is_none()) o.memory_limit = size_argument(memory_limit, "memory_limit");
  o.compute_ratio = compute_ratio;
  o.priority = priority;
  o.auto_recover = auto_recover;
  o.fallback_gpu = fallback_gpu;
  o.isolation = config::parse_isolation(isolation);
  o.burst = burst;
  o.name = name;
  return o;
}

nb::dict lease_dict(const runtime::LeaseInfo& l) {
  nb::dict d;
  d["id"] = l.id;
  d["gpu"] = l.gpu;
  d["memory_bytes"] = l.memory_bytes;
  d["compute_share"] = l.compute_share;
  d["owner"] = l.owner;
  return d;
}

}  // namespace

void bind_runtime(nb::module_& m) {
  nb::class_<VirtualGPU>(m, "VirtualGPU", "A slice of one physical GPU (see apt.vgpu.runtime.VirtualGPU).")
      .def(
          "__init__",
          [](VirtualGPU* self, std::uint32_t gpu_id, nb::handle memory_limit, std::optional<double> compute_ratio,
             int priority, bool auto_recover, std::optional<std::uint32_t> fallback_gpu, const std::string& isolation,
             bool burst, const std::string& name) {
            VirtualGpuOptions o = options_from(gpu_id, memory_limit, compute_ratio, priority, auto_recover,
                                               fallback_gpu, isolation, burst, name);
            nb::gil_scoped_release release;  // leasing may ask vgpud
            new (self) VirtualGPU(std::move(o));
          },
          nb::arg("gpu_id") = 0, nb::arg("memory_limit").none() = nb::none(), nb::arg("compute_ratio").none() = nb::none(),
          nb::arg("priority") = 0, nb::arg("auto_recover") = false, nb::arg("fallback_gpu").none() = nb::none(),
          nb::arg("isolation") = "none", nb::arg("burst") = false, nb::arg("name") = "")
      .def_static(
          "from_config",
          [](const config::VgpuConfig& config) {
            nb::gil_scoped_release release;
            return VirtualGPU::from_config(config);
          },
          nb::arg("config"))
      .def_prop_ro("name", [](const VirtualGPU& v) { return v.name(); })
      .def_prop_ro("gpu_id", &VirtualGPU::gpu_id)
      .def_prop_ro("device_name", &VirtualGPU::device, "'cuda:N' on an NVIDIA node, 'sim:N' on the simulated one.")
      .def_prop_ro("memory_limit", [](const VirtualGPU& v) { return v.options().memory_limit; })
      .def_prop_ro("compute_ratio", [](const VirtualGPU& v) { return v.options().compute_ratio; })
      .def_prop_ro("priority", [](const VirtualGPU& v) { return v.options().priority; })
      .def_prop_ro("isolation", [](const VirtualGPU& v) { return std::string(config::to_string(v.options().isolation)); })
      .def_prop_ro("backend", [](const VirtualGPU& v) { return std::string(v.node().backend().name()); })
      .def_prop_ro("lease", [](const VirtualGPU& v) { return lease_dict(v.lease()); })
      .def_prop_ro("recoveries",
                   [](const VirtualGPU& v) {
                     nb::list out;
                     for (const runtime::Recovery& r : v.recoveries()) {
                       nb::dict d;
                       d["from_gpu"] = r.from_gpu;
                       d["to_gpu"] = r.to_gpu;
                       d["reason"] = r.reason;
                       d["when"] = r.when;
                       out.append(d);
                     }
                     return out;
                   })
      .def("environment", &VirtualGPU::environment, "Variables that bind a child process to this slice.")
      .def("ensure_healthy", &VirtualGPU::ensure_healthy, nb::call_guard<nb::gil_scoped_release>())
      .def(
          "run",
          [](VirtualGPU& v, const std::vector<std::string>& argv, bool capture_output, std::optional<double> timeout) {
            runtime::RunOptions options;
            options.capture_output = capture_output;
            if (timeout) {
              if (!(*timeout > 0)) throw nb::value_error("timeout must be a positive number of seconds");
              options.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(*timeout * 1000.0));
            }
            runtime::RunResult r;
            {
              nb::gil_scoped_release release;
              r = v.run(argv, options);
            }
            nb::dict d;
            d["exit_code"] = r.exit_code;
            d["output"] = r.output;
            d["timed_out"] = r.timed_out;
            return d;
          },
          nb::arg("argv"), nb::arg("capture_output") = false, nb::arg("timeout").none() = nb::none());

  nb::class_<Scope>(m, "Scope", "An open `with vgpu:` block (apt.vgpu.runtime manages these).")
      .def("__init__",
           [](Scope* self, const VirtualGPU& v) {
             new (self) Scope();
             nb::gil_scoped_release release;  // entering checks the GPU's health
             self->scope = std::make_unique<runtime::VgpuScope>(v);
           })
      .def("close", &Scope::close);

  m.def(
      "create_vgpu",
      [](std::uint32_t physical_gpu_id, nb::handle memory_limit, std::optional<double> compute_ratio, int priority,
         const std::string& isolation, bool burst, const std::string& name) {
        VirtualGpuOptions o = options_from(physical_gpu_id, memory_limit, compute_ratio, priority, false, std::nullopt,
                                           isolation, burst, name);
        nb::gil_scoped_release release;
        return VirtualGPU(std::move(o));
      },
      nb::arg("physical_gpu_id") = 0, nb::arg("memory_limit").none() = nb::none(),
      nb::arg("compute_ratio").none() = nb::none(), nb::arg("priority") = 0, nb::arg("isolation") = "none",
      nb::arg("burst") = false, nb::arg("name") = "");
  m.def("current_vgpu", &runtime::current_vgpu, "The calling thread's innermost `with vgpu:` slice, or None.");
  m.def("find_intercept_library", &VirtualGPU::find_intercept_library);
  m.def(
      "node_capacity",
      [] {
        std::vector<runtime::GpuCapacity> capacity;
        std::string backend;
        {
          nb::gil_scoped_release release;
          auto node = runtime::Node::default_node();
          capacity = node->capacity();
          backend = std::string(node->backend().name());
        }
        nb::list out;
        for (const runtime::GpuCapacity& c : capacity) {
          nb::dict d;
          d["gpu"] = c.gpu;
          d["backend"] = backend;
          d["memory_capacity"] = c.memory_capacity;
          d["memory_leased"] = c.memory_leased;
          d["memory_free"] = c.memory_free();
          d["compute_capacity"] = c.compute_capacity;
          d["compute_leased"] = c.compute_leased;
          d["slices"] = c.slices;
          out.append(d);
        }
        return out;
      },
      "Per GPU of this node (vgpud's view when it runs): what is leased and what is free.");
}

}  // namespace apt::vgpu::python
