#include "slice_request.hpp"

#include "api_error.hpp"

#include <apt/vgpu/common/duration.hpp>
#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/common/suggest.hpp>

#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <vector>

namespace apt::vgpu::daemon {
namespace {

const std::vector<std::string> kFields{"gpu",       "memory", "compute",   "priority",   "isolation",   "burst",
                                       "name",      "ttl",    "ephemeral", "holder_pid", "on_behalf_of"};
const std::vector<std::string> kOnBehalfFields{"uid", "gid", "pid", "job_id"};

ApiError bad(const std::string& field, const std::string& message) {
  return ApiError(ErrorCode::invalid_argument, fmt::format("{}: {}", field, message), field);
}

std::string shown(const nlohmann::json& v) {
  std::string text = v.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

void check_fields(const nlohmann::json& object, const std::vector<std::string>& allowed, const std::string& prefix) {
  for (const auto& [key, value] : object.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string message = fmt::format("unknown field '{}{}'", prefix, key);
    if (auto guess = nearest(key, allowed)) {
      message += fmt::format("; did you mean '{}{}'?", prefix, *guess);
    } else {
      message += fmt::format("; known fields: {}", join(allowed));
    }
    throw ApiError(ErrorCode::invalid_argument, message, prefix + key);
  }
}

std::int64_t integer(const nlohmann::json& v, const std::string& field, std::int64_t min, std::int64_t max) {
  if (!v.is_number_integer()) throw bad(field, fmt::format("expected an integer, got {}", shown(v)));
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(max)) {
    throw bad(field, fmt::format("{} is out of range; use {}..{}", shown(v), min, max));
  }
  const auto value = v.get<std::int64_t>();
  if (value < min || value > max) throw bad(field, fmt::format("{} is out of range; use {}..{}", value, min, max));
  return value;
}

bool boolean(const nlohmann::json& v, const std::string& field) {
  if (!v.is_boolean()) throw bad(field, fmt::format("expected true or false, got {}", shown(v)));
  return v.get<bool>();
}

}  // namespace

nlohmann::json parse_body(const std::string& body) {
  if (body.empty()) return nlohmann::json::object();
  try {
    return nlohmann::json::parse(body);
  } catch (const nlohmann::json::parse_error& e) {
    throw ApiError(ErrorCode::invalid_argument,
                   fmt::format("the body is not valid JSON (at byte {}); send an object such as "
                               "{{\"gpu\": 0, \"memory\": \"4GB\"}}",
                               e.byte));
  } catch (const nlohmann::json::exception& e) {
    // e.g. a number too large for a double (1e999): valid JSON grammar, but no value we can hold.
    throw ApiError(ErrorCode::invalid_argument, fmt::format("the body holds a value out of range: {}", e.what()));
  }
}

SliceRequest parse_slice_request(const nlohmann::json& body) {
  if (!body.is_object()) throw ApiError(ErrorCode::invalid_argument, fmt::format("the body must be a JSON object, got {}", shown(body)));
  check_fields(body, kFields, "");
  SliceRequest r;
  if (body.contains("gpu")) r.gpu = static_cast<std::uint32_t>(integer(body["gpu"], "gpu", 0, 1023));
  if (body.contains("memory") && !body["memory"].is_null()) {
    const auto& m = body["memory"];
    if (m.is_string()) {
      try {
        r.memory = parse_size(m.get<std::string>(), "memory");
      } catch (const InvalidArgument& e) {
        throw ApiError(ErrorCode::invalid_argument, e.what(), "memory");
      }
    } else if (m.is_number_integer()) {
      r.memory = static_cast<std::uint64_t>(integer(m, "memory", 1, std::numeric_limits<std::int64_t>::max()));
    } else {
      throw bad("memory", fmt::format("expected a size such as \"20GB\" or a byte count, got {}", shown(m)));
    }
    if (*r.memory == 0) throw bad("memory", "0 bytes leaves the slice no memory; give e.g. \"4GB\", or leave it out for no limit");
  }
  if (body.contains("compute") && !body["compute"].is_null()) {
    const auto& c = body["compute"];
    if (!c.is_number()) throw bad("compute", fmt::format("expected a number in (0, 1], got {}", shown(c)));
    const double share = c.get<double>();
    if (!std::isfinite(share) || !(share > 0.0 && share <= 1.0)) {
      throw bad("compute", fmt::format("{} is out of range; use a share in (0, 1], e.g. 0.5", shown(c)));
    }
    r.compute = share;
  }
  if (body.contains("priority")) r.priority = static_cast<int>(integer(body["priority"], "priority", -1000, 1000));
  if (body.contains("isolation")) {
    const auto& i = body["isolation"];
    if (!i.is_string()) throw bad("isolation", fmt::format("expected \"none\", \"intercept\" or \"mps\", got {}", shown(i)));
    const auto text = i.get<std::string>();
    if (text != "none" && text != "intercept" && text != "mps") {
      throw bad("isolation", fmt::format("'{}' is not valid; use none, intercept or mps", text));
    }
    r.isolation = config::parse_isolation(text);
  }
  if (body.contains("burst")) r.burst = boolean(body["burst"], "burst");
  if (body.contains("name")) {
    const auto& n = body["name"];
    if (!n.is_string()) throw bad("name", fmt::format("expected a string, got {}", shown(n)));
    r.name = n.get<std::string>();
    const bool ok = !r.name.empty() && r.name.size() <= 64 &&
                    std::all_of(r.name.begin(), r.name.end(), [](char ch) {
                      return std::isalnum(static_cast<unsigned char>(ch)) != 0 || ch == '-' || ch == '_' || ch == '.';
                    });
    if (!ok) throw bad("name", fmt::format("{} is not a valid name; use 1-64 letters, digits, '-', '_' or '.'", shown(n)));
  }
  if (body.contains("ttl") && !body["ttl"].is_null()) {
    const auto& t = body["ttl"];
    if (t.is_string()) {
      try {
        r.ttl = parse_duration(t.get<std::string>(), "ttl");
      } catch (const InvalidArgument& e) {
        throw ApiError(ErrorCode::invalid_argument, e.what(), "ttl");
      }
    } else if (t.is_number()) {
      const double seconds = t.get<double>();
      if (!std::isfinite(seconds) || seconds < 0.001 || seconds > 10.0 * 365 * 86400) {
        throw bad("ttl", fmt::format("{} seconds is out of range; use 0.001..315360000 or a string such as \"8h\"", shown(t)));
      }
      r.ttl = std::chrono::milliseconds(std::llround(seconds * 1000));
    } else {
      throw bad("ttl", fmt::format("expected a duration such as \"8h\" or seconds, got {}", shown(t)));
    }
  }
  if (body.contains("ephemeral")) r.ephemeral = boolean(body["ephemeral"], "ephemeral");
  if (body.contains("holder_pid")) {
    r.holder_pid = integer(body["holder_pid"], "holder_pid", 1, std::numeric_limits<pid_t>::max());
    if (!r.ephemeral) throw bad("holder_pid", "only an ephemeral slice has a holder; add \"ephemeral\": true or drop it");
  }
  if (body.contains("on_behalf_of")) {
    const auto& o = body["on_behalf_of"];
    if (!o.is_object()) throw bad("on_behalf_of", fmt::format("expected an object {{\"uid\": N, ...}}, got {}", shown(o)));
    check_fields(o, kOnBehalfFields, "on_behalf_of.");
    if (!o.contains("uid")) throw bad("on_behalf_of.uid", "missing; name the user the slice is for");
    OnBehalfOf who;
    who.uid = static_cast<std::uint32_t>(integer(o["uid"], "on_behalf_of.uid", 0, 4'294'967'294LL));
    if (o.contains("gid")) who.gid = static_cast<std::uint32_t>(integer(o["gid"], "on_behalf_of.gid", 0, 4'294'967'294LL));
    if (o.contains("pid")) who.pid = integer(o["pid"], "on_behalf_of.pid", 1, std::numeric_limits<pid_t>::max());
    if (o.contains("job_id")) {
      if (!o["job_id"].is_string() || o["job_id"].get<std::string>().size() > 128) {
        throw bad("on_behalf_of.job_id", fmt::format("expected a string of at most 128 characters, got {}", shown(o["job_id"])));
      }
      who.job_id = o["job_id"].get<std::string>();
    }
    r.on_behalf_of = who;
  }
  return r;
}

std::optional<std::int64_t> parse_attach_request(const nlohmann::json& body) {
  if (!body.is_object()) throw ApiError(ErrorCode::invalid_argument, fmt::format("the body must be a JSON object, got {}", shown(body)));
  check_fields(body, {"pid"}, "");
  if (!body.contains("pid")) return std::nullopt;
  return integer(body["pid"], "pid", 1, std::numeric_limits<pid_t>::max());
}

}  // namespace apt::vgpu::daemon
