"""The debugger's matches / pose-evidence tab (gui/evidence.py, gui/panels/evidence.py).

Without a display: the pair lookup, the segment scaling and the Sampson errors of a pair. In the real window
(under ``xvfb-run``): a scripted session on a small demo scene at 256 px (SIFT finds matches there) with an
evidence row every 2 steps: the curves have one point per evidence row, the pair's line count is its match
count, the screenshot shows the images, lines and curves, and the guard's rollbacks are listed in red.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gui.evidence import EvidenceView, PairView, pair_sampson_px, pair_segments, pair_view

FAST = [
    "recon.iters=8",
    "recon.num_pts=300",
    "recon.resolution_schedule=[[0.0,32]]",
    "recon.evidence_every=2",
    "outliers.score=mse",
    "lpips.weights_dir=/nonexistent/lpips",
    "scene.resolution=256",
    "pipeline.outliers=false",
    "prior.enabled=false",
    "device=cpu",
]
needs_display = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run -a)")


def _evidence(**overrides) -> EvidenceView:
    """A hand-made evidence view: 3 views, 3 evidence rows, one pair (0, 2) with 3 matches."""
    K = np.array([[[200.0, 0, 128], [0, 200.0, 128], [0, 0, 1]]] * 3)
    w2c = np.repeat(np.eye(4)[None], 3, axis=0)
    w2c[:, 2, 3] = 3.0
    w2c[2, 0, 3] = -0.5  # camera 2 shifted sideways: horizontal epipolar lines
    fields = dict(
        key=("test",),
        recon_step=6,
        ids=["000", "001", "002"],
        image_size=256,
        targets=np.full((3, 64, 64, 3), 0.5, np.float32),
        steps=np.array([2, 4, 6]),
        rgb=np.array([[0.1, 0.2, np.nan], [0.08, 0.15, np.nan], [0.05, 0.1, np.nan]]),
        mask=np.zeros((3, 3)),
        epipolar=np.array([[1.0, np.nan, 1.5], [0.8, np.nan, 4.0], [0.6, np.nan, 0.7]]),
        match_inliers=np.zeros((3, 3), np.int64),
        epipolar_start=np.array([1.0, np.nan, 1.5]),
        guard_log=[{"view": 2, "step": 4, "action": "rollback", "reason": "epipolar 4.00 px > limit 2.50 px"}],
        pose_frozen=np.array([False, False, True]),
        focal_scale=np.ones(3),
        pose_error={
            "step": [0, 5, 6],
            "rot_err_deg": [[4.0, 6.0, 20.0], [2.0, 3.0, 10.0], [1.0, 2.0, 3.0]],
            "rot5": [66.7, 66.7, 100.0],
            "rot15": [66.7, 100.0, 100.0],
            "cc10": [33.3, 66.7, 100.0],
        },
        w2c=w2c,
        K=K,
        flags=np.array([1, 1, 1]),
        pairs=[
            {
                "i": 0,
                "j": 2,
                "xy_i": np.array([[10.5, 20.5], [100.5, 50.5], [200.5, 128.5]], np.float32),
                "xy_j": np.array([[40.5, 20.5], [130.5, 50.5], [230.5, 140.5]], np.float32),
                "verified": np.array([True, True, False]),
            }
        ],
        match_summary={"pairs": 1, "matches": 3},
    )
    fields.update(overrides)
    return EvidenceView(**fields)


# ------------------------------------------------------------------------------------------------------
# model (no display)


def test_pair_view_either_order_and_missing_pair() -> None:
    evidence = _evidence()
    forward, backward = pair_view(evidence, 0, 2), pair_view(evidence, 2, 0)
    assert forward.count == 3 and forward.n_verified == 2
    assert np.array_equal(backward.xy_a, forward.xy_b) and np.array_equal(backward.xy_b, forward.xy_a)
    assert pair_view(evidence, 0, 1).count == 0


def test_segments_scale_scene_pixels_to_the_tiles() -> None:
    pair = pair_view(_evidence(), 0, 2)
    segments = pair_segments(pair, image_size=256, tile=128, gap=10)
    assert segments.shape == (3, 4)
    assert np.allclose(segments[0], [10.5 / 2, 20.5 / 2, 128 + 10 + 40.5 / 2, 20.5 / 2])


def test_pair_sampson_is_vertical_offset_for_a_sideways_camera() -> None:
    """Pure sideways translation, equal intrinsics: the epipolar lines are image rows."""
    evidence = _evidence()
    errors = pair_sampson_px(evidence, pair_view(evidence, 0, 2))
    assert errors.shape == (3,)
    assert np.allclose(errors[:2], 0.0, atol=1e-6)  # same row: on the epipolar line
    assert errors[2] > 1.0  # 12 rows off
    assert pair_sampson_px(evidence, PairView(0, 1, np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0, bool))).size == 0


def test_script_accepts_the_new_actions_and_rejects_bad_ones() -> None:
    from gui.script import ScriptError, parse_script

    actions = parse_script([{"select_pair": [0, "002"]}, {"tab": "overlays"}, {"tab": "evidence"}])
    assert [a.name for a in actions] == ["select_pair", "tab", "tab"]
    for bad in ({"select_pair": [1]}, {"select_pair": 3}, {"tab": "nope"}):
        with pytest.raises(ScriptError):
            parse_script([bad])


# ------------------------------------------------------------------------------------------------------
# the real window


def _crop(path: Path, box: tuple) -> np.ndarray:
    from PIL import Image

    x0, y0, x1, y1 = box
    return np.asarray(Image.open(path).convert("RGB"))[y0:y1, x0:x1].astype(np.int16)


def _collect(root: Path):
    from gui.app import DebuggerApp
    from gui.script import ScriptRunner, parse_script
    from sparseags.config import load_config
    from sparseags.synth import make_demo_scene

    scene = make_demo_scene(root / "scene", seed=0, n_views=5, n_novel=0, resolution=256)
    app = DebuggerApp(scene, load_config(None, FAST), root / "out")
    app.start_engine()
    app.build_window()
    shots = {name: root / f"{name}.png" for name in ("step", "final", "synthetic")}
    facts: dict = {"root": root, "shots": shots}
    try:
        pairs = app.worker.view.evidence.pairs
        facts["pair"] = (int(pairs[0]["i"]), int(pairs[0]["j"])) if pairs else (0, 1)
        script = [{"step": 4}, {"select_pair": list(facts["pair"])}, {"screenshot": str(shots["step"])}]
        runner = ScriptRunner(app, parse_script(script))
        facts["exit_step"] = app.run(runner)
        facts["error_step"] = runner.error
        facts["regions"] = app.regions()
        facts["step"] = _panel_facts(app)
        runner = ScriptRunner(
            app, parse_script([{"run_until": "done"}, {"tab": "evidence"}, {"screenshot": str(shots["final"])}])
        )
        facts["exit_final"] = app.run(runner)
        facts["error_final"] = runner.error
        facts["final"] = _panel_facts(app)
        # a hand-made evidence view with a guard rollback and a pose-error curve, through the same panel
        facts["synthetic_evidence"] = evidence = _evidence()

        class _View:
            pass

        fake = _View()
        fake.evidence = evidence
        app.select_pair(0, 2)
        app.evidence.update(fake)
        import dearpygui.dearpygui as dpg

        for _ in range(4):
            dpg.render_dearpygui_frame()
        done = app.request_screenshot(shots["synthetic"])
        for _ in range(50):  # the frame-buffer callback is queued (manual callback management)
            dpg.render_dearpygui_frame()
            app._run_callbacks()
            if done.is_set():
                break
        facts["synthetic"] = _panel_facts(app)
        facts["guard_text"] = app.evidence.guard_text.value
        facts["regions_synthetic"] = app.regions()
        return facts
    finally:
        app.close()


def _child(root: str) -> None:
    """Entry point of the child process: run the session and pickle its facts (our own file, our own data)."""
    import pickle

    facts = _collect(Path(root))
    (Path(root) / "facts.pkl").write_bytes(pickle.dumps(facts))


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """The scripted window session, run in its own process: DearPyGui crashes when a second context (after
    another test module's window) draws this tab, which a real user never does (one window per process)."""
    import pickle
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("gui_evidence")
    repo = Path(__file__).resolve().parent.parent
    code = f"import sys; sys.path.insert(0, {str(repo)!r}); from tests.test_gui_evidence import _child; _child({str(root)!r})"
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return pickle.loads((root / "facts.pkl").read_bytes())


def _panel_facts(app) -> dict:
    panel = app.evidence
    evidence = panel.evidence
    return {
        "evidence": evidence,
        "pair": panel.pair,
        "line_count": panel.line_count,
        "line_colours": list(panel.line_colours),
        "epipolar": [len(xs) for xs, _ in panel.epipolar.data],
        "rgb": [len(xs) for xs, _ in panel.rgb.data],
        "pose": {name: len(xs) for name, (xs, _) in panel.pose_data.items()},
        "pair_text": panel.pair_text.value,
        "view_text": panel.view_text.value,
    }


@needs_display
def test_scripts_complete(session) -> None:
    assert session["exit_step"] == 0 and session["error_step"] is None
    assert session["exit_final"] == 0 and session["error_final"] is None


@needs_display
@pytest.mark.parametrize("when", ["step", "final"])
def test_series_have_one_point_per_measured_evidence_row(session, when) -> None:
    facts = session[when]
    evidence = facts["evidence"]
    assert evidence is not None and len(evidence.steps) >= 2
    for name in ("epipolar", "rgb"):
        values = getattr(evidence, name)
        expected = [int(np.isfinite(values[:, v]).sum()) for v in range(len(evidence.ids))]
        assert facts[name] == expected
    assert max(facts["rgb"]) == len(evidence.steps)  # inliers are rendered at every evidence step
    assert max(facts["epipolar"]) == len(evidence.steps)  # views with matches are measured every time
    if evidence.pose_error is not None:
        assert set(facts["pose"].values()) == {len(evidence.pose_error["step"])}


@needs_display
@pytest.mark.parametrize("when", ["step", "final"])
def test_pair_lines_equal_its_matches(session, when) -> None:
    facts = session[when]
    pair = facts["pair"]
    a, b = session["pair"]
    assert (pair.a, pair.b) == (a, b)
    match = [p for p in facts["evidence"].pairs if {int(p["i"]), int(p["j"])} == {a, b}]
    assert match, "the demo scene's first pair has matches"
    assert facts["line_count"] == len(match[0]["verified"]) == pair.count > 0
    assert sum(facts["line_colours"]) == int(np.sum(match[0]["verified"]))
    assert f"{pair.count} matches" in facts["pair_text"]
    assert "epipolar median" in facts["view_text"]


@needs_display
def test_screenshot_shows_images_lines_and_curves(session) -> None:
    regions, shot = session["regions"], session["shots"]["step"]
    assert {"matches", "epipolar_plot", "rgb_plot", "pose_plot"} <= set(regions)
    matches = _crop(shot, regions["matches"])
    assert matches.shape[0] >= 150 and matches.std() > 8, "matches panel is blank"
    green = (matches[..., 1] > 180) & (matches[..., 0] < 120) & (matches[..., 2] < 140)
    assert green.sum() > 30, "no verified (green) match lines"
    for name in ("epipolar_plot", "rgb_plot"):
        plot = _crop(shot, regions[name])
        background = np.median(plot.reshape(-1, 3), axis=0)
        coloured = (np.abs(plot - background).sum(axis=2) > 60) & ((plot.max(axis=2) - plot.min(axis=2)) > 60)
        assert coloured.sum() > 40, f"{name}: no coloured series drawn"


@needs_display
def test_guard_rollbacks_listed_in_red_and_pose_error_plotted(session) -> None:
    facts = session["synthetic"]
    assert facts["line_count"] == 3 and facts["line_colours"] == [False, True, True]
    assert "view 002 @ step 4" in session["guard_text"] and "rollback" in session["guard_text"]
    assert facts["pose"] == {"Rot@5": 3, "Rot@15": 3, "CC@0.1": 3, "mean rot err (deg)": 3}
    assert facts["epipolar"] == [3, 0, 3] and facts["rgb"] == [3, 3, 0]
    assert "frozen by the guard: 002" in facts["view_text"]
    shot, regions = session["shots"]["synthetic"], session["regions_synthetic"]
    pose = _crop(shot, regions["pose_plot"])
    assert (pose.max(axis=2) - pose.min(axis=2) > 60).sum() > 40, "pose-error curves missing"
    x0, y0, x1, y1 = regions["pose_plot"]
    below = _crop(shot, (x0, y1, x1, min(y1 + 110, 1000)))
    red = (below[..., 0] > 220) & (below[..., 1] < 140) & (below[..., 2] < 130)
    assert red.sum() > 20, "guard rollback not written in red"
