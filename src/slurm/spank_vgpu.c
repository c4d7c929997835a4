/* spank_vgpu.so: a Slurm SPANK plugin that gives every job a vGPU slice (docs/slurm.md).
 *
 * Options (srun, sbatch, salloc): --vgpu-memory=SIZE, --vgpu-compute=RATIO,
 * --vgpu-isolation=intercept|mps|none. plugstack.conf arguments: lib=PATH (libvgpu-cuda.so),
 * shard_memory=SIZE (memory per GRES shard), shards_per_gpu=N (default 4), socket=PATH (vgpud),
 * state_dir=PATH, mode=env|hardened, cgroup=DIR (hardened mode's cgroup hierarchy).
 *
 * Where things happen:
 *   srun/sbatch/salloc (local, allocator)  option values are checked; a bad one stops the
 *                                           command before the job is queued.
 *   job prolog (slurmd, root)               without vgpud on the node, the job's accounting region
 *                                           is created, with the job's memory limit written into it,
 *                                           owned by the job's user: every step and task shares it.
 *   task start (slurmstepd, root, before    the limits are computed from what Slurm scheduled
 *   privileges drop)                        (shards) and the options; a request above the shards is
 *                                           refused; the job's first task registers it with vgpud
 *                                           (now that the limits are known) or makes its region if
 *                                           missing. Hardened mode: the task is put in a cgroup named
 *                                           after the job (unless Slurm's own cgroups name it), the
 *                                           job's limits are written once into a root-owned file the
 *                                           library reads instead of the environment, and the task is
 *                                           refused if /etc/ld.so.preload does not load the library.
 *   task start (slurmstepd, as the user)    the task's environment binds it to the region (VGPU_*,
 *                                           LD_PRELOAD of libvgpu-cuda.so in env mode).
 *   job epilog (slurmd, root)               the region is removed (and, hardened, the limits file and
 *                                           the cgroup).
 *
 * C, not C++: spank.h declares the callbacks outside an extern "C" block, and SPANK_PLUGIN's const
 * globals would get internal linkage in C++.
 */
#include <slurm/spank.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apt/vgpu/intercept/abi.h>
#include <apt/vgpu/intercept/slurm_job.h>

SPANK_PLUGIN(vgpu, 1) /* the macro brings its own semicolon */

#define MAX_PATH 4096

/* Plugin arguments (plugstack.conf). */
static char g_lib[MAX_PATH] = "/usr/local/lib/libvgpu-cuda.so";
static uint64_t g_shard_memory = 0; /* bytes per shard; 0: no default memory limit from shards */
static uint64_t g_shards_per_gpu = 4;
static char g_socket[MAX_PATH] = "/run/vgpu/vgpud.sock"; /* vgpud's API, used when it exists */
static char g_state_dir[MAX_PATH] = "/run/vgpu-slurm";    /* where the prolog leaves vgpud's answer */
static int g_hardened = 0;                                /* mode=hardened */
static char g_cgroup[MAX_PATH] = "";                      /* hardened: the hierarchy for job cgroups ("": found) */

/* Option values, as given (0 / -1: not given). */
static uint64_t g_memory = 0;
static double g_compute = -1.0;
static char g_isolation[16] = "";

/* "20G" (GiB, as Slurm's --mem), "20GB" (10^9), "20GiB", "1048576": bytes, or 0 for a malformed size. */
static uint64_t parse_size(const char* text) {
  if (text == NULL || *text == '\0') return 0;
  char* end = NULL;
  errno = 0;
  unsigned long long value = strtoull(text, &end, 10);
  if (errno != 0 || end == text || *text == '-') return 0;
  uint64_t unit = 1;
  if (*end != '\0') {
    const char u = (char)(*end >= 'a' && *end <= 'z' ? *end - 'a' + 'A' : *end);
    const char* rest = end + 1;
    int power = 0;
    switch (u) {
      case 'K': power = 1; break;
      case 'M': power = 2; break;
      case 'G': power = 3; break;
      case 'T': power = 4; break;
      default: return 0;
    }
    int binary = 1;
    if (strcmp(rest, "B") == 0 || strcmp(rest, "b") == 0) {
      binary = 0;
    } else if (strcmp(rest, "iB") == 0 || strcmp(rest, "ib") == 0 || *rest == '\0') {
      binary = 1;
    } else {
      return 0;
    }
    for (int i = 0; i < power; ++i) unit *= binary ? 1024u : 1000u;
  }
  if (value == 0 || value > UINT64_MAX / unit) return 0;
  return (uint64_t)value * unit;
}

static int parse_ratio(const char* text, double* out) {
  if (text == NULL || *text == '\0') return -1;
  char* end = NULL;
  errno = 0;
  const double value = strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !(value > 0.0 && value <= 1.0)) return -1;
  *out = value;
  return 0;
}

static int on_memory(int val, const char* optarg, int remote) {
  (void)val;
  (void)remote;
  g_memory = parse_size(optarg);
  if (g_memory == 0) {
    slurm_error("vgpu: --vgpu-memory=%s is not a size; give e.g. 20G (GiB), 20GB or 21474836480 (bytes)",
                optarg ? optarg : "");
    return -1;
  }
  return 0;
}

static int on_compute(int val, const char* optarg, int remote) {
  (void)val;
  (void)remote;
  if (parse_ratio(optarg, &g_compute) != 0) {
    slurm_error("vgpu: --vgpu-compute=%s is not a share of one GPU; give a number in (0, 1], e.g. 0.5",
                optarg ? optarg : "");
    return -1;
  }
  return 0;
}

static int on_isolation(int val, const char* optarg, int remote) {
  (void)val;
  (void)remote;
  if (optarg == NULL || (strcmp(optarg, "intercept") != 0 && strcmp(optarg, "mps") != 0 && strcmp(optarg, "none") != 0)) {
    slurm_error("vgpu: --vgpu-isolation=%s is not one of intercept, mps, none", optarg ? optarg : "");
    return -1;
  }
  snprintf(g_isolation, sizeof g_isolation, "%s", optarg);
  return 0;
}

static struct spank_option g_options[] = {
    {"vgpu-memory", "SIZE", "vGPU memory limit for the job (default: shards x shard_memory)", 1, 0, on_memory},
    {"vgpu-compute", "RATIO", "vGPU compute share in (0, 1] (default: shards / shards per GPU)", 1, 0, on_compute},
    {"vgpu-isolation", "MODE", "intercept (default), mps or none", 1, 0, on_isolation},
    SPANK_OPTIONS_TABLE_END};

static int parse_arguments(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    const char* a = argv[i];
    if (strncmp(a, "lib=", 4) == 0) {
      snprintf(g_lib, sizeof g_lib, "%s", a + 4);
    } else if (strncmp(a, "shard_memory=", 13) == 0) {
      g_shard_memory = parse_size(a + 13);
      if (g_shard_memory == 0) {
        slurm_error("vgpu: plugstack.conf shard_memory=%s is not a size (e.g. 10G)", a + 13);
        return -1;
      }
    } else if (strncmp(a, "shards_per_gpu=", 15) == 0) {
      char* end = NULL;
      const unsigned long n = strtoul(a + 15, &end, 10);
      if (end == a + 15 || *end != '\0' || n == 0 || n > 1000) {
        slurm_error("vgpu: plugstack.conf shards_per_gpu=%s is not a count in 1..1000", a + 15);
        return -1;
      }
      g_shards_per_gpu = n;
    } else if (strncmp(a, "socket=", 7) == 0) {
      snprintf(g_socket, sizeof g_socket, "%s", a + 7);
    } else if (strncmp(a, "state_dir=", 10) == 0) {
      snprintf(g_state_dir, sizeof g_state_dir, "%s", a + 10);
    } else if (strcmp(a, "mode=env") == 0) {
      g_hardened = 0;
    } else if (strcmp(a, "mode=hardened") == 0) {
      g_hardened = 1;
    } else if (strncmp(a, "cgroup=", 7) == 0) {
      snprintf(g_cgroup, sizeof g_cgroup, "%s", a + 7);
    } else {
      slurm_error("vgpu: plugstack.conf argument '%s' is not one of lib=PATH, shard_memory=SIZE, shards_per_gpu=N, "
                  "socket=PATH, state_dir=PATH, mode=env|hardened, cgroup=DIR",
                  a);
      return -1;
    }
  }
  return 0;
}

int slurm_spank_init(spank_t sp, int argc, char** argv) {
  for (struct spank_option* o = g_options; o->name != NULL; ++o) {
    if (spank_option_register(sp, o) != ESPANK_SUCCESS) {
      slurm_error("vgpu: cannot register --%s", o->name);
      return -1;
    }
  }
  return parse_arguments(argc, argv);
}

/* The options as the job script context sees them (they are not passed through callbacks there). */
static int read_options(spank_t sp) {
  char* value = NULL;
  if (spank_option_getopt(sp, &g_options[0], &value) == ESPANK_SUCCESS && on_memory(0, value, 1) != 0) return -1;
  if (spank_option_getopt(sp, &g_options[1], &value) == ESPANK_SUCCESS && on_compute(0, value, 1) != 0) return -1;
  if (spank_option_getopt(sp, &g_options[2], &value) == ESPANK_SUCCESS && on_isolation(0, value, 1) != 0) return -1;
  return 0;
}

static void region_name(uint32_t job, char* out, size_t size) { snprintf(out, size, "/vgpu-slurm-job-%u", job); }

static int job_id(spank_t sp, uint32_t* job) {
  if (spank_get_item(sp, S_JOB_ID, job) != ESPANK_SUCCESS) {
    slurm_error("vgpu: cannot read the job id");
    return -1;
  }
  return 0;
}

/* Shards of the job on this node, from what Slurm scheduled (0: none). */
static uint64_t shards_on_node(spank_t sp) {
  char value[64];
  if (spank_getenv(sp, "SLURM_SHARDS_ON_NODE", value, sizeof value) == ESPANK_SUCCESS) return strtoull(value, NULL, 10);
  return 0;
}

/* ---- vgpud, when it runs on the node ------------------------------------------------------------ */

/* One HTTP/1.1 request over vgpud's unix socket; the body of the answer into `out`. Returns the status
 * code, or -1 when vgpud cannot be reached. */
static int vgpud_request(const char* method, const char* path, const char* body, char* out, size_t size) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_un address;
  memset(&address, 0, sizeof address);
  address.sun_family = AF_UNIX;
  if (strlen(g_socket) >= sizeof address.sun_path) {
    close(fd);
    return -1;
  }
  memcpy(address.sun_path, g_socket, strlen(g_socket) + 1);
  if (connect(fd, (struct sockaddr*)&address, sizeof address) != 0) {
    close(fd);
    return -1;
  }
  char request[8192];
  const int length = snprintf(request, sizeof request,
                              "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n"
                              "Content-Length: %zu\r\n\r\n%s",
                              method, path, body ? strlen(body) : 0, body ? body : "");
  if (length < 0 || (size_t)length >= sizeof request || write(fd, request, (size_t)length) != length) {
    close(fd);
    return -1;
  }
  static char reply[65536];
  size_t got = 0;
  ssize_t n = 0;
  while (got + 1 < sizeof reply && (n = read(fd, reply + got, sizeof reply - 1 - got)) > 0) got += (size_t)n;
  close(fd);
  reply[got] = '\0';
  int status = -1;
  if (sscanf(reply, "HTTP/1.%*d %d", &status) != 1) return -1;
  const char* start = strstr(reply, "\r\n\r\n");
  snprintf(out, size, "%s", start ? start + 4 : "");
  return status;
}

/* The string value of "key": "value" in flat JSON (vgpud's values here have no escapes). */
static int json_string(const char* json, const char* key, char* out, size_t size) {
  char pattern[128];
  snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
  const char* at = strstr(json, pattern);
  if (at == NULL) return -1;
  at += strlen(pattern);
  const char* end = strchr(at, '"');
  if (end == NULL || (size_t)(end - at) >= size) return -1;
  memcpy(out, at, (size_t)(end - at));
  out[end - at] = '\0';
  return 0;
}

/* Copies `src` into `out` (size bytes), cut to fit. */
static void copy_field(char* out, size_t size, const char* src) {
  size_t n = strlen(src);
  if (n >= size) n = size - 1;
  memcpy(out, src, n);
  out[n] = '\0';
}

static void state_file(uint32_t job, char* out, size_t size) { snprintf(out, size, "%s/job-%u.env", g_state_dir, job); }
static void lock_file(uint32_t job, char* out, size_t size) { snprintf(out, size, "%s/job-%u.lock", g_state_dir, job); }

/* Whether vgpud's socket is on the node. */
static int vgpud_present(void) {
  struct stat st;
  return stat(g_socket, &st) == 0;
}

/* Registers the job with vgpud as a slice on behalf of its user, with the limits its first task
 * computed (`memory` 0 / `compute` < 0: none) on GPU `gpu` ("" : vgpud's choice); leaves vgpud's slice
 * id and region in the state file for the job's tasks and epilog. 0 when registered, -1 when vgpud is
 * not there or refused (the plugin then keeps the job's books itself). */
static int register_with_vgpud(uint32_t job, uid_t uid, gid_t gid, uint64_t memory, double compute, const char* gpu) {
  if (!vgpud_present()) return -1;
  char body[1024];
  int n = snprintf(body, sizeof body, "{\"name\":\"slurm-%u\",\"on_behalf_of\":{\"uid\":%u,\"gid\":%u,\"job_id\":\"%u\"}",
                   job, (unsigned)uid, (unsigned)gid, job);
  if (gpu[0] != '\0') n += snprintf(body + n, sizeof body - (size_t)n, ",\"gpu\":%s", gpu);
  if (memory != 0) n += snprintf(body + n, sizeof body - (size_t)n, ",\"memory\":%llu", (unsigned long long)memory);
  if (compute > 0) n += snprintf(body + n, sizeof body - (size_t)n, ",\"compute\":%.6f", compute);
  /* The isolation the tasks get (intercept by default): vgpud then makes the slice's accounting region. */
  n += snprintf(body + n, sizeof body - (size_t)n, ",\"isolation\":\"%s\"", g_isolation[0] != '\0' ? g_isolation : "intercept");
  snprintf(body + n, sizeof body - (size_t)n, "}");
  char reply[65536];
  const int status = vgpud_request("POST", "/v1/slices", body, reply, sizeof reply);
  char id[128];
  char region[256];
  const int have_id = json_string(reply, "id", id, sizeof id) == 0;
  if (status != 201 || !have_id || json_string(reply, VGPU_ENV_SHM_NAME, region, sizeof region) != 0) {
    if (status == 201 && have_id) { /* made, but without an accounting region (isolation none or mps) */
      char route[256];
      char ignored[4096];
      snprintf(route, sizeof route, "/v1/slices/%s", id);
      (void)vgpud_request("DELETE", route, NULL, ignored, sizeof ignored);
    }
    if (status != -1) slurm_error("vgpu: job %u: vgpud gave no slice with a region (HTTP %d): %.300s; keeping its books here", job, status, reply);
    return -1;
  }
  char gpu_region[256] = "";
  (void)json_string(reply, VGPU_ENV_GPU_SHM_NAME, gpu_region, sizeof gpu_region);
  mkdir(g_state_dir, 0755);
  char path[MAX_PATH + 64];
  state_file(job, path, sizeof path);
  FILE* f = fopen(path, "w");
  if (f == NULL) {
    slurm_error("vgpu: job %u: cannot write %s: %s", job, path, strerror(errno));
    char route[256];
    snprintf(route, sizeof route, "/v1/slices/%s", id);
    (void)vgpud_request("DELETE", route, NULL, reply, sizeof reply);
    return -1;
  }
  fprintf(f, "id=%s\nregion=%s\ngpu_region=%s\n", id, region, gpu_region);
  fclose(f);
  chmod(path, 0644);
  return 0;
}

/* vgpud's slice of the job, from the state file: its id and regions ("" when the job has none). */
static int read_state(uint32_t job, char* id, char* region, char* gpu_region, size_t size) {
  char path[MAX_PATH + 64];
  state_file(job, path, sizeof path);
  FILE* f = fopen(path, "r");
  if (f == NULL) return -1;
  char line[512];
  id[0] = region[0] = gpu_region[0] = '\0';
  while (fgets(line, sizeof line, f) != NULL) {
    line[strcspn(line, "\n")] = '\0';
    if (strncmp(line, "id=", 3) == 0) copy_field(id, size, line + 3);
    if (strncmp(line, "region=", 7) == 0) copy_field(region, size, line + 7);
    if (strncmp(line, "gpu_region=", 11) == 0) copy_field(gpu_region, size, line + 11);
  }
  fclose(f);
  return id[0] != '\0' && region[0] != '\0' ? 0 : -1;
}

/* Creates the job's accounting region, owned by the job's user, with `memory` as its limit (0: the
 * first task brings it). 0 when created or already there, -1 (logged) otherwise. */
static int create_region(uint32_t job, uid_t uid, gid_t gid, uint64_t memory) {
  char name[64];
  region_name(job, name, sizeof name);
  const int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EEXIST) return 0;
  if (fd < 0) {
    slurm_error("vgpu: job %u: cannot create its accounting region %s: %s", job, name, strerror(errno));
    return -1;
  }
  int rc = -1;
  if (ftruncate(fd, (off_t)sizeof(struct vgpu_shm_region)) == 0) {
    struct vgpu_shm_region* r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (r != MAP_FAILED) {
      memset(r, 0, sizeof *r);
      r->abi_version = VGPU_ABI_VERSION;
      r->memory_limit = memory;
      __atomic_store_n(&r->magic, VGPU_SHM_MAGIC, __ATOMIC_RELEASE);
      munmap(r, sizeof *r);
      rc = fchown(fd, uid, gid);
    }
  }
  if (rc != 0) {
    slurm_error("vgpu: job %u: cannot set up %s: %s", job, name, strerror(errno));
    shm_unlink(name);
  }
  close(fd);
  return rc;
}

int slurm_spank_job_prolog(spank_t sp, int argc, char** argv) {
  if (parse_arguments(argc, argv) != 0 || read_options(sp) != 0) return -1;
  if (g_memory == 0 && g_compute < 0 && g_isolation[0] == '\0') return 0; /* not a vGPU job (hardened: maybe by shards) */
  uint32_t job = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  if (job_id(sp, &job) != 0) return -1;
  if (spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS || spank_get_item(sp, S_JOB_GID, &gid) != ESPANK_SUCCESS) {
    slurm_error("vgpu: job %u: cannot read its user", job);
    return -1;
  }
  /* With vgpud on the node the job is registered by its first task, when the limits its shards imply
     are known (the prolog is not told the shard count); without it the job's region is made here. */
  if (vgpud_present()) return 0;
  return create_region(job, uid, gid, g_memory);
}

/* The job's lock (state_dir/job-<id>.lock, held until the descriptor is closed): the first task of the
 * job sets its books up under it, so two tasks starting at once do it once. -1 (logged) on failure. */
static int lock_job(uint32_t job) {
  if (mkdir(g_state_dir, 0755) == 0) (void)chmod(g_state_dir, 0755);
  char lock_path[MAX_PATH + 64];
  lock_file(job, lock_path, sizeof lock_path);
  const int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock < 0 || flock(lock, LOCK_EX) != 0) {
    slurm_error("vgpu: job %u: cannot lock %s: %s", job, lock_path, strerror(errno));
    if (lock >= 0) close(lock);
    return -1;
  }
  return lock;
}

/* The job's books, set up once per job by the first task of its first step (as root, under the job's
 * lock): vgpud's slice when vgpud runs on the node, else the job's own region (which the prolog made;
 * made here if vgpud refused or went away). Later tasks and steps find them as they are. */
static int set_up_books(uint32_t job, uid_t uid, gid_t gid, uint64_t memory, double compute, const char* gpu) {
  char path[MAX_PATH + 64];
  state_file(job, path, sizeof path);
  struct stat st;
  if (stat(path, &st) != 0 && register_with_vgpud(job, uid, gid, memory, compute, gpu) != 0) {
    return create_region(job, uid, gid, memory);
  }
  return 0;
}

/* ---- hardened mode: limits the job cannot change ------------------------------------------------ */

static void hardened_file(uint32_t job, const char* suffix, char* out, size_t size) {
  snprintf(out, size, "%s/job_%u.%s", VGPU_HARDENED_DIR, job, suffix);
}

/* The hierarchy hardened jobs' cgroups go in: cgroup=DIR, or the cgroup v2 mount (/sys/fs/cgroup, or
 * /sys/fs/cgroup/unified on a hybrid v1/v2 system). -1 when there is none. */
#define CGROUP2_MAGIC 0x63677270
static int cgroup_root(char* out, size_t size) {
  if (g_cgroup[0] != '\0') {
    snprintf(out, size, "%s", g_cgroup);
    return 0;
  }
  const char* candidates[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
  for (size_t i = 0; i < 2; ++i) {
    struct statfs fs;
    if (statfs(candidates[i], &fs) == 0 && fs.f_type == CGROUP2_MAGIC) {
      snprintf(out, size, "%s", candidates[i]);
      return 0;
    }
  }
  return -1;
}

/* The job whose cgroup this process is in (0: none, -1 when its cgroups name several). */
static long long own_job(void) {
  char text[8192];
  const int fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  const ssize_t n = read(fd, text, sizeof text);
  close(fd);
  if (n <= 0) return 0;
  int ambiguous = 0;
  const unsigned long long job = vgpu_job_of_cgroups(text, (size_t)n, &ambiguous);
  return ambiguous ? -1 : (long long)job;
}

/* Puts this task in a cgroup whose path names the job, which the job's user cannot leave, unless
 * Slurm's own cgroups (proctrack/cgroup, task/cgroup) already name it. */
static int enter_job_cgroup(uint32_t job) {
  const long long current = own_job();
  if (current == (long long)job) return 0;
  if (current != 0) {
    slurm_error("vgpu: job %u: this task's cgroups name %s; refusing to start it in mode=hardened", job,
                current < 0 ? "several jobs" : "another job");
    return -1;
  }
  char root[MAX_PATH];
  if (cgroup_root(root, sizeof root) != 0) {
    slurm_error("vgpu: job %u: mode=hardened needs a cgroup hierarchy for the job (no cgroup v2 at /sys/fs/cgroup "
                "or /sys/fs/cgroup/unified); give plugstack.conf cgroup=DIR, or use Slurm's proctrack/cgroup",
                job);
    return -1;
  }
  char path[MAX_PATH + 64];
  snprintf(path, sizeof path, "%s/vgpu_slurm", root);
  if (mkdir(path, 0755) != 0 && errno != EEXIST) goto failed;
  snprintf(path, sizeof path, "%s/vgpu_slurm/job_%u", root, job);
  if (mkdir(path, 0755) != 0 && errno != EEXIST) goto failed;
  snprintf(path, sizeof path, "%s/vgpu_slurm/job_%u/cgroup.procs", root, job);
  const int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) goto failed;
  char pid[32];
  const int length = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
  const int wrote = write(fd, pid, (size_t)length) == (ssize_t)length;
  close(fd);
  if (!wrote) goto failed;
  if (own_job() != (long long)job) {
    slurm_error("vgpu: job %u: moved into %s but /proc/self/cgroup does not name the job", job, path);
    return -1;
  }
  return 0;
failed:
  slurm_error("vgpu: job %u: cannot put the task in cgroup %s: %s", job, path, strerror(errno));
  return -1;
}

/* 0 when /etc/ld.so.preload loads the library (g_lib): then no process of the job runs without it. */
static int library_preloaded(void) {
  FILE* f = fopen("/etc/ld.so.preload", "r");
  if (f == NULL) return -1;
  char word[MAX_PATH];
  int found = 0;
  while (!found && fscanf(f, " %4095[^ \t\n:]", word) == 1) {
    found = strcmp(word, g_lib) == 0;
    (void)fscanf(f, "%*[ \t\n:]");
  }
  fclose(f);
  return found ? 0 : -1;
}

/* The root-owned directory of the limits files, made if missing; -1 when it is not root's alone. */
static int hardened_directory(uint32_t job) {
  char parent[MAX_PATH];
  snprintf(parent, sizeof parent, "%s", VGPU_HARDENED_DIR);
  char* slash = strrchr(parent, '/');
  /* chmod after mkdir: slurmd's umask must not leave the job's user unable to read its limits. */
  if (slash != NULL && slash != parent) {
    *slash = '\0';
    if (mkdir(parent, 0755) == 0) (void)chmod(parent, 0755);
  }
  if (mkdir(VGPU_HARDENED_DIR, 0755) == 0) (void)chmod(VGPU_HARDENED_DIR, 0755);
  struct stat st;
  if (stat(VGPU_HARDENED_DIR, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022) != 0) {
    slurm_error("vgpu: job %u: %s must be a directory owned by root and writable by root alone", job,
                VGPU_HARDENED_DIR);
    return -1;
  }
  return 0;
}

/* Writes the job's limits file once (the first task of the job, under the job's lock); later tasks and
 * steps find it and take the job's limits. */
static int write_limits(uint32_t job, uint64_t memory, double compute, const char* region, const char* gpu_region,
                        const char* uuid) {
  if (hardened_directory(job) != 0) return -1;
  char path[MAX_PATH + 64];
  hardened_file(job, "limits", path, sizeof path);
  int rc = 0;
  struct stat st;
  if (lstat(path, &st) != 0) {
    char temporary[MAX_PATH + 64];
    hardened_file(job, "limits.new", temporary, sizeof temporary);
    FILE* f = fopen(temporary, "w");
    if (f != NULL) {
      fprintf(f, "%s=%llu\n%s=%.6f\n%s=%s\n%s=%s\n%s=%s\n", VGPU_HARDENED_KEY_MEMORY_LIMIT, (unsigned long long)memory,
              VGPU_HARDENED_KEY_COMPUTE_SHARE, compute > 0 ? compute : 1.0, VGPU_HARDENED_KEY_SHM_NAME, region,
              VGPU_HARDENED_KEY_GPU_SHM_NAME, gpu_region, VGPU_HARDENED_KEY_GPU_UUID, uuid);
      rc = fclose(f) == 0 && chmod(temporary, 0644) == 0 && rename(temporary, path) == 0 ? 0 : -1;
    } else {
      rc = -1;
    }
    if (rc != 0) slurm_error("vgpu: job %u: cannot write its limits %s: %s", job, path, strerror(errno));
  }
  return rc;
}

/* Removes what hardened mode made for the job: its limits and its cgroup (empty by now). */
static void remove_hardened(uint32_t job) {
  char path[MAX_PATH + 64];
  hardened_file(job, "limits", path, sizeof path);
  unlink(path);
  char root[MAX_PATH];
  if (cgroup_root(root, sizeof root) == 0) {
    snprintf(path, sizeof path, "%s/vgpu_slurm/job_%u", root, job);
    if (rmdir(path) != 0 && errno != ENOENT) slurm_error("vgpu: job %u: cannot remove cgroup %s: %s", job, path, strerror(errno));
  }
}

int slurm_spank_job_epilog(spank_t sp, int argc, char** argv) {
  if (parse_arguments(argc, argv) != 0) return -1;
  uint32_t job = 0;
  if (job_id(sp, &job) != 0) return -1;
  if (g_hardened) remove_hardened(job);
  char lock_path[MAX_PATH + 64];
  lock_file(job, lock_path, sizeof lock_path);
  unlink(lock_path);
  char id[256];
  char region[256];
  char gpu_region[256];
  if (read_state(job, id, region, gpu_region, sizeof id) == 0) {
    char route[320];
    char reply[4096];
    snprintf(route, sizeof route, "/v1/slices/%s", id);
    const int status = vgpud_request("DELETE", route, NULL, reply, sizeof reply);
    char path[MAX_PATH + 64];
    state_file(job, path, sizeof path);
    unlink(path);
    if (status != 204 && status != 200 && status != 404) {
      slurm_error("vgpu: job %u: vgpud did not end slice %s (HTTP %d): %.300s", job, id, status, reply);
      return -1;
    }
    return 0;
  }
  char name[64];
  region_name(job, name, sizeof name);
  if (shm_unlink(name) != 0 && errno != ENOENT) {
    slurm_error("vgpu: job %u: cannot remove %s: %s", job, name, strerror(errno));
    return -1;
  }
  return 0;
}

/* Writes the job's memory limit into its region unless one is there: done here, in the task before
 * the user's program runs, so a program that raises VGPU_MEMORY_LIMIT in its own environment finds
 * the limit already set (the library takes the region's). */
static int seal_limit(uint32_t job, const char* name, uint64_t memory) {
  const int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) {
    slurm_error("vgpu: job %u: its accounting region %s is missing (%s): is the plugin in slurmd's plugstack.conf, "
                "so that the job prolog creates it?",
                job, name, strerror(errno));
    return -1;
  }
  struct vgpu_shm_region* r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (r == MAP_FAILED) {
    slurm_error("vgpu: job %u: cannot map %s: %s", job, name, strerror(errno));
    return -1;
  }
  uint64_t none = 0;
  (void)__atomic_compare_exchange_n(&r->memory_limit, &none, memory, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
  munmap(r, sizeof *r);
  return 0;
}

/* The UUID of NVML's GPU `index` through libnvidia-ml.so.1, loaded here and let go again (0 when there
 * is no NVML or no such GPU). Slurm's GPU ids follow gres.conf, which AutoDetect=nvml writes in NVML's
 * order; a hand-written gres.conf should list /dev/nvidiaN in that order too. */
typedef int nvml_return;
typedef void* nvml_device;
static int nvml_gpu_uuid(unsigned index, char* out, size_t size) {
  void* nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (nvml == NULL) return -1;
  /* POSIX's way to take a function from dlsym (ISO C has no object-to-function pointer cast). */
  nvml_return (*init)(void) = NULL;
  nvml_return (*shutdown)(void) = NULL;
  nvml_return (*handle)(unsigned, nvml_device*) = NULL;
  nvml_return (*uuid)(nvml_device, char*, unsigned) = NULL;
  *(void**)&init = dlsym(nvml, "nvmlInit_v2");
  if (init == NULL) *(void**)&init = dlsym(nvml, "nvmlInit");
  *(void**)&shutdown = dlsym(nvml, "nvmlShutdown");
  *(void**)&handle = dlsym(nvml, "nvmlDeviceGetHandleByIndex_v2");
  if (handle == NULL) *(void**)&handle = dlsym(nvml, "nvmlDeviceGetHandleByIndex");
  *(void**)&uuid = dlsym(nvml, "nvmlDeviceGetUUID");
  int rc = -1;
  if (init != NULL && shutdown != NULL && handle != NULL && uuid != NULL && init() == 0) {
    nvml_device device = NULL;
    if (handle(index, &device) == 0 && uuid(device, out, (unsigned)size) == 0) rc = 0;
    shutdown();
  }
  dlclose(nvml);
  return rc;
}

/* nvml_gpu_uuid, asked once per task: in hardened mode the privileged and the user stage of the same
 * task process both want it, and nvmlInit is slow on a real node. */
static int gpu_uuid(unsigned index, char* out, size_t size) {
  static int known = 0;
  static unsigned known_index = 0;
  static int known_rc = -1;
  static char known_uuid[96];
  if (!known || known_index != index) {
    known_rc = nvml_gpu_uuid(index, known_uuid, sizeof known_uuid);
    known_index = index;
    known = 1;
  }
  if (known_rc == 0) snprintf(out, size, "%s", known_uuid);
  return known_rc;
}

/* The first GPU of a comma-separated list such as SLURM_STEP_GPUS ("1,3"). */
static int first_gpu(spank_t sp, char* out, size_t size) {
  const char* names[] = {"SLURM_STEP_GPUS", "SLURM_JOB_GPUS"};
  for (size_t i = 0; i < 2; ++i) {
    if (spank_getenv(sp, names[i], out, (int)size) == ESPANK_SUCCESS && out[0] != '\0') {
      out[strcspn(out, ",")] = '\0';
      return 0;
    }
  }
  return -1;
}

/* The task's limits from the options and what Slurm scheduled (shards); -1 (logged) when the options
 * ask for more than the shards hold. *memory 0 / *compute < 0: no such limit. */
static int task_limits(spank_t sp, uint32_t job, uint64_t* memory, double* compute) {
  const uint64_t shards = shards_on_node(sp);
  *memory = g_memory;
  *compute = g_compute;
  if (shards == 0) return 0;
  const uint64_t shard_memory_total = g_shard_memory * shards;
  const double shard_share = (double)shards / (double)g_shards_per_gpu;
  if (g_shard_memory != 0 && *memory > shard_memory_total) {
    slurm_error("vgpu: job %u: --vgpu-memory asks for %llu bytes but its %llu shard(s) hold %llu (shard_memory "
                "%llu); ask for more shards (--gres=shard:N) or less memory",
                job, (unsigned long long)*memory, (unsigned long long)shards, (unsigned long long)shard_memory_total,
                (unsigned long long)g_shard_memory);
    return -1;
  }
  if (*compute > shard_share + 1e-9) {
    slurm_error("vgpu: job %u: --vgpu-compute=%.3f is more than its %llu of %llu shards (%.3f); ask for more shards or "
                "a smaller share",
                job, *compute, (unsigned long long)shards, (unsigned long long)g_shards_per_gpu, shard_share);
    return -1;
  }
  if (*memory == 0) *memory = shard_memory_total;
  if (*compute < 0) *compute = shard_share > 1.0 ? 1.0 : shard_share;
  return 0;
}

/* A vGPU job: one that gave a --vgpu-* option, or, in hardened mode, any job holding shards (there a
 * job cannot opt out of the limits its shards imply by leaving the options off). */
static int vgpu_job(spank_t sp) {
  if (g_memory != 0 || g_compute >= 0 || g_isolation[0] != '\0') return 1;
  return g_hardened && shards_on_node(sp) > 0;
}

/* The job's regions: vgpud's (from the state file the prolog left) or the plugin's own. */
static void job_regions(uint32_t job, char* region, char* gpu_region, size_t size) {
  char id[256];
  if (read_state(job, id, region, gpu_region, size) != 0) {
    region_name(job, region, size);
    gpu_region[0] = '\0';
  }
}

/* As root in the task, before it becomes the user: the job's books are set up by its first task (now
 * that the limits its shards imply are known) and, in hardened mode, the task joins the job's cgroup
 * and the job's limits go into the root-owned file the library takes them from. */
int slurm_spank_task_init_privileged(spank_t sp, int argc, char** argv) {
  (void)argc;
  (void)argv;
  if (!vgpu_job(sp)) return 0;
  uint32_t job = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  uint64_t memory = 0;
  double compute = -1.0;
  if (job_id(sp, &job) != 0 || task_limits(sp, job, &memory, &compute) != 0) return -1;
  if (spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS || spank_get_item(sp, S_JOB_GID, &gid) != ESPANK_SUCCESS) {
    slurm_error("vgpu: job %u: cannot read its user", job);
    return -1;
  }
  if (g_hardened) {
    if (library_preloaded() != 0) {
      slurm_error("vgpu: job %u: mode=hardened needs %s in /etc/ld.so.preload on this node, so that every process "
                  "of the job loads it (docs/slurm.md); refusing to start the task without it",
                  job, g_lib);
      return -1;
    }
    if (enter_job_cgroup(job) != 0) return -1;
  }
  char gpu[32] = "";
  if (first_gpu(sp, gpu, sizeof gpu) != 0) gpu[0] = '\0';
  const int lock = lock_job(job);
  if (lock < 0) return -1;
  int rc = set_up_books(job, uid, gid, memory, compute, gpu);
  if (rc == 0 && g_hardened) {
    char region[256];
    char gpu_region[256];
    job_regions(job, region, gpu_region, sizeof region);
    char uuid[96] = "";
    if (gpu[0] != '\0') (void)gpu_uuid((unsigned)strtoul(gpu, NULL, 10), uuid, sizeof uuid);
    rc = write_limits(job, memory, compute, region, gpu_region, uuid);
  }
  close(lock);
  return rc;
}

int slurm_spank_task_init(spank_t sp, int argc, char** argv) {
  (void)argc;
  (void)argv;
  if (!vgpu_job(sp)) return 0; /* not a vGPU job: untouched */
  uint32_t job = 0;
  if (job_id(sp, &job) != 0) return -1;
  uint64_t memory = 0;
  double compute = -1.0;
  if (task_limits(sp, job, &memory, &compute) != 0) return -1;
  const char* isolation = g_isolation[0] != '\0' ? g_isolation : "intercept";
  char name[256];
  char gpu_region[256];
  char text[64];
  job_regions(job, name, gpu_region, sizeof name);
  if (gpu_region[0] != '\0') spank_setenv(sp, VGPU_ENV_GPU_SHM_NAME, gpu_region, 1);
  /* In hardened mode these only describe the slice: the library takes the job's limits file instead,
     and /etc/ld.so.preload loads it. */
  spank_setenv(sp, VGPU_ENV_SHM_NAME, name, 1);
  snprintf(text, sizeof text, "slurm-%u", job);
  spank_setenv(sp, VGPU_ENV_ID, text, 1);
  spank_setenv(sp, VGPU_ENV_ISOLATION, isolation, 1);
  if (memory != 0) {
    if (!g_hardened && seal_limit(job, name, memory) != 0) return -1;
    snprintf(text, sizeof text, "%llu", (unsigned long long)memory);
    spank_setenv(sp, VGPU_ENV_MEMORY_LIMIT, text, 1);
  }
  if (compute > 0) {
    snprintf(text, sizeof text, "%.6f", compute);
    spank_setenv(sp, VGPU_ENV_COMPUTE_SHARE, text, 1);
  }
  if (first_gpu(sp, text, sizeof text) == 0) {
    spank_setenv(sp, VGPU_ENV_PHYSICAL_GPU, text, 1);
    char uuid[96];
    if (gpu_uuid((unsigned)strtoul(text, NULL, 10), uuid, sizeof uuid) == 0) spank_setenv(sp, VGPU_ENV_GPU_UUID, uuid, 1);
  }
  if (!g_hardened && strcmp(isolation, "intercept") == 0) {
    char preload[MAX_PATH * 2];
    char current[MAX_PATH];
    if (spank_getenv(sp, "LD_PRELOAD", current, sizeof current) == ESPANK_SUCCESS && current[0] != '\0') {
      snprintf(preload, sizeof preload, "%s:%s", g_lib, current);
    } else {
      snprintf(preload, sizeof preload, "%s", g_lib);
    }
    spank_setenv(sp, "LD_PRELOAD", preload, 1);
  }
  return 0;
}
