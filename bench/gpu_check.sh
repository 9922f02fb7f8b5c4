#!/bin/bash
# The GPU paths of fetalgan in a few minutes, on any machine with an NVIDIA GPU and fetalgan
# installed (`make install`, or `make install CUDA=cu126` for older drivers). Prints one table.
#
#   bash bench/gpu_check.sh            # from the repository root
#
# What it runs (each step bounded by a timeout; a failed step is a FAIL row, the rest go on):
#   environment    torch, its CUDA build, the driver, the GPUs, native bf16 or not
#   gpu=1 sweep    sweeps/smoke.yaml with resources.gpu 1: both trials on cuda (their
#                  checkpoints hold a CUDA RNG state), FID computed on the GPU inside trials
#   gpu=0 sweep    the same with resources.gpu 0: trials on the CPU although CUDA is visible
#   gpu=0.25       4 trials packed on one GPU (max_concurrent auto), all on cuda
#   ddp 2 GPUs     a 2-worker NCCL data-parallel trial on 99 images at batch 16 (the uneven
#                  split that used to hang): finishes; skipped with fewer than 2 GPUs
#   compile        one dcgan epoch with compile: true on cuda (Triton and its C compiler)
#   gpu resume     tests/test_train.py's GPU variant of the exact-resume test (deterministic
#                  kernels, compared with a tolerance)
#   FID agreement  FID of two phantom sets with features on the GPU vs on the CPU
#   FID bench      bench/metrics.py --device cuda: pytorch-fid and fetalgan both on the GPU
#   train bench    bench/train_throughput.py --device cuda: the DCGAN example loop and
#                  fetalgan's trainer both on the GPU
#
# Environment: PYTHON (default .venv/bin/python), GPU_CHECK_DIR (work directory, default a
# new temporary one, kept), GPU_CHECK_STEP_TIMEOUT (seconds per step, default 600).
set -uo pipefail

PYTHON=${PYTHON:-.venv/bin/python}
[[ -x $PYTHON ]] || { echo "gpu_check.sh: error: no $PYTHON (run make install, or set PYTHON)" >&2; exit 2; }
FETALGAN=$(dirname -- "$PYTHON")/fetalgan
[[ -f sweeps/smoke.yaml ]] || { echo "gpu_check.sh: error: run it from the repository root" >&2; exit 2; }
WORK=${GPU_CHECK_DIR:-$(mktemp -d /tmp/fetalgan-gpu-check.XXXXXX)}
mkdir -p "$WORK"
LIMIT=${GPU_CHECK_STEP_TIMEOUT:-600}
export FETALGAN_CACHE=$WORK/cache RAY_USAGE_STATS_ENABLED=0 MPLBACKEND=Agg
ROWS=$WORK/rows.tsv
: >"$ROWS"
row() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$ROWS"; }
GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")

# ---- environment ----------------------------------------------------------------------------
"$PYTHON" - "$ROWS" <<'EOF'
import shutil, subprocess, sys
import torch
from fetalgan.devices import cuda_problem
rows = open(sys.argv[1], "a")
driver = ""
if shutil.which("nvidia-smi"):
    query = ["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"]
    driver = subprocess.run(query, capture_output=True, text=True).stdout.strip().replace("\n", "; ")
problem = cuda_problem()
status = "PASS" if problem is None else "FAIL"
detail = f"torch {torch.__version__} (CUDA {torch.version.cuda}); driver, GPU: {driver or 'no nvidia-smi'}"
if problem is None:
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    detail += f"; {torch.cuda.device_count()} GPU(s), sm_{''.join(map(str, torch.cuda.get_device_capability()))}, native bf16 {native}"
else:
    detail += f"; {problem}"
rows.write(f"environment\t{status}\t{detail}\n")
EOF
if [[ $GPUS == 0 ]]; then
    echo "gpu_check.sh: torch sees no GPU here: only the environment and gpu=0 rows" >&2
fi

# ---- sweeps: which device each trial used -----------------------------------------------------
DEVICES_OF_TRIALS=$(cat <<'EOF'
import sys
from pathlib import Path
from fetalgan.checkpoint import load_checkpoint
exp = Path(sys.argv[1])
files = sorted(exp.glob("trial_*/checkpoint_*/checkpoint.pt"))
kinds = ["cuda" if "cuda" in load_checkpoint(f)["rng"] else "cpu" for f in files]
print(" ".join(kinds))
EOF
)
sweep() { # sweep NAME EXPECTED-DEVICE TRIALS --set ...: run sweeps/smoke.yaml, check the devices
    local name=$1 want=$2 trials=$3 log=$WORK/$1.log
    shift 3
    local t0=$SECONDS rc=0
    timeout "$LIMIT" "$FETALGAN" sweep sweeps/smoke.yaml --storage "$WORK/rr" \
        --tracking-uri "sqlite:///$WORK/mlruns.db" --set "name=$name" "$@" >"$log" 2>&1 || rc=$?
    if ((rc)); then
        row "$name sweep" FAIL "exit $rc; see $log"
        return
    fi
    local seen
    seen=$("$PYTHON" -c "$DEVICES_OF_TRIALS" "$WORK/rr/$name")
    local expected
    expected=$(printf "$want %.0s" $(seq "$trials"))
    local status=PASS
    [[ "$seen " == "$expected" ]] || status=FAIL
    local concurrency
    concurrency=$(grep -o 'max_concurrent auto = [0-9]* trials' "$log" | head -1)
    row "$name sweep" "$status" "trials on: ${seen:-none} (want $trials x $want); $((SECONDS - t0)) s${concurrency:+; $concurrency}"
}
# Runs without a GPU too: zero-GPU trials are on the CPU whatever CUDA shows.
sweep gpu0 cpu 2 --set resources.gpu=0
if [[ $GPUS -ge 1 ]]; then
    sweep gpu1 cuda 2 --set resources.gpu=1 --set resources.cpu=2
    sweep gpu_quarter cuda 4 --set resources.gpu=0.25 --set resources.cpu=1 \
        --set num_samples=4 --set max_concurrent=auto
    if [[ $GPUS -ge 2 ]]; then
        sweep ddp2 cuda 1 --set resources.gpu=1 --set workers_per_trial=2 --set num_samples=1 \
            --set data.size=99 --set data.phantom_n=99 --set batch_size=16
    else
        row "ddp 2 GPUs" SKIP "$GPUS GPU visible; needs 2"
    fi

    # ---- compile on the GPU -----------------------------------------------------------------
    t0=$SECONDS
    if timeout "$LIMIT" "$FETALGAN" train sweeps/smoke.yaml --out "$WORK/compile" --quiet \
        --set compile=true --set device=cuda --set epochs=1 --set eval_metrics=[] \
        >"$WORK/compile.log" 2>&1; then
        row "compile" PASS "dcgan 1 epoch with torch.compile on cuda, $((SECONDS - t0)) s"
    else
        row "compile" FAIL "see $WORK/compile.log"
    fi

    # ---- the GPU variant of the exact-resume test -------------------------------------------
    if timeout "$LIMIT" "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_train.py \
        -k "gpu or deterministic" >"$WORK/pytest.log" 2>&1; then
        row "gpu resume" PASS "$(tail -1 "$WORK/pytest.log")"
    else
        row "gpu resume" FAIL "$(tail -1 "$WORK/pytest.log"); see $WORK/pytest.log"
    fi

    # ---- benches, both sides on the GPU ---------------------------------------------------------
    if timeout "$LIMIT" "$PYTHON" bench/metrics.py --skip-frechet --device cuda --rounds 1 \
        --json "$WORK/metrics.json" >"$WORK/metrics.log" 2>&1; then
        "$PYTHON" - "$WORK/metrics.json" "$ROWS" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
rel = m["fid_abs_difference"] / m["fid_cpu"]
with open(sys.argv[2], "a") as rows:
    rows.write(f"FID agreement\tPASS\tFID cpu {m['fid_cpu']:.4f} vs {m['device']} {m['fid_device']:.4f}: |dFID| {m['fid_abs_difference']:.2e} ({rel:.1e} relative)\n")
    rows.write(f"FID bench\tPASS\tfeatures on {m['device']}: pytorch-fid {m['reference_img_per_s']:.1f} img/s, fetalgan {m['fetalgan_img_per_s']:.1f} img/s, {m['fetalgan_img_per_s'] / m['reference_img_per_s']:.2f}x\n")
EOF
    else
        row "FID bench" FAIL "see $WORK/metrics.log"
    fi
    if timeout "$LIMIT" "$PYTHON" bench/train_throughput.py --device cuda \
        --json "$WORK/train.json" >"$WORK/train.log" 2>&1; then
        "$PYTHON" - "$WORK/train.json" "$ROWS" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))
figures = t["img_per_s"]
ref = next(v for k, v in figures.items() if k.startswith("reference"))
shown = ", ".join(f"{k.split(' (')[0]} {v:.0f} img/s ({v / ref:.2f}x)" for k, v in figures.items())
with open(sys.argv[2], "a") as rows:
    rows.write(f"train bench\tPASS\tDCGAN64 on {t['device']}: {shown}\n")
EOF
    else
        row "train bench" FAIL "see $WORK/train.log"
    fi
fi

# ---- the table --------------------------------------------------------------------------------
echo
echo "fetalgan GPU check ($(date -u +%FT%TZ), $(hostname -s)); logs in $WORK"
awk -F'\t' '{ printf "%-15s %-5s %s\n", $1, $2, $3 }' "$ROWS"
! grep -q $'\tFAIL\t' "$ROWS"
