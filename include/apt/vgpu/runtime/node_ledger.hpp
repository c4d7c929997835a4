// NodeLedger: the book of which slices of which physical GPUs are leased.
//
// Each GPU has a memory capacity (its total memory x oversubscription) and a
// compute capacity (1.0 x oversubscription); the node has a cap on slices
// leased at once (max_virtual_gpus). acquire() grants a slice only when it
// fits all three, and otherwise throws CapacityError saying what is free on
// the requested GPU and on every other GPU. A slice with memory 0 and compute
// 0 (no limits) reserves nothing but still counts toward max_virtual_gpus.
//
// Thread safety: all methods are safe to call concurrently; every check and
// update happens under one mutex, so totals never exceed capacity.
#pragma once

#include <apt/vgpu/runtime/lease.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace apt::vgpu::runtime {

struct SliceRequest {
  std::uint32_t gpu = 0;
  std::uint64_t memory_bytes = 0;
  double compute_share = 0.0;
  std::string owner;
};

struct GpuCapacity {
  std::uint32_t gpu = 0;
  std::uint64_t memory_capacity = 0;  // total x oversubscription
  std::uint64_t memory_leased = 0;
  double compute_capacity = 1.0;      // 1.0 x oversubscription
  double compute_leased = 0.0;
  std::uint32_t slices = 0;

  [[nodiscard]] std::uint64_t memory_free() const noexcept {
    return memory_capacity > memory_leased ? memory_capacity - memory_leased : 0;
  }
  [[nodiscard]] double compute_free() const noexcept {
    return compute_capacity > compute_leased ? compute_capacity - compute_leased : 0.0;
  }
};

struct LedgerOptions {
  std::uint32_t max_virtual_gpus = 8;
  double oversubscription = 1.0;  // >= 1.0
};

class NodeLedger {
 public:
  // gpu_memory[i] is GPU i's total memory in bytes. Throws InvalidArgument on bad options.
  NodeLedger(const std::vector<std::uint64_t>& gpu_memory, LedgerOptions options);

  // Grants a slice or throws CapacityError (does not fit) / InvalidArgument
  // (no such GPU, share outside [0, 1], memory larger than the GPU).
  [[nodiscard]] Lease acquire(const SliceRequest& request);
  // Moves an active lease to another GPU atomically (used by fault recovery).
  // Throws CapacityError when it does not fit there; the lease is unchanged then.
  void move(Lease& lease, std::uint32_t new_gpu);
  // Whether `request` would fit right now (no lease is taken).
  [[nodiscard]] bool fits(const SliceRequest& request) const;

  [[nodiscard]] std::vector<GpuCapacity> capacity() const;
  [[nodiscard]] std::vector<LeaseInfo> leases() const;
  [[nodiscard]] std::uint32_t active_slices() const;
  [[nodiscard]] const LedgerOptions& options() const noexcept { return options_; }
  [[nodiscard]] std::uint32_t gpu_count() const noexcept { return gpu_count_; }

 private:
  LedgerOptions options_;
  std::uint32_t gpu_count_ = 0;
  std::shared_ptr<detail::LedgerState> state_;
};

}  // namespace apt::vgpu::runtime
