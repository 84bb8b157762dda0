"""Correspondence term, focal refinement, per-view pose evidence and the guard of Reconstruction."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from sparseags.cameras import project_points, rotation_angle_deg, se3_exp
from sparseags.matches import PairMatch, PairMatches
from sparseags.recon import Reconstruction, _scale_focal
from tests.test_recon import _config, _gt_scene


def _exact_matches(scene, count: int = 60, seed: int = 0) -> PairMatches:
    """Correspondences of random points near the object, projected with the GT cameras of every pair."""
    rng = np.random.default_rng(seed)
    points = torch.as_tensor(rng.uniform(-0.3, 0.3, size=(count, 3)))  # [P, 3]
    w2c, K = torch.as_tensor(scene.w2c_gt), torch.as_tensor(scene.K)
    pixels = [project_points(points, w2c[v], K[v])[0].numpy().astype(np.float32) for v in range(len(scene.ids))]
    pairs = [
        PairMatch(i, j, pixels[i], pixels[j], np.ones(count, dtype=bool))
        for i in range(len(scene.ids))
        for j in range(i + 1, len(scene.ids))
    ]
    return PairMatches(ids=list(scene.ids), pairs=pairs)


@pytest.fixture(scope="module")
def scene():
    return _gt_scene(32)[0]


def _rotated(w2c: np.ndarray, degrees: float, axis=(0.0, 1.0, 0.0)) -> np.ndarray:
    phi = torch.tensor([0.0, 0.0, 0.0, *axis], dtype=torch.float64) * math.radians(degrees)
    return (se3_exp(phi) @ torch.as_tensor(w2c)).numpy()


def test_scale_focal_changes_only_the_focal_lengths():
    K = torch.tensor([[[100.0, 0.0, 16.0], [0.0, 110.0, 15.0], [0.0, 0.0, 1.0]]]).repeat(2, 1, 1)
    out = _scale_focal(K, torch.tensor([1.0, 1.5]))
    assert torch.equal(out[0], K[0])
    assert out[1, 0, 0] == 150.0 and out[1, 1, 1] == 165.0
    assert torch.equal(out[1, :, 2], K[1, :, 2]) and out[1, 0, 1] == 0.0


def test_epipolar_evidence_is_zero_at_gt_and_grows_with_a_corrupted_view(scene):
    matches = _exact_matches(scene)
    recon = Reconstruction(scene, _config(32), iters=4, matches=matches)
    medians, inliers = recon.view_epipolar_errors()
    assert np.all(medians < 1e-3) and np.all(inliers == 60 * (len(scene.ids) - 1))
    w2c = torch.as_tensor(scene.w2c_gt, dtype=torch.float32).clone()
    w2c[2] = torch.as_tensor(_rotated(scene.w2c_gt[2], 5.0), dtype=torch.float32)
    medians, _ = recon.view_epipolar_errors(w2c)
    assert medians[2] > 1.0
    assert np.all(np.delete(medians, 2) < medians[2])


def test_epipolar_consistency_blames_the_wrong_view_not_its_partners(scene):
    matches = _exact_matches(scene)
    recon = Reconstruction(scene, _config(32), iters=4, matches=matches)
    assert np.all(recon.view_epipolar_consistency() < 1e-3)
    w2c = torch.as_tensor(scene.w2c_gt, dtype=torch.float32).clone()
    w2c[2] = torch.as_tensor(_rotated(scene.w2c_gt[2], 5.0), dtype=torch.float32)
    consistency = recon.view_epipolar_consistency(w2c)
    # every other view still has a consistent partner; view 2 has none
    assert consistency[2] > 0.5 and np.all(np.delete(consistency, 2) < 1e-3)
    # a view without a partner of at least `min_matches` matches has no value
    assert np.isnan(recon.view_epipolar_consistency(w2c, min_matches=61)).all()


def test_epipolar_term_pulls_a_rotated_camera_back(scene):
    """Photometric terms off: the correspondence term alone restores a 4° rotation of one camera."""
    w2c = scene.w2c_gt.copy()
    w2c[1] = _rotated(w2c[1], 4.0, axis=(0.6, 0.8, 0.0))
    cfg = _config(32, lambda_rgb=0.0, lambda_mask=0.0, lambda_epipolar=10.0, lr_camera=2e-3, guard=False)
    recon = Reconstruction(scene, cfg, iters=150, w2c_init=w2c, matches=_exact_matches(scene))
    before = recon.view_epipolar_errors()[0][1]
    recon.step(150)
    after = recon.view_epipolar_errors()[0][1]
    assert after < 0.2 * before
    current = recon.current_w2c().detach().double()
    gt = torch.as_tensor(scene.w2c_gt)
    # relative rotation of view 1 to view 0 (the gauge is free) is back near the truth
    rel = current[1, :3, :3] @ current[0, :3, :3].T
    rel_gt = gt[1, :3, :3] @ gt[0, :3, :3].T
    assert float(rotation_angle_deg(rel, rel_gt)) < 0.4 * 4.0


def test_guard_rolls_back_a_pose_corrupted_mid_run(scene):
    cfg = _config(32, evidence_every=2, guard=True, guard_min_matches=20)
    recon = Reconstruction(scene, cfg, iters=12, w2c_init=scene.w2c_gt, matches=_exact_matches(scene))
    recon.step(4)
    assert recon.guard_log == []
    start_pose = recon.initial_w2c[3].clone()
    # Corrupt view 3 mid-run: as if the optimisation had thrown it 12° off.
    recon.set_view_pose(3, _rotated(scene.w2c_gt[3], 12.0))
    recon.step(2)
    assert [entry["view"] for entry in recon.guard_log] == ["003"]
    assert "epipolar median" in recon.guard_log[0]["reason"]
    assert recon.pose_frozen[3]
    restored = recon.current_w2c().detach()[3]
    assert float(rotation_angle_deg(restored[:3, :3], start_pose[:3, :3])) < 0.5
    recon.step(6)  # frozen: the restored pose does not move any more
    assert torch.allclose(recon.current_w2c().detach()[3], restored, atol=1e-6)
    snap = recon.snapshot()
    assert snap["guard_log"][0]["view"] == "003" and snap["pose_frozen"][3]
    assert len(snap["evidence"]["step"]) == 6 and len(snap["evidence"]["epipolar"][0]) == len(scene.ids)
    assert snap["pose_error"]["step"][0] == 0 and len(snap["pose_error"]["rot_err_deg"][0]) == len(scene.ids)


def test_resume_with_matches_focal_and_guard_is_exact(scene):
    w2c = scene.w2c_gt.copy()
    w2c[2] = _rotated(w2c[2], 3.0)
    cfg = _config(32, evidence_every=2, lambda_epipolar=5.0, lr_focal=1e-3)
    matches = _exact_matches(scene)
    straight = Reconstruction(scene, cfg, iters=8, w2c_init=w2c, matches=matches)
    straight.step(8)
    first = Reconstruction(scene, cfg, iters=8, w2c_init=w2c, matches=matches)
    first.step(3)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = Reconstruction(scene, cfg, iters=8, w2c_init=w2c, matches=matches)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    resumed.step(5)
    assert torch.equal(straight.xi, resumed.xi)
    assert torch.equal(straight.log_focal, resumed.log_focal)
    assert float(straight.log_focal.detach().abs().max()) > 0.0  # the focal really moved
    assert straight.evidence == resumed.evidence
    assert straight.history == resumed.history
