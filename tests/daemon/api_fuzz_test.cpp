// A bounded random driver against vgpud's API (in the spirit of a fuzzer, but
// seeded and counted so it runs the same every time in CI): mutated valid
// bodies, wrong types, huge and non-finite numbers, truncated and random JSON,
// random methods and paths, and raw bytes that are not HTTP at all, from
// several threads at once. Afterwards the daemon must still serve, every
// answer must have been an HTTP response with a JSON error body for 4xx/5xx
// (and no 5xx at all), and the ledger must add up.
#include "support/daemon.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <thread>

namespace apt::vgpu {
namespace {

using nlohmann::json;

struct RawReply {
  int status = 0;  // 0: no HTTP status line came back
  std::string body;
};

RawReply send_raw(const std::string& socket_path, const std::string& request) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval guard{30, 0};  // a hang guard; the daemon answers or closes long before
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &guard, sizeof guard);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
  RawReply reply;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return reply;
  }
  (void)::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  ::shutdown(fd, SHUT_WR);
  std::string text;
  char buffer[4096];
  ssize_t n = 0;
  while ((n = ::recv(fd, buffer, sizeof buffer, 0)) > 0) text.append(buffer, static_cast<std::size_t>(n));
  ::close(fd);
  if (text.rfind("HTTP/1.1 ", 0) == 0 && text.size() >= 12) reply.status = std::atoi(text.c_str() + 9);
  if (const auto at = text.find("\r\n\r\n"); at != std::string::npos) reply.body = text.substr(at + 4);
  return reply;
}

std::string http(const std::string& method, const std::string& path, const std::string& body) {
  return method + " " + path + " HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

class Mutator {
 public:
  explicit Mutator(unsigned seed) : rng_(seed) {}

  std::string request(const std::vector<std::string>& known_ids) {
    switch (pick(10)) {
      case 0: return noise();
      case 1: return http(pick_of({"GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "BREW"}), path(known_ids), body());
      case 2: return "GET " + std::string(pick(2) ? 9000 : 200, 'a') + " HTTP/1.1\r\n\r\n";
      case 3: return "POST /v1/slices HTTP/1.1\r\nContent-Length: " + pick_of({"-1", "abc", "99999999999999999999", "5"}) +
                     "\r\n\r\n{\"gp";
      case 4: {
        const std::string id = known_ids.empty() ? "0123456789abcdef" : known_ids[pick(known_ids.size())];
        return http("POST", "/v1/slices/" + id + "/processes", pick(2) ? body() : R"({"pid": )" + number() + "}");
      }
      case 5: return http("GET", "/v1/events?since=" + number() + "&timeout=" + pick_of({"0", "-1", "nan", "1e9", "0.01"}) +
                                     "&type=" + pick_of({"slice", "x", "slice,,", ""}), "");
      default: return http("POST", "/v1/slices", body());
    }
  }

 private:
  std::size_t pick(std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_); }
  std::string pick_of(const std::vector<std::string>& v) { return v[pick(v.size())]; }

  std::string number() {
    return pick_of({"0", "-1", "1", "0.5", "1e308", "-1e308", "1e999", "NaN", "Infinity", "18446744073709551616",
                    "9223372036854775807", "4294967297", "\"1\"", "null", "true", "[]", "{}", "2.5e-320"});
  }
  std::string value() {
    switch (pick(6)) {
      case 0: return number();
      case 1: return "\"" + pick_of({"20GB", "16GiB", "0", "-5GB", "1.5", "nan", "inf", "intercept", "mps", "none",
                                      "8h", "0s", std::string(300, 'x'), "\\u0000", "é"}) + "\"";
      case 2: return "{\"uid\": " + number() + ", \"pid\": " + number() + "}";
      case 3: return "[" + number() + "]";
      default: return pick_of({"true", "false", "null"});
    }
  }
  std::string body() {
    static const std::vector<std::string> fields{"gpu", "memory", "compute", "priority", "isolation", "burst", "name",
                                                 "ttl", "ephemeral", "holder_pid", "on_behalf_of", "pid", "gpux", ""};
    if (pick(8) == 0) return noise_text();
    std::string b = "{";
    const std::size_t n = pick(5);
    for (std::size_t i = 0; i < n; ++i) {
      if (i > 0) b += ",";
      b += "\"" + fields[pick(fields.size())] + "\": " + value();
    }
    b += "}";
    if (pick(6) == 0) b = b.substr(0, pick(b.size() + 1));  // truncated
    return b;
  }
  std::string path(const std::vector<std::string>& ids) {
    const std::string id = ids.empty() || pick(3) == 0 ? pick_of({"x", "0123456789abcdeg", "..", "%00", ""}) : ids[pick(ids.size())];
    return pick_of({"/v1", "/v1/node", "/v1/health", "/v1/slices", "/v1/slices/" + id, "/v1/slices/" + id + "/processes",
                    "/v1/events", "/v1/whoami", "/", "/v2", "//v1//slices", "/v1/slices?all=maybe", "/v1/slices?all=1"});
  }
  std::string noise_text() {
    std::string s(pick(200), '\0');
    for (char& c : s) c = static_cast<char>(pick(256));
    return s;
  }
  std::string noise() { return pick(2) ? noise_text() : "GET /v1 HTTP/1.1\r\n" + noise_text() + "\r\n\r\n"; }

  std::mt19937 rng_;
};

TEST(VgpudFuzz, RandomAndMutatedRequestsNeverCrashHangOrCorruptTheLedger) {
  testing::Daemon d(R"(vgpu:
  max_virtual_gpus: 4096
  simulated_node: {gpus: 2, memory: 80GB}
daemon:
  request_timeout: 1s
  max_connections: 256
)");
  d.start();
  constexpr int kThreads = 4;
  constexpr int kRequestsPerThread = 2500;  // 10,000 in all
  std::mutex mutex;
  std::vector<std::string> ids;
  std::map<int, int> statuses;
  std::vector<std::string> problems;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Mutator m(static_cast<unsigned>(1234 + t));
      for (int i = 0; i < kRequestsPerThread; ++i) {
        std::vector<std::string> known;
        {
          std::lock_guard lock(mutex);
          known = ids;
        }
        const std::string request = m.request(known);
        const RawReply reply = send_raw(d.socket(), request);
        std::lock_guard lock(mutex);
        ++statuses[reply.status];
        if (reply.status >= 500) problems.push_back("5xx for: " + request.substr(0, 200) + " -> " + reply.body);
        if (reply.status >= 400) {
          const auto j = json::parse(reply.body, nullptr, false);
          if (j.is_discarded() || !j.contains("error") || !j["error"].contains("message")) {
            problems.push_back("no JSON error for: " + request.substr(0, 200) + " -> " + reply.body.substr(0, 200));
          }
        }
        if (reply.status == 201) ids.push_back(json::parse(reply.body)["id"]);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& p : problems) ADD_FAILURE() << p;
  // Still serving, and the books balance.
  EXPECT_EQ(d.curl("GET", "/v1/health").first, 200) << d.log();
  const auto slices = d.client().list(true);
  std::map<std::uint32_t, std::uint64_t> memory;
  for (const auto& s : slices) memory[s.gpu] += s.memory_limit.value_or(0);
  const auto node = json::parse(d.client().get_json("/v1/node"));
  for (const auto& g : node["gpus"]) {
    EXPECT_EQ(g["memory_leased_bytes"].get<std::uint64_t>(), memory[g["index"].get<std::uint32_t>()]);
  }
  std::string summary;
  for (const auto& [status, count] : statuses) summary += std::to_string(status) + ":" + std::to_string(count) + " ";
  std::cout << "[ fuzz     ] " << kThreads * kRequestsPerThread << " requests; statuses " << summary << "\n";
  EXPECT_GT(statuses[400], 100) << summary;
  EXPECT_GT(statuses[201], 10) << summary << " (some mutations must still be valid)";
  EXPECT_EQ(d.stop(), 0) << d.log();
}

}  // namespace
}  // namespace apt::vgpu
