#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/device/sim_backend.hpp>
#include <apt/vgpu/intercept/abi.h>
#include <apt/vgpu/runtime/accounting_region.hpp>
#include <apt/vgpu/runtime/mps_daemon.hpp>
#include <apt/vgpu/runtime/run_process.hpp>
#include <apt/vgpu/runtime/slice_environment.hpp>
#include <apt/vgpu/runtime/virtual_gpu.hpp>
#include <apt/vgpu/runtime/vgpu_scope.hpp>

#include "detail/spawn.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <mutex>
#include <sys/mman.h>

#ifndef VGPU_INSTALL_LIBDIR
#define VGPU_INSTALL_LIBDIR "/usr/local/lib"
#endif

namespace apt::vgpu::runtime {

struct VirtualGPU::Impl : std::enable_shared_from_this<VirtualGPU::Impl> {
  std::shared_ptr<Node> node;
  VirtualGpuOptions options;
  std::string name;
  mutable std::mutex mutex;
  Lease lease;                        // guarded by mutex
  std::vector<Recovery> recoveries;   // guarded by mutex
  int active = 0;                     // open scopes + running children; guarded by mutex
  std::vector<std::int64_t> pids;     // children running on the slice; guarded by mutex

  AccountingRegion region;            // intercept mode: the slice's processes' shared accounting
  // With vgpud: the daemon's slice, held by this process (lease stays empty).
  std::shared_ptr<const DaemonClient> daemon;
  SliceInfo remote;
  LeaseInfo remote_lease;

  ~Impl() {
    if (daemon) {
      try {
        daemon->remove(remote.id);
      } catch (const std::exception& e) {
        // The daemon also ends it when this process exits.
        log::warn(fmt::format("{}: could not delete slice {} on vgpud: {}", name, remote.id, e.what()));
      }
      return;
    }
    if (!lease.active()) return;
    if (auto* sim = node->backend().simulator(); sim != nullptr) sim->clear_load(lease.info().gpu, load_key());
    node->remove_vgpu_view(lease.info().id);
  }

  [[nodiscard]] std::string load_key() const { return fmt::format("lease-{}", lease.info().id); }
  // Tells the node's monitor view, and the simulated node, what this slice is doing.
  void publish_load_locked() {
    if (daemon) return;  // the daemon's monitor attributes its slices
    monitoring::VgpuView view;
    view.name = name;
    view.gpu = lease.info().gpu;
    view.lease_id = lease.info().id;
    view.memory_limit = options.memory_limit;
    view.compute_share = options.compute_ratio;
    view.active = active > 0;
    view.pids = pids;
    node->set_vgpu_view(view);
    auto* sim = node->backend().simulator();
    if (sim == nullptr) return;
    const double share = active > 0 ? options.compute_ratio.value_or(1.0) : 0.0;
    sim->set_load(lease.info().gpu, load_key(), device::SimLoad{share, options.memory_limit.value_or(0)});
  }

  void track_process(std::int64_t pid, bool running) {
    std::lock_guard lock(mutex);
    if (running) {
      pids.push_back(pid);
    } else {
      pids.erase(std::remove(pids.begin(), pids.end(), pid), pids.end());
    }
    publish_load_locked();
  }

  void set_active(int delta) {
    std::lock_guard lock(mutex);
    active += delta;
    publish_load_locked();
  }

  void ensure_healthy() {
    if (daemon) return;  // the daemon keeps its slices on their GPU (no recovery across GPUs yet)
    std::lock_guard lock(mutex);
    device::Backend& backend = node->backend();
    const std::uint32_t gpu = lease.info().gpu;
    const device::GpuHealth health = backend.health(gpu);
    if (health.usable()) return;
    const std::string reason = fmt::format("GPU {} is {}: {}", gpu, device::to_string(health.state), health.detail);
    if (!options.auto_recover) {
      throw DeviceError(fmt::format("{}: {}. auto_recover is off, so the virtual GPU stays there; enable "
                                    "auto_recover (and set fallback_gpu) or create it on a healthy GPU",
                                    name, reason));
    }
    std::vector<std::uint32_t> candidates;
    if (options.fallback_gpu && *options.fallback_gpu < backend.gpu_count()) candidates.push_back(*options.fallback_gpu);
    for (std::uint32_t i = 0; i < backend.gpu_count(); ++i) {
      if (i != gpu && std::find(candidates.begin(), candidates.end(), i) == candidates.end()) candidates.push_back(i);
    }
    std::string tried;
    for (std::uint32_t target : candidates) {
      if (target == gpu) continue;
      const device::GpuHealth target_health = backend.health(target);
      if (!target_health.usable()) {
        tried += fmt::format("; GPU {} is {}", target, device::to_string(target_health.state));
        continue;
      }
      try {
        const std::string old_key = load_key();
        node->ledger().move(lease, target);
        if (auto* sim = backend.simulator(); sim != nullptr) sim->clear_load(gpu, old_key);
        publish_load_locked();
      } catch (const CapacityError& e) {
        tried += fmt::format("; {}", e.what());
        continue;
      }
      recoveries.push_back(Recovery{gpu, target, reason, std::chrono::system_clock::now()});
      log::warn(fmt::format("{} moved from GPU {} to GPU {} ({})", name, gpu, target, reason));
      return;
    }
    throw DeviceError(fmt::format("{}: {}; auto_recover found no healthy GPU with room{}", name, reason, tried));
  }
};

namespace {

thread_local VirtualGPU::Impl* t_current = nullptr;

}  // namespace

VirtualGpuOptions VirtualGpuOptions::from_config(const config::VgpuConfig& config) {
  VirtualGpuOptions o;
  o.gpu_id = config.virtual_gpu.gpu;
  o.memory_limit = config.virtual_gpu.memory_limit;
  o.compute_ratio = config.virtual_gpu.compute_ratio;
  o.priority = config.virtual_gpu.priority;
  o.auto_recover = config.virtual_gpu.auto_recover;
  o.fallback_gpu = config.virtual_gpu.fallback_gpu;
  o.isolation = config.isolation;
  return o;
}

VirtualGPU::VirtualGPU(VirtualGpuOptions options, std::shared_ptr<Node> node) {
  if (!node) node = Node::default_node();
  if (options.compute_ratio && !(*options.compute_ratio > 0.0 && *options.compute_ratio <= 1.0)) {
    throw InvalidArgument(fmt::format("compute_ratio: {} is out of range; use a fraction in (0, 1], e.g. 0.5",
                                      *options.compute_ratio));
  }
  if (options.memory_limit && *options.memory_limit == 0) {
    throw InvalidArgument("memory_limit: 0 bytes leaves the virtual GPU no memory; give a size like 20GB, or none for no limit");
  }
  auto impl = std::make_shared<Impl>();
  impl->node = node;
  if (const auto& daemon = node->daemon()) {
    // The node's daemon grants the slice (and checks it against its GPUs); this
    // process holds it until the VirtualGPU goes away.
    impl->options = std::move(options);
    SliceSpec spec = SliceSpec::from_options(impl->options);
    spec.ephemeral = true;
    impl->remote = daemon->create(spec);
    impl->daemon = daemon;
    impl->name = impl->remote.name;
    impl->remote_lease = LeaseInfo{std::stoull(impl->remote.id, nullptr, 16), impl->remote.gpu,
                                   impl->remote.memory_limit.value_or(0), impl->remote.compute_share.value_or(0.0),
                                   impl->remote.owner};
    impl_ = std::move(impl);
    return;
  }
  if (options.fallback_gpu) (void)node->backend().gpu(*options.fallback_gpu);
  const device::GpuInfo& gpu = node->backend().gpu(options.gpu_id);
  // Compared in long double: exact for every 64-bit size (a double rounds above 2^53).
  if (options.memory_limit && static_cast<long double>(*options.memory_limit) >
                                  static_cast<long double>(gpu.memory_total) * node->ledger().options().oversubscription) {
    throw CapacityError(fmt::format("memory_limit: {} is more than GPU {} has ({} {}); ask for at most {}",
                                    format_size(*options.memory_limit), gpu.index, gpu.name,
                                    format_size(gpu.memory_total), format_size(gpu.memory_total)));
  }
  impl->options = std::move(options);
  impl->lease = node->ledger().acquire(SliceRequest{impl->options.gpu_id, impl->options.memory_limit.value_or(0),
                                                    impl->options.compute_ratio.value_or(0.0), impl->options.name});
  impl->name = impl->options.name.empty() ? fmt::format("vgpu-{}", impl->lease.info().id) : impl->options.name;
  if (impl->options.isolation == config::Isolation::intercept) {
    // One accounting region per slice, shared by its processes (see intercept/abi.h);
    // the random name keeps slices of different processes apart.
    impl->region = AccountingRegion::create(RegionKind::slice, fmt::format("/vgpu-{}", impl->lease.info().id),
                                            impl->options.memory_limit.value_or(0));
  }
  {
    std::lock_guard lock(impl->mutex);
    impl->publish_load_locked();
  }
  impl_ = std::move(impl);
  // A GPU that is already bad at creation is handled like one that fails later.
  impl_->ensure_healthy();
}

VirtualGPU VirtualGPU::from_config(const config::VgpuConfig& config, std::shared_ptr<Node> node) {
  return VirtualGPU(VirtualGpuOptions::from_config(config), std::move(node));
}

const std::string& VirtualGPU::name() const noexcept { return impl_->name; }
const VirtualGpuOptions& VirtualGPU::options() const noexcept { return impl_->options; }
Node& VirtualGPU::node() const noexcept { return *impl_->node; }

std::uint32_t VirtualGPU::gpu_id() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->daemon ? impl_->remote.gpu : impl_->lease.info().gpu;
}

LeaseInfo VirtualGPU::lease() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->daemon ? impl_->remote_lease : impl_->lease.info();
}

std::vector<Recovery> VirtualGPU::recoveries() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->recoveries;
}

std::string VirtualGPU::device() const {
  if (impl_->daemon) return impl_->remote.device;
  return fmt::format("{}:{}", impl_->node->backend().device_type(), gpu_id());
}

void VirtualGPU::ensure_healthy() { impl_->ensure_healthy(); }

std::string VirtualGPU::find_intercept_library() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv(VGPU_ENV_INTERCEPT_LIBRARY); env != nullptr && *env != '\0') {
    return fs::is_regular_file(env) ? std::string(env) : std::string{};
  }
  std::vector<fs::path> candidates;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path dir = exe.parent_path();
    candidates.push_back(dir.parent_path() / "lib" / VGPU_INTERCEPT_LIBRARY_NAME);
    candidates.push_back(dir / VGPU_INTERCEPT_LIBRARY_NAME);
    candidates.push_back(dir.parent_path() / "intercept" / VGPU_INTERCEPT_LIBRARY_NAME);
  }
  candidates.push_back(fs::path(VGPU_INSTALL_LIBDIR) / VGPU_INTERCEPT_LIBRARY_NAME);
  for (const fs::path& p : candidates) {
    if (fs::is_regular_file(p, ec)) return fs::absolute(p).string();
  }
  return {};
}

std::map<std::string, std::string> VirtualGPU::environment() const {
  if (impl_->daemon) return impl_->remote.environment_here();
  const LeaseInfo info = lease();
  const VirtualGpuOptions& o = impl_->options;
  const device::GpuInfo& gpu = impl_->node->backend().gpu(info.gpu);
  SliceBinding binding;
  binding.id = impl_->name;
  binding.gpu = info.gpu;
  binding.vendor = gpu.vendor;
  binding.gpu_uuid = gpu.uuid;
  binding.memory_limit = o.memory_limit;
  binding.compute_share = o.compute_ratio;
  binding.priority = o.priority;
  binding.isolation = o.isolation;
  binding.burst = o.burst;
  if (o.isolation == config::Isolation::intercept) {
    binding.shm_name = impl_->region.name();
    binding.gpu_shm_name = impl_->node->gpu_region(info.gpu);
    binding.intercept_library = find_intercept_library();
  }
  if (o.isolation == config::Isolation::mps) binding.mps_directory = MpsDaemon::directory_for(gpu.uuid).string();
  return slice_environment(binding);
}

int VirtualGPU::run(const std::vector<std::string>& argv) { return run(argv, RunOptions{}).exit_code; }

RunResult VirtualGPU::run(const std::vector<std::string>& argv, const RunOptions& options) {
  ensure_healthy();
  auto env = environment();
  if (impl_->options.isolation == config::Isolation::intercept && env.count("LD_PRELOAD") == 0) {
    throw ProcessError(fmt::format(
        "{}: isolation 'intercept' needs {} and it was not found (set {} to its path, or build and install it); "
        "use isolation 'none' to run with accounting only",
        impl_->name, VGPU_INTERCEPT_LIBRARY_NAME, VGPU_ENV_INTERCEPT_LIBRARY));
  }
  if (impl_->daemon) {
    // The daemon tracks the child (and the MPS daemon, and the region); we only start and wait.
    RunOptions with_attach = options;
    with_attach.on_start = [this, &options](pid_t pid) {
      (void)impl_->daemon->attach(impl_->remote.id, pid);
      if (options.on_start) options.on_start(pid);
    };
    return run_process(argv, env, with_attach);
  }
  // MPS clients need their GPU's control daemon for as long as they run.
  std::shared_ptr<MpsDaemon> mps;
  if (impl_->options.isolation == config::Isolation::mps) mps = impl_->node->mps_daemon(gpu_id());
  const detail::Spawned child = detail::spawn(argv, env, options.capture_output, options.own_process_group);
  detail::ChildGuard guard(child);  // a throw before the wait kills and reaps the child
  if (options.on_start) options.on_start(child.pid);
  const std::uint32_t gpu = gpu_id();
  auto* sim = impl_->node->backend().simulator();
  // The slice is marked active and the pid attributed before the process appears on the
  // (simulated) GPU, and it disappears first at the end: whoever sees the process sees
  // it attributed. Finally undoes, in reverse, whichever of the three steps happened.
  struct Finally {
    VirtualGPU::Impl& impl;
    device::SimBackend* sim;
    std::uint32_t gpu;
    pid_t pid;
    int steps = 0;
    ~Finally() {
      if (steps >= 3 && sim != nullptr) sim->remove_process(gpu, pid);
      if (steps >= 2) impl.track_process(pid, false);
      if (steps >= 1) impl.set_active(-1);
    }
  } finally{*impl_, sim, gpu, child.pid};
  impl_->set_active(+1);
  finally.steps = 1;
  impl_->track_process(child.pid, true);
  finally.steps = 2;
  if (sim != nullptr) sim->add_process(gpu, child.pid, std::filesystem::path(argv.front()).filename().string(), 0);
  finally.steps = 3;
  guard.release();
  const bool supervised = options.capture_output || options.timeout || options.stop != nullptr;
  if (!supervised) return RunResult{detail::wait_for(child.pid), {}, false, false};
  return detail::supervise(child, options);
}

VirtualGPU create_vgpu(std::uint32_t physical_gpu_id, std::string_view memory_limit, std::optional<double> compute_ratio,
                       VirtualGpuOptions extra, std::shared_ptr<Node> node) {
  extra.gpu_id = physical_gpu_id;
  extra.memory_limit = parse_size(memory_limit, "memory_limit");
  extra.compute_ratio = compute_ratio;
  return VirtualGPU(std::move(extra), std::move(node));
}

std::optional<VirtualGPU> current_vgpu() {
  if (t_current == nullptr) return std::nullopt;
  return VirtualGPU(t_current->shared_from_this());
}

VgpuScope::VgpuScope(const VirtualGPU& vgpu) : entered_(vgpu.impl_), previous_(t_current) {
  entered_->ensure_healthy();
  entered_->set_active(+1);
  t_current = entered_.get();
}

VgpuScope::~VgpuScope() {
  t_current = previous_;
  entered_->set_active(-1);
}

}  // namespace apt::vgpu::runtime
