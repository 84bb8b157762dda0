"""Pairwise SIFT matches (sparseags.matches): agreement with GT poses, epipolar maths, gradients, caching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparseags import matches as M
from sparseags.cameras import se3_exp, so3_exp
from sparseags.scene import load_scene
from sparseags.synth import look_at_w2c, make_demo_scene


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = make_demo_scene(tmp_path_factory.mktemp("matches") / "demo", seed=0, n_views=6, n_novel=0, resolution=128)
    return load_scene(root)


@pytest.fixture(scope="module")
def demo_matches(demo):
    return M.extract_pair_matches(demo)


def _camera(azimuth_deg: float, elevation_deg: float = 20.0, distance: float = 2.5):
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    centre = distance * np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
    w2c = torch.tensor(look_at_w2c(centre, np.zeros(3)), dtype=torch.float64)
    K = torch.tensor([[300.0, 0.0, 130.0], [0.0, 310.0, 126.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return K, w2c


def _project(points: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor) -> torch.Tensor:
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]  # [N, 3]
    pix = cam @ K.T
    return pix[:, :2] / pix[:, 2:]


def _synthetic_pair(seed: int = 0, n: int = 50):
    gen = torch.Generator().manual_seed(seed)
    points = (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5) * 1.0
    K_i, w2c_i = _camera(0.0)
    K_j, w2c_j = _camera(40.0, 30.0, 2.2)
    return points, (K_i, w2c_i), (K_j, w2c_j)


# ---------------------------------------------------------------------------------------------------------
# Extraction on the demo scene
# ---------------------------------------------------------------------------------------------------------


def test_demo_matches_agree_with_gt_poses(demo, demo_matches):
    summary = demo_matches.summary()
    assert summary["pairs"] >= 2 and summary["matches"] >= 30, summary
    assert set(summary["per_view"]) == set(demo.ids)
    flat = demo_matches.flat(dtype=torch.float64)
    assert flat.num_matches == summary["matches"]
    errors = M.match_errors_px(flat, torch.tensor(demo.K_gt), torch.tensor(demo.w2c_gt))
    assert errors.shape == (summary["matches"],)
    assert float(errors.median()) < 1.5, float(errors.median())
    for pair in demo_matches.pairs:
        assert pair.i < pair.j
        assert pair.xy_i.dtype == np.float32 and pair.xy_i.shape == pair.xy_j.shape == (len(pair.inlier), 2)
        assert pair.num_verified >= demo_matches.settings.min_matches
        # Keypoints lie inside the object mask.
        for view, xy in ((pair.i, pair.xy_i), (pair.j, pair.xy_j)):
            rows, cols = xy[:, 1].astype(int), xy[:, 0].astype(int)
            assert (demo.masks[view][rows, cols] >= 0.5).all()


def test_extraction_is_deterministic(demo, demo_matches):
    again = M.extract_pair_matches(demo)
    assert [(p.i, p.j) for p in again.pairs] == [(p.i, p.j) for p in demo_matches.pairs]
    for a, b in zip(again.pairs, demo_matches.pairs):
        np.testing.assert_array_equal(a.xy_i, b.xy_i)
        np.testing.assert_array_equal(a.inlier, b.inlier)


def test_too_few_matches_are_dropped_and_empty_masks_do_not_crash(demo, demo_matches):
    strict = M.extract_pair_matches(demo, min_matches=10_000)
    assert strict.pairs == [] and strict.summary()["matches"] == 0
    assert strict.flat().num_matches == 0
    loose = M.extract_pair_matches(demo, min_matches=8)
    kept = {(p.i, p.j) for p in demo_matches.pairs}
    assert kept < {(p.i, p.j) for p in loose.pairs}  # the default drops the pairs with 8..19 verified matches
    assert all(p.num_verified >= 8 for p in loose.pairs)
    assert any(p.num_verified < demo_matches.settings.min_matches for p in loose.pairs)

    masks = demo.masks.copy()
    masks[1] = 0.0
    partial = M.extract_pair_matches((demo.ids, demo.images, masks))
    assert all(1 not in (p.i, p.j) for p in partial.pairs)
    assert partial.summary()["per_view"][demo.ids[1]] == 0
    empty = M.extract_pair_matches((demo.images, np.zeros_like(demo.masks)))
    assert empty.pairs == [] and empty.summary()["pairs"] == 0


# ---------------------------------------------------------------------------------------------------------
# Epipolar geometry
# ---------------------------------------------------------------------------------------------------------


def test_sampson_error_is_zero_at_gt_and_grows_with_rotation():
    points, (K_i, w2c_i), (K_j, w2c_j) = _synthetic_pair()
    xy_i, xy_j = _project(points, K_i, w2c_i), _project(points, K_j, w2c_j)
    F = M.fundamental_from_poses(K_i, K_j, w2c_i, w2c_j)
    assert F.shape == (3, 3)
    errors = M.sampson_error_px(xy_i, xy_j, F)
    assert errors.shape == (len(points),)
    assert float(errors.max()) < 1e-8
    # x_j^T F x_i = 0 directly.
    ones = torch.ones(len(points), 1, dtype=torch.float64)
    algebraic = (torch.cat([xy_j, ones], 1) @ F * torch.cat([xy_i, ones], 1)).sum(1)
    assert float(algebraic.abs().max() / F.norm()) < 1e-9

    turn = torch.eye(4, dtype=torch.float64)
    turn[:3, :3] = so3_exp(torch.tensor([math.radians(2.0) * 0.6, 0.0, math.radians(2.0) * 0.8], dtype=torch.float64))
    F_bad = M.fundamental_from_poses(K_i, K_j, w2c_i, turn @ w2c_j)
    bad = M.sampson_error_px(xy_i, xy_j, F_bad)
    assert float(bad.median()) > 1.0, float(bad.median())

    # Batched: F [P, 1, 3, 3] against points [P, M, 2]; F is scale invariant.
    Fs = torch.stack([F, 3.0 * F_bad])[:, None]
    both = M.sampson_error_px(torch.stack([xy_i, xy_i]), torch.stack([xy_j, xy_j]), Fs)
    assert both.shape == (2, len(points))
    torch.testing.assert_close(both[1], bad)


def test_sampson_gradient_matches_finite_differences():
    points, (K_i, w2c_i), (K_j, w2c_j) = _synthetic_pair(seed=1, n=12)
    xy_i, xy_j = _project(points, K_i, w2c_i), _project(points, K_j, w2c_j)
    gen = torch.Generator().manual_seed(3)
    xy_j = xy_j + torch.randn(xy_j.shape, generator=gen, dtype=torch.float64)  # away from the |.| kink at 0

    def loss(xi: torch.Tensor) -> torch.Tensor:
        F = M.fundamental_from_poses(K_i, K_j, w2c_i, se3_exp(xi) @ w2c_j)
        errors = M.sampson_error_px(xy_i, xy_j, F)
        return M.robust_epipolar_loss(errors, 2.0, "cauchy").sum() + errors.sum()

    xi0 = torch.tensor([0.01, -0.02, 0.015, 0.01, 0.005, -0.01], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(xi0), xi0)
    step = 1e-6
    numeric = torch.zeros(6, dtype=torch.float64)
    for k in range(6):
        delta = torch.zeros(6, dtype=torch.float64)
        delta[k] = step
        numeric[k] = (loss(xi0.detach() + delta) - loss(xi0.detach() - delta)) / (2 * step)
    torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-6)
    assert torch.autograd.gradcheck(
        lambda a, b: M.sampson_error_px(a, b, M.fundamental_from_poses(K_i, K_j, w2c_i, w2c_j)),
        (xy_i.clone().requires_grad_(), xy_j.clone().requires_grad_()),
    )


def test_robust_losses():
    e = torch.tensor([0.0, 1.0, 2.0, 10.0], dtype=torch.float64)
    torch.testing.assert_close(M.robust_epipolar_loss(e, 2.0, "cauchy"), torch.log1p((e / 2) ** 2))
    torch.testing.assert_close(
        M.robust_epipolar_loss(e, 2.0, "clamped"), torch.tensor([0.0, 0.25, 1.0, 1.0], dtype=torch.float64)
    )
    torch.testing.assert_close(M.robust_epipolar_loss(e, 2.0, "l2"), (e / 2) ** 2)
    e32 = e.float().requires_grad_()
    M.robust_epipolar_loss(e32, 2.0).sum().backward()
    assert e32.grad.dtype == torch.float32 and torch.isfinite(e32.grad).all()
    with pytest.raises(ValueError, match="huber"):
        M.robust_epipolar_loss(e, 2.0, "huber")


# ---------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------


def test_save_load_round_trip_and_stale_cache(tmp_path, demo, demo_matches):
    path = demo_matches.save(tmp_path / "cache" / "matches.npz")
    assert [p.name for p in path.parent.iterdir()] == ["matches.npz"]  # no temporary files left behind
    loaded = M.PairMatches.load(path, ids=demo.ids, image_hash=demo_matches.image_hash, settings=demo_matches.settings)
    assert loaded.ids == demo_matches.ids and loaded.summary() == demo_matches.summary()
    for a, b in zip(loaded.pairs, demo_matches.pairs):
        assert (a.i, a.j) == (b.i, b.j)
        np.testing.assert_array_equal(a.xy_i, b.xy_i)
        np.testing.assert_array_equal(a.xy_j, b.xy_j)
        np.testing.assert_array_equal(a.inlier, b.inlier)

    with pytest.raises(M.MatchCacheError) as info:
        M.PairMatches.load(path, ids=["a", "b", "c"])
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value) and "matches.npz" in str(info.value)
    with pytest.raises(M.MatchCacheError, match="stale"):
        M.PairMatches.load(path, ids=demo.ids, image_hash="0" * 16)
    with pytest.raises(M.MatchCacheError, match="settings"):
        M.PairMatches.load(path, settings=M.MatchSettings(ratio=0.5))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(M.MatchCacheError, match="cannot read"):
        M.PairMatches.load(tmp_path / "junk.npz")


def test_load_or_extract_recomputes_a_stale_cache(tmp_path, demo, demo_matches):
    path = tmp_path / "matches.npz"
    demo_matches.save(path)
    cached = M.load_or_extract(path, demo, demo_matches.settings)
    assert cached.seconds == demo_matches.seconds  # read back, not recomputed
    images = demo.images.copy()
    images[0] = 1.0 - images[0]
    fresh = M.load_or_extract(path, (demo.ids, images, demo.masks), demo_matches.settings)
    assert fresh.image_hash != demo_matches.image_hash
    assert M.PairMatches.load(path).image_hash == fresh.image_hash
