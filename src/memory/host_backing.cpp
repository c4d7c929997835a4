#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/memory/backing.hpp>

#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <sys/mman.h>

namespace apt::vgpu::memory {
namespace {

constexpr std::uint64_t kChunk = 2ULL << 20U;  // 2 MiB: a huge page, and CUDA's usual VMM granularity

std::uint64_t round_to_chunk(std::uint64_t bytes) { return (bytes + kChunk - 1) / kChunk * kChunk; }

class HostBacking final : public Backing {
 public:
  explicit HostBacking(std::uint64_t capacity) : length_(round_to_chunk(capacity)) {
    // Address space only: nothing is readable or committed until commit().
    void* p = ::mmap(nullptr, length_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      throw DeviceError(fmt::format("host backing: cannot reserve {} bytes of address space: {}", length_,
                                    std::strerror(errno)));
    }
    base_ = static_cast<std::byte*>(p);
  }
  ~HostBacking() override { ::munmap(base_, length_); }

  BackingKind kind() const noexcept override { return BackingKind::host; }
  std::uint64_t chunk_size() const noexcept override { return kChunk; }
  std::uintptr_t base() const noexcept override { return reinterpret_cast<std::uintptr_t>(base_); }
  bool holds_data() const noexcept override { return true; }

  void commit(std::uint64_t offset, std::uint64_t length) override {
    if (::mprotect(base_ + offset, length, PROT_READ | PROT_WRITE) != 0) {
      throw DeviceError(fmt::format("host backing: cannot commit {} bytes: {}", length, std::strerror(errno)));
    }
  }
  void decommit(std::uint64_t offset, std::uint64_t length) override {
    // Give the pages back (they read as zero if committed again), then fence them off.
    (void)::madvise(base_ + offset, length, MADV_DONTNEED);
    (void)::mprotect(base_ + offset, length, PROT_NONE);
  }
  void move(std::uint64_t to, std::uint64_t from, std::uint64_t length) override {
    std::memmove(base_ + to, base_ + from, length);
  }
  void copy_to_host(void* host, std::uint64_t from, std::uint64_t length) override {
    std::memcpy(host, base_ + from, length);
  }
  void copy_from_host(std::uint64_t to, const void* host, std::uint64_t length) override {
    std::memcpy(base_ + to, host, length);
  }

 private:
  std::uint64_t length_;
  std::byte* base_ = nullptr;
};

class NullBacking final : public Backing {
 public:
  BackingKind kind() const noexcept override { return BackingKind::none; }
  std::uint64_t chunk_size() const noexcept override { return kChunk; }
  std::uintptr_t base() const noexcept override { return 0; }
  bool holds_data() const noexcept override { return false; }
  void commit(std::uint64_t, std::uint64_t) override {}
  void decommit(std::uint64_t, std::uint64_t) override {}
  void move(std::uint64_t, std::uint64_t, std::uint64_t) override {}
  void copy_to_host(void*, std::uint64_t, std::uint64_t) override {}
  void copy_from_host(std::uint64_t, const void*, std::uint64_t) override {}
};

}  // namespace

std::unique_ptr<Backing> make_cuda_backing(std::uint64_t capacity, int device);  // cuda_backing.cpp

std::string_view to_string(BackingKind kind) noexcept {
  switch (kind) {
    case BackingKind::host: return "host";
    case BackingKind::none: return "none";
    case BackingKind::cuda: return "cuda";
  }
  return "host";
}

BackingKind parse_backing_kind(std::string_view text) {
  if (text == "host") return BackingKind::host;
  if (text == "none") return BackingKind::none;
  if (text == "cuda") return BackingKind::cuda;
  throw InvalidArgument(fmt::format("backing: '{}' is not a backing; use host, none or cuda", text));
}

std::unique_ptr<Backing> make_backing(BackingKind kind, std::uint64_t capacity, int device) {
  switch (kind) {
    case BackingKind::host: return std::make_unique<HostBacking>(capacity);
    case BackingKind::none: return std::make_unique<NullBacking>();
    case BackingKind::cuda: return make_cuda_backing(capacity, device);
  }
  return std::make_unique<NullBacking>();
}

}  // namespace apt::vgpu::memory
