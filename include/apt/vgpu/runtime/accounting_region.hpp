// AccountingRegion: the POSIX shared-memory object through which the
// processes of one slice (or of one physical GPU, for burst pacing) share
// their accounting inside libvgpu-cuda.so (layout in intercept/abi.h).
//
// Only the authority of a node creates regions: vgpud, or the embedded
// runtime when no daemon runs. A region is created O_CREAT|O_EXCL, mode 0600,
// under a name with 64 random bits (so it cannot be guessed, squatted or
// collide across processes), its pages are reserved with posix_fallocate (a
// full /dev/shm fails now with ENOSPC, not later with SIGBUS), and its header
// (magic, ABI version, limit) is written before the name is handed out. The
// interception library only ever opens existing regions and checks the header.
//
// The owner object unlinks the name when it is destroyed unless release() was
// called (a daemon that stops keeps its regions for the next start).
//
// Thread safety: a move-only owner; not synchronised.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <sys/types.h>

namespace apt::vgpu::runtime {

enum class RegionKind { slice, gpu };

class AccountingRegion {
 public:
  AccountingRegion() = default;
  ~AccountingRegion();
  AccountingRegion(AccountingRegion&& other) noexcept;
  AccountingRegion& operator=(AccountingRegion&& other) noexcept;
  AccountingRegion(const AccountingRegion&) = delete;
  AccountingRegion& operator=(const AccountingRegion&) = delete;

  // Creates a fresh region named "<prefix>-<16 random hex digits>" (prefix
  // starts with '/'). `memory_limit` (0: none) goes into a slice header.
  // `grant_uid`, when set and not our own uid, gets read-write access through a
  // POSIX ACL on the object; the object stays owned by the creator. Throws
  // ProcessError naming the object and the OS error.
  [[nodiscard]] static AccountingRegion create(RegionKind kind, const std::string& prefix, std::uint64_t memory_limit,
                                               std::optional<uid_t> grant_uid = std::nullopt);
  // Takes ownership of an existing region (after a daemon restart) after
  // checking its header; nullopt when it is missing or not one of ours.
  [[nodiscard]] static std::optional<AccountingRegion> adopt(RegionKind kind, const std::string& name);

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] bool valid() const noexcept { return !name_.empty(); }
  // Unlinks the name now (processes that mapped it keep their mapping).
  void remove() noexcept;
  // Forgets the name without unlinking it.
  void release() noexcept { name_.clear(); }

  // Bytes the slice's processes hold now, read from a slice region's header
  // (0 when it cannot be read).
  [[nodiscard]] static std::uint64_t used_bytes(const std::string& name) noexcept;
  // Whether `name` looks like a region this project creates ("/vgpu-..." or "/vgpud-...").
  [[nodiscard]] static bool is_ours(const std::string& name) noexcept;

 private:
  explicit AccountingRegion(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

// 64 random bits as 16 lowercase hex digits, from getrandom(2).
[[nodiscard]] std::string random_hex_id();

}  // namespace apt::vgpu::runtime
