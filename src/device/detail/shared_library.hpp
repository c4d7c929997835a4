// RAII owner of a dlopen() handle with typed symbol lookup.
#pragma once

#include <dlfcn.h>

#include <string>

namespace apt::vgpu::device::detail {

class SharedLibrary {
 public:
  SharedLibrary() = default;
  explicit SharedLibrary(const std::string& path) : handle_(::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
    if (handle_ == nullptr) {
      const char* why = ::dlerror();
      error_ = why != nullptr ? why : "unknown dlopen error";
    }
  }
  ~SharedLibrary() {
    if (handle_ != nullptr) ::dlclose(handle_);
  }
  SharedLibrary(const SharedLibrary&) = delete;
  SharedLibrary& operator=(const SharedLibrary&) = delete;

  [[nodiscard]] bool loaded() const noexcept { return handle_ != nullptr; }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }

  // The symbol cast to F, or nullptr when the library does not export it.
  template <class F>
  [[nodiscard]] F symbol(const char* name) const noexcept {
    if (handle_ == nullptr) return nullptr;
    return reinterpret_cast<F>(::dlsym(handle_, name));
  }

 private:
  void* handle_ = nullptr;
  std::string error_;
};

}  // namespace apt::vgpu::device::detail
