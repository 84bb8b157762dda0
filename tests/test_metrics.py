"""Tests for sparseags.metrics with hand-made cases and exact expected answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from sparseags import metrics
from sparseags.cameras import (
    c2w_gl_to_w2c,
    camera_centers,
    intrinsics_matrix,
    look_at_c2w_gl,
    project_points,
    rotation_angle_deg,
    w2c_to_p3d,
)


def ring_of_cameras(num_views: int = 8, seed: int = 0) -> torch.Tensor:
    """OpenCV w2c [V, 4, 4] of cameras around the origin at varied heights, looking at small offsets."""
    rng = np.random.default_rng(seed)
    azim = np.linspace(0, 2 * np.pi, num_views, endpoint=False) + rng.uniform(-0.2, 0.2, num_views)
    height = rng.uniform(-0.3, 1.0, num_views)
    dist = rng.uniform(1.7, 2.2, num_views)
    campos = np.stack([dist * np.sin(azim), height, dist * np.cos(azim)], -1)
    target = rng.uniform(-0.05, 0.05, (num_views, 3))
    return c2w_gl_to_w2c(look_at_c2w_gl(torch.as_tensor(campos), torch.as_tensor(target)))


def similarity_of_world(w2c: torch.Tensor, s: float, G: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Cameras after the world change X' = s G X + t (camera coordinates rescaled by s to stay rigid)."""
    out = w2c.clone()
    R, tc = w2c[:, :3, :3], w2c[:, :3, 3]
    out[:, :3, :3] = R @ G.T
    out[:, :3, 3] = s * tc - (R @ G.T @ t[:, None])[..., 0]
    return out


def rotate_view_about_world_y(w2c: torch.Tensor, view: int, degrees: float) -> torch.Tensor:
    """Move one camera rigidly about the world origin (like the benchmark's outliers)."""
    G = torch.as_tensor(Rotation.from_euler("y", degrees, degrees=True).as_matrix())
    out = w2c.clone()
    out[view, :3, :3] = w2c[view, :3, :3] @ G.T
    return out


# ------------------------------------------------------------------------------------------------
# Pose metrics
# ------------------------------------------------------------------------------------------------
def test_identical_poses_are_perfect():
    gt = ring_of_cameras()
    result = metrics.pose_metrics(gt, gt)
    assert result["rot5"] == 100.0 and result["rot15"] == 100.0 and result["cc10"] == 100.0
    assert result["rot_err_mean_deg"] == pytest.approx(0.0, abs=1e-6)
    assert set(result) == {"rot5", "rot15", "cc10", "rot_err_mean_deg"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_global_similarity_changes_nothing(seed):
    gt = ring_of_cameras(seed=seed)
    G = torch.as_tensor(Rotation.random(random_state=seed).as_matrix())
    pred = similarity_of_world(gt, 2.5, G, torch.tensor([0.3, -4.0, 1.5], dtype=torch.float64))
    # Sanity of the helper: centres move by the similarity.
    expected_centers = 2.5 * camera_centers(gt) @ G.T + torch.tensor([0.3, -4.0, 1.5], dtype=torch.float64)
    torch.testing.assert_close(camera_centers(pred), expected_centers)
    result = metrics.pose_metrics(pred, gt)
    assert result["rot5"] == 100.0 and result["rot15"] == 100.0 and result["cc10"] == 100.0
    assert result["rot_err_mean_deg"] == pytest.approx(0.0, abs=1e-6)
    assert metrics.camera_center_errors(pred, gt).max() < 1e-9
    s, R, t = metrics.align_similarity_plain(pred, gt)  # maps predicted frame to GT frame
    assert s.item() == pytest.approx(1 / 2.5)
    torch.testing.assert_close(R, G.T)


def test_robust_similarity_ignores_a_moved_camera_and_plain_does_not():
    gt = ring_of_cameras(num_views=8, seed=3)
    G = torch.as_tensor(Rotation.random(random_state=3).as_matrix())
    shift = torch.tensor([0.3, -4.0, 1.5], dtype=torch.float64)
    pred = similarity_of_world(gt, 2.5, G, shift)
    # Without outliers both are the same fit.
    for a, b in zip(metrics.align_similarity_plain(pred, gt), metrics.align_similarity_robust(pred, gt)):
        torch.testing.assert_close(a, b)
    # One camera far off: the plain fit bends, the robust one recovers the exact similarity.
    moved = pred.clone()
    moved[5, :3, 3] += torch.tensor([9.0, 0.0, -7.0], dtype=torch.float64)
    s, R, t = metrics.align_similarity_robust(moved, gt)
    assert s.item() == pytest.approx(1 / 2.5) and torch.allclose(R, G.T, atol=1e-9)
    s_plain, R_plain, _ = metrics.align_similarity_plain(moved, gt)
    assert abs(s_plain.item() - 1 / 2.5) > 1e-3
    # numpy inputs as the debugger passes them
    s_np, _, _ = metrics.align_similarity_robust(moved.numpy(), gt.numpy())
    assert s_np.item() == s.item()


def test_one_view_flipped_about_y():
    gt = ring_of_cameras(num_views=4)
    pred = rotate_view_about_world_y(gt, view=2, degrees=180.0)
    errors = metrics.relative_rotation_errors_deg(pred[:, :3, :3], gt[:, :3, :3])
    assert errors.shape == (12,)
    # i-major ordered pairs: (0,1) (0,2) (0,3) (1,0) (1,2) (1,3) (2,0) (2,1) (2,3) (3,0) (3,1) (3,2)
    involves_view_2 = torch.tensor([0, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1], dtype=torch.bool)
    torch.testing.assert_close(errors[involves_view_2], torch.full((6,), 180.0, dtype=torch.float64))
    assert errors[~involves_view_2].max() < 1e-6
    assert metrics.rotation_accuracy(pred, gt, 15.0) == 50.0
    assert metrics.rotation_accuracy(pred, gt, 5.0) == 50.0
    # Robust alignment: the three good views have no error, the flipped one 180 degrees.
    per_view = metrics.per_view_rotation_error_deg(pred, gt)
    torch.testing.assert_close(per_view, torch.tensor([0.0, 0.0, 180.0, 0.0], dtype=torch.float64), atol=1e-6, rtol=0)
    assert metrics.pose_metrics(pred, gt)["rot_err_mean_deg"] == pytest.approx(45.0, abs=1e-6)


def test_relative_rotation_errors_equal_the_pytorch3d_formula():
    """The benchmark defines R_rel = R_i^T R_j with PyTorch3D R; we compute on w2c rotations."""
    rng = np.random.default_rng(5)
    gt = ring_of_cameras(num_views=5)
    noise = torch.as_tensor(Rotation.from_rotvec(rng.normal(scale=0.2, size=(5, 3))).as_matrix())
    pred = gt.clone()
    pred[:, :3, :3] = noise @ gt[:, :3, :3]
    R_pred, _ = w2c_to_p3d(pred)
    R_gt, _ = w2c_to_p3d(gt)
    pairs = [(i, j) for i in range(5) for j in range(5) if i != j]
    expected = [rotation_angle_deg(R_pred[i].T @ R_pred[j], R_gt[i].T @ R_gt[j]) for i, j in pairs]
    errors = metrics.relative_rotation_errors_deg(pred[:, :3, :3], gt[:, :3, :3])
    torch.testing.assert_close(errors, torch.stack(expected), atol=1e-9, rtol=0)
    assert errors.min() > 0.5  # the noise is visible, so this case is not trivially zero


def test_rotation_threshold_is_strict_and_counts_pairs():
    gt = ring_of_cameras(num_views=3)
    pred = rotate_view_about_world_y(gt, view=0, degrees=10.0)
    # 4 of 6 ordered pairs involve view 0 and are off by exactly 10 degrees.
    assert metrics.rotation_accuracy(pred, gt, 10.0 + 1e-6) == 100.0
    assert metrics.rotation_accuracy(pred, gt, 10.0 - 1e-6) == pytest.approx(100.0 * 2 / 6)
    assert metrics.rotation_accuracy(pred, gt, 5.0) == pytest.approx(100.0 / 3)


def brute_force_center_errors(pred_centers: np.ndarray, gt_centers: np.ndarray) -> np.ndarray:
    """Independent least-squares similarity (scipy, rotation vector + log-scale) and normalised errors."""

    def residuals(params: np.ndarray) -> np.ndarray:
        rot = Rotation.from_rotvec(params[:3]).as_matrix()
        aligned = np.exp(params[3]) * pred_centers @ rot.T + params[4:]
        return (aligned - gt_centers).ravel()

    best = min(
        (
            least_squares(
                residuals,
                np.r_[Rotation.random(random_state=k).as_rotvec(), 0.0, 0.0, 0.0, 0.0],
                xtol=1e-15,
                ftol=1e-15,
                gtol=1e-15,
            )
            for k in range(6)
        ),
        key=lambda r: r.cost,
    )
    aligned_err = np.linalg.norm(residuals(best.x).reshape(-1, 3), axis=-1)
    scene_scale = np.linalg.norm(gt_centers - gt_centers.mean(0), axis=-1).max()
    return aligned_err / scene_scale


@pytest.mark.parametrize("moved_by", [0.2, 0.5, 30.0])
def test_camera_center_accuracy_with_one_camera_moved(moved_by):
    gt = ring_of_cameras()
    pred = gt.clone()
    moved_center = camera_centers(gt[3]) + torch.tensor([moved_by, 0.2 * moved_by, 0.0], dtype=torch.float64)
    pred[3, :3, 3] = -(gt[3, :3, :3] @ moved_center)  # same orientation, centre moved
    torch.testing.assert_close(camera_centers(pred[3]), moved_center)
    expected_errors = brute_force_center_errors(camera_centers(pred).numpy(), camera_centers(gt).numpy())
    errors = metrics.camera_center_errors(pred, gt).numpy()
    np.testing.assert_allclose(errors, expected_errors, atol=1e-6)
    assert np.abs(errors - 0.1).min() > 1e-3, "no error sits on the threshold, so the share is exact"
    expected_share = 100.0 * (expected_errors < 0.1).sum() / 8
    assert metrics.camera_center_accuracy(pred, gt, 0.1) == pytest.approx(expected_share)
    assert metrics.pose_metrics(pred, gt)["cc10"] == pytest.approx(expected_share)
    if moved_by == 30.0:  # far away: the fit shrinks everything, nothing is within 0.1
        assert expected_share == 0.0
    if moved_by == 0.5:  # only the moved camera fails
        assert expected_share == 87.5 and errors.argmax() == 3


def test_camera_center_accuracy_hand_case():
    """4 GT centres on a unit square around the origin; prediction = GT with one centre pushed out.

    The Umeyama fit of 4 points where only one moved along the square's diagonal keeps the symmetry
    about that diagonal; errors are checked against the brute-force fit and the share counted by hand.
    """
    corners = np.array([[1.0, 0, 1], [-1, 0, 1], [-1, 0, -1], [1, 0, -1]])
    pred_corners = corners.copy()
    pred_corners[0] *= 1.2
    w2c_gt = c2w_gl_to_w2c(look_at_c2w_gl(torch.as_tensor(corners), torch.zeros(4, 3, dtype=torch.float64)))
    w2c_pred = c2w_gl_to_w2c(look_at_c2w_gl(torch.as_tensor(pred_corners), torch.zeros(4, 3, dtype=torch.float64)))
    errors = metrics.camera_center_errors(w2c_pred, w2c_gt).numpy()
    np.testing.assert_allclose(errors, brute_force_center_errors(pred_corners, corners), atol=1e-6)
    # The two neighbours of the moved corner are symmetric about the diagonal through it.
    assert errors[1] == pytest.approx(errors[3], abs=1e-9)
    assert metrics.camera_center_accuracy(w2c_pred, w2c_gt, 0.1) == 100.0 * (errors < 0.1).mean()
    assert metrics.camera_center_accuracy(w2c_pred, w2c_gt, 1.0) == 100.0


def test_transform_gt_cameras_into_predicted_frame():
    """A GT novel camera mapped into the predicted frame sees the mapped points at the same pixels."""
    gt = ring_of_cameras(seed=3)
    G = torch.as_tensor(Rotation.from_rotvec([0.2, 1.0, -0.4]).as_matrix())
    offset = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    pred = similarity_of_world(gt, 0.7, G, offset)  # X_pred = 0.7 G X_gt + offset
    s, R, t = metrics.align_similarity_plain(pred, gt)  # X_gt = s R X_pred + t
    novel_gt = ring_of_cameras(num_views=3, seed=9)
    novel_pred = metrics.transform_cameras_to_pred_frame(novel_gt, s, R, t)
    torch.testing.assert_close(novel_pred, similarity_of_world(novel_gt, 0.7, G, offset))
    points_gt = torch.as_tensor(np.random.default_rng(0).uniform(-0.5, 0.5, (20, 3)))
    points_pred = 0.7 * points_gt @ G.T + offset
    K = intrinsics_matrix(300.0, 300.0, 128.0, 128.0).double()
    uv_gt, z_gt = project_points(points_gt, novel_gt, K)
    uv_pred, z_pred = project_points(points_pred, novel_pred, K)
    torch.testing.assert_close(uv_pred, uv_gt)
    torch.testing.assert_close(z_pred, z_gt * 0.7)


def test_pose_metric_input_errors():
    gt = ring_of_cameras(num_views=4)
    with pytest.raises(metrics.MetricError, match="same shape"):
        metrics.pose_metrics(gt[:3], gt)
    with pytest.raises(metrics.MetricError, match="V>=2"):
        metrics.rotation_accuracy(gt[:1], gt[:1], 5.0)


def test_pose_metrics_accept_numpy_and_float32():
    gt = ring_of_cameras()
    result = metrics.pose_metrics(gt.float().numpy(), gt.numpy())
    assert result["rot5"] == 100.0 and result["cc10"] == 100.0


# ------------------------------------------------------------------------------------------------
# Image metrics
# ------------------------------------------------------------------------------------------------
def test_psnr_of_known_mse():
    ref = np.full((16, 16, 3), 0.5)
    img = ref + 0.1  # MSE = 0.01 -> 20 dB
    assert metrics.psnr(img, ref) == pytest.approx(20.0)
    img2 = ref.copy()
    img2[:8] += 0.1  # half the pixels off by 0.1 -> MSE 0.005
    assert metrics.psnr(img2, ref) == pytest.approx(10 * math.log10(1 / 0.005))
    mask = np.zeros((16, 16))
    mask[:8] = 1.0  # only the wrong half
    assert metrics.psnr(img2, ref, mask) == pytest.approx(20.0)
    mask_good = 1.0 - mask
    assert metrics.psnr(img2, ref, mask_good) == math.inf
    assert metrics.psnr(torch.as_tensor(img, dtype=torch.float32), torch.as_tensor(ref)) == pytest.approx(
        20.0, abs=1e-4
    )
    assert metrics.psnr(img[..., 0] * 255, ref[..., 0] * 255, data_range=255.0) == pytest.approx(20.0)


def test_ssim_matches_skimage_and_masks():
    rng = np.random.default_rng(0)
    ref = rng.uniform(size=(32, 32, 3))
    assert metrics.ssim(ref, ref) == pytest.approx(1.0)
    noisy = np.clip(ref + rng.normal(scale=0.1, size=ref.shape), 0, 1)
    value = metrics.ssim(noisy, ref)
    assert 0.0 < value < 0.99
    # Corrupt only the right half: the SSIM inside a mask on the (untouched) left part is 1.
    half = ref.copy()
    half[:, 16:] = noisy[:, 16:]
    mask = np.zeros((32, 32))
    mask[:, :10] = 1.0
    assert metrics.ssim(half, ref, mask) == pytest.approx(1.0)
    assert metrics.ssim(half, ref) < 0.99
    # Full mask equals the unmasked value.
    assert metrics.ssim(noisy, ref, np.ones((32, 32))) == pytest.approx(value)


def test_image_metric_input_errors():
    with pytest.raises(metrics.MetricError, match="same shape"):
        metrics.psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(metrics.MetricError, match="mask shape"):
        metrics.psnr(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)), np.ones((3, 3)))
    with pytest.raises(metrics.MetricError, match="empty"):
        metrics.ssim(np.zeros((16, 16)), np.zeros((16, 16)), np.zeros((16, 16)))


# ------------------------------------------------------------------------------------------------
# Mesh metrics
# ------------------------------------------------------------------------------------------------
def square_in_yz_plane() -> trimesh.Trimesh:
    """Unit square at x = 0 (normal along x), two triangles; bbox diagonal sqrt(2)."""
    vertices = np.array([[0.0, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1]])
    return trimesh.Trimesh(vertices, np.array([[0, 1, 2], [0, 2, 3]]), process=False)


def test_mesh_against_itself():
    box = trimesh.creation.box(extents=(1.0, 0.6, 0.4))
    result = metrics.mesh_metrics(box, box, num_points=50_000)
    assert result.f1 == 100.0 and result.precision == 100.0 and result.recall == 100.0
    assert result.tau == pytest.approx(0.01 * math.sqrt(1.0 + 0.36 + 0.16))
    assert result.chamfer == pytest.approx(0.0, abs=1e-12)
    # A different tessellation of the same surface: independent samples, still F1 100 at this density.
    fine = box.subdivide().subdivide()
    result_fine = metrics.mesh_metrics(fine, box, num_points=100_000)
    assert result_fine.f1 > 99.9 and result_fine.chamfer < 0.3 * result_fine.tau


def test_shifted_plane_f1_exact():
    gt = square_in_yz_plane()
    tau = 0.01 * math.sqrt(2.0)
    far = gt.copy()
    far.apply_translation([2 * tau, 0, 0])
    result_far = metrics.mesh_metrics(far, gt, num_points=20_000)
    assert result_far.tau == pytest.approx(tau)
    assert result_far.f1 == 0.0 and result_far.precision == 0.0 and result_far.recall == 0.0
    # Every sample is at least 2 tau away; the chamfer distance is close to (and not below) 2 tau.
    assert 2 * tau <= result_far.chamfer < 2.2 * tau
    near = gt.copy()
    near.apply_translation([tau / 2, 0, 0])
    result_near = metrics.mesh_metrics(near, gt, num_points=100_000)
    assert result_near.f1 == 100.0
    assert metrics.f1_score(near, gt, num_points=100_000) == 100.0
    assert metrics.chamfer_distance(near, gt, num_points=20_000) >= tau / 2


def test_shifted_box_by_half_tau_is_perfect():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    shifted = box.copy()
    shifted.apply_translation([0.005 * math.sqrt(3.0), 0, 0])
    assert metrics.f1_score(shifted, box, num_points=100_000) == 100.0


def test_mesh_files_and_errors(tmp_path):
    path = tmp_path / "square.ply"
    square_in_yz_plane().export(path)
    assert metrics.f1_score(path, str(path), num_points=5_000) == 100.0
    with pytest.raises(metrics.MetricError, match="missing.ply: mesh file not found"):
        metrics.mesh_metrics(tmp_path / "missing.ply", path)
    points = metrics.sample_surface_points(path, 100, seed=3)
    assert points.shape == (100, 3) and np.all(points[:, 0] == 0.0)
    np.testing.assert_array_equal(points, metrics.sample_surface_points(path, 100, seed=3))
