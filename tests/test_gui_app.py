"""The real debugger window on a tiny demo scene, driven by script actions (run under ``xvfb-run``).

One window is opened for the module: a first script goes through the leave-one-out verdicts, the pose
search, a candidate, a turntable and screenshots; a second one edits a flag. The tests then check the
engine state, decisions.json, the video, and the pixels of the screenshots' panels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import FAST_PIPELINE as FAST

pytestmark = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run -a)")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    from gui.app import DebuggerApp
    from gui.script import ScriptRunner, parse_script
    from sparseags.config import load_config
    from sparseags.synth import make_demo_scene

    root = tmp_path_factory.mktemp("gui")
    scene = make_demo_scene(root / "scene", seed=0, n_views=5, n_novel=0, resolution=32)
    out = root / "out"
    app = DebuggerApp(scene, load_config(None, FAST), out)
    app.start_engine()
    app.build_window()
    shots = {name: root / f"{name}.png" for name in ("search", "after")}
    first = [
        {"run_until": "search"},
        {"run_until_stage": "coarse"},  # every sphere hypothesis scored: the coarse heat map is full
        {"heatmap": "coarse"},
        {"screenshot": str(shots["search"])},
        {"reject_outlier": True},
        {"run_until": "done"},
        {"accept_outlier": True},
        {"run_until": "arbitration"},
        {"apply_candidate": 1},
        {"render_mode": "depth"},
        {"orbit": [200, 50]},
        {"zoom": 1},
        {"record_turntable": {"frames": 6, "out": str(root / "turntable.mp4"), "resolution": 48}},
        {"screenshot": str(shots["after"])},
    ]
    facts: dict = {"root": root, "out": out, "shots": shots}
    try:
        runner = ScriptRunner(app, parse_script(first))
        facts["exit_first"] = app.run(runner)
        facts["error_first"] = runner.error
        pipeline = app.worker.pipeline
        search = pipeline.searches.get(pipeline.search_order[0]) if pipeline.search_order else None
        facts["search_manual"] = None if search is None else search.manual_choice
        facts["search_order"] = list(pipeline.search_order)
        facts["regions"] = app.regions()
        facts["decisions_first"] = json.loads((out / "decisions.json").read_text())["decisions"]
        runner = ScriptRunner(app, parse_script([{"set_flag": [2, 0]}, {"step": 1}]))
        facts["exit_second"] = app.run(runner)
        facts["error_second"] = runner.error
        facts["initial_flags"] = app.worker.pipeline.initial_flags.tolist()
        facts["decisions"] = json.loads((out / "decisions.json").read_text())["decisions"]
        yield facts
    finally:
        app.close()


def _crop(path: Path, box: tuple) -> np.ndarray:
    from PIL import Image

    x0, y0, x1, y1 = box
    return np.asarray(Image.open(path).convert("RGB"))[y0:y1, x0:x1].astype(np.int16)


def test_scripts_complete(session) -> None:
    assert session["exit_first"] == 0 and session["error_first"] is None
    assert session["exit_second"] == 0 and session["error_second"] is None


def test_decisions_are_logged_in_order_and_replayable(session) -> None:
    from sparseags.headless import load_decisions

    actions = [d["action"] for d in session["decisions"]]
    assert actions == ["reject_outlier", "accept_outlier", "apply_candidate", "set_flag"]
    assert session["decisions"][2]["rank"] == 1
    assert load_decisions(session["out"] / "decisions.json")[3]["flag"] == 0


def test_candidate_applied_and_flag_changed(session) -> None:
    assert session["search_order"], "the accepted outlier was searched"
    assert session["search_manual"] is not None  # apply_candidate replaced the automatic winner
    assert session["initial_flags"] == [1, 1, 0, 1, 1]


def test_turntable_written_and_readable(session) -> None:
    import imageio.v2 as imageio

    reader = imageio.get_reader(session["root"] / "turntable.mp4")
    frames = [frame for frame in reader]
    reader.close()
    assert len(frames) == 6 and frames[0].shape == (48, 48, 3)
    assert not np.array_equal(frames[0], frames[3])  # the camera turned


def test_screenshot_panels_show_content(session) -> None:
    regions, shots = session["regions"], session["shots"]
    orbit = _crop(shots["search"], regions["orbit_view"])
    assert orbit.shape[0] >= 400 and orbit.std() > 8, "orbit view is blank"  # fitted to its window (490 px)
    assert (orbit.sum(axis=2) < 600).mean() > 0.02, "no Gaussians drawn over the white background"
    heat = _crop(shots["search"], regions["heatmap"]).reshape(-1, 3)
    saturated = heat[(heat.max(axis=1) - heat.min(axis=1)) > 40]
    colours, counts = np.unique(saturated, axis=0, return_counts=True)
    cells = colours[counts >= 30]  # whole heat cells, not antialiased edges or marker outlines
    assert len(cells) >= 4, f"heatmap looks uniform ({len(cells)} cell colours)"
    bars = _crop(shots["search"], regions["bars"])
    green = (bars[..., 1] > 150) & (bars[..., 0] < 120) & (bars[..., 2] < 140)
    orange = (bars[..., 0] > 200) & (bars[..., 1] > 110) & (bars[..., 1] < 190) & (bars[..., 2] < 80)
    assert green.sum() > 40 and orange.sum() > 20, "inlier / candidate bars missing"
    strip = _crop(shots["search"], regions["overlays"])
    red_border = (strip[..., 0] > 220) & (strip[..., 1] < 100) & (strip[..., 2] < 100)
    assert red_border.sum() > 100, "outlier tile border missing"


def test_render_mode_changes_the_orbit_view(session) -> None:
    box = session["regions"]["orbit_view"]
    rgb, depth = _crop(session["shots"]["search"], box), _crop(session["shots"]["after"], box)
    drawn = (rgb.sum(axis=2) < 735) | (depth.sum(axis=2) < 735)  # pixels covered by Gaussians in either
    assert drawn.mean() > 0.02 and np.abs(rgb - depth)[drawn].mean() > 10
    # turbo depth colours are saturated, unlike the demo's pastel RGB render
    assert (depth.max(axis=2) - depth.min(axis=2)).mean() > (rgb.max(axis=2) - rgb.min(axis=2)).mean()


def test_unknown_script_action_exits_2_with_one_line(tmp_path) -> None:
    script = tmp_path / "bad.yaml"
    script.write_text("- step: 1\n- teleport: 3\n")
    result = subprocess.run(
        [sys.executable, "main.py", "gui", "--scene", str(tmp_path), "--script", str(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown action 'teleport'" in lines[0] and "Traceback" not in result.stderr
