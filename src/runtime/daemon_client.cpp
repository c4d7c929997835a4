#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/runtime/daemon_client.hpp>
#include <apt/vgpu/runtime/slice_environment.hpp>
#include <apt/vgpu/runtime/virtual_gpu.hpp>

#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <unistd.h>

namespace apt::vgpu::runtime {
namespace {

SliceInfo to_slice(const nlohmann::json& j) {
  SliceInfo s;
  s.id = j.at("id").get<std::string>();
  s.name = j.value("name", "");
  s.owner_uid = j.at("owner").value("uid", 0U);
  s.owner = j.at("owner").value("user", "");
  s.gpu = j.at("gpu").get<std::uint32_t>();
  s.gpu_uuid = j.value("gpu_uuid", "");
  s.device = j.value("device", "");
  if (!j.at("memory_limit_bytes").is_null()) s.memory_limit = j["memory_limit_bytes"].get<std::uint64_t>();
  if (!j.at("compute_share").is_null()) s.compute_share = j["compute_share"].get<double>();
  s.priority = j.value("priority", 0);
  s.isolation = j.value("isolation", "none");
  s.burst = j.value("burst", false);
  s.ephemeral = j.value("ephemeral", false);
  if (j.contains("expires_at_ms") && !j["expires_at_ms"].is_null()) s.expires_at_ms = j["expires_at_ms"].get<std::int64_t>();
  s.created_at_ms = j.value("created_at_ms", std::int64_t{0});
  if (j.contains("memory_used_bytes")) s.memory_used = j["memory_used_bytes"].get<std::uint64_t>();
  for (const auto& p : j.value("processes", nlohmann::json::array())) {
    s.processes.push_back(SliceProcess{p.value("pid", std::int64_t{0}), p.value("start_time", std::uint64_t{0}),
                                       p.value("holder", false)});
  }
  s.environment = j.value("environment", std::map<std::string, std::string>{});
  s.json = j.dump();
  return s;
}

[[noreturn]] void throw_api_error(int status, const std::string& body) {
  std::string code = "unknown";
  std::string field;
  std::string message = body;
  try {
    const auto j = nlohmann::json::parse(body);
    const auto& e = j.at("error");
    code = e.value("code", code);
    message = e.value("message", message);
    if (e.contains("field") && e["field"].is_string()) field = e["field"].get<std::string>();
  } catch (const std::exception&) {
    // Not our JSON: keep the raw text.
  }
  const std::string text = fmt::format("vgpud: {} (HTTP {} {})", message, status, code);
  if (code == "invalid_argument" || code == "payload_too_large") throw InvalidArgument(text);
  if (code == "insufficient_capacity") throw CapacityError(text);
  throw DaemonError(status, code, field, text);
}

}  // namespace

std::map<std::string, std::string> SliceInfo::environment_here() const {
  auto env = environment;
  if (isolation != "intercept") return env;
  // The library beside this program when there is one, else the daemon's guess (the installed path).
  std::string library = VirtualGPU::find_intercept_library();
  if (library.empty() && env.count("LD_PRELOAD") != 0) library = env["LD_PRELOAD"];
  if (!library.empty()) env["LD_PRELOAD"] = preload_with_existing(library);
  return env;
}

SliceSpec SliceSpec::from_options(const VirtualGpuOptions& o) {
  SliceSpec spec;
  spec.gpu = o.gpu_id;
  spec.memory_limit = o.memory_limit;
  spec.compute_share = o.compute_ratio;
  spec.priority = o.priority;
  spec.isolation = o.isolation;
  spec.burst = o.burst;
  spec.name = o.name;
  return spec;
}

DaemonClient::DaemonClient(std::string socket_path) : socket_(std::move(socket_path)) {}

std::optional<std::string> DaemonClient::find_daemon_socket(const std::string& explicit_path) {
  std::string path = explicit_path;
  bool explicit_choice = !path.empty();
  if (path.empty()) {
    if (const char* env = std::getenv("VGPU_SOCKET"); env != nullptr && *env != '\0') {
      path = env;
      explicit_choice = true;
    }
  }
  if (explicit_choice) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
      throw InvalidArgument(fmt::format("--socket/VGPU_SOCKET: no vgpud socket at {}; start vgpud (vgpud --socket {}) "
                                        "or unset VGPU_SOCKET to run without the daemon",
                                        path, path));
    }
    return path;
  }
  std::error_code ec;
  if (std::filesystem::exists(kDefaultDaemonSocket, ec)) return std::string(kDefaultDaemonSocket);
  return std::nullopt;
}

std::string DaemonClient::request(const char* method, const std::string& path, const std::string& body,
                                  int expected) const {
  httplib::Client client(socket_);
  client.set_address_family(AF_UNIX);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(120, 0);
  client.set_write_timeout(10, 0);
  httplib::Result result = std::string_view(method) == "GET"      ? client.Get(path)
                           : std::string_view(method) == "DELETE" ? client.Delete(path)
                                                                  : client.Post(path, body, "application/json");
  if (!result) {
    throw DaemonError(0, "unreachable", "",
                      fmt::format("cannot reach vgpud at {}: {} (is it running? 'systemctl status vgpud', or unset "
                                  "VGPU_SOCKET to run without it)",
                                  socket_, httplib::to_string(result.error())));
  }
  if (result->status != expected) throw_api_error(result->status, result->body);
  return result->body;
}

SliceInfo DaemonClient::create(const SliceSpec& spec) const {
  nlohmann::json body = nlohmann::json::object();
  if (spec.gpu) body["gpu"] = *spec.gpu;
  if (spec.memory_limit) body["memory"] = *spec.memory_limit;
  if (spec.compute_share) body["compute"] = *spec.compute_share;
  if (spec.priority != 0) body["priority"] = spec.priority;
  if (spec.isolation) body["isolation"] = std::string(config::to_string(*spec.isolation));
  if (spec.burst) body["burst"] = true;
  if (!spec.name.empty()) body["name"] = spec.name;
  if (spec.ttl) body["ttl"] = static_cast<double>(spec.ttl->count()) / 1000.0;
  if (spec.ephemeral) {
    body["ephemeral"] = true;
    body["holder_pid"] = spec.holder_pid.value_or(::getpid());
  }
  return to_slice(nlohmann::json::parse(request("POST", "/v1/slices", body.dump(), 201)));
}

std::vector<SliceInfo> DaemonClient::list(bool all) const {
  std::vector<SliceInfo> out;
  for (const auto& j : nlohmann::json::parse(request("GET", all ? "/v1/slices?all=1" : "/v1/slices", {}, 200))) {
    out.push_back(to_slice(j));
  }
  return out;
}

SliceInfo DaemonClient::get(const std::string& id) const {
  return to_slice(nlohmann::json::parse(request("GET", "/v1/slices/" + id, {}, 200)));
}

void DaemonClient::remove(const std::string& id) const { (void)request("DELETE", "/v1/slices/" + id, {}, 204); }

SliceInfo DaemonClient::attach(const std::string& id, std::optional<std::int64_t> pid) const {
  nlohmann::json body = nlohmann::json::object();
  body["pid"] = pid.value_or(::getpid());
  return to_slice(nlohmann::json::parse(request("POST", "/v1/slices/" + id + "/processes", body.dump(), 200)));
}

std::vector<GpuCapacity> DaemonClient::node_capacity() const {
  const std::string body = request("GET", "/v1/node", {}, 200);
  std::vector<GpuCapacity> out;
  try {
    const nlohmann::json node = nlohmann::json::parse(body);  // named: a range over a temporary's member dangles
    for (const auto& g : node.at("gpus")) {
      GpuCapacity c;
      c.gpu = g.at("index").get<std::uint32_t>();
      c.memory_capacity = g.at("memory_capacity_bytes").get<std::uint64_t>();
      c.memory_leased = g.at("memory_leased_bytes").get<std::uint64_t>();
      c.compute_capacity = g.at("compute_capacity").get<double>();
      c.compute_leased = g.at("compute_leased").get<double>();
      c.slices = g.at("slices").get<std::uint32_t>();
      out.push_back(c);
    }
  } catch (const nlohmann::json::exception& e) {
    throw DaemonError(0, "bad_response", {},
                      fmt::format("vgpud at {}: GET /v1/node answered an unexpected shape ({})", socket_, e.what()));
  }
  return out;
}

std::string DaemonClient::get_json(const std::string& path) const { return request("GET", path, {}, 200); }

}  // namespace apt::vgpu::runtime
