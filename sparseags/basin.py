"""``python main.py bench basin``: does a pose solver bring a perturbed view back, against a known model?

The controlled probe of the pose solver (docs/BENCHMARKS.md, "Pose solver and its basin"), shipped so it
can be re-run on any scene with ground truth:

1. Gaussians are trained at the GT poses and GT intrinsics with the cameras frozen (``model=gt``), or at the
   scene's initial (noisy) poses and focals (``model=noisy``, the joint case). The model is cached in the
   output folder, keyed by the scene's images, the poses it was trained at and the reconstruction config.
2. Every view is perturbed away from its GT pose (cases below; one draw per view, seeded) or started from
   the scene's preset poses (``preset:<name>``), and refined **alone** against that frozen model by each
   solver.
3. A view succeeds when it ends < 1° (rotation, absolute: the model lives in the GT frame) and < 1 % (camera
   centre, relative to its distance from the object centre) from the truth.

Cases: ``o<deg>`` orbits the camera about the object centre by <deg> about a random axis across the
view direction; ``t<pct>`` shifts the object sideways in the image plane by <pct> % of the camera
distance; ``f`` scales the focal length by 1.1 or 1/1.1. ``o20t8f`` is the hardest.

Solvers: ``default`` (the shipped :class:`sparseags.pose_solver.PoseSolver`), ``adam_camera`` (Adam on the
camera-frame twist, today's joint-loop update, same levels and anti-aliasing), ``adam_object`` (Adam on the
object-centred parameters, focal fixed).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .atomic import atomic_write_bytes
from .cameras import apply_pose_delta, rotation_angle_deg
from .config import Config, apply_overrides, config_to_dict
from .gaussians import GaussianModel
from .pose_solver import (
    Level,
    PoseSolver,
    area_downsample,
    blur,
    detached_render_fn,
    object_centred_w2c,
    render_antialiased,
    settings_from_config,
)

CASES = ("o2", "o10", "o20", "o10t8", "o20t8f")
SOLVERS = ("default", "adam_object", "adam_camera")
SUCCESS_DEG = 1.0
SUCCESS_CENTRE_PCT = 1.0


@dataclass(frozen=True)
class Perturbation:
    orbit_deg: float
    sideways_pct: float
    focal: bool


def parse_case(case: str) -> Perturbation:
    """'o20t8f' -> Perturbation(20, 8, True)."""
    import re

    match = re.fullmatch(r"o(\d+(?:\.\d+)?)(?:t(\d+(?:\.\d+)?))?(f?)", case)
    if not match:
        raise ValueError(f"bench basin: unknown case {case!r} (expected e.g. o10, o10t8, o20t8f)")
    return Perturbation(float(match.group(1)), float(match.group(2) or 0.0), bool(match.group(3)))


def perturb(w2c_gt: torch.Tensor, K_gt: torch.Tensor, centre: torch.Tensor, case: str, seed: int):
    """(w2c [N, 4, 4], K [N, 3, 3]) of the GT cameras moved by `case` (one seeded draw per view)."""
    spec = parse_case(case)
    generator = torch.Generator().manual_seed(int(seed))
    n = w2c_gt.shape[0]
    angle = torch.rand(n, generator=generator) * 2 * math.pi
    across = torch.stack([torch.cos(angle), torch.sin(angle), torch.zeros(n)], -1)  # [N, 3] camera x-y plane
    omega = across * math.radians(spec.orbit_deg)
    angle2 = torch.rand(n, generator=generator) * 2 * math.pi
    rho = torch.stack([torch.cos(angle2), torch.sin(angle2), torch.zeros(n)], -1) * spec.sideways_pct / 100.0
    w2c = object_centred_w2c(w2c_gt.float(), omega, rho, centre)
    K = K_gt.clone().float()
    if spec.focal:
        sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
        factor = torch.exp(sign * math.log(1.1))
        K[:, 0, 0] *= factor
        K[:, 1, 1] *= factor
    return w2c, K


def pose_errors(w2c: torch.Tensor, w2c_gt: torch.Tensor, centre: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Absolute rotation error (deg) [N] and centre error (% of the GT camera's distance to centre) [N]."""
    w2c, w2c_gt = w2c.double(), w2c_gt.double()
    rot = rotation_angle_deg(w2c[:, :3, :3], w2c_gt[:, :3, :3])
    centres = -(w2c[:, :3, :3].transpose(1, 2) @ w2c[:, :3, 3:])[..., 0]
    centres_gt = -(w2c_gt[:, :3, :3].transpose(1, 2) @ w2c_gt[:, :3, 3:])[..., 0]
    scale = torch.linalg.vector_norm(centres_gt - centre.double(), dim=-1)
    pct = 100.0 * torch.linalg.vector_norm(centres - centres_gt, dim=-1) / scale
    return rot.numpy(), pct.numpy()


# ----------------------------------------------------------------------------------------------
# the frozen model
# ----------------------------------------------------------------------------------------------
class _SceneAt:
    """The scene's images and masks with given cameras and flags (what Reconstruction reads)."""

    def __init__(self, scene: Any, w2c: np.ndarray, K: np.ndarray, flags: np.ndarray | None = None):
        self.ids, self.images, self.masks = list(scene.ids), scene.images, scene.masks
        self.K, self.w2c_init = K, w2c
        self.flags = np.ones(len(scene.ids), dtype=np.int64) if flags is None else np.asarray(flags, dtype=np.int64)
        self.w2c_gt = None


def model_key(scene: Any, w2c: np.ndarray, K: np.ndarray, cfg: Config, flags: np.ndarray | None = None) -> str:
    digest = hashlib.sha256()
    if flags is not None:
        digest.update(np.asarray(flags, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(scene.images, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(w2c, dtype=np.float64).round(9).tobytes())
    digest.update(np.ascontiguousarray(K, dtype=np.float64).round(6).tobytes())
    digest.update(json.dumps(config_to_dict(cfg)["recon"], sort_keys=True).encode())
    digest.update(str(cfg.seed).encode())
    return digest.hexdigest()[:16]


def frozen_model(
    scene: Any, w2c: np.ndarray, K: np.ndarray, cfg: Config, cache_dir: Path, log=print, flags: np.ndarray | None = None
) -> GaussianModel:
    """Gaussians trained with the cameras frozen at w2c, K on the views with flag 1 (all by default;
    cfg.recon otherwise); cached under cache_dir."""
    from .recon import Reconstruction

    cfg = apply_overrides(copy.deepcopy(cfg), ["recon.optimize_cameras=false", "recon.evidence_every=0"])
    path = Path(cache_dir) / f"model-{model_key(scene, w2c, K, cfg, flags)}.pt"
    if path.exists():
        state = torch.load(path, weights_only=True)
        return GaussianModel.from_tensors(state["gaussians"], int(state["sh_degree"]))
    start = time.perf_counter()
    recon = Reconstruction(_SceneAt(scene, w2c, K, flags), cfg)
    while not recon.done:
        recon.step(50)
    log(f"trained the frozen model ({recon.gaussians.num_gaussians} Gaussians) in {time.perf_counter() - start:.0f} s")
    import io

    buffer = io.BytesIO()
    state = {"gaussians": recon.gaussians.tensors(), "sh_degree": recon.gaussians.active_sh_degree}
    torch.save(state, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return recon.gaussians


def model_render_fn(model: GaussianModel, backend: str = "cpu", grad: bool = False) -> Callable:
    """render_fn(w2c, K, width, height) -> (rgb on white, alpha) of a frozen model."""
    return detached_render_fn(model.detached(), backend=backend, grad=grad)


# ----------------------------------------------------------------------------------------------
# the baselines: Adam on two parametrisations (poses only; same levels and anti-aliasing)
# ----------------------------------------------------------------------------------------------
def refine_adam(
    render_fn: Callable,
    targets: torch.Tensor,
    masks: torch.Tensor,
    w2c0: torch.Tensor,
    K0: torch.Tensor,
    centre: torch.Tensor,
    parametrisation: str,
    levels: tuple[Level, ...],
    steps_per_iteration: int = 4,
    lr: float = 1e-3,
    mask_weight: float = 1.0,
) -> torch.Tensor:
    """Adam on ``camera`` (``exp(xi) @ w2c0``) or ``object`` (:func:`object_centred_w2c`) parameters, the
    same number of renders per level as the LM solver's iterations times `steps_per_iteration`."""
    native = targets.shape[1]
    wanted = torch.cat([targets, masks[..., None]], -1)
    xi = torch.zeros(len(w2c0), 6, requires_grad=True)
    optimizer = torch.optim.Adam([xi], lr=lr)
    weights = torch.tensor([1.0, 1.0, 1.0, math.sqrt(mask_weight)])

    def pose() -> torch.Tensor:
        if parametrisation == "camera":
            return apply_pose_delta(w2c0, xi, side="camera")
        return object_centred_w2c(w2c0, xi[:, 3:], xi[:, :3], centre)

    for level in levels:
        target = blur(area_downsample(wanted, level.size), level.sigma)
        for _ in range(level.iters * steps_per_iteration):
            rendered = blur(render_antialiased(render_fn, pose(), K0, native, level.size), level.sigma)
            loss = (((rendered - target) * weights) ** 2).mean(dim=(1, 2, 3)).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return pose()


# ----------------------------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------------------------
def _summary(solver: str, case: str, rot: np.ndarray, pct: np.ndarray, seconds: float, start_rot: np.ndarray) -> dict:
    success = (rot < SUCCESS_DEG) & (pct < SUCCESS_CENTRE_PCT)
    return {
        "solver": solver,
        "case": case,
        "success": int(success.sum()),
        "n": int(len(rot)),
        "within_2deg": int((rot < 2.0).sum()),
        "median_rot_deg": float(np.median(rot)),
        "median_centre_pct": float(np.median(pct)),
        "median_start_rot_deg": float(np.median(start_rot)),
        "worse_than_start": int((rot > start_rot + 1e-6).sum()),
        "rot_deg": [round(float(v), 3) for v in rot],
        "seconds": round(seconds, 1),
    }


def run_basin(
    scene_dir: str,
    cfg: Config,
    out_dir: str,
    cases: list[str],
    solvers: list[str],
    model: str = "gt",
    seed: int = 0,
    log=print,
) -> dict:
    """Run the basin benchmark; returns {"scene", "model", "cases": [row, ...]} (see the module docstring)."""
    from .scene import load_scene

    torch.manual_seed(seed)
    scene = load_scene(scene_dir, resolution=int(cfg.scene.resolution), init=cfg.scene.init)
    if scene.w2c_gt is None:
        raise ValueError(f"bench basin: {scene_dir} has no cameras_gt.json")
    K_gt = scene.K_gt if scene.K_gt is not None else scene.K
    if model == "gt":
        train_w2c, train_K = scene.w2c_gt, K_gt
    elif model == "noisy":
        train_w2c, train_K = scene.w2c_init, scene.K
    else:
        raise ValueError(f"bench basin: model must be 'gt' or 'noisy', got {model!r}")
    gaussians = frozen_model(scene, train_w2c, train_K, cfg, Path(out_dir), log=log)
    centre = torch.zeros(3)  # bench scenes: the object's centre is the world origin (bench README)
    targets = torch.as_tensor(scene.white_background_images(), dtype=torch.float32)
    masks = torch.as_tensor(scene.masks, dtype=torch.float32)
    w2c_gt = torch.as_tensor(scene.w2c_gt, dtype=torch.float32)
    K_gt_t = torch.as_tensor(K_gt, dtype=torch.float32)
    settings = settings_from_config(cfg)
    rows = []
    for case in cases:
        if case.startswith("preset:"):
            from .scene import load_scene as _load

            preset = _load(scene_dir, resolution=int(cfg.scene.resolution), init=case.split(":", 1)[1])
            w2c0 = torch.as_tensor(preset.w2c_init, dtype=torch.float32)
            K0 = torch.as_tensor(preset.K, dtype=torch.float32)
        else:
            w2c0, K0 = perturb(w2c_gt, K_gt_t, centre, case, seed)
        start_rot, _ = pose_errors(w2c0, w2c_gt, centre)
        for solver in solvers:
            start = time.perf_counter()
            if solver == "default":
                fn = model_render_fn(gaussians, cfg.render.backend if cfg.render.backend != "auto" else "cpu")
                result = PoseSolver(fn, targets, masks, w2c0, K0, centre, settings).run()
                w2c, _ = result.current()
            elif solver in ("adam_object", "adam_camera"):
                fn = model_render_fn(gaussians, "cpu", grad=True)
                w2c = refine_adam(
                    fn,
                    targets,
                    masks,
                    w2c0,
                    K0,
                    centre,
                    solver.split("_")[1],
                    settings.levels,
                    mask_weight=settings.mask_weight,
                )
            else:
                raise ValueError(f"bench basin: unknown solver {solver!r}; choose from {SOLVERS}")
            rot, pct = pose_errors(w2c, w2c_gt, centre)
            row = _summary(solver, case, rot, pct, time.perf_counter() - start, start_rot)
            log(
                f"{case:>10} {solver:>12}: {row['success']}/{row['n']} ok, {row['within_2deg']} within 2 deg, "
                f"median {row['median_rot_deg']:.2f} deg / {row['median_centre_pct']:.2f} % "
                f"(start {row['median_start_rot_deg']:.1f} deg), {row['seconds']:.0f} s"
            )
            rows.append(row)
    return {"scene": str(scene_dir), "model": model, "cases": rows}


def _outlier_views(scene_dir: str, preset: str, scene: Any) -> list[int]:
    """The views the preset made gross outliers (bench meta.json), else the one with the largest error."""
    meta_path = Path(scene_dir) / "meta.json"
    if meta_path.is_file():
        ids = json.loads(meta_path.read_text()).get("noise", {}).get(preset, {}).get("outliers")
        if ids:
            return [scene.ids.index(i) for i in ids if i in scene.ids]
    rot, _ = pose_errors(torch.as_tensor(scene.w2c_init), torch.as_tensor(scene.w2c_gt), torch.zeros(3))
    return [int(np.argmax(rot))]


SEARCH_MODES = ("adam", "solver")


def run_search_landing(
    scene_dir: str, cfg: Config, out_dir: str, preset: str = "one_outlier", log=print, modes: tuple = SEARCH_MODES
) -> list[dict]:
    """Where the pose search lands an outlier view, with and without its pose-solver stage.

    Gaussians are trained at the GT poses **without** the outlier views (a clean leave-out model, the
    best case of the pipeline's base reconstruction); each outlier of `preset` is then searched on the
    sphere (``cfg.search``, MSE ranking) once with ``search.solver_candidates`` and once with 0. Rows:
    ``{"solver": "search" | "search+solver", "case": "search:<view id>", ...}`` with the chosen pose's
    absolute rotation and centre errors.
    """
    from .pipeline import most_visible
    from .pose_search import PoseSearch, build_search_grid, reference_costs, white_background_target
    from .scene import load_scene

    scene = load_scene(scene_dir, resolution=int(cfg.scene.resolution), init=preset)
    K_gt = scene.K_gt if scene.K_gt is not None else scene.K
    outliers = _outlier_views(scene_dir, preset, scene)
    flags = np.ones(len(scene.ids), dtype=np.int64)
    flags[outliers] = 0
    model = frozen_model(scene, scene.w2c_gt, K_gt, cfg, Path(out_dir), log=log, flags=flags)
    frozen = model.detached()
    frozen = frozen.subset(most_visible(frozen.opacities, frozen.scales, int(cfg.search.max_gaussians)))
    with torch.no_grad():
        weights = frozen.opacities.double()
        target = (frozen.means.double() * weights[:, None]).sum(0) / weights.sum()
    render_alpha = detached_render_fn(frozen)
    render_grad = detached_render_fn(frozen, grad=True)  # the Adam stages need the pose gradient

    sc = cfg.search
    w2c_gt = torch.as_tensor(scene.w2c_gt, dtype=torch.float32)
    rows = []
    for view in outliers:
        inliers = np.flatnonzero(flags)
        grid = build_search_grid(
            np.asarray(scene.w2c_gt)[inliers],
            target.numpy(),
            elevation_margin_deg=sc.elevation_margin_deg,
            elevation_step_deg=sc.elevation_step_deg,
            n_azimuth=sc.n_azimuth,
            radius_margin=sc.radius_margin,
            radius_step=sc.radius_step,
        )
        start_rot, _ = pose_errors(
            torch.as_tensor(scene.w2c_init[view : view + 1]), w2c_gt[view : view + 1], target.float()
        )
        inlier_images = np.stack([white_background_target(scene.images[v], scene.masks[v]) for v in inliers])
        costs = reference_costs(
            render_alpha,
            inlier_images,
            np.asarray(scene.masks, dtype=np.float32)[inliers],
            np.asarray(scene.w2c_gt)[inliers],
            np.asarray(K_gt, dtype=np.float32)[inliers],
            target.numpy(),
            settings_from_config(cfg),
        )
        accept = float(sc.local_accept_ratio * np.median(costs)) if sc.local_accept_ratio > 0 else None
        for name, refine in [(n, r) for n, r in (("adam+solver", "adam"), ("solver", "solver")) if r in modes]:
            started = time.perf_counter()
            local = {
                "start_w2c": np.asarray(scene.w2c_init[view]),
                "local_accept_cost": accept,
                "local_max_move_deg": sc.local_max_move_deg,
            }
            search = PoseSearch(
                render_fn=lambda w, K, width, height: render_grad(w, K, width, height)[0],
                target_image=white_background_target(scene.images[view], scene.masks[view]),
                K=np.asarray(scene.K[view]),
                grid=grid,
                stage_steps=list(sc.stage_steps),
                stage_lr=list(sc.stage_lr),
                stage_jitter=list(sc.stage_jitter),
                stage_resolution=list(sc.stage_resolution),
                lr_gamma=sc.lr_gamma,
                replicate=sc.replicate,
                keep_fraction=sc.keep_fraction,
                keep_min=sc.keep_min,
                chunk=sc.chunk,
                seed=int(cfg.seed) + 1000 + view,
                view_id=scene.ids[view],
                solver_candidates=int(sc.solver_candidates),
                solver_render_fn=render_alpha,
                target_mask=np.asarray(scene.masks[view], dtype=np.float32),
                solver_settings=settings_from_config(cfg),
                refine=refine,
                coarse_candidates=sc.coarse_candidates,
                coarse_max_size=sc.coarse_max_size,
                distinct_deg=sc.distinct_deg,
                **(local if refine == "solver" else {}),
            )
            while not search.done:
                search.step(8)
            chosen = torch.as_tensor(search.chosen_w2c(), dtype=torch.float32)[None]
            rot, pct = pose_errors(chosen, w2c_gt[view : view + 1], target.float())
            row = _summary(name, f"search:{scene.ids[view]}", rot, pct, time.perf_counter() - started, start_rot)
            row["success"] = int(rot[0] < 5.0)  # the outlier issue's bar: the search lands within 5°
            # Could the search have found the truth? The truth, solved in place, against the winner (finest level):
            # a winner that costs less than the solved truth is a failure of the model or the cost, not the search.
            truth_solver = search._make_solver(w2c_gt[view : view + 1], search._levels("local"), 0)
            row["truth_solved_cost"] = float(truth_solver.run().level_cost(-1)[0])
            truth_rot, _ = pose_errors(truth_solver.current()[0], w2c_gt[view : view + 1], target.float())
            row["truth_solved_rot_deg"] = float(truth_rot[0])
            winner_solver = search._make_solver(chosen, search._levels("local"), 0)
            row["winner_cost"] = float(winner_solver.level_cost(-1)[0])
            row["ambiguous"] = bool(search.ambiguous)
            row["competitors"] = [
                {k: c[k] for k in ("angle_deg", "mse", "lpips")} for c in search.competitors_of(search.chosen)
            ]
            if search.local is not None:
                row["local_cost"], row["local_accept_cost"] = search.local["cost"], accept
                row["local_accepted"] = search.local["accepted"]
            truth = search.candidates.new_tensor(np.asarray(scene.w2c_gt[view]))[None]
            cand_rot, _ = pose_errors(search.candidates, truth.expand_as(search.candidates), target.float())
            row["candidates_rot_deg"] = [round(float(x), 1) for x in cand_rot]
            log(
                f"search {scene.ids[view]} {name:>14}: {rot[0]:.2f} deg, {pct[0]:.1f} % (start {start_rot[0]:.0f} deg), "
                f"{row['seconds']:.0f} s, ambiguous {row['ambiguous']}, candidates {row['candidates_rot_deg']}, "
                f"local {row.get('local_cost')} vs {accept}; winner cost {row['winner_cost']:.5f}, truth solved "
                f"{row['truth_solved_cost']:.5f} ({row['truth_solved_rot_deg']:.1f} deg)"
            )
            rows.append(row)
    return rows


def format_table(result: dict) -> str:
    lines = [
        f"bench basin: {result['scene']} (model trained at the {result['model']} poses; success = < 1° and < 1 % "
        "for perturbations and presets, < 5° for search rows)",
        "| case | solver | success | within 2° | median rot. (°) | median centre (%) | start (°) | worse | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["cases"]:
        lines.append(
            f"| {row['case']} | {row['solver']} | {row['success']}/{row['n']} | {row['within_2deg']}/{row['n']} | "
            f"{row['median_rot_deg']:.2f} | {row['median_centre_pct']:.2f} | {row['median_start_rot_deg']:.1f} | "
            f"{row['worse_than_start']} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def bench_basin_main(
    scene: str,
    out: str,
    cases: list[str] | None,
    solvers: list[str] | None,
    model: str,
    json_out: bool,
    quick: bool,
    config: str | None,
    overrides: list[str],
) -> int:
    """CLI entry of ``python main.py bench basin``; returns the exit code."""
    from .config import load_config
    from .errors import UserError

    try:
        cfg = load_config(config, overrides)
        if quick:
            cases = cases or ["o10"]
            solvers = solvers or ["default"]
        cases = cases or list(CASES) + ["preset:raydiff_like"]
        solvers = solvers or list(SOLVERS)
        # search rows: `--solver adam` / `--solver solver` pick the search's refinement (both by default)
        modes = tuple(m for m in SEARCH_MODES if m in (solvers or [])) or SEARCH_MODES
        solvers = [s for s in solvers if s not in SEARCH_MODES] or list(SOLVERS)
        for case in cases:
            if not case.startswith(("preset:", "search")):
                parse_case(case)
        log = (lambda *a: print(*a, file=sys.stderr)) if json_out else print
        search_cases = [case for case in cases if case.startswith("search")]
        cases = [case for case in cases if not case.startswith("search")]
        result = {"scene": str(scene), "model": model, "cases": []}
        if cases:
            result = run_basin(scene, cfg, out, cases, solvers, model=model, seed=int(cfg.seed), log=log)
        for case in search_cases:
            preset = case.split(":", 1)[1] if ":" in case else "one_outlier"
            result["cases"] += run_search_landing(scene, cfg, out, preset=preset, log=log, modes=modes)
    except (UserError, ValueError, OSError) as error:
        print(f"error: bench basin: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    print(json.dumps(result) if json_out else format_table(result))
    return 0
