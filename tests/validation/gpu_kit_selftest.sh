#!/usr/bin/env bash
# The GPU validation kit's self-test, without a GPU: the bundle builds and stays
# under its size limit, its programs load, and scripts/gpu-validate runs every
# check's plumbing against the fake NVML library and a fake nvidia-smi: the
# NVML comparison passes, a disagreement is caught, checks that need a CUDA
# device or PyTorch skip with a reason, a hung check is cut off at its limit.
#
#   gpu_kit_selftest.sh SOURCE_DIR BUILD_DIR [BUNDLE]
#
# Without BUNDLE it bundles BUILD_DIR's programs (scripts/gpu-bundle --build-dir);
# with one (the release bundle scripts/test makes) it checks that bundle, which
# must also carry the $ORIGIN/../lib run path. BUILD_DIR supplies the fakes.
set -euo pipefail
src=$1
build=$2
bundle=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "gpu kit self-test: $*" >&2; exit 1; }

if [[ -z "$bundle" ]]; then
  bundle="$work/bundle"
  "$src/scripts/gpu-bundle" --build-dir "$build" "$bundle" >/dev/null
else
  bundle=$(cd "$bundle" && pwd)
  for program in vgpu vgpud; do
    readelf -d "$bundle/bin/$program" | grep -q '(RPATH).*\$ORIGIN/../lib' || fail "bin/$program lacks the \$ORIGIN/../lib RPATH"
    # Every library but glibc's and libstdc++/libgcc_s, direct or not, resolves inside the bundle.
    outside=$(ldd "$bundle/bin/$program" | awk '$2 == "=>" {print $1, $3}' |
              grep -vE '^(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s)\.so' | grep -v " $bundle/" || true)
    [[ -z "$outside" ]] || fail "bin/$program loads libraries from outside the bundle: $outside"
  done
fi
for f in bin/vgpu bin/vgpud lib/libvgpu-cuda.so gpu-validate MANIFEST validation/cuda/limits.cu \
         validation/cuda/gemm_loop.cu validation/python/torch_limits.py; do
  [[ -e "$bundle/$f" ]] || fail "the bundle has no $f"
done
size_kib=$(du -sk "$bundle" | cut -f1)
(( size_kib <= 60 * 1024 )) || fail "the bundle is $((size_kib / 1024)) MiB, over 60"
env -i PATH=/usr/bin:/bin "$bundle/bin/vgpu" --version >/dev/null || fail "bin/vgpu does not load from the bundle"

export VGPU_NVML_LIBRARY="$build/tests/fakes/nvml/libnvidia-ml.so.1"
export FAKE_NVML_CONFIG="$src/tests/validation/fake_gpu.json"
export VGPU_VALIDATE_NVIDIA_SMI="$src/tests/fakes/nvidia-smi"
export VGPU_VALIDATE_PYTHON=/usr/bin/python3

# 1. The whole quick run; torch_limits is made to hang and must be cut off at 3 s.
status=0
VGPU_VALIDATE_HANG=torch_limits timeout 300 /usr/bin/python3 "$bundle/gpu-validate" --quick --limit setup=300 \
  --limit torch_limits=3 "$work/out" >"$work/run.log" 2>&1 || status=$?
cat "$work/run.log"
[[ $status -eq 1 ]] || fail "gpu-validate exited $status; a timed-out check must make it exit 1"
[[ -s "$work/out/gpu-validation.md" ]] || fail "no gpu-validation.md"
/usr/bin/python3 - "$work/out/gpu-validation.json" <<'PY'
import json, shutil, sys
r = json.load(open(sys.argv[1]))
checks = {c["name"]: c for c in r["checks"]}
want = ["setup", "nvml_vs_smi", "cuda_limits", "torch_limits", "compute_shares", "overheads", "python_package",
        "torch_pool"]
assert list(checks) == want, list(checks)
def expect(name, status):
    got = checks[name]["status"]
    assert got == status, f"{name}: {got}, expected {status}: {checks[name]}"
expect("setup", "pass")
if shutil.which("nvcc"):
    assert len(checks["setup"]["details"]["compiled"]) == 6, checks["setup"]["details"]
assert checks["setup"]["details"]["vgpud"].startswith("started"), checks["setup"]["details"]
expect("nvml_vs_smi", "pass")
idle = checks["nvml_vs_smi"]["details"]["idle"]
assert idle["status"] == "pass" and len(idle["fields"]["0"]) == 11, idle
expect("torch_limits", "timeout")
# Cut off by the harness at its own 3 s limit (only the harness writes "timeout"), not by the
# outer `timeout 300`; no wall-clock bound here: the suite must pass on a loaded machine.
assert checks["torch_limits"]["limit_s"] == 3 and "(3 s)" in checks["torch_limits"]["why"], checks["torch_limits"]
for name in ["cuda_limits", "compute_shares", "overheads", "python_package", "torch_pool"]:
    expect(name, "skip")
assert checks["cuda_limits"]["why"], checks["cuda_limits"]
# The bundle's apt.vgpu loaded (package_check.py imports it before torch): the skip is torch's.
assert "torch is not importable" in checks["python_package"]["why"], checks["python_package"]
assert r["summary"] == {"pass": 2, "fail": 0, "skip": 5, "error": 0, "timeout": 1}, r["summary"]
PY
pgrep -f "sleep 3599" >/dev/null && fail "the hung check's process was left running"

# 2. nvidia-smi disagreeing with NVML (another temperature) is a failure naming the field.
sed 's/"temperature": 45/"temperature": 60/' "$FAKE_NVML_CONFIG" >"$work/smi.json"
status=0
FAKE_NVIDIA_SMI_CONFIG="$work/smi.json" /usr/bin/python3 "$bundle/gpu-validate" --quick --limit setup=300 --only nvml_vs_smi \
  "$work/out2" >/dev/null 2>&1 || status=$?
[[ $status -eq 1 ]] || fail "a disagreement with nvidia-smi must make gpu-validate exit 1 (got $status)"
/usr/bin/python3 - "$work/out2/gpu-validation.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c = next(c for c in r["checks"] if c["name"] == "nvml_vs_smi")
assert c["status"] == "fail", c
fields = c["details"]["idle"]["fields"]["0"]
assert not fields["temperature.gpu C"]["ok"] and fields["name"]["ok"], fields
PY
echo "gpu kit self-test: ok"
