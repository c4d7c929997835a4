#include <apt/vgpu/common/duration.hpp>
#include <apt/vgpu/common/error.hpp>

#include <gtest/gtest.h>

namespace apt::vgpu {
namespace {

using std::chrono::milliseconds;

TEST(ParseDuration, UnitsAndFractions) {
  EXPECT_EQ(parse_duration("90"), milliseconds(90'000));
  EXPECT_EQ(parse_duration("90s"), milliseconds(90'000));
  EXPECT_EQ(parse_duration("250ms"), milliseconds(250));
  EXPECT_EQ(parse_duration("5m"), milliseconds(300'000));
  EXPECT_EQ(parse_duration("5min"), milliseconds(300'000));
  EXPECT_EQ(parse_duration("1.5h"), milliseconds(5'400'000));
  EXPECT_EQ(parse_duration("1d"), milliseconds(86'400'000));
}

TEST(ParseDuration, NonFiniteNegativeZeroAndHugeAreErrorsNamingTheField) {
  // `--timeout inf` once said "timed out after -9223372036854775808 ms".
  for (const char* bad : {"", "inf", "nan", "-1", "0", "0s", "0.0001s", "5x", "1e400", "s", "11000d", "1..5s"}) {
    try {
      (void)parse_duration(bad, "--timeout");
      FAIL() << "accepted '" << bad << "'";
    } catch (const InvalidArgument& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("--timeout"), std::string::npos) << message;
      EXPECT_NE(message.find(std::string("'") + bad + "'"), std::string::npos) << message;
    }
  }
}

TEST(FormatDuration, ReadsBackExactly) {
  for (const char* text : {"250ms", "90s", "5m", "2h", "1d"}) EXPECT_EQ(format_duration(parse_duration(text)), text);
}

}  // namespace
}  // namespace apt::vgpu
