"""The orbit view in the real debugger window (run under ``xvfb-run``): fit all, legend, colour bar, the
ground-truth toggle, trajectories, clicking a frustum, and progressive frames while the camera moves.

One window for the module, on a tiny demo scene with ground truth; the last test opens a copy of the
scene without ``cameras_gt.json`` in the same window.
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from tests.helpers import FAST_PIPELINE as FAST

pytestmark = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run -a)")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from gui.app import DebuggerApp
    from sparseags.config import load_config
    from sparseags.synth import make_demo_scene

    root = tmp_path_factory.mktemp("gui_orbit")
    scene = make_demo_scene(root / "scene", seed=0, n_views=5, n_novel=0, resolution=32)
    window = DebuggerApp(scene, load_config(None, FAST + ["pipeline.outliers=false"]), root / "out")
    window.start_engine()
    window.build_window()
    window.test_root = root
    try:
        yield window
    finally:
        window.close()


def _script(app, actions: list) -> None:
    from gui.script import ScriptRunner, parse_script

    runner = ScriptRunner(app, parse_script(actions))
    assert app.run(runner) == 0 and runner.error is None, runner.error


def _frames_until(app, condition, timeout: float = 30.0) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        app.frame()
        if condition():
            return True
    return False


def _drawn_frusta(app) -> list:
    """Every frustum the orbit view draws now, as projected segments [S, 2, 2] (unclipped)."""
    from gui.panels.cameras import frustum_segments, project_segments

    panel, view = app.orbit, app.worker.view
    w2c, K = panel.camera.w2c(), panel.camera.K()
    out = []
    for family in panel._frustum_sets(view):
        for index in range(len(view.ids)):
            segments = frustum_segments(
                family.w2c[index], view.K[index], view.image_size, view.image_size, panel._frustum_depth
            )
            points, kept = project_segments(segments, w2c, K)
            out.append((family.name, index, points, len(kept) == len(segments)))
    return out


def test_fit_all_frames_every_frustum_and_the_trajectories(app) -> None:
    _script(app, [{"step": 4}, {"orbit": [300, 120]}, {"zoom": 8}, {"fit_all": True}])
    panel, view = app.orbit, app.worker.view
    assert view.w2c_gt_in_frame is not None  # the demo scene has ground truth: three families are drawn
    frusta = _drawn_frusta(app)
    assert {name for name, *_ in frusta} == {"initial", "current", "gt"}
    for name, index, points, whole in frusta:
        assert whole, f"{name} frustum of view {index} is partly behind the camera"
        assert np.all(points >= 0) and np.all(points <= panel.size), f"{name} frustum of view {index} is cut off"
    # trajectories were fetched from the engine (start + 4 steps, every view) and are framed as well
    assert panel.tracks is not None and panel.tracks.shape[1:] == (len(view.ids), 3) and len(panel.tracks) >= 2
    from gui.orbit import project_points

    uv, z = project_points(panel.tracks.reshape(-1, 3), panel.camera.w2c(), panel.camera.K())
    assert np.all(z > 0) and np.all(uv >= 0) and np.all(uv <= panel.size)


def test_fit_all_on_load_frames_the_scene(app) -> None:
    _script(app, [{"orbit": [-500, 40]}, {"zoom": 10}])
    app.orbit.reset_camera()  # the placement made on scene load
    for name, index, points, whole in _drawn_frusta(app):
        assert whole and np.all(points >= 0) and np.all(points <= app.orbit.size), (name, index)


def test_legend_and_depth_colour_bar(app) -> None:
    import dearpygui.dearpygui as dpg

    panel = app.orbit
    assert set(panel.legend_items) == {"initial", "current", "gt", "track"}
    for items in panel.legend_items.values():
        assert all(dpg.does_item_exist(item) for item in items)
    _script(app, [{"render_mode": "rgb"}])
    assert not panel.colorbar_shown
    _script(app, [{"render_mode": "depth"}, {"wait_frames": 30}])
    assert _frames_until(app, lambda: panel.refined)
    assert panel.colorbar_shown
    near, far = panel.depth_range
    assert 0 < near < far
    assert dpg.get_item_configuration(panel.colorbar_near)["text"] == f"near {near:.2f}"
    assert dpg.get_item_configuration(panel.colorbar_far)["text"] == f"far {far:.2f}"
    _script(app, [{"render_mode": "rgb"}, {"frusta": {"tracks": False}}])
    assert not panel.colorbar_shown and "track" not in panel.legend_items
    _script(app, [{"frusta": {"tracks": True}}])


def test_clicking_a_frustum_selects_and_snaps_to_its_view(app) -> None:
    _script(app, [{"select_view": 0}, {"fit_all": True}, {"frusta": {"initial": False, "gt": False}}])
    panel, view = app.orbit, app.worker.view
    target = 2
    _, _, points, _ = next(f for f in _drawn_frusta(app) if f[0] == "current" and f[1] == target)
    u, v = points[5].mean(axis=0)  # the middle of a rim edge
    assert panel.click(u, v) == target
    assert app.ui.selected_view == target
    apex = np.linalg.inv(view.w2c_current[target])[:3, 3]
    np.testing.assert_allclose(panel.camera.campos, apex, atol=1e-6)
    app.frame()
    assert target in panel.hidden_views  # its own frustum would slash across the view
    assert panel.click(-50.0, -50.0) is None and app.ui.selected_view == target  # a click on nothing: no change
    _script(app, [{"frusta": {"initial": True, "gt": True}}, {"fit_all": True}])
    assert panel.hidden_views == []


def test_moving_camera_draws_quick_frames_then_the_full_one(app) -> None:
    panel = app.orbit
    _script(app, [{"wait_frames": 2}])
    assert _frames_until(app, lambda: panel.refined)
    panel.camera.orbit(20.0, 0.0)
    app.frame()
    assert not panel.last_frame_full and panel.shown_texture != panel.texture.tag
    quick = panel.progressive.last_frame.image
    assert quick.shape[0] < panel.size and quick.shape[1] < panel.size
    policy = panel.progressive.policy
    assert _frames_until(app, lambda: panel.refined, timeout=10.0)
    # The full frame waits settle_s from the camera's last motion (not from the first quick frame, whose
    # own drawing time already counts towards the wait on a loaded machine).
    assert policy.clock() - policy.last_motion >= policy.settle_s
    assert panel.shown_texture == panel.texture.tag
    assert panel.progressive.last_frame.image.shape[:2] == (panel.size, panel.size)


def test_ground_truth_toggle_hidden_without_ground_truth(app) -> None:
    import dearpygui.dearpygui as dpg

    assert dpg.get_item_configuration(app.orbit.toggles["show_gt"])["show"]
    source = app.scene_dir
    copy = app.test_root / "no_gt"
    shutil.copytree(source, copy)
    (copy / "cameras_gt.json").unlink()
    _script(app, [{"open_scene": str(copy)}, {"wait_frames": 3}])
    assert app.worker.view.w2c_gt_in_frame is None
    assert not dpg.get_item_configuration(app.orbit.toggles["show_gt"])["show"]
    assert "gt" not in app.orbit.legend_items
    for name, index, points, whole in _drawn_frusta(app):  # fit all again on the new scene
        assert whole and np.all(points >= 0) and np.all(points <= app.orbit.size), (name, index)
