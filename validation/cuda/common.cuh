// Shared by the validation programs: JSON-lines output and error checks.
// Every program prints one JSON object per line on stdout; the harness
// (scripts/gpu-validate) parses them. A program that finds no usable CUDA
// device prints {"no_device": "<reason>"} and exits 3, which the harness
// reports as a skip rather than a failure.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>

inline void emit(const std::string& json) {
  std::printf("%s\n", json.c_str());
  std::fflush(stdout);
}

inline std::string quoted(const char* text) {
  std::string out = "\"";
  for (const char* p = text; p && *p; ++p) {
    if (*p == '"' || *p == '\\') out += '\\';
    out += (*p >= 0x20) ? *p : ' ';
  }
  return out + "\"";
}

// Creates the context; exits 3 with {"no_device": ...} when there is none.
inline void require_device() {
  const cudaError_t err = cudaFree(nullptr);
  if (err != cudaSuccess) {
    emit("{\"no_device\": " + quoted(cudaGetErrorString(err)) + ", \"error\": " + quoted(cudaGetErrorName(err)) + "}");
    std::exit(3);
  }
}

#define CHECK_CUDA(call)                                                                        \
  do {                                                                                          \
    const cudaError_t check_err_ = (call);                                                      \
    if (check_err_ != cudaSuccess) {                                                            \
      emit(std::string("{\"fatal\": ") + quoted(#call) + ", \"error\": " +                      \
           quoted(cudaGetErrorName(check_err_)) + "}");                                         \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

#define CHECK_CU(call)                                                                          \
  do {                                                                                          \
    const CUresult check_res_ = (call);                                                         \
    if (check_res_ != CUDA_SUCCESS) {                                                           \
      const char* name_ = nullptr;                                                              \
      cuGetErrorName(check_res_, &name_);                                                       \
      emit(std::string("{\"fatal\": ") + quoted(#call) + ", \"error\": " + quoted(name_) + "}"); \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)
