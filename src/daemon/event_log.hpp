// EventLog: what changed on the node, in order. Each event has a sequence
// number (monotonic per daemon instance), a time, a type ("slice", "process",
// "alert", "daemon"), an action, the resource it concerns and who asked.
// The last 256 events are kept so a client can resume with `since`; a cursor
// older than that gets `gone` (410) and must re-read state. A long poll waits
// until an event newer than its cursor arrives or its timeout passes.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace apt::vgpu::daemon {

struct Event {
  std::uint64_t seq = 0;
  std::int64_t time_ms = 0;
  std::string type;
  std::string action;
  std::string source;  // e.g. "/v1/slices/0123456789abcdef"
  nlohmann::json requestor;  // {uid, pid} or null for the daemon itself
  nlohmann::json metadata;
  std::uint32_t owner_uid = 0;  // who may see it (admins see all)
  bool node_wide = false;       // visible to everyone (alerts, daemon events)

  [[nodiscard]] nlohmann::json to_json() const;
};

class EventLog {
 public:
  static constexpr std::size_t kCapacity = 256;

  explicit EventLog(std::uint64_t first_seq = 1) : next_seq_(first_seq) {}

  std::uint64_t publish(Event event);

  struct Page {
    bool gone = false;  // `since` is older than the ring
    std::vector<Event> events;
    std::uint64_t next = 0;  // pass as `since` next time
  };
  // Events with seq > since that pass `filter`, waiting up to `timeout` for
  // the first one. Returns early (empty) when close() is called.
  template <class Filter>
  Page wait(std::uint64_t since, std::chrono::milliseconds timeout, Filter filter) {
    std::unique_lock lock(mutex_);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      Page page;
      page.next = since;
      if (!ring_.empty() && since + 1 < ring_.front().seq) {
        page.gone = true;
        return page;
      }
      for (const Event& e : ring_) {
        if (e.seq <= since) continue;
        page.next = e.seq;
        if (filter(e)) page.events.push_back(e);
      }
      if (!page.events.empty() || closed_) return page;
      if (page.next > since) since = page.next;  // skip what the filter dropped
      if (changed_.wait_until(lock, deadline) == std::cv_status::timeout) {
        page.next = since;
        return page;
      }
    }
  }
  // The newest sequence number handed out (0 before the first event).
  [[nodiscard]] std::uint64_t last_seq() const;
  // Wakes every waiter and makes later waits return at once (shutdown).
  void close();

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Event> ring_;  // guarded by mutex_
  std::uint64_t next_seq_;  // guarded by mutex_
  bool closed_ = false;     // guarded by mutex_
};

}  // namespace apt::vgpu::daemon
