// Every parser of user input under the mutation fuzzer (see mutation_fuzzer.hpp):
// each must accept an input or reject it with a typed error, quickly, with no
// sanitizer report. Where a parse is accepted the value goes one step further
// (a size is printed and read back, a trace is simulated or replayed), so a
// value that parses but breaks what follows (a NaN duration once hung the
// simulator) is caught too. docs/reliability.md lists the runs and findings.
#include "fuzz/mutation_fuzzer.hpp"

#include "slice_request.hpp"
#include "api_error.hpp"

#include <apt/vgpu/common/duration.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/config/daemon_config.hpp>
#include <apt/vgpu/config/load_profile.hpp>
#include <apt/vgpu/memory/allocation_trace.hpp>
#include <apt/vgpu/memory/trace_replay.hpp>
#include <apt/vgpu/scheduler/simulator.hpp>
#include <apt/vgpu/scheduler/trace_jobs.hpp>

#include <functional>
#include <sstream>

namespace apt::vgpu::fuzz {
namespace {

constexpr std::uint64_t kRuns = 20000;

// Fuzzes one target from its corpus (tests/fuzz/corpus/<target>), prints the counts, and
// insists the corpus reaches both sides of the parser: some inputs accepted, some refused.
void fuzz(const char* target, std::uint64_t seed, const std::function<void(const std::string&)>& body) {
  MutationFuzzer fuzzer(target, seed);
  ASSERT_GT(fuzzer.corpus_size(), 0U) << "no seeds for " << target;
  const FuzzResult r = fuzzer.run(body, fuzz_runs(kRuns));
  std::printf("fuzz %-14s %6llu inputs: %6llu accepted, %6llu rejected with a typed error\n", target,
              static_cast<unsigned long long>(r.runs), static_cast<unsigned long long>(r.accepted),
              static_cast<unsigned long long>(r.rejected));
  EXPECT_GT(r.accepted, 0U) << target;
  EXPECT_GT(r.rejected, 0U) << target;
}

TEST(ParserFuzz, Sizes) {
  fuzz("size", 1, [](const std::string& input) {
    const std::uint64_t bytes = parse_size(input, "size");
    // What parses prints back exactly.
    if (parse_size(format_size_exact(bytes), "size") != bytes) throw std::logic_error("size did not round-trip");
    (void)format_size(bytes);
  });
}

TEST(ParserFuzz, Durations) {
  fuzz("duration", 2, [](const std::string& input) {
    const auto d = parse_duration(input, "timeout");
    if (d.count() < 0) throw std::logic_error("negative duration accepted");
    (void)format_duration(d);
  });
}

TEST(ParserFuzz, ProfileYaml) {
  fuzz("profile", 3, [](const std::string& input) { (void)config::parse_profile(input, "fuzz.yaml", "fuzz"); });
}

TEST(ParserFuzz, DaemonConfigYaml) {
  fuzz("daemon_config", 4, [](const std::string& input) { (void)config::parse_daemon_config(input, "vgpud.yaml"); });
}

TEST(ParserFuzz, ClusterTracesAndTheSimulatorOnThem) {
  fuzz("cluster_trace", 5, [](const std::string& input) {
    std::istringstream in(input);
    const auto trace = scheduler::parse_trace_jobs(in, "fuzz.csv", 80'000'000'000ULL);
    // Whatever is accepted must simulate to the end (a NaN once never completed).
    scheduler::SimulationOptions o;
    o.nodes = 2;
    o.gpus_per_node = 2;
    o.samples = 10;
    const auto report = scheduler::simulate(trace.jobs, o);
    (void)report;
  });
}

TEST(ParserFuzz, MemoryTracesAndTheirReplay) {
  fuzz("memory_trace", 6, [](const std::string& input) {
    std::istringstream in(input);
    const auto events = memory::parse_trace(in, "fuzz.trace");
    // Replays of more than 1 TiB live spend seconds on chunk upkeep by design; the
    // parser is fuzzed on every input, the replay on GPU-sized ones.
    if (memory::peak_live_bytes(events) > (std::uint64_t{1} << 40)) return;
    memory::ReplayOptions o;
    o.backing = memory::BackingKind::none;
    o.samples = 5;
    (void)memory::replay(events, o);
  });
}

TEST(ParserFuzz, DaemonRequestBodies) {
  fuzz("slice_request", 7, [](const std::string& input) {
    try {
      const nlohmann::json body = daemon::parse_body(input);
      if (body.contains("pid")) {
        (void)daemon::parse_attach_request(body);
      } else {
        (void)daemon::parse_slice_request(body);
      }
    } catch (const daemon::ApiError& e) {  // the daemon's typed error: a 4xx with a JSON body
      if (http_status(e.code()) >= 500) throw std::logic_error(std::string("a 5xx for a bad body: ") + e.what());
      throw InvalidArgument(e.what());
    }
  });
}

}  // namespace
}  // namespace apt::vgpu::fuzz
