"""Evaluation metrics: camera poses, novel-view images and meshes.

Pose metrics (RelPose++/RayDiffusion protocol, bench/README.md section 5)
-----------------------------------------------------------------------
Poses are OpenCV world-to-camera matrices ``w2c [V, 4, 4]`` (docs/ARCHITECTURE.md), views matched by
index. Inputs may be torch tensors or numpy arrays; they are evaluated in float64.

* **Relative rotation error** of the ordered pair (i, j), i != j: the geodesic angle between the
  predicted and GT relative rotations. In the PyTorch3D convention of the benchmark this is
  ``R_rel = R_i^T R_j``. With the w2c rotations ``Q = w2c[:3, :3]`` used here, ``R = Q^T D`` with
  ``D = diag(-1, -1, 1)``, so ``R_i^T R_j = D (Q_i Q_j^T) D``; conjugation by the rotation D keeps
  geodesic angles, hence we compute ``Q_i Q_j^T`` and get exactly the P3D numbers.
* **Rot@theta**: % of the V(V-1) ordered pairs whose error is below theta degrees (strictly).
* **CC@tau**: centres ``C = -Q^T t``; Umeyama similarity (with scale) of predicted to GT centres; a
  camera is correct if ``|C_gt - (s R C_pred + t)| < tau * scene_scale`` with ``scene_scale`` the largest
  distance from the GT centres' centroid to a GT centre. Reported in %.
* **Per-view rotation error**: a global rotation ``A`` with ``Q_pred_i ~ Q_gt_i A`` (the rotation part
  of a world change) is estimated by robust rotation averaging (the chordal L1 median of
  ``Q_gt_i^T Q_pred_i``, Weiszfeld iterations started from the chordal L2 mean), so one gross outlier
  does not bias the others; the error of view i is the angle between ``Q_pred_i A^T`` and ``Q_gt_i``.

Image metrics
-------------
PSNR and SSIM on float images in [0, 1] (``[H, W, 3]`` or ``[H, W]``); ``mask [H, W]`` weights pixels.

Mesh metrics
------------
Surface samples (``trimesh.sample.sample_surface`` with fixed seeds), nearest-neighbour distances by
``scipy.spatial.cKDTree``. Chamfer = mean of the two directed mean (unsquared) distances;
``tau = tau_ratio * diag`` with ``diag`` the GT bounding-box diagonal (the object scale); precision
and recall are the % of predicted / GT samples within tau of the other set, F1 their harmonic mean (%).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from sparseags.cameras import camera_centers, rotation_angle_deg, umeyama

if TYPE_CHECKING:  # imported where used: trimesh, scipy and skimage cost ~1 s to import, poses need none
    import trimesh

__all__ = [
    "MetricError",
    "relative_rotation_errors_deg",
    "rotation_accuracy",
    "camera_center_errors",
    "camera_center_accuracy",
    "global_rotation_alignment",
    "per_view_rotation_error_deg",
    "mean_rotation_error_deg",
    "pose_metrics",
    "align_similarity_plain",
    "align_similarity_robust",
    "transform_cameras_to_pred_frame",
    "psnr",
    "ssim",
    "sample_surface_points",
    "MeshMetrics",
    "mesh_metrics",
    "chamfer_distance",
    "f1_score",
]


class MetricError(ValueError):
    """Inputs a metric cannot be computed on (wrong shapes, unreadable mesh)."""


# ----------------------------------------------------------------------------------------------
# Pose metrics
# ----------------------------------------------------------------------------------------------
def _poses(w2c_pred: Any, w2c_gt: Any) -> tuple[Tensor, Tensor]:
    pred = torch.as_tensor(w2c_pred).detach().to("cpu", torch.float64)
    gt = torch.as_tensor(w2c_gt).detach().to("cpu", torch.float64)
    if pred.shape != gt.shape or pred.dim() != 3 or pred.shape[-2:] != (4, 4) or pred.shape[0] < 2:
        raise MetricError(
            f"pose metrics need w2c_pred and w2c_gt of the same shape [V>=2, 4, 4], "
            f"got {tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    return pred, gt


def _ordered_pairs(num_views: int) -> tuple[Tensor, Tensor]:
    """Indices (i, j) of the ordered pairs i != j, i-major: (0,1), (0,2), ..., (1,0), (1,2), ..."""
    i, j = torch.meshgrid(torch.arange(num_views), torch.arange(num_views), indexing="ij")
    off_diagonal = i != j
    return i[off_diagonal], j[off_diagonal]


def relative_rotation_errors_deg(R_pred: Any, R_gt: Any) -> Tensor:
    """Relative rotation errors [V*(V-1)] in degrees over ordered pairs (i-major order).

    ``R_pred, R_gt [V, 3, 3]`` are **w2c (OpenCV) rotations**. The error of (i, j) is the angle between
    ``R_pred_i R_pred_j^T`` and ``R_gt_i R_gt_j^T``, identical to the PyTorch3D-convention
    ``R_i^T R_j`` numbers of the benchmark (see the module docstring).
    """
    R_pred = torch.as_tensor(R_pred).detach().to("cpu", torch.float64)
    R_gt = torch.as_tensor(R_gt).detach().to("cpu", torch.float64)
    if R_pred.shape != R_gt.shape or R_pred.dim() != 3 or R_pred.shape[-2:] != (3, 3):
        raise MetricError(
            f"relative rotations need R_pred and R_gt of the same shape [V, 3, 3], "
            f"got {tuple(R_pred.shape)} and {tuple(R_gt.shape)}"
        )
    i, j = _ordered_pairs(R_pred.shape[0])
    rel_pred = R_pred[i] @ R_pred[j].transpose(-1, -2)
    rel_gt = R_gt[i] @ R_gt[j].transpose(-1, -2)
    return rotation_angle_deg(rel_pred, rel_gt)


def rotation_accuracy(w2c_pred: Any, w2c_gt: Any, threshold_deg: float) -> float:
    """Rot@threshold in % (0..100): share of ordered pairs with relative rotation error < threshold_deg."""
    pred, gt = _poses(w2c_pred, w2c_gt)
    errors = relative_rotation_errors_deg(pred[:, :3, :3], gt[:, :3, :3])
    return float((errors < threshold_deg).double().mean() * 100.0)


def camera_center_errors(w2c_pred: Any, w2c_gt: Any) -> Tensor:
    """Per-view centre errors [V] after Umeyama alignment, in units of the GT scene scale.

    ``err_i = |C_gt_i - (s R C_pred_i + t)| / max_k |C_gt_k - mean(C_gt)|``.
    """
    pred, gt = _poses(w2c_pred, w2c_gt)
    centers_pred, centers_gt = camera_centers(pred), camera_centers(gt)  # [V, 3]
    s, R, t = umeyama(centers_pred, centers_gt, with_scale=True)
    aligned = s * centers_pred @ R.T + t
    scene_scale = (centers_gt - centers_gt.mean(0)).norm(dim=-1).max()
    if scene_scale <= 0:
        raise MetricError("camera centre accuracy is undefined: all GT camera centres coincide")
    return (centers_gt - aligned).norm(dim=-1) / scene_scale


def camera_center_accuracy(w2c_pred: Any, w2c_gt: Any, threshold: float = 0.1) -> float:
    """CC@threshold in % (0..100): share of views with :func:`camera_center_errors` < threshold."""
    return float((camera_center_errors(w2c_pred, w2c_gt) < threshold).double().mean() * 100.0)


def _project_to_so3(M: Tensor) -> Tensor:
    """Closest rotation (Frobenius) to ``M [3, 3]``: ``U diag(1, 1, det(U V^T)) V^T``."""
    U, _, Vh = torch.linalg.svd(M)
    fix = torch.ones(3, dtype=M.dtype)
    fix[2] = torch.sign(torch.linalg.det(U @ Vh))
    return (U * fix) @ Vh


def global_rotation_alignment(R_pred: Any, R_gt: Any, iterations: int = 100) -> Tensor:
    """Rotation ``A [3, 3]`` with ``R_pred_i ~ R_gt_i A`` (w2c rotations), robust to outlier views.

    Chordal L1 median of ``M_i = R_gt_i^T R_pred_i`` by Weiszfeld iterations
    ``A <- proj_SO3(sum_i M_i / |M_i - A|_F)`` started from the chordal L2 mean ``proj_SO3(sum_i M_i)``.
    A world change ``X' = G X`` turns w2c rotations into ``R G^T``, so ``A`` estimates ``G^T``.
    """
    R_pred = torch.as_tensor(R_pred).detach().to("cpu", torch.float64)
    R_gt = torch.as_tensor(R_gt).detach().to("cpu", torch.float64)
    M = R_gt.transpose(-1, -2) @ R_pred  # [V, 3, 3]
    A = _project_to_so3(M.sum(0))
    for _ in range(iterations):
        distances = torch.linalg.matrix_norm(M - A).clamp_min(1e-12)
        A_next = _project_to_so3((M / distances[:, None, None]).sum(0))
        converged = torch.linalg.matrix_norm(A_next - A) < 1e-14
        A = A_next
        if converged:
            break
    return A


def per_view_rotation_error_deg(w2c_pred: Any, w2c_gt: Any) -> Tensor:
    """Per-view absolute rotation errors [V] in degrees after the global alignment of
    :func:`global_rotation_alignment`: ``angle(R_pred_i A^T, R_gt_i)``."""
    pred, gt = _poses(w2c_pred, w2c_gt)
    A = global_rotation_alignment(pred[:, :3, :3], gt[:, :3, :3])
    return rotation_angle_deg(pred[:, :3, :3] @ A.T, gt[:, :3, :3])


def mean_rotation_error_deg(w2c_pred: Any, w2c_gt: Any) -> float:
    """Mean of :func:`per_view_rotation_error_deg`."""
    return float(per_view_rotation_error_deg(w2c_pred, w2c_gt).mean())


def pose_metrics(w2c_pred: Any, w2c_gt: Any, per_view_errors: Any = None) -> dict[str, float]:
    """``{"rot5", "rot15", "cc10"}`` in % and ``"rot_err_mean_deg"`` for OpenCV w2c poses [V, 4, 4].

    `per_view_errors`: :func:`per_view_rotation_error_deg` of the same poses when the caller has it (its
    global alignment is the costly part), else it is computed here.
    """
    if per_view_errors is None:
        mean_error = mean_rotation_error_deg(w2c_pred, w2c_gt)
    else:
        mean_error = float(torch.as_tensor(per_view_errors, dtype=torch.float64).mean())
    return {
        "rot5": rotation_accuracy(w2c_pred, w2c_gt, 5.0),
        "rot15": rotation_accuracy(w2c_pred, w2c_gt, 15.0),
        "cc10": camera_center_accuracy(w2c_pred, w2c_gt, 0.1),
        "rot_err_mean_deg": mean_error,
    }


def pose_errors(w2c_pred: Any, w2c_gt: Any) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Per-view rotation errors [V] (deg, :func:`per_view_rotation_error_deg`), per-view centre errors [V]
    (:func:`camera_center_errors`) and :func:`pose_metrics`, with one global rotation alignment: what a
    display of pose accuracy needs (the debugger's accuracy panel, the compare tab)."""
    rotation = per_view_rotation_error_deg(w2c_pred, w2c_gt)
    return (
        np.asarray(rotation, dtype=float),
        np.asarray(camera_center_errors(w2c_pred, w2c_gt), dtype=float),
        pose_metrics(w2c_pred, w2c_gt, per_view_errors=rotation),
    )


def align_similarity_plain(w2c_pred: Any, w2c_gt: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Similarity ``(s, R [3, 3], t [3])`` from the predicted world frame to the GT frame:
    ``X_gt ~ s R X_pred + t``, by Umeyama on all camera centres (float64).

    The protocol's alignment: every *reported* number that needs the two frames aligned (novel views, mesh,
    CC@tau) uses it. See :func:`align_similarity_robust` for the outlier-tolerant one used for display.
    """
    pred, gt = _poses(w2c_pred, w2c_gt)
    return umeyama(camera_centers(pred), camera_centers(gt), with_scale=True)


def align_similarity_robust(w2c_pred: Any, w2c_gt: Any, trim: float = 3.0) -> tuple[Tensor, Tensor, Tensor]:
    """Like :func:`align_similarity_plain`, ignoring gross outliers: ``(s, R [3, 3], t [3])`` float64.

    Umeyama on all camera centres, then again on those whose residual is within ``trim`` times the median
    residual (when at least 3 remain and some were dropped): an undetected outlier camera would otherwise
    bend the whole fit. Used to show the ground truth in the estimated frame (the debugger's GT frusta, the
    search heatmap's true cell) and for the searched pose's error in ``metrics.json`` → ``outliers``.
    """
    pred, gt = _poses(w2c_pred, w2c_gt)
    est, ref = camera_centers(pred), camera_centers(gt)
    s, R, t = umeyama(est, ref)
    residual = ((s * (est @ R.T) + t) - ref).norm(dim=-1)
    keep = residual <= trim * residual.median() + 1e-12
    if int(keep.sum()) >= 3 and not bool(keep.all()):
        s, R, t = umeyama(est[keep], ref[keep])
    return s, R, t


def transform_cameras_to_pred_frame(w2c_gt: Any, s: Any, R: Any, t: Any) -> Tensor:
    """Express GT cameras ``w2c_gt [..., 4, 4]`` in the predicted world frame (novel-view evaluation).

    With ``X_gt = s R X_pred + t`` (:func:`align_similarity_plain` or :func:`align_similarity_robust`), a GT camera ``[Q | q]`` sees
    ``X_cam = Q (s R X_pred + t) + q``. Dividing camera coordinates by ``s`` (which changes no pixel)
    keeps the matrix rigid: ``w2c_pred_frame = [[Q R, (Q t + q) / s], [0, 1]]``; its centre is the
    inverse similarity of the GT centre, ``R^T (C_gt - t) / s``, and its depths are scaled by 1/s.
    """
    w2c_gt = torch.as_tensor(w2c_gt)
    dtype = w2c_gt.dtype if w2c_gt.is_floating_point() else torch.float64
    s, R, t = (torch.as_tensor(v, dtype=dtype, device=w2c_gt.device) for v in (s, R, t))
    Q, q = w2c_gt[..., :3, :3], w2c_gt[..., :3, 3]
    out = torch.zeros_like(w2c_gt, dtype=dtype)
    out[..., :3, :3] = Q @ R
    out[..., :3, 3] = ((Q @ t[..., None])[..., 0] + q) / s
    out[..., 3, 3] = 1.0
    return out


# ----------------------------------------------------------------------------------------------
# Image metrics
# ----------------------------------------------------------------------------------------------
def _image_pair(img: Any, ref: Any, mask: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    def to_numpy(x: Any) -> np.ndarray:
        if isinstance(x, Tensor):
            x = x.detach().cpu().numpy()
        return np.asarray(x, dtype=np.float64)

    img, ref = to_numpy(img), to_numpy(ref)
    if img.shape != ref.shape or img.ndim not in (2, 3):
        raise MetricError(
            f"image metrics need two images of the same shape [H, W] or [H, W, C], got {img.shape} and {ref.shape}"
        )
    if mask is None:
        return img, ref, None
    mask = to_numpy(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.shape != img.shape[:2]:
        raise MetricError(f"mask shape {mask.shape} does not match image shape {img.shape[:2]}")
    if mask.sum() <= 0:
        raise MetricError("the mask is empty")
    return img, ref, mask


def psnr(img: Any, ref: Any, mask: Any | None = None, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)`` (inf when MSE = 0).

    With ``mask [H, W]`` (values in [0, 1]) the MSE is the mask-weighted mean over pixels and channels.
    """
    img, ref, mask = _image_pair(img, ref, mask)
    sq_err = (img - ref) ** 2
    if mask is None:
        mse = sq_err.mean()
    else:
        weights = mask if sq_err.ndim == 2 else mask[..., None] * np.ones(sq_err.shape[-1])
        mse = (sq_err * weights).sum() / weights.sum()
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def ssim(img: Any, ref: Any, mask: Any | None = None, data_range: float = 1.0) -> float:
    """Structural similarity (skimage, 7x7 uniform window, ``data_range``, channels on the last axis).

    Without a mask this is skimage's mean SSIM. With ``mask [H, W]`` it is the mask-weighted mean of
    the SSIM map (averaged over channels), over the same region skimage averages (the map without a
    3-pixel border, where the window is incomplete).
    """
    from skimage.metrics import structural_similarity

    img, ref, mask = _image_pair(img, ref, mask)
    channel_axis = -1 if img.ndim == 3 else None
    mean_ssim, ssim_map = structural_similarity(img, ref, data_range=data_range, channel_axis=channel_axis, full=True)
    if mask is None:
        return float(mean_ssim)
    pad = 3  # (win_size - 1) // 2 for skimage's default win_size of 7
    if ssim_map.ndim == 3:
        ssim_map = ssim_map.mean(-1)
    weights = mask.copy()
    weights[:pad], weights[-pad:], weights[:, :pad], weights[:, -pad:] = 0, 0, 0, 0
    if weights.sum() <= 0:
        raise MetricError("the mask lies entirely within the 3-pixel image border that SSIM ignores")
    return float((ssim_map * weights).sum() / weights.sum())


# ----------------------------------------------------------------------------------------------
# Mesh metrics
# ----------------------------------------------------------------------------------------------
def _load_mesh(mesh: trimesh.Trimesh | str | Path) -> trimesh.Trimesh:
    import trimesh

    if isinstance(mesh, trimesh.Trimesh):
        loaded = mesh
    else:
        path = Path(mesh)
        if not path.is_file():
            raise MetricError(f"{path}: mesh file not found")
        try:
            loaded = trimesh.load(path, force="mesh", process=False)
        except (ValueError, OSError, KeyError, IndexError) as error:
            raise MetricError(f"{path}: cannot read mesh ({error})") from error
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0 or loaded.area <= 0:
        raise MetricError(f"{mesh}: the mesh has no faces with positive area")
    return loaded


def sample_surface_points(mesh: trimesh.Trimesh | str | Path, count: int, seed: int = 0) -> np.ndarray:
    """``count`` points [count, 3] sampled uniformly by area on the mesh surface (reproducible by seed)."""
    import trimesh

    points, _ = trimesh.sample.sample_surface(_load_mesh(mesh), count, seed=seed)
    return np.asarray(points, dtype=np.float64)


@dataclass(frozen=True)
class MeshMetrics:
    """Mesh comparison results; distances in world units, percentages in 0..100."""

    chamfer: float  # mean of the two directed mean nearest-neighbour distances
    precision: float  # % of predicted samples within tau of the GT samples
    recall: float  # % of GT samples within tau of the predicted samples
    f1: float  # harmonic mean of precision and recall, %
    tau: float  # tau_ratio * GT bounding-box diagonal


def mesh_metrics(
    pred: trimesh.Trimesh | str | Path,
    gt: trimesh.Trimesh | str | Path,
    num_points: int = 100_000,
    tau_ratio: float = 0.01,
    seed: int = 0,
) -> MeshMetrics:
    """Chamfer distance and F1@tau between two meshes (or mesh files) in the same world frame.

    ``num_points`` samples per mesh, both drawn with ``seed`` (so a mesh compared with itself, or with
    a rigidly moved copy of itself, gets the same sample pattern: exact 0 / exact shift rather than
    sampling noise). ``tau = tau_ratio * |bbox_max - bbox_min|`` of the GT mesh.
    """
    gt_mesh = _load_mesh(gt)
    tau = tau_ratio * float(np.linalg.norm(gt_mesh.bounds[1] - gt_mesh.bounds[0]))
    gt_points = sample_surface_points(gt_mesh, num_points, seed)
    pred_points = sample_surface_points(pred, num_points, seed)
    from scipy.spatial import cKDTree

    pred_to_gt, _ = cKDTree(gt_points).query(pred_points)
    gt_to_pred, _ = cKDTree(pred_points).query(gt_points)
    precision = float((pred_to_gt < tau).mean() * 100.0)
    recall = float((gt_to_pred < tau).mean() * 100.0)
    f1 = 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)
    chamfer = 0.5 * float(pred_to_gt.mean() + gt_to_pred.mean())
    return MeshMetrics(chamfer=chamfer, precision=precision, recall=recall, f1=f1, tau=tau)


def chamfer_distance(
    pred: trimesh.Trimesh | str | Path, gt: trimesh.Trimesh | str | Path, num_points: int = 100_000, seed: int = 0
) -> float:
    """Symmetric Chamfer distance (world units) of :func:`mesh_metrics`."""
    return mesh_metrics(pred, gt, num_points=num_points, seed=seed).chamfer


def f1_score(
    pred: trimesh.Trimesh | str | Path,
    gt: trimesh.Trimesh | str | Path,
    num_points: int = 100_000,
    tau_ratio: float = 0.01,
    seed: int = 0,
) -> float:
    """F1@tau in % of :func:`mesh_metrics`."""
    return mesh_metrics(pred, gt, num_points=num_points, tau_ratio=tau_ratio, seed=seed).f1
