#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>

#include <gtest/gtest.h>

namespace apt::vgpu {
namespace {

TEST(ParseSize, SiAndBinaryUnits) {
  EXPECT_EQ(parse_size("20GB"), 20'000'000'000ULL);
  EXPECT_EQ(parse_size("20GiB"), 20ULL << 30U);
  EXPECT_EQ(parse_size("512MiB"), 512ULL << 20U);
  EXPECT_EQ(parse_size("1KB"), 1000U);
  EXPECT_EQ(parse_size("1KiB"), 1024U);
  EXPECT_EQ(parse_size("2TB"), 2'000'000'000'000ULL);
  EXPECT_EQ(parse_size("1TiB"), 1ULL << 40U);
  EXPECT_EQ(parse_size("100B"), 100U);
  EXPECT_EQ(parse_size("12345"), 12345U);
}

TEST(ParseSize, CaseSpacesAndFractions) {
  EXPECT_EQ(parse_size("20gb"), 20'000'000'000ULL);
  EXPECT_EQ(parse_size(" 16 GiB "), 16ULL << 30U);
  EXPECT_EQ(parse_size("1.5GB"), 1'500'000'000ULL);
  EXPECT_EQ(parse_size("0.5GiB"), 512ULL << 20U);
}

TEST(ParseSize, FractionsAbove2To63AreExactNotClamped) {
  // llround() caps at 2^63: 9300000.5TB once came back as 9223372036854775808.
  EXPECT_EQ(parse_size("9300000.5TB"), 9'300'000'500'000'000'000ULL);
  EXPECT_THROW((void)parse_size("18.5EiB"), InvalidArgument);
  EXPECT_THROW((void)parse_size("18446744.1TB"), InvalidArgument);
}

TEST(ParseSize, AFractionBeyondEveryDoubleIsTooLargeNotAnUntypedError) {
  // Found by the parser fuzzer: std::stod threw std::out_of_range for this.
  const std::string huge = "9" + std::string(320, '9') + ".5TB";
  try {
    (void)parse_size(huge, "memory");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("too large"), std::string::npos) << e.what();
  }
  EXPECT_EQ(parse_size(".5GB"), 500'000'000ULL);
}

TEST(ParseSize, RejectsBadInputNamingTheValueAndField) {
  for (const char* bad : {"", "GB", "-1GB", "20XB", "20G", "1.5", "1.2.3GB", "abc", "99999999999999999999",
                          "20000000000TB"}) {
    try {
      (void)parse_size(bad, "memory_limit");
      FAIL() << "accepted '" << bad << "'";
    } catch (const InvalidArgument& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("memory_limit"), std::string::npos) << message;
      EXPECT_NE(message.find(std::string("'") + bad + "'"), std::string::npos) << message;
      EXPECT_NE(message.find("20GiB"), std::string::npos) << "message should show the accepted forms: " << message;
    }
  }
}

TEST(ParseSize, AmbiguousSingleLetterUnitSuggestsBoth) {
  try {
    (void)parse_size("20G");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("GB or GiB"), std::string::npos) << e.what();
  }
}

TEST(FormatSize, HumanReadable) {
  EXPECT_EQ(format_size(0), "0 B");
  EXPECT_EQ(format_size(512), "512 B");
  EXPECT_EQ(format_size(20'000'000'000ULL), "20 GB");
  EXPECT_EQ(format_size(1'500'000'000ULL), "1.5 GB");
  EXPECT_EQ(format_size(85'520'809'984ULL), "85.52 GB");
}

TEST(FormatSizeExact, RoundTrips) {
  for (std::uint64_t bytes : {1ULL, 1000ULL, 1024ULL, 20'000'000'000ULL, 20ULL << 30U, 12345ULL, 1ULL << 40U,
                              1'500'000'000ULL, 85'520'809'984ULL}) {
    EXPECT_EQ(parse_size(format_size_exact(bytes)), bytes) << format_size_exact(bytes);
  }
  EXPECT_EQ(format_size_exact(20'000'000'000ULL), "20GB");
  EXPECT_EQ(format_size_exact(16ULL << 30U), "16GiB");
}

}  // namespace
}  // namespace apt::vgpu
