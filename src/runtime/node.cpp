#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/config/load_profile.hpp>
#include <apt/vgpu/device/sim_config.hpp>
#include <apt/vgpu/runtime/mps_daemon.hpp>
#include <apt/vgpu/runtime/node.hpp>

#include <cstdlib>
#include <fmt/format.h>
#include <mutex>
#include <string>
#include <sys/mman.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace apt::vgpu::runtime {
namespace {

std::vector<std::uint64_t> gpu_memory(const device::Backend& backend) {
  std::vector<std::uint64_t> memory;
  for (const auto& gpu : backend.gpus()) memory.push_back(gpu.memory_total);
  return memory;
}

std::mutex& default_mutex() {
  static std::mutex m;
  return m;
}

// A Node's per-GPU pacing regions are unlinked by its destructor, but a Node kept alive to the end
// (Python does not promise to destroy every object at exit) never runs it, and its regions stayed in
// /dev/shm (dozens accumulated over a day of test runs). Names are also kept here and unlinked when
// the process that made them exits normally; an immortal list, since static destructors (a default
// Node's among them) may run after an atexit handler. Forked children exiting leave the parent's.
struct ExitSweep {
  std::mutex mutex;
  std::vector<std::pair<pid_t, std::string>> names;
};
ExitSweep& exit_sweep() {
  static ExitSweep* sweep = [] {
    auto* s = new ExitSweep;
    std::atexit([] {
      ExitSweep& e = exit_sweep();
      std::lock_guard lock(e.mutex);
      for (const auto& [pid, name] : e.names) {
        if (pid == ::getpid()) (void)::shm_unlink(name.c_str());
      }
    });
    return s;
  }();
  return *sweep;
}

std::shared_ptr<Node>& default_slot() {
  static std::shared_ptr<Node> node;
  return node;
}

}  // namespace

Node::Node(std::unique_ptr<device::Backend> backend, LedgerOptions options)
    : backend_(std::move(backend)), ledger_(gpu_memory(*backend_), options) {}

std::shared_ptr<Node> Node::open(const config::VgpuConfig& config, std::optional<device::BackendKind> backend_override) {
  device::SimConfig sim;
  sim.gpu_count = config.simulated_node.gpus;
  sim.memory_per_gpu = config.simulated_node.memory;
  sim.name = config.simulated_node.name;
  sim.seed = config.simulated_node.seed;
  sim.apply_environment();
  const device::BackendKind kind = backend_override ? *backend_override : device::parse_backend_kind(config.backend);
  return std::make_shared<Node>(device::open_backend(kind, sim),
                                LedgerOptions{config.max_virtual_gpus, config.oversubscription});
}

void Node::apply_sim_shape(config::VgpuConfig& config, const std::string& shape) {
  device::SimConfig sim;
  sim.name = config.simulated_node.name;
  sim.memory_per_gpu = config.simulated_node.memory;
  sim.apply_shape(shape);
  config.simulated_node.gpus = sim.gpu_count;
  config.simulated_node.memory = sim.memory_per_gpu;
  config.simulated_node.name = sim.name;
  ::setenv("VGPU_SIM_GPUS", shape.c_str(), 1);
}

std::shared_ptr<Node> Node::default_node() {
  std::lock_guard lock(default_mutex());
  std::shared_ptr<Node>& node = default_slot();
  if (!node) {
    config::VgpuConfig config;
    if (const auto profile = config::profile_from_environment()) {
      config = config::load_profile(*profile).vgpu;
    }
    node = open(config, device::backend_from_environment());
    node->use_daemon_if_running();
  }
  return node;
}

void Node::use_daemon_if_running() {
  if (auto socket = DaemonClient::find_daemon_socket()) {
    set_daemon(std::make_shared<const DaemonClient>(*socket));
    log::info(fmt::format("virtual GPUs are granted by vgpud at {}", *socket));
  }
}

std::vector<GpuCapacity> Node::capacity() const {
  return daemon_ ? daemon_->node_capacity() : ledger_.capacity();
}

std::vector<monitoring::VgpuView> Node::vgpu_views() const {
  std::lock_guard lock(views_mutex_);
  std::vector<monitoring::VgpuView> out;
  out.reserve(views_.size());
  for (const auto& [id, view] : views_) out.push_back(view);
  return out;
}

void Node::set_vgpu_view(const monitoring::VgpuView& view) {
  std::lock_guard lock(views_mutex_);
  views_[view.lease_id] = view;
}

void Node::remove_vgpu_view(std::uint64_t lease_id) {
  std::lock_guard lock(views_mutex_);
  views_.erase(lease_id);
}

std::shared_ptr<MpsDaemon> Node::mps_daemon(std::uint32_t gpu) {
  std::lock_guard lock(mps_mutex_);
  if (auto running = mps_[gpu].lock()) return running;
  auto daemon = std::make_shared<MpsDaemon>(backend_->gpu(gpu).uuid);
  mps_[gpu] = daemon;
  return daemon;
}

std::string Node::gpu_region(std::uint32_t gpu) {
  std::lock_guard lock(regions_mutex_);
  auto it = gpu_regions_.find(gpu);
  if (it == gpu_regions_.end()) {
    try {
      it = gpu_regions_.emplace(gpu, AccountingRegion::create(RegionKind::gpu, fmt::format("/vgpu-gpu-{}", gpu), 0)).first;
      ExitSweep& sweep = exit_sweep();
      std::lock_guard sweep_lock(sweep.mutex);
      sweep.names.emplace_back(::getpid(), it->second.name());
    } catch (const Error& e) {
      log::warn(fmt::format("GPU {}: no pacing region, so intercept slices cannot burst: {}", gpu, e.what()));
      return {};
    }
  }
  return it->second.name();
}

void Node::set_default_node(std::shared_ptr<Node> node) {
  std::lock_guard lock(default_mutex());
  default_slot() = std::move(node);
}

}  // namespace apt::vgpu::runtime
