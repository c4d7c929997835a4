// A Lease is the right to use one slice of one physical GPU, granted by a
// NodeLedger. It is move-only and returns its slice exactly once: on
// release() or on destruction, whichever comes first. A Lease stays valid
// even if the NodeLedger object that granted it is destroyed first (they share
// the ledger's state).
//
// Thread safety: a Lease object is not itself synchronised (do not release
// one Lease from two threads at once); different Leases may be used freely
// from different threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace apt::vgpu::runtime {

namespace detail {
struct LedgerState;
}

struct LeaseInfo {
  std::uint64_t id = 0;
  std::uint32_t gpu = 0;
  std::uint64_t memory_bytes = 0;  // reserved memory; 0 when the slice has no memory limit
  double compute_share = 0.0;      // reserved share; 0 when the slice has no compute limit
  std::string owner;
};

class Lease {
 public:
  Lease() = default;
  ~Lease() { release(); }
  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&& other) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  [[nodiscard]] bool active() const noexcept { return state_ != nullptr; }
  [[nodiscard]] const LeaseInfo& info() const noexcept { return info_; }
  // Returns the slice to the ledger; true the first time, false afterwards.
  bool release() noexcept;

 private:
  friend class NodeLedger;
  Lease(std::shared_ptr<detail::LedgerState> state, LeaseInfo info) : state_(std::move(state)), info_(std::move(info)) {}

  std::shared_ptr<detail::LedgerState> state_;
  LeaseInfo info_;
};

}  // namespace apt::vgpu::runtime
