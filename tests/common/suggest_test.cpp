#include <apt/vgpu/common/suggest.hpp>

#include <gtest/gtest.h>

namespace apt::vgpu {
namespace {

TEST(EditDistance, Basics) {
  EXPECT_EQ(edit_distance("", ""), 0U);
  EXPECT_EQ(edit_distance("abc", ""), 3U);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3U);
  EXPECT_EQ(edit_distance("max_virtual_gpu", "max_virtual_gpus"), 1U);
  EXPECT_EQ(edit_distance("fiar", "fair"), 1U) << "a swap of neighbours is one edit";
}

TEST(Nearest, SuggestsOnlyPlausibleTypos) {
  const std::vector<std::string> keys{"enabled", "max_virtual_gpus", "scheduling", "isolation"};
  EXPECT_EQ(nearest("max_virtual_gpu", keys), "max_virtual_gpus");
  EXPECT_EQ(nearest("sheduling", keys), "scheduling");
  EXPECT_EQ(nearest("isolaton", keys), "isolation");
  EXPECT_FALSE(nearest("completely_different", keys).has_value());
}

TEST(Join, JoinsWithSeparator) {
  EXPECT_EQ(join({"a", "b", "c"}), "a, b, c");
  EXPECT_EQ(join({}), "");
  EXPECT_EQ(join({"x"}, "|"), "x");
}

}  // namespace
}  // namespace apt::vgpu
