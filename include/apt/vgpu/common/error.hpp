// The typed exceptions of the C++ API.
//
// Every failure the library reports to a C++ caller is an apt::vgpu::Error
// (a std::runtime_error) whose message says what went wrong, with which value,
// and how to fix it. Subclasses let callers and the CLI tell kinds apart:
// a caller's mistake (InvalidArgument, ConfigError) maps to CLI exit code 2,
// anything that happened at run time (CapacityError, DeviceError,
// ProcessError) to exit code 1. C boundaries (the interception library)
// never see these: they use plain error codes.
//
// Thread safety: immutable values; safe to copy and read from any thread.
#pragma once

#include <stdexcept>
#include <string>

namespace apt::vgpu {

enum class ErrorKind {
  invalid_argument,  // a value given by the caller is malformed or out of range
  config,            // a profile failed validation or could not be found
  capacity,          // a request does not fit what is free
  device,            // the GPU backend failed or a GPU is lost/unhealthy
  process,           // a child process could not be started or waited for
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  [[nodiscard]] ErrorKind kind() const noexcept { return kind_; }
  // True when the caller's input is at fault (usage/config), false for run-time failures.
  [[nodiscard]] bool is_usage_error() const noexcept {
    return kind_ == ErrorKind::invalid_argument || kind_ == ErrorKind::config;
  }

 private:
  ErrorKind kind_;
};

class InvalidArgument : public Error {
 public:
  explicit InvalidArgument(const std::string& message) : Error(ErrorKind::invalid_argument, message) {}
};

class CapacityError : public Error {
 public:
  explicit CapacityError(const std::string& message) : Error(ErrorKind::capacity, message) {}
};

class DeviceError : public Error {
 public:
  explicit DeviceError(const std::string& message) : Error(ErrorKind::device, message) {}
};

class ProcessError : public Error {
 public:
  explicit ProcessError(const std::string& message) : Error(ErrorKind::process, message) {}
};

}  // namespace apt::vgpu
