#include "command.hpp"
#include "output.hpp"

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/memory/allocation_trace.hpp>
#include <apt/vgpu/memory/trace_replay.hpp>

#include <fmt/format.h>
#include <fstream>
#include <iostream>

namespace apt::vgpu::cli {
namespace {

class MemoryCommand final : public Command {
 public:
  explicit MemoryCommand(const GlobalOptions& globals) : globals_(globals) {}

  void attach(CLI::App& parent) override {
    app_ = parent.add_subcommand("memory", "Memory pool tools: replay allocation traces, generate synthetic ones");
    app_->require_subcommand(1);
    replay_ = app_->add_subcommand(
        "replay", "Replay a trace (RMM logging CSV or vgpu-trace) through the pool allocator and report peak "
                  "reserved vs requested, fragmentation over time, failures and ns/op");
    replay_->add_option("trace", trace_, "Trace file")->required()->check(CLI::ExistingFile);
    replay_->add_option("--pool-size", pool_size_, "Pool size, e.g. 80GB (default: 1.05 x the trace's peak live bytes)");
    replay_->add_flag("--no-compaction", no_compaction_, "Replay without compaction (to see what it saves)");
    replay_->add_option("--fragmentation-threshold", threshold_, "Compact above this fragmentation (default 0.1)")
        ->check(in_range(0.0, 1.0));
    replay_->add_flag("--json", json_, "Print JSON");
    replay_->add_option("--backing", backing_,
                        "What backs the pool: none (bookkeeping only, the default), host (mmap), or cuda "
                        "(real GPU memory through the CUDA driver's virtual memory API)");
    generate_ = app_->add_subcommand("generate", "Write a synthetic transformer-training trace (vgpu-trace format)");
    generate_->add_option("-o,--output", output_, "Output file")->required();
    generate_->add_option("--layers", trace_options_.layers, "Transformer layers (default 24)")->check(in_range(1, 1000));
    generate_->add_option("--hidden", trace_options_.hidden, "Hidden size (default 2048)")->check(in_range(64, 65536));
    generate_->add_option("--batch", trace_options_.batch, "Sequences per step (default 8)")->check(in_range(1, 4096));
    generate_->add_option("--min-seq", trace_options_.min_sequence, "Shortest sequence (default 128)")
        ->check(in_range(64, 1 << 20));
    generate_->add_option("--max-seq", trace_options_.max_sequence, "Longest sequence (default 2048)")
        ->check(in_range(64, 1 << 20));
    generate_->add_option("--steps", trace_options_.steps, "Training steps (default 40)")->check(in_range(1, 100000));
    generate_->add_option("--seed", trace_options_.seed, "Random seed (default 1)");
  }

  int run() override {
    if (generate_->parsed()) {
      const auto events = memory::generate_transformer_trace(trace_options_);
      std::ofstream out(output_);
      if (!out) throw InvalidArgument(fmt::format("--output: cannot write {}", output_));
      memory::write_trace(out, events);
      std::cout << fmt::format("wrote {} events to {} (peak live {})\n", events.size(), output_,
                               format_size(memory::peak_live_bytes(events)));
      return 0;
    }
    const auto events = memory::read_trace(trace_);
    memory::ReplayOptions options;
    if (!pool_size_.empty()) options.pool_size = parse_size(pool_size_, "--pool-size");
    options.compaction = !no_compaction_;
    options.fragmentation_threshold = threshold_;
    options.backing = memory::parse_backing_kind(backing_);
    const memory::ReplayReport r = memory::replay(events, options);
    if (json_) {
      nlohmann::json j;
      j["pool_size"] = r.pool_size;
      j["backing"] = backing_;
      j["events"] = r.events;
      j["allocations"] = r.allocations;
      j["frees"] = r.frees;
      j["peak_requested"] = r.peak_requested;
      j["peak_used"] = r.peak_used;
      j["peak_reserved"] = r.peak_reserved;
      j["reserved_over_requested"] = r.reserved_over_requested();
      j["peak_address"] = r.peak_address;
      j["address_over_requested"] = r.address_over_requested();
      j["commit_calls"] = r.commit_calls;
      j["release_calls"] = r.release_calls;
      j["failures"] = r.failures;
      j["failures_with_enough_free"] = r.failures_with_enough_free;
      j["compactions"] = r.compactions;
      j["bytes_moved"] = r.bytes_moved;
      j["ns_per_op"] = r.ns_per_op;
      j["fragmentation"] = r.fragmentation;
      std::cout << j.dump(2) << "\n";
    } else {
      double peak_fragmentation = 0.0;
      double sum = 0.0;
      for (const auto& [event, f] : r.fragmentation) {
        peak_fragmentation = std::max(peak_fragmentation, f);
        sum += f;
      }
      std::cout << fmt::format(
          "trace {}: {} events ({} allocations, {} frees)\n"
          "pool {} (compaction {})\n"
          "peak requested  {}\npeak used       {}\npeak reserved   {}  ({:.4f} x requested: backing committed at once, idle "
          "chunks released)\npeak address    {}  ({:.4f} x requested: the allocator's high-water mark)\n"
          "backing calls   {} commits, {} releases (driver calls on CUDA)\n"
          "failures        {} ({} with enough total memory free)\n"
          "compactions     {} ({} moved)\n"
          "time            {:.0f} ns per allocate/free\n"
          "fragmentation   mean {:.3f}, max {:.3f} over {} samples:\n",
          trace_, r.events, r.allocations, r.frees, format_size(r.pool_size), no_compaction_ ? "off" : "on",
          format_size(r.peak_requested), format_size(r.peak_used), format_size(r.peak_reserved),
          r.reserved_over_requested(), format_size(r.peak_address), r.address_over_requested(), r.commit_calls,
          r.release_calls, r.failures, r.failures_with_enough_free, r.compactions,
          format_size(r.bytes_moved), r.ns_per_op,
          r.fragmentation.empty() ? 0.0 : sum / static_cast<double>(r.fragmentation.size()), peak_fragmentation,
          r.fragmentation.size());
      // A one-line sparkline of fragmentation over the replay.
      static constexpr const char* kBars[] = {" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
      std::string line = "  ";
      for (const auto& [event, f] : r.fragmentation) line += kBars[std::min(8, static_cast<int>(f * 8.0 + 0.5))];
      std::cout << line << "\n";
    }
    return r.failures_with_enough_free == 0 ? 0 : 1;
  }

 private:
  const GlobalOptions& globals_;
  CLI::App* replay_ = nullptr;
  CLI::App* generate_ = nullptr;
  std::string trace_;
  std::string pool_size_;
  bool no_compaction_ = false;
  double threshold_ = 0.1;
  bool json_ = false;
  std::string backing_ = "none";
  std::string output_;
  memory::TransformerTraceOptions trace_options_;
};

}  // namespace

std::unique_ptr<Command> make_memory_command(const GlobalOptions& globals) {
  return std::make_unique<MemoryCommand>(globals);
}

}  // namespace apt::vgpu::cli
