// A Node is this machine's GPUs as the runtime sees them: one device backend
// and one NodeLedger over its GPUs. Every VirtualGPU holds a shared_ptr to
// the Node it leases from.
//
// Node::default_node() is the process-wide node that create_vgpu() and
// VirtualGPU use when no node is given (as in the seed). It is opened on
// first use from the profile named by VGPU_PROFILE (if set; built-in defaults
// otherwise) and the backend named by VGPU_BACKEND (default: the profile's,
// usually auto). set_default_node() replaces it (tests, the CLI).
//
// When vgpud serves the node ($VGPU_SOCKET, or /run/vgpu/vgpud.sock exists),
// the default node carries a DaemonClient and every VirtualGPU made on it is
// a slice granted by the daemon (held by this process) instead of a lease
// from this process's own ledger.
//
// Thread safety: all methods are safe to call concurrently.
#pragma once

#include <apt/vgpu/config/vgpu_config.hpp>
#include <apt/vgpu/device/backend.hpp>
#include <apt/vgpu/device/backend_factory.hpp>
#include <apt/vgpu/monitoring/vgpu_view.hpp>
#include <apt/vgpu/runtime/accounting_region.hpp>
#include <apt/vgpu/runtime/daemon_client.hpp>
#include <apt/vgpu/runtime/node_ledger.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace apt::vgpu::runtime {

class MpsDaemon;

class Node {
 public:
  Node(std::unique_ptr<device::Backend> backend, LedgerOptions options);

  // Opens a backend for `config` (its backend key, or `backend_override`),
  // with the simulated node shaped by config.simulated_node and then by the
  // VGPU_SIM_* environment.
  [[nodiscard]] static std::shared_ptr<Node> open(const config::VgpuConfig& config,
                                                  std::optional<device::BackendKind> backend_override = {});
  // Applies a simulated node shape given on a command line (COUNT[xMEMORY][:NAME], as
  // --sim-gpus) to `config`, and to VGPU_SIM_GPUS so that open() does not undo it:
  // the flag wins over the profile and the environment. Call before threads start.
  static void apply_sim_shape(config::VgpuConfig& config, const std::string& shape);

  [[nodiscard]] static std::shared_ptr<Node> default_node();
  static void set_default_node(std::shared_ptr<Node> node);

  [[nodiscard]] device::Backend& backend() noexcept { return *backend_; }
  [[nodiscard]] const device::Backend& backend() const noexcept { return *backend_; }
  [[nodiscard]] NodeLedger& ledger() noexcept { return ledger_; }
  [[nodiscard]] const NodeLedger& ledger() const noexcept { return ledger_; }

  // What every GPU has leased now, by any holder: vgpud's book when a daemon
  // serves the node (all users' slices), this node's ledger otherwise. The
  // scheduler keeps its ClusterState as a view of it. Throws DaemonError when
  // the daemon cannot be reached.
  [[nodiscard]] std::vector<GpuCapacity> capacity() const;

  // The virtual GPUs leased from this node, as the monitor attributes use to
  // them (VirtualGPU keeps its entry current). Ordered by lease id.
  [[nodiscard]] std::vector<monitoring::VgpuView> vgpu_views() const;
  void set_vgpu_view(const monitoring::VgpuView& view);
  void remove_vgpu_view(std::uint64_t lease_id);

  // The MPS control daemon of a GPU, started on first use and stopped when the
  // last holder lets go. Throws ProcessError without MPS.
  [[nodiscard]] std::shared_ptr<class MpsDaemon> mps_daemon(std::uint32_t gpu);

  // The name of a GPU's pacing region for libvgpu-cuda.so (burst coordination
  // among this node object's intercept slices), created on first use and
  // removed with the Node. Empty when it cannot be created (pacing still works,
  // without burst).
  [[nodiscard]] std::string gpu_region(std::uint32_t gpu);

  // The daemon that grants this node's slices, if any (see above).
  void set_daemon(std::shared_ptr<const DaemonClient> daemon) { daemon_ = std::move(daemon); }
  // Sets the daemon found by DaemonClient::find_daemon_socket() ($VGPU_SOCKET, else the
  // default socket when it exists); leaves the node embedded otherwise.
  void use_daemon_if_running();
  [[nodiscard]] const std::shared_ptr<const DaemonClient>& daemon() const noexcept { return daemon_; }

 private:
  std::unique_ptr<device::Backend> backend_;
  NodeLedger ledger_;
  mutable std::mutex views_mutex_;
  std::map<std::uint64_t, monitoring::VgpuView> views_;  // guarded by views_mutex_
  std::mutex mps_mutex_;
  std::map<std::uint32_t, std::weak_ptr<MpsDaemon>> mps_;  // guarded by mps_mutex_
  std::mutex regions_mutex_;
  std::map<std::uint32_t, AccountingRegion> gpu_regions_;  // guarded by regions_mutex_
  std::shared_ptr<const DaemonClient> daemon_;             // set before the node is shared
};

}  // namespace apt::vgpu::runtime
