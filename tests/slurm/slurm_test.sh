#!/usr/bin/env bash
# spank_vgpu.so on a real one-node Slurm started here (no systemd): munged, slurmctld and slurmd on
# loopback with a private munge socket, two fake GPUs as character devices named in gres.conf with
# 4 shards each. Jobs run the fake-driver CUDA program (tests/fakes/cuda_app.cpp) under the plugin
# and the real libvgpu-cuda.so. Exit 77 (CTest: skipped) when not root or Slurm is not installed.
#
#   slurm_test.sh SPANK_PLUGIN LIBVGPU_CUDA CUDA_APP FAKE_CUDA_DIR VGPUD
set -uo pipefail
plugin=$1 library=$2 app=$3 fake=$4 vgpud=$5

skip() { echo "SKIP: $*"; exit 77; }
[[ $(id -u) -eq 0 ]] || skip "needs root (slurmd runs jobs as their users)"
for tool in slurmctld slurmd srun sbatch sinfo squeue munged; do
  command -v "$tool" >/dev/null || skip "$tool not installed (apt-get install slurm-wlm munge)"
done

work=$(mktemp -d /tmp/vgpu-slurm-XXXXXX)
chmod 755 "$work"
pids=()
munge_pid=""
cleanup() {
  # Our jobs first (a step left running would outlive slurmd as a slurmstepd), then slurmd and
  # slurmctld by pid, munged last (slurmd would hang in the epilog without it).
  if [[ -n "${SLURM_CONF:-}" && ${#pids[@]} -gt 0 ]]; then
    scancel --full --quiet $(squeue -h -o %i 2>/dev/null) 2>/dev/null
    for _ in $(seq 1 100); do [[ -z $(squeue -h 2>/dev/null) ]] && break; sleep 0.1; done
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  [[ -n "${vgpud_pid:-}" ]] && kill "$vgpud_pid" 2>/dev/null
  [[ -n "$munge_pid" ]] && kill "$munge_pid" 2>/dev/null
  rm -f /dev/shm/vgpu-slurm-job-* 2>/dev/null
  [[ -n "${made_preload:-}" && ! -s /etc/ld.so.preload ]] && rm -f /etc/ld.so.preload
  [[ -n "${made_run:-}" ]] && rmdir /run/vgpu-slurm 2>/dev/null
  for root in /sys/fs/cgroup /sys/fs/cgroup/unified; do
    rmdir "$root"/vgpu_slurm/job_* "$root/vgpu_slurm" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mkdir -p "$work"/{state,spool,log,dev,munge}
chown munge:munge "$work/munge"
chmod 755 "$work/munge"
dd if=/dev/urandom bs=1 count=1024 of="$work/munge/munge.key" 2>/dev/null
chown munge:munge "$work/munge/munge.key"
chmod 400 "$work/munge/munge.key"
runuser -u munge -- munged --key-file="$work/munge/munge.key" --socket="$work/munge/munge.sock" \
  --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" --seed-file="$work/munge/munge.seed" ||
  skip "munged did not start: $(tail -2 "$work/munge/munged.log" 2>/dev/null)"
for _ in $(seq 1 100); do [[ -s "$work/munge/munged.pid" ]] && break; sleep 0.1; done
munge_pid=$(cat "$work/munge/munged.pid")

mknod -m 666 "$work/dev/nvidia0" c 195 0 && mknod -m 666 "$work/dev/nvidia1" c 195 1 ||
  skip "cannot make the fake GPUs' device nodes (mknod needs CAP_MKNOD)"
host=$(hostname -s)
cat >"$work/slurm.conf" <<EOF
ClusterName=vgputest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
AuthInfo=socket=$work/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu,shard
PlugStackConfig=$work/plugstack.conf
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 Gres=gpu:2,shard:8 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
cat >"$work/gres.conf" <<EOF
Name=gpu File=$work/dev/nvidia0
Name=gpu File=$work/dev/nvidia1
Name=shard Count=4 File=$work/dev/nvidia0
Name=shard Count=4 File=$work/dev/nvidia1
EOF
echo "required $plugin lib=$library shard_memory=1G shards_per_gpu=4 mode=env socket=$work/vgpud.sock" \
  "state_dir=$work/vgpu-slurm" >"$work/plugstack.conf"
export SLURM_CONF=$work/slurm.conf

slurmctld -D -c -i -f "$SLURM_CONF" >"$work/log/slurmctld.out" 2>&1 &
pids+=($!)
# slurmd (and the slurmstepds it starts) see the fake NVML, which names the two GPUs' UUIDs.
cat >"$work/nvml.json" <<EOF
{"devices": [{"name": "Fake GPU", "uuid": "GPU-slurm-test-0"}, {"name": "Fake GPU", "uuid": "GPU-slurm-test-1"}]}
EOF
# slurmd runs in a private mount namespace where /etc/ld.so.preload and /run/vgpu-slurm are the
# test's own (hardened mode's, checks 13-16): the host's stay as they are. Bind mounts need the
# mount points; an empty /etc/ld.so.preload made for the purpose is removed again.
: >"$work/ld.so.preload"
mkdir -m 755 "$work/run"
namespace=""
why_not_hardened="no private mount namespace here (unshare -m) to give slurmd its own /etc/ld.so.preload"
if unshare -m true 2>/dev/null; then
  [[ -e /etc/ld.so.preload ]] || { : >/etc/ld.so.preload && made_preload=yes; }
  [[ -d /run/vgpu-slurm ]] || { mkdir -p /run/vgpu-slurm && made_run=yes; }
  # The whole arrangement once, before slurmd depends on it: both bind mounts in a private namespace.
  if unshare -m --propagation private sh -c 'mount --bind "$1" /etc/ld.so.preload && mount --bind "$2" /run/vgpu-slurm' \
    sh "$work/ld.so.preload" "$work/run" 2>/dev/null; then
    namespace=yes
  else
    why_not_hardened="bind mounts over /etc/ld.so.preload and /run/vgpu-slurm fail in a private mount namespace here"
  fi
fi
# Hardened mode puts tasks in a cgroup of the cgroup v2 hierarchy (this Slurm tracks processes
# without cgroups): it needs one that root can write.
cgroup_v2=""
for root in /sys/fs/cgroup /sys/fs/cgroup/unified; do
  if [[ $(stat -fc %T "$root" 2>/dev/null) == cgroup2fs ]] && mkdir "$root/vgpu-slurm-probe" 2>/dev/null; then
    rmdir "$root/vgpu-slurm-probe"
    cgroup_v2=$root
    break
  fi
done
if [[ -n "$namespace" && -z "$cgroup_v2" ]]; then
  namespace=""
  why_not_hardened="no writable cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified"
fi
in_namespace() {
  if [[ -n "$namespace" ]]; then
    exec unshare -m --propagation private sh -c 'mount --bind "$1" /etc/ld.so.preload && mount --bind "$2" /run/vgpu-slurm &&
      shift 2 && exec "$@"' sh "$work/ld.so.preload" "$work/run" "$@"
  else
    exec "$@"
  fi
}
FAKE_NVML_CONFIG="$work/nvml.json" LD_LIBRARY_PATH="$(dirname "$fake")/nvml" \
  in_namespace slurmd -D -f "$SLURM_CONF" >"$work/log/slurmd.out" 2>&1 &
pids+=($!)
idle=""
for _ in $(seq 1 300); do  # the node reports idle in about a second
  [[ $(sinfo -h -o %t 2>/dev/null) == idle ]] && { idle=yes; break; }
  sleep 0.1
done
[[ -n "$idle" ]] || { tail -20 "$work"/log/*; echo "FAIL: the node never became idle"; exit 1; }

run() { timeout 60 srun -n1 --export=ALL,LD_LIBRARY_PATH="$fake" "$@" 2>&1; }
GIB=1073741824

# 1. The limits reach the task; the default memory is shards x shard_memory, the default share
#    shards / shards per GPU; the GPU comes from SLURM_STEP_GPUS, its UUID from NVML.
out=$(run --gres=shard:2 --vgpu-isolation=intercept env)
grep -qx "VGPU_MEMORY_LIMIT=$((2 * GIB))" <<<"$out" && grep -qx "VGPU_COMPUTE_SHARE=0.500000" <<<"$out" &&
  grep -q "^VGPU_PHYSICAL_GPU=[01]$" <<<"$out" && grep -q "^LD_PRELOAD=$library" <<<"$out" &&
  grep -qx "VGPU_GPU_UUID=GPU-slurm-test-$(sed -n 's/^VGPU_PHYSICAL_GPU=//p' <<<"$out")" <<<"$out" &&
  grep -q "^VGPU_SHM_NAME=/vgpu-slurm-job-" <<<"$out" &&
  pass "limits from 2 shards reach the task" || fail "limits from shards: $out"

# 2. An allocation over the limit is refused by the real libvgpu-cuda.so.
out=$(run --gres=shard:2 --vgpu-memory=1G "$app" dlsym alloc:700000000 alloc:700000000)
grep -q "alloc ok" <<<"$out" && grep -q "alloc oom" <<<"$out" && pass "over the limit: refused" || fail "over the limit: $out"

# 3. A request above the shards is refused at task start, saying why.
out=$(run --gres=shard:1 --vgpu-memory=3G "$app" dlsym alloc:1)
status=$?
[[ $status -ne 0 ]] && grep -q "shard(s) hold" <<<"$out" && pass "above the shards: refused" ||
  fail "above the shards (exit $status): $out"
out=$(run --gres=shard:1 --vgpu-compute=0.5 true)
[[ $? -ne 0 ]] && grep -q "more than its 1 of 4 shards" <<<"$out" && pass "share above the shards: refused" ||
  fail "share above the shards: $out"

# 4. Bad values are refused by srun and sbatch before a job is queued.
refused=0
for bad in --vgpu-compute=1.5 --vgpu-memory=lots --vgpu-isolation=magic; do
  out=$(timeout 30 srun -n1 "$bad" true 2>&1)
  [[ $? -ne 0 ]] && grep -q "vgpu: $bad" <<<"$out" && ! grep -q "queued\|allocated" <<<"$out" &&
    refused=$((refused + 1)) || fail "srun $bad: $out"
  out=$(timeout 30 sbatch "$bad" --wrap true 2>&1)
  [[ $? -ne 0 ]] && grep -q "vgpu: $bad" <<<"$out" && ! grep -q "Submitted" <<<"$out" &&
    refused=$((refused + 1)) || fail "sbatch $bad: $out"
done
[[ $refused -eq 6 ]] && pass "bad values refused by srun and sbatch before a job is queued"

# Waits (on the output, not the clock) until FILE says the allocation was made.
wait_for_alloc() {
  for _ in $(seq 1 600); do grep -q "alloc ok" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

# 5. A job's steps and tasks share one limit: one step holds 1.2 GB of the job's 2 GiB, then
#    another step of the same job asks for 1.2 GB more and is refused.
cat >"$work/share.sh" <<JOB
#!/bin/sh
srun -n1 --exact $app dlsym alloc:1200000000 hold >"$work/held.out" 2>&1 &
for i in \$(seq 1 600); do grep -q "alloc ok" "$work/held.out" && break; sleep 0.1; done
srun -n1 --overlap $app dlsym alloc:1200000000 >"$work/second.out" 2>&1
kill %1
JOB
timeout 60 sbatch --wait -n2 -o "$work/share.log" --gres=shard:2 --vgpu-compute=0.5 \
  --export=ALL,LD_LIBRARY_PATH="$fake" "$work/share.sh" >/dev/null 2>&1
grep -q "alloc ok" "$work/held.out" && grep -q "alloc oom" "$work/second.out" &&
  pass "a job's steps share one limit" ||
  fail "one limit per job: $(cat "$work/held.out" "$work/second.out" "$work/share.log" 2>&1)"

# 6. Two jobs on one GPU keep separate limits: while one holds 1.5 GB of its 2 GiB, another job
#    gets 1.5 GB of its own.
timeout 60 srun -n1 --gres=shard:2 --vgpu-compute=0.5 --export=ALL,LD_LIBRARY_PATH="$fake" \
  sh -c "echo gpu \$VGPU_PHYSICAL_GPU; exec $app dlsym alloc:1500000000 hold" >"$work/a.out" 2>&1 &
first=$!
wait_for_alloc "$work/a.out"
out=$(run --gres=shard:2 --vgpu-compute=0.5 sh -c "echo gpu \$VGPU_PHYSICAL_GPU; exec $app dlsym alloc:1500000000")
kill "$first" 2>/dev/null
wait "$first" 2>/dev/null
grep -q "alloc ok" "$work/a.out" && grep -q "alloc ok" <<<"$out" &&
  pass "two jobs keep separate limits ($(grep gpu "$work/a.out"), $(grep gpu <<<"$out"))" ||
  fail "two jobs: $(cat "$work/a.out") / $out"

# 7. sbatch's options reach the batch step and the sruns inside it.
cat >"$work/job.sh" <<EOF
#!/bin/sh
echo "batch \$VGPU_MEMORY_LIMIT"
srun -n1 sh -c 'echo "step \$VGPU_MEMORY_LIMIT"'
EOF
timeout 60 sbatch --wait -o "$work/job.out" --gres=shard:1 --vgpu-memory=512M "$work/job.sh" >/dev/null 2>&1
grep -qx "batch $((512 << 20))" "$work/job.out" && grep -qx "step $((512 << 20))" "$work/job.out" &&
  pass "sbatch options reach the batch step and its sruns" || fail "sbatch: $(cat "$work/job.out")"

# 8. A job without --vgpu-* is untouched.
out=$(run --gres=shard:1 env)
grep -q "^VGPU_\|^LD_PRELOAD=.*vgpu" <<<"$out" && fail "a job without --vgpu-* got: $(grep VGPU <<<"$out")" ||
  pass "a job without --vgpu-* is untouched"

# 9. Raising the limit in the task's own environment does not raise it (the region holds it).
out=$(run --gres=shard:1 --vgpu-compute=0.25 sh -c "VGPU_MEMORY_LIMIT=99999999999 $app dlsym alloc:1500000000")
grep -q "alloc oom" <<<"$out" && pass "VGPU_MEMORY_LIMIT raised by the task: still 1 GiB" || fail "raised limit: $out"

# 10. The epilog leaves nothing in /dev/shm once every job has ended.
left=""
for _ in $(seq 1 300); do
  left=$(ls /dev/shm | grep '^vgpu-slurm-job-' || true)
  [[ -z "$left" && $(squeue -h | wc -l) -eq 0 ]] && break
  sleep 0.1
done
[[ -z "$left" ]] && pass "the epilog removed every job's region" || fail "left in /dev/shm: $left"

# 11. With vgpud on the node (started only now: every check above ran without it), a job's slice is
#     registered with it, on behalf of the job's user and by job id, its use visible there, and ended
#     with the job.
"$vgpud" --socket "$work/vgpud.sock" --state-dir "$work/vgpud" --backend sim --sim-gpus 2x80GB \
  >"$work/log/vgpud.out" 2>&1 &
vgpud_pid=$!
for _ in $(seq 1 300); do
  curl -sf --unix-socket "$work/vgpud.sock" http://localhost/v1/health >/dev/null 2>&1 && break
  sleep 0.1
done
vgpud_slices() { curl -s --unix-socket "$work/vgpud.sock" "http://localhost/v1/slices?all=1"; }
# Runs a job (srun options in "$@") whose task holds 600 MB, and sets `used` to "USED LIMIT" of its
# slice as vgpud lists it (-1 -1 when there is none) and `slices` to the whole list, once the
# allocation was made; the job is then ended.
slurm_slice_while_holding() {
  timeout 60 srun -n1 "$@" --export=ALL,LD_LIBRARY_PATH="$fake" "$app" dlsym alloc:600000000 hold >"$work/held.out" 2>&1 &
  local holder=$!
  wait_for_alloc "$work/held.out"
  slices=$(vgpud_slices)
  used=$(python3 -c 'import json,sys; s=[x for x in json.loads(sys.argv[1]) if x.get("name","").startswith("slurm-")]; \
print(s[0]["memory_used_bytes"] if s else -1, s[0]["memory_limit_bytes"] if s else -1)' "$slices" 2>&1)
  kill "$holder" 2>/dev/null
  wait "$holder" 2>/dev/null
}
# Waits until vgpud lists no Slurm job's slice; fails when one stays.
slurm_slices_gone() {
  for _ in $(seq 1 300); do
    slices=$(vgpud_slices)
    grep -q '"slurm-' <<<"$slices" || return 0
    sleep 0.1
  done
  return 1
}
slurm_slice_while_holding --gres=shard:2 --vgpu-memory=1G
[[ "$used" == "600000000 $GIB" ]] && pass "the job's slice is registered with vgpud (use and limit seen there)" ||
  fail "vgpud registration: used/limit '$used'; slices $slices; $(cat "$work/held.out")"
slurm_slices_gone && pass "the epilog ended the job's vgpud slice" || fail "vgpud slice left: $slices"

# 12. A limit that comes from the shards alone reaches vgpud's ledger too: the job is registered by its
#     first task, which knows the shard count (the prolog does not).
slurm_slice_while_holding --gres=shard:2 --vgpu-compute=0.5
[[ "$used" == "600000000 $((2 * GIB))" ]] && pass "a limit from 2 shards alone is vgpud's too (2 GiB)" ||
  fail "shards-only limit in vgpud: used/limit '$used'; slices $slices; $(cat "$work/held.out")"
slurm_slices_gone || fail "vgpud slice left after the shards-only job: $slices"

# 13-16. Hardened mode: the library comes from /etc/ld.so.preload (slurmd's namespace's), the job's
#     limits from a root-owned file, its identity from a cgroup the job cannot leave; the jobs run as
#     an unprivileged user (root could undo all of it).
kill "$vgpud_pid" 2>/dev/null
wait "$vgpud_pid" 2>/dev/null
vgpud_pid=""
if [[ -z "$namespace" ]]; then
  echo "SKIP: hardened mode (checks 13-16): $why_not_hardened"
else
  sed -i 's/mode=env/mode=hardened/' "$work/plugstack.conf"
  as_user() { (cd /tmp && timeout 60 runuser -u nobody -- srun -n1 --export=ALL,LD_LIBRARY_PATH="$fake" "$@" 2>&1); }
  # 13. Without the library in /etc/ld.so.preload a hardened job's task is refused, saying why.
  out=$(as_user --gres=shard:1 --vgpu-memory=512M true)
  [[ $? -ne 0 ]] && grep -q "ld.so.preload" <<<"$out" && pass "hardened: a task is refused while ld.so.preload lacks the library" ||
    fail "hardened without ld.so.preload: $out"
  echo "$library" >"$work/ld.so.preload"  # in place: the namespace's bind mount sees the same file
  # 14. A task that unsets LD_PRELOAD, raises VGPU_MEMORY_LIMIT, names another region and another job
  #     in its environment keeps the job's 1 GiB.
  out=$(as_user --gres=shard:2 --vgpu-memory=1G sh -c "unset LD_PRELOAD; export VGPU_MEMORY_LIMIT=99999999999 \
    VGPU_SHM_NAME=/elsewhere VGPU_CONTEXT_BYTES=0 SLURM_JOB_ID=1; exec $app dlsym alloc:600000000 alloc:600000000")
  grep -q "alloc ok" <<<"$out" && grep -q "alloc oom" <<<"$out" &&
    pass "hardened: unset LD_PRELOAD and a raised VGPU_MEMORY_LIMIT still get the job's 1 GiB" || fail "hardened limit: $out"
  # A user who claims more shards in srun's environment is held to what Slurm scheduled.
  out=$(SLURM_SHARDS_ON_NODE=8 as_user --gres=shard:1 --vgpu-memory=3G true)
  [[ $? -ne 0 ]] && grep -q "its 1 shard(s) hold" <<<"$out" && pass "hardened: SLURM_SHARDS_ON_NODE from srun's environment is not believed" ||
    fail "hardened: claimed shards: $out"
  # 15. A job holding shards is limited by them without any --vgpu-* option, and cannot leave its
  #     cgroup or write its limits.
  out=$(as_user --gres=shard:1 sh -c "unset LD_PRELOAD VGPU_MEMORY_LIMIT VGPU_SHM_NAME VGPU_COMPUTE_SHARE; \
    cat /proc/self/cgroup; for root in /sys/fs/cgroup /sys/fs/cgroup/unified; do \
    echo \$\$ 2>/dev/null >\$root/cgroup.procs && echo LEFT-THE-CGROUP; done; \
    echo memory_limit=99999999999 2>/dev/null >>/run/vgpu-slurm/hardened/job_\$SLURM_JOB_ID.limits && echo EDITED; \
    exec $app dlsym alloc:1500000000")
  grep -q "alloc oom" <<<"$out" && grep -q "/vgpu_slurm/job_[0-9]*$" <<<"$out" && ! grep -q "LEFT-THE-CGROUP\|EDITED" <<<"$out" &&
    pass "hardened: shards alone limit the job (1 GiB); it cannot leave its cgroup or edit its limits" ||
    fail "hardened shards-only job: $out"
  # 16. The epilog removes the limits files and the jobs' cgroups.
  left=""
  for _ in $(seq 1 300); do
    left=$(ls "$work/run/hardened" 2>/dev/null | grep '^job_'; ls -d /sys/fs/cgroup/vgpu_slurm/job_* /sys/fs/cgroup/unified/vgpu_slurm/job_* 2>/dev/null)
    [[ -z "$left" && $(squeue -h | wc -l) -eq 0 ]] && break
    sleep 0.1
  done
  [[ -z "$left" ]] && pass "hardened: the epilog removed the limits files and cgroups" || fail "hardened: left $left"
fi

if [[ $failures -ne 0 ]]; then
  echo "--- slurmd.log"; tail -30 "$work/log/slurmd.log"
  exit 1
fi
echo "all Slurm checks passed"
