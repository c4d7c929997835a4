// apt.vgpu._core: the compiled half of the Python package. Each binder adds one
// C++ module's classes and functions; apt/vgpu/*.py give them the seed's API.
#include "bindings.hpp"

#include <apt/vgpu/common/size.hpp>

#include <nanobind/stl/string.h>

#include <mutex>
#include <vector>

namespace apt::vgpu::python {

namespace {

std::mutex& released_mutex() {
  static auto* m = new std::mutex();  // outlives static destruction (threads may still drop references)
  return *m;
}
std::vector<PyObject*>& released() {
  static auto* v = new std::vector<PyObject*>();
  return *v;
}

int drain_pending(void*) {
  drain_released_references();
  return 0;
}

}  // namespace

namespace {

// This thread's Python state, made by PyGILState_Ensure on first use and kept.
struct ThreadStateKeeper {
  PyThreadState* state = nullptr;
  ~ThreadStateKeeper() {
    if (state == nullptr || !Py_IsInitialized() || _Py_IsFinalizing()) return;
    PyEval_RestoreThread(state);
    PyGILState_Release(PyGILState_UNLOCKED);  // the Ensure of first use: deletes the state, releases the GIL
  }
};
thread_local ThreadStateKeeper t_keeper;

}  // namespace

WorkerGil::WorkerGil() {
  if (t_keeper.state == nullptr) {
    (void)PyGILState_Ensure();  // creates the thread's state and takes the GIL
    t_keeper.state = PyThreadState_Get();
  } else {
    PyEval_RestoreThread(t_keeper.state);
  }
}

WorkerGil::~WorkerGil() { (void)PyEval_SaveThread(); }

void drain_released_references() {
  std::vector<PyObject*> drop;
  {
    std::lock_guard lock(released_mutex());
    drop.swap(released());
  }
  for (PyObject* o : drop) Py_DECREF(o);
}

PyRef::~PyRef() {
  if (object_ == nullptr || !Py_IsInitialized() || _Py_IsFinalizing()) return;  // leak rather than touch a dying interpreter
  bool first = false;
  try {
    std::lock_guard lock(released_mutex());
    first = released().empty();
    released().push_back(object_);
  } catch (...) {  // out of memory: leak the reference rather than throw from a destructor
    return;
  }
  if (first) (void)Py_AddPendingCall(drain_pending, nullptr);  // thread-safe, needs no GIL
}

std::uint64_t size_argument(const nb::handle& value, const char* what) {
  if (nb::isinstance<bool>(value)) {
    throw nb::type_error((std::string(what) + ": expected bytes (int) or a size string such as '20GB', got a bool").c_str());
  }
  if (nb::isinstance<nb::int_>(value)) {
    const long long bytes = nb::cast<long long>(value);
    if (bytes < 0) {
      throw nb::value_error((std::string(what) + "=" + std::to_string(bytes) +
                             " is negative; give bytes (e.g. 20000000000) or a size string such as '20GB'").c_str());
    }
    return static_cast<std::uint64_t>(bytes);
  }
  if (nb::isinstance<nb::str>(value)) return parse_size(nb::cast<std::string>(value), what);
  throw nb::type_error((std::string(what) + ": expected bytes (int) or a size string such as '20GB', got " +
                        nb::cast<std::string>(nb::str(value.type().attr("__name__"))))
                           .c_str());
}

}  // namespace apt::vgpu::python

NB_MODULE(_core, m) {
  using namespace apt::vgpu::python;
  m.doc() = "The compiled core of apt.vgpu (use apt.vgpu.runtime, .scheduler, .memory, .monitoring, .config).";
  m.def("parse_size", [](nb::handle value, const char* what) { return size_argument(value, what); }, nb::arg("value"),
        nb::arg("what") = "size", "Bytes from an int or a size string ('20GB' = 20*10^9, '16GiB' = 16*2^30).");
  bind_errors(m);
  bind_config(m);
  bind_runtime(m);
  bind_scheduler(m);
  bind_memory(m);
  bind_monitoring(m);
}
