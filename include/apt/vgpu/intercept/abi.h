/*
 * The contract between the runtime (which binds a child process to a virtual
 * GPU slice) and libvgpu-cuda.so (which enforces the slice inside that
 * process). Plain C so the interception library needs nothing else from the
 * project. The runtime writes these variables in VirtualGPU::environment();
 * the interception library reads them once at load time.
 *
 * Values: sizes are decimal byte counts; shares are decimal fractions in
 * (0, 1]. A missing VGPU_MEMORY_LIMIT / VGPU_COMPUTE_SHARE means "no limit".
 */
#ifndef APT_VGPU_INTERCEPT_ABI_H
#define APT_VGPU_INTERCEPT_ABI_H

#define VGPU_ABI_VERSION 2 /* 2: slots carry their process's start time */

/* Identity of the slice. */
#define VGPU_ENV_ID "VGPU_ID"                     /* e.g. "vgpu-3"; unique per node ledger */
#define VGPU_ENV_PHYSICAL_GPU "VGPU_PHYSICAL_GPU" /* backend index of the physical GPU */
#define VGPU_ENV_GPU_UUID "VGPU_GPU_UUID"         /* UUID of the physical GPU */
#define VGPU_ENV_ISOLATION "VGPU_ISOLATION"       /* none | intercept | mps */
#define VGPU_ENV_PRIORITY "VGPU_PRIORITY"         /* integer; higher runs first */

/* Limits enforced by libvgpu-cuda.so. */
#define VGPU_ENV_MEMORY_LIMIT "VGPU_MEMORY_LIMIT"   /* bytes the slice may allocate, all processes together */
#define VGPU_ENV_COMPUTE_SHARE "VGPU_COMPUTE_SHARE" /* fraction of the GPU's time the slice gets */
#define VGPU_ENV_BURST "VGPU_BURST"                 /* "1": may use idle capacity beyond its share */
#define VGPU_ENV_SHM_NAME "VGPU_SHM_NAME"           /* POSIX shm object shared by the slice's processes */
#define VGPU_ENV_GPU_SHM_NAME "VGPU_GPU_SHM_NAME"   /* POSIX shm object shared by the GPU's paced slices */
#define VGPU_ENV_LOG_LEVEL "VGPU_LOG_LEVEL"         /* error | warn | notice | info | debug */

/* Where the runtime finds the interception library (overrides the search). */
#define VGPU_ENV_INTERCEPT_LIBRARY "VGPU_INTERCEPT_LIBRARY"
#define VGPU_INTERCEPT_LIBRARY_NAME "libvgpu-cuda.so"

/*
 * The shared-memory region of one virtual GPU (POSIX shm object VGPU_SHM_NAME),
 * mapped by every process bound to the slice. Only the node's authority
 * (vgpud, or the embedded runtime) creates regions, under unguessable names,
 * and writes magic, abi_version and memory_limit before handing the name out;
 * the interception library opens existing regions only and refuses a wrong
 * magic or ABI. `used_bytes` is the slice's
 * total, changed only with atomic compare-and-swap, so admission never
 * overshoots the limit. Each process owns one slot and keeps its own share
 * there; a slot whose pid no longer exists is reclaimed (its bytes returned)
 * by the next process that looks, holding an open-file-description lock
 * (fcntl F_OFD_SETLK) on the bytes of `reclaim_lock`, which the kernel drops
 * when its holder dies.
 */
#include <stdint.h>

#define VGPU_SHM_MAGIC 0x56475055u /* "VGPU" */
#define VGPU_SHM_SLOTS 64

struct vgpu_shm_slot {
  int32_t pid;          /* 0: free */
  uint32_t start_time;  /* low 32 bits of the process's start (clock ticks since boot, /proc/PID/stat
                           field 22), so a recycled pid is not taken for it; 0 while being claimed */
  uint64_t used_bytes;  /* this process's allocations */
};

struct vgpu_shm_region {
  uint32_t magic;         /* VGPU_SHM_MAGIC once initialised */
  uint32_t abi_version;   /* VGPU_ABI_VERSION */
  uint64_t memory_limit;  /* bytes; set by the first process */
  uint64_t used_bytes;    /* all processes together */
  uint32_t reclaim_lock;  /* its bytes are the reclaim lock's range; the value is unused */
  uint32_t reserved;
  /* Compute pacing: a token bucket of GPU time shared by the slice's processes.
     It refills at compute_share GPU-ns per wall-ns up to share x window and is
     drawn down by the measured GPU time of finished kernels. */
  int64_t gpu_budget_ns;
  int64_t gpu_refill_ns;  /* CLOCK_MONOTONIC of the last refill; 0 before the first */
  uint64_t gpu_time_ns;   /* GPU time used, cumulative */
  struct vgpu_shm_slot slots[VGPU_SHM_SLOTS];
};

/*
 * One region per physical GPU (VGPU_GPU_SHM_NAME, "/vgpu-gpu-<index>-<random>";
 * `reserved` holds the ABI version) where every slice that
 * paces its launches publishes its share, its recent use and when it last
 * wanted GPU time or was held back. A slice in burst mode (VGPU_BURST=1) may
 * run beyond its share while no other slice on the GPU is short: wanting time
 * (within 20 ms), not held back by its own share, and using less than it.
 */
#define VGPU_GPU_SLOTS 64
struct vgpu_gpu_slot {
  uint64_t key;              /* hash of the slice's shm name; 0: free */
  int64_t last_demand_ns;    /* CLOCK_MONOTONIC of its last launch */
  int64_t last_throttled_ns; /* when it was last held back by its share */
  uint32_t share_milli;      /* its compute share, thousandths */
  uint32_t usage_milli;      /* its recent GPU use, thousandths (moving average) */
};
struct vgpu_gpu_region {
  uint32_t magic;
  uint32_t reserved;
  struct vgpu_gpu_slot slots[VGPU_GPU_SLOTS];
};

#endif /* APT_VGPU_INTERCEPT_ABI_H */
