"""Render-and-compare pose search for one outlier view, as a steppable object.

SparseAGS ``render_and_compare`` (docs/reference/sparseags.md, section 6), re-built on the Gaussians:

1. **Hypotheses** on a sphere around the object (``target`` = opacity-weighted centre of the Gaussians):
   elevations from ``min − margin`` to ``max + margin`` of the inlier cameras in ``step`` increments
   (kiui sign, clipped to ±89.9°), ``n_azimuth`` azimuths over [−180°, 180°), radii from
   ``min − margin`` to ``max + margin`` in ``radius_step`` increments, looking at the target, no roll.
2. **Three refinement stages.** Each candidate pose gets an se(3) residual ξ, applied on the camera side
   (``w2c = exp(ξ) @ w2c_candidate``; the official code right-multiplies its OpenGL camera-to-world,
   which is the same family up to the fixed OpenGL/OpenCV axis flip), optimised with Adam on the
   full-image RGB MSE against the input composited on white (alpha ≤ 0.9 → white), learning rate
   decayed ×γ per step. Stage A refines every hypothesis; stages B and C keep the best
   ``max(keep_fraction·K, keep_min)``, replicate each ``replicate`` times with ξ ~ N(0, σ²) (σ = 0.1,
   then 0.01) and refine again.
3. **Ranking**: final candidates are scored by MSE and LPIPS; the winner minimises rank(MSE) + rank(LPIPS).

The state exposes the whole grid (initial and stage-A MSE per elevation × azimuth × radius) for the
debugger's heatmap, the top candidates with their renders, and lets the user apply any candidate.
Stage A in the official code uses a centred principal point; we keep the view's own intrinsics in every
stage (the principal points of our inputs are within a few pixels of the centre).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from sparseags.cameras import (
    c2w_gl_to_w2c,
    orbit_camera,
    rotation_angle_deg,
    scale_intrinsics,
    se3_exp,
    undo_orbit_camera,
)
from sparseags.snapshots import SearchSnapshot

# render_fn(w2c [C, 4, 4], K [C, 3, 3], width, height) -> rgb [C, H, W, 3] on white, differentiable in w2c
RenderFn = Callable[[Tensor, Tensor, int, int], Tensor]
# lpips_fn(a [B, 3, H, W], b [B, 3, H, W]) in [0, 1] -> [B]
LpipsFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class SearchGrid:
    """The discrete hypotheses: ``poses[e, a, r]`` looks at ``target`` from (elevation e, azimuth a, radius r)."""

    elevations_deg: np.ndarray  # [E] kiui sign (negative = above)
    azimuths_deg: np.ndarray  # [A]
    radii: np.ndarray  # [R]
    target: np.ndarray  # [3]
    w2c: np.ndarray  # [E * A * R, 4, 4] OpenCV, in (e, a, r) row-major order

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.elevations_deg), len(self.azimuths_deg), len(self.radii)


def _arange_inclusive_start(start: float, stop: float, step: float) -> np.ndarray:
    """np.arange(start, stop, step) with `stop` excluded robustly against float noise, never empty."""
    count = int(np.floor((stop - start) / step - 1e-6)) + 1
    return start + step * np.arange(max(count, 1))


def build_search_grid(
    inlier_w2c: np.ndarray,
    target: np.ndarray,
    *,
    elevation_margin_deg: float = 20.0,
    elevation_step_deg: float = 15.0,
    n_azimuth: int = 24,
    radius_margin: float = 0.2,
    radius_step: float = 0.2,
) -> SearchGrid:
    """The official hypothesis grid around `target`, ranges taken from the inlier cameras (OpenCV w2c)."""
    inlier_w2c = np.asarray(inlier_w2c, dtype=np.float64)
    c2w = np.linalg.inv(inlier_w2c)
    centres = c2w[:, :3, 3]
    offsets = centres - target
    radius = np.linalg.norm(offsets, axis=-1)
    elev = -np.degrees(np.arcsin(np.clip(offsets[:, 1] / radius, -1.0, 1.0)))
    elevations = _arange_inclusive_start(
        max(elev.min() - elevation_margin_deg, -89.9), min(elev.max() + elevation_margin_deg, 89.9), elevation_step_deg
    )
    azimuths = np.arange(n_azimuth) * (360.0 / n_azimuth) - 180.0
    radii = _arange_inclusive_start(radius.min() - radius_margin, radius.max() + radius_margin, radius_step)
    radii = radii[radii > 0.05]
    e, a, r = np.meshgrid(elevations, azimuths, radii, indexing="ij")
    c2w_gl = orbit_camera(e.ravel(), a.ravel(), r.ravel(), torch.as_tensor(target, dtype=torch.float64))
    w2c = c2w_gl_to_w2c(c2w_gl).numpy()
    return SearchGrid(elevations, azimuths, radii, np.asarray(target, dtype=np.float64), w2c)


def white_background_target(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The official comparison target: pixels with alpha ≤ 0.9 become white. [H, W, 3] float32."""
    keep = (mask > 0.9)[..., None]
    return np.where(keep, image, 1.0).astype(np.float32)


def rank_sum(mse: np.ndarray, lpips: Optional[np.ndarray]) -> np.ndarray:
    """rank(MSE) + rank(LPIPS) with ranks 1..K (argsort of argsort, ties by index); MSE ranks alone without LPIPS."""
    total = np.argsort(np.argsort(mse, kind="stable"), kind="stable") + 1
    if lpips is not None:
        total = total + np.argsort(np.argsort(lpips, kind="stable"), kind="stable") + 1
    return total.astype(np.int64)


@torch.no_grad()
def reference_costs(
    render_fn, images: np.ndarray, masks: np.ndarray, w2c: np.ndarray, K: np.ndarray, centre: np.ndarray, settings
) -> np.ndarray:
    """[N] the pose solver's finest-level cost of views at their poses (white-background images [N, H, W, 3],
    masks [N, H, W], w2c [N, 4, 4], K [N, 3, 3]): what a well-placed view costs against this model."""
    from sparseags.pose_solver import PoseSolver

    settings = copy.copy(settings)
    settings.levels = tuple(level for level in settings.levels if level.size <= np.asarray(images).shape[1])
    solver = PoseSolver(
        render_fn,
        torch.as_tensor(images),
        torch.as_tensor(masks),
        torch.as_tensor(w2c),
        torch.as_tensor(K),
        torch.as_tensor(centre),
        settings,
    )
    return solver.level_cost(-1).numpy()


@dataclass
class PoseSearch:
    """Steppable search for one view. ``step(budget)`` runs `budget` optimiser iterations of one chunk."""

    render_fn: RenderFn
    target_image: np.ndarray  # [H, W, 3] white-background comparison target at the view's resolution
    K: np.ndarray  # [3, 3] the view's intrinsics at the target image's resolution
    grid: SearchGrid
    stage_steps: list = field(default_factory=lambda: [128, 256, 256])
    stage_lr: list = field(default_factory=lambda: [5e-3, 1e-3, 1e-3])
    stage_jitter: list = field(default_factory=lambda: [0.0, 0.1, 0.01])
    stage_resolution: list = field(default_factory=lambda: [256, 256, 256])
    lr_gamma: float = 0.99
    replicate: int = 4
    keep_fraction: float = 0.1
    keep_min: int = 64
    chunk: int = 64
    lpips_fn: Optional[LpipsFn] = None
    # LPIPS only for the best `rank_candidates` by MSE (0 = every final candidate, official).
    rank_candidates: int = 0
    seed: int = 0
    view_id: str = ""
    top_k: int = 8
    # Ambiguity: another final candidate at least this far (rotation, degrees) from the winner whose MSE and
    # LPIPS are both within `ambiguity_ratio` x the winner's is a competitor (a symmetric object).
    ambiguity_angle_deg: float = 30.0
    ambiguity_ratio: float = 1.1
    # ... or within these absolute margins (the noise floor: a model that fits its photo almost exactly makes
    # any ratio of two tiny MSEs meaningless; 1e-4 is an RMS difference of 1 % of the grey range).
    ambiguity_floor_mse: float = 1e-4
    ambiguity_floor_lpips: float = 0.01
    # The shared pose solver (sparseags/pose_solver.py) on the best `solver_candidates` by MSE after the Adam
    # stages, before the ranking: object-centred Levenberg-Marquardt with anti-aliased coarse levels on RGB and
    # silhouette. Needs solver_render_fn (-> rgb, alpha), target_mask and solver_settings; 0 = off.
    solver_candidates: int = 0
    solver_render_fn: Optional[Callable] = None
    target_mask: Optional[np.ndarray] = None  # [H, W] the view's object mask at the target's resolution
    solver_settings: Optional[object] = None  # a sparseags.pose_solver.SolverSettings
    # How the hypotheses are refined. "adam": the official stages above (then the solver stage when set).
    # "solver" (needs the solver fields): every hypothesis is scored once at the solver's coarsest level, the
    # best `coarse_candidates` (one per elevation x azimuth cell) are solved at the coarse levels (size <=
    # `coarse_max_size`, silhouette-moment alignments first), the best `solver_candidates` that are at least
    # `distinct_deg` apart at the finer levels, and the winner's turned copies are solved before the
    # symmetry test (a copy a few degrees from an equivalent pose would otherwise score worse than it is).
    refine: str = "adam"
    coarse_candidates: int = 32
    coarse_max_size: int = 64
    distinct_deg: float = 10.0
    # Solver mode: the view's own pose is solved first. The result competes in the final ranking, and when its
    # cost (finest level) is at most `local_accept_cost` the sphere is not searched at all: a view a few
    # degrees off is corrected locally (precision: no search spent on it).
    start_w2c: Optional[np.ndarray] = None
    local_accept_cost: Optional[float] = None
    # ... and when the solver moved it at most this far (a gross outlier that the solver drags into some other
    # low-cost pose has not been corrected locally: it is searched).
    local_max_move_deg: float = 10.0

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(int(self.seed))
        self.stage = 0
        self.candidates = torch.as_tensor(self.grid.w2c, dtype=torch.float32)  # [M, 4, 4]
        self.origin = np.arange(len(self.grid.w2c))  # grid cell each candidate descends from
        self.final_mse = np.full(len(self.candidates), np.nan)
        self.initial_mse_grid = np.full(len(self.grid.w2c), np.nan)
        self.stage_a_mse_grid = np.full(len(self.grid.w2c), np.nan)
        self.chunk_start = 0
        self.iteration = 0
        self.xi: Optional[Tensor] = None
        self.optimizer: Optional[torch.optim.Adam] = None
        self.finished = False
        self.ranking: Optional[dict] = None
        self.chosen: Optional[int] = None
        self.manual_choice: Optional[int] = None
        self.steps_done = 0
        self._targets: dict[int, Tensor] = {}
        self.manual_w2c: Optional[np.ndarray] = None  # a heatmap cell's pose chosen by hand (apply_cell)
        self._finished_snapshot: Optional[tuple[tuple, SearchSnapshot]] = None  # (choice key, snapshot)
        self.pose_solver = None  # the running solver stage (PoseSolver), if any
        self.solver_finished = self.solver_candidates <= 0 or self.solver_render_fn is None
        self.solver_summary: Optional[dict] = None
        if self.refine not in ("adam", "solver"):
            raise ValueError(f"search.refine must be 'adam' or 'solver', got {self.refine!r}")
        if self.refine == "solver" and (
            self.solver_render_fn is None or self.target_mask is None or self.solver_settings is None
        ):
            raise ValueError(
                "search.refine=solver needs search.solver_candidates >= 1 (the solver's render function, the view's "
                "mask and settings)"
            )
        # Solver mode's phases, in order (self.stage indexes them).
        self.phases: tuple[str, ...] = (
            (("local",) if self.start_w2c is not None else ()) + ("score", "coarse", "fine", "rank", "symmetry")
            if self.refine == "solver"
            else ()
        )
        self.local: Optional[dict] = None  # solver mode: {"w2c", "cost", "accepted"} of the view's own pose

    # ---------------------------------------------------------------------------------------------
    # helpers

    @property
    def done(self) -> bool:
        return self.finished

    def _resolution(self) -> int:
        return int(self.stage_resolution[min(self.stage, len(self.stage_resolution) - 1)])

    def _target(self, resolution: int) -> Tensor:
        if resolution not in self._targets:
            image = torch.as_tensor(self.target_image).permute(2, 0, 1)[None]
            if image.shape[-1] != resolution:
                image = torch.nn.functional.interpolate(image, size=(resolution, resolution), mode="area")
            self._targets[resolution] = image[0].permute(1, 2, 0).contiguous()
        return self._targets[resolution]

    def _K(self, resolution: int) -> Tensor:
        size = self.target_image.shape[1]
        return scale_intrinsics(torch.as_tensor(self.K, dtype=torch.float32), resolution / size, resolution / size)

    def _chunk_slice(self) -> slice:
        return slice(self.chunk_start, min(self.chunk_start + self.chunk, len(self.candidates)))

    def _per_candidate_mse(self, w2c: Tensor, resolution: int) -> Tensor:
        K = self._K(resolution).expand(len(w2c), 3, 3)
        rgb = self.render_fn(w2c, K, resolution, resolution)  # [C, H, W, 3]
        return ((rgb - self._target(resolution)) ** 2).mean(dim=(1, 2, 3))

    def _start_chunk(self) -> None:
        rows = self._chunk_slice()
        count = rows.stop - rows.start
        sigma = float(self.stage_jitter[self.stage])
        xi = torch.randn(count, 6, generator=self.generator) * (sigma if sigma > 0 else 1e-6)
        self.xi = xi.requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.xi], lr=float(self.stage_lr[self.stage]))
        self.iteration = 0

    # ---------------------------------------------------------------------------------------------
    # stepping

    def step(self, budget: int = 1) -> dict:
        if self.finished:
            return {"phase": "search", "event": "done", "view": self.view_id}
        if self.refine == "solver":
            return self._solver_mode_step(budget)
        if self.stage >= len(self.stage_steps):
            if not self.solver_finished:
                return self._solver_step()
            self._rank()
            return {"phase": "search", "event": "ranked", "view": self.view_id, "chosen": self.chosen}
        if self.xi is None:
            self._start_chunk()
        resolution = self._resolution()
        rows = self._chunk_slice()
        base = self.candidates[rows]
        last = None
        for _ in range(max(1, int(budget))):
            w2c = se3_exp(self.xi) @ base
            mse = self._per_candidate_mse(w2c, resolution)
            if self.iteration == 0 and self.stage == 0:
                self.initial_mse_grid[self.origin[rows]] = mse.detach().numpy()
            self.optimizer.zero_grad(set_to_none=True)
            mse.sum().backward()  # candidates are independent: the sum gives each its own gradient
            self.optimizer.step()
            for group in self.optimizer.param_groups:
                group["lr"] *= self.lr_gamma
            self.iteration += 1
            self.steps_done += 1
            last = mse.detach()
            if self.iteration >= int(self.stage_steps[self.stage]):
                self._finish_chunk(rows, resolution)
                break
        return {
            "phase": "search",
            "view": self.view_id,
            "stage": self.stage,
            "chunk_start": rows.start,
            "iteration": self.iteration,
            "best_mse": None if last is None else float(last.min()),
        }

    def _finish_chunk(self, rows: slice, resolution: int) -> None:
        with torch.no_grad():
            refined = se3_exp(self.xi.detach()) @ self.candidates[rows]
            mse = self._per_candidate_mse(refined, resolution).numpy()
        self.candidates[rows] = refined
        self.final_mse[rows] = mse
        if self.stage == 0:
            self.stage_a_mse_grid[self.origin[rows]] = mse
        self.xi = None
        self.optimizer = None
        self.chunk_start = rows.stop
        if self.chunk_start >= len(self.candidates):
            self._next_stage()

    def _next_stage(self) -> None:
        self.stage += 1
        self.chunk_start = 0
        if self.stage >= len(self.stage_steps):
            return
        keep = max(int(math.floor(self.keep_fraction * len(self.candidates))), int(self.keep_min))
        keep = min(keep, len(self.candidates))
        best = np.argsort(self.final_mse, kind="stable")[:keep]
        self.candidates = self.candidates[torch.as_tensor(best)].repeat_interleave(self.replicate, dim=0)
        self.origin = np.repeat(self.origin[best], self.replicate)
        self.final_mse = np.full(len(self.candidates), np.nan)

    def _start_solver(self, state: Optional[dict] = None) -> None:
        """Keep the best `solver_candidates` by MSE and set up their PoseSolver (focal fixed: one view
        alone cannot tell focal from distance); ``state`` continues a checkpointed solver stage."""
        from sparseags.pose_solver import PoseSolver

        if state is None:
            keep = min(int(self.solver_candidates), len(self.candidates))
            best = np.sort(np.argsort(self.final_mse, kind="stable")[:keep])
            self.candidates = self.candidates[torch.as_tensor(best)]
            self.origin = self.origin[best]
            self.final_mse = self.final_mse[best]
        count = len(self.candidates)
        image = torch.as_tensor(self.target_image, dtype=torch.float32)
        mask = torch.as_tensor(self.target_mask, dtype=torch.float32)
        settings = copy.copy(self.solver_settings)
        settings.optimize_focal = False
        size = image.shape[0]
        settings.levels = tuple(level for level in settings.levels if level.size <= size)
        K = torch.as_tensor(self.K, dtype=torch.float32)
        self.pose_solver = PoseSolver(
            self.solver_render_fn,
            image[None].expand(count, *image.shape),
            mask[None].expand(count, *mask.shape),
            self.candidates.clone(),
            K[None].expand(count, 3, 3),
            torch.as_tensor(self.grid.target, dtype=torch.float32),
            settings,
        )
        if state is not None:
            self.pose_solver.load_state_dict(state)

    def _solver_step(self) -> dict:
        """One LM iteration of every kept candidate; at the end their poses replace the candidates."""
        if self.pose_solver is None:
            self._start_solver()
        solver = self.pose_solver
        solver.step()
        self.steps_done += 1
        if solver.done:
            w2c, _ = solver.current()
            snap = solver.snapshot()
            self.candidates = w2c.float()
            with torch.no_grad():
                self.final_mse = self._per_candidate_mse(self.candidates, int(self.stage_resolution[-1])).numpy()
            self.solver_summary = {
                "cost_start": snap["initial_cost"].tolist(),
                "cost_end": snap["cost"].tolist(),
                "accepted": snap["accepted"].tolist(),
            }
            self.pose_solver = None
            self.solver_finished = True
        return {
            "phase": "search",
            "view": self.view_id,
            "stage": "solver",
            "iteration": solver.iteration,
            "level": solver.level,
            "best_mse": float(np.nanmin(self.final_mse)) if solver.done else None,
        }

    # ---------------------------------------------------------------------------------------------
    # solver mode

    @property
    def n_stages(self) -> int:
        return len(self.phases) if self.refine == "solver" else len(self.stage_steps)

    def _phase(self) -> str:
        return self.phases[min(self.stage, len(self.phases) - 1)]

    def _levels(self, phase: str) -> tuple:
        """The solver levels of a phase: coarse ones (size <= coarse_max_size), finer ones, or all (local)."""
        size = self.target_image.shape[0]
        levels = tuple(level for level in self.solver_settings.levels if level.size <= size)
        if phase == "coarse":
            return tuple(level for level in levels if level.size <= self.coarse_max_size) or levels[:1]
        if phase in ("fine", "symmetry"):
            return tuple(level for level in levels if level.size > self.coarse_max_size) or levels[-1:]
        return levels

    @staticmethod
    def _final_cost(solver) -> Tensor:
        """[N] the solver's cost at its last solved level (no extra render), rendered only when none ran."""
        return solver.cost if bool(torch.isfinite(solver.cost).all()) else solver.level_cost(-1)

    def _make_solver(self, w2c: Tensor, levels: tuple, moment_steps: int, state: Optional[dict] = None):
        """A PoseSolver of the poses w2c [N, 4, 4] against this view (focal fixed: one view alone cannot tell
        focal from distance)."""
        from sparseags.pose_solver import PoseSolver

        image = torch.as_tensor(self.target_image, dtype=torch.float32)
        mask = torch.as_tensor(self.target_mask, dtype=torch.float32)
        settings = copy.copy(self.solver_settings)
        settings.optimize_focal = False
        settings.levels = tuple(levels)
        settings.moment_steps = int(moment_steps)
        count = len(w2c)
        solver = PoseSolver(
            self.solver_render_fn,
            image[None].expand(count, *image.shape),
            mask[None].expand(count, *mask.shape),
            w2c.float().clone(),
            torch.as_tensor(self.K, dtype=torch.float32)[None].expand(count, 3, 3),
            torch.as_tensor(self.grid.target, dtype=torch.float32),
            settings,
        )
        if state is not None:
            solver.load_state_dict(state)
        return solver

    def _phase_solver(self, phase: str, state: Optional[dict] = None):
        moments = int(self.solver_settings.moment_steps)
        if phase == "local":
            w2c = torch.as_tensor(np.asarray(self.start_w2c)[None], dtype=torch.float32)
            return self._make_solver(w2c, self._levels("local"), moments, state)
        if phase == "symmetry":
            return self._make_solver(self._turned_copies(self.chosen), self._levels("symmetry"), 0, state)
        return self._make_solver(self.candidates, self._levels(phase), moments if phase == "coarse" else 0, state)

    def _solver_mode_step(self, budget: int) -> dict:
        phase = self._phase()
        event = {"phase": "search", "view": self.view_id, "stage": phase}
        if phase == "score":
            for _ in range(max(1, int(budget))):
                self._score_chunk()
                if self._phase() != "score":
                    break
            return dict(event, chunk_start=self.chunk_start)
        if phase == "rank":
            self._rank()
            return dict(event, event="ranked", chosen=self.chosen)
        if self.pose_solver is None:
            self.pose_solver = self._phase_solver(phase)
        solver = self.pose_solver
        solver.step()
        self.steps_done += 1
        event.update(iteration=solver.iteration, level=solver.level)
        if solver.done:
            self.pose_solver = None
            {"local": self._finish_local, "coarse": self._finish_coarse, "fine": self._finish_fine}.get(
                phase, self._finish_symmetry
            )(solver)
        return event

    @torch.no_grad()
    def _score_chunk(self) -> None:
        """Score the next `chunk` grid hypotheses at the solver's coarsest level (anti-aliased, blurred, RGB and
        silhouette); after the last one keep the best `coarse_candidates`, one per (elevation, azimuth) cell."""
        rows = self._chunk_slice()
        solver = self._make_solver(self.candidates[rows], self._levels("coarse"), 0)
        cost = solver.level_cost(0).numpy()
        self.initial_mse_grid[self.origin[rows]] = cost
        self.final_mse[rows] = cost
        self.steps_done += 1
        self.chunk_start = rows.stop
        if self.chunk_start < len(self.candidates):
            return
        n_radii = self.grid.shape[2]
        order = np.argsort(self.final_mse, kind="stable")
        best_per_cell: dict[int, int] = {}
        for index in order:
            best_per_cell.setdefault(int(self.origin[index]) // n_radii, int(index))
        keep = np.sort(np.array(list(best_per_cell.values()))[: int(self.coarse_candidates)])
        self._keep(keep)
        self.stage_a_mse_grid = self.initial_mse_grid.copy()
        self.chunk_start = 0
        self.stage += 1

    def _keep(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        self.candidates = self.candidates[torch.as_tensor(rows)]
        self.origin = self.origin[rows]
        self.final_mse = self.final_mse[rows]

    def _nearest_origin(self, w2c: np.ndarray) -> int:
        """The grid hypothesis nearest to a pose (elevation, azimuth, radius), for the heat map's bookkeeping."""
        elev, azim, radius = self.cell_of(w2c)
        e = int(np.argmin(np.abs(self.grid.elevations_deg - elev)))
        a = int(np.argmin(np.abs((self.grid.azimuths_deg - azim + 180.0) % 360.0 - 180.0)))
        r = int(np.argmin(np.abs(self.grid.radii - radius)))
        n_e, n_a, n_r = self.grid.shape
        return (e * n_a + a) * n_r + r

    def _finish_local(self, solver) -> None:
        w2c, _ = solver.current()
        cost = float(self._final_cost(solver)[0])
        start = torch.as_tensor(np.asarray(self.start_w2c)[:3, :3], dtype=torch.float64)
        moved = float(rotation_angle_deg(w2c[0, :3, :3].double(), start))
        accepted = (
            self.local_accept_cost is not None
            and cost <= float(self.local_accept_cost)
            and moved <= self.local_max_move_deg
        )
        self.local = {"w2c": w2c[0].double().numpy(), "cost": cost, "moved_deg": moved, "accepted": bool(accepted)}
        self.solver_summary = {
            "cost_start": solver.snapshot()["initial_cost"].tolist(),
            "cost_end": [cost],
            "accepted": solver.accepted.tolist(),
        }
        if accepted:  # a few degrees off: the local solution is the answer, the sphere is not searched
            self.candidates = w2c.float()
            self.origin = np.array([self._nearest_origin(self.local["w2c"])])
            self.final_mse = np.array([cost])
            self.stage = self.phases.index("rank")  # the symmetry test still runs (a symmetric object's start fits)
        else:
            self.stage += 1

    def _finish_coarse(self, solver) -> None:
        """Solved candidates replace the grid poses; the best `solver_candidates` distinct ones go on."""
        w2c, _ = solver.current()
        self.candidates = w2c.float()
        coarse_cost = solver.level_cost(0).numpy()  # the scoring level: comparable with the grid's costs
        self.stage_a_mse_grid[self.origin] = coarse_cost
        last_cost = self._final_cost(solver).numpy()
        rotations = self.candidates[:, :3, :3].double()
        chosen: list[int] = []
        for index in np.argsort(last_cost, kind="stable"):
            if len(chosen) >= int(self.solver_candidates):
                break
            if chosen:
                others = rotations[torch.as_tensor(chosen)]
                angles = rotation_angle_deg(rotations[int(index)].expand_as(others), others)
                if float(angles.min()) < self.distinct_deg:
                    continue  # converged onto a kept candidate's minimum
            chosen.append(int(index))
        self.final_mse = last_cost
        self._keep(np.sort(np.array(chosen)))
        self.stage += 1

    def _finish_fine(self, solver) -> None:
        w2c, _ = solver.current()
        self.candidates = w2c.float()
        self.solver_summary = {
            "cost_start": solver.snapshot()["initial_cost"].tolist(),
            "cost_end": solver.cost.tolist(),
            "accepted": solver.accepted.tolist(),
        }
        if self.local is not None:  # the view's own pose, solved, competes too
            local = torch.as_tensor(self.local["w2c"], dtype=torch.float32)[None]
            self.candidates = torch.cat([self.candidates, local])
            self.origin = np.append(self.origin, self._nearest_origin(self.local["w2c"]))
        with torch.no_grad():
            self.final_mse = self._per_candidate_mse(self.candidates, int(self.stage_resolution[-1])).numpy()
        self.stage += 1

    def _finish_symmetry(self, solver) -> None:
        w2c, _ = solver.current()
        self.ranking["symmetry"] = self._score_turned(w2c.float(), int(self.stage_resolution[-1]))
        self.ranking["symmetry_w2c"] = w2c.double().numpy()
        self.stage += 1
        self.finished = True

    def _rank(self) -> None:
        """Final ranking by rank(MSE) + rank(LPIPS), optionally over the best candidates by MSE only."""
        if 0 < self.rank_candidates < len(self.candidates):
            best = np.sort(np.argsort(self.final_mse, kind="stable")[: self.rank_candidates])
            self.candidates = self.candidates[torch.as_tensor(best)]
            self.origin = self.origin[best]
            self.final_mse = self.final_mse[best]
        resolution = int(self.stage_resolution[-1])
        mse_all, lpips_all, renders = [], [], []
        with torch.no_grad():
            for start in range(0, len(self.candidates), self.chunk):
                w2c = self.candidates[start : start + self.chunk]
                K = self._K(resolution).expand(len(w2c), 3, 3)
                rgb = self.render_fn(w2c, K, resolution, resolution)
                target = self._target(resolution)
                mse_all.append(((rgb - target) ** 2).mean(dim=(1, 2, 3)))
                if self.lpips_fn is not None:
                    a = rgb.permute(0, 3, 1, 2)
                    b = target.permute(2, 0, 1)[None].expand_as(a)
                    lpips_all.append(self.lpips_fn(a, b).reshape(-1))
                renders.append(rgb)
        mse = torch.cat(mse_all).numpy()
        lpips = torch.cat(lpips_all).numpy() if lpips_all else None
        total = rank_sum(mse, lpips)
        order = np.argsort(total, kind="stable")
        renders_all = torch.cat(renders)
        self.ranking = {
            "mse": mse,
            "lpips": lpips,
            "rank_total": total,
            "order": order,
            "top_renders": renders_all[torch.as_tensor(order[: self.top_k])].numpy(),
        }
        self.chosen = int(order[0])
        if self.refine == "solver":
            self.ranking["symmetry"] = []
            self.stage += 1  # the turned copies are solved first (phase "symmetry")
            return
        self.ranking["symmetry"] = self._symmetry_probe(self.chosen, resolution)
        self.finished = True

    # Azimuth offsets (degrees) of the symmetry probe: the winner turned about the grid's vertical axis.
    SYMMETRY_OFFSETS_DEG = (45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0)

    @torch.no_grad()
    def _symmetry_probe(self, winner: int, resolution: int) -> list[dict]:
        """The winner's pose turned about the vertical axis through the grid's target by each offset of
        SYMMETRY_OFFSETS_DEG, rendered and scored like the candidates: [{angle_deg, mse, lpips}]. On an object
        that looks the same from every side (a plain cylinder, a bowl) these score like the winner."""
        turned = self._turned_copies(winner)
        self.ranking["symmetry_w2c"] = turned.double().numpy()
        return self._score_turned(turned, resolution)

    def _turned_copies(self, winner: int) -> Tensor:
        """[len(SYMMETRY_OFFSETS_DEG), 4, 4] the candidate `winner` turned about the vertical axis through the
        grid's target by each offset."""
        w2c = self.candidates[winner].double().numpy()
        target = np.asarray(self.grid.target, dtype=np.float64)
        poses = []
        for offset in self.SYMMETRY_OFFSETS_DEG:
            a = np.radians(offset)
            turn = np.eye(4)
            turn[:3, :3] = [[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]]
            turn[:3, 3] = target - turn[:3, :3] @ target  # about the axis through the target
            poses.append(w2c @ np.linalg.inv(turn))  # camera turned by `turn` in the world
        return torch.as_tensor(np.stack(poses), dtype=torch.float32)

    @torch.no_grad()
    def _score_turned(self, w2c_turned: Tensor, resolution: int) -> list[dict]:
        """Render and score turned copies like the candidates; `angle_deg` is each copy's rotation from the
        automatic winner (after solving it is no longer exactly the offset)."""
        K = self._K(resolution).expand(len(w2c_turned), 3, 3)
        rgb = self.render_fn(w2c_turned, K, resolution, resolution)
        target_image = self._target(resolution)
        mse = ((rgb - target_image) ** 2).mean(dim=(1, 2, 3)).numpy()
        lpips = None
        if self.lpips_fn is not None:
            a_img = rgb.permute(0, 3, 1, 2)
            lpips = self.lpips_fn(a_img, target_image.permute(2, 0, 1)[None].expand_as(a_img)).reshape(-1).numpy()
        winner = self.candidates[self.chosen, :3, :3].double()
        angles = rotation_angle_deg(winner.expand(len(w2c_turned), 3, 3), w2c_turned[:, :3, :3].double()).numpy()
        return [
            {
                "angle_deg": float(angles[i]),
                "mse": float(mse[i]),
                "lpips": None if lpips is None else float(lpips[i]),
                "turn": i,  # row of ranking["symmetry_w2c"]
            }
            for i in range(len(w2c_turned))
        ]

    def _alike(self, mse: float, lpips: Optional[float], winner: int) -> bool:
        """Whether scores (mse, lpips) are within ambiguity_ratio of the candidate `winner`'s, or within the
        absolute noise floors above it."""
        assert self.ranking is not None
        best_lpips = self.ranking["lpips"]
        mse_limit = self.ambiguity_ratio * self.ranking["mse"][winner] + self.ambiguity_floor_mse
        return bool(
            mse <= mse_limit
            and (
                lpips is None
                or best_lpips is None
                or lpips <= self.ambiguity_ratio * best_lpips[winner] + self.ambiguity_floor_lpips
            )
        )

    def competitors_of(self, winner: int) -> list[dict]:
        """What makes a search ambiguous: final candidates far from `winner` (≥ ambiguity_angle_deg of rotation)
        that score alike (MSE and LPIPS within ambiguity_ratio × the winner's), best rank first, then the turned
        copies of the automatic winner (symmetry probe, rank -1) that score alike."""
        assert self.ranking is not None
        mse, lpips, order = self.ranking["mse"], self.ranking["lpips"], self.ranking["order"]
        rotations = self.candidates[:, :3, :3].double()  # [M, 3, 3]
        angles = rotation_angle_deg(rotations[winner].expand_as(rotations), rotations).numpy()  # [M]
        competitors = []
        for position, index in enumerate(order):
            index = int(index)
            if index == winner:
                continue
            angle = float(angles[index])
            lp = None if lpips is None else float(lpips[index])
            if angle >= self.ambiguity_angle_deg and self._alike(float(mse[index]), lp, winner):
                competitors.append(
                    {
                        "rank": position,
                        "index": index,
                        "angle_deg": angle,
                        "mse": float(mse[index]),
                        "lpips": lp,
                        "score": float(mse[index]) if lp is None else lp,
                    }
                )
        if winner == self.chosen:
            for turned in self.ranking.get("symmetry", []):
                if turned["angle_deg"] >= self.ambiguity_angle_deg and self._alike(
                    turned["mse"], turned["lpips"], winner
                ):
                    score = turned["mse"] if turned["lpips"] is None else turned["lpips"]
                    competitors.append(dict(turned, rank=-1, index=-1, score=score))
        return competitors

    @property
    def corrected_locally(self) -> bool:
        """Solver mode: the view's own pose was solved in its basin and accepted, the sphere was not searched
        (and no candidate was chosen by hand since)."""
        return bool(
            self.local is not None and self.local["accepted"] and self.manual_choice is None and self.manual_w2c is None
        )

    def competitor_w2c(self, competitor: dict) -> np.ndarray:
        """The pose (OpenCV w2c, float64) of one entry of :meth:`competitors_of`: a final candidate or a turned copy."""
        if competitor["index"] >= 0:
            return self.candidates[int(competitor["index"])].double().numpy()
        return np.asarray(self.ranking["symmetry_w2c"][int(competitor["turn"])], dtype=np.float64).copy()

    @property
    def ambiguous(self) -> bool:
        """Whether the final candidates far from the chosen one score as well as it does (see competitors_of)."""
        return bool(self.ranking is not None and self.choice is not None and self.competitors_of(self.choice))

    # ---------------------------------------------------------------------------------------------
    # results and manual choice

    def apply_candidate(self, rank_position: int) -> None:
        """Choose the candidate at `rank_position` of the final ranking (0 = the automatic winner)."""
        if self.ranking is None:
            raise ValueError("the search has not ranked its candidates yet")
        order = self.ranking["order"]
        if not 0 <= rank_position < len(order):
            raise ValueError(f"candidate {rank_position} does not exist (0..{len(order) - 1})")
        self.manual_choice = int(order[rank_position])
        self.manual_w2c = None

    @property
    def choice(self) -> Optional[int]:
        return self.manual_choice if self.manual_choice is not None else self.chosen

    def chosen_w2c(self) -> np.ndarray:
        """The chosen candidate's pose (OpenCV w2c, float64); a cell applied by hand wins (:meth:`apply_cell`)."""
        if self.manual_w2c is not None:
            return np.asarray(self.manual_w2c, dtype=np.float64).copy()
        if self.choice is None:
            raise ValueError("no candidate chosen yet")
        return self.candidates[self.choice].double().numpy()

    def cell_candidate(self, elevation_index: int, azimuth_index: int) -> dict:
        """The hypothesis of heatmap cell (elevation_index, azimuth_index): the best-ranked final candidate that
        descends from the cell when one survived the refinement (``rank_position`` set), else the cell's grid
        pose at its best radius (lowest refined, else coarse, MSE; ``rank_position`` None).

        Returns ``{"rank_position", "w2c" [4, 4], "radius", "radius_index", "mse", "lpips"}``.
        """
        n_e, n_a, n_r = self.grid.shape
        if not (0 <= elevation_index < n_e and 0 <= azimuth_index < n_a):
            raise ValueError(f"cell ({elevation_index}, {azimuth_index}) is outside the {n_e} x {n_a} search grid")
        cells = np.arange(n_r) + n_r * (azimuth_index + n_a * elevation_index)  # grid rows of the cell's radii
        mse_r = self.stage_a_mse_grid[cells]
        if np.all(np.isnan(mse_r)):
            mse_r = self.initial_mse_grid[cells]
        best_r = 0 if np.all(np.isnan(mse_r)) else int(np.nanargmin(mse_r))
        out = {
            "rank_position": None,
            "w2c": np.asarray(self.grid.w2c[cells[best_r]], dtype=np.float64),
            "radius": float(self.grid.radii[best_r]),
            "radius_index": best_r,
            "mse": None if np.isnan(mse_r[best_r]) else float(mse_r[best_r]),
            "lpips": None,
        }
        if self.ranking is not None:
            for position, index in enumerate(self.ranking["order"]):
                if int(self.origin[index]) // n_r == cells[0] // n_r:
                    lpips = self.ranking["lpips"]
                    out.update(
                        rank_position=position,
                        w2c=self.candidates[index].double().numpy(),
                        mse=float(self.ranking["mse"][index]),
                        lpips=None if lpips is None else float(lpips[index]),
                    )
                    break
        return out

    def apply_cell(self, elevation_index: int, azimuth_index: int) -> dict:
        """Choose heatmap cell (elevation_index, azimuth_index)'s hypothesis (:meth:`cell_candidate`)."""
        if not self.finished:
            raise ValueError("the search has not ranked its candidates yet")
        hypothesis = self.cell_candidate(elevation_index, azimuth_index)
        if hypothesis["rank_position"] is not None:
            self.apply_candidate(hypothesis["rank_position"])
        else:
            self.manual_choice, self.manual_w2c = None, hypothesis["w2c"].copy()
        return hypothesis

    def cell_of(self, w2c: np.ndarray) -> tuple[float, float, float]:
        """(elevation_deg, azimuth_deg, radius) of a pose around this search's target (kiui sign)."""
        c2w = np.linalg.inv(np.asarray(w2c, dtype=np.float64))
        c2w_gl = c2w @ np.diag([1.0, -1.0, -1.0, 1.0])
        elev, azim, radius = undo_orbit_camera(torch.as_tensor(c2w_gl), torch.as_tensor(self.grid.target))
        return float(elev), float(azim), float(radius)

    def heatmap(self, which: str = "refined") -> np.ndarray:
        """Best (lowest) MSE per (elevation, azimuth) over radii: [E, A]; "coarse" = before refinement."""
        values = self.initial_mse_grid if which == "coarse" else self.stage_a_mse_grid
        grid = values.reshape(self.grid.shape)
        with np.errstate(all="ignore"):
            return np.where(
                np.all(np.isnan(grid), axis=-1), np.nan, np.nanmin(np.where(np.isnan(grid), np.inf, grid), axis=-1)
            )

    def snapshot(self) -> SearchSnapshot:
        """The search as a :class:`sparseags.snapshots.SearchSnapshot` (`view`, `initial_cell` and `truth_cell`
        are left for the pipeline to fill in).

        A finished search changes only when a candidate or a cell is applied, so its snapshot is built once
        per choice and handed out as copies (the debugger asks for it on every publication).
        """
        if not self.finished:
            return self._build_snapshot()
        key = (self.chosen, self.manual_choice, None if self.manual_w2c is None else self.manual_w2c.tobytes())
        if self._finished_snapshot is None or self._finished_snapshot[0] != key:
            self._finished_snapshot = (key, self._build_snapshot())
        return copy.deepcopy(self._finished_snapshot[1])

    def _build_snapshot(self) -> SearchSnapshot:
        top = []
        if self.ranking is not None:
            for position, index in enumerate(self.ranking["order"][: self.top_k]):
                top.append(
                    {
                        "rank_position": position,
                        "index": int(index),
                        "mse": float(self.ranking["mse"][index]),
                        "lpips": None if self.ranking["lpips"] is None else float(self.ranking["lpips"][index]),
                        "rank_total": int(self.ranking["rank_total"][index]),
                        "cell": self.cell_of(self.candidates[index].double().numpy()),
                        "render": self.ranking["top_renders"][position],
                    }
                )
        best_radius, cell_lpips, cell_rank = self._cell_tables()
        return SearchSnapshot(
            view_id=self.view_id,
            stage=int(self.stage),
            n_stages=self.n_stages,
            n_candidates=len(self.candidates),
            progress=min(1.0, self.steps_done / max(1, self._total_iterations())),
            done=bool(self.finished),
            manual=self.manual_choice is not None or self.manual_w2c is not None,
            elevations_deg=np.asarray(self.grid.elevations_deg, dtype=np.float64).copy(),
            azimuths_deg=np.asarray(self.grid.azimuths_deg, dtype=np.float64).copy(),
            radii=np.asarray(self.grid.radii, dtype=np.float64).copy(),
            mse_coarse=self.initial_mse_grid.reshape(self.grid.shape).copy(),
            mse_refined=self.stage_a_mse_grid.reshape(self.grid.shape).copy(),
            heat_coarse=self.heatmap("coarse"),
            heat_refined=self.heatmap("refined"),
            best_radius=best_radius,
            top=top,
            chosen=self.choice,
            chosen_cell=None if self.choice is None else tuple(self.cell_of(self.chosen_w2c())[:2]),
            ambiguous=bool(self.ambiguous),
            competitors=[]
            if self.ranking is None or self.choice is None
            else [{k: v for k, v in c.items() if k != "index"} for c in self.competitors_of(self.choice)],
            has_lpips=self.ranking is not None and self.ranking.get("lpips") is not None,
            cell_lpips=cell_lpips,
            cell_rank=cell_rank,
            target=np.asarray(self.target_image, dtype=np.float32),
            solver=self._solver_view(),
            stage_name=self._stage_name(),
            score_name="cost" if self.refine == "solver" else "MSE",
            local=None
            if self.local is None
            else {
                "cost": self.local["cost"],
                "accept_cost": self.local_accept_cost,
                "moved_deg": self.local.get("moved_deg"),
                "accepted": self.local["accepted"],
            },
        )

    def _stage_name(self) -> str:
        if self.finished:
            return "done"
        if self.refine == "solver":
            return self._phase()
        if self.stage < len(self.stage_steps):
            return f"adam {'ABCDEFGH'[min(self.stage, 7)]}"
        return "solver" if not self.solver_finished else "rank"

    def _solver_view(self) -> Optional[dict]:
        """The solver stage for display: its live state while it runs, its summary once done."""
        if self.pose_solver is not None:
            snap = self.pose_solver.snapshot()
            return {
                "running": True,
                "level": int(snap["level"]),
                "n_levels": len(self.pose_solver.settings.levels),
                "iteration": int(snap["iteration"]),
                "cost": snap["cost"].tolist(),
                "initial_cost": None if snap["initial_cost"] is None else snap["initial_cost"].tolist(),
                "damping": snap["damping"].tolist(),
                "last_step": snap["last_step"].tolist(),
                "trust_radius": float(snap["trust_radius"]),
                "accepted": snap["accepted"].tolist(),
            }
        if self.solver_summary is not None:
            return {"running": False, **copy.deepcopy(self.solver_summary)}
        return None

    def _cell_tables(self) -> tuple[dict, Optional[np.ndarray], Optional[np.ndarray]]:
        """Per (elevation, azimuth) cell: the radius of the best MSE per heat map, and the best LPIPS and rank
        position of the final candidates descending from the cell (NaN / -1 without any)."""
        shape = self.grid.shape
        radii = np.asarray(self.grid.radii, dtype=np.float64)
        best = {}
        for name, values in (("coarse", self.initial_mse_grid), ("refined", self.stage_a_mse_grid)):
            grid = np.asarray(values, dtype=np.float64).reshape(shape)
            empty = np.all(np.isnan(grid), axis=-1)
            index = np.argmin(np.where(np.isnan(grid), np.inf, grid), axis=-1)
            best[name] = np.where(empty, np.nan, radii[index])
        if self.ranking is None:
            return best, None, None
        lpips = np.full(shape[:2], np.nan)
        rank = np.full(shape[:2], -1, dtype=np.int64)
        for position, index in enumerate(self.ranking["order"]):
            e, a = divmod(int(self.origin[int(index)]) // shape[2], shape[1])
            if rank[e, a] < 0:
                rank[e, a] = position
            if self.ranking["lpips"] is not None:
                value = float(self.ranking["lpips"][int(index)])
                if not value >= lpips[e, a]:  # NaN-aware minimum
                    lpips[e, a] = value
        return best, lpips, rank

    def _total_iterations(self) -> int:
        """Optimiser iterations of the whole search (one iteration = one chunk step)."""
        n = len(self.grid.w2c)
        if self.refine == "solver":  # one step = one scored chunk or one LM iteration of a phase
            moments = int(self.solver_settings.moment_steps)
            total = math.ceil(n / self.chunk) + 1
            for phase in self.phases:
                if phase in ("local", "coarse", "fine", "symmetry"):
                    total += sum(level.iters for level in self._levels(phase))
                    total += moments if phase in ("local", "coarse") else 0
            return total
        total = 0
        for stage, steps in enumerate(self.stage_steps):
            if stage > 0:
                n = min(max(int(math.floor(self.keep_fraction * n)), int(self.keep_min)), n) * self.replicate
            total += math.ceil(n / self.chunk) * int(steps)
        if self.solver_candidates > 0 and self.solver_render_fn is not None and self.solver_settings is not None:
            size = self.target_image.shape[0]
            levels = [level for level in self.solver_settings.levels if level.size <= size]
            total += int(self.solver_settings.moment_steps) + sum(level.iters for level in levels)
        return total

    # ---------------------------------------------------------------------------------------------
    # checkpointing

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "stage": self.stage,
            "candidates": self.candidates.clone(),
            "origin": self.origin.copy(),
            "final_mse": self.final_mse.copy(),
            "initial_mse_grid": self.initial_mse_grid.copy(),
            "stage_a_mse_grid": self.stage_a_mse_grid.copy(),
            "chunk_start": self.chunk_start,
            "iteration": self.iteration,
            "xi": None if self.xi is None else self.xi.detach().clone(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "finished": self.finished,
            "ranking": self.ranking,
            "chosen": self.chosen,
            "manual_choice": self.manual_choice,
            "manual_w2c": None if self.manual_w2c is None else np.asarray(self.manual_w2c).copy(),
            "steps_done": self.steps_done,
            "solver_finished": self.solver_finished,
            "solver_summary": copy.deepcopy(self.solver_summary),
            "pose_solver": None if self.pose_solver is None else self.pose_solver.state_dict(),
            "local": copy.deepcopy(self.local),
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.stage = state["stage"]
        self.candidates = state["candidates"].clone()
        self.origin = state["origin"].copy()
        self.final_mse = state["final_mse"].copy()
        self.initial_mse_grid = state["initial_mse_grid"].copy()
        self.stage_a_mse_grid = state["stage_a_mse_grid"].copy()
        self.chunk_start = state["chunk_start"]
        self.iteration = state["iteration"]
        self.xi = None
        self.optimizer = None
        if state["xi"] is not None:
            self.xi = state["xi"].clone().requires_grad_(True)
            self.optimizer = torch.optim.Adam([self.xi], lr=float(self.stage_lr[self.stage]))
            self.optimizer.load_state_dict(state["optimizer"])
        self.finished = state["finished"]
        self.ranking = state["ranking"]
        self.chosen = state["chosen"]
        self.manual_choice = state["manual_choice"]
        manual_w2c = state.get("manual_w2c")
        self.manual_w2c = None if manual_w2c is None else np.asarray(manual_w2c, dtype=np.float64).copy()
        self.steps_done = state["steps_done"]
        self._finished_snapshot = None
        self.solver_finished = bool(state.get("solver_finished", True))
        self.solver_summary = copy.deepcopy(state.get("solver_summary"))
        self.pose_solver = None
        self.local = copy.deepcopy(state.get("local"))
        if state.get("pose_solver") is not None:
            if self.refine == "solver":
                self.pose_solver = self._phase_solver(self._phase(), state["pose_solver"])
            else:
                self._start_solver(state["pose_solver"])
