"""Renderer micro-benchmark: our cpu backend vs the straightforward PyTorch approach (and gsplat).

`python main.py bench render [--json] [--quick]` calls `bench_render_main`.

Baseline ("the straightforward PyTorch approach"): gsplat's pure-torch reference projection
(`gsplat.cuda._torch_impl._quat_scale_to_covar_preci` + `_fully_fused_projection`, importable on CPU
without compiling anything) and SH colours in torch, then dense per-tile alpha compositing: for every
16×16 tile, the Gaussians whose bounding box touches it (depth-sorted once per view) are evaluated
against all 256 pixels as one dense tensor with cumprod transmittance, autograd for the backward.
It follows the same compositing rules as our backends (3σ ellipse, 1/255, 0.99, T < 1e-4), so the
two produce the same images. Scenes: N Gaussians in the unit ball (log-uniform scales 0.005-0.05,
opacities 0.3-1, SH degree 3) seen by 8 cameras on a ring of radius 2.75 (fov 49.1°).
Timings are per view (median over `repeats`, cycling through the 8 cameras).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from sparseags.render import render_gaussians
from sparseags.render.constants import MAX_ALPHA, MAX_MAHALANOBIS_HALF, MIN_ALPHA, TILE_SIZE
from sparseags.render.reference import composite_front_to_back
from sparseags.render.sh import sh_to_colors
from sparseags.render.synthetic import GaussianScene, random_object_scene, ring_cameras

NUM_CAMERAS = 8
MEMORY_PROBE = (50000, 512)


def render_baseline(scene: GaussianScene, viewmats: Tensor, Ks: Tensor, width: int, height: int) -> Tensor:
    """Straightforward torch renderer (see the module docstring). Returns rgb [C, H, W, 3]."""
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    covars, _ = _quat_scale_to_covar_preci(scene.quats, scene.scales, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(scene.means, covars, viewmats, Ks, width, height)
    colors = sh_to_colors(scene.sh, scene.means, viewmats, 3)  # [C, N, 3]
    tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
    tiles_y = (height + TILE_SIZE - 1) // TILE_SIZE
    offsets = torch.stack(torch.meshgrid(torch.arange(TILE_SIZE), torch.arange(TILE_SIZE), indexing="xy"), -1)
    offsets = offsets.reshape(-1, 2).to(means2d.dtype) + 0.5  # [256, 2] (u, v) within a tile
    images = []
    for cam in range(viewmats.shape[0]):
        visible = (radii[cam] > 0).all(-1)
        order = torch.nonzero(visible).squeeze(-1)
        order = order[torch.argsort(depths[cam, order].detach())]
        mean2d, conic, color = means2d[cam, order], conics[cam, order], colors[cam, order]
        opacity, depth, radius = scene.opacities[order], depths[cam, order], radii[cam, order].to(mean2d.dtype)
        lo = ((mean2d.detach() - radius) / TILE_SIZE).floor()  # [M, 2] first tile (x, y)
        hi = ((mean2d.detach() + radius) / TILE_SIZE).floor()
        features = torch.cat([color, torch.ones_like(depth)[:, None], depth[:, None]], -1)  # [M, 5]
        tiles = []
        for ty in range(tiles_y):
            for tx in range(tiles_x):
                hit = torch.nonzero((lo[:, 0] <= tx) & (hi[:, 0] >= tx) & (lo[:, 1] <= ty) & (hi[:, 1] >= ty))[:, 0]
                pixels = offsets + torch.tensor([tx * TILE_SIZE, ty * TILE_SIZE], dtype=mean2d.dtype)
                delta = pixels[:, None, :] - mean2d[hit][None]  # [256, M, 2]
                a, b, c = conic[hit].unbind(-1)
                sigma = 0.5 * (a * delta[..., 0] ** 2 + c * delta[..., 1] ** 2) + b * delta[..., 0] * delta[..., 1]
                alpha = torch.clamp(opacity[hit] * torch.exp(-sigma), max=MAX_ALPHA)
                valid = (sigma <= MAX_MAHALANOBIS_HALF) & (alpha >= MIN_ALPHA)
                alpha = torch.where(valid, alpha, torch.zeros_like(alpha))
                accumulated, _ = composite_front_to_back(alpha, valid, features[hit])
                tiles.append(accumulated[:, :3].reshape(TILE_SIZE, TILE_SIZE, 3))
        rows = [torch.cat(tiles[r * tiles_x : (r + 1) * tiles_x], dim=1) for r in range(tiles_y)]
        images.append(torch.cat(rows, dim=0)[:height, :width])
    return torch.stack(images)


def _time_ms(fn: Callable[[int], None], repeats: int, sync: Callable[[], None] = lambda: None) -> tuple[float, float]:
    """Median wall and process-CPU time in ms of fn(view) over `repeats` calls (after one warm-up).

    CPU time (all threads of this process) is what to compare on a shared machine: wall time there
    also counts the time other jobs hold the cores.
    """
    fn(0)
    sync()
    walls, cpus = [], []
    for i in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(i % NUM_CAMERAS)
        sync()
        walls.append((time.perf_counter() - start) * 1e3)
        cpus.append((time.process_time() - start_cpu) * 1e3)
    return statistics.median(walls), statistics.median(cpus)


def _leaves(scene: GaussianScene) -> GaussianScene:
    return GaussianScene(*[t.detach().clone().requires_grad_(True) for t in scene.tensors()])


def _bench_case(num: int, res: int, repeats: int, baseline_repeats: int) -> dict:
    scene = _leaves(random_object_scene(num, sh_degree=3, seed=0))
    viewmats, Ks = ring_cameras(NUM_CAMERAS, res, res)
    weight = torch.rand(NUM_CAMERAS, res, res, 3, generator=torch.Generator().manual_seed(0))

    def ours(view: int, backward: bool, views: slice | None = None) -> None:
        views = views or slice(view, view + 1)
        out = render_gaussians(*scene.tensors(), viewmats[views], Ks[views], res, res, backend="cpu")
        if backward:
            (out.rgb * weight[views]).sum().backward()

    def baseline(view: int, backward: bool) -> None:
        rgb = render_baseline(scene, viewmats[view : view + 1], Ks[view : view + 1], res, res)
        if backward:
            (rgb * weight[view : view + 1]).sum().backward()

    row = {"n": num, "res": res}
    row["ours_fwd_ms"], row["ours_fwd_cpu_ms"] = _time_ms(lambda v: ours(v, False), repeats)
    row["ours_fwd_bwd_ms"], row["ours_fwd_bwd_cpu_ms"] = _time_ms(lambda v: ours(v, True), repeats)
    row["ours_batch8_fwd_bwd_ms"], row["ours_batch8_fwd_bwd_cpu_ms"] = _time_ms(
        lambda v: ours(v, True, slice(0, NUM_CAMERAS)), max(1, repeats // 4)
    )
    row["batch8_over_8_single"] = row["ours_batch8_fwd_bwd_ms"] / (NUM_CAMERAS * row["ours_fwd_bwd_ms"])
    row["baseline_fwd_ms"], row["baseline_fwd_cpu_ms"] = _time_ms(lambda v: baseline(v, False), baseline_repeats)
    row["baseline_fwd_bwd_ms"], row["baseline_fwd_bwd_cpu_ms"] = _time_ms(lambda v: baseline(v, True), baseline_repeats)
    row["ratio_fwd"] = row["baseline_fwd_ms"] / row["ours_fwd_ms"]
    row["ratio_fwd_bwd"] = row["baseline_fwd_bwd_ms"] / row["ours_fwd_bwd_ms"]
    row["ratio_fwd_cpu"] = row["baseline_fwd_cpu_ms"] / row["ours_fwd_cpu_ms"]
    row["ratio_fwd_bwd_cpu"] = row["baseline_fwd_bwd_cpu_ms"] / row["ours_fwd_bwd_cpu_ms"]
    if torch.cuda.is_available():
        row.update(_bench_gsplat(scene, viewmats, Ks, weight, res, repeats))
    return row


def _bench_gsplat(
    scene: GaussianScene,
    viewmats: Tensor,
    Ks: Tensor,
    weight: Tensor,
    res: int,
    repeats: int,
    device: torch.device | str = "cuda",
) -> dict:
    cuda = _leaves(GaussianScene(*[t.detach().to(device) for t in scene.tensors()]))
    viewmats, Ks, weight = viewmats.to(device), Ks.to(device), weight.to(device)

    def run(view: int, backward: bool) -> None:
        out = render_gaussians(
            *cuda.tensors(), viewmats[view : view + 1], Ks[view : view + 1], res, res, backend="gsplat"
        )
        if backward:
            (out.rgb * weight[view : view + 1]).sum().backward()

    return {
        "gsplat_fwd_ms": _time_ms(lambda v: run(v, False), repeats, torch.cuda.synchronize)[0],
        "gsplat_fwd_bwd_ms": _time_ms(lambda v: run(v, True), repeats, torch.cuda.synchronize)[0],
    }


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_probe(num: int, res: int, num_cameras: int) -> dict:
    """Peak resident memory of one cpu fwd+bwd render (run in a fresh subprocess).

    torch allocations are invisible to tracemalloc, so this reads the process high-water mark:
    /proc/self/status VmHWM (reset through /proc/self/clear_refs after the warm-up, so the delta is
    what the render itself adds), falling back to resource.getrusage ru_maxrss, which on Linux also
    remembers the parent's peak across fork+exec and is therefore only an upper bound.
    """
    import resource

    scene = _leaves(random_object_scene(num, sh_degree=3, seed=0))
    viewmats, Ks = ring_cameras(num_cameras, res, res)
    small = _leaves(random_object_scene(50, sh_degree=3, seed=0))
    render_gaussians(*small.tensors(), viewmats[:1], Ks[:1], 32, 32, backend="cpu").rgb.sum().backward()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    before = _proc_status_kib("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = render_gaussians(*scene.tensors(), viewmats, Ks, res, res, backend="cpu")
    (out.rgb.sum() + out.alpha.sum()).backward()
    after = _proc_status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "n": num,
        "res": res,
        "cameras": num_cameras,
        "peak_rss_mb": after / 1024.0,
        "render_peak_delta_mb": (after - before) / 1024.0,
    }


def _run_memory_probe(num: int, res: int, num_cameras: int) -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    code = (
        f"import json; from sparseags.bench import memory_probe; "
        f"print(json.dumps(memory_probe({num}, {res}, {num_cameras})))"
    )
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_render_bench(
    sizes: tuple[int, ...] = (2000, 5000, 20000, 50000),
    resolutions: tuple[int, ...] = (256, 512),
    n_cameras: int = NUM_CAMERAS,
    repeats: int = 8,
    quick: bool = False,
    threads: int | None = None,
) -> list[dict]:
    """One row per (N, resolution): ours/baseline per-view fwd and fwd+bwd ms, ratios, batch-of-8
    time, gsplat_* when CUDA is present; the 50k/512 row (if present) also gets peak memory.

    threads: CPU threads for both torch and numba during the run (None = leave the defaults); on a
    shared, oversubscribed machine threads=1 gives the most reproducible ratios.
    """
    global NUM_CAMERAS
    NUM_CAMERAS = n_cameras
    if quick:
        sizes, resolutions, repeats = (2000, 5000), (256,), 3
    if threads is not None:
        import numba

        previous = (torch.get_num_threads(), numba.get_num_threads())
        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
        try:
            return run_render_bench(sizes, resolutions, n_cameras, repeats, quick, threads=None)
        finally:
            torch.set_num_threads(previous[0])
            numba.set_num_threads(previous[1])
    rows = []
    for num in sizes:
        for res in resolutions:
            baseline_repeats = max(1, repeats // (4 if num * res >= 20000 * 512 else 2))
            row = _bench_case(num, res, repeats, baseline_repeats)
            if (num, res) == MEMORY_PROBE:
                single = _run_memory_probe(num, res, 1)
                batch = _run_memory_probe(num, res, n_cameras)
                row["peak_rss_mb"] = single["peak_rss_mb"]
                row["render_peak_delta_mb"] = single["render_peak_delta_mb"]
                row["batch8_peak_rss_mb"] = batch["peak_rss_mb"]
                row["batch8_render_peak_delta_mb"] = batch["render_peak_delta_mb"]
            rows.append(row)
    return rows


def format_render_table(rows: list[dict]) -> str:
    """Markdown table of `run_render_bench` rows."""
    has_gsplat = any("gsplat_fwd_ms" in row for row in rows)
    header = [
        "N",
        "res",
        "ours fwd ms",
        "ours fwd+bwd ms",
        "baseline fwd ms",
        "baseline fwd+bwd ms",
        "ratio fwd (wall / cpu)",
        "ratio fwd+bwd (wall / cpu)",
        "ours fwd+bwd cpu ms",
        "batch8 fwd+bwd ms",
        "batch8 / 8 singles",
    ]
    if has_gsplat:
        header += ["gsplat fwd ms", "gsplat fwd+bwd ms"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row["n"]), str(row["res"])] + [
            f"{row[k]:.1f}" for k in ("ours_fwd_ms", "ours_fwd_bwd_ms", "baseline_fwd_ms", "baseline_fwd_bwd_ms")
        ]
        cells += [
            f"{row['ratio_fwd']:.1f}x / {row['ratio_fwd_cpu']:.1f}x",
            f"{row['ratio_fwd_bwd']:.1f}x / {row['ratio_fwd_bwd_cpu']:.1f}x",
            f"{row['ours_fwd_bwd_cpu_ms']:.1f}",
            f"{row['ours_batch8_fwd_bwd_ms']:.1f}",
            f"{row['batch8_over_8_single']:.2f}",
        ]
        if has_gsplat:
            cells += [
                f"{row.get('gsplat_fwd_ms', float('nan')):.2f}",
                f"{row.get('gsplat_fwd_bwd_ms', float('nan')):.2f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    for row in rows:
        if "peak_rss_mb" in row:
            lines.append(
                f"\nPeak RSS at N={row['n']}, {row['res']}²: one view {row['peak_rss_mb']:.0f} MB "
                f"(render adds {row['render_peak_delta_mb']:.0f} MB), 8 views {row['batch8_peak_rss_mb']:.0f} MB "
                f"(render adds {row['batch8_render_peak_delta_mb']:.0f} MB)"
            )
    return "\n".join(lines)


def bench_render_main(json_out: bool, quick: bool) -> int:
    """CLI entry: print the table (or one JSON list with --json). Returns the exit code.

    SPARSEAGS_BENCH_THREADS=k pins torch and numba to k threads for the run.
    """
    threads = os.environ.get("SPARSEAGS_BENCH_THREADS")
    try:
        rows = run_render_bench(quick=quick, threads=int(threads) if threads else None)
    except (RuntimeError, ValueError, OSError, subprocess.CalledProcessError) as error:
        print(f"bench render: {type(error).__name__}: {error}".splitlines()[0], file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=1) if json_out else format_render_table(rows))
    return 0
