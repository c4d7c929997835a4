// CUDA device memory through the driver's virtual memory management API,
// loaded at run time with dlopen("libcuda.so.1"). Types come from the CUDA
// toolkit's cuda.h when the build found it (VGPU_HAVE_CUDA_HEADERS).
#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/memory/backing.hpp>

#include <fmt/format.h>

#ifdef VGPU_HAVE_CUDA_HEADERS
#include <cuda.h>
#include <dlfcn.h>

#include <algorithm>
#include <map>
#endif

namespace apt::vgpu::memory {

#ifndef VGPU_HAVE_CUDA_HEADERS

std::unique_ptr<Backing> make_cuda_backing(std::uint64_t, int) {
  throw DeviceError("cuda backing: this build has no CUDA support (cuda.h was not found at build time); "
                    "rebuild with the CUDA toolkit installed, or use the host or none backing");
}

#else

namespace {

// X(name of our pointer, exported symbol, declaration whose type it has)
#define VGPU_CUDA_VMM_FUNCTIONS(X)                                      \
  X(init, "cuInit", cuInit)                                             \
  X(device_get, "cuDeviceGet", cuDeviceGet)                             \
  X(primary_retain, "cuDevicePrimaryCtxRetain", cuDevicePrimaryCtxRetain) \
  X(primary_release, "cuDevicePrimaryCtxRelease_v2", cuDevicePrimaryCtxRelease_v2) \
  X(ctx_set_current, "cuCtxSetCurrent", cuCtxSetCurrent)               \
  X(ctx_synchronize, "cuCtxSynchronize", cuCtxSynchronize)             \
  X(error_string, "cuGetErrorString", cuGetErrorString)                 \
  X(granularity, "cuMemGetAllocationGranularity", cuMemGetAllocationGranularity) \
  X(address_reserve, "cuMemAddressReserve", cuMemAddressReserve)       \
  X(address_free, "cuMemAddressFree", cuMemAddressFree)                 \
  X(create, "cuMemCreate", cuMemCreate)                                 \
  X(map, "cuMemMap", cuMemMap)                                          \
  X(set_access, "cuMemSetAccess", cuMemSetAccess)                       \
  X(unmap, "cuMemUnmap", cuMemUnmap)                                    \
  X(release, "cuMemRelease", cuMemRelease)                              \
  X(alloc, "cuMemAlloc_v2", cuMemAlloc_v2)                              \
  X(free, "cuMemFree_v2", cuMemFree_v2)                                 \
  X(copy_dtod, "cuMemcpyDtoD_v2", cuMemcpyDtoD_v2)                      \
  X(copy_dtoh, "cuMemcpyDtoH_v2", cuMemcpyDtoH_v2)                      \
  X(copy_htod, "cuMemcpyHtoD_v2", cuMemcpyHtoD_v2)

class CudaBacking final : public Backing {
 public:
  CudaBacking(std::uint64_t capacity, int device) {
    library_ = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (library_ == nullptr) {
      throw DeviceError(fmt::format("cuda backing: cannot load libcuda.so.1 ({}); install the NVIDIA driver or use "
                                    "the host or none backing",
                                    ::dlerror()));
    }
#define VGPU_RESOLVE(member, symbol, decl)                                              \
  member = reinterpret_cast<decltype(&::decl)>(::dlsym(library_, symbol));              \
  if (member == nullptr) {                                                              \
    ::dlclose(library_);                                                                \
    throw DeviceError(fmt::format("cuda backing: libcuda.so.1 lacks {}; the driver is too old for the VMM API", symbol)); \
  }
    VGPU_CUDA_VMM_FUNCTIONS(VGPU_RESOLVE)
#undef VGPU_RESOLVE
    // A failure past this point must give back what was taken (a destructor does not
    // run for a constructor that throws): the primary context and the library.
    try {
      check(init(0), "cuInit");
      check(device_get(&device_, device), "cuDeviceGet");
      check(primary_retain(&context_, device_), "cuDevicePrimaryCtxRetain");
      retained_ = true;
      check(ctx_set_current(context_), "cuCtxSetCurrent");
      prop_.type = CU_MEM_ALLOCATION_TYPE_PINNED;
      prop_.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
      prop_.location.id = device_;
      std::size_t recommended = 0;
      check(granularity(&recommended, &prop_, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED), "cuMemGetAllocationGranularity");
      chunk_ = std::max<std::uint64_t>(recommended, 2ULL << 20U);
      length_ = (capacity + chunk_ - 1) / chunk_ * chunk_;
      check(address_reserve(&base_, length_, chunk_, 0, 0), "cuMemAddressReserve");
    } catch (...) {
      if (retained_) (void)primary_release(device_);
      ::dlclose(library_);
      throw;
    }
  }

  ~CudaBacking() override {
    (void)ctx_set_current(context_);
    for (const auto& [offset, handle] : chunks_) {
      (void)unmap(base_ + offset, chunk_);
      (void)release(handle);
    }
    (void)address_free(base_, length_);
    (void)primary_release(device_);
    ::dlclose(library_);
  }

  BackingKind kind() const noexcept override { return BackingKind::cuda; }
  std::uint64_t chunk_size() const noexcept override { return chunk_; }
  std::uintptr_t base() const noexcept override { return static_cast<std::uintptr_t>(base_); }
  bool holds_data() const noexcept override { return true; }

  // All or nothing: when a chunk cannot be created, mapped or opened for access,
  // the chunks this call already mapped are unmapped and released again.
  void commit(std::uint64_t offset, std::uint64_t length) override {
    check(ctx_set_current(context_), "cuCtxSetCurrent");
    CUmemAccessDesc access{};
    access.location = prop_.location;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    std::uint64_t at = offset;
    try {
      for (; at < offset + length; at += chunk_) {
        CUmemGenericAllocationHandle handle = 0;
        check(create(&handle, chunk_, &prop_, 0), "cuMemCreate");
        if (CUresult rc = map(base_ + at, chunk_, 0, handle, 0); rc != CUDA_SUCCESS) {
          (void)release(handle);
          check(rc, "cuMemMap");
        }
        if (CUresult rc = set_access(base_ + at, chunk_, &access, 1); rc != CUDA_SUCCESS) {
          (void)unmap(base_ + at, chunk_);
          (void)release(handle);
          check(rc, "cuMemSetAccess");
        }
        chunks_[at] = handle;
      }
    } catch (...) {
      decommit(offset, at - offset);
      throw;
    }
  }

  void decommit(std::uint64_t offset, std::uint64_t length) override {
    (void)ctx_set_current(context_);
    for (std::uint64_t at = offset; at < offset + length; at += chunk_) {
      auto it = chunks_.find(at);
      if (it == chunks_.end()) continue;
      (void)unmap(base_ + at, chunk_);
      (void)release(it->second);
      chunks_.erase(it);
    }
  }

  void move(std::uint64_t to, std::uint64_t from, std::uint64_t length) override {
    check(ctx_set_current(context_), "cuCtxSetCurrent");
    if (to + length <= from || from + length <= to) {
      check(copy_dtod(base_ + to, base_ + from, length), "cuMemcpyDtoD");
      return;
    }
    // Overlapping (compaction moves blocks down): stage pieces front to back, so a
    // piece's destination only overlaps source bytes that were already copied.
    const std::uint64_t piece = std::min<std::uint64_t>(length, 64ULL << 20U);
    CUdeviceptr staging = 0;
    check(alloc(&staging, piece), "cuMemAlloc (compaction staging)");
    for (std::uint64_t done = 0; done < length; done += piece) {
      const std::uint64_t n = std::min(piece, length - done);
      CUresult rc = copy_dtod(staging, base_ + from + done, n);
      if (rc == CUDA_SUCCESS) rc = copy_dtod(base_ + to + done, staging, n);
      if (rc != CUDA_SUCCESS) {
        (void)free(staging);
        check(rc, "cuMemcpyDtoD (compaction)");
      }
    }
    (void)free(staging);
  }

  void copy_to_host(void* host, std::uint64_t from, std::uint64_t length) override {
    check(ctx_set_current(context_), "cuCtxSetCurrent");
    check(copy_dtoh(host, base_ + from, length), "cuMemcpyDtoH");
  }
  void copy_from_host(std::uint64_t to, const void* host, std::uint64_t length) override {
    check(ctx_set_current(context_), "cuCtxSetCurrent");
    check(copy_htod(base_ + to, host, length), "cuMemcpyHtoD");
  }

 private:
  void check(CUresult rc, const char* call) const {
    if (rc == CUDA_SUCCESS) return;
    const char* text = nullptr;
    if (error_string != nullptr) (void)error_string(rc, &text);
    throw DeviceError(fmt::format("cuda backing: {} failed: {} (CUresult {})", call, text != nullptr ? text : "unknown",
                                  static_cast<int>(rc)));
  }

  void* library_ = nullptr;
#define VGPU_MEMBER(member, symbol, decl) decltype(&::decl) member = nullptr;
  VGPU_CUDA_VMM_FUNCTIONS(VGPU_MEMBER)
#undef VGPU_MEMBER
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  bool retained_ = false;  // the primary context is ours to release
  CUmemAllocationProp prop_{};
  std::uint64_t chunk_ = 2ULL << 20U;
  std::uint64_t length_ = 0;
  CUdeviceptr base_ = 0;
  std::map<std::uint64_t, CUmemGenericAllocationHandle> chunks_;
};

}  // namespace

std::unique_ptr<Backing> make_cuda_backing(std::uint64_t capacity, int device) {
  return std::make_unique<CudaBacking>(capacity, device);
}

#endif

}  // namespace apt::vgpu::memory
