#!/usr/bin/env bash
# GPU check (issue 17): everything the CUDA path needs measured, in one run.
#
#   bash scripts/gpu_check.sh [--no-install] [--quick] [--cpu-pipeline] [--only GROUPS] [OUT_DIR]
#
# OUT_DIR: $1, else $OUT, else outputs/gpu_check. Steps:
#   1. install      pip install -r requirements.txt (the README's way; --no-install skips it)
#   2. cuda_tests   pytest -q -m cuda on the CUDA-only tests (gsplat parity, cameras on CUDA, fp16 SDS)
#   3. render_*     python main.py bench render: cpu backend (+ the torch baseline) and, with CUDA,
#                   gsplat, per-view fwd / fwd+bwd at 5k/20k/50k Gaussians and 256²/512² (--quick: 2k/5k, 256²)
#   4. pipeline     python main.py run --scene data/demo device=cuda (device=cpu without CUDA), timed,
#                   metrics.json copied; --quick: 30 steps, no outlier stages, no exports;
#                   --cpu-pipeline also runs the same pipeline with device=cpu for comparison
#   5. prior_*      one multi-view SDS step of the full-size random-weight Zero123 UNet in fp16 on CUDA
#                   (`python main.py bench prior` itself is CPU-only, so this step drives the same
#                   sparseags.prior.bench helpers on device=cuda), step time and peak CUDA memory;
#                   the tiny model always runs as a smoke test of this code path
# Without CUDA every CUDA-only step prints one "skipped: no CUDA device ..." line. Results: one log per
# step, JSON per measurement, summary.json and summary.md in OUT_DIR. Exit status 1 if a step that ran
# failed. Per-step time limits (seconds): GPU_CHECK_TIMEOUT (default 900) caps each step.
# --only GROUPS: a comma list of install,tests,render,pipeline,prior (default: all), e.g. to rerun what
# failed or timed out in a second device call.
set -euo pipefail

INSTALL=1
QUICK=0
CPU_PIPELINE=0
OUT_DIR=""
ONLY="install,tests,render,pipeline,prior"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --no-install) INSTALL=0 ;;
        --quick) QUICK=1 ;;
        --cpu-pipeline) CPU_PIPELINE=1 ;;
        --only) ONLY="${2:?--only needs a comma list}"; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        -*) echo "gpu_check: unknown option $1" >&2; exit 2 ;;
        *) OUT_DIR="$1" ;;
    esac
    shift
done
want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
OUT_DIR="${OUT_DIR:-${OUT:-outputs/gpu_check}}"
STEP_TIMEOUT="${GPU_CHECK_TIMEOUT:-900}"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
PY="${PYTHON:-python}"
NO_CUDA_LINE="skipped: no CUDA device (torch.cuda.is_available() is False)"

STEPS_FILE="$OUT_DIR/steps.tsv"   # name \t status \t seconds \t note
: > "$STEPS_FILE"
ANY_FAILED=0

say() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }

record() {  # record NAME STATUS SECONDS NOTE
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$STEPS_FILE"
    if [ "$2" = "failed" ]; then ANY_FAILED=1; fi
}

skip() {  # skip NAME REASON
    say "$1: $2"
    record "$1" "skipped" "-" "$2"
}

run_step() {  # run_step NAME NOTE -- command...: runs it with a time limit, log in OUT_DIR/NAME.log
    # (stdout goes to the file $STEP_STDOUT instead when that is set)
    local name="$1" note="$2"
    shift 3
    local log="$OUT_DIR/$name.log" start end rc=0
    say "$name: $*${STEP_STDOUT:+ > $STEP_STDOUT}"
    start=$(date +%s.%N)
    if [ -n "${STEP_STDOUT:-}" ]; then
        timeout "$STEP_TIMEOUT" "$@" > "$STEP_STDOUT" 2> "$log" || rc=$?
    else
        timeout "$STEP_TIMEOUT" "$@" > "$log" 2>&1 || rc=$?
    fi
    end=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" -eq 0 ]; then
        say "$name: ok in ${secs} s (log $log)"
        record "$name" "ran" "$secs" "$note"
    else
        if [ "$rc" -eq 124 ]; then note="timed out after ${STEP_TIMEOUT} s; $note"; fi
        say "$name: FAILED (exit $rc) in ${secs} s; last lines of $log:"
        tail -n 15 "$log" | sed 's/^/    /'
        record "$name" "failed" "$secs" "exit $rc; $note"
    fi
    return 0
}

say "repository $REPO, output $OUT_DIR, quick=$QUICK, install=$INSTALL"

# 1. install ----------------------------------------------------------------------------------------
if ! want install; then
    skip install "skipped: not in --only"
elif [ "$INSTALL" -eq 1 ]; then
    run_step install "pip install -r requirements.txt" -- "$PY" -m pip install -r requirements.txt
else
    skip install "skipped: --no-install"
fi

# CUDA detection and machine description ---------------------------------------------------------
CUDA="$("$PY" -c "import torch; print(torch.cuda.is_available())" 2>/dev/null || echo "error")"
if [ "$CUDA" = "error" ]; then
    say "torch does not import; nothing else can run"
    record torch_import failed "-" "python -c 'import torch' failed"
    CUDA=False
fi
"$PY" - > "$OUT_DIR/device.json" 2>/dev/null <<'EOF' || echo '{}' > "$OUT_DIR/device.json"
import json, os, platform
import torch
info = {"cuda": torch.cuda.is_available(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads()}
if info["cuda"]:
    props = torch.cuda.get_device_properties(0)
    info |= {"gpu": torch.cuda.get_device_name(0), "gpu_memory_gib": round(props.total_memory / 2**30, 1),
             "capability": f"{props.major}.{props.minor}"}
try:
    import gsplat
    info["gsplat"] = gsplat.__version__
except Exception as err:  # gsplat is optional on the CPU
    info["gsplat"] = f"not importable: {type(err).__name__}"
print(json.dumps(info, indent=1))
EOF
if command -v nvidia-smi > /dev/null 2>&1; then nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true; fi
say "torch.cuda.is_available() = $CUDA; device: $(tr -d '\n' < "$OUT_DIR/device.json" | tr -s ' ')"

# 2. CUDA-only tests --------------------------------------------------------------------------------
mapfile -t CUDA_TEST_FILES < <(grep -l "pytest.mark.cuda" tests/test_*.py || true)
if ! want tests; then
    skip cuda_tests "skipped: not in --only"
elif [ "${#CUDA_TEST_FILES[@]}" -eq 0 ]; then
    record cuda_tests failed "-" "no test carries @pytest.mark.cuda"
elif [ "$CUDA" = "True" ]; then
    run_step cuda_tests "pytest -m cuda: ${CUDA_TEST_FILES[*]}" -- \
        "$PY" -m pytest -q -m cuda -rs -p no:cacheprovider "${CUDA_TEST_FILES[@]}"
else
    say "cuda_tests: $NO_CUDA_LINE"
    # still prove the marker selects the tests (they all skip here), so the GPU run cannot fail to collect
    run_step cuda_tests_dry "dry run: pytest -m cuda collects and skips them" -- \
        "$PY" -m pytest -q -m cuda -rs -p no:cacheprovider "${CUDA_TEST_FILES[@]}"
    selected=$(grep -o '[0-9]* skipped' "$OUT_DIR/cuda_tests_dry.log" | tail -1 || true)
    record cuda_tests skipped "-" "$NO_CUDA_LINE; dry run: ${selected:-?} by pytest"
fi

# 3. render bench -----------------------------------------------------------------------------------
BENCH_ARGS=(--json)
if [ "$QUICK" -eq 1 ]; then BENCH_ARGS+=(--quick); fi
RENDER_NOTE="cpu backend + torch baseline"
if [ "$CUDA" = "True" ]; then RENDER_NOTE="$RENDER_NOTE + gsplat"; fi
if [ "$QUICK" -eq 1 ]; then RENDER_NOTE="$RENDER_NOTE, --quick: 2k/5k at 256²"; fi
if ! want render; then
    skip render_bench "skipped: not in --only"
else
    STEP_STDOUT="$OUT_DIR/render_bench.json" run_step render_bench "$RENDER_NOTE" -- \
        "$PY" main.py bench render "${BENCH_ARGS[@]}"
    if [ "$CUDA" != "True" ]; then skip render_gsplat "$NO_CUDA_LINE (gsplat backend)"; fi
fi
if want render && [ -s "$OUT_DIR/render_bench.json" ]; then
    "$PY" - "$OUT_DIR/render_bench.json" > "$OUT_DIR/render_bench.md" <<'EOF' || true
import json, sys
rows = json.load(open(sys.argv[1]))
print("| N | res | cpu fwd ms | cpu fwd+bwd ms | gsplat fwd ms | gsplat fwd+bwd ms | baseline fwd+bwd ms |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    g = lambda k: f"{r[k]:.2f}" if k in r else "-"
    print(f"| {r['n']} | {r['res']} | {g('ours_fwd_ms')} | {g('ours_fwd_bwd_ms')} | {g('gsplat_fwd_ms')} "
          f"| {g('gsplat_fwd_bwd_ms')} | {g('baseline_fwd_bwd_ms')} |")
EOF
    cat "$OUT_DIR/render_bench.md"
fi

# 4. full pipeline on the demo scene ----------------------------------------------------------------
PIPE_ARGS=()
if [ "$QUICK" -eq 1 ]; then
    PIPE_ARGS=(pipeline.outliers=false recon.iters=30 pipeline.export_video=false pipeline.export_mesh=false
               metrics.novel_pose_steps=10 metrics.mesh_icp=false)
fi
pipeline() {  # pipeline NAME DEVICE
    local name="$1" device="$2"
    rm -rf "${OUT_DIR:?}/$name"
    run_step "$name" "device=$device${PIPE_ARGS[*]:+ (quick: ${PIPE_ARGS[*]})}" -- \
        "$PY" main.py run --scene data/demo --out "$OUT_DIR/$name" --quiet "device=$device" "${PIPE_ARGS[@]}"
    if [ -f "$OUT_DIR/$name/metrics.json" ]; then
        cp "$OUT_DIR/$name/metrics.json" "$OUT_DIR/${name}_metrics.json"
        tail -n 3 "$OUT_DIR/$name.log" | sed 's/^/    /'
    fi
}
if ! want pipeline; then
    skip pipeline "skipped: not in --only"
elif [ "$CUDA" = "True" ]; then
    pipeline pipeline_cuda cuda
    if [ "$CPU_PIPELINE" -eq 1 ]; then pipeline pipeline_cpu cpu; fi
else
    skip pipeline_cuda "$NO_CUDA_LINE"
    pipeline pipeline_cpu cpu
fi

# 5. Zero123 prior: SDS step, full-size random-weight UNet in fp16 on CUDA --------------------------
PRIOR_PY="$OUT_DIR/prior_sds.py"
cat > "$PRIOR_PY" <<'EOF'
"""One multi-view SDS step (V = 8, UNet batch 16, 256² render -> 4x32x32 latents) on random Zero123
weights, as sparseags/prior/bench.py measures it, but on any device: fp16 on CUDA, fp32 on the CPU.
Usage: prior_sds.py DEVICE tiny|full STEPS OUT.json"""
import json, statistics, sys, time

import torch

from sparseags.cameras import orbit_camera
from sparseags.prior.bench import NUM_VIEWS, build_random_guidance
from sparseags.prior.synthetic import FULL, TINY

device, name, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
cuda = device.startswith("cuda")
sync = torch.cuda.synchronize if cuda else (lambda: None)
start = time.perf_counter()
guidance = build_random_guidance({"tiny": TINY, "full": FULL}[name], device=device)
sync()
build_s = time.perf_counter() - start
generator = torch.Generator().manual_seed(0)
azimuths = torch.arange(NUM_VIEWS, dtype=torch.float64) * (360.0 / NUM_VIEWS)
c2w = orbit_camera(torch.full((NUM_VIEWS,), -15.0), azimuths, 1.85, dtype=torch.float64)
images = torch.rand(NUM_VIEWS, 3, 256, 256, generator=generator).to(device)
start = time.perf_counter()
guidance.set_conditions(images, c2w, torch.full((NUM_VIEWS, 2), 280.0))
sync()
encode_s = time.perf_counter() - start
if cuda:
    torch.cuda.reset_peak_memory_stats()
target = orbit_camera(-30.0, 20.0, 1.85, dtype=torch.float64)
times = []
for step in range(steps + 1):  # the first step is a warm-up (cuDNN autotuning, allocator)
    rendered = torch.rand(1, 3, 256, 256, generator=generator).to(device).requires_grad_(True)
    sync()
    start = time.perf_counter()
    loss, _ = guidance.sds_loss(rendered, target, 280.0, step_ratio=0.5, generator=generator)
    loss.backward()
    sync()
    times.append(time.perf_counter() - start)
    if not torch.isfinite(rendered.grad).all():
        raise SystemExit(f"prior {name} on {device}: non-finite gradient")
row = {"case": name, "device": torch.cuda.get_device_name(0) if cuda else "cpu", "dtype": str(guidance.dtype),
       "unet_params_M": round(sum(p.numel() for p in guidance.unet.parameters()) / 1e6, 1),
       "views": NUM_VIEWS, "unet_batch": 2 * NUM_VIEWS, "build_s": round(build_s, 2),
       "encode_conditions_s": round(encode_s, 3), "warmup_step_s": round(times[0], 3),
       "sds_step_s": [round(t, 3) for t in times[1:]], "sds_step_median_s": round(statistics.median(times[1:]), 3)}
if cuda:
    row["peak_cuda_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    row["peak_cuda_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
json.dump(row, open(out, "w"), indent=1)
print(json.dumps(row))
EOF
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if ! want prior; then
    skip prior "skipped: not in --only"
elif [ "$CUDA" = "True" ]; then
    run_step prior_tiny_cuda "tiny Zero123, fp16, cuda" -- "$PY" "$PRIOR_PY" cuda tiny 3 "$OUT_DIR/prior_tiny_cuda.json"
    run_step prior_full_cuda "full-size random-weight UNet (859.5 M), fp16, cuda" -- \
        "$PY" "$PRIOR_PY" cuda full 5 "$OUT_DIR/prior_full_cuda.json"
else
    run_step prior_tiny_cpu "tiny Zero123, fp32, cpu (smoke test of the SDS step code)" -- \
        "$PY" "$PRIOR_PY" cpu tiny 2 "$OUT_DIR/prior_tiny_cpu.json"
    skip prior_full_cuda "$NO_CUDA_LINE (full-size fp16 UNet; on the CPU it takes minutes: python main.py bench prior)"
fi

# summary -------------------------------------------------------------------------------------------
"$PY" - "$OUT_DIR" "$CUDA" "$QUICK" <<'EOF'
import json, sys
from pathlib import Path
out, cuda, quick = Path(sys.argv[1]), sys.argv[2] == "True", sys.argv[3] == "1"
steps = []
for line in (out / "steps.tsv").read_text().splitlines():
    name, status, secs, note = line.split("\t", 3)
    steps.append({"step": name, "status": status, "seconds": None if secs == "-" else float(secs), "note": note})
device = json.loads((out / "device.json").read_text() or "{}")
results = {}
for path in sorted(out.glob("*.json")):
    if path.name not in ("summary.json", "device.json"):
        try:
            results[path.stem] = json.loads(path.read_text())
        except ValueError:
            pass
json.dump({"cuda": cuda, "quick": quick, "device": device, "steps": steps, "results": results},
          open(out / "summary.json", "w"), indent=1)
lines = ["| step | status | seconds | note |", "|---|---|---|---|"]
lines += [f"| {s['step']} | {s['status']} | {s['seconds'] if s['seconds'] is not None else '-'} | {s['note']} |"
          for s in steps]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

if [ "$ANY_FAILED" -ne 0 ]; then
    say "FAILED: at least one step that ran failed (see $OUT_DIR/summary.md)"
    exit 1
fi
say "all steps that ran passed (results in $OUT_DIR)"
