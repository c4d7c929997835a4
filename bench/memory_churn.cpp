// The pool benchmarks' churn for a fixed number of pairs, to count instructions and cache misses under
// cachegrind, which a timed benchmark cannot give (docs/benchmarks.md):
//
//   memory_churn ALLOCATOR LIVE DISTRIBUTION PAIRS
//     ALLOCATOR     tlsf (TlsfArena), model (the offset-allocator model), wide-model (the same with
//                   8-byte ids) or manager (the whole GPUMemoryManager, none backing)
//     LIVE          live blocks (e.g. 1000, 10000, 100000)
//     DISTRIBUTION  0: sizes uniform in 256 B .. 64 KiB; 1: log-uniform in 256 B .. 64 MiB
//     PAIRS         free + allocate pairs after the fill
//
// The setup (fill, fragment) is the same for any PAIRS, so the difference of two runs divided by the
// difference in PAIRS is the cost of one pair:
//   for n in 200000 400000; do
//     valgrind --tool=cachegrind --cache-sim=yes --LL=1048576,16,64 build/release/bench/memory_churn tlsf 10000 1 $n
//   done
#include "binned_offset_allocator.hpp"
#include "churn_workload.hpp"

#include <apt/vgpu/memory/tlsf_arena.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

using namespace apt::vgpu::bench;

template <class Allocator>
std::uint64_t run(Allocator& allocator, std::size_t live, std::int64_t distribution, std::uint64_t pairs) {
  auto blocks = fragmented_blocks(allocator, live, distribution);
  const ChurnOps ops(live, distribution);
  for (std::uint64_t i = 0; i < pairs; ++i) {
    const std::size_t k = i & (ChurnOps::kCycle - 1);
    allocator.free(blocks[ops.victims[k]]);
    blocks[ops.victims[k]] = *allocator.allocate(ops.sizes[k]);
  }
  return blocks.size();  // used, so the loop is not optimised away
}

bool parse(const char* text, std::uint64_t& value) {
  char* end = nullptr;
  value = std::strtoull(text, &end, 10);
  return end != text && *end == '\0';
}

int usage(const char* why) {
  std::fprintf(stderr,
               "memory_churn: %s\nusage: memory_churn tlsf|model|wide-model|manager LIVE 0|1 PAIRS "
               "(e.g. memory_churn tlsf 10000 1 200000)\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) return usage("four arguments expected");
  const std::string_view which = argv[1];
  std::uint64_t live = 0;
  std::uint64_t distribution = 0;
  std::uint64_t pairs = 0;
  if (!parse(argv[2], live) || live == 0 || live > kMaxBlocks / 4) return usage("LIVE: give a count from 1 to 262144");
  if (!parse(argv[3], distribution) || distribution > 1) return usage("DISTRIBUTION: give 0 (uniform) or 1 (log-uniform)");
  if (!parse(argv[4], pairs)) return usage("PAIRS: give a count");
  const auto d = static_cast<std::int64_t>(distribution);
  std::uint64_t result = 0;
  if (which == "tlsf") {
    apt::vgpu::memory::TlsfArena arena(capacity_for(d));
    result = run(arena, live, d, pairs);
  } else if (which == "model") {
    BinnedOffsetAllocator model(capacity_for(d), kMaxBlocks);
    result = run(model, live, d, pairs);
  } else if (which == "wide-model") {
    WideIdOffsetAllocator model{BinnedOffsetAllocator(capacity_for(d), kMaxBlocks)};
    result = run(model, live, d, pairs);
  } else if (which == "manager") {
    apt::vgpu::memory::GPUMemoryManager manager(churn_manager_options(d));
    ManagerAdapter adapter{manager};
    result = run(adapter, live, d, pairs);
  } else {
    return usage(("ALLOCATOR: '" + std::string(which) + "' is not tlsf, model, wide-model or manager").c_str());
  }
  std::printf("%llu blocks live after %llu pairs\n", static_cast<unsigned long long>(result),
              static_cast<unsigned long long>(pairs));
  return 0;
}
