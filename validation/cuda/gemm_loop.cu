// A compute-bound loop for share and load checks.
//
//   gemm_loop SECONDS [--size N]
//
// Multiplies two N x N float matrices (a tiled kernel, no cuBLAS, so the
// program needs nothing but the CUDA runtime) back to back for SECONDS and
// prints {"iterations": I, "seconds": S, "rate": I/S, "pid": P}. Each launch is
// one kernel, so pacing by the interception library acts per iteration.
#include "common.cuh"

#include <unistd.h>

#include <chrono>
#include <string>

namespace {

constexpr int kTile = 16;

__global__ void matmul(const float* a, const float* b, float* c, int n) {
  __shared__ float ta[kTile][kTile];
  __shared__ float tb[kTile][kTile];
  const int row = blockIdx.y * kTile + threadIdx.y;
  const int col = blockIdx.x * kTile + threadIdx.x;
  float sum = 0.0f;
  for (int t = 0; t < n; t += kTile) {
    ta[threadIdx.y][threadIdx.x] = (row < n && t + threadIdx.x < n) ? a[row * n + t + threadIdx.x] : 0.0f;
    tb[threadIdx.y][threadIdx.x] = (col < n && t + threadIdx.y < n) ? b[(t + threadIdx.y) * n + col] : 0.0f;
    __syncthreads();
    for (int k = 0; k < kTile; ++k) sum += ta[threadIdx.y][k] * tb[k][threadIdx.x];
    __syncthreads();
  }
  if (row < n && col < n) c[row * n + col] = sum;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: gemm_loop SECONDS [--size N]\n");
    return 2;
  }
  const double seconds = std::atof(argv[1]);
  int n = 2048;
  for (int i = 2; i < argc; ++i) {
    if (std::string(argv[i]) == "--size" && i + 1 < argc) n = std::atoi(argv[++i]);
  }
  require_device();
  const std::size_t bytes = static_cast<std::size_t>(n) * n * sizeof(float);
  float *a, *b, *c;
  CHECK_CUDA(cudaMalloc(&a, bytes));
  CHECK_CUDA(cudaMalloc(&b, bytes));
  CHECK_CUDA(cudaMalloc(&c, bytes));
  CHECK_CUDA(cudaMemset(a, 0, bytes));
  CHECK_CUDA(cudaMemset(b, 0, bytes));
  const dim3 block(kTile, kTile);
  const dim3 grid((n + kTile - 1) / kTile, (n + kTile - 1) / kTile);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  long iterations = 0;
  double elapsed = 0.0;
  while (elapsed < seconds) {
    matmul<<<grid, block>>>(a, b, c, n);
    CHECK_CUDA(cudaGetLastError());
    CHECK_CUDA(cudaStreamSynchronize(0));  // one iteration = one finished kernel
    ++iterations;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  }
  emit("{\"iterations\": " + std::to_string(iterations) + ", \"seconds\": " + std::to_string(elapsed) +
       ", \"rate\": " + std::to_string(iterations / elapsed) + ", \"pid\": " + std::to_string(::getpid()) + "}");
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));
  CHECK_CUDA(cudaFree(c));
  return 0;
}
