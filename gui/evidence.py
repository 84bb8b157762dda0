"""Per-view pose evidence for the debugger: what the matches and evidence panels show (no DearPyGui here).

The engine thread asks the pipeline for an :class:`EvidenceView`
(:class:`sparseags.snapshots.EvidenceSnapshot`, ``Pipeline.evidence_snapshot``: targets, evidence rows,
guard log, pose-error curve, poses, focal scales and the scene's matches). Building it renders every view
once, so it is rebuilt only when something it shows changed: another pipeline or reconstruction, a new
evidence row, a new guard entry, or (while the engine is idle) another step. The pure helpers below (pair lookup, line segments, Sampson errors of a pair) are shared by the
panel and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from sparseags.snapshots import EvidenceSnapshot

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


# What the matches / evidence panels show: the engine's snapshot, one type on both sides of the thread.
EvidenceView = EvidenceSnapshot


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


def evidence_key(pipeline: Any, busy: bool) -> Optional[tuple]:
    """The pipeline's :meth:`~sparseags.pipeline.Pipeline.evidence_key`; while the engine is busy the step is
    left out, so the view (which renders every view) is rebuilt only on a new evidence row or guard entry."""
    return pipeline.evidence_key(with_step=not busy)


def build_evidence(pipeline: Any, busy: bool, previous: Optional[EvidenceView] = None) -> Optional[EvidenceView]:
    """The panels' data from `pipeline` (engine thread); `previous` is returned when nothing changed."""
    key = evidence_key(pipeline, busy)
    if key is None:
        return None
    if previous is not None and previous.key == key:
        return previous
    same_pipeline = previous is not None and previous.key[:1] == key[:1]  # its matches never change
    matches = (previous.pairs, previous.match_summary) if same_pipeline else None
    return pipeline.evidence_snapshot(EVIDENCE_RESOLUTION, key=key, matches=matches)


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
