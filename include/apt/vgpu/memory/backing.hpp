// Backing: the memory behind a GPUMemoryManager's pool, and how to commit,
// release and copy it. The manager does all bookkeeping; a backing only
// moves bytes and maps or unmaps chunks when told.
//
//   host  reserves the whole pool as inaccessible address space (mmap
//         PROT_NONE) and commits chunks on first use (mprotect) and returns
//         them to the OS when idle (madvise DONTNEED): tests and the
//         simulated node, where "device memory" is host memory.
//   none  pure accounting: no memory at all (simulated node, cluster
//         simulation, trace replay). Spilled blocks carry no contents.
//   cuda  device memory through the CUDA driver's virtual memory API
//         (cuMemAddressReserve once, cuMemCreate + cuMemMap per chunk),
//         loaded with dlopen so the project runs without a driver; only
//         available where the CUDA headers were found at build time.
//
// Thread safety: none; the manager serialises calls.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

namespace apt::vgpu::memory {

enum class BackingKind { host, none, cuda };

[[nodiscard]] std::string_view to_string(BackingKind kind) noexcept;
// "host" | "none" | "cuda"; throws InvalidArgument listing them.
[[nodiscard]] BackingKind parse_backing_kind(std::string_view text);

class Backing {
 public:
  virtual ~Backing() = default;
  Backing() = default;
  Backing(const Backing&) = delete;
  Backing& operator=(const Backing&) = delete;

  [[nodiscard]] virtual BackingKind kind() const noexcept = 0;
  // Commit and decommit work in whole chunks of this size (a power of two).
  [[nodiscard]] virtual std::uint64_t chunk_size() const noexcept = 0;
  // Address of pool offset 0 (a host pointer, a CUdeviceptr), or 0 for none.
  [[nodiscard]] virtual std::uintptr_t base() const noexcept = 0;
  // Whether block contents exist (false for none: spills then carry no data).
  [[nodiscard]] virtual bool holds_data() const noexcept = 0;

  // [offset, offset + length) is chunk-aligned. Throws DeviceError on failure.
  virtual void commit(std::uint64_t offset, std::uint64_t length) = 0;
  virtual void decommit(std::uint64_t offset, std::uint64_t length) = 0;
  // Copies within the pool; the ranges may overlap (compaction moves blocks down).
  virtual void move(std::uint64_t to, std::uint64_t from, std::uint64_t length) = 0;
  virtual void copy_to_host(void* host, std::uint64_t from, std::uint64_t length) = 0;
  virtual void copy_from_host(std::uint64_t to, const void* host, std::uint64_t length) = 0;
};

// `capacity` is rounded up to the chunk size. The CUDA backing uses `device`
// (a CUDA ordinal) and throws DeviceError when no driver or GPU is present, or
// when the build had no CUDA headers.
[[nodiscard]] std::unique_ptr<Backing> make_backing(BackingKind kind, std::uint64_t capacity, int device = 0);

}  // namespace apt::vgpu::memory
