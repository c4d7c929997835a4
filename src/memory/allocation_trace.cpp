#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/memory/allocation_trace.hpp>

#include <algorithm>
#include <charconv>
#include <fmt/format.h>
#include <fstream>
#include <random>
#include <sstream>
#include <unordered_map>

namespace apt::vgpu::memory {
namespace {

constexpr std::string_view kRmmHeader = "Thread,Time,Action,Pointer,Size,Stream";
constexpr std::string_view kOurHeader = "# vgpu-trace v1";

// No GPU comes near 1 TiB (the largest hold under 300 GB); a larger single
// allocation is a corrupt trace, and accepting it would only move the failure
// into the replay (a pool of 2^64 bytes was bad_alloc; 40 TB, seconds of chunk upkeep).
constexpr std::uint64_t kMaxAllocation = std::uint64_t{1} << 40;

[[noreturn]] void bad_line(const std::string& name, std::size_t line, const std::string& why) {
  throw InvalidArgument(fmt::format("{}:{}: {}", name, line, why));
}

void check_size(std::uint64_t size, const std::string& name, std::size_t line) {
  if (size > kMaxAllocation) {
    bad_line(name, line, fmt::format("size {} is larger than 1 TiB ({}); no GPU holds that, so the trace is corrupt",
                                     size, kMaxAllocation));
  }
}

std::uint64_t number(std::string_view text, int base, const std::string& name, std::size_t line, const char* what) {
  if (base == 16 && (text.starts_with("0x") || text.starts_with("0X"))) text.remove_prefix(2);
  std::uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  if (text.empty() || ec != std::errc{} || ptr != text.data() + text.size()) {
    bad_line(name, line, fmt::format("{} '{}' is not a number", what, text));
  }
  return value;
}

std::vector<std::string_view> split(std::string_view line, char sep) {
  std::vector<std::string_view> out;
  while (true) {
    const auto pos = line.find(sep);
    out.push_back(line.substr(0, pos));
    if (pos == std::string_view::npos) break;
    line.remove_prefix(pos + 1);
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::vector<TraceEvent> parse_rmm(std::istream& in, const std::string& name) {
  std::vector<TraceEvent> events;
  std::unordered_map<std::uint64_t, std::uint64_t> live;  // pointer -> our id (pointers are reused)
  std::uint64_t next_id = 0;
  std::string text;
  std::size_t line = 1;
  while (std::getline(in, text)) {
    ++line;
    const std::string_view row = trim(text);
    if (row.empty()) continue;
    const auto fields = split(row, ',');
    if (fields.size() < 5) bad_line(name, line, fmt::format("expected 6 fields ({}), got {}", kRmmHeader, fields.size()));
    const std::string_view action = trim(fields[2]);
    const std::uint64_t pointer = number(trim(fields[3]), 16, name, line, "Pointer");
    if (action == "allocate") {
      const std::uint64_t size = number(trim(fields[4]), 10, name, line, "Size");
      check_size(size, name, line);
      if (!live.emplace(pointer, next_id).second) {
        bad_line(name, line, fmt::format("pointer {} is allocated again without a free in between", trim(fields[3])));
      }
      events.push_back({TraceEvent::Kind::allocate, next_id++, size});
    } else if (action == "free") {
      auto it = live.find(pointer);
      if (it == live.end()) bad_line(name, line, fmt::format("free of pointer {} that is not allocated", fields[3]));
      events.push_back({TraceEvent::Kind::free, it->second, 0});
      live.erase(it);
    } else if (action != "allocate failure") {
      bad_line(name, line, fmt::format("Action '{}' is not allocate, free or allocate failure", action));
    }
  }
  return events;
}

std::vector<TraceEvent> parse_ours(std::istream& in, const std::string& name) {
  std::vector<TraceEvent> events;
  std::unordered_map<std::uint64_t, bool> live;
  std::string text;
  std::size_t line = 1;
  while (std::getline(in, text)) {
    ++line;
    std::string_view row = trim(text);
    if (const auto hash = row.find('#'); hash != std::string_view::npos) row = trim(row.substr(0, hash));
    if (row.empty()) continue;
    const auto fields = split(row, ' ');
    if (fields[0] == "a" && fields.size() == 3) {
      const std::uint64_t id = number(fields[1], 10, name, line, "id");
      const std::uint64_t size = number(fields[2], 10, name, line, "size");
      if (size == 0) bad_line(name, line, "allocation of 0 bytes");
      check_size(size, name, line);
      if (!live.emplace(id, true).second) bad_line(name, line, fmt::format("block {} is allocated twice", id));
      events.push_back({TraceEvent::Kind::allocate, id, size});
    } else if (fields[0] == "f" && fields.size() == 2) {
      const std::uint64_t id = number(fields[1], 10, name, line, "id");
      if (live.erase(id) == 0) bad_line(name, line, fmt::format("free of block {} that is not allocated", id));
      events.push_back({TraceEvent::Kind::free, id, 0});
    } else {
      bad_line(name, line, fmt::format("expected 'a <id> <bytes>' or 'f <id>', got '{}'", row));
    }
  }
  return events;
}

}  // namespace

std::vector<TraceEvent> parse_trace(std::istream& in, const std::string& name) {
  std::string first;
  if (!std::getline(in, first)) throw InvalidArgument(fmt::format("{}: empty trace", name));
  const std::string_view header = trim(first);
  if (header == kRmmHeader) return parse_rmm(in, name);
  if (header == kOurHeader) return parse_ours(in, name);
  throw InvalidArgument(fmt::format("{}:1: unknown trace format; the first line must be '{}' (RMM logging CSV) or '{}'",
                                    name, kRmmHeader, kOurHeader));
}

std::vector<TraceEvent> read_trace(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InvalidArgument(fmt::format("trace: cannot open {}", path));
  return parse_trace(in, path);
}

void write_trace(std::ostream& out, const std::vector<TraceEvent>& events) {
  out << kOurHeader << "\n";
  for (const TraceEvent& e : events) {
    if (e.kind == TraceEvent::Kind::allocate) {
      out << "a " << e.id << ' ' << e.size << '\n';
    } else {
      out << "f " << e.id << '\n';
    }
  }
}

std::vector<TraceEvent> generate_transformer_trace(const TransformerTraceOptions& o) {
  if (o.layers == 0 || o.hidden == 0 || o.batch == 0 || o.steps == 0 || o.min_sequence == 0 ||
      o.max_sequence < o.min_sequence) {
    throw InvalidArgument("transformer trace: layers, hidden, batch, steps and sequence lengths must be positive, "
                          "with min_sequence <= max_sequence");
  }
  std::vector<TraceEvent> events;
  std::uint64_t next = 0;
  auto alloc = [&](std::uint64_t bytes) {
    events.push_back({TraceEvent::Kind::allocate, next, std::max<std::uint64_t>(bytes, 1)});
    return next++;
  };
  auto release = [&](std::uint64_t id) { events.push_back({TraceEvent::Kind::free, id, 0}); };

  std::mt19937_64 rng(o.seed);
  constexpr std::uint64_t kHalf = 2;   // bf16 activations and weights
  constexpr std::uint64_t kFloat = 4;  // fp32 master weights and Adam moments
  const std::uint64_t h = o.hidden;
  // Per layer: attention (4 h^2) and MLP (8 h^2) weights, as separate tensors.
  const std::uint64_t weight_tensors[] = {h * h, h * h, h * h, h * h, 4 * h * h, 4 * h * h, h, h};
  std::vector<std::uint64_t> persistent;
  for (std::uint32_t l = 0; l < o.layers; ++l) {
    for (std::uint64_t elements : weight_tensors) {
      persistent.push_back(alloc(elements * kHalf));
      persistent.push_back(alloc(elements * kFloat));  // master copy
      persistent.push_back(alloc(elements * kFloat));  // Adam m
      persistent.push_back(alloc(elements * kFloat));  // Adam v
    }
  }
  std::uniform_int_distribution<std::uint64_t> seq(o.min_sequence / 64, o.max_sequence / 64);
  std::uniform_int_distribution<std::uint64_t> temp_size(4096, 4 * h * o.batch * 64);
  std::uniform_int_distribution<int> temp_life(1, 6);
  // Temporaries (casts, workspace, communication buffers) outlive the op that made
  // them by a few ops: a random lifetime in "ops" before they are freed.
  std::vector<std::pair<int, std::uint64_t>> in_flight;
  auto tick = [&] {
    for (auto& [left, id] : in_flight) --left;
    std::vector<std::pair<int, std::uint64_t>> keep;
    for (const auto& [left, id] : in_flight) {
      if (left <= 0) release(id); else keep.emplace_back(left, id);
    }
    in_flight.swap(keep);
  };
  auto temporary = [&](std::uint64_t bytes) { in_flight.emplace_back(temp_life(rng), alloc(bytes)); };
  constexpr int kMicroBatches = 2;  // gradient accumulation: sequence lengths differ within a step
  for (std::uint32_t step = 0; step < o.steps; ++step) {
    std::vector<std::uint64_t> grads;  // accumulate across micro-batches, consumed by the optimizer
    for (int micro = 0; micro < kMicroBatches; ++micro) {
      const std::uint64_t tokens = o.batch * std::max<std::uint64_t>(seq(rng) * 64, o.min_sequence);
      std::vector<std::vector<std::uint64_t>> saved(o.layers);
      // Forward: each layer gathers its bf16 weights (as FSDP does), saves
      // activations for backward and leaves temporaries behind.
      for (std::uint32_t l = 0; l < o.layers; ++l) {
        const std::uint64_t gathered = alloc(12 * h * h * kHalf);
        saved[l].push_back(alloc(tokens * h * kHalf));      // layer input
        saved[l].push_back(alloc(tokens * 3 * h * kHalf));  // q, k, v
        temporary(tokens * h * kFloat);                     // attention scratch
        saved[l].push_back(alloc(tokens * 4 * h * kHalf));  // MLP up projection
        temporary(temp_size(rng));
        release(gathered);
        tick();
      }
      const std::uint64_t logits = alloc(tokens * 32000 / 8 * kHalf);  // vocabulary-sharded logits
      tick();
      release(logits);
      // Backward in reverse: weights are gathered again, gradients appear, activations go.
      for (std::uint32_t l = o.layers; l-- > 0;) {
        const std::uint64_t gathered = alloc(12 * h * h * kHalf);
        const std::uint64_t grad_in = alloc(tokens * h * kHalf);
        if (micro == 0) {
          for (std::uint64_t elements : weight_tensors) grads.push_back(alloc(elements * kFloat));
        }
        temporary(tokens * 4 * h * kHalf);
        for (auto it = saved[l].rbegin(); it != saved[l].rend(); ++it) release(*it);
        release(grad_in);
        release(gathered);
        tick();
      }
    }
    // Optimizer step consumes the gradients, with a temporary per tensor.
    for (std::uint64_t g : grads) {
      temporary(4096);
      release(g);
    }
    while (!in_flight.empty()) tick();
  }
  for (std::uint64_t p : persistent) release(p);
  return events;
}

std::uint64_t peak_live_bytes(const std::vector<TraceEvent>& events) {
  std::unordered_map<std::uint64_t, std::uint64_t> sizes;
  std::uint64_t live = 0;
  std::uint64_t peak = 0;
  for (const TraceEvent& e : events) {
    if (e.kind == TraceEvent::Kind::allocate) {
      sizes[e.id] = e.size;
      if (live > UINT64_MAX - e.size) {
        throw InvalidArgument("trace: more than 2^64 bytes would be live at once; the trace is corrupt");
      }
      live += e.size;
      peak = std::max(peak, live);
    } else if (auto it = sizes.find(e.id); it != sizes.end()) {
      live -= it->second;
      sizes.erase(it);
    }
  }
  return peak;
}

}  // namespace apt::vgpu::memory
