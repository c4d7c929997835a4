#include "api_server.hpp"

#include "api_error.hpp"

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <filesystem>
#include <fmt/format.h>
#include <grp.h>
#include <httplib.h>
#include <poll.h>
#include <regex>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

namespace apt::vgpu::daemon {
namespace {

using Clock = std::chrono::steady_clock;

// What the kernel said about the connection this worker thread is serving.
struct ConnectionContext {
  PeerCredentials peer;
  Clock::time_point started;
};
thread_local ConnectionContext t_connection;
thread_local bool t_overloaded = false;

void send_raw(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

std::string raw_error(int status, const char* reason, const ApiError& error) {
  const std::string body = error.to_json().dump();
  return fmt::format("HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                     status, reason, body.size(), body);
}

// One accepted unix-socket connection as httplib reads and writes it. Reading
// the request has one deadline in all, so a client that trickles bytes is cut
// off as surely as one that sends nothing.
class SocketStream final : public httplib::Stream {
 public:
  SocketStream(int fd, Clock::time_point read_deadline, int write_timeout_ms)
      : fd_(fd), read_deadline_(read_deadline), write_timeout_ms_(write_timeout_ms) {}

  bool is_readable() const override {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(read_deadline_ - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    int rc = 0;
    do {
      rc = ::poll(&p, 1, static_cast<int>(left));
    } while (rc < 0 && errno == EINTR);
    return rc > 0;
  }
  bool is_writable() const override {
    pollfd p{fd_, POLLOUT, 0};
    int rc = 0;
    do {
      rc = ::poll(&p, 1, write_timeout_ms_);
    } while (rc < 0 && errno == EINTR);
    return rc > 0 && (p.revents & (POLLERR | POLLHUP)) == 0;
  }
  ssize_t read(char* ptr, size_t size) override {
    if (!is_readable()) return -1;
    ssize_t n = 0;
    do {
      n = ::recv(fd_, ptr, size, 0);
    } while (n < 0 && errno == EINTR);
    return n;
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    ssize_t n = 0;
    do {
      n = ::send(fd_, ptr, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip.clear();
    port = static_cast<int>(t_connection.peer.pid);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip.clear();
    port = 0;
  }
  int socket() const override { return fd_; }

 private:
  int fd_;
  Clock::time_point read_deadline_;
  int write_timeout_ms_;
};

// A fixed pool whose queue is watched: a connection accepted while more than
// `max_waiting` wait is answered 429 at once instead of queueing without bound.
class BoundedPool final : public httplib::TaskQueue {
 public:
  BoundedPool(std::size_t threads, std::size_t max_waiting) : max_waiting_(max_waiting) {
    for (std::size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard lock(mutex_);
      const bool overloaded = jobs_.size() >= max_waiting_;
      jobs_.push_back([fn = std::move(fn), overloaded] {
        t_overloaded = overloaded;
        fn();
        t_overloaded = false;
      });
    }
    ready_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (auto& w : workers_) w.join();
  }

 private:
  void work() {
    while (true) {
      std::function<void()> job;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping, and everything queued has run
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }
  std::size_t max_waiting_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;  // guarded by mutex_
  bool stopping_ = false;                    // guarded by mutex_
  std::vector<std::thread> workers_;
};

class UnixServer final : public httplib::Server {
 public:
  UnixServer(std::chrono::milliseconds request_timeout) : request_timeout_(request_timeout) {}
  void adopt_listener(int fd) { svr_sock_ = fd; }

 private:
  bool process_and_close_socket(socket_t sock) override {
    (void)::fcntl(sock, F_SETFD, FD_CLOEXEC);  // httplib accepts without CLOEXEC; our children must not inherit it
    t_connection = ConnectionContext{};
    t_connection.started = Clock::now();
    bool ok = false;
    if (t_overloaded) {
      send_raw(sock, raw_error(429, "Too Many Requests",
                               ApiError(ErrorCode::too_many_requests,
                                        "vgpud is serving too many connections (daemon.max_connections); retry shortly")));
    } else if (auto peer = peer_credentials(sock)) {
      t_connection.peer = *peer;
      SocketStream stream(sock, t_connection.started + request_timeout_, 5000);
      bool closed = false;
      ok = process_request(stream, /*close_connection=*/true, closed, nullptr);
    } else {
      send_raw(sock, raw_error(500, "Internal Server Error",
                               ApiError(ErrorCode::internal, "cannot read the connection's peer credentials")));
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ok;
  }
  std::chrono::milliseconds request_timeout_;
};

void reply(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void reply_error(httplib::Response& res, const ApiError& e) { reply(res, http_status(e.code()), e.to_json()); }

bool is_slice_id(const std::string& id) {
  return id.size() == 16 && std::all_of(id.begin(), id.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

const std::regex kKnownPaths(R"(^/v1(/(health|whoami|node|events|metrics|stats|slices)|/slices/[^/]+(/processes)?)?$)");

}  // namespace

struct ApiServer::Impl {
  SliceRegistry& registry;
  EventLog& events;
  config::DaemonSection options;
  UnixServer server;
  std::thread thread;
  int lock_fd = -1;
  std::atomic<std::uint32_t> subscribers{0};
  bool running = false;
  MonitorViews monitor;

  Impl(SliceRegistry& r, EventLog& e, const config::DaemonSection& o, MonitorViews m)
      : registry(r), events(e), options(o), server(o.request_timeout), monitor(std::move(m)) {}

  // Runs a handler with the caller identified and every error rendered as JSON.
  template <class F>
  httplib::Server::Handler guarded(F body) {
    return [this, body](const httplib::Request& req, httplib::Response& res) {
      try {
        const Caller caller = registry.identify(t_connection.peer);
        body(req, res, caller);
      } catch (const ApiError& e) {
        reply_error(res, e);
      } catch (const Error& e) {
        const ErrorCode code = e.kind() == ErrorKind::capacity                                   ? ErrorCode::insufficient_capacity
                               : e.kind() == ErrorKind::invalid_argument || e.kind() == ErrorKind::config ? ErrorCode::invalid_argument
                                                                                                 : ErrorCode::internal;
        reply_error(res, ApiError(code, e.what()));
      } catch (const std::exception& e) {
        log::error(fmt::format("{} {}: {}", req.method, req.path, e.what()));
        reply_error(res, ApiError(ErrorCode::internal, fmt::format("internal error: {}", e.what())));
      }
    };
  }

  static std::string slice_id(const httplib::Request& req) {
    const std::string id = req.matches[1];
    if (!is_slice_id(id)) {
      throw ApiError(ErrorCode::not_found, fmt::format("no slice '{}': slice ids are 16 hex digits (see GET /v1/slices)", id), "id");
    }
    return id;
  }

  void routes() {
    server.Get("/v1", guarded([this](const httplib::Request&, httplib::Response& res, const Caller&) {
      reply(res, 200,
            {{"api_version", "1"},
             {"api_extensions", {"slices", "processes", "events_long_poll", "on_behalf_of", "per_user_limits"}},
             {"server_version", "vgpud 0.1.0"},
             {"node_id", registry.node_id()},
             {"instance_id", registry.instance_id()},
             {"boot_id", boot_id()}});
    }));
    server.Get("/v1/health", guarded([this](const httplib::Request&, httplib::Response& res, const Caller&) {
      reply(res, 200, registry.health_json());
    }));
    server.Get("/v1/whoami", guarded([](const httplib::Request&, httplib::Response& res, const Caller& c) {
      reply(res, 200,
            {{"uid", c.peer.uid}, {"gid", c.peer.gid}, {"pid", c.peer.pid}, {"user", c.user}, {"groups", c.peer.groups},
             {"admin", c.admin}});
    }));
    server.Get("/v1/node", guarded([this](const httplib::Request&, httplib::Response& res, const Caller&) {
      reply(res, 200, registry.node_json());
    }));
    server.Get("/v1/slices", guarded([this](const httplib::Request& req, httplib::Response& res, const Caller& c) {
      const std::string all = req.get_param_value("all");
      if (!all.empty() && all != "0" && all != "1" && all != "true" && all != "false") {
        throw ApiError(ErrorCode::invalid_argument, fmt::format("all: '{}' is not a boolean; use all=1", all), "all");
      }
      reply(res, 200, registry.list(c, all == "1" || all == "true"));
    }));
    server.Post("/v1/slices", guarded([this](const httplib::Request& req, httplib::Response& res, const Caller& c) {
      const SliceRequest request = parse_slice_request(parse_body(req.body));
      nlohmann::json slice = registry.create(c, request);
      res.set_header("Location", "/v1/slices/" + slice["id"].get<std::string>());
      reply(res, 201, slice);
    }));
    server.Get(R"(/v1/slices/([^/]+))", guarded([this](const httplib::Request& req, httplib::Response& res, const Caller& c) {
      reply(res, 200, registry.get(c, slice_id(req)));
    }));
    server.Delete(R"(/v1/slices/([^/]+))", guarded([this](const httplib::Request& req, httplib::Response& res, const Caller& c) {
      registry.remove(c, slice_id(req));
      res.status = 204;
    }));
    server.Post(R"(/v1/slices/([^/]+)/processes)",
                guarded([this](const httplib::Request& req, httplib::Response& res, const Caller& c) {
                  const std::string id = slice_id(req);
                  reply(res, 200, registry.attach(c, id, parse_attach_request(parse_body(req.body))));
                }));
    server.Get("/v1/metrics", guarded([this](const httplib::Request&, httplib::Response& res, const Caller&) {
      if (!monitor.metrics) throw ApiError(ErrorCode::unavailable, "monitoring is off on this daemon (vgpu.monitoring.enabled)");
      res.status = 200;
      res.set_content(monitor.metrics(), "text/plain; version=0.0.4; charset=utf-8");
    }));
    server.Get("/v1/stats", guarded([this](const httplib::Request&, httplib::Response& res, const Caller&) {
      if (!monitor.stats) throw ApiError(ErrorCode::unavailable, "monitoring is off on this daemon (vgpu.monitoring.enabled)");
      res.status = 200;
      res.set_content(monitor.stats(), "application/json");
    }));
    server.Get("/v1/events", guarded([this](const httplib::Request& req, httplib::Response& res, const Caller& c) {
      events_handler(req, res, c);
    }));
    // Everything else: 405 for a known path with another method, else 404.
    auto fallback = guarded([](const httplib::Request& req, httplib::Response&, const Caller&) {
      if (std::regex_match(req.path, kKnownPaths)) {
        throw ApiError(ErrorCode::method_not_allowed, fmt::format("{} is not allowed on {}", req.method, req.path));
      }
      throw ApiError(ErrorCode::not_found, fmt::format("no route {} {}; the API is under /v1 (see docs/daemon.md)", req.method, req.path));
    });
    server.Get(".*", fallback);
    server.Post(".*", fallback);
    server.Put(".*", fallback);
    server.Patch(".*", fallback);
    server.Delete(".*", fallback);
    server.Options(".*", fallback);
    // Errors httplib raises itself (malformed request line, body too large).
    server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      const ErrorCode code = res.status == 413 ? ErrorCode::payload_too_large
                             : res.status == 404 ? ErrorCode::not_found
                                                 : ErrorCode::invalid_argument;
      const std::string message = res.status == 413 ? "the request body is larger than daemon.max_body"
                                                    : fmt::format("malformed request (HTTP {}): check the request line and headers; a POST needs a JSON body with Content-Length", res.status);
      const int status = res.status;
      reply_error(res, ApiError(code, message));
      res.status = status;
    });
    server.set_logger([](const httplib::Request& req, const httplib::Response& res) {
      if (!log::enabled(log::Level::info)) return;
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t_connection.started).count();
      log::info(fmt::format("{} {} {} uid={} pid={} {:.2f}ms", req.method, req.path, res.status, t_connection.peer.uid,
                            t_connection.peer.pid, ms));
    });
  }

  void events_handler(const httplib::Request& req, httplib::Response& res, const Caller& caller) {
    std::uint64_t since = events.last_seq();
    if (req.has_param("since")) {
      const std::string text = req.get_param_value("since");
      char* end = nullptr;
      errno = 0;
      const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0' || errno != 0 || text[0] == '-') {
        throw ApiError(ErrorCode::invalid_argument, fmt::format("since: '{}' is not a sequence number", text), "since");
      }
      since = v;
    }
    double timeout_s = 30;
    if (req.has_param("timeout")) {
      const std::string text = req.get_param_value("timeout");
      char* end = nullptr;
      timeout_s = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || !std::isfinite(timeout_s) || timeout_s < 0 || timeout_s > 300) {
        throw ApiError(ErrorCode::invalid_argument, fmt::format("timeout: '{}' is not seconds in 0..300", text), "timeout");
      }
    }
    std::vector<std::string> types;
    if (req.has_param("type")) {
      std::string list = req.get_param_value("type");
      std::size_t start = 0;
      while (start <= list.size()) {
        const auto comma = list.find(',', start);
        const std::string t = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (t != "slice" && t != "process" && t != "alert" && t != "daemon") {
          throw ApiError(ErrorCode::invalid_argument, fmt::format("type: '{}' is not one of slice, process, alert, daemon", t),
                         "type");
        }
        types.push_back(t);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    }
    if (subscribers.fetch_add(1) >= options.max_event_subscribers) {
      subscribers.fetch_sub(1);
      throw ApiError(ErrorCode::too_many_requests,
                     fmt::format("{} event subscribers already wait (daemon.max_event_subscribers); retry later",
                                 options.max_event_subscribers));
    }
    struct Leave {
      std::atomic<std::uint32_t>& n;
      ~Leave() { n.fetch_sub(1); }
    } leave{subscribers};
    const auto page = events.wait(since, std::chrono::milliseconds(static_cast<long long>(timeout_s * 1000)),
                                  [&](const Event& e) {
                                    return SliceRegistry::visible(caller, e) &&
                                           (types.empty() || std::find(types.begin(), types.end(), e.type) != types.end());
                                  });
    if (page.gone) {
      throw ApiError(ErrorCode::gone,
                     fmt::format("since: events after {} are no longer kept (the last {} are); re-read state and "
                                 "resume from 'next'",
                                 since, EventLog::kCapacity),
                     "since", {{"next", events.last_seq()}});
    }
    nlohmann::json list = nlohmann::json::array();
    for (const Event& e : page.events) list.push_back(e.to_json());
    reply(res, 200, {{"instance_id", registry.instance_id()}, {"events", list}, {"next", page.next}});
  }

  void bind_socket() {
    namespace fs = std::filesystem;
    const std::string& path = options.socket;
    if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
      throw ProcessError(fmt::format("--socket: '{}' is {} bytes; a unix socket path must be under {}", path, path.size(),
                                     sizeof(sockaddr_un{}.sun_path)));
    }
    const fs::path parent = fs::path(path).parent_path();
    std::error_code ec;
    if (!parent.empty()) fs::create_directories(parent, ec);
    // One daemon per socket for life: the lock dies with the process, so a crash never blocks a restart.
    const std::string lock_path = path + ".lock";
    lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0) throw ProcessError(fmt::format("cannot open {}: {}", lock_path, std::strerror(errno)));
    if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
      throw ProcessError(fmt::format("another vgpud is running on {} (it holds {}); stop it first", path, lock_path));
    }
    int fd = -1;
    const char* listen_pid = std::getenv("LISTEN_PID");
    const char* listen_fds = std::getenv("LISTEN_FDS");
    if (listen_pid != nullptr && listen_fds != nullptr && std::atol(listen_pid) == ::getpid() && std::atoi(listen_fds) >= 1) {
      fd = 3;  // systemd socket activation (vgpud.socket)
      (void)::fcntl(fd, F_SETFD, FD_CLOEXEC);
      log::notice("using the socket passed by systemd (fd 3)");
    } else {
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
      struct stat st {};
      if (::lstat(path.c_str(), &st) == 0) {
        // Only a dead socket is removed: if something answers, it is another daemon.
        const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const bool alive = ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
        ::close(probe);
        if (alive) throw ProcessError(fmt::format("something already serves {}; stop it or pick another --socket", path));
        if (!S_ISSOCK(st.st_mode)) throw ProcessError(fmt::format("{} exists and is not a socket; remove it or pick another --socket", path));
        ::unlink(path.c_str());
      }
      fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        const std::string why = std::strerror(errno);
        if (fd >= 0) ::close(fd);
        throw ProcessError(fmt::format("cannot bind {}: {}", path, why));
      }
      // Mode (and group) before listen(): nobody can connect before they are right.
      if (::chmod(path.c_str(), static_cast<mode_t>(options.socket_mode)) != 0) {
        throw ProcessError(fmt::format("cannot chmod {}: {}", path, std::strerror(errno)));
      }
      if (!options.socket_group.empty()) {
        const auto gid = group_id(options.socket_group);
        if (!gid) throw ProcessError(fmt::format("daemon.socket_group: no group '{}' on this system", options.socket_group));
        if (::chown(path.c_str(), static_cast<uid_t>(-1), *gid) != 0) {
          throw ProcessError(fmt::format("cannot chgrp {} to {}: {}", path, options.socket_group, std::strerror(errno)));
        }
      }
      if (::listen(fd, SOMAXCONN) != 0) throw ProcessError(fmt::format("cannot listen on {}: {}", path, std::strerror(errno)));
    }
    server.adopt_listener(fd);
  }
};

ApiServer::ApiServer(SliceRegistry& registry, EventLog& events, const config::DaemonSection& options,
                     MonitorViews monitor)
    : impl_(std::make_unique<Impl>(registry, events, options, std::move(monitor))) {
  // Workers: enough for every allowed long poll plus a full complement for short requests.
  const std::size_t threads = std::max<std::size_t>(8, std::thread::hardware_concurrency() * 2) + options.max_event_subscribers;
  const std::size_t max_waiting = options.max_connections;
  impl_->server.new_task_queue = [threads, max_waiting] { return new BoundedPool(threads, max_waiting); };
  const auto timeout = options.request_timeout;
  impl_->server.set_read_timeout(static_cast<time_t>(timeout.count() / 1000), static_cast<time_t>((timeout.count() % 1000) * 1000));
  impl_->server.set_write_timeout(5, 0);
  impl_->server.set_payload_max_length(options.max_body);
  impl_->routes();
}

ApiServer::~ApiServer() { stop(); }

void ApiServer::start() {
  impl_->bind_socket();
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
  while (!impl_->server.is_running()) std::this_thread::yield();
  impl_->running = true;
}

void ApiServer::stop() {
  if (!impl_->running) return;
  impl_->running = false;
  impl_->events.close();  // long polls return now
  impl_->server.stop();   // stops accepting; the pool finishes what it has
  if (impl_->thread.joinable()) impl_->thread.join();
  if (impl_->lock_fd >= 0) ::close(impl_->lock_fd);
  impl_->lock_fd = -1;
}

}  // namespace apt::vgpu::daemon
