// Memory limits under libvgpu-cuda.so, as a CUDA application sees them.
//
//   limits [--hold-seconds S]
//
// Prints JSON lines:
//   {"check": "mem_get_info", "free": F, "total": T}
//   {"check": "cudaMalloc", "allocated": B, "stopped_by": "cudaErrorMemoryAllocation"|"cap"}
//   {"check": "cudaMallocAsync", "allocated": B, "after_free_total_used": U, "stopped_by": ...}
//   {"check": "vmm_release_while_mapped", "mapped": M, "malloc_after_release": ok?, ...}
//   {"check": "graph_memory", "node_bytes": N, "used_before": U0, "used_after_launch": U1, "used_after_trim": U2}
//   {"check": "hold", "pid": P, "held": B, "used_by_slice": U}   (with --hold-seconds)
// Allocation stops at the error or at 1 GiB past what cudaMemGetInfo called
// total (the "cap"), so an unenforced limit cannot take the whole GPU.
#include "common.cuh"

#include <unistd.h>

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::size_t kMiB = 1024 * 1024;
constexpr std::size_t kChunk = 64 * kMiB;

std::string num(std::uint64_t v) { return std::to_string(v); }

}  // namespace

int main(int argc, char** argv) {
  int hold_seconds = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--hold-seconds" && i + 1 < argc) hold_seconds = std::atoi(argv[++i]);
  }
  require_device();
  std::size_t free0 = 0, total = 0;
  CHECK_CUDA(cudaMemGetInfo(&free0, &total));
  emit("{\"check\": \"mem_get_info\", \"free\": " + num(free0) + ", \"total\": " + num(total) + "}");
  const std::size_t cap = total + 1024 * kMiB;

  // 1. cudaMalloc in 64 MiB chunks until it fails.
  {
    std::vector<void*> blocks;
    std::size_t got = 0;
    std::string stopped = "cap";
    while (got < cap) {
      void* p = nullptr;
      const cudaError_t err = cudaMalloc(&p, kChunk);
      if (err != cudaSuccess) {
        stopped = cudaGetErrorName(err);
        cudaGetLastError();  // clear the sticky-free error state
        break;
      }
      blocks.push_back(p);
      got += kChunk;
    }
    for (void* p : blocks) CHECK_CUDA(cudaFree(p));
    emit("{\"check\": \"cudaMalloc\", \"allocated\": " + num(got) + ", \"stopped_by\": " + quoted(stopped.c_str()) + "}");
  }

  // 2. cudaMallocAsync from a pool that never trims (release threshold = max):
  // freed blocks stay reserved, so they must stay counted.
  {
    cudaStream_t stream;
    CHECK_CUDA(cudaStreamCreate(&stream));
    cudaMemPool_t pool;
    CHECK_CUDA(cudaDeviceGetDefaultMemPool(&pool, 0));
    std::uint64_t threshold = UINT64_MAX;
    CHECK_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    std::vector<void*> blocks;
    std::size_t got = 0;
    std::string stopped = "cap";
    while (got < cap) {
      void* p = nullptr;
      const cudaError_t err = cudaMallocAsync(&p, kChunk, stream);
      if (err != cudaSuccess) {
        stopped = cudaGetErrorName(err);
        cudaGetLastError();
        break;
      }
      blocks.push_back(p);
      got += kChunk;
    }
    for (void* p : blocks) CHECK_CUDA(cudaFreeAsync(p, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    std::size_t f = 0, t = 0;
    CHECK_CUDA(cudaMemGetInfo(&f, &t));
    std::uint64_t reserved = 0;
    CHECK_CUDA(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
    emit("{\"check\": \"cudaMallocAsync\", \"allocated\": " + num(got) + ", \"stopped_by\": " + quoted(stopped.c_str()) +
         ", \"pool_reserved_after_free\": " + num(reserved) + ", \"used_after_free\": " + num(t - f) + "}");
    threshold = 0;
    CHECK_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    CHECK_CUDA(cudaMemPoolTrimTo(pool, 0));
    CHECK_CUDA(cudaStreamDestroy(stream));
  }

  // 3. cuMemCreate + map, then cuMemRelease while mapped: the memory stays
  // allocated until unmapped, so it must stay counted until then.
  {
    CUdevice dev;
    CHECK_CU(cuCtxGetDevice(&dev));
    CUmemAllocationProp prop = {};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = dev;
    std::size_t granularity = 0;
    CHECK_CU(cuMemGetAllocationGranularity(&granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
    std::size_t f0 = 0, t0 = 0;
    CHECK_CUDA(cudaMemGetInfo(&f0, &t0));
    const std::size_t size = ((f0 / 2) / granularity) * granularity;  // half of what is free
    CUmemGenericAllocationHandle handle;
    const CUresult created = cuMemCreate(&handle, size, &prop, 0);
    if (created != CUDA_SUCCESS) {
      const char* name = nullptr;
      cuGetErrorName(created, &name);
      emit("{\"check\": \"vmm_release_while_mapped\", \"skipped\": " + quoted(name) + "}");
    } else {
      CUdeviceptr va = 0;
      CHECK_CU(cuMemAddressReserve(&va, size, 0, 0, 0));
      CHECK_CU(cuMemMap(va, size, 0, handle, 0));
      CUmemAccessDesc access = {};
      access.location = prop.location;
      access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
      CHECK_CU(cuMemSetAccess(va, size, &access, 1));
      CHECK_CU(cuMemRelease(handle));  // still mapped: still allocated
      std::size_t f1 = 0, t1 = 0;
      CHECK_CUDA(cudaMemGetInfo(&f1, &t1));
      // Ask for everything that was free before the mapping: only fits if the mapping was forgotten.
      void* p = nullptr;
      const cudaError_t over = cudaMalloc(&p, (f0 / granularity) * granularity - granularity);
      if (over == cudaSuccess) CHECK_CUDA(cudaFree(p));
      cudaGetLastError();
      CHECK_CU(cuMemUnmap(va, size));
      CHECK_CU(cuMemAddressFree(va, size));
      std::size_t f2 = 0, t2 = 0;
      CHECK_CUDA(cudaMemGetInfo(&f2, &t2));
      emit("{\"check\": \"vmm_release_while_mapped\", \"mapped\": " + num(size) + ", \"free_before\": " + num(f0) +
           ", \"free_while_mapped\": " + num(f1) + ", \"free_after_unmap\": " + num(f2) +
           ", \"over_allocation_refused\": " + std::string(over != cudaSuccess ? "true" : "false") + "}");
    }
  }

  // 4. A CUDA graph whose memory node allocates (and frees) 1 GiB: the graph memory
  // pool keeps it after the launch, so the slice's use must show it until trimmed.
  {
    cudaStream_t stream;
    CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    const std::size_t node_bytes = 1024 * kMiB;
    std::size_t f0 = 0, t0 = 0;
    CHECK_CUDA(cudaMemGetInfo(&f0, &t0));
    cudaGraph_t graph;
    CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    void* p = nullptr;
    CHECK_CUDA(cudaMallocAsync(&p, node_bytes, stream));
    CHECK_CUDA(cudaMemsetAsync(p, 0, node_bytes, stream));
    CHECK_CUDA(cudaFreeAsync(p, stream));
    CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec;
    CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    CHECK_CUDA(cudaGraphLaunch(exec, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    std::size_t f1 = 0, t1 = 0;
    CHECK_CUDA(cudaMemGetInfo(&f1, &t1));
    CHECK_CUDA(cudaGraphExecDestroy(exec));
    CHECK_CUDA(cudaGraphDestroy(graph));
    int device = 0;
    CHECK_CUDA(cudaGetDevice(&device));
    CHECK_CUDA(cudaDeviceGraphMemTrim(device));
    std::size_t f2 = 0, t2 = 0;
    CHECK_CUDA(cudaMemGetInfo(&f2, &t2));
    emit("{\"check\": \"graph_memory\", \"node_bytes\": " + num(node_bytes) + ", \"used_before\": " + num(t0 - f0) +
         ", \"used_after_launch\": " + num(t1 - f1) + ", \"used_after_trim\": " + num(t2 - f2) + "}");
    CHECK_CUDA(cudaStreamDestroy(stream));
  }

  // 5. Hold some memory so the harness can compare nvidia-smi's per-process
  // figure with the slice's accounting.
  if (hold_seconds > 0) {
    void* p = nullptr;
    const std::size_t held = 1024 * kMiB;
    CHECK_CUDA(cudaMalloc(&p, held));
    std::size_t f = 0, t = 0;
    CHECK_CUDA(cudaMemGetInfo(&f, &t));
    emit("{\"check\": \"hold\", \"pid\": " + num(static_cast<std::uint64_t>(::getpid())) + ", \"held\": " + num(held) +
         ", \"used_by_slice\": " + num(t - f) + "}");
    std::this_thread::sleep_for(std::chrono::seconds(hold_seconds));
    CHECK_CUDA(cudaFree(p));
  }
  emit("{\"done\": true}");
  return 0;
}
