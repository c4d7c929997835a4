// A small HTTP/1.1 server for the exporter (on cpp-httplib): GET requests on
// a loopback (or any) IPv4 address, one handler, two worker threads. Enough
// for Prometheus scrapes and curl; vgpud serves its /metrics with it too.
//
// The handler must not throw; a request that is not a GET gets 405, a
// malformed one 400, errors are a JSON envelope {"error": {...}}.
//
// Thread safety: construction starts the thread; stop() and the destructor
// may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace apt::vgpu::monitoring {

struct HttpRequest {
  std::string method;
  std::string path;   // without the query string
  std::string query;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class MetricsServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  // Listens on "HOST:PORT" (port 0 picks a free one). Throws InvalidArgument
  // for a malformed address and ProcessError when it cannot listen.
  MetricsServer(const std::string& address, Handler handler);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  [[nodiscard]] std::uint16_t port() const noexcept;
  [[nodiscard]] std::string address() const;
  void stop();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace apt::vgpu::monitoring
