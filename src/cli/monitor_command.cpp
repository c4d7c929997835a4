#include "command.hpp"
#include "output.hpp"

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/monitoring/gpu_monitor.hpp>
#include <apt/vgpu/monitoring/metrics_server.hpp>
#include <apt/vgpu/monitoring/prometheus_exporter.hpp>
#include <apt/vgpu/monitoring/stats_json.hpp>
#include <apt/vgpu/runtime/daemon_client.hpp>

#include <atomic>
#include <csignal>
#include <fmt/format.h>
#include <iostream>
#include <poll.h>
#include <termios.h>
#include <thread>
#include <unistd.h>

namespace apt::vgpu::cli {
namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_signal(int) { g_interrupted = true; }

monitoring::MonitorOptions monitor_options(const config::Config& config, runtime::Node& node) {
  monitoring::MonitorOptions o;
  o.history_capacity = config.vgpu.monitoring.history;
  o.alerts = monitoring::AlertThresholds::from_config(config.vgpu.monitoring.alerts);
  o.vgpus = [&node] { return node.vgpu_views(); };
  return o;
}

class MonitorCommand final : public Command {
 public:
  explicit MonitorCommand(const GlobalOptions& globals) : globals_(globals) {}

  void attach(CLI::App& parent) override {
    app_ = parent.add_subcommand(
        "monitor", "Sample the GPUs: Prometheus text once (--once), JSON lines (--json), or serve /metrics over HTTP "
                   "(--listen 127.0.0.1:9400) until interrupted");
    app_->add_flag("--once", once_, "Print one Prometheus exposition and exit");
    app_->add_flag("--json", json_, "Print one JSON sample per interval (with --count, that many; default 1)");
    app_->add_option("--listen", listen_, "Serve /metrics and /healthz on HOST:PORT (port 0: any free port)");
    app_->add_option("--interval", interval_, "Seconds between samples (default: the profile's monitoring.interval)")
        ->check(in_range(0.001, 3600.0));
    app_->add_option("--metrics", metrics_, "Metric names (utilization, memory, temperature, power, clocks, pcie, "
                                            "bandwidth, processes), comma-separated; default: all")
        ->delimiter(',');
    app_->add_option("--count", count_, "With --json: samples to print (0: until interrupted)");
  }

  int run() override {
    const auto config = globals_.load_config();
    // With a daemon, its monitor is the node's (every user's slices attributed): read
    // it rather than sampling here. --metrics picks what to sample, so it samples here.
    if (metrics_.empty()) {
      if (const auto socket = globals_.daemon_socket()) return run_from_daemon(runtime::DaemonClient(*socket), config);
    }
    auto node = globals_.open_node(config);
    std::vector<std::string> metrics = metrics_;
    if (metrics.empty()) metrics = config::known_metrics();
    const double interval = interval_.value_or(config.vgpu.monitoring.interval_seconds);
    monitoring::GPUMonitor monitor(node->backend(), interval, metrics, monitor_options(config, *node));
    if (once_) {
      const auto stats = monitor.sample();  // before samples_taken() below: arguments have no order
      std::cout << monitoring::render_prometheus(stats, {monitor.active_alerts(), monitor.samples_taken()});
      return 0;
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    if (!listen_.empty()) {
      monitor.start();
      monitoring::MetricsServer server(listen_, [&monitor](const monitoring::HttpRequest& req) {
        if (req.path == "/metrics") {
          const auto stats = monitor.get_current_stats();
          return monitoring::HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8",
                                          monitoring::render_prometheus(stats, {monitor.active_alerts(), monitor.samples_taken()})};
        }
        if (req.path == "/healthz") return monitoring::HttpResponse{200, "text/plain; charset=utf-8", "ok\n"};
        if (req.path == "/") {
          return monitoring::HttpResponse{200, "text/plain; charset=utf-8",
                                          "vgpu monitor: GET /metrics (Prometheus text), GET /healthz\n"};
        }
        return monitoring::HttpResponse{404, "application/json",
                                        fmt::format(R"({{"error": {{"code": 404, "type": "not_found", "message": "no route {}"}}}})", req.path)};
      });
      std::cout << fmt::format("serving http://{}/metrics ({} backend, {} GPUs, every {}s); Ctrl-C to stop\n",
                               server.address(), node->backend().name(), node->backend().gpu_count(), interval)
                << std::flush;
      while (!g_interrupted) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      server.stop();
      monitor.stop();
      return 0;
    }
    if (json_) {
      const int count = count_.value_or(1);
      for (int i = 0; (count == 0 || i < count) && !g_interrupted; ++i) {
        if (i > 0) std::this_thread::sleep_for(std::chrono::duration<double>(interval));
        std::cout << monitoring::stats_json(monitor.sample(), node->backend().gpus()).dump() << "\n" << std::flush;
      }
      return 0;
    }
    throw InvalidArgument("monitor: choose an output: --once (Prometheus text), --json, or --listen HOST:PORT; "
                          "for a live view use 'vgpu top'");
  }

 private:
  // The same three outputs, read from vgpud: its /v1/metrics and /v1/stats.
  int run_from_daemon(const runtime::DaemonClient& daemon, const config::Config& config) {
    if (once_) {
      std::cout << daemon.get_text("/v1/metrics");
      return 0;
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    const double interval = interval_.value_or(config.vgpu.monitoring.interval_seconds);
    if (!listen_.empty()) {
      monitoring::MetricsServer server(listen_, [&daemon](const monitoring::HttpRequest& req) {
        if (req.path == "/metrics") {
          try {
            return monitoring::HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", daemon.get_text("/v1/metrics")};
          } catch (const std::exception& e) {
            return monitoring::HttpResponse{503, "text/plain; charset=utf-8", fmt::format("vgpud: {}\n", e.what())};
          }
        }
        if (req.path == "/healthz") return monitoring::HttpResponse{200, "text/plain; charset=utf-8", "ok\n"};
        return monitoring::HttpResponse{404, "application/json",
                                        fmt::format(R"({{"error": {{"code": 404, "type": "not_found", "message": "no route {}"}}}})", req.path)};
      });
      std::cout << fmt::format("serving http://{}/metrics from vgpud at {}; Ctrl-C to stop\n", server.address(),
                               daemon.socket_path())
                << std::flush;
      while (!g_interrupted) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      server.stop();
      return 0;
    }
    if (json_) {
      const int count = count_.value_or(1);
      for (int i = 0; (count == 0 || i < count) && !g_interrupted; ++i) {
        if (i > 0) std::this_thread::sleep_for(std::chrono::duration<double>(interval));
        auto sample = nlohmann::json::parse(daemon.get_json("/v1/stats"));
        sample.erase("utilization_history");  // the same line as without a daemon
        std::cout << sample.dump() << "\n" << std::flush;
      }
      return 0;
    }
    throw InvalidArgument("monitor: choose an output: --once (Prometheus text), --json, or --listen HOST:PORT; "
                          "for a live view use 'vgpu top'");
  }

  const GlobalOptions& globals_;
  bool once_ = false;
  bool json_ = false;
  std::string listen_;
  std::optional<double> interval_;
  std::vector<std::string> metrics_;
  std::optional<int> count_;
};

// ---------------------------------------------------------------- vgpu top

std::string bar(double fraction, int width) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int full = static_cast<int>(fraction * width + 0.5);
  return std::string(static_cast<std::size_t>(full), '#') + std::string(static_cast<std::size_t>(width - full), '.');
}

std::string sparkline(const std::vector<double>& values, double max, std::size_t width) {
  static constexpr const char* kBlocks[] = {" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  std::string out;
  const std::size_t start = values.size() > width ? values.size() - width : 0;
  for (std::size_t i = start; i < values.size(); ++i) {
    const int level = max <= 0 ? 0 : static_cast<int>(std::clamp(values[i] / max, 0.0, 1.0) * 8.0 + 0.5);
    out += kBlocks[level];
  }
  return out;
}

// Raw, unechoed input and the alternate screen while alive; restores the terminal on exit.
class TerminalSession {
 public:
  TerminalSession() : tty_(::isatty(STDIN_FILENO) != 0 && ::isatty(STDOUT_FILENO) != 0) {
    if (!tty_) return;
    ::tcgetattr(STDIN_FILENO, &saved_);
    termios raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    ::tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    std::cout << "\x1b[?1049h\x1b[?25l" << std::flush;  // alternate screen, hide cursor
  }
  ~TerminalSession() {
    if (!tty_) return;
    std::cout << "\x1b[?25h\x1b[?1049l" << std::flush;
    ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  TerminalSession(const TerminalSession&) = delete;
  TerminalSession& operator=(const TerminalSession&) = delete;
  [[nodiscard]] bool tty() const noexcept { return tty_; }

  // Waits up to `timeout` for a key; returns it, or 0.
  [[nodiscard]] char key(std::chrono::milliseconds timeout) const {
    pollfd p{STDIN_FILENO, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return 0;
    char c = 0;
    return ::read(STDIN_FILENO, &c, 1) == 1 ? c : 0;
  }

 private:
  bool tty_;
  termios saved_{};
};

class TopCommand final : public Command {
 public:
  explicit TopCommand(const GlobalOptions& globals) : globals_(globals) {}

  void attach(CLI::App& parent) override {
    app_ = parent.add_subcommand("top", "Live view of the GPUs, virtual GPUs and processes (bars, sparklines of "
                                        "recent utilization); q quits");
    app_->add_option("--interval", interval_, "Seconds between refreshes (default 1)")->check(in_range(0.05, 60.0));
    app_->add_option("--iterations", iterations_, "Draw this many frames and exit (0: until q)");
  }

  int run() override {
    const auto config = globals_.load_config();
    // With a daemon, draw its monitor's samples (every user's slices); otherwise sample here.
    std::optional<runtime::DaemonClient> daemon;
    std::shared_ptr<runtime::Node> node;
    std::optional<monitoring::GPUMonitor> monitor;
    if (const auto socket = globals_.daemon_socket()) {
      daemon.emplace(*socket);
    } else {
      node = globals_.open_node(config);
      monitor.emplace(node->backend(), interval_, config::known_metrics(), monitor_options(config, *node));
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    TerminalSession terminal;
    const auto wait = std::chrono::milliseconds(static_cast<long>(interval_ * 1000));
    for (int frame = 0; !g_interrupted && (iterations_ == 0 || frame < iterations_); ++frame) {
      monitoring::StatsDocument doc;
      if (daemon) {
        doc = monitoring::parse_stats_json(daemon->get_json("/v1/stats"));
        doc.stats.backend += " (vgpud)";
      } else {
        doc.stats = monitor->sample();
        for (const auto& g : doc.stats.gpus) {
          doc.history[g.gpu_id] = monitor->history_values("utilization", std::chrono::minutes(5), g.gpu_id);
        }
      }
      std::cout << (terminal.tty() ? "\x1b[H\x1b[2J" : "") << render(doc) << std::flush;
      if (iterations_ != 0 && frame + 1 >= iterations_) break;
      if (terminal.tty()) {
        const char c = terminal.key(wait);
        if (c == 'q' || c == 'Q') break;
      } else {
        std::this_thread::sleep_for(wait);
      }
    }
    return 0;
  }

 private:
  static std::string render(const monitoring::StatsDocument& doc) {
    const monitoring::NodeStats& s = doc.stats;
    std::string out = fmt::format("vgpu top  {} backend, {} GPUs, {} vGPUs, {} processes  (q quits)\n\n", s.backend,
                                  s.gpus.size(), s.vgpus.size(), s.processes.size());
    for (const auto& g : s.gpus) {
      const auto& m = g.metrics;
      const double util = m.utilization_percent.value_or(0);
      const double mem = m.memory_used_bytes && m.memory_total_bytes && *m.memory_total_bytes > 0
                             ? static_cast<double>(*m.memory_used_bytes) / static_cast<double>(*m.memory_total_bytes)
                             : 0;
      const auto found = doc.history.find(g.gpu_id);
      const std::vector<double> history = found != doc.history.end() ? found->second : std::vector<double>{};
      out += fmt::format("GPU {:<2} {:<22} util [{}] {:>5}  mem [{}] {:>9}/{:<9} {:>6} {:>12}  {}\n", g.gpu_id,
                         g.name.substr(0, 22), bar(util / 100.0, 20), or_na(m.utilization_percent, "%"),
                         bar(mem, 14), m.memory_used_bytes ? format_size(*m.memory_used_bytes) : "n/a",
                         m.memory_total_bytes ? format_size(*m.memory_total_bytes) : "n/a",
                         or_na(m.temperature_celsius, "C"),
                         fmt::format("{}/{}", or_na(m.power_watts, "W"), or_na(m.power_limit_watts, "W")),
                         g.health == device::HealthState::healthy ? sparkline(history, 100.0, 30)
                                                                  : std::string(device::to_string(g.health)));
    }
    if (!s.vgpus.empty()) {
      Table vgpus({"VGPU", "GPU", "MEMORY LIMIT", "COMPUTE", "ACTIVE", "PROCS", "MEMORY USED"});
      for (const auto& v : s.vgpus) {
        vgpus.add({v.vgpu.name, std::to_string(v.vgpu.gpu),
                   v.vgpu.memory_limit ? format_size(*v.vgpu.memory_limit) : "-",
                   v.vgpu.compute_share ? fmt::format("{:.2f}", *v.vgpu.compute_share) : "-",
                   v.vgpu.active ? "yes" : "no", std::to_string(v.processes.size()),
                   v.memory_used ? format_size(*v.memory_used) : "-"});
      }
      out += "\n" + vgpus.render();
    }
    if (!s.processes.empty()) {
      Table procs({"PID", "GPU", "VGPU", "MEMORY", "COMMAND"});
      for (const auto& p : s.processes) {
        procs.add({std::to_string(p.pid), std::to_string(p.gpu), p.vgpu.empty() ? "-" : p.vgpu,
                   p.memory_bytes ? format_size(*p.memory_bytes) : "n/a", p.command});
      }
      out += "\n" + procs.render();
    }
    return out;
  }

  const GlobalOptions& globals_;
  double interval_ = 1.0;
  int iterations_ = 0;
};

}  // namespace

std::unique_ptr<Command> make_monitor_command(const GlobalOptions& globals) {
  return std::make_unique<MonitorCommand>(globals);
}
std::unique_ptr<Command> make_top_command(const GlobalOptions& globals) { return std::make_unique<TopCommand>(globals); }

}  // namespace apt::vgpu::cli
