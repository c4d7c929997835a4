#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/monitoring/metrics_server.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace apt::vgpu::monitoring {
namespace {

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
  }
}

void write_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;  // the client went away
    }
    done += static_cast<std::size_t>(n);
  }
}

HttpResponse error_response(int status, const std::string& type, const std::string& message) {
  return HttpResponse{status, "application/json",
                      fmt::format(R"({{"error": {{"code": {}, "type": "{}", "message": "{}"}}}})", status, type, message)};
}

}  // namespace

struct MetricsServer::Impl {
  int fd = -1;
  std::string host;
  std::uint16_t port = 0;
  Handler handler;
  std::atomic<bool> stopping{false};
  std::thread thread;

  void serve() {
    while (!stopping.load()) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      const int client = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      handle(client);
      ::close(client);
    }
  }

  void handle(int client) {
    std::string request;
    char buffer[4096];
    while (request.find("\r\n\r\n") == std::string::npos && request.size() < 16384) {
      pollfd p{client, POLLIN, 0};
      if (::poll(&p, 1, 2000) <= 0) return;  // slow or silent client
      const ssize_t n = ::recv(client, buffer, sizeof buffer, 0);
      if (n <= 0) return;
      request.append(buffer, static_cast<std::size_t>(n));
    }
    HttpResponse response;
    const auto line_end = request.find("\r\n");
    const std::string line = request.substr(0, line_end);
    const auto first_space = line.find(' ');
    const auto second_space = first_space == std::string::npos ? std::string::npos : line.find(' ', first_space + 1);
    if (line_end == std::string::npos || second_space == std::string::npos) {
      response = error_response(400, "bad_request", "malformed request line");
    } else {
      HttpRequest req;
      req.method = line.substr(0, first_space);
      std::string target = line.substr(first_space + 1, second_space - first_space - 1);
      if (const auto q = target.find('?'); q != std::string::npos) {
        req.query = target.substr(q + 1);
        target.resize(q);
      }
      req.path = target;
      if (req.method != "GET" && req.method != "HEAD") {
        response = error_response(405, "method_not_allowed", "only GET is served");
      } else {
        try {
          response = handler(req);
        } catch (const std::exception& e) {  // handlers should not throw; do not let one kill the server
          response = error_response(500, "internal", e.what());
        }
        if (req.method == "HEAD") response.body.clear();
      }
    }
    write_all(client, fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                  response.status, reason(response.status), response.content_type, response.body.size()));
    write_all(client, response.body);
  }
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
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  const std::string host = impl_->host == "localhost" ? "127.0.0.1" : impl_->host;
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    throw InvalidArgument(fmt::format("--listen: '{}' is not an IPv4 address; use e.g. 127.0.0.1", impl_->host));
  }
  impl_->fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(impl_->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(impl_->fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(impl_->fd, 64) != 0) {
    const std::string why = std::strerror(errno);
    ::close(impl_->fd);
    throw ProcessError(fmt::format("cannot listen on {}: {}", address, why));
  }
  socklen_t len = sizeof addr;
  ::getsockname(impl_->fd, reinterpret_cast<sockaddr*>(&addr), &len);
  impl_->port = ntohs(addr.sin_port);
  impl_->handler = std::move(handler);
  impl_->thread = std::thread([this] { impl_->serve(); });
}

MetricsServer::~MetricsServer() { stop(); }

void MetricsServer::stop() {
  if (impl_->stopping.exchange(true)) return;
  if (impl_->thread.joinable()) impl_->thread.join();
  ::close(impl_->fd);
}

std::uint16_t MetricsServer::port() const noexcept { return impl_->port; }
std::string MetricsServer::address() const { return fmt::format("{}:{}", impl_->host, impl_->port); }

}  // namespace apt::vgpu::monitoring
