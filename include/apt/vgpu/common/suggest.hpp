// "Did you mean ...?" for typos in keys, names and enum values.
//
// Thread safety: pure functions.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace apt::vgpu {

// Edit distance (optimal string alignment: Levenshtein plus swaps of
// neighbouring characters), case-sensitive.
[[nodiscard]] std::size_t edit_distance(std::string_view a, std::string_view b);

// The candidate closest to `word`, if it is close enough to be a plausible
// typo (distance <= max(2, |word|/3)); ties go to the first candidate.
[[nodiscard]] std::optional<std::string> nearest(std::string_view word, const std::vector<std::string>& candidates);

// Joins strings with ", " (for messages listing valid choices).
[[nodiscard]] std::string join(const std::vector<std::string>& items, std::string_view separator = ", ");

}  // namespace apt::vgpu
