// C++ exceptions as Python ones. A caller's mistake is a ValueError (ConfigError a
// subclass of it); run-time failures are RuntimeErrors of their own types, and the
// pool's out-of-memory is a MemoryError. Messages are the C++ ones (field, value, fix).
#include "bindings.hpp"

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/config/config_error.hpp>
#include <apt/vgpu/memory/out_of_memory_error.hpp>
#include <apt/vgpu/scheduler/task.hpp>

namespace apt::vgpu::python {

void bind_errors(nb::module_& m) {
  // nanobind tries translators newest first: bases are registered before subclasses.
  nb::exception<apt::vgpu::Error>(m, "VGPUError", PyExc_RuntimeError);
  nb::exception<apt::vgpu::InvalidArgument>(m, "VGPUInvalidArgument", PyExc_ValueError);
  nb::exception<apt::vgpu::config::ConfigError>(m, "VGPUConfigError", PyExc_ValueError);
  auto capacity = nb::exception<apt::vgpu::CapacityError>(m, "VGPUCapacityError", PyExc_RuntimeError);
  nb::exception<apt::vgpu::DeviceError>(m, "VGPUDeviceError", PyExc_RuntimeError);
  nb::exception<apt::vgpu::ProcessError>(m, "VGPUProcessError", PyExc_RuntimeError);
  nb::exception<apt::vgpu::scheduler::TaskError>(m, "VGPUTaskError", PyExc_RuntimeError);
  // A MemoryError that is also a VGPUCapacityError, so either except clause catches it.
  nb::object out_of_memory = nb::steal(PyErr_NewException("apt.vgpu._core.VGPUOutOfMemoryError",
                                                          nb::make_tuple(nb::handle(PyExc_MemoryError), capacity).ptr(),
                                                          nullptr));
  m.attr("VGPUOutOfMemoryError") = out_of_memory;
  nb::register_exception_translator(
      [](const std::exception_ptr& p, void* type) {
        try {
          std::rethrow_exception(p);
        } catch (const apt::vgpu::memory::OutOfMemoryError& e) {
          PyErr_SetString(static_cast<PyObject*>(type), e.what());
        }
      },
      out_of_memory.ptr());
}

}  // namespace apt::vgpu::python
