#include "slice_registry.hpp"

#include "api_error.hpp"
#include "failpoint.hpp"

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/device/sim_backend.hpp>
#include <apt/vgpu/runtime/slice_environment.hpp>
#include <apt/vgpu/runtime/virtual_gpu.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

namespace apt::vgpu::daemon {
namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

nlohmann::json requestor_json(const Caller& caller) {
  return nlohmann::json{{"uid", caller.peer.uid}, {"pid", caller.peer.pid}, {"user", caller.user}};
}

nlohmann::json optional_json(const auto& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

std::string sim_key(const std::string& id) { return "slice-" + id; }

// Closes a process's pidfd on the way out unless it was handed to the watcher (set to -1).
struct PidfdGuard {
  int& fd;
  ~PidfdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

SliceRegistry::SliceRegistry(config::DaemonConfig config, std::shared_ptr<runtime::Node> node, LedgerStore& store,
                             EventLog& events)
    : config_(std::move(config)), node_(std::move(node)), store_(store), events_(events) {
  if (auto id = store_.meta("node_id")) {
    node_id_ = *id;
  } else {
    node_id_ = runtime::random_hex_id().substr(0, 8);
    store_.set_meta("node_id", node_id_);
  }
  instance_id_ = runtime::random_hex_id();
  started_ms_ = now_ms();
  intercept_library_ = runtime::VirtualGPU::find_intercept_library();
  if (!config_.daemon.admin_group.empty()) {
    admin_gid_ = group_id(config_.daemon.admin_group);
    if (!admin_gid_) {
      log::warn(fmt::format("daemon.admin_group: no group '{}' on this system; only root administers",
                            config_.daemon.admin_group));
    }
  }
}

SliceRegistry::~SliceRegistry() { shutdown(); }

std::string SliceRegistry::region_prefix() const { return fmt::format("/vgpud-{}-", node_id_); }

Caller SliceRegistry::identify(const PeerCredentials& peer) const {
  Caller caller;
  caller.peer = peer;
  caller.user = user_name(peer.uid);
  std::lock_guard lock(mutex_);
  caller.admin = peer.uid == 0;
  if (!caller.admin && admin_gid_) {
    caller.admin = peer.gid == *admin_gid_ ||
                   std::find(peer.groups.begin(), peer.groups.end(), *admin_gid_) != peer.groups.end();
  }
  return caller;
}

void SliceRegistry::reload(const config::DaemonConfig& config) {
  std::lock_guard lock(mutex_);
  config_.daemon.default_limits = config.daemon.default_limits;
  config_.daemon.user_limits = config.daemon.user_limits;
  config_.daemon.admin_group = config.daemon.admin_group;
  admin_gid_.reset();
  if (!config_.daemon.admin_group.empty()) admin_gid_ = group_id(config_.daemon.admin_group);
}

// ---- recovery ---------------------------------------------------------------------------

void SliceRegistry::recover() {
  std::unique_lock lock(mutex_);
  auto stored = store_.load();
  const std::int64_t now = now_ms();
  int rolled_back = 0, released = 0, kept = 0;
  for (StoredSlice& record : stored) {
    if (record.state != "active") {
      // A grant that crashed before it was acknowledged: it never happened (its region is
      // an orphan now: unlinked below).
      store_.remove(record.id);
      ++rolled_back;
      continue;
    }
    Slice slice;
    slice.record = record;
    slice.record.processes.clear();
    std::vector<Process> live;
    for (const StoredProcess& p : record.processes) {
      // A process from another boot, or a pid now used by another process, is gone.
      std::optional<Process> process;
      if (p.boot_id == boot_id()) process = open_process(p.pid, p.start_time);
      if (!process) {
        store_.remove_process(record.id, p.pid);
        continue;
      }
      process->holder = p.holder;
      slice.record.processes.push_back(p);
      live.push_back(*process);
    }
    const bool expired = record.expires_at_ms && *record.expires_at_ms <= now;
    const bool holder_alive = std::any_of(live.begin(), live.end(), [](const Process& p) { return p.holder; });
    if ((record.ephemeral && !holder_alive) || expired) {
      for (Process& p : live) ::close(p.pidfd);
      store_.remove(record.id);  // its region is an orphan now: unlinked below
      events_.publish(Event{0, 0, "slice", "deleted", "/v1/slices/" + record.id, nullptr,
                            {{"reason", expired ? "expired" : "holder_exited"}, {"while", "daemon_down"}},
                            record.owner_uid, false});
      ++released;
      continue;
    }
    try {
      slice.lease = node_->ledger().acquire(runtime::SliceRequest{record.gpu, record.memory_limit.value_or(0),
                                                                  record.compute_share.value_or(0.0), record.name});
    } catch (const Error& e) {
      // The node shrank (config change) under a granted slice: keep the slice, say so.
      log::error(fmt::format("slice {} ({}) no longer fits GPU {}: {}; it is kept but not counted", record.id,
                             record.name, record.gpu, e.what()));
    }
    if (record.isolation == "intercept") {
      if (auto adopted = runtime::AccountingRegion::adopt(runtime::RegionKind::slice, record.region)) {
        slice.region = std::move(*adopted);
      } else {
        slice.region = runtime::AccountingRegion::create(runtime::RegionKind::slice, region_prefix() + record.id,
                                                         record.memory_limit.value_or(0), record.owner_uid);
        store_.set_region(record.id, slice.region.name());
        slice.record.region = slice.region.name();
        log::warn(fmt::format("slice {}: its accounting region was missing; made {}", record.id, slice.region.name()));
      }
      (void)gpu_region_locked(record.gpu);
    }
    if (record.isolation == "mps") {
      try {
        slice.mps = node_->mps_daemon(record.gpu);
      } catch (const Error& e) {
        log::error(fmt::format("slice {}: cannot start MPS on GPU {}: {}", record.id, record.gpu, e.what()));
      }
    }
    auto [it, inserted] = slices_.emplace(record.id, std::move(slice));
    for (const Process& p : live) watch(it->second, p);
    publish_view(it->second);
    ++kept;
  }
  unlink_orphan_regions();
  lock.unlock();
  log::notice(fmt::format("ledger recovered: {} slices kept, {} released (processes gone or expired), {} "
                          "unacknowledged grants rolled back",
                          kept, released, rolled_back));
  watcher_.start(ProcessWatcher::Callbacks{[this](std::uint64_t token) { on_process_exit(token); },
                                           [this] { return next_deadline(); }, [this] { expire_due(); }});
}

void SliceRegistry::unlink_orphan_regions() {
  // Regions under this node's prefix that no slice names (a crash between
  // a release's commit and its unlink, or a rolled-back grant).
  std::vector<std::string> known;
  for (const auto& [id, slice] : slices_) known.push_back(slice.region.name());
  for (const auto& [gpu, r] : gpu_regions_) known.push_back(r.region.name());
  const std::string prefix = region_prefix().substr(1);
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ec)) {
    const std::string file = entry.path().filename().string();
    if (file.rfind(prefix, 0) != 0) continue;
    const std::string name = "/" + file;
    if (std::find(known.begin(), known.end(), name) != known.end()) continue;
    (void)::shm_unlink(name.c_str());
    log::info(fmt::format("removed orphaned accounting region {}", name));
  }
}

void SliceRegistry::shutdown() {
  watcher_.stop();
  std::lock_guard lock(mutex_);
  for (auto& [id, slice] : slices_) {
    for (Process& p : slice.processes) {
      if (p.pidfd >= 0) ::close(p.pidfd);
      p.pidfd = -1;
    }
    // Regions outlive the daemon: running processes keep using them, and the
    // next start adopts them.
    slice.region.release();
    // MPS control daemons are quit when the slices go (below, with the registry) and started
    // again by the next start's recover(); re-adopting a running one is not done yet.
  }
  for (auto& [gpu, r] : gpu_regions_) r.region.release();
}

// ---- per-GPU pacing regions ---------------------------------------------------------------

std::string SliceRegistry::gpu_region_locked(std::uint32_t gpu) {
  auto it = gpu_regions_.find(gpu);
  if (it == gpu_regions_.end()) {
    GpuRegion r;
    const std::string key = fmt::format("gpu_region.{}", gpu);
    if (auto stored = store_.meta(key)) {
      if (auto adopted = runtime::AccountingRegion::adopt(runtime::RegionKind::gpu, *stored)) r.region = std::move(*adopted);
    }
    if (!r.region.valid()) {
      r.region = runtime::AccountingRegion::create(runtime::RegionKind::gpu, fmt::format("{}gpu{}", region_prefix(), gpu), 0);
      store_.set_meta(key, r.region.name());
    }
    it = gpu_regions_.emplace(gpu, std::move(r)).first;
  }
  ++it->second.users;
  return it->second.region.name();
}

void SliceRegistry::drop_gpu_region_locked(std::uint32_t gpu) {
  auto it = gpu_regions_.find(gpu);
  if (it == gpu_regions_.end()) return;
  if (--it->second.users > 0) return;
  gpu_regions_.erase(it);  // unlinks it: the last paced slice on the GPU is gone
}

// ---- limits and placement ---------------------------------------------------------------

config::UserLimits SliceRegistry::limits_for(std::uint32_t uid) const {
  config::UserLimits limits = config_.daemon.default_limits;
  const auto& users = config_.daemon.user_limits;
  auto it = users.find(user_name(uid));
  if (it == users.end()) it = users.find(std::to_string(uid));
  if (it != users.end()) {
    if (it->second.slices) limits.slices = it->second.slices;
    if (it->second.memory_bytes) limits.memory_bytes = it->second.memory_bytes;
    if (it->second.compute) limits.compute = it->second.compute;
  }
  return limits;
}

void SliceRegistry::check_user_limits(std::uint32_t uid, const SliceRequest& request) const {
  const config::UserLimits limits = limits_for(uid);
  std::uint32_t slices = 0;
  std::uint64_t memory = 0;
  double compute = 0;
  for (const auto& [id, s] : slices_) {
    if (s.record.owner_uid != uid) continue;
    ++slices;
    memory += s.record.memory_limit.value_or(0);
    compute += s.record.compute_share.value_or(0.0);
  }
  const std::string who = user_name(uid);
  if (limits.slices && slices + 1 > *limits.slices) {
    throw ApiError(ErrorCode::permission_denied,
                   fmt::format("user {} holds {} slices and the limit is {} (daemon.limits); delete one first", who,
                               slices, *limits.slices),
                   "limits.slices", {{"limit", *limits.slices}, {"held", slices}});
  }
  if (limits.memory_bytes && memory + request.memory.value_or(0) > *limits.memory_bytes) {
    throw ApiError(ErrorCode::permission_denied,
                   fmt::format("user {} holds {} and asks for {}; the memory limit is {} (daemon.limits)", who,
                               format_size(memory), format_size(request.memory.value_or(0)),
                               format_size(*limits.memory_bytes)),
                   "limits.memory",
                   {{"limit_bytes", *limits.memory_bytes}, {"held_bytes", memory}, {"requested_bytes", request.memory.value_or(0)}});
  }
  if (limits.compute && compute + request.compute.value_or(0.0) > *limits.compute + 1e-9) {
    throw ApiError(ErrorCode::permission_denied,
                   fmt::format("user {} holds compute {:.3g} and asks for {:.3g}; the compute limit is {:.3g} (daemon.limits)",
                               who, compute, request.compute.value_or(0.0), *limits.compute),
                   "limits.compute",
                   {{"limit", *limits.compute}, {"held", compute}, {"requested", request.compute.value_or(0.0)}});
  }
}

std::uint32_t SliceRegistry::choose_gpu(const runtime::SliceRequest& request) const {
  // Best fit: the usable GPU with the least free memory that still fits (ties: least free compute).
  std::optional<std::uint32_t> best;
  std::uint64_t best_free = 0;
  double best_compute = 0;
  const auto capacity = node_->ledger().capacity();
  for (const auto& gpu : capacity) {
    runtime::SliceRequest r = request;
    r.gpu = gpu.gpu;
    if (!node_->backend().health(gpu.gpu).usable() || !node_->ledger().fits(r)) continue;
    if (!best || gpu.memory_free() < best_free || (gpu.memory_free() == best_free && gpu.compute_free() < best_compute)) {
      best = gpu.gpu;
      best_free = gpu.memory_free();
      best_compute = gpu.compute_free();
    }
  }
  if (!best) {
    nlohmann::json free = nlohmann::json::array();
    for (const auto& gpu : capacity) {
      free.push_back({{"gpu", gpu.gpu}, {"memory_free_bytes", gpu.memory_free()}, {"compute_free", gpu.compute_free()}});
    }
    throw ApiError(ErrorCode::insufficient_capacity,
                   fmt::format("no GPU has {} of memory and {:.3g} of compute free; see GET /v1/node", format_size(request.memory_bytes),
                               request.compute_share),
                   "gpu", {{"requested_bytes", request.memory_bytes}, {"requested_compute", request.compute_share}, {"free", free}});
  }
  return *best;
}

// ---- create / attach / remove -----------------------------------------------------------------

nlohmann::json SliceRegistry::create(const Caller& caller, const SliceRequest& request) {
  std::uint32_t owner_uid = caller.peer.uid;
  std::uint32_t owner_gid = caller.peer.gid;
  std::string job_id;
  std::optional<std::int64_t> holder_pid = request.holder_pid;
  if (request.on_behalf_of) {
    if (!caller.admin) {
      throw ApiError(ErrorCode::permission_denied,
                     fmt::format("user {} may not act on behalf of another user; only root and the admin group may",
                                 caller.user),
                     "on_behalf_of");
    }
    owner_uid = request.on_behalf_of->uid;
    owner_gid = request.on_behalf_of->gid.value_or(owner_uid);
    job_id = request.on_behalf_of->job_id;
    if (request.on_behalf_of->pid && request.ephemeral && !holder_pid) holder_pid = request.on_behalf_of->pid;
  }
  if (request.ephemeral && !holder_pid) holder_pid = caller.peer.pid;
  const config::Isolation isolation = request.isolation.value_or(config_.vgpu.isolation);

  // The holder of an ephemeral slice, identified now, while it is known to be the one asking.
  Process holder;
  PidfdGuard close_holder{holder.pidfd};
  if (request.ephemeral) {
    auto process = open_process(*holder_pid);
    if (!process) {
      throw ApiError(ErrorCode::invalid_argument, fmt::format("holder_pid: process {} does not exist", *holder_pid),
                     "holder_pid");
    }
    holder = *process;
    holder.holder = true;
    if (!caller.admin && process_uid(static_cast<pid_t>(holder.pid)) != caller.peer.uid) {
      throw ApiError(ErrorCode::permission_denied,
                     fmt::format("holder_pid: process {} is not yours; an ephemeral slice can only be held by your own process",
                                 holder.pid),
                     "holder_pid");
    }
  }

  std::lock_guard lock(mutex_);
  check_user_limits(owner_uid, request);
  runtime::SliceRequest ledger_request{request.gpu.value_or(0), request.memory.value_or(0), request.compute.value_or(0.0),
                                       request.name};
  if (request.gpu && *request.gpu >= node_->backend().gpu_count()) {
    throw ApiError(ErrorCode::invalid_argument,
                   fmt::format("gpu: {} does not exist; this node has GPUs 0..{}", *request.gpu,
                               node_->backend().gpu_count() - 1),
                   "gpu");
  }
  // More memory than the GPU (or any GPU) can ever hold is a bad request, not a wait for room.
  std::uint64_t largest = 0;
  for (const auto& c : node_->ledger().capacity()) {
    if (!request.gpu || c.gpu == *request.gpu) largest = std::max(largest, c.memory_capacity);
  }
  if (ledger_request.memory_bytes > largest) {
    throw ApiError(ErrorCode::invalid_argument,
                   fmt::format("memory: {} is more than {} can hold ({}); ask for at most that",
                               format_size(ledger_request.memory_bytes),
                               request.gpu ? fmt::format("GPU {}", *request.gpu) : std::string("any GPU here"),
                               format_size(largest)),
                   "memory", {{"requested_bytes", ledger_request.memory_bytes}, {"largest_bytes", largest}});
  }
  if (!request.gpu) ledger_request.gpu = choose_gpu(ledger_request);
  if (!request.name.empty()) {
    for (const auto& [id, s] : slices_) {
      if (s.record.owner_uid == owner_uid && s.record.name == request.name) {
        throw ApiError(ErrorCode::conflict,
                       fmt::format("name: you already have a slice named '{}' ({}); pick another name or delete it",
                                   request.name, id),
                       "name", {{"id", id}});
      }
    }
  }
  std::shared_ptr<runtime::MpsDaemon> mps;
  if (isolation == config::Isolation::mps) {
    try {
      mps = node_->mps_daemon(ledger_request.gpu);
    } catch (const ProcessError& e) {
      throw ApiError(ErrorCode::invalid_argument, fmt::format("isolation: mps is not available here: {}", e.what()),
                     "isolation");
    }
  }
  Slice slice;
  try {
    slice.lease = node_->ledger().acquire(ledger_request);
  } catch (const CapacityError& e) {
    const auto cap = node_->ledger().capacity();
    const auto& g = cap.at(ledger_request.gpu);
    throw ApiError(ErrorCode::insufficient_capacity, e.what(), "gpu",
                   {{"gpu", g.gpu},
                    {"requested_bytes", ledger_request.memory_bytes},
                    {"free_bytes", g.memory_free()},
                    {"requested_compute", ledger_request.compute_share},
                    {"free_compute", g.compute_free()}});
  } catch (const InvalidArgument& e) {
    throw ApiError(ErrorCode::invalid_argument, e.what(), "gpu");
  }
  std::string id;
  do {
    id = runtime::random_hex_id();
  } while (slices_.count(id) != 0);

  StoredSlice& r = slice.record;
  r.id = id;
  r.name = request.name.empty() ? "vgpu-" + id.substr(0, 8) : request.name;
  r.owner_uid = owner_uid;
  r.owner_gid = owner_gid;
  r.gpu = ledger_request.gpu;
  r.memory_limit = request.memory;
  r.compute_share = request.compute;
  r.priority = request.priority;
  r.isolation = std::string(config::to_string(isolation));
  r.burst = request.burst;
  r.ephemeral = request.ephemeral;
  r.created_at_ms = now_ms();
  if (request.ttl) r.expires_at_ms = r.created_at_ms + request.ttl->count();
  r.state = "active";
  r.job_id = job_id;
  if (request.ephemeral) r.processes.push_back(StoredProcess{boot_id(), holder.pid, holder.start_time, true});

  // Region first, then one commit, then the reply: a crash before the commit
  // leaves at most an orphaned region (unlinked at the next start) and no
  // grant; a crash after it leaves a grant the client may not have heard of,
  // which it finds in GET /v1/slices. One fsync per grant, not two.
  bool paced = false;
  try {
    if (isolation == config::Isolation::intercept) {
      slice.region = runtime::AccountingRegion::create(runtime::RegionKind::slice, region_prefix() + id,
                                                       r.memory_limit.value_or(0), owner_uid);
      r.region = slice.region.name();
      (void)gpu_region_locked(r.gpu);
      paced = true;
    }
    failpoint("after_region_create");
    store_.insert(r);
  } catch (...) {
    if (paced) drop_gpu_region_locked(r.gpu);
    throw;  // the region (if any) is unlinked with `slice`
  }
  failpoint("after_grant_commit");
  slice.mps = std::move(mps);
  auto [it, inserted] = slices_.emplace(id, std::move(slice));
  const StoredSlice& granted = it->second.record;
  if (request.ephemeral) {
    // The holder may have exited since we opened its pidfd: epoll reports that at once.
    watch(it->second, holder);
    holder.pidfd = -1;  // owned by the slice now
  }
  if (granted.expires_at_ms) watcher_.wake();
  publish_view(it->second);
  log::notice(fmt::format("granted slice {} ({}) to {} (uid {}, pid {}): GPU {}, memory {}, compute {}, {}", id,
                          granted.name, user_name(owner_uid), owner_uid, caller.peer.pid, granted.gpu,
                          granted.memory_limit ? format_size(*granted.memory_limit) : "unlimited",
                          granted.compute_share ? runtime::format_share(*granted.compute_share) : "unlimited",
                          granted.isolation));
  events_.publish(Event{0, 0, "slice", "created", "/v1/slices/" + id, requestor_json(caller),
                        {{"gpu", granted.gpu}, {"name", granted.name}}, owner_uid, false});
  return slice_json(it->second);
}

nlohmann::json SliceRegistry::attach(const Caller& caller, const std::string& id, std::optional<std::int64_t> pid_arg) {
  const pid_t pid = static_cast<pid_t>(pid_arg.value_or(caller.peer.pid));
  Process process;
  PidfdGuard close_process{process.pidfd};
  if (auto opened = open_process(pid)) {
    process = *opened;
  } else {
    throw ApiError(ErrorCode::invalid_argument, fmt::format("pid: process {} does not exist", pid), "pid");
  }

  std::lock_guard lock(mutex_);
  Slice& slice = visible_slice(caller, id);
  if (!caller.admin && process_uid(pid) != caller.peer.uid) {
    throw ApiError(ErrorCode::permission_denied, fmt::format("pid: process {} is not yours", pid), "pid");
  }
  for (const auto& [other_id, other] : slices_) {
    for (const Process& p : other.processes) {
      if (p.pid != pid || p.start_time != process.start_time) continue;
      if (other_id == id) return slice_json(slice);  // already attached: nothing to do
      throw ApiError(ErrorCode::conflict,
                     fmt::format("pid: process {} is already attached to slice {}; a process belongs to one slice", pid, other_id),
                     "pid", {{"slice", other_id}});
    }
  }
  store_.add_process(id, StoredProcess{boot_id(), pid, process.start_time, false});
  slice.record.processes.push_back(StoredProcess{boot_id(), pid, process.start_time, false});
  watch(slice, process);
  process.pidfd = -1;  // the watcher's now
  publish_view(slice);
  events_.publish(Event{0, 0, "process", "attached", "/v1/slices/" + id, requestor_json(caller), {{"pid", pid}},
                        slice.record.owner_uid, false});
  return slice_json(slice);
}

void SliceRegistry::watch(Slice& slice, Process process) {
  process.token = next_token_++;
  tokens_[process.token] = {slice.record.id, process.pid};
  watcher_.add(process.pidfd, process.token);
  slice.processes.push_back(process);
  if (auto* sim = node_->backend().simulator(); sim != nullptr) {
    sim->add_process(slice.record.gpu, process.pid, fmt::format("pid-{}", process.pid), 0);
  }
}

void SliceRegistry::unwatch(Process& process) {
  tokens_.erase(process.token);
  if (process.pidfd >= 0) {
    watcher_.remove(process.pidfd);
    ::close(process.pidfd);
    process.pidfd = -1;
  }
}

void SliceRegistry::remove(const Caller& caller, const std::string& id) {
  std::lock_guard lock(mutex_);
  (void)visible_slice(caller, id);
  release_locked(id, "deleted", requestor_json(caller));
}

void SliceRegistry::release_locked(const std::string& id, const std::string& reason, const nlohmann::json& requestor) {
  auto it = slices_.find(id);
  if (it == slices_.end()) return;
  Slice& slice = it->second;
  // Durable first: once the row is gone the slice is released, whatever
  // happens next; a region left behind by a crash here is an orphan the next
  // start unlinks.
  store_.remove(id);
  failpoint("after_release_commit");
  for (Process& p : slice.processes) {
    unwatch(p);
    if (auto* sim = node_->backend().simulator(); sim != nullptr) sim->remove_process(slice.record.gpu, p.pid);
  }
  const bool paced = slice.region.valid();
  slice.region.remove();
  if (paced) drop_gpu_region_locked(slice.record.gpu);
  if (auto* sim = node_->backend().simulator(); sim != nullptr) sim->clear_load(slice.record.gpu, sim_key(id));
  if (slice.lease.active()) node_->remove_vgpu_view(slice.lease.info().id);
  const std::uint32_t owner = slice.record.owner_uid;
  const std::uint32_t gpu = slice.record.gpu;
  const std::string name = slice.record.name;
  slices_.erase(it);  // returns the lease and drops the MPS hold
  log::notice(fmt::format("released slice {} ({}) of uid {} on GPU {}: {}", id, name, owner, gpu, reason));
  events_.publish(Event{0, 0, "slice", "deleted", "/v1/slices/" + id, requestor, {{"reason", reason}, {"gpu", gpu}},
                        owner, false});
}

void SliceRegistry::on_process_exit(std::uint64_t token) {
  std::lock_guard lock(mutex_);
  auto t = tokens_.find(token);
  if (t == tokens_.end()) return;
  const auto [id, pid] = t->second;
  auto it = slices_.find(id);
  if (it == slices_.end()) return;
  Slice& slice = it->second;
  auto p = std::find_if(slice.processes.begin(), slice.processes.end(), [&](const Process& x) { return x.token == token; });
  if (p == slice.processes.end()) return;
  const bool holder = p->holder;
  unwatch(*p);
  slice.processes.erase(p);
  auto& stored = slice.record.processes;
  stored.erase(std::remove_if(stored.begin(), stored.end(), [&](const StoredProcess& s) { return s.pid == pid; }),
               stored.end());
  if (auto* sim = node_->backend().simulator(); sim != nullptr) sim->remove_process(slice.record.gpu, pid);
  events_.publish(Event{0, 0, "process", "exited", "/v1/slices/" + id, nullptr, {{"pid", pid}}, slice.record.owner_uid, false});
  if (slice.record.ephemeral && holder) {
    // An ephemeral slice lives as long as its holder ('vgpu run', a Slurm step).
    release_locked(id, "holder_exited", nullptr);
    return;
  }
  store_.remove_process(id, pid);
  publish_view(slice);
}

std::optional<ProcessWatcher::Clock::time_point> SliceRegistry::next_deadline() const {
  std::lock_guard lock(mutex_);
  std::optional<std::int64_t> earliest;
  for (const auto& [id, s] : slices_) {
    if (s.record.expires_at_ms && (!earliest || *s.record.expires_at_ms < *earliest)) earliest = s.record.expires_at_ms;
  }
  if (!earliest) return std::nullopt;
  return ProcessWatcher::Clock::time_point(std::chrono::milliseconds(*earliest));
}

void SliceRegistry::expire_due() {
  std::lock_guard lock(mutex_);
  const std::int64_t now = now_ms();
  std::vector<std::string> due;
  for (const auto& [id, s] : slices_) {
    if (s.record.expires_at_ms && *s.record.expires_at_ms <= now) due.push_back(id);
  }
  for (const auto& id : due) {
    try {
      release_locked(id, "expired", nullptr);
    } catch (const std::exception& e) {
      // The ledger could not be written (disk full?): try again in a second rather than spin.
      log::error(fmt::format("slice {} expired but cannot be released yet: {}", id, e.what()));
      if (auto it = slices_.find(id); it != slices_.end()) it->second.record.expires_at_ms = now + 1000;
    }
  }
}

void SliceRegistry::publish_view(const Slice& slice) {
  if (!slice.lease.active()) return;
  monitoring::VgpuView view;
  view.name = slice.record.name;
  view.gpu = slice.record.gpu;
  view.lease_id = slice.lease.info().id;
  view.memory_limit = slice.record.memory_limit;
  view.compute_share = slice.record.compute_share;
  view.active = !slice.processes.empty();
  for (const Process& p : slice.processes) view.pids.push_back(p.pid);
  node_->set_vgpu_view(view);
  if (auto* sim = node_->backend().simulator(); sim != nullptr) {
    const double share = view.active ? slice.record.compute_share.value_or(1.0) : 0.0;
    sim->set_load(slice.record.gpu, sim_key(slice.record.id), device::SimLoad{share, slice.record.memory_limit.value_or(0)});
  }
}

// ---- views ----------------------------------------------------------------------------

SliceRegistry::Slice& SliceRegistry::visible_slice(const Caller& caller, const std::string& id) {
  auto it = slices_.find(id);
  if (it == slices_.end() || !(caller.admin || it->second.record.owner_uid == caller.peer.uid)) {
    throw ApiError(ErrorCode::not_found, fmt::format("no slice {} (of yours); see GET /v1/slices", id), "id");
  }
  return it->second;
}

const SliceRegistry::Slice& SliceRegistry::visible_slice(const Caller& caller, const std::string& id) const {
  return const_cast<SliceRegistry*>(this)->visible_slice(caller, id);
}

std::optional<SliceRegistry::Process> SliceRegistry::open_process(std::int64_t pid,
                                                                   std::optional<std::uint64_t> expected_start) {
  Process process;
  process.pid = pid;
  process.pidfd = open_pidfd(static_cast<pid_t>(pid));
  if (process.pidfd < 0) return std::nullopt;
  const auto start = process_start_time(static_cast<pid_t>(pid));
  if (!start || (expected_start && *start != *expected_start)) {
    ::close(process.pidfd);
    return std::nullopt;
  }
  process.start_time = *start;
  return process;
}

nlohmann::json SliceRegistry::slice_json(const Slice& slice) const {
  const StoredSlice& r = slice.record;
  const device::GpuInfo& gpu = node_->backend().gpu(r.gpu);
  nlohmann::json j;
  j["id"] = r.id;
  j["name"] = r.name;
  j["owner"] = {{"uid", r.owner_uid}, {"gid", r.owner_gid}, {"user", user_name(r.owner_uid)}};
  j["gpu"] = r.gpu;
  j["gpu_uuid"] = gpu.uuid;
  j["device"] = fmt::format("{}:{}", node_->backend().device_type(), r.gpu);
  j["memory_limit_bytes"] = optional_json(r.memory_limit);
  j["compute_share"] = optional_json(r.compute_share);
  j["priority"] = r.priority;
  j["isolation"] = r.isolation;
  j["burst"] = r.burst;
  j["ephemeral"] = r.ephemeral;
  j["expires_at_ms"] = optional_json(r.expires_at_ms);
  j["created_at_ms"] = r.created_at_ms;
  j["state"] = r.state;
  j["job_id"] = r.job_id.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.job_id);
  j["accounting_region"] = r.region.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.region);
  if (!r.region.empty()) j["memory_used_bytes"] = runtime::AccountingRegion::used_bytes(r.region);
  nlohmann::json processes = nlohmann::json::array();
  for (const Process& p : slice.processes) {
    processes.push_back({{"pid", p.pid}, {"start_time", p.start_time}, {"holder", p.holder}});
  }
  j["processes"] = processes;
  runtime::SliceBinding binding;
  binding.id = r.id;
  binding.gpu = r.gpu;
  binding.vendor = gpu.vendor;
  binding.gpu_uuid = gpu.uuid;
  binding.memory_limit = r.memory_limit;
  binding.compute_share = r.compute_share;
  binding.priority = r.priority;
  binding.isolation = config::parse_isolation(r.isolation);
  binding.burst = r.burst;
  binding.shm_name = r.region;
  if (auto g = gpu_regions_.find(r.gpu); g != gpu_regions_.end() && !r.region.empty()) {
    binding.gpu_shm_name = g->second.region.name();
  }
  if (binding.isolation == config::Isolation::intercept) binding.intercept_library = intercept_library_;
  if (binding.isolation == config::Isolation::mps) binding.mps_directory = runtime::MpsDaemon::directory_for(gpu.uuid).string();
  auto env = runtime::slice_environment(binding);
  // The daemon's own LD_PRELOAD is not the client's business.
  if (binding.isolation == config::Isolation::intercept) env["LD_PRELOAD"] = binding.intercept_library;
  if (env["LD_PRELOAD"].empty()) env.erase("LD_PRELOAD");
  j["environment"] = env;
  return j;
}

nlohmann::json SliceRegistry::list(const Caller& caller, bool all) const {
  if (all && !caller.admin) {
    throw ApiError(ErrorCode::permission_denied,
                   fmt::format("user {} may not list every user's slices; only root and the admin group may (drop all=1)",
                               caller.user),
                   "all");
  }
  std::lock_guard lock(mutex_);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [id, slice] : slices_) {
    if (all || slice.record.owner_uid == caller.peer.uid) out.push_back(slice_json(slice));
  }
  std::sort(out.begin(), out.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
    return std::pair(a["created_at_ms"].get<std::int64_t>(), a["id"].get<std::string>()) <
           std::pair(b["created_at_ms"].get<std::int64_t>(), b["id"].get<std::string>());
  });
  return out;
}

nlohmann::json SliceRegistry::get(const Caller& caller, const std::string& id) const {
  std::lock_guard lock(mutex_);
  return slice_json(visible_slice(caller, id));
}

nlohmann::json SliceRegistry::node_json() const {
  std::lock_guard lock(mutex_);
  device::Backend& backend = node_->backend();
  nlohmann::json gpus = nlohmann::json::array();
  for (const auto& c : node_->ledger().capacity()) {
    const device::GpuInfo& g = backend.gpu(c.gpu);
    gpus.push_back({{"index", c.gpu},
                    {"name", g.name},
                    {"uuid", g.uuid},
                    {"memory_total_bytes", g.memory_total},
                    {"memory_capacity_bytes", c.memory_capacity},
                    {"memory_leased_bytes", c.memory_leased},
                    {"memory_free_bytes", c.memory_free()},
                    {"compute_capacity", c.compute_capacity},
                    {"compute_leased", c.compute_leased},
                    {"compute_free", c.compute_free()},
                    {"slices", c.slices},
                    {"health", std::string(device::to_string(backend.health(c.gpu).state))}});
  }
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return nlohmann::json{{"hostname", host},
                        {"node_id", node_id_},
                        {"instance_id", instance_id_},
                        {"backend", std::string(backend.name())},
                        {"device_type", std::string(backend.device_type())},
                        {"max_virtual_gpus", node_->ledger().options().max_virtual_gpus},
                        {"oversubscription", node_->ledger().options().oversubscription},
                        {"active_slices", slices_.size()},
                        {"gpus", gpus}};
}

nlohmann::json SliceRegistry::health_json() const {
  std::lock_guard lock(mutex_);
  return nlohmann::json{{"status", "ok"},
                        {"instance_id", instance_id_},
                        {"slices", slices_.size()},
                        {"uptime_ms", now_ms() - started_ms_},
                        {"watched_processes", tokens_.size()}};
}

std::size_t SliceRegistry::slice_count() const {
  std::lock_guard lock(mutex_);
  return slices_.size();
}

bool SliceRegistry::visible(const Caller& caller, const Event& event) {
  return caller.admin || event.node_wide || event.owner_uid == caller.peer.uid;
}

std::string SliceRegistry::dump() const {
  std::lock_guard lock(mutex_);
  std::string out = fmt::format("{} slices, {} watched processes, {} GPU regions", slices_.size(), tokens_.size(),
                                gpu_regions_.size());
  for (const auto& [id, s] : slices_) {
    out += fmt::format("\n  {} {} uid={} gpu={} memory={} compute={} isolation={} processes={}{}", id, s.record.name,
                       s.record.owner_uid, s.record.gpu,
                       s.record.memory_limit ? format_size(*s.record.memory_limit) : "-",
                       s.record.compute_share ? runtime::format_share(*s.record.compute_share) : "-", s.record.isolation,
                       s.processes.size(), s.record.ephemeral ? " ephemeral" : "");
  }
  return out;
}

}  // namespace apt::vgpu::daemon
