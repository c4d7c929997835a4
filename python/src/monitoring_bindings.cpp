// The monitor: GPUMonitor sampling the node's backend on its own thread, samples
// as JSON documents (the shape `vgpu monitor --json` prints, docs/monitoring.md)
// that apt.vgpu.monitoring turns into the seed's dictionaries, history windows,
// alerts, and Python callbacks per sample (called with the GIL taken on the
// sampling thread). start/stop/sample release the GIL.
#include "bindings.hpp"

#include <apt/vgpu/device/backend.hpp>
#include <apt/vgpu/monitoring/gpu_monitor.hpp>
#include <apt/vgpu/monitoring/stats_json.hpp>
#include <apt/vgpu/runtime/node.hpp>

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

#include <chrono>
#include <memory>

namespace apt::vgpu::python {

namespace {

using monitoring::GPUMonitor;

// The monitor watches the default node's backend, and attributes use to its virtual GPUs.
struct PyMonitor {
  std::shared_ptr<runtime::Node> node;
  std::unique_ptr<GPUMonitor> monitor;
  ~PyMonitor() { stop(); }
  void stop() {
    if (!monitor) return;
    nb::gil_scoped_release release;  // the sampler may be in a Python callback
    monitor->stop();
  }
  std::string json(const monitoring::NodeStats& stats) const {
    return monitoring::stats_json(stats, node->backend().gpus()).dump();
  }
};

std::chrono::nanoseconds window_of(double seconds) {
  if (!(seconds >= 0)) throw nb::value_error("window must be a number of seconds >= 0 (0: everything kept)");
  return std::chrono::nanoseconds(static_cast<std::int64_t>(seconds * 1e9));
}

}  // namespace

void bind_monitoring(nb::module_& m) {
  nb::class_<PyMonitor>(m, "GPUMonitor", "The C++ monitor (see apt.vgpu.monitoring.GPUMonitor).")
      .def(
          "__init__",
          [](PyMonitor* self, double update_interval, const std::vector<std::string>& metrics, std::size_t history,
             std::optional<double> temperature_alert, std::optional<double> memory_alert,
             std::optional<double> power_alert) {
            if (!(update_interval > 0)) {
              throw nb::value_error(("update_interval=" + std::to_string(update_interval) +
                                     " must be a positive number of seconds (e.g. 1.0)").c_str());
            }
            new (self) PyMonitor();
            nb::gil_scoped_release release;
            self->node = runtime::Node::default_node();
            monitoring::MonitorOptions options;
            options.history_capacity = history;
            options.alerts.temperature_celsius = temperature_alert;
            options.alerts.memory_percent = memory_alert;
            options.alerts.power_percent = power_alert;
            std::weak_ptr<runtime::Node> node = self->node;
            options.vgpus = [node] {
              auto n = node.lock();
              return n ? n->vgpu_views() : std::vector<monitoring::VgpuView>{};
            };
            self->monitor = std::make_unique<GPUMonitor>(self->node->backend(), update_interval, metrics, options);
          },
          nb::arg("update_interval") = 1.0,
          nb::arg("metrics") = std::vector<std::string>{"utilization", "memory", "temperature"},
          nb::arg("history") = 3600, nb::arg("temperature_alert").none() = 85.0,
          nb::arg("memory_alert").none() = 95.0, nb::arg("power_alert").none() = nb::none())
      .def("start", [](PyMonitor& self) {
        nb::gil_scoped_release release;
        self.monitor->start();
      })
      .def("stop", &PyMonitor::stop)
      .def_prop_ro("running", [](const PyMonitor& self) { return self.monitor->running(); })
      .def("sample_json", [](PyMonitor& self) {
        monitoring::NodeStats stats;
        {
          nb::gil_scoped_release release;
          stats = self.monitor->sample();
        }
        return self.json(stats);
      })
      .def("current_json", [](PyMonitor& self) {
        monitoring::NodeStats stats;
        {
          nb::gil_scoped_release release;
          stats = self.monitor->get_current_stats();
        }
        return self.json(stats);
      })
      .def(
          "history",
          [](const PyMonitor& self, std::string_view metric, double window, std::optional<std::uint32_t> gpu) -> nb::object {
            const auto w = self.monitor->history(metric, window_of(window), gpu);
            if (!w) return nb::none();
            nb::dict d;
            d["count"] = w->count;
            d["min"] = w->min;
            d["avg"] = w->avg;
            d["max"] = w->max;
            d["p50"] = w->p50;
            d["p90"] = w->p90;
            d["p99"] = w->p99;
            d["last"] = w->last;
            return d;
          },
          nb::arg("metric"), nb::arg("window") = 0.0, nb::arg("gpu").none() = nb::none())
      .def(
          "history_values",
          [](const PyMonitor& self, std::string_view metric, double window, std::optional<std::uint32_t> gpu) {
            return self.monitor->history_values(metric, window_of(window), gpu);
          },
          nb::arg("metric"), nb::arg("window") = 0.0, nb::arg("gpu").none() = nb::none())
      .def(
          "subscribe",
          [](PyMonitor& self, nb::object callback) {
            auto fn = std::make_shared<PyRef>(std::move(callback));
            PyMonitor* owner = &self;
            return self.monitor->subscribe([fn, owner](const monitoring::NodeStats& stats) {
              const std::string doc = owner->json(stats);
              WorkerGil gil;
              drain_released_references();
              try {
                fn->get()(doc);
              } catch (nb::python_error& e) {
                e.discard_as_unraisable("apt.vgpu GPUMonitor callback");  // reported, sampling goes on
              }
            });
          },
          nb::arg("callback"), "Calls callback(json_text) on the sampling thread after each sample.")
      .def(
          "on_alert",
          [](PyMonitor& self, nb::object callback) {
            auto fn = std::make_shared<PyRef>(std::move(callback));
            return self.monitor->on_alert([fn](const monitoring::AlertEvent& event) {
              WorkerGil gil;
              drain_released_references();
              try {
                nb::dict d;
                d["state"] = event.state == monitoring::AlertEvent::State::raised ? "raised" : "cleared";
                d["kind"] = event.kind;
                d["gpu"] = event.gpu;
                d["vgpu"] = event.vgpu;
                d["value"] = event.value;
                d["threshold"] = event.threshold;
                d["time"] = std::chrono::duration<double>(event.time.time_since_epoch()).count();
                d["message"] = event.message;
                fn->get()(d);
              } catch (nb::python_error& e) {
                e.discard_as_unraisable("apt.vgpu GPUMonitor alert callback");
              }
            });
          },
          nb::arg("callback"), "Calls callback(alert) when a threshold alert is raised or cleared.")
      .def("unsubscribe", [](PyMonitor& self, std::uint64_t id) { self.monitor->unsubscribe(id); }, nb::arg("id"))
      .def("active_alerts",
           [](const PyMonitor& self) {
             std::vector<std::tuple<std::string, std::uint32_t, std::string>> active;
             {
               // The sampler holds its sampling lock while it calls Python callbacks, which need the GIL.
               nb::gil_scoped_release release;
               active = self.monitor->active_alerts();
             }
             nb::list out;
             for (const auto& [rule, gpu, detail] : active) out.append(nb::make_tuple(rule, gpu, detail));
             return out;
           })
      .def_prop_ro("samples_taken", [](const PyMonitor& self) { return self.monitor->samples_taken(); })
      .def_prop_ro("interval", [](const PyMonitor& self) {
        return std::chrono::duration<double>(self.monitor->interval()).count();
      });
}

}  // namespace apt::vgpu::python
