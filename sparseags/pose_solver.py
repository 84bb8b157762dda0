"""The pose solver: an object-centred camera parametrisation and a damped Gauss-Newton (Levenberg-Marquardt)
refinement of every view against a fixed set of Gaussians, coarse to fine with unbiased coarse levels.

Why object-centred (docs/BENCHMARKS.md, "Pose solver"): in an object-centric capture the dominant pose
error is an *orbit*, a rotation of the camera about the object. In the camera-frame twist
``exp(xi) @ w2c`` an orbit is a rotation about the camera centre *plus* a coupled sideways translation, a
low-curvature diagonal that per-coordinate steps (Adam) hardly move along. Here a pose is

    R = exp(omega) @ R0,      t = (R0 c + t0) + d0 * rho - R c

with ``c`` the object centre (world), ``d0 = |R0 c + t0|`` the initial distance to it, ``omega`` (3, radians,
camera axes) a rotation about the object centre and ``rho`` (3, in units of ``d0``) a translation of the
object centre in the camera frame. An orbit is then a pure ``omega``, a sideways shift a pure
``rho_xy`` and a dolly a pure ``rho_z``; all seven coordinates (with the log focal scale) move the image
by about ``f * value`` pixels, so one damping and one step bound fit all.

Focal length: ``f = f0 * exp(b * tanh(u / b))``, a log scale bounded by ``±b`` (``focal_bound``), with a
quadratic prior ``focal_prior * u²`` that pulls it towards the initial value (the photometric cost alone
trades focal against ``rho_z`` and drifts).

Coarse levels: a model trained at full resolution and rendered directly at 64 px is aliased (its small
Gaussians grow by the renderer's 0.3 px² low-pass and brighten), which biases a coarse pose minimum by
degrees. Every level therefore renders at the model's native resolution and area-averages down
(:func:`render_antialiased`), then blurs render and target alike.

Jacobians are forward finite differences of the rendered residual. The renderer's hard cut-offs (3σ,
alpha < 1/255, T < 1e-4) make a finite-difference Jacobian longer than the analytic gradient (1.5-1.8x on
the bench), so steps are damped (Marquardt's ``diag(JᵀJ)``), bounded by a trust radius, and accepted only
when they lower the cost.

:class:`PoseSolver` is steppable: ``step()`` runs one LM iteration for every view (one batched render of
the Jacobian columns of the views whose pose changed, one of the trial poses), and ``snapshot()`` reports
per-view cost, damping, trust radius and the pose trajectory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .cameras import so3_exp

# render_fn(w2c [C, 4, 4], K [C, 3, 3], width, height) -> (rgb [C, H, W, 3] white background, alpha [C, H, W])
RenderFn = Callable[[Tensor, Tensor, int, int], tuple[Tensor, Tensor]]

N_PARAMS = 7  # omega (3), rho (3), focal u (1)


# ----------------------------------------------------------------------------------------------
# parametrisation
# ----------------------------------------------------------------------------------------------
def centre_distance(w2c0: Tensor, centre: Tensor) -> Tensor:
    """[N] distance from each camera of w2c0 [N, 4, 4] to the world point centre [3] (or [N, 3])."""
    centre = centre.to(w2c0.dtype).expand(w2c0.shape[0], 3)
    centre_cam = (w2c0[:, :3, :3] @ centre[..., None])[..., 0] + w2c0[:, :3, 3]  # [N, 3]
    return torch.linalg.vector_norm(centre_cam, dim=-1)


def object_centred_w2c(w2c0: Tensor, omega: Tensor, rho: Tensor, centre: Tensor) -> Tensor:
    """w2c [N, 4, 4] of w2c0 [N, 4, 4] turned by omega [N, 3] (radians, camera axes) about the world point
    centre [3] (or [N, 3]) and with that point shifted by ``d0 * rho`` [N, 3] in the camera frame
    (``d0`` = its initial distance). Differentiable in omega and rho; identity at omega = rho = 0."""
    centre = centre.to(w2c0.dtype).expand(w2c0.shape[0], 3)  # [N, 3]
    R0, t0 = w2c0[:, :3, :3], w2c0[:, :3, 3]
    centre_cam = (R0 @ centre[..., None])[..., 0] + t0  # [N, 3] the centre in the initial camera frame
    distance = torch.linalg.vector_norm(centre_cam, dim=-1, keepdim=True)  # [N, 1]
    R = so3_exp(omega.to(w2c0.dtype)) @ R0  # [N, 3, 3]
    t = centre_cam + distance * rho.to(w2c0.dtype) - (R @ centre[..., None])[..., 0]  # [N, 3]
    out = torch.zeros_like(w2c0)
    out[:, :3, :3] = R
    out[:, :3, 3] = t
    out[:, 3, 3] = 1.0
    return out


def bounded_log_focal(u: Tensor, bound: float) -> Tensor:
    """Log focal scale ``b * tanh(u / b)``: slope 1 at 0, never beyond ±b (b <= 0: unbounded, = u)."""
    if bound <= 0.0:
        return u
    return bound * torch.tanh(u / bound)


def scale_focal(K: Tensor, log_scale: Tensor) -> Tensor:
    """K [N, 3, 3] with fx, fy multiplied by exp(log_scale [N])."""
    out = K.clone()
    factor = torch.exp(log_scale).to(K.dtype)
    out[:, 0, 0] = K[:, 0, 0] * factor
    out[:, 1, 1] = K[:, 1, 1] * factor
    return out


def pose_from_params(
    w2c0: Tensor, K0: Tensor, params: Tensor, centre: Tensor, focal_bound: float
) -> tuple[Tensor, Tensor]:
    """(w2c [N, 4, 4], K [N, 3, 3]) of solver parameters params [N, 7] = [omega, rho, u].

    The focal scale ``k = exp(b tanh(u / b))`` comes with a dolly: the object centre's camera coordinates
    are multiplied by ``k`` too, so the object keeps its image size and position and ``u`` changes only the
    perspective (a dolly zoom). Focal length and distance are otherwise nearly interchangeable for a small
    object, a long thin valley that damped steps crawl along; this way ``rho_z`` sets the image scale and
    ``u`` the weakly observed perspective, which the focal prior regularises."""
    log_scale = bounded_log_focal(params[:, 6], focal_bound)  # [N]
    w2c = object_centred_w2c(w2c0, params[:, 0:3], params[:, 3:6], centre)
    scale = torch.exp(log_scale).to(w2c.dtype)[:, None]  # [N, 1]
    centre_n = centre.to(w2c.dtype).expand(w2c.shape[0], 3)
    centre_cam = (w2c[:, :3, :3] @ centre_n[..., None])[..., 0] + w2c[:, :3, 3]  # [N, 3]
    w2c = w2c.clone()
    w2c[:, :3, 3] = w2c[:, :3, 3] + (scale - 1.0) * centre_cam
    K = scale_focal(K0, log_scale)
    return w2c, K


# ----------------------------------------------------------------------------------------------
# rendering and residuals
# ----------------------------------------------------------------------------------------------
def detached_render_fn(frozen, backend: str = "cpu", grad: bool = False, device=None) -> RenderFn:
    """:data:`RenderFn` of fixed Gaussians (a ``GaussianModel.detached()`` copy) on a white background;
    `grad` keeps the pose gradient (the Adam baselines), otherwise renders run without autograd."""
    from .render import render_gaussians

    means, quats, scales, opacities, sh = frozen.render_args()
    white = torch.ones(3, device=means.device)

    def render(w2c: Tensor, K: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
        target = means.device if device is None else device
        with torch.enable_grad() if grad else torch.no_grad():
            out = render_gaussians(
                means,
                quats,
                scales,
                opacities,
                sh,
                w2c.to(target, torch.float32),
                K.to(target, torch.float32),
                width,
                height,
                sh_degree=frozen.sh_degree,
                background=white,
                backend=backend,
            )
        return out.rgb, out.alpha[..., 0]

    return render


def settings_from_config(cfg) -> "SolverSettings":
    """SolverSettings from ``cfg.solver`` (the one place the config becomes solver settings)."""
    sc = cfg.solver
    return SolverSettings(
        levels=parse_levels(sc.levels),
        mask_weight=float(sc.mask_weight),
        focal_bound=float(sc.focal_bound),
        focal_prior=float(sc.focal_prior),
        optimize_focal=bool(sc.optimize_focal),
        focal_min_size=int(sc.focal_min_size),
        damping_init=float(sc.damping_init),
        trust_radius=float(sc.trust_radius),
        fd_pixels=float(sc.fd_pixels),
        moment_steps=int(sc.moment_steps),
    )


def area_downsample(images: Tensor, size: int) -> Tensor:
    """[C, H, W, ch] -> [C, size, size * W // H, ch] by area averaging (unchanged at the same size)."""
    height, width = images.shape[1:3]
    new_w = max(1, round(size * width / height))
    if (height, width) == (size, new_w):
        return images
    out = F.interpolate(images.permute(0, 3, 1, 2), size=(size, new_w), mode="area")
    return out.permute(0, 2, 3, 1).contiguous()


def blur(images: Tensor, sigma: float) -> Tensor:
    """[C, H, W, ch] blurred by a separable Gaussian of std `sigma` pixels (replicate padding)."""
    from .image_filters import gaussian_blur  # the same blur as the joint loop's blur schedule

    return gaussian_blur(images, sigma)


def render_antialiased(render_fn: RenderFn, w2c: Tensor, K: Tensor, native: int, size: int) -> Tensor:
    """[C, size, size, 4] (rgb, alpha) rendered at the `native` resolution (K given at `native`) and
    area-averaged down to `size`: an unbiased coarse level for a model trained at `native`."""
    rgb, alpha = render_fn(w2c, K, native, native)
    return area_downsample(torch.cat([rgb, alpha[..., None]], dim=-1), size)


@dataclass(frozen=True)
class Level:
    """One coarse-to-fine level: residuals at `size` px after a blur of `sigma` px (of that size)."""

    size: int
    sigma: float
    iters: int


DEFAULT_LEVELS = (Level(32, 2.0, 10), Level(64, 1.0, 10), Level(128, 1.0, 8), Level(256, 0.5, 6))


def parse_levels(spec: list) -> tuple[Level, ...]:
    """[[size, sigma, iters], ...] -> Levels (the config's ``solver.levels``)."""
    levels = tuple(Level(int(s), float(sig), int(it)) for s, sig, it in spec)
    if not levels or any(lv.size < 8 or lv.iters < 0 or lv.sigma < 0 for lv in levels):
        raise ValueError(f"solver.levels must be [[size >= 8, sigma >= 0, iters >= 0], ...], got {spec!r}")
    return levels


# ----------------------------------------------------------------------------------------------
# the solver
# ----------------------------------------------------------------------------------------------
@dataclass
class SolverSettings:
    """Numbers of :class:`PoseSolver` (``solver.*`` in the config)."""

    levels: tuple[Level, ...] = DEFAULT_LEVELS
    mask_weight: float = 1.0  # weight of the alpha-vs-mask residual beside the rgb one
    focal_bound: float = 0.25  # |log focal scale| <= this (about ±28 %)
    focal_prior: float = 1e-5  # cost added per unit u² (the residuals are means over pixels)
    optimize_focal: bool = True
    focal_min_size: int = 128  # focal is solved at levels of at least this size (px)
    damping_init: float = 1e-2  # Marquardt lambda at the start of every level
    trust_radius: float = 0.15  # max step norm (radians-equivalent) per iteration
    fd_pixels: float = 0.5  # finite-difference step: this many pixels of motion at the level's focal
    chunk: int = 64  # cameras per render call
    moment_steps: int = 3  # silhouette-moment alignments before the first level (0 = none)


@dataclass
class PoseSolver:
    """Levenberg-Marquardt refinement of views against fixed Gaussians; one ``step()`` = one iteration.

    Args:
        render_fn: renders the fixed Gaussians (see :data:`RenderFn`).
        targets: [N, H, W, 3] white-background images at the native resolution H = W.
        masks: [N, H, W] object masks.
        w2c0: [N, 4, 4] starting poses (OpenCV), K0 [N, 3, 3] their intrinsics at the native resolution.
        centre: [3] world point the orbit turns about (the object centre).
        settings: :class:`SolverSettings`.
    """

    render_fn: RenderFn
    targets: Tensor
    masks: Tensor
    w2c0: Tensor
    K0: Tensor
    centre: Tensor
    settings: SolverSettings = field(default_factory=SolverSettings)

    def __post_init__(self) -> None:
        self.targets = torch.as_tensor(self.targets, dtype=torch.float32)
        self.masks = torch.as_tensor(self.masks, dtype=torch.float32)
        self.w2c0 = torch.as_tensor(self.w2c0, dtype=torch.float32)
        self.K0 = torch.as_tensor(self.K0, dtype=torch.float32)
        self.centre = torch.as_tensor(self.centre, dtype=torch.float32).reshape(3)
        n = self.w2c0.shape[0]
        if self.targets.shape[0] != n or self.masks.shape[0] != n or self.K0.shape != (n, 3, 3):
            raise ValueError("PoseSolver: targets, masks, w2c0 and K0 must hold the same number of views")
        self.native = int(self.targets.shape[1])
        self.params = torch.zeros(n, N_PARAMS)  # [N, 7]
        self.level = 0
        self.iteration = 0  # within the level
        self.damping = torch.full((n,), self.settings.damping_init)  # [N]
        self.cost = torch.full((n,), float("nan"))  # [N] at the current params and level
        self.initial_cost: Tensor | None = None
        self.accepted = torch.zeros(n, dtype=torch.long)
        self.last_step_norm = torch.zeros(n)
        self.trajectory: list[Tensor] = [self.params.clone()]
        self._level_targets: dict[int, Tensor] = {}
        self._residual: Tensor | None = None  # [N, P] at the current params
        self._jacobian: Tensor | None = None  # [N, P, 7]
        self._stale = torch.ones(n, dtype=torch.bool)  # views whose Jacobian must be recomputed
        self.moment_steps_done = 0  # silhouette-moment alignments run (before the first LM level)
        self._skip_empty_levels()

    # --- levels -----------------------------------------------------------------------------
    def _skip_empty_levels(self) -> None:
        levels = self.settings.levels
        while self.level < len(levels) and self.iteration >= levels[self.level].iters:
            self._next_level()

    def _next_level(self) -> None:
        self.level += 1
        self.iteration = 0
        self.damping.fill_(self.settings.damping_init)
        self._residual = None
        self._jacobian = None
        self._stale.fill_(True)

    @property
    def done(self) -> bool:
        return self.level >= len(self.settings.levels)

    def _current(self) -> Level:
        return self.settings.levels[min(self.level, len(self.settings.levels) - 1)]

    def _target(self, level: Level) -> Tensor:
        key = (level.size, level.sigma)
        if key not in self._level_targets:
            wanted = torch.cat([self.targets, self.masks[..., None]], dim=-1)  # [N, H, W, 4]
            self._level_targets[key] = blur(area_downsample(wanted, level.size), level.sigma)
        return self._level_targets[key]

    # --- residuals ----------------------------------------------------------------------------
    def _weights(self) -> Tensor:
        """[4] per-channel residual weights (rgb, rgb, rgb, mask)."""
        return torch.tensor([1.0, 1.0, 1.0, math.sqrt(self.settings.mask_weight)])

    @torch.no_grad()
    def _residuals(self, params: Tensor, views: Tensor, level: Level) -> Tensor:
        """[M, P] residuals (per pixel and channel, / sqrt(P), so |r|² is a mean) of views [M] at params [M, 7]."""
        w2c, K = pose_from_params(self.w2c0[views], self.K0[views], params, self.centre, self.settings.focal_bound)
        out = []
        for start in range(0, len(views), self.settings.chunk):
            part = slice(start, start + self.settings.chunk)
            rendered = render_antialiased(self.render_fn, w2c[part], K[part], self.native, level.size)
            out.append(blur(rendered, level.sigma))
        rendered = torch.cat(out)  # [M, s, s, 4]
        diff = (rendered - self._target(level)[views]) * self._weights()
        return diff.reshape(len(views), -1) / math.sqrt(diff[0].numel())

    def _cost(self, residual: Tensor, params: Tensor) -> Tensor:
        """[M] |r|² plus the focal prior."""
        return (residual**2).sum(-1) + self.settings.focal_prior * params[:, 6] ** 2

    def _fd_step(self, views: Tensor, level: Level) -> Tensor:
        """[M] finite-difference step per view: `fd_pixels` pixels of motion at the level's focal length."""
        focal = self.K0[views, 0, 0] * level.size / self.native
        return self.settings.fd_pixels / focal

    def _focal_active(self) -> bool:
        """Focal is solved only at levels of at least `focal_min_size` px: coarser residuals do not see the
        perspective that separates it from distance, and a free focal there only lets a view run away."""
        return self.settings.optimize_focal and self._current().size >= self.settings.focal_min_size

    def _active_columns(self) -> list[int]:
        return list(range(N_PARAMS)) if self._focal_active() else list(range(6))

    def _jacobians(self, views: Tensor, level: Level) -> Tensor:
        """[M, P, k] forward-difference Jacobians of the views' residuals (k active parameters)."""
        columns = self._active_columns()
        steps = self._fd_step(views, level)  # [M]
        probes = self.params[views].repeat_interleave(len(columns), dim=0)  # [M*k, 7]
        rows = torch.arange(len(probes))
        probes[rows, torch.tensor(columns).repeat(len(views))] += steps.repeat_interleave(len(columns))
        probed = self._residuals(probes, views.repeat_interleave(len(columns)), level)  # [M*k, P]
        probed = probed.reshape(len(views), len(columns), -1)
        return ((probed - self._residual[views, None]) / steps[:, None, None]).transpose(1, 2)

    # --- stepping -----------------------------------------------------------------------------
    def step(self, budget: int = 1) -> dict:
        """Run up to `budget` LM iterations (all views each); returns a small event dict."""
        for _ in range(max(1, int(budget))):
            if self.done:
                break
            self._iterate()
        return {
            "phase": "pose_solver",
            "level": self.level,
            "iteration": self.iteration,
            "done": self.done,
            "cost": self.cost.tolist(),
        }

    def _align_moments(self) -> None:
        """One silhouette-moment alignment of every view: shift the object centre in the camera frame so
        that the rendered silhouette's centroid and area match the mask's, kept per view only where it
        lowers the coarsest level's cost.

        An estimator's start can put the object tens of pixels off its photo; a thin object's render and
        photo then barely overlap, and every photometric step only shrinks the render (the cost falls as
        the wrong silhouette vanishes). Moments need no overlap: the centroid offset du (pixels) is a
        sideways shift of du / f (in units of the distance), the area ratio a a dolly by 1 / sqrt(a).
        """
        level = self.settings.levels[0]
        views = torch.arange(self.w2c0.shape[0])
        w2c, K = pose_from_params(self.w2c0, self.K0, self.params, self.centre, self.settings.focal_bound)
        size = level.size
        rendered = render_antialiased(self.render_fn, w2c, K, self.native, size)[..., 3]  # [N, s, s]
        wanted = area_downsample(self.masks[..., None], size)[..., 0]  # [N, s, s]
        coords = torch.arange(size, dtype=torch.float32) + 0.5

        def moments(alpha: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            area = alpha.sum(dim=(1, 2)).clamp_min(1e-6)
            cy = (alpha.sum(dim=2) * coords).sum(-1) / area
            cx = (alpha.sum(dim=1) * coords).sum(-1) / area
            return cx, cy, area

        rx, ry, r_area = moments(rendered)
        tx, ty, t_area = moments(wanted)
        focal = (
            self.K0[:, 0, 0]
            * size
            / self.native
            * torch.exp(bounded_log_focal(self.params[:, 6], self.settings.focal_bound))
        )
        centre_cam = (w2c[:, :3, :3] @ self.centre[:, None])[..., 0] + w2c[:, :3, 3]  # [N, 3]
        depth_ratio = centre_cam[:, 2] / centre_distance(self.w2c0, self.centre)  # z / d0
        trial = self.params.clone()
        trial[:, 3] += (tx - rx) / focal * depth_ratio
        trial[:, 4] += (ty - ry) / focal * depth_ratio
        usable = (r_area > 1.0) & (t_area > 1.0)  # an empty render or mask has no moments
        scale = torch.sqrt(t_area / r_area).clamp(0.5, 2.0)
        trial[:, 5] += torch.where(usable, (1.0 / scale - 1.0) * depth_ratio, torch.zeros(()))
        trial = torch.where(usable[:, None], trial, self.params)
        before = self._cost(self._residuals(self.params, views, level), self.params)
        after = self._cost(self._residuals(trial, views, level), trial)
        better = after < before
        self.params[better] = trial[better]
        self.trajectory.append(self.params.clone())
        self.moment_steps_done += 1

    def _iterate(self) -> None:
        if self.moment_steps_done < self.settings.moment_steps:
            self._align_moments()
            return
        level = self._current()
        all_views = torch.arange(self.w2c0.shape[0])
        if self._residual is None:
            self._residual = self._residuals(self.params, all_views, level)
            self.cost = self._cost(self._residual, self.params)
            if self.initial_cost is None:
                self.initial_cost = self.cost.clone()
            self._jacobian = None
        stale = all_views[self._stale]
        if len(stale):
            fresh = self._jacobians(stale, level)
            if self._jacobian is None:
                self._jacobian = torch.zeros(len(all_views), *fresh.shape[1:])
            self._jacobian[stale] = fresh
            self._stale[stale] = False
        delta = self._lm_steps(self._jacobian, self._residual)  # [N, 7]
        trial = self.params + delta
        trial_residual = self._residuals(trial, all_views, level)
        trial_cost = self._cost(trial_residual, trial)
        better = trial_cost < self.cost  # [N]
        self.params[better] = trial[better]
        self._residual[better] = trial_residual[better]
        self.cost[better] = trial_cost[better]
        self._stale |= better
        self.accepted += better.long()
        self.last_step_norm = torch.where(better, delta.norm(dim=-1), torch.zeros(()))
        self.damping = torch.where(better, self.damping / 3.0, self.damping * 4.0).clamp(1e-6, 1e6)
        self.trajectory.append(self.params.clone())
        self.iteration += 1
        if self.iteration >= level.iters:
            self._next_level()
            self._skip_empty_levels()

    def _lm_steps(self, jacobian: Tensor, residual: Tensor) -> Tensor:
        """[N, 7] damped Gauss-Newton steps, clipped to the trust radius."""
        columns = self._active_columns()
        k = len(columns)
        JtJ = jacobian.transpose(1, 2) @ jacobian  # [N, k, k]
        Jtr = (jacobian.transpose(1, 2) @ residual[..., None])[..., 0]  # [N, k]
        if self._focal_active():  # the focal prior's own (linear) residual sqrt(w) * u
            JtJ[:, 6, 6] += self.settings.focal_prior
            Jtr[:, 6] += self.settings.focal_prior * self.params[:, 6]
        diagonal = torch.diagonal(JtJ, dim1=1, dim2=2).clamp_min(1e-12)  # [N, k]
        system = JtJ + torch.diag_embed(self.damping[:, None] * diagonal)
        system = system + 1e-12 * torch.eye(k)
        step = -torch.linalg.solve(system.double(), Jtr[..., None].double())[..., 0].float()  # [N, k]
        norm = step.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        step = step * (self.settings.trust_radius / norm).clamp(max=1.0)
        out = torch.zeros(len(step), N_PARAMS)
        out[:, columns] = step
        return out

    @torch.no_grad()
    def level_cost(self, level_index: int = -1) -> Tensor:
        """[N] cost of every view at its current parameters at level `level_index` (default: the finest)."""
        level = self.settings.levels[level_index]
        views = torch.arange(self.w2c0.shape[0])
        return self._cost(self._residuals(self.params, views, level), self.params)

    def run(self) -> "PoseSolver":
        """Step to the end; returns self."""
        while not self.done:
            self.step()
        return self

    # --- results ----------------------------------------------------------------------------
    def current(self) -> tuple[Tensor, Tensor]:
        """(w2c [N, 4, 4], K [N, 3, 3]) at the current parameters."""
        return pose_from_params(self.w2c0, self.K0, self.params, self.centre, self.settings.focal_bound)

    def focal_scale(self) -> Tensor:
        """[N] current focal scale."""
        return torch.exp(bounded_log_focal(self.params[:, 6], self.settings.focal_bound))

    def snapshot(self) -> dict:
        """Plain data for display: per-view cost, damping, trust radius, last step, accepted count, the
        parameter trajectory [T, N, 7] and the current poses."""
        w2c, K = self.current()
        return {
            "level": self.level,
            "iteration": self.iteration,
            "done": self.done,
            "cost": self.cost.numpy().copy(),
            "initial_cost": None if self.initial_cost is None else self.initial_cost.numpy().copy(),
            "damping": self.damping.numpy().copy(),
            "trust_radius": float(self.settings.trust_radius),
            "last_step": self.last_step_norm.numpy().copy(),
            "accepted": self.accepted.numpy().copy(),
            "trajectory": torch.stack(self.trajectory).numpy(),
            "w2c": w2c.double().numpy(),
            "focal_scale": self.focal_scale().numpy().copy(),
        }

    def state_dict(self) -> dict:
        """Plain tensors and numbers to continue exactly (caches are rebuilt)."""
        return {
            "params": self.params.clone(),
            "level": self.level,
            "iteration": self.iteration,
            "moment_steps_done": self.moment_steps_done,
            "damping": self.damping.clone(),
            "accepted": self.accepted.clone(),
            "trajectory": [t.clone() for t in self.trajectory],
            # the cost where solving began (the snapshot's "before"): rebuilding it at a later level would differ
            "initial_cost": None if self.initial_cost is None else self.initial_cost.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.params = state["params"].clone()
        self.level = int(state["level"])
        self.iteration = int(state["iteration"])
        self.moment_steps_done = int(state["moment_steps_done"])
        self.damping = state["damping"].clone()
        self.accepted = state["accepted"].clone()
        self.trajectory = [t.clone() for t in state["trajectory"]]
        initial = state.get("initial_cost")
        self.initial_cost = None if initial is None else initial.clone()
        self._residual = None
        self._jacobian = None
        self._stale.fill_(True)


def numpy_w2c(w2c: Tensor) -> np.ndarray:
    """float64 numpy copy of a pose tensor."""
    return w2c.detach().double().cpu().numpy()
