// Allocation traces: sequences of allocate/free events to replay through a
// GPUMemoryManager.
//
// Two formats are read (read_trace() tells them apart by the first line):
//   - RMM's logging_resource_adaptor CSV: header
//       Thread,Time,Action,Pointer,Size,Stream
//     with Action "allocate", "free" or "allocate failure" (skipped); blocks are
//     identified by Pointer.
//   - ours, one event per line after the line "# vgpu-trace v1":
//       a <id> <bytes>      allocate block <id>
//       f <id>              free block <id>
//     '#' starts a comment.
// Malformed lines are InvalidArgument naming file, line and what was expected.
//
// generate_transformer_trace() synthesises the allocation pattern of
// transformer training: weights and optimizer state allocated once, then per
// step activations (sized by a sequence length that varies per step) allocated
// layer by layer in the forward pass and freed in reverse in the backward
// pass, gradients, and short-lived temporaries. Deterministic for a seed.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace apt::vgpu::memory {

struct TraceEvent {
  enum class Kind : std::uint8_t { allocate, free };
  Kind kind = Kind::allocate;
  std::uint64_t id = 0;
  std::uint64_t size = 0;  // allocate only
};

[[nodiscard]] std::vector<TraceEvent> read_trace(const std::string& path);
[[nodiscard]] std::vector<TraceEvent> parse_trace(std::istream& in, const std::string& name);
void write_trace(std::ostream& out, const std::vector<TraceEvent>& events);

struct TransformerTraceOptions {
  std::uint32_t layers = 24;
  std::uint64_t hidden = 2048;
  std::uint64_t batch = 8;
  std::uint64_t min_sequence = 128;
  std::uint64_t max_sequence = 2048;
  std::uint32_t steps = 40;
  std::uint64_t seed = 1;
};

[[nodiscard]] std::vector<TraceEvent> generate_transformer_trace(const TransformerTraceOptions& options);

// Bytes live at the trace's busiest moment.
[[nodiscard]] std::uint64_t peak_live_bytes(const std::vector<TraceEvent>& events);

}  // namespace apt::vgpu::memory
