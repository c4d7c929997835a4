#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/intercept/abi.h>
#include <apt/vgpu/runtime/accounting_region.hpp>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/acl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

namespace apt::vgpu::runtime {
namespace {

std::size_t region_size(RegionKind kind) {
  return kind == RegionKind::slice ? sizeof(vgpu_shm_region) : sizeof(vgpu_gpu_region);
}

// Lets `uid` read and write the object while it stays owned by its creator.
bool grant_access(int fd, uid_t uid) {
  acl_t acl = acl_init(4);
  if (acl == nullptr) return false;
  bool ok = true;
  // owner rw, the slice's user rw, the owner's group and everyone else nothing.
  auto add = [&](acl_tag_t tag, const void* qualifier, bool read_write) {
    acl_entry_t entry = nullptr;
    acl_permset_t perms = nullptr;
    ok = ok && acl_create_entry(&acl, &entry) == 0 && acl_set_tag_type(entry, tag) == 0 &&
         (qualifier == nullptr || acl_set_qualifier(entry, qualifier) == 0) && acl_get_permset(entry, &perms) == 0 &&
         acl_clear_perms(perms) == 0 &&
         (!read_write || (acl_add_perm(perms, ACL_READ) == 0 && acl_add_perm(perms, ACL_WRITE) == 0)) &&
         acl_set_permset(entry, perms) == 0;
  };
  add(ACL_USER_OBJ, nullptr, true);
  add(ACL_USER, &uid, true);
  add(ACL_GROUP_OBJ, nullptr, false);
  add(ACL_MASK, nullptr, true);
  add(ACL_OTHER, nullptr, false);
  ok = ok && acl_set_fd(fd, acl) == 0;
  acl_free(acl);
  return ok;
}

}  // namespace

std::string random_hex_id() {
  std::uint64_t bits = 0;
  auto* out = reinterpret_cast<unsigned char*>(&bits);
  std::size_t got = 0;
  while (got < sizeof bits) {
    const ssize_t n = ::getrandom(out + got, sizeof bits - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw ProcessError(fmt::format("getrandom: {}", std::strerror(errno)));
    }
    got += static_cast<std::size_t>(n);
  }
  return fmt::format("{:016x}", bits);
}

AccountingRegion::~AccountingRegion() { remove(); }

AccountingRegion::AccountingRegion(AccountingRegion&& other) noexcept : name_(std::move(other.name_)) {
  other.name_.clear();
}

AccountingRegion& AccountingRegion::operator=(AccountingRegion&& other) noexcept {
  if (this != &other) {
    remove();
    name_ = std::move(other.name_);
    other.name_.clear();
  }
  return *this;
}

void AccountingRegion::remove() noexcept {
  if (name_.empty()) return;
  (void)::shm_unlink(name_.c_str());
  name_.clear();
}

AccountingRegion AccountingRegion::create(RegionKind kind, const std::string& prefix, std::uint64_t memory_limit,
                                          std::optional<uid_t> grant_uid) {
  const std::size_t size = region_size(kind);
  for (int attempt = 0; attempt < 8; ++attempt) {
    const std::string name = fmt::format("{}-{}", prefix, random_hex_id());
    const int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
      if (errno == EEXIST) continue;  // 64 random bits collided: draw again
      throw ProcessError(fmt::format("cannot create shared memory {}: {}", name, std::strerror(errno)));
    }
    AccountingRegion region(name);  // unlinks on any failure below
    auto fail = [&](const char* what, int err) {
      ::close(fd);
      throw ProcessError(fmt::format("cannot {} shared memory {}: {}{}", what, name, std::strerror(err),
                                     err == ENOSPC ? " (is /dev/shm full?)" : ""));
    };
    if (const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(size)); err != 0) fail("reserve", err);
    if (grant_uid && *grant_uid != ::geteuid() && !grant_access(fd, *grant_uid)) fail("grant access to", errno);
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) fail("map", errno);
    ::close(fd);
    if (kind == RegionKind::slice) {
      auto* r = static_cast<vgpu_shm_region*>(p);
      r->memory_limit = memory_limit;
      r->abi_version = VGPU_ABI_VERSION;
      __atomic_store_n(&r->magic, VGPU_SHM_MAGIC, __ATOMIC_RELEASE);
    } else {
      auto* r = static_cast<vgpu_gpu_region*>(p);
      r->reserved = VGPU_ABI_VERSION;
      __atomic_store_n(&r->magic, VGPU_SHM_MAGIC, __ATOMIC_RELEASE);
    }
    ::munmap(p, size);
    return region;
  }
  throw ProcessError(fmt::format("cannot create shared memory under {}: 8 random names were all taken", prefix));
}

std::optional<AccountingRegion> AccountingRegion::adopt(RegionKind kind, const std::string& name) {
  if (!is_ours(name)) return std::nullopt;
  const int fd = ::shm_open(name.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  struct stat st {};
  const std::size_t size = region_size(kind);
  bool ok = ::fstat(fd, &st) == 0 && static_cast<std::size_t>(st.st_size) >= size && st.st_uid == ::geteuid();
  if (ok) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    ok = p != MAP_FAILED && __atomic_load_n(static_cast<const std::uint32_t*>(p), __ATOMIC_ACQUIRE) == VGPU_SHM_MAGIC;
    if (p != MAP_FAILED) ::munmap(p, size);
  }
  ::close(fd);
  if (!ok) return std::nullopt;
  return AccountingRegion(name);
}

std::uint64_t AccountingRegion::used_bytes(const std::string& name) noexcept {
  const int fd = ::shm_open(name.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return 0;
  void* p = ::mmap(nullptr, sizeof(vgpu_shm_region), PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return 0;
  const auto* r = static_cast<const vgpu_shm_region*>(p);
  // The slots are the books; the slice's use is their sum.
  const std::uint64_t used = r->magic == VGPU_SHM_MAGIC && r->abi_version == VGPU_ABI_VERSION ? vgpu_shm_region_used(r) : 0;
  ::munmap(p, sizeof(vgpu_shm_region));
  return used;
}

bool AccountingRegion::is_ours(const std::string& name) noexcept {
  return name.rfind("/vgpu", 0) == 0 && name.find('/', 1) == std::string::npos && name.size() < 200;
}

}  // namespace apt::vgpu::runtime
