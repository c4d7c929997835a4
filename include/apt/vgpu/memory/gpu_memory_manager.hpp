// GPUMemoryManager: GPU memory as one pool shared by several tenants (vGPUs).
//
//   GPUMemoryManager pool("80GB", 0.1);              // the seed's API
//   MemoryBlock block = pool.allocate("16GB");
//   pool.free(block);
//   MemoryStats stats = pool.get_stats();
//
// Allocation is a TlsfArena (O(1), metadata outside the pool) over a Backing
// (host, none or CUDA). On top of it:
//   - quotas: a tenant over its quota gets OutOfMemoryError; others are unaffected;
//   - compaction: when a request fails although enough memory is free in
//     total, or when fragmentation exceeds the threshold after enough frees,
//     live unpinned blocks slide down to close the gaps (their contents move
//     with them; handles stay valid, addresses change);
//   - eviction: when the pool is still full, least-recently-used evictable
//     blocks are copied to host memory and their space reused; they come back
//     (contents intact) on the next address()/pin();
//   - lazy backing: chunks are committed when a block first lands on them and
//     returned when they have been empty for gc_idle (collect_garbage()).
//
// Thread safety: every public method is safe to call concurrently (one lock, a PoolLock).
// Addresses returned by address() are only stable while the block is pinned.
#pragma once

#include <apt/vgpu/config/vgpu_config.hpp>
#include <apt/vgpu/memory/allocation_options.hpp>
#include <apt/vgpu/memory/backing.hpp>
#include <apt/vgpu/memory/memory_block.hpp>
#include <apt/vgpu/memory/memory_stats.hpp>
#include <apt/vgpu/memory/out_of_memory_error.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace apt::vgpu::memory {

struct MemoryManagerOptions {
  std::uint64_t pool_size = 0;
  // Compact when 1 - largest_free/free exceeds this (checked after frees, amortised).
  double fragmentation_threshold = 0.1;
  std::uint64_t alignment = 256;  // power of two
  BackingKind backing = BackingKind::host;
  int device = 0;  // CUDA ordinal for the cuda backing
  bool compaction = true;
  bool eviction = true;
  // Lazy: commit chunks on first use and return idle ones. Otherwise the whole
  // pool is committed up front and kept.
  bool lazy = true;
  // Empty chunks older than this are returned to the backing by collect_garbage(),
  // which also runs opportunistically on free (on every free with gc_idle 0, else on every 16th).
  std::chrono::milliseconds gc_idle{1000};

  // From a profile's vgpu.memory section; pool_size defaults to `gpu_memory`.
  [[nodiscard]] static MemoryManagerOptions from_config(const config::MemorySection& section,
                                                        std::uint64_t gpu_memory);
};

class PinnedBlock;

class GPUMemoryManager {
 public:
  explicit GPUMemoryManager(const MemoryManagerOptions& options);
  // Over a backing of the caller's (options.backing is then ignored): memory an
  // embedder manages itself, or a backing that fails on demand in tests. Its
  // capacity must cover options.pool_size rounded up to its chunk size.
  GPUMemoryManager(const MemoryManagerOptions& options, std::unique_ptr<Backing> backing);
  // The seed's GPUMemoryManager(pool_size='80GB', fragmentation_threshold=0.1).
  GPUMemoryManager(std::string_view pool_size, double fragmentation_threshold = 0.1,
                   MemoryManagerOptions options = {});
  ~GPUMemoryManager();
  GPUMemoryManager(const GPUMemoryManager&) = delete;
  GPUMemoryManager& operator=(const GPUMemoryManager&) = delete;

  // Throws InvalidArgument (size 0, larger than the pool, bad alignment, bad
  // size string) or OutOfMemoryError (quota or pool exhausted).
  [[nodiscard]] MemoryBlock allocate(std::uint64_t size, const AllocationOptions& options = {});
  [[nodiscard]] MemoryBlock allocate(std::string_view size, const AllocationOptions& options = {});
  // Throws InvalidArgument for a freed, foreign or empty handle; nothing changes then.
  void free(MemoryBlock block);

  // The block's current address (base + offset; for the none backing, the
  // offset itself), restoring it first if it was spilled. Marks it recently used.
  [[nodiscard]] std::uintptr_t address(MemoryBlock block);
  [[nodiscard]] std::uint64_t size(MemoryBlock block) const;       // rounded size
  [[nodiscard]] bool resident(MemoryBlock block) const;
  // Keeps the block resident and in place until the PinnedBlock is destroyed.
  [[nodiscard]] PinnedBlock pin(MemoryBlock block);

  // Caps what `tenant` may hold (resident and spilled); 0 removes the cap.
  void set_quota(const std::string& tenant, std::uint64_t bytes);
  [[nodiscard]] std::optional<std::uint64_t> quota(const std::string& tenant) const;
  [[nodiscard]] std::uint64_t tenant_usage(const std::string& tenant) const;

  // Closes every gap it can now; returns bytes moved.
  std::uint64_t compact();
  // Returns empty chunks idle for at least `idle` (default: the option) to the backing; returns bytes released.
  std::uint64_t collect_garbage(std::optional<std::chrono::milliseconds> idle = std::nullopt);

  [[nodiscard]] MemoryStats get_stats() const;
  [[nodiscard]] const MemoryManagerOptions& options() const noexcept;
  [[nodiscard]] BackingKind backing_kind() const noexcept;

  // Verifies the allocator and the manager's own books; throws std::logic_error (tests).
  void check_invariants() const;

  struct Impl;

 private:
  friend class PinnedBlock;
  void unpin(MemoryBlock block) noexcept;
  std::unique_ptr<Impl> impl_;
};

// RAII pin: while it lives the block is resident, unmoved and unevictable.
class PinnedBlock {
 public:
  PinnedBlock(PinnedBlock&& other) noexcept : manager_(other.manager_), block_(other.block_), address_(other.address_) {
    other.manager_ = nullptr;
  }
  PinnedBlock& operator=(PinnedBlock&&) = delete;
  PinnedBlock(const PinnedBlock&) = delete;
  PinnedBlock& operator=(const PinnedBlock&) = delete;
  ~PinnedBlock() {
    if (manager_ != nullptr) manager_->unpin(block_);
  }
  [[nodiscard]] std::uintptr_t address() const noexcept { return address_; }
  template <class T>
  [[nodiscard]] T* as() const noexcept {
    return reinterpret_cast<T*>(address_);
  }

 private:
  friend class GPUMemoryManager;
  PinnedBlock(GPUMemoryManager* manager, MemoryBlock block, std::uintptr_t address)
      : manager_(manager), block_(block), address_(address) {}
  GPUMemoryManager* manager_;
  MemoryBlock block_;
  std::uintptr_t address_;
};

}  // namespace apt::vgpu::memory
