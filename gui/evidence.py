"""Per-view pose evidence for the debugger: what the matches and evidence panels show (no DearPyGui here).

The engine thread builds an :class:`EvidenceView` from ``pipeline.matches_snapshot()`` and the active
reconstruction's ``snapshot()`` (targets, evidence rows, guard log, pose-error curve, poses, focal scales).
Building it renders every view once, so it is rebuilt only when something it shows changed: another
pipeline or reconstruction, a new evidence row, a new guard entry, or (while the engine is idle) another
step. The pure helpers below (pair lookup, line segments, Sampson errors of a pair) are shared by the
panel and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

__all__ = [
    "EvidenceView",
    "PairView",
    "build_evidence",
    "evidence_key",
    "pair_view",
    "pair_segments",
    "pair_sampson_px",
    "default_pair",
    "finite_series",
    "EVIDENCE_RESOLUTION",
]

EVIDENCE_RESOLUTION = 128  # target images for the matches panel are read at most at this size


@dataclass(frozen=True)
class EvidenceView:
    """Plain data of the matches / pose-evidence panels (arrays are never mutated after publication)."""

    key: tuple
    recon_step: int
    ids: list
    image_size: int  # scene resolution: the match coordinates' pixel frame
    targets: np.ndarray  # [V, h, w, 3] float32 white-background inputs
    steps: np.ndarray  # [T] steps of the evidence rows
    rgb: np.ndarray  # [T, V] RGB residual (MSE) of the views rendered in that step, nan otherwise
    mask: np.ndarray  # [T, V]
    epipolar: np.ndarray  # [T, V] median Sampson error (px), nan = no matches
    match_inliers: np.ndarray  # [T, V]
    epipolar_start: np.ndarray  # [V]
    guard_log: list  # [{"view", "step", "action", "reason"}]
    pose_frozen: np.ndarray  # [V] bool
    focal_scale: np.ndarray  # [V]
    pose_error: Optional[dict]  # {"step", "rot_err_deg" [[V]], "rot5", "rot15", "cc10"} or None (no ground truth)
    w2c: np.ndarray  # [V, 4, 4] current poses
    K: np.ndarray  # [V, 3, 3] scene-resolution intrinsics with the current focal scales
    flags: np.ndarray  # [V]
    pairs: list = field(default_factory=list)  # [{"i", "j", "xy_i" [M, 2], "xy_j", "verified" [M]}]
    match_summary: Optional[dict] = None


@dataclass(frozen=True)
class PairView:
    """One pair as drawn: `a` on the left, `b` on the right (coordinates in scene pixels)."""

    a: int
    b: int
    xy_a: np.ndarray  # [M, 2]
    xy_b: np.ndarray  # [M, 2]
    verified: np.ndarray  # [M] bool

    @property
    def count(self) -> int:
        return int(len(self.verified))

    @property
    def n_verified(self) -> int:
        return int(np.sum(self.verified))


def evidence_key(pipeline: Any, busy: bool) -> tuple:
    recon = pipeline.recon
    if recon is None:
        return (id(pipeline), None)
    return (
        id(pipeline),
        id(recon),
        len(recon.evidence["step"]),
        len(recon.guard_log),
        None if busy else int(recon.step_count),
    )


def build_evidence(pipeline: Any, busy: bool, previous: Optional[EvidenceView] = None) -> Optional[EvidenceView]:
    """Read the panels' data from `pipeline` (engine thread); `previous` is returned when nothing changed."""
    recon = pipeline.recon
    if recon is None:
        return None
    key = evidence_key(pipeline, busy)
    if previous is not None and previous.key == key:
        return previous
    if previous is not None and previous.key[:1] == key[:1]:  # same pipeline: its matches never change
        pairs, summary = previous.pairs, previous.match_summary
    else:
        matches = pipeline.matches_snapshot()
        pairs = [] if matches is None else list(matches["pairs"])
        summary = None if matches is None else matches["summary"]
    snap = recon.snapshot(resolution=min(EVIDENCE_RESOLUTION, int(recon.width)))
    ev = snap["evidence"]
    n_views = len(snap["ids"])

    def rows(name: str, dtype: Any = np.float64) -> np.ndarray:
        return np.asarray(ev[name], dtype=dtype).reshape(-1, n_views)

    scale = np.asarray(snap["focal_scale"], dtype=np.float64).reshape(n_views)
    K = np.asarray(pipeline.scene.K, dtype=np.float64).copy()
    K[:, 0, 0] *= scale
    K[:, 1, 1] *= scale
    return EvidenceView(
        key=key,
        recon_step=int(snap["step"]),
        ids=list(snap["ids"]),
        image_size=int(pipeline.scene.resolution),
        targets=np.ascontiguousarray(snap["targets"], dtype=np.float32),
        steps=np.asarray(ev["step"], dtype=np.int64),
        rgb=rows("rgb"),
        mask=rows("mask"),
        epipolar=rows("epipolar"),
        match_inliers=rows("match_inliers", np.int64),
        epipolar_start=np.asarray(snap["epipolar_start"], dtype=np.float64).copy(),
        guard_log=[dict(entry) for entry in snap["guard_log"]],
        pose_frozen=np.asarray(snap["pose_frozen"], bool).copy(),
        focal_scale=scale,
        pose_error=snap["pose_error"],
        w2c=np.asarray(snap["w2c"], dtype=np.float64),
        K=K,
        flags=np.asarray(snap["flags"]).copy(),
        pairs=pairs,
        match_summary=summary,
    )


def default_pair(evidence: EvidenceView) -> tuple[int, int]:
    """The pair with the most verified matches ((0, 1) without matches)."""
    if not evidence.pairs:
        return (0, min(1, len(evidence.ids) - 1))
    best = max(evidence.pairs, key=lambda p: (int(np.sum(p["verified"])), len(p["verified"])))
    return (int(best["i"]), int(best["j"]))


def pair_view(evidence: EvidenceView, a: int, b: int) -> PairView:
    """The matches between views `a` (left) and `b` (right); empty when the pair has none."""
    for pair in evidence.pairs:
        i, j = int(pair["i"]), int(pair["j"])
        if (i, j) == (a, b):
            return PairView(
                a,
                b,
                np.asarray(pair["xy_i"], np.float32),
                np.asarray(pair["xy_j"], np.float32),
                np.asarray(pair["verified"], bool),
            )
        if (i, j) == (b, a):
            return PairView(
                a,
                b,
                np.asarray(pair["xy_j"], np.float32),
                np.asarray(pair["xy_i"], np.float32),
                np.asarray(pair["verified"], bool),
            )
    empty = np.zeros((0, 2), np.float32)
    return PairView(a, b, empty, empty, np.zeros(0, bool))


def pair_segments(pair: PairView, image_size: int, tile: int, gap: int) -> np.ndarray:
    """Line segments [M, 4] (x0, y0, x1, y1) in drawlist pixels: left image at x 0, right at ``tile + gap``.

    Match coordinates are scene pixels (centres at col + 0.5) of an ``image_size`` image, drawn at ``tile``.
    """
    s = float(tile) / float(image_size)
    left = pair.xy_a.astype(np.float64) * s
    right = pair.xy_b.astype(np.float64) * s
    right[:, 0] += tile + gap
    return np.concatenate([left, right], axis=1).reshape(-1, 4)


def pair_sampson_px(evidence: EvidenceView, pair: PairView) -> np.ndarray:
    """[M] Sampson errors (scene pixels) of the pair's matches at the snapshot's current poses and focals."""
    if pair.count == 0:
        return np.zeros(0)
    w2c_a, w2c_b = evidence.w2c[pair.a], evidence.w2c[pair.b]
    R = w2c_b[:3, :3] @ w2c_a[:3, :3].T
    t = w2c_b[:3, 3] - R @ w2c_a[:3, 3]
    skew = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    F = np.linalg.inv(evidence.K[pair.b]).T @ (skew @ R) @ np.linalg.inv(evidence.K[pair.a])
    x_a = np.concatenate([pair.xy_a.astype(np.float64), np.ones((pair.count, 1))], axis=1)  # [M, 3]
    x_b = np.concatenate([pair.xy_b.astype(np.float64), np.ones((pair.count, 1))], axis=1)
    Fx_a = x_a @ F.T  # [M, 3] epipolar lines in b
    Ftx_b = x_b @ F  # [M, 3] epipolar lines in a
    residual = np.abs(np.sum(x_b * Fx_a, axis=1))
    denom = Fx_a[:, 0] ** 2 + Fx_a[:, 1] ** 2 + Ftx_b[:, 0] ** 2 + Ftx_b[:, 1] ** 2
    return residual / np.sqrt(np.maximum(denom, 1e-12))


def finite_series(steps: np.ndarray, values: np.ndarray) -> tuple[list, list]:
    """(xs, ys) of the finite entries of one view's column (nan = not measured at that step)."""
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    return [float(x) for x in np.asarray(steps)[keep]], [float(y) for y in values[keep]]
