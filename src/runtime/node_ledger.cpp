#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/runtime/node_ledger.hpp>

#include <cmath>
#include <fmt/format.h>
#include <map>
#include <mutex>

namespace apt::vgpu::runtime {
namespace detail {

// Shared by the ledger and its leases so a lease can return its slice even
// after the NodeLedger object is gone.
struct LedgerState {
  std::mutex mutex;
  std::vector<GpuCapacity> gpus;          // guarded by mutex
  std::map<std::uint64_t, LeaseInfo> leases;  // guarded by mutex
  std::uint64_t next_id = 1;              // guarded by mutex
  std::uint32_t max_slices = 0;

  // Compute shares are compared with a small tolerance so that 0.25 + 0.75
  // fills a GPU exactly despite binary rounding.
  static constexpr double kShareEpsilon = 1e-9;

  [[nodiscard]] bool fits_locked(const GpuCapacity& g, std::uint64_t memory, double share) const {
    return memory <= g.memory_free() && share <= g.compute_free() + kShareEpsilon;
  }

  bool release(std::uint64_t id) noexcept {
    std::lock_guard lock(mutex);
    auto it = leases.find(id);
    if (it == leases.end()) return false;
    GpuCapacity& g = gpus[it->second.gpu];
    g.memory_leased -= it->second.memory_bytes;
    g.compute_leased = std::max(0.0, g.compute_leased - it->second.compute_share);
    --g.slices;
    leases.erase(it);
    return true;
  }

  [[nodiscard]] std::string free_summary_locked(std::uint32_t except) const {
    std::string out;
    for (const GpuCapacity& g : gpus) {
      if (g.gpu == except) continue;
      out += fmt::format("{}GPU {}: {} and {:.2f} compute free", out.empty() ? "" : "; ", g.gpu,
                         format_size(g.memory_free()), g.compute_free());
    }
    return out.empty() ? "no other GPUs" : out;
  }
};

}  // namespace detail

Lease::Lease(Lease&& other) noexcept : state_(std::move(other.state_)), info_(std::move(other.info_)) {
  other.state_.reset();
}

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    release();
    state_ = std::move(other.state_);
    info_ = std::move(other.info_);
    other.state_.reset();
  }
  return *this;
}

bool Lease::release() noexcept {
  if (!state_) return false;
  const bool released = state_->release(info_.id);
  state_.reset();
  return released;
}

NodeLedger::NodeLedger(const std::vector<std::uint64_t>& gpu_memory, LedgerOptions options)
    : options_(options), gpu_count_(static_cast<std::uint32_t>(gpu_memory.size())),
      state_(std::make_shared<detail::LedgerState>()) {
  if (!(options.oversubscription >= 1.0) || !std::isfinite(options.oversubscription)) {
    throw InvalidArgument(fmt::format("oversubscription: {} is invalid; use a factor >= 1.0 (1.0 = no oversubscription)",
                                      options.oversubscription));
  }
  if (options.max_virtual_gpus == 0) {
    throw InvalidArgument("max_virtual_gpus: 0 allows no virtual GPU at all; use 1 or more");
  }
  state_->max_slices = options.max_virtual_gpus;
  for (std::uint32_t i = 0; i < gpu_count_; ++i) {
    GpuCapacity g;
    g.gpu = i;
    g.memory_capacity = static_cast<std::uint64_t>(static_cast<long double>(gpu_memory[i]) * options.oversubscription);
    g.compute_capacity = options.oversubscription;
    state_->gpus.push_back(g);
  }
}

namespace {

void validate(const SliceRequest& r, std::uint32_t gpu_count) {
  if (r.gpu >= gpu_count) {
    throw InvalidArgument(fmt::format("gpu: there is no GPU {} on this node (it has {} GPU{}, 0..{})", r.gpu, gpu_count,
                                      gpu_count == 1 ? "" : "s", gpu_count == 0 ? 0 : gpu_count - 1));
  }
  if (!(r.compute_share >= 0.0 && r.compute_share <= 1.0)) {
    throw InvalidArgument(fmt::format("compute_ratio: {} is out of range; use a fraction in (0, 1], e.g. 0.25",
                                      r.compute_share));
  }
}

}  // namespace

Lease NodeLedger::acquire(const SliceRequest& request) {
  validate(request, gpu_count_);
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  GpuCapacity& g = s.gpus[request.gpu];
  if (s.leases.size() >= s.max_slices) {
    throw CapacityError(fmt::format(
        "cannot create another virtual GPU: all {} allowed slices are leased (vgpu.max_virtual_gpus); "
        "release one or raise max_virtual_gpus in the profile",
        s.max_slices));
  }
  if (!s.fits_locked(g, request.memory_bytes, request.compute_share)) {
    std::string why;
    if (request.memory_bytes > g.memory_free()) {
      why = fmt::format("{} of memory asked, {} free", format_size(request.memory_bytes), format_size(g.memory_free()));
    }
    if (request.compute_share > g.compute_free() + detail::LedgerState::kShareEpsilon) {
      why += fmt::format("{}{:.2f} compute asked, {:.2f} free", why.empty() ? "" : ", ", request.compute_share,
                         g.compute_free());
    }
    throw CapacityError(fmt::format(
        "slice does not fit on GPU {} ({}; {} slice{} there). Free elsewhere: {}. "
        "Ask for less, pick another GPU, or allow oversubscription (vgpu.oversubscription, now {})",
        request.gpu, why, g.slices, g.slices == 1 ? "" : "s", s.free_summary_locked(request.gpu),
        options_.oversubscription));
  }
  LeaseInfo info{s.next_id++, request.gpu, request.memory_bytes, request.compute_share, request.owner};
  g.memory_leased += request.memory_bytes;
  g.compute_leased += request.compute_share;
  ++g.slices;
  s.leases.emplace(info.id, info);
  return Lease(state_, std::move(info));
}

void NodeLedger::move(Lease& lease, std::uint32_t new_gpu) {
  if (!lease.active() || lease.state_ != state_) {
    throw InvalidArgument("move: the lease is not active in this ledger");
  }
  validate(SliceRequest{new_gpu, 0, 0.0, {}}, gpu_count_);
  auto& s = *state_;
  std::lock_guard lock(s.mutex);
  auto it = s.leases.find(lease.info_.id);
  if (it == s.leases.end()) throw InvalidArgument("move: the lease was already released");
  LeaseInfo& info = it->second;
  if (info.gpu == new_gpu) return;
  GpuCapacity& to = s.gpus[new_gpu];
  if (!s.fits_locked(to, info.memory_bytes, info.compute_share)) {
    throw CapacityError(fmt::format("cannot move {} ({} memory, {:.2f} compute) to GPU {}: {} and {:.2f} compute free there",
                                    info.owner.empty() ? fmt::format("lease {}", info.id) : info.owner,
                                    format_size(info.memory_bytes), info.compute_share, new_gpu,
                                    format_size(to.memory_free()), to.compute_free()));
  }
  GpuCapacity& from = s.gpus[info.gpu];
  from.memory_leased -= info.memory_bytes;
  from.compute_leased = std::max(0.0, from.compute_leased - info.compute_share);
  --from.slices;
  to.memory_leased += info.memory_bytes;
  to.compute_leased += info.compute_share;
  ++to.slices;
  info.gpu = new_gpu;
  lease.info_.gpu = new_gpu;
}

bool NodeLedger::fits(const SliceRequest& request) const {
  validate(request, gpu_count_);
  std::lock_guard lock(state_->mutex);
  return state_->leases.size() < state_->max_slices &&
         state_->fits_locked(state_->gpus[request.gpu], request.memory_bytes, request.compute_share);
}

std::vector<GpuCapacity> NodeLedger::capacity() const {
  std::lock_guard lock(state_->mutex);
  return state_->gpus;
}

std::vector<LeaseInfo> NodeLedger::leases() const {
  std::lock_guard lock(state_->mutex);
  std::vector<LeaseInfo> out;
  out.reserve(state_->leases.size());
  for (const auto& [id, info] : state_->leases) out.push_back(info);
  return out;
}

std::uint32_t NodeLedger::active_slices() const {
  std::lock_guard lock(state_->mutex);
  return static_cast<std::uint32_t>(state_->leases.size());
}

}  // namespace apt::vgpu::runtime
