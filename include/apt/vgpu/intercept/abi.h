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

#define VGPU_ABI_VERSION 3 /* 2: slots carry their process's start time; 3: the slots are the only books (no
                               separate total), and carry their process's PID namespace */

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
#define VGPU_ENV_CONTEXT_BYTES "VGPU_CONTEXT_BYTES" /* bytes charged per CUDA context; unset: measured by NVML */

/*
 * Slurm's hardened mode (spank_vgpu.so with mode=hardened, docs/slurm.md). The plugin, as root,
 * writes a job's limits into VGPU_HARDENED_DIR/job_<id>.limits (root-owned, not writable by
 * anyone else) and puts the job's tasks in a cgroup with a `job_<id>` component that the job
 * cannot leave. The library, loaded for every process through /etc/ld.so.preload, finds its job
 * from /proc/self/cgroup and, when that job has a limits file, takes every limit from the file
 * and none from the environment. Lines are key=value, the keys below.
 */
#ifndef VGPU_HARDENED_DIR
#define VGPU_HARDENED_DIR "/run/vgpu-slurm/hardened"
#endif
#define VGPU_HARDENED_KEY_MEMORY_LIMIT "memory_limit"   /* bytes; 0: no memory limit */
#define VGPU_HARDENED_KEY_COMPUTE_SHARE "compute_share" /* (0, 1]; 1: no pacing */
#define VGPU_HARDENED_KEY_SHM_NAME "shm_name"           /* the job's accounting region */
#define VGPU_HARDENED_KEY_GPU_SHM_NAME "gpu_shm_name"   /* the GPU's pacing region, or empty */
#define VGPU_HARDENED_KEY_GPU_UUID "gpu_uuid"           /* the job's GPU, or empty */

/* Where the runtime finds the interception library (overrides the search). */
#define VGPU_ENV_INTERCEPT_LIBRARY "VGPU_INTERCEPT_LIBRARY"
#define VGPU_INTERCEPT_LIBRARY_NAME "libvgpu-cuda.so"

/*
 * The shared-memory region of one virtual GPU (POSIX shm object VGPU_SHM_NAME),
 * mapped by every process bound to the slice. Only the node's authority
 * (vgpud, or the embedded runtime) creates regions, under unguessable names,
 * and writes magic, abi_version and memory_limit before handing the name out;
 * the interception library opens existing regions only and refuses a wrong
 * magic or ABI.
 *
 * The books are the slots, and only the slots: each process owns one and keeps
 * its own share there, and the slice's use is their sum (vgpu_shm_region_used).
 * Admission adds to the process's own slot first, then sums every slot and
 * takes the bytes back if the sum passed the limit; with sequentially consistent
 * operations two processes admitting at once cannot both miss the other, so the
 * limit is never overshot, and no process killed at any point can leave a total
 * out of step with the slots (there is none). A slot whose process no longer
 * runs is reclaimed (zeroed and freed) by the next process of the same PID
 * namespace that looks, holding an open-file-description lock (fcntl
 * F_OFD_SETLK) on the bytes of `reclaim_lock`, which the kernel drops when its
 * holder dies. Slots of processes in another PID namespace (another container
 * sharing the slice) are left to processes of that namespace, or to the
 * region's owner when the slice ends: their pids mean nothing here.
 */
#include <stdint.h>

#define VGPU_SHM_MAGIC 0x56475055u /* "VGPU" */
#define VGPU_SHM_SLOTS 64

struct vgpu_shm_slot {
  int32_t pid;             /* 0: free */
  uint32_t start_time;     /* low 32 bits of the process's start (clock ticks since boot, /proc/PID/stat
                              field 22), so a recycled pid is not taken for it; 0 while being claimed */
  uint64_t used_bytes;     /* this process's share of the slice */
  uint64_t pid_namespace;  /* inode of the process's /proc/self/ns/pid; 0: unknown (judged as local) */
};

struct vgpu_shm_region {
  uint32_t magic;         /* VGPU_SHM_MAGIC once initialised */
  uint32_t abi_version;   /* VGPU_ABI_VERSION */
  uint64_t memory_limit;  /* bytes; set by the first process */
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

/* The slice's use: the sum of its slots, saturating at UINT64_MAX. */
static inline uint64_t vgpu_shm_region_used(const struct vgpu_shm_region* region) {
  uint64_t total = 0;
  for (int i = 0; i < VGPU_SHM_SLOTS; ++i) {
    const uint64_t bytes = __atomic_load_n(&region->slots[i].used_bytes, __ATOMIC_SEQ_CST);
    if (__builtin_add_overflow(total, bytes, &total)) return UINT64_MAX;
  }
  return total;
}

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
