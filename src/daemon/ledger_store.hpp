// LedgerStore: vgpud's durable book of slices, one SQLite file
// (<state_dir>/ledger.db) in WAL mode with synchronous=FULL, so every grant and
// release is on disk before the daemon replies. One connection, used under
// the registry's lock (the daemon is the only writer; children never touch it).
//
// A grant is one transaction, written once its accounting region exists;
// a `pending` row (an interrupted multi-step grant) is rolled back at start.
// A slice's processes are stored as (boot id, pid, start time) so a recycled
// pid, or a pid from an earlier boot, is never taken for the one we knew.
//
// Thread safety: not synchronised; the caller serialises all calls.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace apt::vgpu::daemon {

struct StoredProcess {
  std::string boot_id;
  std::int64_t pid = 0;
  std::uint64_t start_time = 0;
  bool holder = false;  // the process whose exit ends an ephemeral slice
};

struct StoredSlice {
  std::string id;  // 16 hex digits, random
  std::string name;
  std::uint32_t owner_uid = 0;
  std::uint32_t owner_gid = 0;
  std::uint32_t gpu = 0;
  std::optional<std::uint64_t> memory_limit;
  std::optional<double> compute_share;
  int priority = 0;
  std::string isolation = "none";
  bool burst = false;
  bool ephemeral = false;
  std::optional<std::int64_t> expires_at_ms;  // unix ms; named slices with a TTL
  std::int64_t created_at_ms = 0;
  std::string state = "pending";  // pending | active
  std::string region;             // accounting region name (intercept)
  std::string job_id;             // set by an admin acting for a scheduler (Slurm)
  std::vector<StoredProcess> processes;
};

class LedgerStore {
 public:
  // Opens (creating when missing) the database; runs quick_check and the
  // schema migrations. Throws ProcessError naming the file and SQLite's message.
  // `synchronous_full` false means PRAGMA synchronous=NORMAL (see DaemonSection::synchronous).
  explicit LedgerStore(const std::filesystem::path& file, bool synchronous_full = true);
  ~LedgerStore();
  LedgerStore(const LedgerStore&) = delete;
  LedgerStore& operator=(const LedgerStore&) = delete;

  [[nodiscard]] std::vector<StoredSlice> load();
  void insert(const StoredSlice& slice);  // with its processes, in one transaction
  void set_region(const std::string& id, const std::string& region);
  void remove(const std::string& id);
  void add_process(const std::string& slice_id, const StoredProcess& process);
  void remove_process(const std::string& slice_id, std::int64_t pid);

  [[nodiscard]] std::optional<std::string> meta(const std::string& key);
  void set_meta(const std::string& key, const std::string& value);

  // PRAGMA integrity_check; "ok" when sound.
  [[nodiscard]] std::string integrity_check();

 private:
  void exec(const char* sql);
  sqlite3* db_ = nullptr;
  std::filesystem::path file_;
};

}  // namespace apt::vgpu::daemon
