#!/bin/bash
# The demo's full pipeline at a git ref and in the working tree, side by side, one thread each (issue 25).
#   scripts/demo_ab.sh [REF]   (default HEAD~1); prints each run's "done in" line and process wall time.
# The ref runs from a temporary git worktree; both use data/demo; the working tree's run gets an empty
# learned-matches cache, so it computes the matches as an older ref does.
set -euo pipefail
REF=${1:-HEAD~1}
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
git -C "$REPO" worktree add -f "$WORK/before" "$REF" -q
ln -sfn "$REPO/../shared" "$WORK/shared"   # the worktree's ../shared (LPIPS weights)
trap 'git -C "$REPO" worktree remove --force "$WORK/before"' EXIT
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
warm='import sys; sys.path.insert(0, "."); from sparseags.render.api import render_gaussians; from sparseags.render.synthetic import random_object_scene, ring_cameras; s = random_object_scene(100, sh_degree=3, seed=0); [t.requires_grad_(True) for t in s.tensors()]; v, K = ring_cameras(1, 32, 32); render_gaussians(*s.tensors(), v, K, 32, 32, backend="cpu").rgb.sum().backward()'
(cd "$WORK/before" && python -c "$warm") & (cd "$REPO" && python -c "$warm") & wait
(cd "$REPO" && python -c 'import main; main.ensure_demo_scene()')
export SPARSEAGS_CACHE_DIR="$WORK/cache"
run() {  # label, folder
    (cd "$2" && /usr/bin/time -f "$1 wall %e s" python main.py run --scene "$REPO/data/demo" --out "$WORK/$1" --quiet 2>&1 | grep -a "done in\|wall")
}
run before "$WORK/before" & run after "$REPO" & wait
echo "outputs in $WORK/before and $WORK/after (metrics.json)"
