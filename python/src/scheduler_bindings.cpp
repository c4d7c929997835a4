// The scheduler with Python callables as tasks. A task runs on a scheduler worker
// thread, which takes the GIL for the call only; every blocking call (wait_for_task,
// wait_all, shutdown) releases it. A task's Python exception is kept, traceback and
// all, and raised again by wait_for_task with its original type.
#include "bindings.hpp"

#include <apt/vgpu/config/vgpu_config.hpp>
#include <apt/vgpu/runtime/virtual_gpu.hpp>
#include <apt/vgpu/scheduler/gpu_scheduler.hpp>

#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

#include <chrono>
#include <memory>

namespace apt::vgpu::python {

namespace {

using scheduler::GPUScheduler;
using scheduler::GpuRequirements;
using scheduler::TaskId;

// What a task's Python callable raised, for wait_for_task to raise again.
struct PythonTaskFailure {
  std::shared_ptr<PyRef> exception;  // the exception instance; its __traceback__ is the task's
};

[[noreturn]] void raise_again(const PythonTaskFailure& failure) {
  nb::object value = failure.exception->get();
  nb::object traceback = nb::getattr(value, "__traceback__", nb::none());
  PyObject* type = reinterpret_cast<PyObject*>(Py_TYPE(value.ptr()));
  Py_INCREF(type);
  PyErr_Restore(type, value.release().ptr(), traceback.is_none() ? nullptr : traceback.release().ptr());
  throw nb::python_error();
}

nb::object to_python(const std::any& result) {
  if (!result.has_value()) return nb::none();
  if (const auto* ref = std::any_cast<std::shared_ptr<PyRef>>(&result)) return (*ref)->get();
  if (const auto* command = std::any_cast<scheduler::CommandResult>(&result)) {
    nb::dict d;
    d["exit_code"] = command->exit_code;
    d["output"] = command->output;
    return d;
  }
  return nb::none();
}

// A Python callable as a scheduler task: called with a dict describing its slice
// (id, attempt, gpu_id, device, environment) when `with_context`, else with nothing.
GPUScheduler::TaskFunction python_task(nb::object callable, bool with_context) {
  auto fn = std::make_shared<PyRef>(std::move(callable));
  return [fn, with_context](scheduler::TaskContext& ctx) -> std::any {
    std::map<std::string, std::string> environment;
    std::string device;
    std::uint32_t gpu = 0;
    if (with_context) {  // read before taking the GIL: these may take the slice's lock
      environment = ctx.vgpu().environment();
      device = ctx.vgpu().device();
      gpu = ctx.vgpu().gpu_id();
    }
    WorkerGil gil;
    drain_released_references();
    try {
      nb::object result;
      if (with_context) {
        nb::dict c;
        c["id"] = ctx.id();
        c["attempt"] = ctx.attempt();
        c["gpu_id"] = gpu;
        c["device"] = device;
        c["environment"] = nb::cast(environment);
        result = fn->get()(c);
      } else {
        result = fn->get()();
      }
      return std::any(std::make_shared<PyRef>(std::move(result)));
    } catch (nb::python_error& e) {
      nb::object value = nb::borrow(e.value());
      nb::object traceback = e.traceback();
      if (!traceback.is_none()) PyException_SetTraceback(value.ptr(), traceback.ptr());
      throw PythonTaskFailure{std::make_shared<PyRef>(std::move(value))};
    }
  };
}

std::chrono::milliseconds seconds(double s, const char* what) {
  if (!(s > 0)) throw nb::value_error((std::string(what) + " must be a positive number of seconds").c_str());
  return std::chrono::milliseconds(static_cast<std::int64_t>(s * 1000.0));
}

// The Python object owns the scheduler; shutting it down releases the GIL (running
// tasks need it to finish).
struct PyScheduler {
  std::unique_ptr<GPUScheduler> scheduler;
  ~PyScheduler() { shutdown(); }
  void shutdown() {
    if (!scheduler) return;
    std::unique_ptr<GPUScheduler> ending = std::move(scheduler);
    nb::gil_scoped_release release;
    ending.reset();
  }
  GPUScheduler& get() const {
    if (!scheduler) throw nb::value_error("this GPUScheduler was shut down; create a new one");
    return *scheduler;
  }
};

nb::dict status_dict(const scheduler::TaskStatus& s) {
  nb::dict d;
  d["id"] = s.id;
  d["name"] = s.name;
  d["state"] = std::string(scheduler::to_string(s.state));
  d["gpu"] = s.gpu ? nb::cast(*s.gpu) : nb::none();
  d["memory"] = s.requirements.memory;
  d["compute"] = s.requirements.compute ? nb::cast(*s.requirements.compute) : nb::none();
  d["priority"] = s.requirements.priority;
  d["attempts"] = s.attempts.size();
  d["error"] = s.error;
  return d;
}

}  // namespace

void bind_scheduler(nb::module_& m) {
  nb::class_<PyScheduler>(m, "GPUScheduler", "The C++ scheduler (see apt.vgpu.scheduler.GPUScheduler).")
      .def(
          "__init__",
          [](PyScheduler* self, std::uint32_t num_physical_gpus, std::uint32_t max_virtual_gpus,
             const std::string& scheduling_policy, const std::string& placement, bool preemption,
             const std::map<std::string, double>& weights, double retry_backoff, std::uint32_t max_retries,
             std::uint32_t workers) {
            scheduler::SchedulerOptions options;
            options.placement = scheduler::parse_placement(placement);
            options.preemption = preemption;
            options.weights = weights;
            options.retry_backoff = seconds(retry_backoff, "retry_backoff");
            options.default_max_retries = max_retries;
            options.workers = workers;
            new (self) PyScheduler();
            nb::gil_scoped_release release;
            self->scheduler = std::make_unique<GPUScheduler>(num_physical_gpus, max_virtual_gpus, scheduling_policy,
                                                             std::move(options));
          },
          nb::arg("num_physical_gpus") = 8, nb::arg("max_virtual_gpus") = 32, nb::arg("scheduling_policy") = "fifo",
          nb::arg("placement") = "best_fit", nb::arg("preemption") = false,
          nb::arg("weights") = std::map<std::string, double>{}, nb::arg("retry_backoff") = 1.0,
          nb::arg("max_retries") = 0, nb::arg("workers") = 0)
      .def_static(
          "from_config",
          [](const config::VgpuConfig& config) {
            auto s = std::make_unique<PyScheduler>();
            nb::gil_scoped_release release;
            s->scheduler = GPUScheduler::from_config(config);
            return s;
          },
          nb::arg("config"))
      .def(
          "submit",
          [](PyScheduler& self, nb::object task, bool with_context, nb::handle memory, std::optional<double> compute,
             std::optional<double> cpu, int priority, const std::string& user, const std::string& group, std::optional<std::uint32_t> max_retries,
             bool auto_recover, std::optional<std::uint32_t> fallback_gpu, std::optional<std::uint32_t> gpu,
             std::optional<double> timeout, std::optional<double> expected_duration, const std::string& name,
             const std::string& isolation) {
            drain_released_references();
            GpuRequirements r;
            if (!memory.is_none()) r.memory = size_argument(memory, "memory");
            r.compute = compute;
            r.cpu = cpu;
            r.priority = priority;
            r.user = user;
            r.group = group;
            r.max_retries = max_retries;
            r.auto_recover = auto_recover;
            r.fallback_gpu = fallback_gpu;
            r.gpu = gpu;
            if (timeout) r.timeout = seconds(*timeout, "timeout");
            if (expected_duration) r.expected_duration = seconds(*expected_duration, "expected_duration");
            r.name = name;
            r.isolation = config::parse_isolation(isolation);
            GPUScheduler& s = self.get();
            GPUScheduler::TaskFunction fn = python_task(std::move(task), with_context);
            return s.submit_function(std::move(fn), std::move(r));
          },
          nb::arg("task"), nb::arg("with_context") = false, nb::arg("memory").none() = nb::none(),
          nb::arg("compute").none() = nb::none(), nb::arg("cpu").none() = nb::none(), nb::arg("priority") = 0, nb::arg("user") = "",
          nb::arg("group") = "", nb::arg("max_retries").none() = nb::none(), nb::arg("auto_recover") = true,
          nb::arg("fallback_gpu").none() = nb::none(), nb::arg("gpu").none() = nb::none(),
          nb::arg("timeout").none() = nb::none(), nb::arg("expected_duration").none() = nb::none(),
          nb::arg("name") = "", nb::arg("isolation") = "none")
      .def(
          "submit_command",
          [](PyScheduler& self, std::vector<std::string> argv, nb::handle memory, std::optional<double> compute,
             int priority, const std::string& isolation, const std::string& name) {
            GpuRequirements r;
            if (!memory.is_none()) r.memory = size_argument(memory, "memory");
            r.compute = compute;
            r.priority = priority;
            r.isolation = config::parse_isolation(isolation);
            r.name = name;
            return self.get().submit_command(std::move(argv), std::move(r));
          },
          nb::arg("argv"), nb::arg("memory").none() = nb::none(), nb::arg("compute").none() = nb::none(),
          nb::arg("priority") = 0, nb::arg("isolation") = "none", nb::arg("name") = "")
      .def(
          "wait_for_task",
          [](PyScheduler& self, TaskId id) -> nb::object {
            GPUScheduler& s = self.get();
            std::any result;
            try {
              nb::gil_scoped_release release;
              result = s.wait_for_task(id);
            } catch (const PythonTaskFailure& failure) {
              raise_again(failure);
            }
            return to_python(result);
          },
          nb::arg("task_id"))
      .def(
          "wait_all",
          [](PyScheduler& self, const std::vector<TaskId>& ids) -> nb::list {
            GPUScheduler& s = self.get();
            std::vector<std::any> results;
            try {
              nb::gil_scoped_release release;
              results = s.wait_all(ids);
            } catch (const PythonTaskFailure& failure) {
              raise_again(failure);
            }
            nb::list out;
            for (const std::any& r : results) out.append(to_python(r));
            return out;
          },
          nb::arg("task_ids"))
      .def("cancel", [](PyScheduler& self, TaskId id) { return self.get().cancel(id); }, nb::arg("task_id"))
      .def("status", [](PyScheduler& self, TaskId id) { return status_dict(self.get().status(id)); }, nb::arg("task_id"))
      .def("snapshot",
           [](PyScheduler& self) {
             const scheduler::SchedulerSnapshot snap = self.get().snapshot();
             nb::dict d;
             nb::list queued, running, gpus;
             for (const auto& t : snap.queued) queued.append(status_dict(t));
             for (const auto& t : snap.running) running.append(status_dict(t));
             for (std::size_t i = 0; i < snap.gpus.size(); ++i) {
               const auto& g = snap.gpus[i];
               nb::dict gd;
               gd["gpu"] = i;
               gd["memory_capacity"] = g.memory_capacity;
               gd["memory_used"] = g.memory_used;
               gd["compute_used"] = static_cast<double>(g.compute_used) / 1000.0;
               gd["slices"] = g.slices;
               gd["healthy"] = g.healthy;
               gpus.append(gd);
             }
             d["queued"] = queued;
             d["running"] = running;
             d["gpus"] = gpus;
             d["slices_in_use"] = snap.slices_in_use;
             d["max_slices"] = snap.max_slices;
             d["policy"] = snap.policy;
             return d;
           })
      .def_prop_ro("num_physical_gpus", [](PyScheduler& self) { return self.get().num_physical_gpus(); })
      .def("shutdown", &PyScheduler::shutdown,
           "Cancels queued tasks, asks running ones to stop, and waits for them (the GIL released).");
}

}  // namespace apt::vgpu::python
