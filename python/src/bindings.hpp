// The pieces of apt.vgpu._core, one binder per C++ module, and what they share:
// sizes given as int or "20GB" strings, and a reference to a Python object that
// C++ threads may hold and drop without the GIL.
//
// Thread safety: PyRef may be destroyed on any thread without the GIL and never
// waits for it: the reference is queued and dropped by the next holder of the GIL
// (drain_released_references, also scheduled with Py_AddPendingCall). A thread
// that waited for the GIL here could deadlock against one that holds the GIL and
// waits for a lock the first holds (a task submitting a task while the scheduler
// drops a finished one).
#pragma once

#include <nanobind/nanobind.h>

#include <cstdint>
#include <memory>
#include <string>

namespace apt::vgpu::python {

namespace nb = nanobind;

void bind_errors(nb::module_& m);
void bind_config(nb::module_& m);
void bind_runtime(nb::module_& m);
void bind_scheduler(nb::module_& m);
void bind_memory(nb::module_& m);
void bind_monitoring(nb::module_& m);

// A size as Python code gives it: an int (bytes) or a string such as "20GB"; `what`
// names the argument in the ValueError (or TypeError) raised otherwise.
std::uint64_t size_argument(const nb::handle& value, const char* what);

// A strong reference to a Python object, safe to hold in C++ (std::any, std::function)
// on threads that do not hold the GIL.
// Takes the GIL on a C++ thread (a scheduler worker, the monitor's sampler) for a call
// into Python, keeping the thread's Python thread state from one call to the next:
// creating and deleting one per call (what PyGILState_Ensure/Release do on a thread
// Python did not start) was most of the cost of a no-op task. The state is deleted
// when the thread ends, unless the interpreter is finalizing (then it is left).
class WorkerGil {
 public:
  WorkerGil();
  ~WorkerGil();
  WorkerGil(const WorkerGil&) = delete;
  WorkerGil& operator=(const WorkerGil&) = delete;
};

// Drops the references PyRefs released without the GIL; call with the GIL held.
void drain_released_references();

class PyRef {
 public:
  explicit PyRef(nb::object object) : object_(object.release().ptr()) {}
  ~PyRef();
  PyRef(const PyRef&) = delete;
  PyRef& operator=(const PyRef&) = delete;
  // A new reference; call with the GIL held.
  [[nodiscard]] nb::object get() const { return nb::borrow(object_); }

 private:
  PyObject* object_;
};

}  // namespace apt::vgpu::python
