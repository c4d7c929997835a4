// DaemonClient: the C++ client of vgpud's API (HTTP + JSON over its unix
// socket). The CLI, the C++ API and the Python package use it whenever a
// daemon runs on the node; see docs/daemon.md for the API itself.
//
// Which daemon: find_daemon_socket() applies the rule every face uses: an
// explicit path (--socket, or $VGPU_SOCKET) must exist, else it is an error;
// without one, /run/vgpu/vgpud.sock is used when it exists, and otherwise
// the caller runs embedded (its own ledger, as on a laptop).
//
// Errors: the daemon's JSON error becomes a typed exception: invalid_argument
// and payload_too_large -> InvalidArgument, insufficient_capacity ->
// CapacityError, anything else (not found, permission denied, conflict, an
// unreachable daemon) -> DaemonError, which keeps the HTTP status, the code
// name and the field.
//
// Thread safety: a DaemonClient may be used from several threads at once
// (each call opens its own connection).
#pragma once

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/config/vgpu_config.hpp>
#include <apt/vgpu/runtime/node_ledger.hpp>
#include <apt/vgpu/runtime/virtual_gpu_options.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace apt::vgpu::runtime {

inline constexpr const char* kDefaultDaemonSocket = "/run/vgpu/vgpud.sock";

class DaemonError : public Error {
 public:
  DaemonError(int status, std::string code, std::string field, const std::string& message)
      : Error(ErrorKind::process, message), status_(status), code_(std::move(code)), field_(std::move(field)) {}
  [[nodiscard]] int status() const noexcept { return status_; }  // HTTP status; 0 when unreachable
  [[nodiscard]] const std::string& code() const noexcept { return code_; }
  [[nodiscard]] const std::string& field() const noexcept { return field_; }

 private:
  int status_;
  std::string code_;
  std::string field_;
};

// What to ask for (POST /v1/slices). Absent fields take the daemon's defaults.
struct SliceSpec {
  std::optional<std::uint32_t> gpu;
  std::optional<std::uint64_t> memory_limit;
  std::optional<double> compute_share;
  int priority = 0;
  std::optional<config::Isolation> isolation;
  bool burst = false;
  std::string name;
  std::optional<std::chrono::milliseconds> ttl;
  bool ephemeral = false;                // ends when its holder exits
  std::optional<std::int64_t> holder_pid;  // default: this process

  // The same request as a VirtualGPU's options (GPU, limits, priority, isolation, burst, name).
  [[nodiscard]] static SliceSpec from_options(const VirtualGpuOptions& options);
};

struct SliceProcess {
  std::int64_t pid = 0;
  std::uint64_t start_time = 0;
  bool holder = false;
};

// A slice as the daemon reports it.
struct SliceInfo {
  std::string id;
  std::string name;
  std::uint32_t owner_uid = 0;
  std::string owner;
  std::uint32_t gpu = 0;
  std::string gpu_uuid;
  std::string device;  // "cuda:0" / "sim:0"
  std::optional<std::uint64_t> memory_limit;
  std::optional<double> compute_share;
  int priority = 0;
  std::string isolation;
  bool burst = false;
  bool ephemeral = false;
  std::optional<std::int64_t> expires_at_ms;
  std::int64_t created_at_ms = 0;
  std::optional<std::uint64_t> memory_used;  // intercept slices: bytes its processes hold now
  std::vector<SliceProcess> processes;
  std::map<std::string, std::string> environment;  // binds a child process to the slice
  std::string json;                                // the daemon's object, verbatim

  // `environment` for a child started here: in intercept mode LD_PRELOAD is the
  // libvgpu-cuda.so beside this program when there is one (the daemon's guess otherwise;
  // the same path once installed), followed by this process's own LD_PRELOAD.
  [[nodiscard]] std::map<std::string, std::string> environment_here() const;
};

class DaemonClient {
 public:
  explicit DaemonClient(std::string socket_path);

  // The socket to use, by the rule above; nullopt means "run embedded".
  // Throws InvalidArgument when an explicit path does not exist.
  [[nodiscard]] static std::optional<std::string> find_daemon_socket(const std::string& explicit_path = {});

  [[nodiscard]] const std::string& socket_path() const noexcept { return socket_; }

  [[nodiscard]] SliceInfo create(const SliceSpec& spec) const;
  [[nodiscard]] std::vector<SliceInfo> list(bool all = false) const;
  [[nodiscard]] SliceInfo get(const std::string& id) const;
  void remove(const std::string& id) const;
  // Attaches a process (default: this one) to the slice, for accounting and attribution.
  SliceInfo attach(const std::string& id, std::optional<std::int64_t> pid = std::nullopt) const;

  // What every GPU of the node has leased now, all users together (GET /v1/node).
  [[nodiscard]] std::vector<GpuCapacity> node_capacity() const;

  // A raw GET of an API path (e.g. "/v1/node"), returning the JSON text; throws like the rest.
  [[nodiscard]] std::string get_json(const std::string& path) const;
  // The same for a path that answers text (e.g. "/v1/metrics").
  [[nodiscard]] std::string get_text(const std::string& path) const { return get_json(path); }

 private:
  std::string request(const char* method, const std::string& path, const std::string& body, int expected) const;
  std::string socket_;
};

}  // namespace apt::vgpu::runtime
