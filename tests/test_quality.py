"""Tests of sparseags/quality.py: test-time pose refinement of novel views and ICP-registered mesh metrics."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh

from sparseags.cameras import rotation_angle_deg, se3_exp
from sparseags.gaussians import GaussianModel
from sparseags.quality import gaussian_render_fn, mesh_quality, novel_view_quality, refine_novel_poses
from sparseags.render.synthetic import random_object_scene, ring_cameras

SIZE = 48


@pytest.fixture(scope="module")
def gaussians() -> GaussianModel:
    """A textured blob of Gaussians (SH degree 0: colour varies across the object, not with view)."""
    scene = random_object_scene(
        600, sh_degree=0, radius=0.6, scale_range=(0.03, 0.08), opacity_range=(0.6, 1.0), seed=3
    )
    logit = torch.logit(scene.opacities.clamp(1e-4, 1 - 1e-4))
    return GaussianModel(scene.means, scene.quats, scene.scales.log(), logit, scene.sh[:, :1], torch.zeros(600, 0, 3))


def _perturb(w2c: torch.Tensor, rot_deg: float, shift: float) -> torch.Tensor:
    """Each camera moved by a camera-frame rotation of `rot_deg` about a different axis plus a shift."""
    axes = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, 0.3, 0.9]])
    axes = axes / axes.norm(dim=1, keepdim=True)
    xi = torch.cat([shift * axes.roll(1, 0), np.radians(rot_deg) * axes], dim=1)  # [3, 6]
    return se3_exp(xi) @ w2c


def test_gaussian_render_fn_leaves_no_gradients(gaussians: GaussianModel) -> None:
    w2c, K = ring_cameras(1, SIZE, SIZE)
    render = gaussian_render_fn(gaussians, backend="cpu")
    pose = w2c.clone().requires_grad_(True)
    render(pose, K, SIZE, SIZE).sum().backward()
    assert pose.grad is not None and pose.grad.abs().sum() > 0
    assert all(p.grad is None for p in gaussians.parameters())


def test_refinement_recovers_a_perturbed_camera(gaussians: GaussianModel) -> None:
    w2c, K = ring_cameras(3, SIZE, SIZE, distance=2.2)
    render = gaussian_render_fn(gaussians, backend="cpu")
    with torch.no_grad():
        targets = render(w2c, K, SIZE, SIZE)
    start = _perturb(w2c, rot_deg=2.0, shift=0.02)
    refined = refine_novel_poses(render, start, K, targets, steps=120, lr=3e-3)
    before = rotation_angle_deg(start[:, :3, :3].double(), w2c[:, :3, :3].double())
    after = rotation_angle_deg(refined[:, :3, :3].double(), w2c[:, :3, :3].double())
    assert torch.all(before > 1.9)
    assert torch.all(after < 0.5 * before), (before, after)
    with torch.no_grad():
        err_before = ((render(start, K, SIZE, SIZE) - targets) ** 2).mean()
        err_after = ((render(refined, K, SIZE, SIZE) - targets) ** 2).mean()
    assert err_after < 0.2 * err_before
    assert torch.equal(refine_novel_poses(render, start, K, targets, steps=0), start.float())


def test_novel_view_quality_aligns_frames_and_refines(gaussians: GaussianModel) -> None:
    # The estimated frame is the GT frame under a similarity; novel GT cameras must be mapped through it.
    w2c_gt, K = ring_cameras(6, SIZE, SIZE, distance=2.2)
    render = gaussian_render_fn(gaussians, backend="cpu")
    with torch.no_grad():
        images = render(w2c_gt, K, SIZE, SIZE).numpy()
    novel = SimpleNamespace(
        w2c=w2c_gt[3:].double().numpy(),
        K=K[3:].double().numpy(),
        images=images[3:],
        masks=np.ones(images[3:].shape[:3], dtype=np.float32),
    )
    inputs_gt = w2c_gt[:3].double()
    exact = novel_view_quality(render, inputs_gt, inputs_gt, novel, refine_steps=0)
    assert exact["psnr"] > 60.0 and "pose_refined" not in exact
    # inputs estimated with a small error: the aligned novel views are off, refinement brings them back
    noisy = _perturb(inputs_gt.float(), rot_deg=1.5, shift=0.03).double()
    result = novel_view_quality(render, noisy, inputs_gt, novel, refine_steps=120, refine_lr=3e-3)
    assert result["psnr"] < 40.0
    assert result["pose_refined"]["psnr"] > result["psnr"] + 3.0
    assert result["pose_refined"]["steps"] == 120 and result["pose_refined"]["mean_correction_deg"] > 0.1


def _box_cameras() -> np.ndarray:
    """Three OpenCV w2c looking at the origin (only their centres matter for the alignment)."""
    return ring_cameras(3, 32, 32)[0].double().numpy()


def test_mesh_quality_self_shift_and_icp() -> None:
    gt = trimesh.creation.box(extents=(0.6, 0.4, 0.3))
    cams = _box_cameras()
    same = mesh_quality(gt, gt, cams, cams, num_points=20000)
    assert same["f1_0.01"] > 99.0 and same["icp"]["f1_0.01"] > 99.0
    # a copy shifted by 3 tau along the diagonal (every face moves 1.7 tau along its normal): camera-aligned
    # F1 collapses, ICP registers it back
    tau = 0.01 * float(np.linalg.norm(gt.extents))
    shifted = gt.copy()
    shifted.apply_translation(3 * tau * np.ones(3) / np.sqrt(3.0))
    result = mesh_quality(shifted, gt, cams, cams, num_points=20000)
    assert result["f1_0.01"] < 30.0
    assert result["icp"]["f1_0.01"] > 95.0
    assert result["icp"]["correction_shift"] == pytest.approx(3 * tau, rel=0.1)
    assert result["icp"]["correction_deg"] < 1.0
    without = mesh_quality(shifted, gt, cams, cams, num_points=20000, icp=False)
    assert "icp" not in without and without["f1_0.01"] == pytest.approx(result["f1_0.01"])
