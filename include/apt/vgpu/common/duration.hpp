// Durations as users write them: "90" or "90s" (seconds), "250ms", "5m",
// "2h", "1d", with fractions ("1.5h"). Every value must be finite, positive
// and at most 10 years; anything else is an InvalidArgument naming the field,
// the value and the accepted forms.
//
// Thread safety: pure functions.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace apt::vgpu {

[[nodiscard]] std::chrono::milliseconds parse_duration(std::string_view text, std::string_view what = "duration");

// The shortest exact spelling parse_duration() reads back ("90s", "5m", "250ms").
[[nodiscard]] std::string format_duration(std::chrono::milliseconds duration);

}  // namespace apt::vgpu
