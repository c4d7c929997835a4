// OutOfMemoryError: an allocation that cannot be satisfied, either because
// the tenant's quota would be exceeded (tenant_limited() is true) or because
// the pool has no room even after compaction and eviction. The message names
// the tenant, the request, the quota or pool and what is in use.
//
// Thread safety: an immutable value.
#pragma once

#include <apt/vgpu/common/error.hpp>

#include <cstdint>
#include <string>

namespace apt::vgpu::memory {

class OutOfMemoryError : public CapacityError {
 public:
  OutOfMemoryError(const std::string& message, std::string tenant, std::uint64_t requested, std::uint64_t limit,
                   std::uint64_t in_use, bool tenant_limited)
      : CapacityError(message), tenant_(std::move(tenant)), requested_(requested), limit_(limit), in_use_(in_use),
        tenant_limited_(tenant_limited) {}

  [[nodiscard]] const std::string& tenant() const noexcept { return tenant_; }
  [[nodiscard]] std::uint64_t requested() const noexcept { return requested_; }
  // The tenant's quota, or the pool size when the pool ran out.
  [[nodiscard]] std::uint64_t limit() const noexcept { return limit_; }
  // The tenant's use, or the pool's used bytes.
  [[nodiscard]] std::uint64_t in_use() const noexcept { return in_use_; }
  [[nodiscard]] bool tenant_limited() const noexcept { return tenant_limited_; }

 private:
  std::string tenant_;
  std::uint64_t requested_;
  std::uint64_t limit_;
  std::uint64_t in_use_;
  bool tenant_limited_;
};

}  // namespace apt::vgpu::memory
