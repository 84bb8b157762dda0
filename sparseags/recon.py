"""Joint 3D Gaussians + camera pose reconstruction (SparseAGS stage 1, "MV-DreamGaussian") as a steppable object.

Conventions (docs/ARCHITECTURE.md): OpenCV world-to-camera ``w2c``, pixel intrinsics ``K``. Every inlier
view (flag 1) gets a twist ``xi = [rho, phi]`` and is rendered at ``w2c = se3_exp(xi) @ w2c_init`` (the
default ``recon.pose_delta: camera``; ``world`` is the official ``w2c_init @ se3_exp(xi)``, both applied by
:func:`sparseags.cameras.apply_pose_delta`); all inliers are optimised with no gauge anchor, as in the
official code. Outliers (flag 0) keep ``w2c_init``, take no part in the loss and can still be rendered
and scored.

Step numbering: ``step`` counts completed optimisation steps (0-based). The official loop increments its
counter *before* using it, so our step k is official step k + 1, and every schedule below uses k + 1:

* ``step_ratio = (k + 1) / iters``: the loss warm-up weight (official ``step/iters``; it is never 0, so the
  first step is not a no-op) and the resolution schedule;
* xyz learning rate: log-linear from ``lr_position_init`` to ``lr_position_final`` (times
  ``spatial_lr_scale``) at ``t = (k + 1) / iters``;
* active SH degree ``min(sh_degree, (k + 1) // sh_degree_interval)``;
* densification statistics are gathered for ``densify_from <= k + 1 <= densify_until`` and densify/prune
  runs when ``(k + 1) % densify_interval == 0`` (after the optimiser step).

Densification statistics come from the known-view renders' screen-space gradients. The official code
uses the last novel-view (SDS) render, which exists only with the prior; known views are the only
renders every configuration has.

Randomness (initialisation, the xi initial values, view sampling, splitting, and whatever the prior hook
draws) comes from one ``torch.Generator`` seeded with ``cfg.seed``, never from the global RNG, and its
state is part of :meth:`Reconstruction.state_dict`, so an interrupted and resumed run equals an
uninterrupted one exactly.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cameras import apply_pose_delta
from .config import Config
from .gaussians import GaussianModel, look_at_point
from .image_filters import gaussian_blur
from .pose_solver import object_centred_w2c
from .render import RenderOutput, render_gaussians

STATE_VERSION = 1
CAMERA_GROUP = "cameras"
FOCAL_GROUP = "focal"


class ReconError(ValueError):
    """Inputs a reconstruction cannot start from (one line naming the problem)."""


@runtime_checkable
class PriorHook(Protocol):
    """A loss added to the reconstruction objective (e.g. Zero123 SDS on a novel view).

    ``loss`` is called every ``cfg.prior.every_n_steps`` steps, renders what it needs through
    :meth:`Reconstruction.render` and returns an already weighted scalar (or None to skip). It must draw
    random numbers only from `generator` for runs to be reproducible. An optional ``stats() -> dict``
    method is merged into the step event.
    """

    def loss(
        self, recon: "Reconstruction", step: int, step_ratio: float, generator: torch.Generator
    ) -> Tensor | None: ...


def resolution_at(schedule: list, step_ratio: float) -> int:
    """Resolution of the last ``[fraction, resolution]`` entry with ``fraction <= step_ratio``."""
    entries = sorted((float(frac), int(res)) for frac, res in schedule)
    if not entries:
        raise ReconError("recon.resolution_schedule is empty; give [[0.0, resolution], ...]")
    chosen = entries[0][1]
    for frac, res in entries:
        if frac <= step_ratio:
            chosen = res
    return chosen


def resolution_at_value(schedule: list, step_ratio: float) -> float:
    """Value of the last ``[fraction, value]`` entry with ``fraction <= step_ratio`` (0 before the first)."""
    chosen = 0.0
    for frac, value in sorted((float(f), float(v)) for f, v in schedule):
        if frac <= step_ratio:
            chosen = value
    return chosen


def xyz_learning_rate(step: int, iters: int, lr_init: float, lr_final: float) -> float:
    """Official ``get_expon_lr_func`` (no delay): log-linear from lr_init at 0 to lr_final at `iters`.

    A zero end point (e.g. frozen positions) has no logarithm; the interpolation is then linear.
    """
    t = min(max(step / max(iters, 1), 0.0), 1.0)
    if lr_init <= 0.0 or lr_final <= 0.0:
        return lr_init * (1.0 - t) + lr_final * t
    return math.exp(math.log(lr_init) * (1.0 - t) + math.log(lr_final) * t)


def _scale_focal(K: Tensor, scale: Tensor) -> Tensor:
    """K [V, 3, 3] with fx, fy (K[:, 0, 0], K[:, 1, 1]) multiplied by scale [V]; differentiable in scale."""
    out = K.clone()
    out[:, 0, 0] = K[:, 0, 0] * scale.to(K.dtype)
    out[:, 1, 1] = K[:, 1, 1] * scale.to(K.dtype)
    return out


def _resample(images: Tensor, height: int, width: int) -> Tensor:
    """[V, H, W, C] -> [V, height, width, C]: area averaging when shrinking, bilinear when enlarging."""
    if images.shape[1:3] == (height, width):
        return images
    channels_first = images.permute(0, 3, 1, 2)
    if height <= images.shape[1] and width <= images.shape[2]:
        out = F.interpolate(channels_first, size=(height, width), mode="area")
    else:
        out = F.interpolate(channels_first, size=(height, width), mode="bilinear", align_corners=False)
    return out.permute(0, 2, 3, 1).contiguous()


class Reconstruction:
    """One reconstruction run, advanced by :meth:`step` (see the module docstring for conventions).

    Args:
        scene: a :class:`sparseags.scene.Scene` (or an object with ``ids, images, masks, K, w2c_init,
            flags, w2c_gt``).
        cfg: the configuration; ``cfg.recon`` holds every number used here, ``cfg.render.backend`` the
            renderer, ``cfg.seed`` the seed, ``cfg.prior.every_n_steps`` how often the hook runs.
        device: torch device for the parameters and renders.
        flags: [V] override of ``scene.flags`` (1 inlier, 0 outlier).
        w2c_init: [V, 4, 4] override of ``scene.w2c_init`` (e.g. poses from a previous round).
        gaussians: start from a copy of these Gaussians instead of initialising.
        prior_hook: a :class:`PriorHook` or None.
        iters: override of ``cfg.recon.iters``.
        matches: a :class:`sparseags.matches.PairMatches` of the scene's views (or None); its verified
            matches between inlier views feed the epipolar term (``cfg.recon.lambda_epipolar``) and the
            per-view evidence.
    """

    def __init__(
        self,
        scene: Any,
        cfg: Config,
        device: torch.device | str = "cpu",
        flags: Any = None,
        w2c_init: Any = None,
        gaussians: GaussianModel | None = None,
        prior_hook: PriorHook | None = None,
        iters: int | None = None,
        matches: Any = None,
    ):
        self.cfg = cfg
        self.rc = cfg.recon
        self.device = torch.device(device)
        self.backend = cfg.render.backend
        self.iters = int(iters if iters is not None else self.rc.iters)
        if self.iters < 1:
            raise ReconError(f"recon: iters must be >= 1, got {self.iters}")
        self.prior_hook = prior_hook
        self.generator = torch.Generator().manual_seed(int(cfg.seed))

        self.scene = scene  # the input scene as given (read-only here)
        self.ids = list(scene.ids)
        n_views = len(self.ids)
        images = np.asarray(scene.images, dtype=np.float32)
        masks = np.asarray(scene.masks, dtype=np.float32)
        if images.ndim != 4 or images.shape[0] != n_views or images.shape[-1] != 3:
            raise ReconError(f"recon: scene images must be [V={n_views}, H, W, 3], got {list(images.shape)}")
        if masks.shape != images.shape[:3]:
            raise ReconError(f"recon: scene masks {list(masks.shape)} do not match images {list(images.shape[:3])}")
        self.height, self.width = images.shape[1:3]
        white = images * masks[..., None] + (1.0 - masks[..., None])
        self._images = torch.as_tensor(white, device=self.device)  # [V, H, W, 3] white background
        self._masks = torch.as_tensor(masks, device=self.device)  # [V, H, W]
        self._raw_images = images
        self._K = torch.as_tensor(np.asarray(scene.K), dtype=torch.float32, device=self.device)  # [V, 3, 3]
        w2c = np.asarray(
            scene.w2c_init
            if w2c_init is None
            else (w2c_init.detach().cpu().numpy() if isinstance(w2c_init, Tensor) else w2c_init)
        )
        flags_np = np.asarray(scene.flags if flags is None else flags).astype(np.int64).reshape(-1)
        for name, array, shape in (
            ("K", self._K, (n_views, 3, 3)),
            ("w2c_init", w2c, (n_views, 4, 4)),
            ("flags", flags_np, (n_views,)),
        ):
            if tuple(array.shape) != shape:
                raise ReconError(f"recon: {name} must have shape {list(shape)}, got {list(array.shape)}")
        self.w2c_init = torch.as_tensor(w2c, dtype=torch.float32, device=self.device)  # [V, 4, 4]
        self.initial_w2c = self.w2c_init.clone()  # [V, 4, 4] the poses this run started from (the guard's fallback)
        # The point the object-centred pose update turns about: where the initial optical axes meet.
        self.object_centre = look_at_point(self.initial_w2c).float().to(self.device)  # [3]
        gt = getattr(scene, "w2c_gt", None)
        self.w2c_gt = None if gt is None else np.asarray(gt, dtype=np.float64)
        self._set_flags(flags_np)
        self.matches = matches
        self._flat_matches = None if matches is None else matches.flat(device=self.device)

        if gaussians is not None:
            self.gaussians = gaussians.clone().to(self.device)
        else:
            self.gaussians = self._initial_gaussians()
        self.gaussians.set_active_sh_degree(0)
        # Official init randn·1e-6 (drawn even when poses are frozen, so the random stream is the same).
        xi = torch.randn(self.n_inliers, 6, generator=self.generator) * 1e-6
        if not self.rc.optimize_cameras:
            xi.zero_()
        self.xi = nn.Parameter(xi.to(self.device), requires_grad=self.rc.optimize_cameras)  # [I, 6] [rho, phi]
        # Per-inlier log focal scale: fx, fy of view i are multiplied by exp(log_focal[i]) (0 = as given).
        # Translation part of the twist is scaled by recon.camera_translation_scale (its effective Adam step).
        self._twist_scale = torch.tensor([self.rc.camera_translation_scale] * 3 + [1.0] * 3, device=self.device)
        self.log_focal = nn.Parameter(
            torch.zeros(self.n_inliers, device=self.device), requires_grad=self._focal_trainable
        )  # [I]
        # Focal scales set by the pose solver (log, per view), on top of the optimised log_focal.
        self.solved_log_focal = torch.zeros(n_views, device=self.device)  # [V]
        self.optimizer = self._build_optimizer()

        self.step_count = 0
        self.pose_solver = None  # a running sparseags.pose_solver.PoseSolver pass (see recon.solver_steps)
        self.solver_passes: list[dict] = []  # one summary per finished pass
        # Per-view pose evidence over the steps and the guard's rollbacks (see _record_evidence / _guard).
        self.pose_frozen = np.zeros(len(self.ids), dtype=bool)  # views whose pose the guard rolled back
        # Views whose rotation an independent witness fixed (the learned-match rotation averaging): the loop
        # moves only their centres (the twist's rotation part gets no gradient).
        self.rotation_locked = np.zeros(len(self.ids), dtype=bool)
        self.guard_log: list[dict] = []
        self.evidence: dict[str, list] = {"step": [], "rgb": [], "mask": [], "epipolar": [], "match_inliers": []}
        self._epipolar_start = self.view_epipolar_errors()[0]  # [V] at the initial poses (nan: no matches)
        self._pose_error_cache: dict[int, tuple[list, dict]] = {}
        self.history: dict[str, list[float]] = {
            "step": [],
            "rgb": [],
            "mask": [],
            "prior": [],
            "epipolar": [],
            "total": [],
        }
        self.camera_tracks: list[Tensor] = []  # per completed step: [V, 4, 4] float32 (CPU)
        self.last_densify: dict[str, int] | None = None
        self._target_cache: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    # ------------------------------------------------------------------------------------------
    # setup
    # ------------------------------------------------------------------------------------------
    def _set_flags(self, flags: np.ndarray) -> None:
        self.flags = flags.copy()
        self.inlier_indices = np.nonzero(self.flags)[0]
        if len(self.inlier_indices) == 0:
            raise ReconError("recon: no inlier views (every flag is 0)")
        self._inlier_index_t = torch.as_tensor(self.inlier_indices, device=self.device)

    @property
    def n_inliers(self) -> int:
        return len(self.inlier_indices)

    def _initial_gaussians(self) -> GaussianModel:
        rc = self.rc
        if rc.init == "ball":
            return GaussianModel.init_ball(rc.num_pts, rc.init_radius, rc.sh_degree, self.generator, device=self.device)
        sel = self.inlier_indices
        masks = self._masks.cpu().numpy()[sel]
        return GaussianModel.init_visual_hull(
            masks,
            self._raw_images[sel],
            self.w2c_init.cpu().double().numpy()[sel],
            self._K.cpu().double().numpy()[sel],
            rc.num_pts,
            rc.sh_degree,
            self.generator,
            grid=rc.hull_grid,
            fallback_radius=rc.init_radius,
            device=self.device,
        )

    @property
    def _focal_trainable(self) -> bool:
        """Focal scales are optimised (by the photometric terms through :meth:`_focal_viewmats`, and by the
        epipolar term when it is on) when cameras are and ``lr_focal > 0``."""
        return bool(self.rc.optimize_cameras and self.rc.lr_focal > 0.0)

    def focal_scale(self) -> Tensor:
        """[V] current focal scale per view: exp(log_focal) for inliers, 1 for outliers (differentiable)."""
        ones = torch.ones(len(self.ids), device=self.device)
        return ones.index_copy(0, self._inlier_index_t, torch.exp(self.log_focal)) * torch.exp(self.solved_log_focal)

    def _focal_viewmats(self, w2c: Tensor, views: Tensor) -> Tensor:
        """w2c [C, 4, 4] of `views` [C] with rows 0 and 1 scaled by the focal scale: the renderers have no
        gradient w.r.t. K, but ``diag(s, s, 1, 1) @ w2c`` with K projects every point exactly as K with fx, fy
        scaled by s (and the EWA covariance too), so the focal scale gets its gradient through the w2c
        gradient. The SH view direction uses ``-Rᵀ t`` of the scaled matrix, which moves the centre by
        (s² - 1) of its lateral offset from the optical axis through the origin: negligible for centred objects."""
        if not self._focal_trainable and not bool(self.solved_log_focal.any()):
            return w2c
        scale = self.focal_scale()[views]  # [C]
        ones = torch.ones_like(scale)
        return torch.diag_embed(torch.stack([scale, scale, ones, ones], dim=-1)) @ w2c  # [C, 4, 4]

    def current_K(self, K: Tensor) -> Tensor:
        """[V, 3, 3] intrinsics `K` (any resolution) with the focal lengths scaled by :meth:`focal_scale`."""
        return _scale_focal(K, self.focal_scale())

    def _build_optimizer(self) -> torch.optim.Adam:
        """One Adam(eps=1e-15) with the official groups; the xyz lr is set every step."""
        rc, splats = self.rc, self.gaussians.splats
        groups = [
            {"params": [splats["means"]], "lr": rc.lr_position_init * rc.spatial_lr_scale, "name": "means"},
            {"params": [splats["sh0"]], "lr": rc.lr_sh_dc, "name": "sh0"},
            {"params": [splats["shN"]], "lr": rc.lr_sh_rest, "name": "shN"},
            {"params": [splats["opacity_logits"]], "lr": rc.lr_opacity, "name": "opacity_logits"},
            {"params": [splats["log_scales"]], "lr": rc.lr_scaling, "name": "log_scales"},
            {"params": [splats["quats"]], "lr": rc.lr_rotation, "name": "quats"},
        ]
        if rc.optimize_cameras:
            groups.append({"params": [self.xi], "lr": rc.lr_camera, "name": CAMERA_GROUP})
        if self._focal_trainable:
            groups.append({"params": [self.log_focal], "lr": rc.lr_focal, "name": FOCAL_GROUP})
        return torch.optim.Adam(groups, lr=0.0, eps=1e-15)

    # ------------------------------------------------------------------------------------------
    # poses and rendering
    # ------------------------------------------------------------------------------------------
    def current_w2c(self) -> Tensor:
        """[V, 4, 4] current poses: for inliers ``se3_exp(xi) @ w2c_init`` (``recon.pose_delta: camera``, the
        default) or ``w2c_init @ se3_exp(xi)`` (``world``, official), for outliers ``w2c_init``.

        Differentiable w.r.t. ``xi``.
        """
        xi = self.xi * self._twist_scale  # [I, 6]
        start = self.w2c_init[self._inlier_index_t]  # [I, 4, 4]
        if self.rc.pose_delta == "object":
            # rho (units of the camera's distance to the object centre) shifts the centre in the camera
            # frame, phi turns the camera about the object centre: an orbit is one coordinate.
            inlier_w2c = object_centred_w2c(start, xi[:, 3:], xi[:, :3], self.object_centre)
        else:
            inlier_w2c = apply_pose_delta(start, xi, side=self.rc.pose_delta)  # [I, 4, 4]
        return self.w2c_init.index_copy(0, self._inlier_index_t, inlier_w2c)

    def set_view_pose(self, index: int, w2c: Any) -> None:
        """Place view `index` at `w2c` [4, 4] (OpenCV): it becomes its new ``w2c_init``.

        For an inlier its twist is reset to 0 together with its Adam moments, so the next steps
        refine from the new pose.
        """
        if not 0 <= index < len(self.ids):
            raise ReconError(f"recon: view index {index} out of range 0..{len(self.ids) - 1}")
        w2c = torch.as_tensor(
            np.asarray(w2c.detach().cpu() if isinstance(w2c, Tensor) else w2c), dtype=torch.float32, device=self.device
        )
        if w2c.shape != (4, 4):
            raise ReconError(f"recon: set_view_pose expects a [4, 4] matrix, got {list(w2c.shape)}")
        with torch.no_grad():
            self.w2c_init[index] = w2c
            rows = np.nonzero(self.inlier_indices == index)[0]
            if len(rows):
                row = int(rows[0])
                self.xi[row] = 0.0
                state = self.optimizer.state.get(self.xi, {})
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in state:
                        state[key][row] = 0.0

    def render(self, w2c: Tensor, K: Tensor, width: int, height: int, background: Tensor | None = None) -> RenderOutput:
        """Render the current Gaussians: w2c [C, 4, 4] OpenCV, K [C, 3, 3] pixels; differentiable."""
        g = self.gaussians
        return render_gaussians(
            g.means,
            g.splats["quats"],
            g.scales,
            g.opacities,
            g.sh,
            w2c.to(self.device, torch.float32),
            K.to(self.device, torch.float32),
            width,
            height,
            sh_degree=g.active_sh_degree,
            background=background,
            backend=self.backend,
        )

    def _size_at(self, resolution: int) -> tuple[int, int]:
        """(height, width) for a target resolution = the width in pixels (scene images are square)."""
        return max(1, round(self.height * resolution / self.width)), int(resolution)

    def targets_at(self, resolution: int) -> tuple[Tensor, Tensor, Tensor]:
        """White-background images [V, h, w, 3], masks [V, h, w] and K [V, 3, 3] at `resolution`."""
        if resolution not in self._target_cache:
            height, width = self._size_at(resolution)
            images = _resample(self._images, height, width)
            masks = _resample(self._masks[..., None], height, width)[..., 0]
            K = self._K.clone()
            K[:, 0, :] *= width / self.width
            K[:, 1, :] *= height / self.height
            self._target_cache[resolution] = (images, masks, K)
        return self._target_cache[resolution]

    @torch.no_grad()
    def render_views(self, resolution: int | None = None, white_background: bool = True) -> tuple[Tensor, Tensor]:
        """All V views (outliers too) at the current poses: rgb [V, h, w, 3], alpha [V, h, w].

        `resolution` defaults to the scene's.
        """
        resolution = self.width if resolution is None else int(resolution)
        height, width = self._size_at(resolution)
        _, _, K = self.targets_at(resolution)
        background = torch.ones(3, device=self.device) if white_background else None
        all_views = torch.arange(len(self.ids), device=self.device)
        out = self.render(self._focal_viewmats(self.current_w2c(), all_views), K, width, height, background)
        return out.rgb, out.alpha[..., 0]

    # ------------------------------------------------------------------------------------------
    # optimisation
    # ------------------------------------------------------------------------------------------
    @property
    def step_ratio(self) -> float:
        """(k + 1) / iters for the next step k (the official 1-based ratio)."""
        return min(1.0, (self.step_count + 1) / self.iters)

    @property
    def done(self) -> bool:
        return self.step_count >= self.iters

    def current_resolution(self) -> int:
        return resolution_at(self.rc.resolution_schedule, self.step_ratio)

    def step(self, budget: int = 1) -> dict:
        """Run up to `budget` optimisation steps; returns the event of the last one.

        Event keys: step (completed steps), iters, loss, loss_rgb, loss_mask, loss_prior, n_gaussians,
        ms_per_step (mean over the steps run now), sh_degree, resolution, done, densify (counts when a
        densification ran in this call, else None), plus the prior hook's stats.
        """
        event: dict = {}
        durations = []
        densify = None
        for _ in range(max(0, int(budget))):
            if self.done:
                break
            if self.pose_solver is None and self._solver_due():
                self._start_solver_pass()
            if self.pose_solver is not None:
                # One LM iteration of every inlier view counts as one unit of the budget.
                solver_event = self._solver_iteration()
                event = {**event, **solver_event} if event else dict(solver_event)
                continue
            start = time.perf_counter()
            event = self._one_step()
            durations.append(time.perf_counter() - start)
            densify = event.pop("densify") or densify
        if not event:
            last = {key: values[-1] for key, values in self.history.items()} if self.history["step"] else {}
            event = {
                "loss": last.get("total", float("nan")),
                "loss_rgb": last.get("rgb", float("nan")),
                "loss_mask": last.get("mask", float("nan")),
                "loss_prior": last.get("prior", float("nan")),
                "sh_degree": self.gaussians.active_sh_degree,
                "resolution": self.current_resolution(),
            }
        event.update(
            {
                "step": self.step_count,
                "iters": self.iters,
                "n_gaussians": self.gaussians.num_gaussians,
                "ms_per_step": 1000.0 * float(np.mean(durations)) if durations else 0.0,
                "done": self.done,
                "densify": densify,
            }
        )
        return event

    # ------------------------------------------------------------------------------------------
    # pose-solver passes (recon.solver_steps)
    # ------------------------------------------------------------------------------------------
    def _solver_due(self) -> bool:
        steps = sorted(int(k) for k in self.rc.solver_steps)
        done = len(self.solver_passes)
        return self.rc.optimize_cameras and done < len(steps) and self.step_count >= steps[done]

    def _solver_views(self) -> np.ndarray:
        """Inlier view indices the solver moves (views the guard froze keep their pose)."""
        return np.array([i for i in self.inlier_indices if not self.pose_frozen[i]], dtype=np.int64)

    def _start_solver_pass(self, state: dict | None = None) -> None:
        """Freeze the current Gaussians and set up a PoseSolver of the inlier views at the current
        resolution (levels above it are dropped: they would ask more detail than the model has)."""
        from .pose_solver import Level, PoseSolver, detached_render_fn, settings_from_config

        resolution = self.current_resolution()
        images, masks, K = self.targets_at(resolution)
        views = torch.as_tensor(self._solver_views(), device=self.device)
        settings = settings_from_config(self.cfg)
        levels = tuple(level for level in settings.levels if level.size < resolution) + (
            Level(resolution, settings.levels[-1].sigma, settings.levels[-1].iters),
        )
        settings.levels = levels
        render = detached_render_fn(self.gaussians.detached(), backend=self.backend, device=self.device)

        with torch.no_grad():
            w2c = self.current_w2c()[views].detach()
            K_now = self.current_K(K)[views].detach()
        self.pose_solver = PoseSolver(render, images[views], masks[views], w2c, K_now, self.object_centre, settings)
        self._solver_view_index = views
        if state is not None:
            self.pose_solver.load_state_dict(state)

    def _solver_iteration(self) -> dict:
        solver = self.pose_solver
        event = solver.step()
        if solver.done:
            self._finish_solver_pass()
        return {"solver_level": event["level"], "solver_iteration": event["iteration"], "solver_done": event["done"]}

    def _finish_solver_pass(self) -> None:
        """Move the views to the solved poses and focals (each becomes the view's new start: twist and
        Adam moments reset)."""
        solver, views = self.pose_solver, self._solver_view_index
        w2c, _ = solver.current()
        log_scale = torch.log(solver.focal_scale()).to(self.device)
        for row, index in enumerate(views.tolist()):
            self.set_view_pose(index, w2c[row])
        with torch.no_grad():
            self.solved_log_focal[views] += log_scale
        snap = solver.snapshot()
        self.solver_passes.append(
            {
                "step": self.step_count,
                "views": views.tolist(),
                "cost_start": [float(v) for v in snap["initial_cost"]],
                "cost_end": [float(v) for v in snap["cost"]],
                "accepted": [int(v) for v in snap["accepted"]],
                "focal_scale": [float(v) for v in snap["focal_scale"]],
            }
        )
        self.pose_solver = None

    def _sample_views(self) -> Tensor:
        """Inlier view indices rendered this step: all, or `views_per_step` drawn by the generator."""
        count = self.rc.views_per_step
        if count <= 0 or count >= self.n_inliers:
            return self._inlier_index_t
        pick = torch.randperm(self.n_inliers, generator=self.generator)[:count].sort().values
        return self._inlier_index_t[pick.to(self.device)]

    def _inlier_match_mask(self) -> Tensor | None:
        """[M] bool: the verified matches whose two views are both inliers now (None without matches)."""
        flat = self._flat_matches
        if flat is None or flat.num_matches == 0:
            return None
        inlier = torch.as_tensor(self.flags.astype(bool), device=self.device)  # [V]
        keep = inlier[flat.view_i] & inlier[flat.view_j]
        return keep if bool(keep.any()) else None

    def match_errors(self, w2c: Tensor | None = None) -> Tensor | None:
        """[M] Sampson errors (pixels of the scene image) of every verified match at `w2c` [V, 4, 4]
        (default: the current poses; differentiable in xi); None without matches."""
        from .matches import match_errors_px

        flat = self._flat_matches
        if flat is None or flat.num_matches == 0:
            return None
        w2c = self.current_w2c() if w2c is None else w2c
        return match_errors_px(flat, self.current_K(self._K), w2c)

    @torch.no_grad()
    def view_epipolar_errors(self, w2c: Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per view: median Sampson error [V] (pixels; nan where the view has no match with an inlier view)
        and the number of its matches within 2 x ``epipolar_scale_px`` [V], at `w2c` (default: now)."""
        n_views = len(self.ids)
        medians, inliers = np.full(n_views, np.nan), np.zeros(n_views, dtype=np.int64)
        keep = self._inlier_match_mask()
        if keep is None:
            return medians, inliers
        errors = self.match_errors(w2c)
        flat = self._flat_matches
        threshold = 2.0 * self.rc.epipolar_scale_px
        for view in range(n_views):
            mine = keep & ((flat.view_i == view) | (flat.view_j == view))
            if bool(mine.any()):
                medians[view] = float(errors[mine].median())
                inliers[view] = int((errors[mine] < threshold).sum())
        return medians, inliers

    @torch.no_grad()
    def view_epipolar_consistency(self, w2c: Tensor | None = None, min_matches: int = 8) -> np.ndarray:
        """Per view [V]: the smallest, over the inlier views it shares at least `min_matches` verified matches
        with, of the median Sampson error (pixels) of those matches at `w2c` (default: now); nan without such a
        partner. An inlier needs one consistent partner to score low, so a wrong neighbour does not make it
        look wrong; a view whose pose is wrong disagrees with every partner."""
        n_views = len(self.ids)
        best = np.full(n_views, np.nan)
        keep = self._inlier_match_mask()
        if keep is None:
            return best
        errors = self.match_errors(w2c)
        flat = self._flat_matches
        for pair in torch.unique(flat.pair[keep]).tolist():
            mine = keep & (flat.pair == pair)
            if int(mine.sum()) < min_matches:
                continue
            median = float(errors[mine].median())
            for view in (int(flat.view_i[mine][0]), int(flat.view_j[mine][0])):
                best[view] = median if np.isnan(best[view]) else min(best[view], median)
        return best

    @torch.no_grad()
    def _record_evidence(self, views: Tensor, mse_rgb: Tensor, mse_mask: Tensor) -> None:
        """Append the per-view evidence of this step: RGB and mask MSE of the views rendered in it (nan for the
        others), epipolar median and match inliers of every view."""
        n_views = len(self.ids)
        rgb, mask = np.full(n_views, np.nan), np.full(n_views, np.nan)
        rows = views.cpu().numpy()
        rgb[rows], mask[rows] = mse_rgb.cpu().numpy(), mse_mask.cpu().numpy()
        epipolar, match_inliers = self.view_epipolar_errors()
        self.evidence["step"].append(self.step_count)
        for key, value in (("rgb", rgb), ("mask", mask), ("epipolar", epipolar), ("match_inliers", match_inliers)):
            self.evidence[key].append(value.tolist())

    @torch.no_grad()
    def _guard(self) -> None:
        """Roll back every inlier view whose epipolar evidence now contradicts its refined pose.

        A view with at least ``guard_min_matches`` matches is contradicted when its median Sampson error
        exceeds ``max(guard_ratio x start, start + guard_margin_px)``. Its pose is reset to its initial pose
        carried into the current frame (the similarity that maps the initial camera centres of the other
        inliers onto their current centres), with the initial focal, and frozen from then on. The reason goes
        to :attr:`guard_log` (and from there to metrics.json and the snapshot).
        """
        rc = self.rc
        epipolar = np.asarray(self.evidence["epipolar"][-1], dtype=np.float64)
        counts = np.asarray(self.evidence["match_inliers"][-1])
        start = self._epipolar_start
        limit = np.maximum(rc.guard_ratio * start, start + rc.guard_margin_px)
        flat = self._flat_matches
        for view in self.inlier_indices:
            if self.pose_frozen[view] or not np.isfinite(epipolar[view]) or not np.isfinite(start[view]):
                continue
            n_matches = 0 if flat is None else int(((flat.view_i == view) | (flat.view_j == view)).sum())
            if n_matches < rc.guard_min_matches or epipolar[view] <= limit[view]:
                continue
            self._roll_back(int(view))
            self.guard_log.append(
                {
                    "view": self.ids[view],
                    "step": self.step_count,
                    "action": "rolled back to its initial pose",
                    "reason": (
                        f"epipolar median {epipolar[view]:.2f} px > limit {limit[view]:.2f} px "
                        f"(start {start[view]:.2f} px, {int(counts[view])} of {n_matches} matches within "
                        f"{2 * rc.epipolar_scale_px:g} px)"
                    ),
                }
            )

    def _roll_back(self, view: int) -> None:
        """Reset inlier `view` to its initial pose, expressed in the current frame, and freeze it."""
        from .cameras import camera_centers, umeyama

        current = self.current_w2c().detach().double()  # [V, 4, 4]
        start = self.initial_w2c.double()  # [V, 4, 4]
        others = [int(i) for i in self.inlier_indices if i != view and not self.pose_frozen[i]]
        w2c = start[view].clone()
        if len(others) >= 3:
            # X_now = s R X_start + t maps the start frame onto the current one (camera centres of the others).
            s, R, t = umeyama(camera_centers(start[others]), camera_centers(current[others]), with_scale=True)
            # A camera [Q | q] of the start frame sees X_start = (R^T (X_now - t)) / s; in the current frame its
            # rotation is Q R^T and its translation (q - Q R^T t / s) scaled by s (depth scale changes no pixel).
            Q, q = start[view, :3, :3], start[view, :3, 3]
            w2c[:3, :3] = Q @ R.T
            w2c[:3, 3] = s * q - Q @ R.T @ t
        self.set_view_pose(view, w2c.float())
        rows = np.nonzero(self.inlier_indices == view)[0]
        if len(rows):
            self.log_focal.data[int(rows[0])] = 0.0
        self.pose_frozen[view] = True

    def _epipolar_loss(self) -> Tensor | None:
        """``lambda_epipolar`` x mean robust epipolar cost of the matches between inlier views, or None."""
        from .matches import robust_epipolar_loss

        rc = self.rc
        if rc.lambda_epipolar <= 0.0 or not rc.optimize_cameras:
            return None
        keep = self._inlier_match_mask()
        if keep is None:
            return None
        errors = self.match_errors()[keep]  # [M']
        return rc.lambda_epipolar * robust_epipolar_loss(errors, rc.epipolar_scale_px, rc.epipolar_kind).mean()

    def _one_step(self) -> dict:
        rc = self.rc
        k = self.step_count
        official_step = k + 1
        step_ratio = self.step_ratio
        self.optimizer.param_groups[0]["lr"] = xyz_learning_rate(
            official_step,
            self.iters,
            rc.lr_position_init * rc.spatial_lr_scale,
            rc.lr_position_final * rc.spatial_lr_scale,
        )
        self.gaussians.set_active_sh_degree(official_step // max(1, rc.sh_degree_interval))
        for group in self.optimizer.param_groups:
            if group.get("name") == CAMERA_GROUP:
                # Poses stay fixed until the Gaussians explain the images roughly (0 = official: from step 1).
                group["lr"] = rc.lr_camera if official_step > rc.camera_start_step else 0.0
            elif group.get("name") == FOCAL_GROUP:
                group["lr"] = rc.lr_focal if official_step > rc.camera_start_step else 0.0

        resolution = self.current_resolution()
        height, width = self._size_at(resolution)
        images, masks, K = self.targets_at(resolution)
        views = self._sample_views()
        w2c = self.current_w2c()[views]
        out = self.render(self._focal_viewmats(w2c, views), K[views], width, height, torch.ones(3, device=self.device))
        weight = step_ratio if rc.loss_warmup else 1.0
        # Coarse to fine: render and target blurred alike (pixels of the current resolution). A sharp model
        # against a sharp photo gives a pose basin of a few pixels; blurring both widens it without letting
        # the Gaussians turn into a blur themselves.
        sigma = float(resolution_at_value(rc.blur_schedule, step_ratio)) if rc.blur_schedule else 0.0
        rendered = torch.cat([out.rgb, out.alpha], dim=-1)  # [C, h, w, 4]
        wanted = torch.cat([images[views], masks[views][..., None]], dim=-1)  # [C, h, w, 4]
        if sigma > 0.0:
            rendered, wanted = gaussian_blur(rendered, sigma), gaussian_blur(wanted, sigma)
        mse_rgb = ((rendered[..., :3] - wanted[..., :3]) ** 2).mean(dim=(1, 2, 3))  # [C]
        mse_mask = ((rendered[..., 3] - wanted[..., 3]) ** 2).mean(dim=(1, 2))  # [C]
        loss_rgb = rc.lambda_rgb * weight * mse_rgb.sum()
        loss_mask = rc.lambda_mask * weight * mse_mask.sum()
        loss = loss_rgb + loss_mask
        loss_epipolar = self._epipolar_loss()
        if loss_epipolar is not None:
            loss = loss + loss_epipolar

        loss_prior = torch.zeros((), device=self.device)
        hook_stats: dict = {}
        every = max(1, int(self.cfg.prior.every_n_steps))
        if self.prior_hook is not None and k % every == 0:
            prior = self.prior_hook.loss(self, k, step_ratio, self.generator)
            if prior is not None:
                loss_prior = prior
                loss = loss + prior
            stats = getattr(self.prior_hook, "stats", None)
            if callable(stats):
                hook_stats = dict(stats())

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.pose_frozen.any() and self.xi.grad is not None:
            # Views the guard rolled back keep their restored pose (no further pose or focal updates).
            frozen_rows = torch.as_tensor(self.pose_frozen[self.inlier_indices], device=self.device)
            self.xi.grad[frozen_rows] = 0.0
            if self.log_focal.grad is not None:
                self.log_focal.grad[frozen_rows] = 0.0
        if self.rotation_locked.any() and self.xi.grad is not None:
            locked_rows = torch.as_tensor(self.rotation_locked[self.inlier_indices], device=self.device)
            self.xi.grad[locked_rows, 3:] = 0.0
        in_window = rc.densify_from <= official_step <= rc.densify_until
        if in_window and out.means2d.grad is not None:
            self.gaussians.add_densification_stats(out.means2d.grad, out.visible, width, height)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

        densify = None
        if in_window and official_step % max(1, rc.densify_interval) == 0:
            densify = self.gaussians.densify_and_prune(
                self.optimizer,
                self.generator,
                grad_threshold=rc.densify_grad_threshold,
                percent_dense=rc.percent_dense,
                extent=rc.densify_extent,
                min_opacity=rc.prune_min_opacity,
                max_scale=rc.prune_max_scale,
                max_gaussians=rc.max_gaussians,
            )
            densify["step"] = official_step
            self.last_densify = densify

        self.step_count += 1
        every = int(rc.evidence_every)  # 0 = no evidence (and no guard)
        if every > 0 and (self.step_count % every == 0 or self.done):
            self._record_evidence(views, mse_rgb.detach(), mse_mask.detach())
            if rc.guard and rc.optimize_cameras:
                self._guard()
        if self.done:
            pruned = self.gaussians.prune(self.optimizer, rc.prune_min_opacity, rc.final_prune_max_scale)
            densify = {**(densify or {}), "n_final_pruned": pruned, "n_after": self.gaussians.num_gaussians}
        with torch.no_grad():
            self.camera_tracks.append(self.current_w2c().detach().cpu())
        record = {
            "rgb": loss_rgb.item(),
            "mask": loss_mask.item(),
            "prior": float(loss_prior.detach()),
            "epipolar": 0.0 if loss_epipolar is None else loss_epipolar.item(),
            "total": loss.item(),
        }
        self.history["step"].append(float(self.step_count))
        for key, value in record.items():
            self.history[key].append(value)
        return {
            "loss": record["total"],
            "loss_rgb": record["rgb"],
            "loss_mask": record["mask"],
            "loss_prior": record["prior"],
            "loss_epipolar": record["epipolar"],
            "sh_degree": self.gaussians.active_sh_degree,
            "resolution": resolution,
            "densify": densify,
            **hook_stats,
        }

    # ------------------------------------------------------------------------------------------
    # display
    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def snapshot(self, resolution: int | None = None, with_renders: bool = True) -> dict:
        """Plain numpy / python data for display.

        `resolution` defaults to the current training resolution (cheap while the run is live). Per-view
        lists cover every view (outliers included): ``mse`` = MSE of the white-background render against
        the white-background target, ``mse_mask`` = MSE(alpha, mask), and the weighted ``loss_rgb`` /
        ``loss_mask`` terms as the current step would weight them. Without `with_renders` (the evidence
        panel needs none) nothing is rendered and those five entries are None.
        """
        resolution = self.current_resolution() if resolution is None else int(resolution)
        images, masks, _ = self.targets_at(resolution)
        if with_renders:
            rgb, alpha = self.render_views(resolution)
            mse = ((rgb - images) ** 2).mean(dim=(1, 2, 3))
            mse_mask = ((alpha - masks) ** 2).mean(dim=(1, 2))
        weight = self.step_ratio if self.rc.loss_warmup else 1.0
        tracks = torch.stack(self.camera_tracks).numpy() if self.camera_tracks else None
        return {
            "step": self.step_count,
            "iters": self.iters,
            "done": self.done,
            "ids": list(self.ids),
            "flags": self.flags.copy(),
            "resolution": resolution,
            "targets": images.cpu().numpy(),
            "masks": masks.cpu().numpy(),
            "renders": rgb.clamp(0.0, 1.0).cpu().numpy() if with_renders else None,
            "alphas": alpha.cpu().numpy() if with_renders else None,
            "mse": mse.cpu().tolist() if with_renders else None,
            "mse_mask": mse_mask.cpu().tolist() if with_renders else None,
            "loss_rgb": (self.rc.lambda_rgb * weight * mse).cpu().tolist() if with_renders else None,
            "loss_mask": (self.rc.lambda_mask * weight * mse_mask).cpu().tolist() if with_renders else None,
            "w2c": self.current_w2c().double().cpu().numpy(),
            "w2c_init": self.w2c_init.double().cpu().numpy(),
            "w2c_gt": None if self.w2c_gt is None else self.w2c_gt.copy(),
            "n_gaussians": self.gaussians.num_gaussians,
            "sh_degree": self.gaussians.active_sh_degree,
            "last_densify": None if self.last_densify is None else dict(self.last_densify),
            "history": {key: list(values) for key, values in self.history.items()},
            "camera_tracks": tracks,
            "focal_scale": self.focal_scale().detach().cpu().numpy(),
            "evidence": copy.deepcopy(self.evidence),
            "epipolar_start": self._epipolar_start.copy(),
            "guard_log": copy.deepcopy(self.guard_log),
            "pose_frozen": self.pose_frozen.copy(),
            "pose_error": self.pose_error_curve(),
        }

    def track_centres(self, max_points: int = 200) -> np.ndarray:
        """Camera centres over the steps, ``[T, V, 3]`` float64 (T <= max_points): the poses the run started
        from, then :attr:`camera_tracks`, evenly subsampled with the last step kept."""
        tracks = [self.initial_w2c.detach().cpu()] + self.camera_tracks
        count = min(len(tracks), max(2, int(max_points)))
        indices = np.unique(np.linspace(0, len(tracks) - 1, count).round().astype(int))
        w2c = torch.stack([tracks[int(i)] for i in indices]).double().numpy()  # [T, V, 4, 4]
        rotation, translation = w2c[..., :3, :3], w2c[..., :3, 3]
        return -np.einsum("tvji,tvj->tvi", rotation, translation)  # -R^T t

    def pose_error_curve(self, every: int = 5, max_points: int = 30) -> dict | None:
        """Per-view rotation error (deg, after the best global rotation) and Rot@5 / Rot@15 / CC@0.1 against
        ground truth every `every` steps of :attr:`camera_tracks`, or sparser so that at most about
        `max_points` steps are measured (None without GT). Each point costs ~30 ms (global alignments), and a
        finished 500-step reconstruction opened in the debugger would otherwise wait seconds for its curve."""
        from .metrics import per_view_rotation_error_deg, pose_metrics

        if self.w2c_gt is None:
            return None
        tracks = [self.initial_w2c.detach().cpu()] + self.camera_tracks
        every = max(1, int(every), math.ceil(len(tracks) / max(1, int(max_points))))
        steps = list(range(0, len(tracks), every))
        if steps[-1] != len(tracks) - 1:
            steps.append(len(tracks) - 1)
        per_view, summary = [], []
        cache = self._pose_error_cache  # step -> (per-view errors, metrics)
        for k in steps:
            if k not in cache:  # a recorded track never changes: compute each step once (snapshots are frequent)
                w2c = tracks[k].double()
                errors = per_view_rotation_error_deg(w2c, self.w2c_gt)
                cache[k] = (errors.tolist(), pose_metrics(w2c, self.w2c_gt, per_view_errors=errors))
            per_view.append(cache[k][0])
            summary.append(cache[k][1])
        return {
            "step": steps,
            "rot_err_deg": per_view,
            "rot5": [m["rot5"] for m in summary],
            "rot15": [m["rot15"] for m in summary],
            "cc10": [m["cc10"] for m in summary],
        }

    # ------------------------------------------------------------------------------------------
    # checkpoint
    # ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: Gaussians (any size), xi, Adam, step, RNG, history."""
        return {
            "version": STATE_VERSION,
            "ids": list(self.ids),
            "iters": self.iters,
            "step": self.step_count,
            "flags": self.flags.copy(),
            "w2c_init": self.w2c_init.detach().cpu().clone(),
            "gaussians": {k: v.cpu() for k, v in self.gaussians.tensors().items()},
            "active_sh_degree": self.gaussians.active_sh_degree,
            "xi": self.xi.detach().cpu().clone(),
            "log_focal": self.log_focal.detach().cpu().clone(),
            "initial_w2c": self.initial_w2c.detach().cpu().clone(),
            "pose_frozen": self.pose_frozen.copy(),
            "guard_log": copy.deepcopy(self.guard_log),
            "evidence": copy.deepcopy(self.evidence),
            "epipolar_start": self._epipolar_start.copy(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "generator": self.generator.get_state(),
            "history": {key: list(values) for key, values in self.history.items()},
            "camera_tracks": [t.clone() for t in self.camera_tracks],
            "last_densify": None if self.last_densify is None else dict(self.last_densify),
            # The prior's own state (e.g. its principal-point pool), so that a resumed run is exact.
            "prior_hook": self.prior_hook.state_dict() if hasattr(self.prior_hook, "state_dict") else None,
            "solved_log_focal": self.solved_log_focal.detach().cpu().clone(),
            "rotation_locked": self.rotation_locked.copy(),
            "solver_passes": copy.deepcopy(self.solver_passes),
            "pose_solver": None if self.pose_solver is None else self.pose_solver.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` taken from a run on the same scene and configuration.

        ``self.gaussians``, ``self.xi`` and ``self.optimizer`` are replaced by new objects.
        """
        if state.get("version") != STATE_VERSION:
            raise ReconError(f"recon: checkpoint version {state.get('version')!r}, expected {STATE_VERSION}")
        if list(state["ids"]) != self.ids:
            raise ReconError("recon: checkpoint views do not match the scene's view ids")
        self.iters = int(state["iters"])
        self.step_count = int(state["step"])
        self._set_flags(np.asarray(state["flags"], dtype=np.int64))
        self.w2c_init = state["w2c_init"].to(self.device, torch.float32).clone()
        self.gaussians = GaussianModel.from_tensors(state["gaussians"], state["active_sh_degree"], device=self.device)
        self.xi = nn.Parameter(state["xi"].to(self.device).clone(), requires_grad=self.rc.optimize_cameras)
        log_focal = state.get("log_focal")
        if log_focal is None:
            log_focal = torch.zeros(self.n_inliers)
        self.log_focal = nn.Parameter(log_focal.to(self.device).clone(), requires_grad=self._focal_trainable)
        if "initial_w2c" in state:
            self.initial_w2c = state["initial_w2c"].to(self.device, torch.float32).clone()
            self.object_centre = look_at_point(self.initial_w2c).float().to(self.device)
            self.pose_frozen = np.asarray(state["pose_frozen"], dtype=bool).copy()
            self.guard_log = copy.deepcopy(state["guard_log"])
            self.evidence = copy.deepcopy(state["evidence"])
            self._epipolar_start = np.asarray(state["epipolar_start"], dtype=np.float64).copy()
        self.optimizer = self._build_optimizer()
        if state["optimizer"] is not None:  # None: a finished run's compact final state (no more steps)
            self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.history = {key: list(values) for key, values in state["history"].items()}
        self.history.setdefault("epipolar", [0.0] * len(self.history["step"]))  # states from before the term
        self.camera_tracks = [t.clone() for t in state["camera_tracks"]]
        self._pose_error_cache = {}
        self.last_densify = state["last_densify"]
        self.solved_log_focal = state.get("solved_log_focal", torch.zeros(len(self.ids))).to(self.device).clone()
        self.solver_passes = copy.deepcopy(state.get("solver_passes", []))
        self.rotation_locked = np.asarray(
            state.get("rotation_locked", np.zeros(len(self.ids), bool)), dtype=bool
        ).copy()
        self.pose_solver = None
        if state.get("pose_solver") is not None:  # a pass in progress: same frozen Gaussians and starting poses
            self._start_solver_pass(state["pose_solver"])
        if state.get("prior_hook") is not None and hasattr(self.prior_hook, "load_state_dict"):
            self.prior_hook.load_state_dict(state["prior_hook"])
