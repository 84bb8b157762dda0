#!/bin/bash
# One scene, both presets, the quick preset: `eval --jobs 1` (one run at a time, 2 threads) then `--jobs 2`
# (side by side, one thread each), one after the other (issue 25).
#   scripts/eval_jobs_ab.sh [SCENE_DIR]   (default ../shared/bench/ycb-dev/banana)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SCENE=$(cd "${1:-$REPO/../shared/bench/ycb-dev/banana}" && pwd)
WORK=$(mktemp -d)
mkdir -p "$WORK/data" && ln -s "$SCENE" "$WORK/data/$(basename "$SCENE")"
export SPARSEAGS_CACHE_DIR=off   # both compute the learned matches
cd "$REPO"
for jobs in 1 2; do
    python main.py eval --data "$WORK/data" --config configs/quick.yaml pipeline.outliers=false \
        --init dust3r_like raydiff_like --out "$WORK/jobs$jobs" --jobs "$jobs" 2>&1 | grep -v "^notice"
done
