// vgpud end to end: a real daemon (sim backend, temporary socket and state),
// driven by curl, the vgpu CLI and the C++ client.
#include "support/daemon.hpp"

#include "ledger_store.hpp"

#include <apt/vgpu/runtime/virtual_gpu.hpp>
#include <apt/vgpu/scheduler/gpu_scheduler.hpp>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <sys/stat.h>
#include <thread>

namespace apt::vgpu {
namespace {

using nlohmann::json;
using testing::Daemon;

const char* kConfig = R"(vgpu:
  max_virtual_gpus: 4096
  simulated_node: {gpus: 4, memory: 80GB}
daemon:
  request_timeout: 2s
)";

std::string vgpu_cli(const Daemon& d) { return "env VGPU_SOCKET=" + d.socket() + " " + std::string(VGPU_CLI_PATH); }

std::filesystem::path build_dir() { return std::filesystem::path(VGPU_CLI_PATH).parent_path().parent_path().parent_path(); }

bool shm_exists(const std::string& name) { return std::filesystem::exists("/dev/shm" + name); }

TEST(Vgpud, ServesTheVersionedApiToCurl) {
  Daemon d(kConfig);
  d.start();
  auto [status, body] = d.curl("GET", "/v1");
  ASSERT_EQ(status, 200) << body;
  EXPECT_EQ(json::parse(body)["api_version"], "1");
  std::tie(status, body) = d.curl("GET", "/v1/node");
  ASSERT_EQ(status, 200) << body;
  const auto node = json::parse(body);
  EXPECT_EQ(node["gpus"].size(), 4U);
  EXPECT_EQ(node["gpus"][0]["memory_free_bytes"], 80'000'000'000ULL);
  std::tie(status, body) = d.curl("GET", "/v1/health");
  EXPECT_EQ(status, 200);
  EXPECT_EQ(json::parse(body)["status"], "ok");
  std::tie(status, body) = d.curl("GET", "/v1/whoami");
  EXPECT_EQ(json::parse(body)["uid"], ::geteuid());

  std::tie(status, body) = d.curl("POST", "/v1/slices", R"({"gpu": 1, "memory": "20GB", "compute": 0.5, "name": "a"})");
  ASSERT_EQ(status, 201) << body;
  const auto slice = json::parse(body);
  const std::string id = slice["id"];
  EXPECT_EQ(slice["gpu"], 1);
  EXPECT_EQ(slice["environment"]["VGPU_MEMORY_LIMIT"], "20000000000");
  EXPECT_EQ(slice["environment"]["CUDA_VISIBLE_DEVICES"], slice["gpu_uuid"]);
  std::tie(status, body) = d.curl("GET", "/v1/slices/" + id);
  EXPECT_EQ(status, 200);
  EXPECT_EQ(json::parse(d.curl("GET", "/v1/node").second)["gpus"][1]["memory_free_bytes"], 60'000'000'000ULL);
  std::tie(status, body) = d.curl("DELETE", "/v1/slices/" + id);
  EXPECT_EQ(status, 204) << body;
  std::tie(status, body) = d.curl("DELETE", "/v1/slices/" + id);
  EXPECT_EQ(status, 404);
  EXPECT_EQ(json::parse(body)["error"]["code"], "not_found");
  EXPECT_EQ(d.stop(), 0) << d.log();
}

TEST(Vgpud, BadRequestsGetAJsonErrorNamingTheField) {
  Daemon d(kConfig);
  d.start();
  struct Case {
    std::string body;
    int status;
    std::string code;
    std::string field;  // "" when none
  };
  const std::vector<Case> cases{
      {"{not json", 400, "invalid_argument", ""},
      {R"([1, 2])", 400, "invalid_argument", ""},
      {R"({"gpux": 0})", 400, "invalid_argument", "gpux"},
      {R"({"gpu": "zero"})", 400, "invalid_argument", "gpu"},
      {R"({"gpu": -1})", 400, "invalid_argument", "gpu"},
      {R"({"gpu": 9})", 400, "invalid_argument", "gpu"},
      {R"({"memory": "20XB"})", 400, "invalid_argument", "memory"},
      {R"({"memory": 0})", 400, "invalid_argument", "memory"},
      {R"({"memory": "9300000.5TB"})", 400, "invalid_argument", "memory"},
      {R"({"compute": 1.5})", 400, "invalid_argument", "compute"},
      {R"({"compute": "half"})", 400, "invalid_argument", "compute"},
      {R"({"isolation": "vm"})", 400, "invalid_argument", "isolation"},
      {R"({"ttl": "soon"})", 400, "invalid_argument", "ttl"},
      {R"({"ttl": -5})", 400, "invalid_argument", "ttl"},
      {R"({"name": "has space"})", 400, "invalid_argument", "name"},
      {R"({"holder_pid": 1})", 400, "invalid_argument", "holder_pid"},
      {R"({"on_behalf_of": {"uid": "x"}})", 400, "invalid_argument", "on_behalf_of.uid"},
      {R"({"on_behalf_of": {"uid": 1, "extra": 2}})", 400, "invalid_argument", "on_behalf_of.extra"},
      {R"({"memory": "81GB", "gpu": 0})", 400, "invalid_argument", "memory"},
      {R"({"memory": "18446744073709551616"})", 400, "invalid_argument", "memory"},
      {R"({"memory": 18446744073709551615})", 400, "invalid_argument", "memory"},
  };
  for (const auto& c : cases) {
    const auto [status, body] = d.curl("POST", "/v1/slices", c.body);
    EXPECT_EQ(status, c.status) << c.body << " -> " << body;
    const auto j = json::parse(body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << body;
    EXPECT_EQ(j["error"]["code"], c.code) << c.body;
    if (!c.field.empty()) {
      EXPECT_EQ(j["error"]["field"], c.field) << c.body << " -> " << body;
    }
    EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
  }
  // Fits the GPU, but not now: a capacity conflict, not a bad request.
  ASSERT_EQ(d.curl("POST", "/v1/slices", R"({"memory": "50GB", "gpu": 0})").first, 201);
  auto [full, full_body] = d.curl("POST", "/v1/slices", R"({"memory": "50GB", "gpu": 0})");
  EXPECT_EQ(full, 409) << full_body;
  EXPECT_EQ(json::parse(full_body)["error"]["code"], "insufficient_capacity");
  EXPECT_EQ(json::parse(full_body)["error"]["details"]["free_bytes"], 30'000'000'000ULL);
  EXPECT_EQ(d.curl("DELETE", "/v1/slices/" + json::parse(d.curl("GET", "/v1/slices").second)[0]["id"].get<std::string>()).first, 204);
  // A body over daemon.max_body (64 KiB by default) is 413; unknown paths 404; wrong methods 405.
  auto [status, body] = d.curl("POST", "/v1/slices", "{\"name\": \"" + std::string(70'000, 'a') + "\"}");
  EXPECT_EQ(status, 413) << body;
  EXPECT_EQ(json::parse(body)["error"]["code"], "payload_too_large");
  std::tie(status, body) = d.curl("GET", "/v2/slices");
  EXPECT_EQ(status, 404);
  std::tie(status, body) = d.curl("PATCH", "/v1/node", "{}");
  EXPECT_EQ(status, 405) << body;
  std::tie(status, body) = d.curl("GET", "/v1/slices/not-an-id");
  EXPECT_EQ(status, 404);
  std::tie(status, body) = d.curl("GET", "/v1/events?since=abc");
  EXPECT_EQ(status, 400);
  EXPECT_EQ(json::parse(body)["error"]["field"], "since");
  // Nothing was granted by any of it.
  EXPECT_EQ(json::parse(d.curl("GET", "/v1/slices").second).size(), 0U);
  EXPECT_EQ(d.stop(), 0);
}

TEST(Vgpud, OverCommitAcrossTwoConcurrentCliProcessesIsRefused) {
  Daemon d(kConfig);
  d.start();
  const std::string run = "exec " + vgpu_cli(d) + " run --gpu 0 --memory 60GB --compute 0.8 -- sleep 1000 2>&1";
  auto a = testing::PipedChild::start(run);
  auto b = testing::PipedChild::start(run);
  // Exactly one gets the slice; the other is refused at once and exits 1.
  const int first = testing::wait_first_exit({a.pid, b.pid});
  ASSERT_GE(first, 0);
  auto& loser = first == 0 ? a : b;
  auto& winner = first == 0 ? b : a;
  std::string said;
  while (auto line = loser.line()) said += *line + "\n";
  EXPECT_EQ(loser.finish(), 1) << said;
  EXPECT_NE(said.find("does not fit on GPU 0"), std::string::npos) << said;
  const auto slices = d.client().list(true);
  ASSERT_EQ(slices.size(), 1U);
  EXPECT_TRUE(slices[0].ephemeral);
  // Stopping the winner (SIGTERM to vgpu) stops its command and releases the slice.
  const auto since = d.last_event();
  ::kill(winner.pid, SIGTERM);
  EXPECT_EQ(winner.finish(), 128 + SIGTERM);
  (void)d.wait_event(since, [](const json& e) { return e["type"] == "slice" && e["action"] == "deleted"; });
  EXPECT_TRUE(d.client().list(true).empty());
}

TEST(Vgpud, UsersCannotSeeOrDeleteEachOthersSlices) {
  if (!testing::running_as_root()) GTEST_SKIP() << "needs root to run a client as another user";
  Daemon d(kConfig);
  d.start();
  const auto root_slice = json::parse(d.curl("POST", "/v1/slices", R"({"memory": "10GB"})").second);
  const std::string root_id = root_slice["id"];
  const char* nobody = testing::as_nobody();
  auto [status, body] = d.curl("GET", "/v1/whoami", {}, nobody);
  ASSERT_EQ(status, 200) << body;
  EXPECT_EQ(json::parse(body)["uid"], 65534);
  EXPECT_EQ(json::parse(body)["admin"], false);
  // Nobody's own slice.
  std::tie(status, body) = d.curl("POST", "/v1/slices", R"({"memory": "5GB", "name": "mine"})", nobody);
  ASSERT_EQ(status, 201) << body;
  const std::string nobody_id = json::parse(body)["id"];
  std::tie(status, body) = d.curl("GET", "/v1/slices", {}, nobody);
  ASSERT_EQ(json::parse(body).size(), 1U) << body;
  EXPECT_EQ(json::parse(body)[0]["id"], nobody_id);
  // Root's slice is invisible to nobody, and cannot be deleted by it.
  std::tie(status, body) = d.curl("GET", "/v1/slices/" + root_id, {}, nobody);
  EXPECT_EQ(status, 404) << body;
  std::tie(status, body) = d.curl("DELETE", "/v1/slices/" + root_id, {}, nobody);
  EXPECT_EQ(status, 404) << body;
  std::tie(status, body) = d.curl("GET", "/v1/slices?all=1", {}, nobody);
  EXPECT_EQ(status, 403) << body;
  std::tie(status, body) = d.curl("POST", "/v1/slices", R"({"on_behalf_of": {"uid": 0}})", nobody);
  EXPECT_EQ(status, 403) << body;
  EXPECT_EQ(json::parse(body)["error"]["field"], "on_behalf_of");
  // Root (the admin) sees and manages both.
  EXPECT_EQ(json::parse(d.curl("GET", "/v1/slices?all=1").second).size(), 2U);
  EXPECT_EQ(d.curl("DELETE", "/v1/slices/" + nobody_id).first, 204);
  EXPECT_EQ(json::parse(d.curl("GET", "/v1/slices/" + root_id).second)["owner"]["uid"], 0);
  // The CLI as nobody (when nobody may run this build's binary: a checkout under /root is closed to it).
  if (testing::run_shell(std::string(nobody) + " test -x " + VGPU_CLI_PATH).exit_code == 0) {
    const auto r = testing::run_shell(std::string(nobody) + " " + vgpu_cli(d) + " delete " + root_id);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find("no slice " + root_id), std::string::npos) << r.err;
  }
}

TEST(Vgpud, ASlicesRegionIsOpenToItsUserAndNobodyElse) {
  if (!testing::running_as_root()) GTEST_SKIP() << "needs root to act as two users";
  Daemon d(kConfig);
  d.start();
  // nobody's intercept slice: the region stays the daemon's, nobody gets rw by ACL, others nothing.
  const auto [status, body] = d.curl("POST", "/v1/slices", R"({"memory": "1GB", "isolation": "intercept"})",
                                     testing::as_nobody());
  ASSERT_EQ(status, 201) << body;
  const std::string file = "/dev/shm" + json::parse(body)["accounting_region"].get<std::string>();
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0U) << "owned by vgpud, never chowned to the user";
  EXPECT_EQ(testing::run_shell(std::string(testing::as_nobody()) + " sh -c 'test -r " + file + " && test -w " + file + "'")
                .exit_code, 0) << "the slice's user can use it";
  EXPECT_NE(testing::run_shell("setpriv --reuid=65533 --regid=65533 --clear-groups sh -c 'test -r " + file + "'").exit_code, 0)
      << "another user cannot read it";
}

TEST(Vgpud, PerUserLimitsRefuseWith403NamingTheLimit) {
  Daemon d(std::string(kConfig) + "  limits:\n    default: {slices: 2, memory: 30GB}\n");
  d.start();
  auto c = d.client();
  runtime::SliceSpec spec;
  spec.memory_limit = 20'000'000'000ULL;
  (void)c.create(spec);
  try {
    (void)c.create(spec);
    FAIL() << "over the memory limit";
  } catch (const runtime::DaemonError& e) {
    EXPECT_EQ(e.status(), 403);
    EXPECT_EQ(e.field(), "limits.memory");
    EXPECT_NE(std::string(e.what()).find("the memory limit is 30 GB"), std::string::npos) << e.what();
  }
  spec.memory_limit = 1'000'000'000ULL;
  (void)c.create(spec);
  try {
    (void)c.create(spec);
    FAIL() << "over the slice limit";
  } catch (const runtime::DaemonError& e) {
    EXPECT_EQ(e.status(), 403);
    EXPECT_EQ(e.field(), "limits.slices");
  }
}

TEST(Vgpud, SlicesSurviveARestartWithTheSameIds) {
  Daemon d(kConfig);
  d.start();
  runtime::SliceSpec spec;
  spec.memory_limit = 8'000'000'000ULL;
  spec.isolation = config::Isolation::intercept;
  spec.name = "kept";
  const auto made = d.client().create(spec);
  ASSERT_TRUE(shm_exists(made.environment.at("VGPU_SHM_NAME")));
  d.kill9();
  d.start();
  const auto after = d.client().list();
  ASSERT_EQ(after.size(), 1U);
  EXPECT_EQ(after[0].id, made.id);
  EXPECT_EQ(after[0].name, "kept");
  EXPECT_EQ(after[0].environment.at("VGPU_SHM_NAME"), made.environment.at("VGPU_SHM_NAME")) << "the region is adopted";
  EXPECT_TRUE(shm_exists(made.environment.at("VGPU_SHM_NAME")));
  EXPECT_EQ(json::parse(d.client().get_json("/v1/node"))["gpus"][made.gpu]["memory_leased_bytes"], 8'000'000'000ULL);
  // A graceful stop keeps it too; deleting removes its region.
  EXPECT_EQ(d.stop(), 0);
  d.start();
  d.client().remove(made.id);
  EXPECT_FALSE(shm_exists(made.environment.at("VGPU_SHM_NAME")));
}

TEST(Vgpud, AGrantThatCrashedBeforeItsCommitLeavesNeitherSliceNorRegion) {
  // The daemon aborts after making the slice's region and before committing the grant:
  // the client never hears back, and after a restart neither the slice nor its region exists.
  Daemon d(kConfig, {"VGPU_FAILPOINT=after_region_create:abort"});
  d.start();
  const std::string prefix = "vgpud-" + d.node_id() + "-";
  auto regions = [&] {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator("/dev/shm")) n += e.path().filename().string().rfind(prefix, 0) == 0;
    return n;
  };
  runtime::SliceSpec spec;
  spec.memory_limit = 1'000'000'000ULL;
  spec.isolation = config::Isolation::intercept;
  EXPECT_THROW((void)d.client().create(spec), runtime::DaemonError);
  EXPECT_EQ(d.wait_exit(), 128 + SIGABRT);
  EXPECT_EQ(regions(), 2) << "the slice's and its GPU's regions were made before the crash";
  d.start();  // the failpoint fires only on a grant; recovery runs first
  EXPECT_TRUE(d.client().list(true).empty());
  EXPECT_EQ(regions(), 0) << "orphaned regions are unlinked at start";
}

TEST(Vgpud, AGrantCommittedBeforeACrashIsKeptAndListed) {
  Daemon d(kConfig, {"VGPU_FAILPOINT=after_grant_commit:abort"});
  d.start();
  runtime::SliceSpec spec;
  spec.memory_limit = 1'000'000'000ULL;
  spec.name = "committed";
  EXPECT_THROW((void)d.client().create(spec), runtime::DaemonError);
  EXPECT_EQ(d.wait_exit(), 128 + SIGABRT);
  d.start();
  const auto slices = d.client().list(true);
  ASSERT_EQ(slices.size(), 1U) << "durable once committed; the client finds it by name";
  EXPECT_EQ(slices[0].name, "committed");
}

TEST(Vgpud, KillNineDuringAThousandConcurrentCallsLosesNothingAcknowledged) {
  Daemon d(kConfig);
  d.start();
  constexpr int kThreads = 16;
  constexpr int kCalls = 1000;
  constexpr int kKillAfter = 500;
  std::mutex mutex;
  std::condition_variable progress;
  int calls = 0;
  bool done = false;
  std::set<std::string> created;          // acknowledged creates
  std::set<std::string> deleted;          // acknowledged deletes
  std::set<std::string> delete_in_flight;  // sent, no answer (the daemon died)
  int creates_in_flight_at_death = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      const auto client = d.client();
      std::vector<std::string> mine;
      while (true) {
        {
          std::lock_guard lock(mutex);
          if (done || calls >= kCalls) return;
          ++calls;
        }
        progress.notify_all();
        if (!mine.empty() && rng() % 2 == 0) {
          const std::string id = mine[rng() % mine.size()];
          try {
            client.remove(id);
            std::lock_guard lock(mutex);
            deleted.insert(id);
            mine.erase(std::find(mine.begin(), mine.end(), id));
          } catch (const runtime::DaemonError& e) {
            std::lock_guard lock(mutex);
            if (e.status() == 0) {
              delete_in_flight.insert(id);
              return;
            }
            ADD_FAILURE() << e.what();
          }
        } else {
          runtime::SliceSpec spec;
          spec.memory_limit = (1 + rng() % 4) * 1'000'000'000ULL;
          spec.compute_share = 0.01;
          try {
            const auto s = client.create(spec);
            std::lock_guard lock(mutex);
            created.insert(s.id);
            mine.push_back(s.id);
          } catch (const CapacityError&) {
            // A full node is a clean refusal.
          } catch (const runtime::DaemonError& e) {
            std::lock_guard lock(mutex);
            if (e.status() == 0) {
              ++creates_in_flight_at_death;
              return;
            }
            ADD_FAILURE() << e.what();
          }
        }
      }
    });
  }
  {
    std::unique_lock lock(mutex);
    progress.wait(lock, [&] { return calls >= kKillAfter; });
  }
  d.kill9();
  {
    std::lock_guard lock(mutex);
    done = true;
  }
  for (auto& t : threads) t.join();

  d.start();
  std::set<std::string> present;
  std::map<std::uint32_t, std::uint64_t> memory_by_gpu;
  std::map<std::uint32_t, double> compute_by_gpu;
  for (const auto& s : d.client().list(true)) {
    EXPECT_TRUE(present.insert(s.id).second) << "granted twice: " << s.id;
    memory_by_gpu[s.gpu] += s.memory_limit.value_or(0);
    compute_by_gpu[s.gpu] += s.compute_share.value_or(0);
  }
  for (const auto& id : created) {
    if (deleted.count(id) != 0 || delete_in_flight.count(id) != 0) continue;
    EXPECT_EQ(present.count(id), 1U) << "acknowledged slice " << id << " is lost";
  }
  for (const auto& id : deleted) EXPECT_EQ(present.count(id), 0U) << "acknowledged delete of " << id << " undone";
  std::size_t unknown = 0;
  for (const auto& id : present) unknown += created.count(id) == 0 ? 1 : 0;
  EXPECT_LE(unknown, static_cast<std::size_t>(creates_in_flight_at_death)) << "slices nobody asked for";
  // Capacity adds up: the ledger's books equal the slices, within each GPU.
  const auto node = json::parse(d.client().get_json("/v1/node"));
  for (const auto& g : node["gpus"]) {
    const auto gpu = g["index"].get<std::uint32_t>();
    EXPECT_EQ(g["memory_leased_bytes"].get<std::uint64_t>(), memory_by_gpu[gpu]) << "GPU " << gpu;
    EXPECT_LE(g["memory_leased_bytes"].get<std::uint64_t>(), g["memory_capacity_bytes"].get<std::uint64_t>());
    EXPECT_NEAR(g["compute_leased"].get<double>(), compute_by_gpu[gpu], 1e-6);
  }
  EXPECT_EQ(d.stop(), 0);
  daemon::LedgerStore store(d.state_dir() / "ledger.db");
  EXPECT_EQ(store.integrity_check(), "ok");
  for (const auto& s : store.load()) EXPECT_EQ(s.state, "active") << s.id;
  EXPECT_GE(created.size(), 100U) << "the run did real work before the kill";
}

TEST(Vgpud, AClientKilledWithSigkillLosesItsEphemeralSliceAndRegion) {
  Daemon d(kConfig);
  d.start();
  const auto since = d.last_event();
  auto run = testing::PipedChild::start("exec " + vgpu_cli(d) + " run --isolation intercept --memory 1GB -- sleep 1000");
  const auto attached = d.wait_event(since, [](const json& e) { return e["type"] == "process" && e["action"] == "attached"; });
  ASSERT_FALSE(attached.is_null());
  const auto slices = d.client().list(true);
  ASSERT_EQ(slices.size(), 1U);
  const std::string region = slices[0].environment.at("VGPU_SHM_NAME");
  EXPECT_TRUE(shm_exists(region));
  pid_t orphan = 0;
  for (const auto& p : slices[0].processes) {
    if (!p.holder) orphan = static_cast<pid_t>(p.pid);
  }
  const auto before_kill = d.last_event();
  ::kill(run.pid, SIGKILL);
  EXPECT_EQ(run.finish(), 128 + SIGKILL);
  const auto gone = d.wait_event(before_kill, [](const json& e) { return e["type"] == "slice" && e["action"] == "deleted"; });
  EXPECT_EQ(gone["metadata"]["reason"], "holder_exited");
  EXPECT_FALSE(shm_exists(region)) << "the accounting region is removed with the slice";
  EXPECT_TRUE(d.client().list(true).empty());
  if (orphan > 0) ::kill(orphan, SIGKILL);
}

TEST(Vgpud, TwoInterceptSlicesInDifferentProcessesKeepSeparateLimits) {
  Daemon d(kConfig);
  d.start();
  const auto app = "env LD_LIBRARY_PATH=" + (build_dir() / "tests/fakes/cuda").string() + " " +
                   (build_dir() / "tests/cuda_app_dlopen").string();
  // A holds 700 KB of its 1 MB slice and stays.
  auto a = testing::PipedChild::start("exec " + vgpu_cli(d) + " run --gpu 0 --isolation intercept --memory 1MB -- " + app +
                                      " getproc alloc:700000 info hold");
  std::string a_said;
  while (auto line = a.line()) {
    a_said += *line + "\n";
    if (line->rfind("info", 0) == 0) break;
  }
  EXPECT_EQ(a_said, "init ok\nalloc ok\ninfo ok free=300000 total=1000000\n");
  // B, in another process and slice on the same GPU, has its own 2 MB.
  const auto b = testing::run_shell(vgpu_cli(d) + " run --gpu 0 --isolation intercept --memory 2MB -- " + app +
                                    " getproc info alloc:1500000 alloc:600000");
  EXPECT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(b.out, "init ok\ninfo ok free=2000000 total=2000000\nalloc ok\nalloc oom\n") << b.err;
  // A third process joining A's slice sees A's use.
  std::string a_id;
  for (const auto& s : d.client().list()) {
    if (s.memory_limit == 1'000'000ULL) a_id = s.id;
  }
  ASSERT_FALSE(a_id.empty());
  const auto c = testing::run_shell(vgpu_cli(d) + " run --slice " + a_id + " -- " + app + " getproc info alloc:400000");
  EXPECT_EQ(c.out, "init ok\ninfo ok free=300000 total=1000000\nalloc oom\n") << c.err;
  ::kill(a.pid, SIGTERM);
  (void)a.finish();
}

TEST(Vgpud, NamedSlicesEndAtTheirTtl) {
  Daemon d(kConfig);
  d.start();
  const auto since = d.last_event();
  const auto r = testing::run_shell(vgpu_cli(d) + " create --memory 1GB --ttl 200ms --name short");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string id = r.out.substr(0, r.out.find('\n'));
  const auto gone = d.wait_event(since, [&](const json& e) {
    return e["type"] == "slice" && e["action"] == "deleted" && e["source"] == "/v1/slices/" + id;
  });
  EXPECT_EQ(gone["metadata"]["reason"], "expired");
}

TEST(Vgpud, EventsResumeFromACursorAndAnOldCursorIsGone) {
  Daemon d(kConfig);
  d.start();
  const auto since = d.last_event();
  runtime::SliceSpec spec;
  spec.memory_limit = 1'000'000ULL;
  const auto made = d.client().create(spec);
  const auto created = d.wait_event(since, [](const json& e) { return e["type"] == "slice"; });
  EXPECT_EQ(created["action"], "created");
  EXPECT_EQ(created["source"], "/v1/slices/" + made.id);
  EXPECT_EQ(created["requestor"]["uid"], ::geteuid());
  // 300 more events push the first ones out of the 256-event ring.
  for (int i = 0; i < 150; ++i) {
    d.client().remove(d.client().create(spec).id);
  }
  const auto [status, body] = d.curl("GET", "/v1/events?since=1&timeout=0");
  EXPECT_EQ(status, 410) << body;
  EXPECT_EQ(json::parse(body)["error"]["code"], "gone");
}

TEST(Vgpud, IdleAndSlowClientsDoNotBlockOthers) {
  Daemon d(kConfig);
  d.start();
  // Four connections that send nothing hold workers until the request timeout...
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, d.socket().c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    idle.push_back(fd);
  }
  // ...while others are served.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(d.curl("GET", "/v1/health").first, 200);
  // The idle ones are then cut off: the daemon closes them (recv sees EOF) without a reply.
  for (int fd : idle) {
    char byte = 0;
    EXPECT_EQ(::recv(fd, &byte, 1, 0), 0);
    ::close(fd);
  }
  EXPECT_EQ(d.curl("GET", "/v1/health").first, 200);
}

TEST(Vgpud, TooManyConnectionsGet429AndTheDaemonRecovers) {
  Daemon d(std::string(kConfig) + "  max_connections: 1\n  request_timeout: 1s\n");
  d.start();
  // Far more idle connections than workers + queue: the overflow is answered 429 at once.
  std::vector<int> fds;
  int refused = 0;
  for (int i = 0; i < 40; ++i) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, d.socket().c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    fds.push_back(fd);
  }
  for (int fd : fds) {
    std::string reply;
    char buffer[512];
    ssize_t n = 0;
    while ((n = ::recv(fd, buffer, sizeof buffer, 0)) > 0) reply.append(buffer, static_cast<std::size_t>(n));
    if (reply.rfind("HTTP/1.1 429", 0) == 0) {
      ++refused;
      EXPECT_NE(reply.find("too_many_requests"), std::string::npos) << reply;
    }
    ::close(fd);
  }
  EXPECT_GT(refused, 0);
  EXPECT_EQ(d.curl("GET", "/v1/health").first, 200);
}

TEST(Vgpud, ASecondDaemonOnTheSameSocketRefusesToStart) {
  Daemon d(kConfig);
  d.start();
  const auto r = testing::run_shell(std::string(VGPUD_PATH) + " --socket " + d.socket() + " --state-dir " +
                                    (d.dir() / "other").string() + " --backend sim --metrics-listen off");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("another vgpud is running"), std::string::npos) << r.err;
  EXPECT_EQ(d.curl("GET", "/v1/health").first, 200) << "the first one still serves";
}

TEST(Vgpud, ABadConfigIsAUsageErrorWithFileAndLine) {
  const auto dir = std::filesystem::temp_directory_path() / ("vgpud-badconfig-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "bad.yaml") << "daemon:\n  socket_mode: \"rw\"\n  max_conections: 5\n  limits:\n    default: {memory: lots}\n";
  const auto r = testing::run_shell(std::string(VGPUD_PATH) + " --config " + (dir / "bad.yaml").string() +
                                    " --socket " + (dir / "s.sock").string() + " --state-dir " + (dir / "state").string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("bad.yaml:2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("daemon.socket_mode"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("did you mean 'max_connections'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("daemon.limits.default.memory"), std::string::npos) << r.err;
  std::filesystem::remove_all(dir);
}


TEST(VgpudPackaging, TheSampleConfigIsValid) {
  const auto r = testing::run_shell(std::string(VGPUD_PATH) + " --check-config --config " + VGPU_SOURCE_DIR +
                                    "/packaging/vgpud.yaml");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("valid"), std::string::npos);
}

TEST(VgpudPackaging, TheGrafanaDashboardQueriesOnlyMetricsTheDaemonExports) {
  testing::Daemon d(kConfig);
  d.start();
  // A slice with a process, so per-slice series exist too.
  runtime::SliceSpec spec;
  spec.memory_limit = 4'000'000'000ULL;
  spec.compute_share = 0.5;
  spec.isolation = config::Isolation::intercept;
  const auto slice = d.client().create(spec);
  (void)d.client().attach(slice.id);
  const std::string log = d.log();
  const auto at = log.find("metrics on http://");
  ASSERT_NE(at, std::string::npos) << log;
  const std::string url = log.substr(at + 11, log.find('\n', at) - at - 11);
  // The monitor samples once a second; the first scrape samples itself when none exists yet.
  const auto scrape = testing::run_shell("curl -sf " + url);
  ASSERT_EQ(scrape.exit_code, 0) << url;
  const std::string exposition = scrape.out;
  const auto dashboard = json::parse(testing::slurp(std::string(VGPU_SOURCE_DIR) + "/packaging/grafana/vgpu-dashboard.json"));
  const std::regex metric(R"(\bvgpu_[a-z_]+)");
  int queries = 0;
  std::vector<std::string> exprs;
  for (const auto& panel : dashboard["panels"]) {
    for (const auto& target : panel["targets"]) exprs.push_back(target["expr"]);
  }
  for (const auto& v : dashboard["templating"]["list"]) {
    if (v.contains("query") && v["query"].is_string()) exprs.push_back(v["query"]);
  }
  for (const std::string& expr : exprs) {
    for (auto it = std::sregex_iterator(expr.begin(), expr.end(), metric); it != std::sregex_iterator(); ++it) {
      ++queries;
      const std::string name = it->str();
      EXPECT_TRUE(exposition.find("\n" + name + "{") != std::string::npos ||
                  exposition.find("\n" + name + " ") != std::string::npos)
          << "the dashboard queries " << name << ", which /metrics does not export";
    }
  }
  EXPECT_GE(queries, 15);
  if (testing::run_shell("command -v promtool").exit_code == 0) {
    const auto check = testing::run_shell("curl -sf " + url + " | promtool check metrics");
    EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  }
}


TEST(VgpudClients, TheCppApiLeasesFromTheDaemonWhenANodeHasOne) {
  testing::Daemon d(kConfig);
  d.start();
  // What Node::default_node() does when $VGPU_SOCKET or /run/vgpu/vgpud.sock exists.
  config::VgpuConfig local;
  auto node = runtime::Node::open(local, device::BackendKind::sim);
  node->set_daemon(std::make_shared<const runtime::DaemonClient>(d.socket()));
  {
    auto vgpu = runtime::create_vgpu(2, "20GB", 0.5, {}, node);
    const auto slices = d.client().list();
    ASSERT_EQ(slices.size(), 1U);
    EXPECT_EQ(slices[0].name, vgpu.name());
    EXPECT_EQ(slices[0].gpu, 2U);
    EXPECT_TRUE(slices[0].ephemeral) << "held by this process";
    EXPECT_EQ(vgpu.gpu_id(), 2U);
    EXPECT_EQ(vgpu.device(), "sim:2");
    EXPECT_EQ(vgpu.lease().memory_bytes, 20'000'000'000ULL);
    EXPECT_EQ(vgpu.environment().at("VGPU_ID"), slices[0].id);
    // Nothing was taken from the process's own ledger: the daemon's book is the one.
    EXPECT_EQ(node->ledger().active_slices(), 0U);
    // Another process (the CLI) sees the daemon's book: GPU 2 has 60 GB left, not 80.
    const auto r = testing::run_shell(vgpu_cli(d) + " run --gpu 2 --memory 70GB -- true");
    EXPECT_EQ(r.exit_code, 1) << r.err;
    // run() binds the child to the daemon's slice and attaches it there.
    runtime::RunOptions capture;
    capture.capture_output = true;
    auto result = vgpu.run({"sh", "-c", "echo $VGPU_ID $VGPU_MEMORY_LIMIT"}, capture);
    EXPECT_EQ(result.exit_code, 0);
    EXPECT_EQ(result.output, slices[0].id + " 20000000000\n");
    // Over-commit through the API is refused by the daemon.
    EXPECT_THROW((void)runtime::create_vgpu(2, "70GB", std::nullopt, {}, node), CapacityError);
  }
  EXPECT_TRUE(d.client().list().empty()) << "the slice ends with the last VirtualGPU copy";
}


TEST(VgpudClients, MonitorOnceReadsTheDaemonsMonitor) {
  testing::Daemon d(kConfig);
  d.start();
  runtime::SliceSpec spec;
  spec.memory_limit = 2'000'000'000ULL;
  spec.name = "watched";
  (void)d.client().create(spec);
  const auto r = testing::run_shell(vgpu_cli(d) + " monitor --once");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("vgpu_daemon_slices 1\n"), std::string::npos) << r.out.substr(0, 500);
  EXPECT_NE(r.out.find("vgpu=\"watched\""), std::string::npos) << "the daemon's slices are attributed";
  EXPECT_NE(r.out.find("vgpu_gpu_memory_total_bytes{gpu=\"3\""), std::string::npos) << "the daemon's 4-GPU node";
}

TEST(VgpudClients, MonitorJsonAndTopDrawTheDaemonsMonitor) {
  testing::Daemon d(kConfig);
  d.start();
  runtime::SliceSpec spec;
  spec.gpu = 2;
  spec.memory_limit = 2'000'000'000ULL;
  spec.name = "watched";
  (void)d.client().create(spec);
  // Without the daemon the CLI would sample its own simulated node (8 GPUs, no slices).
  const auto r = testing::run_shell(vgpu_cli(d) + " monitor --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto sample = json::parse(r.out);
  EXPECT_EQ(sample["gpus"].size(), 4U) << "the daemon's 4-GPU node";
  ASSERT_EQ(sample["vgpus"].size(), 1U);
  EXPECT_EQ(sample["vgpus"][0]["name"], "watched");
  EXPECT_EQ(sample["vgpus"][0]["gpu"], 2);
  EXPECT_FALSE(sample.contains("utilization_history")) << "the same line as without a daemon";
  const auto top = testing::run_shell(vgpu_cli(d) + " top --iterations 1");
  ASSERT_EQ(top.exit_code, 0) << top.err;
  EXPECT_NE(top.out.find("sim (vgpud) backend, 4 GPUs, 1 vGPUs"), std::string::npos) << top.out;
  EXPECT_NE(top.out.find("watched"), std::string::npos) << top.out;
}


TEST(VgpudMps, TheDaemonOwnsOneControlDaemonPerGpuForItsMpsSlices) {
  const std::string fake = std::string(VGPU_SOURCE_DIR) + "/tests/fakes/nvidia-cuda-mps-control";
  const auto runtime_dir = std::filesystem::temp_directory_path() / ("vgpud-mps-" + std::to_string(::getpid()));
  testing::Daemon d(kConfig, {"VGPU_MPS_CONTROL=" + fake, "VGPU_RUNTIME_DIR=" + runtime_dir.string()});
  d.start();
  auto [status, body] = d.curl("POST", "/v1/slices", R"({"gpu": 1, "memory": "8GiB", "compute": 0.3, "isolation": "mps"})");
  ASSERT_EQ(status, 201) << body << d.log();
  const auto first = json::parse(body);
  EXPECT_EQ(first["environment"]["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"], "30") << "the client's limits come from the daemon";
  EXPECT_EQ(first["environment"]["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"], "0=8192M");
  const std::filesystem::path pipe = first["environment"]["CUDA_MPS_PIPE_DIRECTORY"].get<std::string>();
  const std::filesystem::path log = first["environment"]["CUDA_MPS_LOG_DIRECTORY"].get<std::string>();
  EXPECT_TRUE(std::filesystem::exists(pipe / "control")) << "started for the first mps slice";
  std::tie(status, body) = d.curl("POST", "/v1/slices", R"({"gpu": 1, "compute": 0.5, "isolation": "mps"})");
  ASSERT_EQ(status, 201) << body;
  const auto second = json::parse(body);
  EXPECT_EQ(d.curl("DELETE", "/v1/slices/" + first["id"].get<std::string>()).first, 204);
  EXPECT_TRUE(std::filesystem::exists(pipe / "control")) << "still needed by the second slice";
  EXPECT_EQ(d.curl("DELETE", "/v1/slices/" + second["id"].get<std::string>()).first, 204);
  EXPECT_FALSE(std::filesystem::exists(pipe / "control")) << "quit after the last mps slice";
  const std::string control_log = testing::slurp(log / "fake-control.log");
  EXPECT_EQ(control_log, "start " + first["gpu_uuid"].get<std::string>() + "\nquit\n") << "one start, one quit";
  std::filesystem::remove_all(runtime_dir);
}

TEST(VgpudMps, AskingForMpsWithoutTheControlBinaryIsABadRequest) {
  testing::Daemon d(kConfig, {"VGPU_MPS_CONTROL=/nonexistent/nvidia-cuda-mps-control"});
  d.start();
  const auto [status, body] = d.curl("POST", "/v1/slices", R"({"isolation": "mps"})");
  EXPECT_EQ(status, 400) << body;
  EXPECT_EQ(json::parse(body)["error"]["field"], "isolation");
  EXPECT_TRUE(d.client().list(true).empty());
}


TEST(VgpudClients, SubmittedTasksLeaseTheirSlicesFromTheDaemon) {
  testing::Daemon d(kConfig);
  d.start();
  const auto since = d.last_event();
  const auto r = testing::run_shell(vgpu_cli(d) + " submit --sim-gpus 4x80GB --memory 8GB -- true");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // The task's slice was the daemon's: created for it and deleted when it ended.
  const auto created = d.wait_event(since, [](const json& e) { return e["type"] == "slice" && e["action"] == "created"; });
  EXPECT_EQ(created["metadata"]["name"], "task-1") << created.dump();
  EXPECT_EQ(created["requestor"]["uid"], ::geteuid());
  (void)d.wait_event(since, [&](const json& e) {
    return e["type"] == "slice" && e["action"] == "deleted" && e["source"] == created["source"];
  });
  EXPECT_TRUE(d.client().list(true).empty());
}

TEST(VgpudClients, TheSchedulersBookIsAViewOfTheDaemonsLedger) {
  testing::Daemon d(kConfig);
  d.start();
  // Another client (another user's `vgpu create`) holds 70 of GPU 0's 80 GB.
  runtime::SliceSpec other;
  other.gpu = 0;
  other.memory_limit = 70'000'000'000ULL;
  (void)d.client().create(other);
  config::VgpuConfig local;
  auto node = runtime::Node::open(local, device::BackendKind::sim);
  node->set_daemon(std::make_shared<const runtime::DaemonClient>(d.socket()));
  scheduler::SchedulerOptions o;
  o.node = node;
  scheduler::GPUScheduler tasks(2, 8, "fifo", o);
  const auto book = tasks.snapshot().gpus;
  EXPECT_EQ(book[0].memory_elsewhere, 70'000'000'000ULL) << "read from GET /v1/node";
  EXPECT_EQ(book[0].slices_elsewhere, 1U);
  EXPECT_EQ(book[1].memory_elsewhere, 0U);
  const auto id = tasks.submit_task([](runtime::VirtualGPU& v) { return v.gpu_id(); },
                                    scheduler::GpuRequirements::with("20GB", 0.25));
  EXPECT_EQ(tasks.wait_for_task_as<std::uint32_t>(id), 1U) << "placed where the daemon has room";
  EXPECT_EQ(tasks.status(id).attempts.size(), 1U) << "without a refused lease first";
}

}  // namespace
}  // namespace apt::vgpu
