#include <apt/vgpu/config/config_error.hpp>
#include <apt/vgpu/config/load_profile.hpp>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace apt::vgpu::config {
namespace {

namespace fs = std::filesystem;

// Parses `yaml` and returns the single issue it must produce.
ConfigIssue only_issue(const std::string& yaml) {
  try {
    (void)parse_profile(yaml, "test.yaml", "test");
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.issues().size(), 1U) << e.what();
    if (!e.issues().empty()) return e.issues().front();
  }
  ADD_FAILURE() << "profile was accepted:\n" << yaml;
  return {};
}

TEST(Profiles, EveryShippedProfileLoadsAndValidates) {
  for (const char* name : {"standard", "training", "inference", "development", "research"}) {
    const Config c = load_profile(name);
    EXPECT_EQ(c.name, name);
    EXPECT_TRUE(fs::exists(c.source)) << c.source;
  }
}

TEST(Profiles, StandardMatchesTheSeed) {
  const VgpuConfig v = load_profile("standard").vgpu;
  EXPECT_TRUE(v.enabled);
  EXPECT_EQ(v.max_virtual_gpus, 8U);
  EXPECT_EQ(v.scheduling, "fair");
  EXPECT_EQ(v.isolation, Isolation::intercept) << "the seed's isolation: true";
  EXPECT_TRUE(v.memory_pooling);
  EXPECT_EQ(v.runtime.context_switching, "fast");
  EXPECT_TRUE(v.runtime.preemption);
  EXPECT_TRUE(v.monitoring.enabled);
  EXPECT_DOUBLE_EQ(v.monitoring.interval_seconds, 1.0);
  EXPECT_EQ(v.monitoring.metrics, (std::vector<std::string>{"utilization", "memory", "temperature"}));
}

TEST(Profiles, TrainingCarriesVirtualGpuDefaults) {
  const VgpuConfig v = load_profile("training").vgpu;
  EXPECT_EQ(v.virtual_gpu.memory_limit, 40'000'000'000ULL);
  EXPECT_EQ(v.virtual_gpu.compute_ratio, 0.5);
  EXPECT_TRUE(v.virtual_gpu.auto_recover);
  EXPECT_EQ(v.virtual_gpu.fallback_gpu, 1U);
  EXPECT_EQ(v.scheduler.max_retries, 3U);
  EXPECT_EQ(v.memory.fragmentation_threshold, 0.05);
}

TEST(Profiles, ShowRoundTripsThroughTheParser) {
  for (const char* name : {"standard", "training", "inference", "development", "research"}) {
    const Config original = load_profile(name);
    const Config again = parse_profile(to_yaml(original), "shown.yaml", name);
    EXPECT_EQ(to_yaml(again).substr(to_yaml(again).find('\n')), to_yaml(original).substr(to_yaml(original).find('\n')))
        << name;
  }
}

TEST(ProfileErrors, UnknownKeySuggestsTheNearestWithLineAndColumn) {
  const ConfigIssue issue = only_issue("vgpu:\n  enabled: true\n  max_virtual_gpu: 8\n");
  EXPECT_EQ(issue.file, "test.yaml");
  EXPECT_EQ(issue.line, 3);
  EXPECT_EQ(issue.column, 3);
  EXPECT_EQ(issue.key, "vgpu.max_virtual_gpu");
  EXPECT_NE(issue.message.find("did you mean 'max_virtual_gpus'"), std::string::npos) << issue.message;
  EXPECT_EQ(issue.to_string().rfind("test.yaml:3:3: vgpu.max_virtual_gpu: unknown key", 0), 0U) << issue.to_string();
}

TEST(ProfileErrors, UnknownKeyWithoutCloseMatchListsValidKeys) {
  const ConfigIssue issue = only_issue("vgpu:\n  runtime:\n    zzzzzzzz: 1\n");
  EXPECT_EQ(issue.key, "vgpu.runtime.zzzzzzzz");
  EXPECT_NE(issue.message.find("context_switching, preemption"), std::string::npos) << issue.message;
}

TEST(ProfileErrors, WrongTypes) {
  EXPECT_EQ(only_issue("vgpu:\n  enabled: maybe\n").key, "vgpu.enabled");
  EXPECT_EQ(only_issue("vgpu:\n  max_virtual_gpus: eight\n").key, "vgpu.max_virtual_gpus");
  EXPECT_EQ(only_issue("vgpu:\n  max_virtual_gpus: 2.5\n").key, "vgpu.max_virtual_gpus");
  EXPECT_EQ(only_issue("vgpu:\n  monitoring:\n    interval: [1]\n").key, "vgpu.monitoring.interval");
  EXPECT_EQ(only_issue("vgpu:\n  monitoring:\n    metrics: utilization\n").key, "vgpu.monitoring.metrics");
  EXPECT_EQ(only_issue("vgpu:\n  runtime: fast\n").key, "vgpu.runtime");
  EXPECT_EQ(only_issue("vgpu: [1, 2]\n").key, "vgpu");
  const ConfigIssue issue = only_issue("vgpu:\n  enabled: maybe\n");
  EXPECT_NE(issue.message.find("expected true or false, got 'maybe'"), std::string::npos) << issue.message;
}

TEST(ProfileErrors, OutOfRangeValues) {
  EXPECT_EQ(only_issue("vgpu:\n  max_virtual_gpus: 0\n").key, "vgpu.max_virtual_gpus");
  EXPECT_EQ(only_issue("vgpu:\n  oversubscription: 0.5\n").key, "vgpu.oversubscription");
  EXPECT_EQ(only_issue("vgpu:\n  virtual_gpu:\n    compute_ratio: 0\n").key, "vgpu.virtual_gpu.compute_ratio");
  EXPECT_EQ(only_issue("vgpu:\n  virtual_gpu:\n    compute_ratio: 1.01\n").key, "vgpu.virtual_gpu.compute_ratio");
  EXPECT_EQ(only_issue("vgpu:\n  monitoring:\n    interval: 0\n").key, "vgpu.monitoring.interval");
  EXPECT_EQ(only_issue("vgpu:\n  memory:\n    fragmentation_threshold: 1.5\n").key,
            "vgpu.memory.fragmentation_threshold");
  EXPECT_EQ(only_issue("vgpu:\n  memory:\n    alignment: 100\n").key, "vgpu.memory.alignment");
  EXPECT_EQ(only_issue("vgpu:\n  memory:\n    alignment: 0\n").key, "vgpu.memory.alignment");
  const ConfigIssue coarse = only_issue("vgpu:\n  memory:\n    alignment: 32MiB\n");
  EXPECT_EQ(coarse.key, "vgpu.memory.alignment");
  EXPECT_NE(coarse.message.find("at most 16MiB"), std::string::npos) << coarse.message;
  const ConfigIssue issue = only_issue("vgpu:\n  max_virtual_gpus: 0\n");
  EXPECT_NE(issue.message.find("use 1..4096"), std::string::npos) << issue.message;
}

TEST(ProfileErrors, BadEnumValuesSuggest) {
  const ConfigIssue issue = only_issue("vgpu:\n  scheduling: fiar\n");
  EXPECT_EQ(issue.key, "vgpu.scheduling");
  EXPECT_NE(issue.message.find("fifo, priority, fair, adaptive"), std::string::npos) << issue.message;
  EXPECT_EQ(only_issue("vgpu:\n  monitoring:\n    metrics: [utilization, temprature]\n").key, "vgpu.monitoring.metrics");
  EXPECT_EQ(only_issue("vgpu:\n  isolation: sandbox\n").key, "vgpu.isolation");
  EXPECT_EQ(only_issue("vgpu:\n  scheduler:\n    placement: first_fit\n").key, "vgpu.scheduler.placement");
}

TEST(ProfileErrors, BadSizesNameTheValue) {
  const ConfigIssue issue = only_issue("vgpu:\n  virtual_gpu:\n    memory_limit: 20XB\n");
  EXPECT_EQ(issue.key, "vgpu.virtual_gpu.memory_limit");
  EXPECT_EQ(issue.line, 3);
  EXPECT_NE(issue.message.find("'20XB'"), std::string::npos) << issue.message;
  EXPECT_EQ(only_issue("vgpu:\n  simulated_node:\n    memory: 0\n").key, "vgpu.simulated_node.memory");
}

TEST(ProfileErrors, CrossFieldChecks) {
  const ConfigIssue issue = only_issue("vgpu:\n  virtual_gpu:\n    gpu: 1\n    fallback_gpu: 1\n");
  EXPECT_EQ(issue.key, "vgpu.virtual_gpu.fallback_gpu");
}

TEST(ProfileErrors, AllProblemsAreReportedAtOnce) {
  try {
    (void)parse_profile("vgpu:\n  enabeld: true\n  scheduling: x\n  oversubscription: 0\n", "multi.yaml", "multi");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.issues().size(), 3U) << e.what();
    EXPECT_TRUE(e.is_usage_error());
  }
}

TEST(ProfileErrors, StructuralProblems) {
  EXPECT_NE(only_issue("").message.find("empty"), std::string::npos);
  EXPECT_NE(only_issue("other: 1\nvgpu: {}\n").key.find("other"), std::string::npos);
  try {
    (void)parse_profile("monitoring: {}\n", "flat.yaml", "flat");
    FAIL();
  } catch (const ConfigError& e) {
    ASSERT_EQ(e.issues().size(), 2U) << e.what();
    EXPECT_EQ(e.issues()[0].key, "monitoring");
    EXPECT_EQ(e.issues()[1].key, "vgpu");
  }
  EXPECT_NE(only_issue("vgpu: {enabled: true\n").message.find("not valid YAML"), std::string::npos);
  const ConfigIssue missing = only_issue("{}\n");
  EXPECT_EQ(missing.key, "vgpu");
}

TEST(ProfileSearch, ExplicitPathEnvPathThenLocalDirectory) {
  const fs::path dir = fs::temp_directory_path() / "vgpu-profile-search-test";
  fs::create_directories(dir);
  std::ofstream(dir / "standard.yaml") << "vgpu:\n  max_virtual_gpus: 3\n";
  std::ofstream(dir / "mine.yaml") << "vgpu:\n  max_virtual_gpus: 5\n";

  const char* saved = std::getenv("VGPU_PROFILE_PATH");
  const std::string saved_value = saved != nullptr ? saved : "";
  ::setenv("VGPU_PROFILE_PATH", dir.c_str(), 1);
  EXPECT_EQ(load_profile("standard").vgpu.max_virtual_gpus, 3U) << "$VGPU_PROFILE_PATH comes before ./profiles";
  EXPECT_EQ(load_profile("mine").vgpu.max_virtual_gpus, 5U);
  EXPECT_EQ(load_profile((dir / "mine.yaml").string()).vgpu.max_virtual_gpus, 5U);
  ::unsetenv("VGPU_PROFILE_PATH");
  // Tests run from the source root, so ./profiles holds the shipped profiles.
  EXPECT_EQ(load_profile("standard").vgpu.max_virtual_gpus, 8U);
  if (saved != nullptr) ::setenv("VGPU_PROFILE_PATH", saved_value.c_str(), 1);
  fs::remove_all(dir);
}

TEST(ProfileSearch, UnknownNameListsWhatExistsAndSuggests) {
  try {
    (void)load_profile("standrd");
    FAIL();
  } catch (const ConfigError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("did you mean 'standard'"), std::string::npos) << message;
    EXPECT_NE(message.find("available: "), std::string::npos) << message;
    EXPECT_NE(message.find("training"), std::string::npos) << message;
  }
  EXPECT_THROW((void)load_profile("/nonexistent/profile.yaml"), ConfigError);
  EXPECT_THROW((void)load_profile(""), ConfigError);
}

TEST(Isolation, ParsesSeedBooleansAndModes) {
  EXPECT_EQ(parse_isolation("true"), Isolation::intercept);
  EXPECT_EQ(parse_isolation("false"), Isolation::none);
  EXPECT_EQ(parse_isolation("mps"), Isolation::mps);
  EXPECT_THROW((void)parse_isolation("vm"), InvalidArgument);
}

}  // namespace
}  // namespace apt::vgpu::config
