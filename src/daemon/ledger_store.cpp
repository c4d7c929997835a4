#include "ledger_store.hpp"

#include <apt/vgpu/common/error.hpp>

#include <fmt/format.h>
#include <sqlite3.h>

namespace apt::vgpu::daemon {
namespace {

constexpr int kSchemaVersion = 1;
constexpr int kApplicationId = 0x56475055;  // "VGPU"

// One prepared statement, finalized on scope exit.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) {
      throw ProcessError(fmt::format("ledger.db: cannot prepare '{}': {}", sql, sqlite3_errmsg(db)));
    }
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int i, const std::string& v) {
    check(sqlite3_bind_text(stmt_, i, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Statement& bind(int i, std::int64_t v) {
    check(sqlite3_bind_int64(stmt_, i, v));
    return *this;
  }
  Statement& bind(int i, double v) {
    check(sqlite3_bind_double(stmt_, i, v));
    return *this;
  }
  Statement& bind_null(int i) {
    check(sqlite3_bind_null(stmt_, i));
    return *this;
  }
  // True while there is a row.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw ProcessError(fmt::format("ledger.db: {}", sqlite3_errmsg(db_)));
  }
  [[nodiscard]] bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  [[nodiscard]] std::int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }
  [[nodiscard]] double real(int col) const { return sqlite3_column_double(stmt_, col); }
  [[nodiscard]] std::string text(int col) const {
    const auto* p = sqlite3_column_text(stmt_, col);
    return p == nullptr ? std::string{} : std::string(reinterpret_cast<const char*>(p));
  }

 private:
  void check(int rc) const {
    if (rc != SQLITE_OK) throw ProcessError(fmt::format("ledger.db: bind: {}", sqlite3_errmsg(db_)));
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE ... COMMIT, rolled back when an exception leaves the scope.
class Transaction {
 public:
  explicit Transaction(LedgerStore& store, void (LedgerStore::*exec)(const char*)) : store_(store), exec_(exec) {
    (store_.*exec_)("BEGIN IMMEDIATE");
  }
  ~Transaction() {
    if (!done_) {
      try {
        (store_.*exec_)("ROLLBACK");
      } catch (...) {
        // The connection is already in trouble; the caller sees the first error.
      }
    }
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit() {
    (store_.*exec_)("COMMIT");
    done_ = true;
  }

 private:
  LedgerStore& store_;
  void (LedgerStore::*exec_)(const char*);
  bool done_ = false;
};

}  // namespace

LedgerStore::LedgerStore(const std::filesystem::path& file, bool synchronous_full) : file_(file) {
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_EXRESCODE |
                    SQLITE_OPEN_FULLMUTEX;
  if (sqlite3_open_v2(file.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
    const std::string why = db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw ProcessError(fmt::format("{}: cannot open the ledger database: {}", file.string(), why));
  }
  try {
    exec("PRAGMA journal_mode=WAL");
    // FULL: each commit syncs the WAL, so an acknowledged grant survives power loss too.
    exec(synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    exec("PRAGMA foreign_keys=ON");
    sqlite3_busy_timeout(db_, 5000);
    if (const std::string check = [this] {
          Statement s(db_, "PRAGMA quick_check");
          return s.step() ? s.text(0) : std::string("no answer");
        }();
        check != "ok") {
      throw ProcessError(fmt::format("quick_check failed: {}; restore a backup (VACUUM INTO) or move the file away", check));
    }
    std::int64_t version = 0;
    {
      Statement s(db_, "PRAGMA user_version");
      if (s.step()) version = s.integer(0);
    }
    if (version > kSchemaVersion) {
      throw ProcessError(fmt::format("schema version {} is newer than this vgpud understands ({}); run a newer vgpud",
                                     version, kSchemaVersion));
    }
    if (version < 1) {
      Transaction t(*this, &LedgerStore::exec);
      exec(fmt::format("PRAGMA application_id={}", kApplicationId).c_str());
      exec(R"(CREATE TABLE slices (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                owner_uid INTEGER NOT NULL,
                owner_gid INTEGER NOT NULL,
                gpu INTEGER NOT NULL,
                memory_limit INTEGER,
                compute_share REAL,
                priority INTEGER NOT NULL,
                isolation TEXT NOT NULL,
                burst INTEGER NOT NULL,
                ephemeral INTEGER NOT NULL,
                expires_at_ms INTEGER,
                created_at_ms INTEGER NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('pending', 'active')),
                region TEXT NOT NULL,
                job_id TEXT NOT NULL))");
      exec(R"(CREATE TABLE processes (
                slice_id TEXT NOT NULL REFERENCES slices(id) ON DELETE CASCADE,
                pid INTEGER NOT NULL,
                boot_id TEXT NOT NULL,
                start_time INTEGER NOT NULL,
                holder INTEGER NOT NULL,
                PRIMARY KEY (slice_id, pid)))");
      exec("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
      exec("PRAGMA user_version=1");
      t.commit();
    }
  } catch (const Error&) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

LedgerStore::~LedgerStore() {
  if (db_ != nullptr) sqlite3_close(db_);
}

void LedgerStore::exec(const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string why = message != nullptr ? message : sqlite3_errmsg(db_);
    sqlite3_free(message);
    throw ProcessError(fmt::format("{}: {}", file_.string(), why));
  }
}

std::vector<StoredSlice> LedgerStore::load() {
  std::vector<StoredSlice> out;
  {
    Statement s(db_, R"(SELECT id, name, owner_uid, owner_gid, gpu, memory_limit, compute_share, priority, isolation,
                               burst, ephemeral, expires_at_ms, created_at_ms, state, region, job_id
                        FROM slices ORDER BY created_at_ms, id)");
    while (s.step()) {
      StoredSlice r;
      r.id = s.text(0);
      r.name = s.text(1);
      r.owner_uid = static_cast<std::uint32_t>(s.integer(2));
      r.owner_gid = static_cast<std::uint32_t>(s.integer(3));
      r.gpu = static_cast<std::uint32_t>(s.integer(4));
      if (!s.is_null(5)) r.memory_limit = static_cast<std::uint64_t>(s.integer(5));
      if (!s.is_null(6)) r.compute_share = s.real(6);
      r.priority = static_cast<int>(s.integer(7));
      r.isolation = s.text(8);
      r.burst = s.integer(9) != 0;
      r.ephemeral = s.integer(10) != 0;
      if (!s.is_null(11)) r.expires_at_ms = s.integer(11);
      r.created_at_ms = s.integer(12);
      r.state = s.text(13);
      r.region = s.text(14);
      r.job_id = s.text(15);
      out.push_back(std::move(r));
    }
  }
  Statement p(db_, "SELECT slice_id, pid, boot_id, start_time, holder FROM processes ORDER BY slice_id, pid");
  while (p.step()) {
    const std::string id = p.text(0);
    for (auto& slice : out) {
      if (slice.id != id) continue;
      slice.processes.push_back(StoredProcess{p.text(2), p.integer(1), static_cast<std::uint64_t>(p.integer(3)),
                                              p.integer(4) != 0});
      break;
    }
  }
  return out;
}

void LedgerStore::insert(const StoredSlice& r) {
  Transaction t(*this, &LedgerStore::exec);
  {
    Statement s(db_, R"(INSERT INTO slices (id, name, owner_uid, owner_gid, gpu, memory_limit, compute_share, priority,
                          isolation, burst, ephemeral, expires_at_ms, created_at_ms, state, region, job_id)
                        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16))");
    s.bind(1, r.id).bind(2, r.name).bind(3, std::int64_t{r.owner_uid}).bind(4, std::int64_t{r.owner_gid});
    s.bind(5, std::int64_t{r.gpu});
    if (r.memory_limit) s.bind(6, static_cast<std::int64_t>(*r.memory_limit)); else s.bind_null(6);
    if (r.compute_share) s.bind(7, *r.compute_share); else s.bind_null(7);
    s.bind(8, std::int64_t{r.priority}).bind(9, r.isolation).bind(10, std::int64_t{r.burst ? 1 : 0});
    s.bind(11, std::int64_t{r.ephemeral ? 1 : 0});
    if (r.expires_at_ms) s.bind(12, *r.expires_at_ms); else s.bind_null(12);
    s.bind(13, r.created_at_ms).bind(14, r.state).bind(15, r.region).bind(16, r.job_id);
    (void)s.step();
  }
  for (const auto& p : r.processes) {
    Statement s(db_, "INSERT INTO processes (slice_id, pid, boot_id, start_time, holder) VALUES (?1, ?2, ?3, ?4, ?5)");
    s.bind(1, r.id).bind(2, p.pid).bind(3, p.boot_id).bind(4, static_cast<std::int64_t>(p.start_time));
    s.bind(5, std::int64_t{p.holder ? 1 : 0});
    (void)s.step();
  }
  t.commit();
}

void LedgerStore::set_region(const std::string& id, const std::string& region) {
  Statement s(db_, "UPDATE slices SET region = ?2 WHERE id = ?1");
  s.bind(1, id).bind(2, region);
  (void)s.step();
}

void LedgerStore::remove(const std::string& id) {
  Statement s(db_, "DELETE FROM slices WHERE id = ?1");
  s.bind(1, id);
  (void)s.step();
}

void LedgerStore::add_process(const std::string& slice_id, const StoredProcess& p) {
  Statement s(db_, R"(INSERT OR REPLACE INTO processes (slice_id, pid, boot_id, start_time, holder)
                      VALUES (?1, ?2, ?3, ?4, ?5))");
  s.bind(1, slice_id).bind(2, p.pid).bind(3, p.boot_id).bind(4, static_cast<std::int64_t>(p.start_time));
  s.bind(5, std::int64_t{p.holder ? 1 : 0});
  (void)s.step();
}

void LedgerStore::remove_process(const std::string& slice_id, std::int64_t pid) {
  Statement s(db_, "DELETE FROM processes WHERE slice_id = ?1 AND pid = ?2");
  s.bind(1, slice_id).bind(2, pid);
  (void)s.step();
}

std::optional<std::string> LedgerStore::meta(const std::string& key) {
  Statement s(db_, "SELECT value FROM meta WHERE key = ?1");
  s.bind(1, key);
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

void LedgerStore::set_meta(const std::string& key, const std::string& value) {
  Statement s(db_, "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)");
  s.bind(1, key).bind(2, value);
  (void)s.step();
}

std::string LedgerStore::integrity_check() {
  Statement s(db_, "PRAGMA integrity_check");
  return s.step() ? s.text(0) : std::string("no answer");
}

}  // namespace apt::vgpu::daemon
