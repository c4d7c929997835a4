// vgpud: the node daemon. One per node; it owns every slice of the node's GPUs
// for every process and user, persists them, and serves the API on a unix
// socket and /metrics on TCP. Foreground, logs to stderr (journald adds time).
//
// Signals are handled on the main thread with sigwait (blocked everywhere
// before any thread starts): SIGTERM/SIGINT stop gracefully (slices and
// regions survive for the next start), SIGHUP reloads the config's
// limits and admin group, SIGUSR1 logs the state. SIGPIPE is ignored.
#include "api_server.hpp"
#include "event_log.hpp"
#include "ledger_store.hpp"
#include "slice_registry.hpp"
#include "systemd_notify.hpp"

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/config/daemon_config.hpp>
#include <apt/vgpu/device/backend_factory.hpp>
#include <apt/vgpu/monitoring/gpu_monitor.hpp>
#include <apt/vgpu/monitoring/metrics_server.hpp>
#include <apt/vgpu/monitoring/prometheus_exporter.hpp>
#include <apt/vgpu/monitoring/stats_json.hpp>
#include <apt/vgpu/runtime/node.hpp>

#include <CLI/CLI.hpp>
#include <csignal>
#include <filesystem>
#include <fmt/format.h>
#include <iostream>
#include <pthread.h>
#include <sys/stat.h>

namespace apt::vgpu::daemon {
namespace {

struct Flags {
  std::string config;
  std::string socket;
  std::string state_dir;
  std::string backend;
  std::string metrics_listen;
  std::string sim_gpus;
  std::string log_level;
  bool check_config = false;
};

config::DaemonConfig load(const Flags& flags) {
  config::DaemonConfig config = flags.config.empty() ? config::DaemonConfig{} : config::load_daemon_config(flags.config);
  if (!flags.socket.empty()) config.daemon.socket = flags.socket;
  if (!flags.state_dir.empty()) config.daemon.state_dir = flags.state_dir;
  if (!flags.backend.empty()) config.vgpu.backend = flags.backend;
  if (!flags.metrics_listen.empty()) config.daemon.metrics_listen = flags.metrics_listen;
  return config;
}

std::string daemon_metrics(const SliceRegistry& registry, const runtime::Node& node) {
  const auto capacity = node.ledger().capacity();
  std::string out;
  out += "# HELP vgpu_daemon_slices Slices granted by vgpud.\n# TYPE vgpu_daemon_slices gauge\n";
  out += fmt::format("vgpu_daemon_slices {}\n", registry.slice_count());
  out += "# HELP vgpu_daemon_gpu_memory_leased_bytes Memory reserved by slices on each GPU.\n"
         "# TYPE vgpu_daemon_gpu_memory_leased_bytes gauge\n";
  for (const auto& c : capacity) out += fmt::format("vgpu_daemon_gpu_memory_leased_bytes{{gpu=\"{}\"}} {}\n", c.gpu, c.memory_leased);
  out += "# HELP vgpu_daemon_gpu_compute_leased_ratio Compute share reserved by slices on each GPU.\n"
         "# TYPE vgpu_daemon_gpu_compute_leased_ratio gauge\n";
  for (const auto& c : capacity) out += fmt::format("vgpu_daemon_gpu_compute_leased_ratio{{gpu=\"{}\"}} {}\n", c.gpu, c.compute_leased);
  out += "# HELP vgpu_daemon_gpu_slices Slices on each GPU.\n# TYPE vgpu_daemon_gpu_slices gauge\n";
  for (const auto& c : capacity) out += fmt::format("vgpu_daemon_gpu_slices{{gpu=\"{}\"}} {}\n", c.gpu, c.slices);
  return out;
}

int run(const Flags& flags) {
  config::DaemonConfig config = load(flags);
  if (flags.check_config) {
    std::cout << (flags.config.empty() ? std::string("built-in defaults") : flags.config) << ": valid\n";
    return 0;
  }
  if (!flags.sim_gpus.empty()) runtime::Node::apply_sim_shape(config.vgpu, flags.sim_gpus);
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(config.daemon.state_dir, ec);
  if (ec) throw ProcessError(fmt::format("--state-dir: cannot create {}: {}", config.daemon.state_dir.string(), ec.message()));
  ::chmod(config.daemon.state_dir.c_str(), 0700);

  LedgerStore store(config.daemon.state_dir / "ledger.db", config.daemon.synchronous == "full");
  auto node = runtime::Node::open(config.vgpu, device::parse_backend_kind(config.vgpu.backend));
  EventLog events;
  SliceRegistry registry(config, node, store, events);
  registry.recover();

  std::unique_ptr<monitoring::GPUMonitor> monitor;
  std::unique_ptr<monitoring::MetricsServer> metrics;
  if (config.vgpu.monitoring.enabled) {
    monitoring::MonitorOptions options;
    options.history_capacity = config.vgpu.monitoring.history;
    options.alerts = monitoring::AlertThresholds::from_config(config.vgpu.monitoring.alerts);
    options.vgpus = [n = node.get()] { return n->vgpu_views(); };
    std::vector<std::string> metric_names = config::known_metrics();
    monitor = std::make_unique<monitoring::GPUMonitor>(node->backend(), config.vgpu.monitoring.interval_seconds,
                                                       metric_names, options);
    monitor->on_alert([&events](const monitoring::AlertEvent& a) {
      events.publish(Event{0, 0, "alert", a.state == monitoring::AlertEvent::State::raised ? "raised" : "cleared",
                           fmt::format("/v1/node/gpus/{}", a.gpu), nullptr,
                           {{"kind", a.kind}, {"gpu", a.gpu}, {"vgpu", a.vgpu}, {"value", a.value},
                            {"threshold", a.threshold}, {"message", a.message}},
                           0, true});
    });
    monitor->start();
  }
  // The node's Prometheus text: a fresh sample per scrape (as node_exporter reads on scrape), so
  // the slices shown are the slices that exist now; the sampler keeps the history between scrapes.
  std::function<std::string()> render_metrics;
  if (monitor) {
    render_metrics = [&] {
      const auto stats = monitor->sample();
      return monitoring::render_prometheus(stats, {monitor->active_alerts(), monitor->samples_taken()}) +
             daemon_metrics(registry, *node);
    };
  }
  if (!config.daemon.metrics_listen.empty() && config.daemon.metrics_listen != "off") {
    metrics = std::make_unique<monitoring::MetricsServer>(
        config.daemon.metrics_listen, [&](const monitoring::HttpRequest& req) {
          if (req.path == "/metrics") {
            const std::string body = render_metrics ? render_metrics() : daemon_metrics(registry, *node);
            return monitoring::HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", body};
          }
          if (req.path == "/healthz") return monitoring::HttpResponse{200, "text/plain; charset=utf-8", "ok\n"};
          return monitoring::HttpResponse{404, "application/json",
                                          R"({"error": {"code": "not_found", "status": 404, "message": "GET /metrics or /healthz"}})"};
        });
    log::notice(fmt::format("metrics on http://{}/metrics", metrics->address()));
  }

  ApiServer::MonitorViews views{render_metrics, {}};
  if (monitor) {
    // One fresh sample per request (vgpu top asks once a frame), with each GPU's last five
    // minutes of utilization for its sparklines.
    views.stats = [&] {
      const auto stats = monitor->sample();
      monitoring::UtilizationHistory history;
      for (const auto& g : stats.gpus) {
        history[g.gpu_id] = monitor->history_values("utilization", std::chrono::minutes(5), g.gpu_id);
      }
      return monitoring::stats_json(stats, node->backend().gpus(), history).dump();
    };
  }
  ApiServer api(registry, events, config.daemon, views);
  api.start();
  log::notice(fmt::format("vgpud ready: socket {}, state {}, backend {} with {} GPUs, {} slices", config.daemon.socket,
                          config.daemon.state_dir.string(), node->backend().name(), node->backend().gpu_count(),
                          registry.slice_count()));
  events.publish(Event{0, 0, "daemon", "started", "/v1", nullptr, {{"instance_id", registry.instance_id()}}, 0, true});
  notify_systemd("READY=1\nSTATUS=serving");

  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&signals, s);
  while (true) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      notify_systemd("RELOADING=1");
      try {
        if (!flags.config.empty()) registry.reload(config::load_daemon_config(flags.config));
        log::notice("configuration reloaded (limits and admin group)");
      } catch (const Error& e) {
        log::error(fmt::format("reload failed, keeping the old configuration: {}", e.what()));
      }
      notify_systemd("READY=1");
      continue;
    }
    if (sig == SIGUSR1) {
      log::notice(registry.dump());
      continue;
    }
    log::notice(fmt::format("{} received: stopping (slices are kept for the next start)", sig == SIGTERM ? "SIGTERM" : "SIGINT"));
    break;
  }
  notify_systemd("STOPPING=1");
  api.stop();
  if (metrics) metrics->stop();
  if (monitor) monitor->stop();
  registry.shutdown();
  return 0;
}

}  // namespace
}  // namespace apt::vgpu::daemon

int main(int argc, char** argv) {
  using namespace apt::vgpu;
  // Before any thread exists, so every thread inherits the mask and only sigwait sees these.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  daemon::Flags flags;
  CLI::App app{"vgpud: the Virtual Blackwell node daemon. It owns every slice of this node's GPUs for every user, "
               "persists them in SQLite, serves the API (HTTP+JSON) on a unix socket and /metrics on TCP.\n"
               "Exit codes: 0 stopped by SIGTERM/SIGINT, 1 run-time failure, 2 usage or configuration error."};
  app.name("vgpud");
  app.set_version_flag("--version", "vgpud 0.1.0");
  app.add_option("--config", flags.config, "YAML config (profile keys under vgpu:, daemon keys under daemon:)");
  app.add_option("--socket", flags.socket, "API socket (default /run/vgpu/vgpud.sock)");
  app.add_option("--state-dir", flags.state_dir, "Where ledger.db lives (default /var/lib/vgpu)");
  app.add_option("--backend", flags.backend, "auto | nvml | rocm | sim (default: the config's, auto)")
      ->check(CLI::IsMember({"auto", "nvml", "rocm", "sim"}));
  app.add_option("--metrics-listen", flags.metrics_listen,
                 "HOST:PORT for /metrics (default 127.0.0.1:9400; port 0 picks a free one; 'off' disables)");
  app.add_option("--sim-gpus", flags.sim_gpus, "Simulated node shape COUNT[xMEMORY][:NAME] (sim backend)");
  app.add_flag("--check-config", flags.check_config, "Validate --config (and the flags) and exit: 0 when valid, 2 when not");
  app.add_option("--log-level", flags.log_level, "error | warn | notice | info | debug (default notice; env VGPU_LOG_LEVEL)")
      ->check(CLI::IsMember({"error", "warn", "notice", "info", "debug"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (!flags.log_level.empty()) {
    const std::string& l = flags.log_level;
    log::set_level(l == "error" ? log::Level::error : l == "warn" ? log::Level::warn : l == "info" ? log::Level::info
                   : l == "debug" ? log::Level::debug : log::Level::notice);
  }
  log::set_program("vgpud");
  try {
    return daemon::run(flags);
  } catch (const Error& e) {
    log::error(e.what());
    return e.is_usage_error() ? 2 : 1;
  } catch (const std::exception& e) {
    log::error(e.what());
    return 1;
  }
}
