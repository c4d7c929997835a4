#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/memory/allocation_trace.hpp>
#include <apt/vgpu/memory/trace_replay.hpp>

#include <gtest/gtest.h>

#include <set>
#include <sstream>

namespace apt::vgpu::memory {
namespace {

TEST(AllocationTrace, ReadsRmmLoggingCsv) {
  std::istringstream csv(
      "Thread,Time,Action,Pointer,Size,Stream\n"
      "140,10.5,allocate,0x7f0000000000,1000,0x0\n"
      "140,10.6,allocate,0x7f0000100000,2000,0x0\n"
      "140,10.7,allocate failure,0x0,99999999999,0x0\n"
      "140,10.8,free,0x7f0000000000,1000,0x0\n"
      "140,10.9,allocate,0x7f0000000000,3000,0x0\n");
  const auto events = parse_trace(csv, "rmm.csv");
  ASSERT_EQ(events.size(), 4U);
  EXPECT_EQ(events[0].kind, TraceEvent::Kind::allocate);
  EXPECT_EQ(events[0].size, 1000U);
  EXPECT_EQ(events[2].kind, TraceEvent::Kind::free);
  EXPECT_EQ(events[2].id, events[0].id);
  EXPECT_NE(events[3].id, events[0].id) << "a reused pointer is a new block";
  EXPECT_EQ(peak_live_bytes(events), 5000U);
}

TEST(AllocationTrace, OwnFormatRoundTrips) {
  const std::vector<TraceEvent> events{{TraceEvent::Kind::allocate, 1, 100},
                                       {TraceEvent::Kind::allocate, 2, 200},
                                       {TraceEvent::Kind::free, 1, 0}};
  std::stringstream text;
  write_trace(text, events);
  const auto back = parse_trace(text, "ours.txt");
  ASSERT_EQ(back.size(), 3U);
  EXPECT_EQ(back[1].id, 2U);
  EXPECT_EQ(back[1].size, 200U);
  EXPECT_EQ(back[2].kind, TraceEvent::Kind::free);
}

TEST(AllocationTrace, BadTracesNameFileAndLine) {
  auto error_of = [](const std::string& text) {
    std::istringstream in(text);
    try {
      (void)parse_trace(in, "t.txt");
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(error_of("hello\n").find("t.txt:1: unknown trace format"), std::string::npos);
  EXPECT_NE(error_of("# vgpu-trace v1\na 1 x\n").find("t.txt:2: size 'x'"), std::string::npos);
  EXPECT_NE(error_of("# vgpu-trace v1\nf 4\n").find("t.txt:2: free of block 4"), std::string::npos);
  EXPECT_NE(error_of("# vgpu-trace v1\na 1 10\na 1 10\n").find("t.txt:3: block 1 is allocated twice"), std::string::npos);
  EXPECT_NE(error_of("Thread,Time,Action,Pointer,Size,Stream\n1,1,free,0x10,5,0\n").find("t.txt:2"), std::string::npos);
  EXPECT_NE(error_of("").find("empty trace"), std::string::npos);
  // One pointer allocated twice without a free: RMM never logs that; the trace is corrupt.
  EXPECT_NE(error_of("Thread,Time,Action,Pointer,Size,Stream\n1,1,allocate,0x10,5,0\n1,2,allocate,0x10,8,0\n")
                .find("t.txt:3: pointer 0x10 is allocated again without a free in between"),
            std::string::npos);
  // Sizes no GPU holds (2^64-1 once became a 2^64-byte pool and bad_alloc).
  EXPECT_NE(error_of("# vgpu-trace v1\na 1 18446744073709551615\n").find("t.txt:2: size 18446744073709551615 is larger than 1 TiB"),
            std::string::npos);
  EXPECT_NE(error_of("Thread,Time,Action,Pointer,Size,Stream\n1,1,allocate,0x10,1099511627777,0\n").find("t.txt:2"),
            std::string::npos);
}

TEST(TraceReplay, ATraceTooLargeForAnyPoolIsAnErrorNotBadAlloc) {
  // 20 live blocks of 1 PiB: each is legal, together they exceed the largest pool (16 PiB).
  std::vector<TraceEvent> events;
  for (std::uint64_t i = 0; i < 20; ++i) events.push_back({TraceEvent::Kind::allocate, i, std::uint64_t{1} << 50});
  try {
    (void)replay(events, {});
    FAIL() << "replayed";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("give --pool-size or a smaller trace"), std::string::npos) << e.what();
  }
  ReplayOptions too_big;
  too_big.pool_size = UINT64_MAX;
  EXPECT_THROW((void)replay(events, too_big), InvalidArgument);
  // Enough of them to overflow a 64-bit count of live bytes.
  for (std::uint64_t i = 20; i < 20000; ++i) events.push_back({TraceEvent::Kind::allocate, i, std::uint64_t{1} << 50});
  EXPECT_THROW((void)peak_live_bytes(events), InvalidArgument);
}

TEST(TransformerTrace, IsDeterministicAndBalanced) {
  TransformerTraceOptions o;
  o.layers = 4;
  o.steps = 5;
  const auto a = generate_transformer_trace(o);
  const auto b = generate_transformer_trace(o);
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].size, b[i].size);
  std::set<std::uint64_t> live;
  for (const auto& e : a) {
    if (e.kind == TraceEvent::Kind::allocate) {
      EXPECT_TRUE(live.insert(e.id).second);
    } else {
      EXPECT_EQ(live.erase(e.id), 1U);
    }
  }
  EXPECT_TRUE(live.empty()) << "every block is freed";
  o.seed = 2;
  const auto c = generate_transformer_trace(o);
  EXPECT_NE(peak_live_bytes(a), 0U);
  bool differs = a.size() != c.size();
  for (std::size_t i = 0; !differs && i < a.size(); ++i) differs = a[i].size != c[i].size;
  EXPECT_TRUE(differs) << "sequence lengths vary with the seed";
}

TEST(TraceReplay, CompactionPreventsFailuresInATightPool) {
  TransformerTraceOptions o;
  o.layers = 8;
  o.steps = 12;
  const auto events = generate_transformer_trace(o);
  const std::uint64_t peak = peak_live_bytes(events);
  ReplayOptions ro;
  ro.pool_size = peak / 1000 * 1005;  // 0.5% above the peak
  ro.compaction = false;
  const ReplayReport without = replay(events, ro);
  EXPECT_GT(without.failures_with_enough_free, 0U)
      << "the trace must fragment a tight pool, or this test proves nothing";
  ro.compaction = true;
  const ReplayReport with = replay(events, ro);
  EXPECT_EQ(with.failures, 0U);
  EXPECT_EQ(with.failures_with_enough_free, 0U);
  EXPECT_GT(with.compactions, 0U);
  EXPECT_EQ(with.peak_requested, peak);
  EXPECT_EQ(with.allocations, with.frees);
  EXPECT_FALSE(with.fragmentation.empty());
}

TEST(TraceReplay, LazyCommitKeepsReservedCloseToRequestedInARoomyPool) {
  TransformerTraceOptions o;
  o.layers = 8;
  o.steps = 12;
  const auto events = generate_transformer_trace(o);
  ReplayOptions ro;
  ro.pool_size = 80'000'000'000ULL;  // far more than the trace needs: only touched chunks count
  const ReplayReport r = replay(events, ro);
  EXPECT_EQ(r.failures, 0U);
  EXPECT_GE(r.reserved_over_requested(), 1.0);
  EXPECT_LE(r.reserved_over_requested(), 1.10);
  // The allocator's address high-water mark is at least what was committed at once (chunks are
  // released as they empty), and every chunk released was committed by some call.
  EXPECT_GE(r.peak_address, r.peak_used);
  EXPECT_GE(r.address_over_requested(), 1.0);
  EXPECT_GT(r.commit_calls, 0U);
  EXPECT_GT(r.release_calls, 0U);
}

}  // namespace
}  // namespace apt::vgpu::memory
