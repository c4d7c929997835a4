// ApiServer: vgpud's HTTP/1.1 + JSON API on a unix socket (cpp-httplib).
//
// Identity comes from the kernel, never from the request: each connection's
// SO_PEERCRED/SO_PEERGROUPS are read before its request is parsed (httplib
// gives handlers no access to the socket, so a subclass serves each
// connection itself: one request per connection). A connection that sends
// too slowly is cut off after `request_timeout`; when more than
// `max_connections` wait for a worker, the newest get 429 at once; long polls
// on /v1/events are capped at `max_event_subscribers`. Bodies over
// `max_body` get 413. Every error is {"error": {code, status, message, field}}.
//
// Routes: GET /v1, /v1/health, /v1/whoami, /v1/node, /v1/events, /v1/metrics, /v1/stats;
// GET/POST /v1/slices; GET/DELETE /v1/slices/{id}; POST /v1/slices/{id}/processes.
//
// Thread safety: start() and stop() from one thread; handlers run on the pool.
#pragma once

#include "event_log.hpp"
#include "slice_registry.hpp"

#include <apt/vgpu/config/daemon_config.hpp>

#include <functional>
#include <memory>
#include <string>

namespace apt::vgpu::daemon {

class ApiServer {
 public:
  // The node monitor's two faces on the socket, so that `vgpu monitor` and `vgpu top` read
  // the daemon's monitor: `metrics` renders the Prometheus text of GET /v1/metrics, `stats`
  // the JSON sample of GET /v1/stats (monitoring/stats_json.hpp). Empty when monitoring is off.
  struct MonitorViews {
    std::function<std::string()> metrics;
    std::function<std::string()> stats;
  };
  ApiServer(SliceRegistry& registry, EventLog& events, const config::DaemonSection& options, MonitorViews monitor = {});
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Takes the single-instance lock (<socket>.lock), binds the socket (or takes
  // systemd's fd 3) with the configured mode and group, and starts serving.
  // Throws ProcessError when another vgpud serves the path or binding fails.
  void start();
  // Stops accepting, lets in-flight requests finish, ends long polls.
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace apt::vgpu::daemon
