// vgpud under load: create+delete round trips over the unix socket with 1 and
// 64 concurrent clients (p50/p99), against two baselines measured in the same
// run: GET /v1/health over the same socket (the transport floor) and an
// in-process NodeLedger acquire+release (the embedded mode). Then the daemon's
// RSS and CPU while it holds 1,000 slices with the monitor sampling every 1 s.
//
//   build/release/bench/daemon_bench [--synchronous full|normal]   (state in a new folder under /tmp)
#include <apt/vgpu/runtime/daemon_client.hpp>
#include <apt/vgpu/runtime/node_ledger.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using namespace apt::vgpu;

struct Percentiles {
  double p50_us = 0;
  double p99_us = 0;
  double ops_per_s = 0;
};

Percentiles summarize(std::vector<double> us, double wall_s) {
  std::sort(us.begin(), us.end());
  auto at = [&](double q) { return us[std::min(us.size() - 1, static_cast<std::size_t>(q * static_cast<double>(us.size())))]; };
  return Percentiles{at(0.50), at(0.99), static_cast<double>(us.size()) / wall_s};
}

template <class Op>
Percentiles measure(int clients, int ops_per_client, Op op) {
  std::vector<std::vector<double>> per(static_cast<std::size_t>(clients));
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto& mine = per[static_cast<std::size_t>(c)];
      mine.reserve(static_cast<std::size_t>(ops_per_client));
      for (int i = 0; i < ops_per_client; ++i) {
        const auto t0 = Clock::now();
        op();
        mine.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      }
    });
  }
  for (auto& t : threads) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto& v : per) all.insert(all.end(), v.begin(), v.end());
  return summarize(std::move(all), wall);
}

long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  std::getline(in, text);
  std::istringstream rest(text.substr(text.rfind(')') + 2));
  std::string field;
  for (int i = 3; i <= 13; ++i) rest >> field;
  unsigned long utime = 0, stime = 0;
  rest >> utime >> stime;
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  // --synchronous normal: the ledger without an fsync per commit (daemon.synchronous).
  const std::string synchronous = argc > 2 && std::string(argv[1]) == "--synchronous" ? argv[2] : "full";
  char tmpl[] = "/tmp/vgpud-bench-XXXXXX";
  const fs::path dir = ::mkdtemp(tmpl);
  std::ofstream(dir / "vgpud.yaml") << "vgpu:\n  max_virtual_gpus: 4096\n  simulated_node: {gpus: 8, memory: 80GB}\n"
                                       "  monitoring: {interval: 1.0}\ndaemon:\n  max_connections: 256\n  synchronous: "
                                    << synchronous << "\n";
  const std::string socket = (dir / "vgpud.sock").string();
  const pid_t daemon = ::fork();
  if (daemon == 0) {
    const std::string log = (dir / "vgpud.log").string();
    (void)std::freopen(log.c_str(), "w", stderr);
    (void)std::freopen(log.c_str(), "a", stdout);  // never hold the bench's stdout
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::execl(VGPUD_PATH, "vgpud", "--config", (dir / "vgpud.yaml").c_str(), "--socket", socket.c_str(), "--state-dir",
            (dir / "state").c_str(), "--backend", "sim", "--metrics-listen", "off", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const runtime::DaemonClient client(socket);
  for (int i = 0; i < 500; ++i) {  // wait for the socket (a bench may poll; tests may not)
    try {
      (void)client.get_json("/v1/health");
      break;
    } catch (const std::exception&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  runtime::SliceSpec spec;
  spec.memory_limit = 500'000'000ULL;  // 1,000 of them fit the 8 x 80 GB node
  spec.compute_share = 0.005;
  auto create_delete = [&] { client.remove(client.create(spec).id); };
  auto health = [&] { (void)client.get_json("/v1/health"); };
  runtime::NodeLedger ledger(std::vector<std::uint64_t>(8, 80'000'000'000ULL), runtime::LedgerOptions{4096, 1.0});
  auto embedded = [&] { (void)ledger.acquire(runtime::SliceRequest{0, 500'000'000ULL, 0.005, "bench"}); };

  std::printf("ledger.db synchronous=%s\n%-44s %10s %10s %12s\n", synchronous.c_str(), "operation", "p50 (us)",
              "p99 (us)", "ops/s");
  auto row = [](const char* name, const Percentiles& p) {
    std::printf("%-44s %10.1f %10.1f %12.0f\n", name, p.p50_us, p.p99_us, p.ops_per_s);
  };
  (void)measure(4, 50, create_delete);  // warm up
  const auto base_embedded = measure(1, 20000, embedded);
  const auto base_health_1 = measure(1, 2000, health);
  const auto base_health_64 = measure(64, 100, health);
  const auto cd_1 = measure(1, 1000, create_delete);
  const auto cd_64 = measure(64, 40, create_delete);
  row("embedded NodeLedger acquire+release", base_embedded);
  row("GET /v1/health, 1 client", base_health_1);
  row("GET /v1/health, 64 clients", base_health_64);
  row("create+delete over the socket, 1 client", cd_1);
  row("create+delete over the socket, 64 clients", cd_64);
  std::printf("\nratios: create+delete p50 / health p50 = %.1f (1 client), %.1f (64 clients); "
              "create+delete p50 / embedded p50 = %.0f\n",
              cd_1.p50_us / base_health_1.p50_us, cd_64.p50_us / base_health_64.p50_us, cd_1.p50_us / base_embedded.p50_us);

  // 1,000 slices held, monitor at 1 s: memory and CPU of the idle daemon over 10 s.
  const long rss_before = rss_kib(daemon);
  for (int i = 0; i < 1000; ++i) (void)client.create(spec);
  const long rss_after = rss_kib(daemon);
  const double cpu0 = cpu_seconds(daemon);
  std::this_thread::sleep_for(std::chrono::seconds(10));
  const double cpu1 = cpu_seconds(daemon);
  const auto list_1000 = measure(1, 20, [&] { (void)client.list(); });
  std::printf("\nRSS: %ld KiB with 0 slices, %ld KiB with 1,000 slices; idle CPU with 1,000 slices and the "
              "monitor at 1 s: %.2f%% of one core over 10 s\n",
              rss_before, rss_after, 100.0 * (cpu1 - cpu0) / 10.0);
  row("GET /v1/slices with 1,000 slices", list_1000);
  ::kill(daemon, SIGTERM);
  int status = 0;
  ::waitpid(daemon, &status, 0);
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
