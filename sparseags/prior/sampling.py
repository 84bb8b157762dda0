"""Novel-view sampling for the Zero123 prior (SparseAGS stage 1), with bounded auto-framing.

Conventions: poses are OpenGL camera-to-world (``c2w_gl``) around the origin; elevation/azimuth use
the kiui ``orbit_camera`` sign (**negative elevation = camera above**, azimuth 0 on +z, 90 on +x);
focal lengths and principal points are in **256-pixel units** and scaled to the render resolution
(``K = diag(res/256) @ K_256``, corner-origin pixels, so (128, 128) is the image centre).

Per step (official behaviour):

* elevation: uniform integer in ``[max(-60 + min ref_elev, -80), min(60 + max ref_elev, 80))``,
  azimuth ``ref_azim[0] + U{-180..179}``, radius = mean distance of the condition cameras, looking at
  the origin without roll; ref_* come from the *current* condition poses;
* resolution from a ``[[step_fraction, resolution], ...]`` schedule; background black with
  probability ``invert_bg_prob``, else white;
* auto-framing, at most ``max_tries`` renders: fx = fy = mean input focal and (cx, cy) from a
  principal-point pool of 2 elevation-sign x 8 azimuth (45 deg) bins; when the alpha-weighted
  centroid is more than 10 px (256 units) off centre, shift (cx, cy) by that offset and store it in
  the pool; when the alpha > 0.5 bounding-box extent e satisfies ``|e^2 - (res/1.2)^2| > 0.05 res^2``
  scale fx, fy by ``(res/1.2) / e`` (not stored). Stops when both checks pass. An empty render ends
  the loop at once (the official loop can spin forever there).

All randomness comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from sparseags.cameras import c2w_gl_to_w2c, intrinsics_matrix, orbit_camera, undo_orbit_camera
from sparseags.render.types import RenderOutput

REFERENCE_SIZE = 256.0  # focal lengths and principal points are stored in pixels of a 256x256 image

# render_fn(w2c [4, 4] OpenCV, K [3, 3] pixels, width, height, background [3]) -> RenderOutput (C = 1)
RenderFn = Callable[[Tensor, Tensor, int, int, Tensor], RenderOutput]


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high) from `generator` (low when the range is empty)."""
    if high <= low:
        return low
    device = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(low, high, (1,), generator=generator, device=device))


def _rand(generator: torch.Generator | None) -> float:
    device = generator.device if generator is not None else torch.device("cpu")
    return float(torch.rand((1,), generator=generator, device=device))


def resolution_at(schedule: Sequence[Sequence[float]], step_ratio: float) -> int:
    """Resolution of the last ``[fraction, resolution]`` entry with ``fraction <= step_ratio``."""
    entries = sorted((float(fraction), int(res)) for fraction, res in schedule)
    if not entries:
        raise ValueError("resolution schedule is empty")
    chosen = entries[0][1]
    for fraction, res in entries:
        if step_ratio >= fraction:
            chosen = res
    return chosen


class PrincipalPointPool:
    """(cx, cy) in 256-px units per (elevation sign, 45-degree azimuth bin); starts at the image centre."""

    def __init__(self) -> None:
        self.table = torch.full((2, 8, 2), REFERENCE_SIZE / 2, dtype=torch.float64)  # [elev sign, azim bin, (cx, cy)]

    @staticmethod
    def cell(elevation_deg: float, azimuth_deg: float) -> tuple[int, int]:
        """Bin 0 for negative elevation (above), 1 otherwise; azimuth bins of 45 deg from -180."""
        return (0 if elevation_deg < 0 else 1), int(((azimuth_deg + 180.0) % 360.0) // 45.0) % 8

    def get(self, cell: tuple[int, int]) -> tuple[float, float]:
        cx, cy = self.table[cell].tolist()
        return cx, cy

    def set(self, cell: tuple[int, int], cx: float, cy: float) -> None:
        self.table[cell] = torch.tensor([cx, cy], dtype=torch.float64)


@dataclass
class NovelView:
    """One sampled novel camera (after framing) and, when available, its render."""

    elevation_deg: float  # kiui sign: negative = above
    azimuth_deg: float
    radius: float
    c2w_gl: Tensor  # [4, 4] float64, OpenGL camera-to-world
    w2c: Tensor  # [4, 4] float64, OpenCV world-to-camera
    focal: tuple[float, float]  # (fx, fy) in 256-px units after zoom
    principal_point: tuple[float, float]  # (cx, cy) in 256-px units
    resolution: int
    background: Tensor  # [3] float32, white or black
    framing_passes: int  # renders done while framing
    framed: bool  # both framing checks passed on the last render
    empty: bool  # a framing render had zero alpha everywhere
    render: RenderOutput | None  # render of exactly this camera, or None (render it again)

    def K(self) -> Tensor:
        """Intrinsics [3, 3] (float64) at `resolution`."""
        scale = self.resolution / REFERENCE_SIZE
        fx, fy = self.focal
        cx, cy = self.principal_point
        return intrinsics_matrix(fx * scale, fy * scale, cx * scale, cy * scale).to(torch.float64)


class NovelViewSampler:
    """Samples novel views around the current condition cameras; owns the principal-point pool."""

    def __init__(
        self,
        resolution_schedule: Sequence[Sequence[float]] = ((0.0, 128), (0.3, 256), (0.6, 512)),
        invert_bg_prob: float = 0.5,
        max_tries: int = 10,
        elevation_margin_deg: float = 60.0,
        elevation_limit_deg: float = 80.0,
        centre_tolerance_px: float = 10.0,
        fill_ratio: float = 1.0 / 1.2,
        zoom_tolerance: float = 0.05,
    ):
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        self.resolution_schedule = [list(entry) for entry in resolution_schedule]
        self.invert_bg_prob = float(invert_bg_prob)
        self.max_tries = int(max_tries)
        self.elevation_margin_deg = float(elevation_margin_deg)
        self.elevation_limit_deg = float(elevation_limit_deg)
        self.centre_tolerance_px = float(centre_tolerance_px)
        self.fill_ratio = float(fill_ratio)
        self.zoom_tolerance = float(zoom_tolerance)
        self.pool = PrincipalPointPool()

    def elevation_range(self, ref_elevation_deg: Tensor) -> tuple[float, float]:
        """``[max(-60 + min, -80), min(60 + max, 80))`` of the reference elevations (kiui sign)."""
        low = max(-self.elevation_margin_deg + float(ref_elevation_deg.min()), -self.elevation_limit_deg)
        high = min(self.elevation_margin_deg + float(ref_elevation_deg.max()), self.elevation_limit_deg)
        return low, high

    def sample_pose(self, cond_c2w_gl: Tensor, generator: torch.Generator | None) -> tuple[float, float, float]:
        """(elevation_deg, azimuth_deg, radius) of a random orbit camera around the condition cameras [V, 4, 4]."""
        ref_elev, ref_azim, ref_radius = undo_orbit_camera(cond_c2w_gl.to(torch.float64))
        low, high = self.elevation_range(ref_elev)
        elevation = float(_randint(math.ceil(low), math.ceil(high), generator))
        azimuth = float(ref_azim[0]) + _randint(-180, 180, generator)
        return elevation, azimuth, float(ref_radius.mean())

    def sample(
        self,
        cond_c2w_gl: Tensor,
        cond_focals: Tensor,
        step_ratio: float,
        generator: torch.Generator | None,
        render_fn: RenderFn,
    ) -> NovelView:
        """Sample a novel view and frame it with at most `max_tries` calls of `render_fn`."""
        elevation, azimuth, radius = self.sample_pose(cond_c2w_gl, generator)
        resolution = resolution_at(self.resolution_schedule, step_ratio)
        black = _rand(generator) < self.invert_bg_prob
        background = torch.zeros(3) if black else torch.ones(3)
        c2w_gl = orbit_camera(elevation, azimuth, radius, dtype=torch.float64)
        focal = float(torch.as_tensor(cond_focals, dtype=torch.float64).mean())
        cell = self.pool.cell(elevation, azimuth)
        view = NovelView(
            elevation,
            azimuth,
            radius,
            c2w_gl,
            c2w_gl_to_w2c(c2w_gl),
            (focal, focal),
            self.pool.get(cell),
            resolution,
            background,
            0,
            False,
            False,
            None,
        )
        self._frame(view, cell, render_fn)
        return view

    def _frame(self, view: NovelView, cell: tuple[int, int], render_fn: RenderFn) -> None:
        """Auto-framing loop (bounded); updates `view` in place and the pool's (cx, cy) for `cell`."""
        res = view.resolution
        to_ref = REFERENCE_SIZE / res
        centre = torch.arange(res, dtype=torch.float64) + 0.5  # pixel centres
        while view.framing_passes < self.max_tries:
            output = render_fn(view.w2c, view.K(), res, res, view.background)
            view.framing_passes += 1
            view.render = output
            alpha = output.alpha[0, ..., 0].detach().to("cpu", torch.float64)  # [H, W]
            total = float(alpha.sum())
            if total <= 1e-8:
                view.empty = True
                return
            du = float((alpha.sum(0) * centre).sum()) / total * to_ref - REFERENCE_SIZE / 2
            dv = float((alpha.sum(1) * centre).sum()) / total * to_ref - REFERENCE_SIZE / 2
            recentre = max(abs(du), abs(dv)) > self.centre_tolerance_px
            zoom = self._zoom(alpha > 0.5, res)
            if not recentre and zoom == 1.0:
                view.framed = True
                return
            if recentre:
                cx, cy = view.principal_point
                view.principal_point = (cx - du, cy - dv)
                self.pool.set(cell, *view.principal_point)
            view.focal = (view.focal[0] * zoom, view.focal[1] * zoom)
            view.render = None  # the camera changed after the last render

    def _zoom(self, mask: Tensor, res: int) -> float:
        """Focal scale bringing the mask's bounding-box extent to ``res * fill_ratio`` (1 when close enough)."""
        rows = torch.nonzero(mask.any(dim=1))
        cols = torch.nonzero(mask.any(dim=0))
        if len(rows) == 0:
            return 1.0  # only faint alpha: nothing to measure, keep the focal
        extent = float(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))
        target = res * self.fill_ratio
        if abs(extent**2 - target**2) > self.zoom_tolerance * res**2:
            return target / extent
        return 1.0

    def state_dict(self) -> dict:
        return {"pool": self.pool.table.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.pool.table = state["pool"].clone().to(torch.float64)
