// The closed set of errors the vgpud API reports (after containerd's errdefs):
// each code has one HTTP status and one stable name, used in the JSON body
//   {"error": {"code": "insufficient_capacity", "status": 409, "message": "...",
//              "field": "memory", "details": {...}}}
// and, on the client side, mapped back to the C++ exception types (and so to
// the CLI's exit codes).
//
// Thread safety: immutable values.
#pragma once

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>
#include <string_view>

namespace apt::vgpu::daemon {

enum class ErrorCode {
  invalid_argument,       // 400: malformed JSON, unknown field, wrong type, bad value
  permission_denied,      // 403: not yours, or over a per-user limit
  not_found,              // 404: no such slice (or not visible to the caller)
  method_not_allowed,     // 405
  conflict,               // 409: the state forbids it (e.g. a process already attached elsewhere)
  insufficient_capacity,  // 409: the node cannot fit the request now
  gone,                   // 410: an event cursor older than the ring
  payload_too_large,      // 413
  too_many_requests,      // 429: connection or subscriber cap reached
  internal,               // 500
  unavailable,            // 503: starting, stopping, or a dependency is missing
};

[[nodiscard]] int http_status(ErrorCode code) noexcept;
[[nodiscard]] std::string_view to_string(ErrorCode code) noexcept;

class ApiError : public std::runtime_error {
 public:
  ApiError(ErrorCode code, const std::string& message, std::string field = {},
           nlohmann::json details = nlohmann::json::object())
      : std::runtime_error(message), code_(code), field_(std::move(field)), details_(std::move(details)) {}
  [[nodiscard]] ErrorCode code() const noexcept { return code_; }
  [[nodiscard]] const std::string& field() const noexcept { return field_; }
  [[nodiscard]] const nlohmann::json& details() const noexcept { return details_; }
  [[nodiscard]] nlohmann::json to_json() const;

 private:
  ErrorCode code_;
  std::string field_;
  nlohmann::json details_;
};

}  // namespace apt::vgpu::daemon
