#include "event_log.hpp"

namespace apt::vgpu::daemon {

nlohmann::json Event::to_json() const {
  return nlohmann::json{{"seq", seq},       {"time_ms", time_ms}, {"type", type},           {"action", action},
                        {"source", source}, {"requestor", requestor}, {"metadata", metadata}};
}

std::uint64_t EventLog::publish(Event event) {
  std::uint64_t seq = 0;
  {
    std::lock_guard lock(mutex_);
    seq = next_seq_++;
    event.seq = seq;
    event.time_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
    ring_.push_back(std::move(event));
    if (ring_.size() > kCapacity) ring_.pop_front();
  }
  changed_.notify_all();
  return seq;
}

std::uint64_t EventLog::last_seq() const {
  std::lock_guard lock(mutex_);
  return next_seq_ - 1;
}

void EventLog::close() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  changed_.notify_all();
}

}  // namespace apt::vgpu::daemon
