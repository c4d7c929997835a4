/*
 * Which Slurm job a process belongs to, from its cgroups: shared by spank_vgpu.so (C), which puts
 * a hardened job's tasks in a cgroup named after the job, and libvgpu-cuda.so (C++), which reads
 * the job back to find its limits (abi.h, "Slurm's hardened mode"). Plain C, header only, no state.
 */
#ifndef APT_VGPU_INTERCEPT_SLURM_JOB_H
#define APT_VGPU_INTERCEPT_SLURM_JOB_H

#include <stddef.h>

/*
 * The job that `text` (the content of /proc/PID/cgroup, `length` bytes) puts the process in: on each
 * line "hierarchy:controllers:path", the first path component of the form job_<digits> (the outermost:
 * a job whose cgroup its user may write can only make deeper ones, Slurm's own cgroup/v1 layout
 * /slurm/uid_U/job_J/step_S and cgroup/v2 layout .../job_J/step_S both qualify). 0 when no line names
 * a job. *ambiguous is set to 1 when two lines name different jobs: then no job may be trusted.
 */
static inline unsigned long long vgpu_job_of_cgroups(const char* text, size_t length, int* ambiguous) {
  unsigned long long job = 0;
  size_t i = 0;
  *ambiguous = 0;
  while (i < length) {
    size_t end = i;
    while (end < length && text[end] != '\n') ++end;
    /* The path starts after the second colon. */
    size_t colons = 0;
    size_t at = i;
    while (at < end && colons < 2) {
      if (text[at] == ':') ++colons;
      ++at;
    }
    while (colons == 2 && at < end) {
      size_t stop = at;
      while (stop < end && text[stop] != '/') ++stop;
      const size_t size = stop - at;
      if (size > 4 && size <= 4 + 19 && text[at] == 'j' && text[at + 1] == 'o' && text[at + 2] == 'b' &&
          text[at + 3] == '_') {
        unsigned long long id = 0;
        size_t k = at + 4;
        while (k < stop && text[k] >= '0' && text[k] <= '9') {
          unsigned digit = 0; /* the digit's value, without a cast (C and C++'s warnings alike) */
          while ("0123456789"[digit] != text[k]) ++digit;
          id = id * 10 + digit;
          ++k;
        }
        if (k == stop && id != 0) {
          if (job != 0 && job != id) *ambiguous = 1;
          job = id;
          break; /* the outermost job_ component of this line */
        }
      }
      at = stop + 1;
    }
    i = end + 1;
  }
  return job;
}

#endif /* APT_VGPU_INTERCEPT_SLURM_JOB_H */
