"""Property tests (hypothesis): orbit camera vs cameras.orbit_camera, PLY and config round trips, the official
leave-one-out rules, and the steppable protocol (k steps, state_dict, load into a fresh object, continue ==
straight through) over every steppable class, on a tiny synthetic scene.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gui.orbit import OrbitCamera
from sparseags import cameras, run_state
from sparseags.config import Config, ConfigError, config_to_dict, load_config, save_config
from sparseags.gaussians import GaussianModel
from sparseags.outliers import LeaveOneOut, max_removals, removal_accepted
from sparseags.pipeline import Arbitration, Pipeline
from sparseags.pose_search import PoseSearch
from sparseags.recon import Reconstruction
from tests.helpers import FAST_PIPELINE

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


# ------------------------------------------------------------------------------------------------------
# orbit camera


@FEW
@given(
    elev=st.floats(-89.0, 89.0),
    azim=st.floats(-360.0, 360.0),
    radius=st.floats(0.1, 20.0),
    center=st.tuples(finite, finite, finite),
    size=st.tuples(st.integers(16, 2048), st.integers(16, 2048)),
    fovy=st.floats(5.0, 120.0),
)
def test_orbit_camera_from_angle_matches_cameras_orbit_camera(elev, azim, radius, center, size, fovy):
    cam = OrbitCamera(*size, radius=radius, fovy_deg=fovy, center=center)
    cam.from_angle(elev, azim)
    reference = cameras.orbit_camera(elev, azim, radius, center, dtype=torch.float64).numpy()  # [4, 4] GL c2w
    scale = 1.0 + max(abs(c) for c in center) + radius
    np.testing.assert_allclose(cam.pose, reference, atol=1e-9 * scale)
    w2c = cameras.c2w_gl_to_w2c(torch.as_tensor(reference)).numpy()  # OpenCV world-to-camera
    np.testing.assert_allclose(cam.w2c(), w2c, atol=1e-9 * scale)
    # K: square pixels, principal point at the exact image centre, fovy from the focal length.
    K = cam.K()
    assert K[0, 0] == K[1, 1] and (K[0, 2], K[1, 2]) == (size[0] / 2.0, size[1] / 2.0)
    assert 2.0 * math.degrees(math.atan(size[1] / (2.0 * K[1, 1]))) == pytest.approx(fovy, rel=1e-9)


@FEW
@given(
    elev=st.floats(-80.0, 80.0),
    azim=st.floats(-180.0, 180.0),
    radius=st.floats(0.5, 10.0),
    target=st.tuples(*[st.floats(-2.0, 2.0)] * 3),
    start=st.tuples(*[st.floats(-2.0, 2.0)] * 3),
    focal=st.floats(50.0, 2000.0),
    size=st.tuples(st.integers(32, 1024), st.integers(32, 1024)),
)
def test_orbit_camera_snap_to_takes_the_input_camera_exactly(elev, azim, radius, target, start, focal, size):
    w2c = cameras.c2w_gl_to_w2c(cameras.orbit_camera(elev, azim, radius, target, dtype=torch.float64)).numpy()
    K = np.array([[focal * 1.1, 0.0, size[0] * 0.4], [0.0, focal, size[1] * 0.6], [0.0, 0.0, 1.0]])
    cam = OrbitCamera(64, 64, center=start)
    cam.snap_to(w2c, K, *size)
    np.testing.assert_allclose(cam.w2c(), w2c, atol=1e-8 * (1.0 + radius))
    assert cam.fovy == pytest.approx(2.0 * math.atan(0.5 * size[1] / focal), rel=1e-12)
    # the look-at point lies on the optical axis, `radius` in front of the camera
    forward = w2c[2, :3]  # OpenCV +z (viewing direction) in world coordinates
    campos = -w2c[:3, :3].T @ w2c[:3, 3]
    np.testing.assert_allclose(cam.center, campos + cam.radius * forward, atol=1e-8 * (1.0 + cam.radius))
    # snapping to its own pose is a fixed point
    before = (cam.w2c(), cam.center.copy(), cam.radius)
    cam.snap_to(cam.w2c(), K, *size)
    np.testing.assert_allclose(cam.w2c(), before[0], atol=1e-9 * (1.0 + radius))
    np.testing.assert_allclose(cam.center, before[1], atol=1e-8 * (1.0 + radius))
    assert cam.radius == pytest.approx(before[2], rel=1e-9)


# ------------------------------------------------------------------------------------------------------
# PLY round trip


@FEW
@given(
    n=st.integers(1, 40),
    degree=st.integers(0, 3),
    seed=st.integers(0, 2**31 - 1),
    magnitude=st.sampled_from([1e-3, 1.0, 1e4]),
)
def test_gaussians_ply_round_trip_is_exact(tmp_path_factory, n, degree, seed, magnitude):
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return magnitude * torch.randn(*shape, generator=gen)

    model = GaussianModel(draw(n, 3), draw(n, 4), draw(n, 3), draw(n), draw(n, 1, 3), draw(n, (degree + 1) ** 2 - 1, 3))
    path = tmp_path_factory.mktemp("ply") / "g.ply"
    assert model.save_ply(path) == path
    loaded = GaussianModel.load_ply(path)
    assert loaded.sh_degree == degree and loaded.active_sh_degree == degree and loaded.num_gaussians == n
    for name, param in model.splats.items():
        assert torch.equal(loaded.splats[name].detach(), param.detach()), name
    assert [p.name for p in path.parent.iterdir()] == ["g.ply"]  # written atomically: no temporary file left


# ------------------------------------------------------------------------------------------------------
# config round trip


def _scalar_fields() -> list[tuple[str, typing.Any]]:
    """(dotted key, annotation) of every bool / int / float / str / Literal / Optional[...] field of Config."""
    out = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = getattr(cls(), f.name)
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{f.name}.")
            else:
                out.append((prefix + f.name, hints[f.name]))

    walk(Config, "")
    return out


_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)


def _values_for(tp) -> st.SearchStrategy:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return st.one_of([_values_for(option) for option in typing.get_args(tp)])
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-(10**6), 10**6)
    if tp is float:
        return st.floats(allow_nan=False, width=64)
    if tp is str:
        return _TEXT
    if tp is list or origin is list:
        return st.lists(st.one_of(st.integers(-100, 100), st.lists(st.integers(0, 512), max_size=2)), max_size=3)
    raise TypeError(f"no strategy for config fields of type {tp}")


_FIELDS = _scalar_fields()


@st.composite
def _overrides(draw) -> list[str]:
    chosen = draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=8, unique_by=lambda kv: kv[0]))
    # JSON is YAML: the override parser reads these back as the drawn values.
    return [f"{key}={json.dumps(draw(_values_for(tp)))}" for key, tp in chosen]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=_overrides())
def test_config_save_load_round_trip(tmp_path_factory, overrides):
    try:
        cfg = load_config(None, overrides)
    except ConfigError:  # e.g. a float drawn for a field that is int | None: the one-line error is the contract
        assume(False)
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert config_to_dict(again) == config_to_dict(cfg)
    # and a second save writes the same text (the file is a fixed point)
    save_config(again, path.with_name("again.yaml"))
    assert path.with_name("again.yaml").read_text() == path.read_text()


def test_config_fields_are_all_drawn():
    # Every leaf of Config can be drawn by the round-trip test (a new field type needs a strategy above).
    for _, tp in _FIELDS:
        _values_for(tp)
    assert "lpips.weights_dir" in {key for key, _ in _FIELDS}


# ------------------------------------------------------------------------------------------------------
# the official leave-one-out rules


def test_max_removals_is_the_official_table():
    assert [max_removals(v) for v in range(1, 12)] == [1, 1, 1, 1, 1, 2, 3, 4, 4, 4, 4]


@given(v=st.integers(1, 500), w=st.integers(1, 500))
def test_max_removals_is_monotone_bounded_and_keeps_four_views(v, w):
    m = max_removals(v)
    assert 1 <= m <= 4
    if v <= w:
        assert m <= max_removals(w)
    if v >= 5:
        assert v - m >= 4  # at least four views always stay


small = st.floats(-10.0, 10.0, allow_nan=False)


@given(before=small, after=small, threshold=small, other=small)
def test_removal_accepted_is_a_threshold_on_the_drop(before, after, threshold, other):
    accepted = removal_accepted(before, after, threshold)
    drop = before - after
    if drop >= threshold + 1e-9:
        assert accepted
    if drop <= threshold - 1e-9:
        assert not accepted
    # monotone: a lower mean afterwards, or a lower threshold, never turns an acceptance into a rejection
    if accepted:
        assert removal_accepted(before, min(after, other), threshold)
        assert removal_accepted(before, after, min(threshold, other))
        assert removal_accepted(max(before, other), after, threshold)


@given(before=small, threshold=st.floats(-5.0, 5.0, allow_nan=False))
def test_removal_accepted_at_the_threshold_boundary(before, threshold):
    assert removal_accepted(before, before - threshold, threshold)  # a drop of exactly `threshold` counts
    assert not removal_accepted(before, before - threshold + 1e-6, threshold)  # just short of it does not


class _FakeRecon:
    """A reconstruction that is done after one step; the loop only reads its poses and state."""

    def __init__(self, flags, w2c):
        self.flags, self.w2c, self.done = np.asarray(flags).copy(), np.asarray(w2c).copy(), False

    def step(self, budget=1):
        self.done = True
        return {}

    def current_w2c(self):
        return self.w2c

    def state_dict(self):
        return {"done": self.done}

    def load_state_dict(self, state):
        self.done = state["done"]


def _run_loo(score_table: np.ndarray, threshold: float) -> LeaveOneOut:
    """The paper rule with per-round scores score_table[round] [V]."""
    views = score_table.shape[1]
    calls = []

    def score(recon):
        calls.append(recon)
        return score_table[min(len(calls) - 1, len(score_table) - 1)]

    loo = LeaveOneOut(
        _FakeRecon, score, np.ones(views, int), np.repeat(np.eye(4)[None], views, 0), threshold=threshold, rule="paper"
    )
    for _ in range(100):
        if loo.done:
            return loo
        loo.step(1)
    raise AssertionError("leave-one-out did not finish")


@settings(max_examples=40, deadline=None)
@given(views=st.integers(3, 12), data=st.data())
def test_leave_one_out_follows_the_official_rule(views, data):
    table = np.array(
        data.draw(st.lists(st.lists(st.floats(0.0, 1.0), min_size=views, max_size=views), min_size=5, max_size=5))
    )
    thresholds = sorted(data.draw(st.lists(st.floats(-0.2, 0.5), min_size=2, max_size=2)))
    results = []
    for threshold in thresholds:
        loo = _run_loo(table, threshold)
        rounds = loo.rounds
        assert len(loo.outliers) <= max_removals(views)
        for previous, current in zip(rounds, rounds[1:]):
            # the candidate is the worst-scored inlier of the previous round, and the verdict is the official test
            inliers = np.flatnonzero(previous.flags)
            assert previous.scores[current.candidate] == previous.scores[inliers].max()
            if current.scores is not None:
                assert current.auto_accept == removal_accepted(
                    previous.mean_without_next, current.mean_inliers, threshold
                )
        # the removed views are exactly the candidates of the accepted rounds, up to the first rejection
        accepted = []
        for r in rounds[1:]:
            if not r.accepted:
                break
            accepted.append(r.candidate)
        assert sorted(loo.outliers) == sorted(accepted)
        results.append(accepted)
    # a lower threshold removes the same views first, and possibly more
    assert results[1] == results[0][: len(results[1])]


# ------------------------------------------------------------------------------------------------------
# the steppable protocol over every steppable class


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    from sparseags.scene import load_scene
    from sparseags.synth import make_demo_scene

    folder = make_demo_scene(tmp_path_factory.mktemp("props") / "scene", seed=0, n_views=5, n_novel=1, resolution=32)
    cfg = load_config(None, FAST_PIPELINE)
    return load_scene(folder, resolution=cfg.scene.resolution), cfg


@pytest.fixture(scope="module")
def host(tiny_scene):
    """A pipeline at the start of its arbitration: it builds the sub-steppables (recon, search, aligner)."""
    scene, cfg = tiny_scene
    pipeline = Pipeline(scene, cfg, device="cpu", lpips_metric=None)
    for _ in range(10_000):
        if pipeline.phase == "arbitration" or pipeline.done:
            break
        pipeline.step(2)
    assert pipeline.phase == "arbitration" and pipeline.search_order, "the tiny pipeline must reach arbitration"
    return pipeline, pipeline.arbitration.state_dict()


def test_pipeline_snapshot_is_a_frozen_typed_copy(host):
    """The engine-to-display contract: typed, frozen, float64 poses, search fields filled in, and a copy."""
    from dataclasses import FrozenInstanceError

    from sparseags.snapshots import (
        ArbitrationSnapshot,
        EvidenceSnapshot,
        LooSnapshot,
        PipelineSnapshot,
        SearchSnapshot,
    )

    pipeline, _ = host
    snap = pipeline.snapshot()
    assert isinstance(snap, PipelineSnapshot) and snap.phase == "arbitration"
    with pytest.raises(FrozenInstanceError):
        snap.phase = "done"
    n_views = len(snap.ids)
    for w2c in (snap.w2c_initial, snap.w2c_current, snap.w2c_gt):
        assert w2c.dtype == np.float64 and w2c.shape == (n_views, 4, 4)
    assert isinstance(snap.loo, LooSnapshot) and isinstance(snap.arbitration, ArbitrationSnapshot)
    assert sorted(snap.searches) == sorted(snap.search_order) and snap.search_order
    for view, search in snap.searches.items():
        assert isinstance(search, SearchSnapshot) and search.view == view and search.view_id == snap.ids[view]
        assert search.done and search.initial_cell is not None and len(search.initial_cell) == 2
        assert search.heat_coarse.shape == search.mse_coarse.shape[:2] == search.best_radius["coarse"].shape
        # before the arbitration's reconstructions the window shows the search's pick
        assert view in snap.picked_views
        np.testing.assert_allclose(snap.w2c_current[view], pipeline.searches[view].chosen_w2c())
    snap.w2c_current[:] = 0.0
    snap.flags[:] = 7
    snap.searches[snap.search_order[0]].heat_coarse[:] = -1.0
    again = pipeline.snapshot()
    assert not np.allclose(again.w2c_current, 0.0) and not (again.flags == 7).any()
    assert not (again.searches[snap.search_order[0]].heat_coarse == -1.0).any()
    evidence = pipeline.evidence_snapshot(16)
    assert isinstance(evidence, EvidenceSnapshot) and evidence.key == pipeline.evidence_key()
    assert evidence.targets.shape == (n_views, 16, 16, 3) and evidence.rgb.shape[1] == n_views
    assert evidence.K.shape == (n_views, 3, 3) and evidence.w2c.dtype == np.float64


def _w2c(recon) -> np.ndarray:
    return recon.current_w2c().detach().cpu().numpy()


def _gaussians(recon) -> dict:
    return {k: v.detach().cpu().numpy() for k, v in recon.gaussians.splats.items()}


def _steppables(host_and_arb_state, tiny_scene) -> dict:
    """name -> (make a fresh object, load a state into a fresh object, the result to compare)."""
    host, arbitration_start = host_and_arb_state
    scene, cfg = tiny_scene
    view = host.search_order[0]

    def load_into(make):
        def load(state):
            obj = make()
            obj.load_state_dict(state)
            return obj

        return load

    def make_recon():
        return host.make_recon(host.initial_flags, host.initial_w2c, iters=6)

    def make_loo():
        return LeaveOneOut(
            lambda f, w: host.make_recon(f, w, iters=4),
            host.view_evidence,
            host.initial_flags,
            host.initial_w2c,
            threshold=cfg.outliers.threshold,
            rule="paper",
        )

    def make_search():
        return host.make_search(view, host.base_recon)

    def make_arbitration():
        return Arbitration.from_state(host, arbitration_start)

    def load_arbitration(state):
        if hasattr(Arbitration, "load_state_dict"):
            return load_into(make_arbitration)(state)
        return Arbitration.from_state(host, state)

    def make_pipeline():
        return Pipeline(scene, cfg, device="cpu", lpips_metric=None)

    return {
        Reconstruction: (make_recon, load_into(make_recon), lambda r: {"w2c": _w2c(r), **_gaussians(r)}),
        LeaveOneOut: (
            make_loo,
            load_into(make_loo),
            lambda loo: {
                "outliers": loo.outliers,
                "final": loo.final_round,
                "scores": [r.scores for r in loo.rounds],
                "w2c": [r.w2c for r in loo.rounds],
            },
        ),
        PoseSearch: (make_search, load_into(make_search), lambda s: {"chosen": s.chosen_w2c()}),
        Arbitration: (
            make_arbitration,
            load_arbitration,
            lambda a: {
                "choice": a.choice,
                "aligned": a.aligned,
                "w2c": _w2c(a.result()[0]),
                **_gaussians(a.result()[0]),
            },
        ),
        Pipeline: (
            make_pipeline,
            load_into(make_pipeline),
            lambda p: {
                "outliers": p.loo.outliers,
                "w2c": _w2c(p.final_recon),
                **_gaussians(p.final_recon),
                "choice": p.arbitration.choice if p.arbitration is not None else None,
            },
        ),
    }


def _run(obj, budget: int, max_calls: int = 10_000) -> int:
    for calls in range(max_calls):
        if obj.done:
            return calls
        obj.step(budget)
    raise AssertionError(f"{type(obj).__name__} did not finish")


def _assert_same(a, b, path="result"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a, key=str) == sorted(b, key=str), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, (np.ndarray, torch.Tensor)) or isinstance(b, (np.ndarray, torch.Tensor)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path)
    else:
        assert a == b, path


@pytest.mark.parametrize(
    "cls", [Reconstruction, LeaveOneOut, PoseSearch, Arbitration, Pipeline], ids=lambda c: c.__name__
)
def test_steppable_resumes_to_the_same_result(cls, host, tiny_scene, tmp_path: Path):
    make, load, result = _steppables(host, tiny_scene)[cls]
    budget = 2
    straight = make()
    total = _run(straight, budget)
    assert total >= 2, f"{cls.__name__} finished in {total} calls: nothing to interrupt"
    expected = result(straight)

    k = total // 2
    first = make()
    for _ in range(k):
        first.step(budget)
    assert not first.done
    # through the checkpoint format of the headless run: plain data, read back with weights_only=True
    path = run_state.save_plain(first.state_dict(), tmp_path / "state.pt")
    state = run_state.from_plain(run_state.load_plain(path))
    del first
    resumed = load(state)
    assert _run(resumed, budget) == total - k  # it continued where it stopped (a no-op load would start over)
    _assert_same(result(resumed), expected)
