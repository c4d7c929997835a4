// The slice's books: its shared region (abi.h's vgpu_shm_region), this
// process's slot in it, admission against the limit, reclaim of dead processes'
// slots, and the records of live allocations (what each address, handle or
// array was charged, to give it back when it is freed).
//
// The slots are the only books: the slice's use is their sum. Admission adds to
// this process's slot, sums all slots, and takes the bytes back if the limit was
// passed; a process killed at any point leaves only its own slot, which reclaim
// zeroes. All functions are thread-safe; g_region is set once by open_region()
// under init()'s pthread_once. Nothing here throws.
#ifndef APT_VGPU_INTERCEPT_ACCOUNTING_HPP
#define APT_VGPU_INTERCEPT_ACCOUNTING_HPP

#include <apt/vgpu/intercept/abi.h>

#include <cstdint>

namespace vgpu_cuda {

extern vgpu_shm_region* g_region;  // the slice's region, or a private one (no VGPU_SHM_NAME)

// Maps the slice's region (created by vgpud or the runtime; never by us). False, logged, when it cannot.
bool open_region();

// This process's slot (claimed on first use, one per process); null when all are taken.
vgpu_shm_slot* my_slot();

// Frees the slots of processes of this PID namespace that no longer run.
void reclaim_dead_slots();

std::uint64_t limit();
std::uint64_t used();  // the sum of the slots

// Charges `bytes` to this process if the slice stays within its limit.
bool try_admit(std::uint64_t bytes);

// try_admit, and before refusing: the process's pools and graph memory give back
// what they hold idle, and it looks once more. A refusal is logged naming `call`.
bool admit(std::uint64_t bytes, const char* call);

// Charges bytes already taken on the GPU (a context measured after creation, what
// NVML or a graph pool shows), even past the limit: later allocations are refused.
void charge_unchecked(std::uint64_t bytes);

// Gives bytes back (never below zero).
void release(std::uint64_t bytes);

void log_refusal(std::uint64_t bytes, const char* call);

// What the allocation under `key` (device pointer, handle, array) was charged.
void remember(unsigned long long key, std::uint64_t bytes) noexcept;
std::uint64_t forget(unsigned long long key) noexcept;  // 0 when unknown

// At a normal exit: the driver frees the process's memory, so its slot goes back.
void give_slot_back();

}  // namespace vgpu_cuda

#endif  // APT_VGPU_INTERCEPT_ACCOUNTING_HPP
