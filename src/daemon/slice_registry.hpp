// SliceRegistry: the one authority over a node's slices. It grants slices
// from the node's ledger (memory, compute and slice count per GPU, per-user
// limits from the config), records every grant and release durably in the
// LedgerStore before answering, creates and removes each intercept slice's
// accounting region (and the per-GPU pacing regions), holds the GPU's MPS
// control daemon while an mps slice exists, tracks each slice's processes by
// (pid, start time) with pidfds, ends an ephemeral slice when its holder process
// exits and named slices when their TTL passes, publishes events,
// and keeps the node's monitor views current.
//
// At start (recover()), the database is the intent and the machine is the
// truth: pending grants are rolled back, dead processes dropped, ephemeral
// slices whose processes are gone released, missing regions re-created and
// orphaned ones unlinked.
//
// Authorization: a caller sees and changes only slices it owns (others are
// not_found, so their existence is not revealed); root and members of the
// configured admin group see and change all, and alone may act on behalf of
// another user.
//
// Thread safety: every public method may be called from any thread; one
// mutex serialises the book and its database.
#pragma once

#include "event_log.hpp"
#include "ledger_store.hpp"
#include "process_identity.hpp"
#include "process_watcher.hpp"
#include "slice_request.hpp"

#include <apt/vgpu/config/daemon_config.hpp>
#include <apt/vgpu/runtime/accounting_region.hpp>
#include <apt/vgpu/runtime/mps_daemon.hpp>
#include <apt/vgpu/runtime/node.hpp>

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace apt::vgpu::daemon {

// Who is asking: the kernel's word for the connection, and what follows from it.
struct Caller {
  PeerCredentials peer;
  bool admin = false;
  std::string user;
};

class SliceRegistry {
 public:
  SliceRegistry(config::DaemonConfig config, std::shared_ptr<runtime::Node> node, LedgerStore& store, EventLog& events);
  ~SliceRegistry();
  SliceRegistry(const SliceRegistry&) = delete;
  SliceRegistry& operator=(const SliceRegistry&) = delete;

  // Reconciles the stored book with the machine and starts watching processes.
  void recover();
  // Stops watching; keeps slices, regions and MPS daemons for the next start.
  void shutdown();

  [[nodiscard]] Caller identify(const PeerCredentials& peer) const;

  [[nodiscard]] nlohmann::json create(const Caller& caller, const SliceRequest& request);
  [[nodiscard]] nlohmann::json list(const Caller& caller, bool all) const;
  [[nodiscard]] nlohmann::json get(const Caller& caller, const std::string& id) const;
  void remove(const Caller& caller, const std::string& id);
  [[nodiscard]] nlohmann::json attach(const Caller& caller, const std::string& id, std::optional<std::int64_t> pid);
  [[nodiscard]] nlohmann::json node_json() const;
  [[nodiscard]] nlohmann::json health_json() const;
  [[nodiscard]] std::size_t slice_count() const;
  // Whether `caller` may see `event`.
  [[nodiscard]] static bool visible(const Caller& caller, const Event& event);

  // Replaces the limits and admin group (SIGHUP); slices already granted stay.
  void reload(const config::DaemonConfig& config);
  // A one-line-per-slice summary for the log (SIGUSR1).
  [[nodiscard]] std::string dump() const;

  [[nodiscard]] const std::string& node_id() const noexcept { return node_id_; }
  [[nodiscard]] const std::string& instance_id() const noexcept { return instance_id_; }

 private:
  struct Process {
    std::int64_t pid = 0;
    std::uint64_t start_time = 0;
    bool holder = false;
    int pidfd = -1;
    std::uint64_t token = 0;
  };
  struct Slice {
    StoredSlice record;
    runtime::Lease lease;
    runtime::AccountingRegion region;
    std::shared_ptr<runtime::MpsDaemon> mps;
    std::vector<Process> processes;
  };
  struct GpuRegion {
    runtime::AccountingRegion region;
    int users = 0;
  };

  // A live process with its pidfd open, or nullopt when `pid` is gone (or, given
  // `expected_start`, is no longer the process that started then). The start time is
  // read after the pidfd is open, so it belongs to the process the pidfd refers to.
  [[nodiscard]] static std::optional<Process> open_process(std::int64_t pid,
                                                           std::optional<std::uint64_t> expected_start = {});
  [[nodiscard]] nlohmann::json slice_json(const Slice& slice) const;
  // The slice if the caller may see it (theirs, or any for admins); not_found otherwise.
  [[nodiscard]] Slice& visible_slice(const Caller& caller, const std::string& id);
  [[nodiscard]] const Slice& visible_slice(const Caller& caller, const std::string& id) const;
  [[nodiscard]] config::UserLimits limits_for(std::uint32_t uid) const;
  void check_user_limits(std::uint32_t uid, const SliceRequest& request) const;
  [[nodiscard]] std::uint32_t choose_gpu(const runtime::SliceRequest& request) const;
  void watch(Slice& slice, Process process);
  void unwatch(Process& process);
  void release_locked(const std::string& id, const std::string& reason, const nlohmann::json& requestor);
  void publish_view(const Slice& slice);
  [[nodiscard]] std::string gpu_region_locked(std::uint32_t gpu);
  void drop_gpu_region_locked(std::uint32_t gpu);
  void on_process_exit(std::uint64_t token);
  void expire_due();
  [[nodiscard]] std::optional<ProcessWatcher::Clock::time_point> next_deadline() const;
  void unlink_orphan_regions();
  [[nodiscard]] std::string region_prefix() const;

  config::DaemonConfig config_;
  std::shared_ptr<runtime::Node> node_;
  LedgerStore& store_;
  EventLog& events_;
  std::string node_id_;
  std::string intercept_library_;  // found once: it is in every intercept slice's environment
  std::string instance_id_;
  std::int64_t started_ms_ = 0;
  mutable std::mutex mutex_;
  std::map<std::string, Slice> slices_;                                   // guarded by mutex_
  std::map<std::uint64_t, std::pair<std::string, std::int64_t>> tokens_;  // pidfd token -> (slice, pid); guarded
  std::map<std::uint32_t, GpuRegion> gpu_regions_;                        // guarded by mutex_
  std::uint64_t next_token_ = 1;                                          // guarded by mutex_
  std::optional<gid_t> admin_gid_;                                        // guarded by mutex_
  ProcessWatcher watcher_;
};

}  // namespace apt::vgpu::daemon
