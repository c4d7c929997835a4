#include <apt/vgpu/config/config_error.hpp>
#include <apt/vgpu/config/task_file.hpp>

#include "detail/yaml_reader.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace apt::vgpu::config {
namespace {

const std::vector<std::string> kTaskKeys{"name",        "command", "memory", "compute", "priority",
                                         "user",        "group",   "max_retries", "timeout", "count",
                                         "gpu",         "fallback_gpu", "isolation"};

void read_command(detail::Reader& r, const YAML::Node& task, const std::string& path, TaskFileEntry& out) {
  const YAML::Node command = task["command"];
  const std::string key = path + ".command";
  if (!command) {
    r.issue(task.Mark(), key, "missing; give a list like [python3, train.py] or a shell string");
    return;
  }
  if (command.IsScalar() && !command.Scalar().empty()) {
    out.argv = {"/bin/sh", "-c", command.Scalar()};
    return;
  }
  if (command.IsSequence() && command.size() > 0) {
    for (const YAML::Node& arg : command) {
      if (!arg.IsScalar()) {
        r.issue(arg.Mark(), key, fmt::format("each argument must be a string, got {}", detail::Reader::describe(arg)));
        return;
      }
      out.argv.push_back(arg.Scalar());
    }
    if (out.argv.front().empty()) r.issue(command.Mark(), key, "the program (first argument) is empty");
    return;
  }
  r.issue(command.Mark(), key,
          fmt::format("expected a non-empty list of arguments or a shell string, got {}", detail::Reader::describe(command)));
}

}  // namespace

std::vector<TaskFileEntry> parse_task_file(std::string_view yaml_text, const std::string& file) {
  detail::Reader r(file);
  const YAML::Node root = r.load(yaml_text);
  std::vector<TaskFileEntry> out;
  if (!root.IsMap() || !root["tasks"] || !root["tasks"].IsSequence() || root["tasks"].size() == 0) {
    r.issue(root.Mark(), "tasks", "expected a top-level 'tasks:' list with at least one task");
    throw ConfigError(std::move(r.issues()));
  }
  (void)r.check_map(root, "", {"tasks"});
  std::size_t index = 0;
  for (const YAML::Node& task : root["tasks"]) {
    const std::string path = fmt::format("tasks[{}]", index++);
    if (!r.check_map(task, path, kTaskKeys)) continue;
    TaskFileEntry entry;
    read_command(r, task, path, entry);
    r.read_string(task, path, "name", entry.name);
    std::optional<std::uint64_t> memory;
    r.read_size(task, path, "memory", true, memory);
    entry.memory = memory.value_or(0);
    r.read_optional_double(task, path, "compute", 0.0, 1.0, /*min_exclusive=*/true, entry.compute);
    r.read_int(task, path, "priority", -1000, 1000, entry.priority);
    r.read_string(task, path, "user", entry.user);
    r.read_string(task, path, "group", entry.group);
    r.read_optional_int(task, path, "max_retries", 0, 100, entry.max_retries);
    r.read_duration(task, path, "timeout", std::chrono::milliseconds(1), std::chrono::hours(24 * 30), entry.timeout);
    r.read_int(task, path, "count", 1, 100'000, entry.count);
    r.read_optional_int(task, path, "gpu", 0, 1023, entry.gpu);
    r.read_optional_int(task, path, "fallback_gpu", 0, 1023, entry.fallback_gpu);
    std::string isolation;
    r.read_enum(task, path, "isolation", {"none", "intercept", "mps"}, isolation);
    if (!isolation.empty()) entry.isolation = parse_isolation(isolation);
    out.push_back(std::move(entry));
  }
  if (!r.issues().empty()) throw ConfigError(std::move(r.issues()));
  return out;
}

std::vector<TaskFileEntry> load_task_file(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw ConfigError(fmt::format("{}: cannot read the task file: {}", file.string(), std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  return parse_task_file(text.str(), file.string());
}

}  // namespace apt::vgpu::config
