// Byte sizes as users write them: "20GB" (SI, 20*10^9, as GPU vendors label
// cards), "20GiB" (binary, 20*2^30), also B, KB, KiB, MB, MiB, TB, TiB and bare
// integers (bytes). Fractions are allowed with a unit ("1.5GB"). Units are
// case-sensitive in the binary 'i' only: "gb" and "GB" both mean 10^9.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace apt::vgpu {

// Parses a size string. Throws InvalidArgument naming the value and the
// accepted forms when the text is not a size or overflows 64 bits. `what`
// names the field in the message (e.g. "memory_limit").
[[nodiscard]] std::uint64_t parse_size(std::string_view text, std::string_view what = "size");

// Formats bytes for people: the largest SI unit that keeps the number >= 1,
// with up to two decimals and no trailing zeros ("20 GB", "1.5 GB", "512 B").
[[nodiscard]] std::string format_size(std::uint64_t bytes);

// The exact spelling parse_size() reads back to the same value, with the
// largest unit that divides it ("20GB", "20GiB", "1500MB", "12345").
[[nodiscard]] std::string format_size_exact(std::uint64_t bytes);

}  // namespace apt::vgpu
