#include "api_error.hpp"

namespace apt::vgpu::daemon {

int http_status(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument: return 400;
    case ErrorCode::permission_denied: return 403;
    case ErrorCode::not_found: return 404;
    case ErrorCode::method_not_allowed: return 405;
    case ErrorCode::conflict: return 409;
    case ErrorCode::insufficient_capacity: return 409;
    case ErrorCode::gone: return 410;
    case ErrorCode::payload_too_large: return 413;
    case ErrorCode::too_many_requests: return 429;
    case ErrorCode::internal: return 500;
    case ErrorCode::unavailable: return 503;
  }
  return 500;
}

std::string_view to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::permission_denied: return "permission_denied";
    case ErrorCode::not_found: return "not_found";
    case ErrorCode::method_not_allowed: return "method_not_allowed";
    case ErrorCode::conflict: return "conflict";
    case ErrorCode::insufficient_capacity: return "insufficient_capacity";
    case ErrorCode::gone: return "gone";
    case ErrorCode::payload_too_large: return "payload_too_large";
    case ErrorCode::too_many_requests: return "too_many_requests";
    case ErrorCode::internal: return "internal";
    case ErrorCode::unavailable: return "unavailable";
  }
  return "internal";
}

nlohmann::json ApiError::to_json() const {
  nlohmann::json error{{"code", to_string(code_)}, {"status", http_status(code_)}, {"message", what()}};
  error["field"] = field_.empty() ? nlohmann::json(nullptr) : nlohmann::json(field_);
  if (!details_.empty()) error["details"] = details_;
  return nlohmann::json{{"error", error}};
}

}  // namespace apt::vgpu::daemon
