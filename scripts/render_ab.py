"""Rasteriser kernels of a git ref against the working tree, side by side in one process (issue 25).

Loads ``sparseags/render/kernels.py`` as it is at REF (default HEAD) and as it is now, checks that both give
the same images and per-intersection gradients, and times the forward and the backward kernels interleaved
(A, B, A, B, ...; min and median of each) on two workloads at 256²:

* ``random 5k``: the render bench's scene (``random_object_scene(5000)``, one ring camera per call);
* ``trained``: a finished run's ``gaussians.ply`` at that scene's ground-truth cameras (default
  ``outputs/demo`` on ``data/demo``), the shape of what the reconstructions render (an opaque object).

    python scripts/render_ab.py [--ref HEAD] [--run outputs/demo] [--repeats 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load_kernels(source: str, name: str):
    """The kernels module from `source` text (its relative import of the constants made absolute)."""
    folder = Path(tempfile.mkdtemp(prefix="kernels_ab_"))
    path = folder / f"{name}.py"
    path.write_text(source.replace("from .constants", "from sparseags.render.constants"))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def workloads(run_dir: Path | None) -> dict:
    """name -> (means, quats, scales, opacities, sh, viewmats [C, 4, 4], Ks [C, 3, 3]) as float32 arrays."""
    import torch

    from sparseags.render.synthetic import random_object_scene, ring_cameras

    scene = random_object_scene(5000, sh_degree=3, seed=0)
    viewmats, Ks = ring_cameras(8, 256, 256)
    out = {"random 5k": [t.detach().numpy() for t in scene.tensors()] + [viewmats.numpy(), Ks.numpy()]}
    if run_dir is not None and (run_dir / "gaussians.ply").is_file():
        from sparseags.gaussians import GaussianModel
        from sparseags.scene import read_cameras_json

        model = GaussianModel.load_ply(run_dir / "gaussians.ply")
        records = list(read_cameras_json(run_dir / "cameras_updated.json").values())  # the run's final cameras
        with torch.no_grad():
            tensors = [model.means, model.quats, model.scales, model.opacities, model.sh]
        out[f"trained ({run_dir.name}, {len(model)} Gaussians)"] = [t.detach().float().numpy() for t in tensors] + [
            np.stack([r.w2c for r in records]).astype(np.float32),
            np.stack([r.K for r in records]).astype(np.float32),
        ]
    return out


def prepare(arrays, view: int):
    """Projection and binning of one view (shared by A and B: only the raster kernels differ)."""
    from sparseags.render import kernels, projection_kernels

    means, quats, scales, opacities, sh, viewmats, Ks = arrays
    degree = int(round(np.sqrt(sh.shape[1]))) - 1
    m2, conics, depths, colors, radii = projection_kernels.project_forward(
        means, quats, scales, sh, viewmats[view : view + 1], Ks[view : view + 1], 256, 256, degree
    )
    rects = kernels.pixel_rects(m2, conics, radii.astype(np.int32), 256, 256)
    order = np.argsort(depths, axis=1, kind="stable")
    offsets, ids = kernels.bin_tiles(rects, order, 16, 16)
    grad_rgb = np.random.default_rng(view).uniform(-1, 1, (1, 256, 256, 3)).astype(np.float32)
    zeros = np.zeros((1, 256, 256), np.float32)
    bg = np.ones((1, 3), np.float32)
    return (m2, conics, colors, opacities, depths, bg, rects, offsets, ids), grad_rgb, zeros


def run_case(mods: dict, arrays, repeats: int) -> dict:
    views = [prepare(arrays, v) for v in range(min(4, len(arrays[5])))]
    times = {name: ([], []) for name in mods}
    results = {}
    for rep in range(repeats + 1):
        args, grad_rgb, zeros = views[rep % len(views)]
        for name, k in mods.items():
            t0 = time.perf_counter()
            fwd = k.rasterize_forward(*args, 256, 256, 16)
            t1 = time.perf_counter()
            bwd = k.rasterize_backward(*args, fwd[3], fwd[4], grad_rgb, zeros, zeros, 256, 256, 16)
            t2 = time.perf_counter()
            if rep == 0:  # warm-up call (compiles); keep its outputs for the comparison
                results[name] = (fwd[0], bwd)
            else:
                times[name][0].append((t1 - t0) * 1e3)
                times[name][1].append((t2 - t1) * 1e3)
    (a_rgb, a_grad), (b_rgb, b_grad) = results.values()
    return {
        name: {
            "fwd_min": min(f),
            "fwd_med": statistics.median(f),
            "bwd_min": min(b),
            "bwd_med": statistics.median(b),
        }
        for name, (f, b) in times.items()
    } | {"max_rgb_diff": float(np.abs(a_rgb - b_rgb).max()), "max_grad_diff": float(np.abs(a_grad - b_grad).max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD")
    parser.add_argument("--run", default="outputs/demo")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import numba

    numba.set_num_threads(args.threads)
    old = subprocess.run(
        ["git", "show", f"{args.ref}:sparseags/render/kernels.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    mods = {
        args.ref: load_kernels(old, "kernels_ref"),
        "working tree": load_kernels((REPO / "sparseags/render/kernels.py").read_text(), "kernels_new"),
    }
    run_dir = Path(args.run) if args.run else None
    print(f"threads {args.threads}, {args.repeats} interleaved repeats; ms per view at 256²")
    print("| workload | kernels | fwd min | fwd median | bwd min | bwd median |")
    print("|---|---|---|---|---|---|")
    for label, arrays in workloads(run_dir).items():
        row = run_case(mods, arrays, args.repeats)
        for name in mods:
            r = row[name]
            print(
                f"| {label} | {name} | {r['fwd_min']:.2f} | {r['fwd_med']:.2f} | {r['bwd_min']:.2f} | {r['bwd_med']:.2f} |"
            )
        print(
            f"<!-- {label}: max |rgb A - B| {row['max_rgb_diff']:.1e}, max |grad A - B| {row['max_grad_diff']:.1e} -->"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
