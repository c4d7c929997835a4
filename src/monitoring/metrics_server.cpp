#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/monitoring/metrics_server.hpp>

#include <arpa/inet.h>
#include <charconv>
#include <fmt/format.h>
#include <httplib.h>
#include <thread>

namespace apt::vgpu::monitoring {
namespace {

std::string error_body(int status, std::string_view code, const std::string& message) {
  return fmt::format(R"({{"error": {{"code": "{}", "status": {}, "message": "{}"}}}})", code, status, message);
}

}  // namespace

struct MetricsServer::Impl {
  httplib::Server server;
  std::string host;
  std::uint16_t port = 0;
  std::thread thread;
  bool stopped = false;
};

MetricsServer::MetricsServer(const std::string& address, Handler handler) : impl_(std::make_unique<Impl>()) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    throw InvalidArgument(fmt::format("--listen: '{}' is not HOST:PORT, e.g. 127.0.0.1:9400", address));
  }
  impl_->host = address.substr(0, colon);
  const std::string port_text = address.substr(colon + 1);
  unsigned port = 0;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || ptr != port_text.data() + port_text.size() || port > 65535) {
    throw InvalidArgument(fmt::format("--listen: port '{}' is not a number in 0..65535", port_text));
  }
  const std::string host = impl_->host == "localhost" ? "127.0.0.1" : impl_->host;
  in_addr parsed{};
  if (::inet_pton(AF_INET, host.c_str(), &parsed) != 1) {
    throw InvalidArgument(fmt::format("--listen: '{}' is not an IPv4 address; use e.g. 127.0.0.1", impl_->host));
  }
  httplib::Server& s = impl_->server;
  // Scrapes are small and quick: a couple of threads, short timeouts, no keep-alive games.
  s.new_task_queue = [] { return new httplib::ThreadPool(2); };
  s.set_read_timeout(5, 0);
  s.set_write_timeout(5, 0);
  s.set_payload_max_length(64 * 1024);
  s.set_keep_alive_max_count(1);  // one request per connection: a scraper never holds a worker
  s.Get(".*", [handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    HttpRequest request{req.method, req.path, {}};
    if (const auto q = req.target.find('?'); q != std::string::npos) request.query = req.target.substr(q + 1);
    HttpResponse response;
    try {
      response = handler(request);
    } catch (const std::exception& e) {
      response = HttpResponse{500, "application/json", error_body(500, "internal", e.what())};
    }
    res.status = response.status;
    res.set_content(response.body, response.content_type);
  });
  auto not_allowed = [](const httplib::Request& req, httplib::Response& res) {
    res.status = 405;
    res.set_header("Allow", "GET");
    res.set_content(error_body(405, "method_not_allowed", req.method + " is not allowed; use GET"), "application/json");
  };
  s.Post(".*", not_allowed);
  s.Put(".*", not_allowed);
  s.Delete(".*", not_allowed);
  s.Patch(".*", not_allowed);
  s.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) res.set_content(error_body(res.status, "bad_request", "malformed request"), "application/json");
  });
  const int bound = port == 0 ? s.bind_to_any_port(host) : (s.bind_to_port(host, static_cast<int>(port)) ? static_cast<int>(port) : -1);
  if (bound <= 0) throw ProcessError(fmt::format("cannot listen on {}: the address is in use or not ours", address));
  impl_->port = static_cast<std::uint16_t>(bound);
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
  // The socket listens already (bound above); wait until the accept loop runs,
  // because httplib's stop() does nothing before that and join() would hang.
  while (!impl_->server.is_running()) std::this_thread::yield();
}

MetricsServer::~MetricsServer() { stop(); }

void MetricsServer::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::uint16_t MetricsServer::port() const noexcept { return impl_->port; }
std::string MetricsServer::address() const { return fmt::format("{}:{}", impl_->host, impl_->port); }

}  // namespace apt::vgpu::monitoring
