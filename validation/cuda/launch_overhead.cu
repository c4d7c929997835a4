// Launch overhead through the real driver, with or without libvgpu-cuda.so.
//
//   launch_overhead [LAUNCHES]
//
// Times LAUNCHES launches of an empty kernel (one cudaEventRecord every 64
// launches, as training loops do) and prints
// {"launches": N, "us_per_launch": X, "us_per_launch_sync": Y}: X is the
// host-side cost of enqueueing, Y includes waiting for the GPU at the end.
#include "common.cuh"

#include <chrono>
#include <string>

__global__ void empty_kernel() {}

int main(int argc, char** argv) {
  const long launches = argc > 1 ? std::atol(argv[1]) : 100000;
  require_device();
  cudaEvent_t event;
  CHECK_CUDA(cudaEventCreate(&event));
  for (int i = 0; i < 1000; ++i) empty_kernel<<<1, 1>>>();  // warm up
  CHECK_CUDA(cudaDeviceSynchronize());
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (long i = 0; i < launches; ++i) {
    empty_kernel<<<1, 1>>>();
    if (i % 64 == 0) CHECK_CUDA(cudaEventRecord(event));
  }
  const auto enqueued = Clock::now();
  CHECK_CUDA(cudaDeviceSynchronize());
  const auto finished = Clock::now();
  const double host = std::chrono::duration<double, std::micro>(enqueued - start).count() / launches;
  const double total = std::chrono::duration<double, std::micro>(finished - start).count() / launches;
  emit("{\"launches\": " + std::to_string(launches) + ", \"us_per_launch\": " + std::to_string(host) +
       ", \"us_per_launch_sync\": " + std::to_string(total) + "}");
  CHECK_CUDA(cudaEventDestroy(event));
  return 0;
}
