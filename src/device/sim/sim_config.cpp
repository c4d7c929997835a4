#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/device/sim_config.hpp>

#include <charconv>
#include <cstdlib>
#include <fmt/format.h>

namespace apt::vgpu::device {
namespace {

std::uint64_t parse_unsigned(std::string_view text, std::string_view what, std::string_view form) {
  std::uint64_t value = 0;
  const auto* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc{} || ptr != end) {
    throw InvalidArgument(fmt::format("{}: '{}' is not a non-negative integer; expected {}", what, text, form));
  }
  return value;
}

constexpr std::string_view kShapeForm = "COUNT[xMEMORY][:NAME], e.g. 4, 4x40GB or 2x24GiB:Simulated L4";

}  // namespace

void SimConfig::apply_shape(std::string_view spec) {
  std::string_view rest = spec;
  std::string new_name = name;
  if (const auto colon = rest.find(':'); colon != std::string_view::npos) {
    new_name = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
    if (new_name.empty()) throw InvalidArgument(fmt::format("simulated GPUs: empty name in '{}'; expected {}", spec, kShapeForm));
  }
  std::uint64_t memory = memory_per_gpu;
  if (const auto x = rest.find('x'); x != std::string_view::npos) {
    memory = parse_size(rest.substr(x + 1), "simulated GPU memory");
    rest = rest.substr(0, x);
  }
  const std::uint64_t count = parse_unsigned(rest, "simulated GPU count", kShapeForm);
  if (count == 0 || count > 1024) {
    throw InvalidArgument(fmt::format("simulated GPU count: {} is out of range; use 1..1024", count));
  }
  if (memory == 0) throw InvalidArgument("simulated GPU memory: must be more than 0 bytes, e.g. 80GB");
  gpu_count = static_cast<std::uint32_t>(count);
  memory_per_gpu = memory;
  name = std::move(new_name);
}

void SimConfig::apply_environment() {
  if (const char* shape = std::getenv("VGPU_SIM_GPUS"); shape != nullptr && *shape != '\0') {
    try {
      apply_shape(shape);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(fmt::format("VGPU_SIM_GPUS: {}", e.what()));
    }
  }
  if (const char* seed_text = std::getenv("VGPU_SIM_SEED"); seed_text != nullptr && *seed_text != '\0') {
    seed = parse_unsigned(seed_text, "VGPU_SIM_SEED", "an integer seed, e.g. 42");
  }
  if (const char* lost = std::getenv("VGPU_SIM_LOST"); lost != nullptr && *lost != '\0') {
    lost_gpus.clear();
    std::string_view list(lost);
    while (!list.empty()) {
      const auto comma = list.find(',');
      const auto item = list.substr(0, comma);
      lost_gpus.push_back(static_cast<std::uint32_t>(
          parse_unsigned(item, "VGPU_SIM_LOST", "comma-separated GPU indices, e.g. 0,3")));
      list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    }
  }
}

}  // namespace apt::vgpu::device
