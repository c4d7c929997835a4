#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/scheduler/trace_jobs.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <fmt/format.h>
#include <fstream>

namespace apt::vgpu::scheduler {
namespace {

std::vector<std::string_view> split(std::string_view line) {
  std::vector<std::string_view> out;
  while (true) {
    const auto pos = line.find(',');
    out.push_back(line.substr(0, pos));
    if (pos == std::string_view::npos) break;
    line.remove_prefix(pos + 1);
  }
  return out;
}

struct Row {
  const std::string& file;
  std::size_t line;
  std::vector<std::string_view> fields;

  [[noreturn]] void fail(const std::string& why) const {
    throw InvalidArgument(fmt::format("{}:{}: {}", file, line, why));
  }
  double number(std::size_t i, const char* what) const {
    if (i >= fields.size()) fail(fmt::format("missing column {} ({})", i + 1, what));
    std::string_view f = fields[i];
    double value = 0;
    auto [ptr, ec] = std::from_chars(f.data(), f.data() + f.size(), value);
    if (f.empty() || ec != std::errc{} || ptr != f.data() + f.size()) {
      fail(fmt::format("{} '{}' is not a number", what, f));
    }
    // from_chars reads "nan" and "inf": a NaN duration once hung the simulator.
    if (!std::isfinite(value)) fail(fmt::format("{} '{}' is not a finite number", what, f));
    return value;
  }
  // A whole number in [0, max] (GPU counts, priorities): "4294967297" or "1.5" are errors, not casts.
  std::uint32_t count(std::size_t i, const char* what, std::uint32_t max) const {
    if (i >= fields.size()) fail(fmt::format("missing column {} ({})", i + 1, what));
    std::string_view f = fields[i];
    std::uint64_t value = 0;
    auto [ptr, ec] = std::from_chars(f.data(), f.data() + f.size(), value);
    if (f.empty() || ec != std::errc{} || ptr != f.data() + f.size() || value > max) {
      fail(fmt::format("{} '{}' is not a whole number in 0..{}", what, f, max));
    }
    return static_cast<std::uint32_t>(value);
  }
  std::string_view text(std::size_t i) const { return i < fields.size() ? fields[i] : std::string_view{}; }
};

Demand fractional(double share_milli, std::uint64_t memory_per_gpu) {
  Demand d;
  d.gpu_count = 1;
  d.compute_milli = static_cast<std::uint32_t>(std::clamp(share_milli, 1.0, 1000.0));
  d.memory = static_cast<std::uint64_t>(static_cast<long double>(memory_per_gpu) * d.compute_milli / 1000.0L);
  return d;
}

Demand whole(std::uint32_t gpus, std::uint64_t memory_per_gpu) {
  return Demand{memory_per_gpu, kWholeGpuMilli, gpus};
}

// Philly's servers had up to 8 GPUs; larger jobs ran across servers.
constexpr std::uint32_t kPhillyServerGpus = 8;

int qos_priority(std::string_view qos) {
  if (qos == "LS") return 3;
  if (qos == "Guaranteed") return 2;
  if (qos == "Burstable") return 1;
  return 0;
}

// "2017-10-09 07:01:55" as seconds since the epoch (UTC).
double parse_timestamp(const Row& row, std::string_view text) {
  std::tm tm{};
  const std::string s(text);
  if (s.size() < 19 || std::sscanf(s.c_str(), "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                                   &tm.tm_min, &tm.tm_sec) != 6) {
    row.fail(fmt::format("timestamp '{}' is not YYYY-MM-DD HH:MM:SS", text));
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<double>(timegm(&tm));
}

}  // namespace

TraceLoadResult load_trace_jobs(const std::string& path, std::uint64_t memory_per_gpu) {
  std::ifstream in(path);
  if (!in) throw InvalidArgument(fmt::format("trace: cannot open {}", path));
  return parse_trace_jobs(in, path, memory_per_gpu);
}

TraceLoadResult parse_trace_jobs(std::istream& in, const std::string& path, std::uint64_t memory_per_gpu) {
  std::string header;
  if (!std::getline(in, header)) throw InvalidArgument(fmt::format("{}: empty trace", path));
  if (!header.empty() && header.back() == '\r') header.pop_back();
  TraceLoadResult result;
  if (header.rfind("name,cpu_milli,memory_mib,num_gpu,gpu_milli", 0) == 0) {
    result.format = "alibaba";
  } else if (header.rfind("timestamp,duration,num_gpus", 0) == 0) {
    result.format = "philly";
  } else if (header.rfind("submit,duration,gpus,gpu_share", 0) == 0) {
    result.format = "csv";
  } else {
    throw InvalidArgument(fmt::format(
        "{}:1: unknown trace format; expected the Alibaba PAI pod list, the Philly job list, or our CSV with header "
        "'submit,duration,gpus,gpu_share,memory,priority,group'",
        path));
  }
  std::string text;
  std::size_t line = 1;
  std::uint64_t next_id = 0;
  while (std::getline(in, text)) {
    ++line;
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.empty()) continue;
    Row row{path, line, split(text)};
    SimJob job;
    job.id = next_id++;
    if (result.format == "alibaba") {
      const auto gpus = row.count(3, "num_gpu", 4096);
      job.submit = row.number(8, "creation_time");
      const double deletion = row.number(9, "deletion_time");
      if (row.text(10).empty()) {
        // Pending until deleted in the trace: offered to our scheduler for as long as it waited there.
        job.patience = std::max(1.0, deletion - job.submit);
        job.duration = job.patience;
      } else {
        job.duration = std::max(1.0, deletion - row.number(10, "scheduled_time"));
      }
      if (gpus == 0) {
        job.demand = Demand{0, 0, 0};
      } else {
        job.demand = gpus == 1 ? fractional(row.number(4, "gpu_milli"), memory_per_gpu) : whole(gpus, memory_per_gpu);
      }
      job.demand.cpu_milli = row.count(1, "cpu_milli", UINT32_MAX);
      job.demand.host_memory = static_cast<std::uint64_t>(row.count(2, "memory_mib", UINT32_MAX)) << 20;
      job.gpu_models = std::string(row.text(5));
      job.group = std::string(row.text(6));
      job.priority = qos_priority(job.group);
    } else if (result.format == "philly") {
      job.submit = parse_timestamp(row, row.text(0));
      job.duration = std::max(1.0, row.number(1, "duration"));
      const auto gpus = row.count(2, "num_gpus", 4096);
      if (gpus == 0) {
        ++result.skipped;
        continue;
      }
      job.demand = whole(gpus, memory_per_gpu);
      job.demand.multi_node = gpus > kPhillyServerGpus;
      job.group = std::string(row.text(4));
    } else {
      job.submit = row.number(0, "submit");
      job.duration = row.number(1, "duration");
      if (job.duration <= 0) row.fail("duration must be positive");
      const auto gpus = row.count(2, "gpus", 4096);
      const double share = row.number(3, "gpu_share");
      if (gpus == 0) row.fail("gpus must be at least 1");
      if (!(share > 0.0 && share <= 1.0)) row.fail(fmt::format("gpu_share {} is not in (0, 1]", share));
      job.demand = gpus == 1 ? fractional(share * 1000.0, memory_per_gpu) : whole(gpus, memory_per_gpu);
      if (!row.text(4).empty()) {
        try {
          job.demand.memory = parse_size(row.text(4), "memory");
        } catch (const InvalidArgument& e) {
          row.fail(e.what());
        }
      }
      if (!row.text(5).empty()) {
        const double priority = row.number(5, "priority");
        if (priority != std::floor(priority) || priority < -1000 || priority > 1000) {
          row.fail(fmt::format("priority '{}' is not a whole number in -1000..1000", row.text(5)));
        }
        job.priority = static_cast<int>(priority);
      }
      job.group = std::string(row.text(6));
    }
    result.jobs.push_back(std::move(job));
  }
  std::stable_sort(result.jobs.begin(), result.jobs.end(), [](const SimJob& a, const SimJob& b) { return a.submit < b.submit; });
  if (!result.jobs.empty()) {
    const double origin = result.jobs.front().submit;
    for (SimJob& j : result.jobs) j.submit -= origin;
  }
  return result;
}

}  // namespace apt::vgpu::scheduler
