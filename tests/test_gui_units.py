"""Debugger logic that needs no display: frusta geometry, score-bar model, scripts, images, engine thread."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from gui.engine import EngineWorker
from gui.imaging import as_float_rgb, blend, difference_heatmap, grid_2x2
from gui.panels.cameras import frustum_segments, project_segments
from gui.script import ScriptError, load_script, parse_script
from gui.state import PendingJobs, UiState
from sparseags.snapshots import ArbitrationSnapshot, LooSnapshot, PipelineSnapshot, SearchSnapshot

K_INPUT = np.array([[100.0, 0.0, 100.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]])  # 200 x 100 image
K_VIEW = np.array([[256.0, 0.0, 256.0], [0.0, 256.0, 256.0], [0.0, 0.0, 1.0]])  # 512 x 512 view


def _translation(x: float, y: float, z: float) -> np.ndarray:
    w2c = np.eye(4)
    w2c[:3, 3] = (x, y, z)
    return w2c


def test_frustum_seen_from_behind_keeps_left_right_and_up_down() -> None:
    # input camera at the origin looking +z; the view camera 5 units behind it, same orientation
    segments = frustum_segments(np.eye(4), K_INPUT, 200, 100, depth=1.0)
    assert segments.shape == (11, 2, 3)
    np.testing.assert_allclose(segments[0, 0], 0.0)  # apex = camera centre
    np.testing.assert_allclose(segments[0, 1], [-1.0, -0.5, 1.0])  # top-left pixel ray at depth 1
    points, kept = project_segments(segments, _translation(0, 0, 5), K_VIEW)
    assert len(kept) == 11
    apex = points[0, 0]
    np.testing.assert_allclose(apex, [256.0, 256.0])
    top_left = points[0, 1]
    assert top_left[0] < 256 and top_left[1] < 256  # image top-left stays top-left on screen
    bottom_right = points[2, 1]
    assert bottom_right[0] > 256 and bottom_right[1] > 256
    marker_tip = points[10, 0]  # the "up" triangle lies above the top edge (smaller v)
    assert points[8:11, :, 1].min() < top_left[1]
    assert marker_tip[1] < 256


def test_frustum_of_a_rotated_camera_sits_at_its_centre_and_looks_its_way() -> None:
    # camera at C = (2, 0, 0) looking along -x (OpenCV: z_cam = -x_world, y_cam = +y_world, x_cam = +z_world)
    R_c2w = np.stack([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], axis=1)
    centre = np.array([2.0, 0.0, 0.0])
    w2c = np.eye(4)
    w2c[:3, :3] = R_c2w.T
    w2c[:3, 3] = -R_c2w.T @ centre
    segments = frustum_segments(w2c, K_INPUT, 200, 100, depth=0.5)
    np.testing.assert_allclose(segments[0, 0], centre, atol=1e-12)
    assert np.all(segments[:4, 1, 0] < 2.0)  # the corners lie in front, towards -x
    np.testing.assert_allclose(segments[:4, 1, 0], 1.5)
    # seen from a view camera at (0, 0, -5) looking +z, the apex is to the right of the centre
    points, _ = project_segments(segments, _translation(0, 0, 5), K_VIEW)
    assert points[0, 0, 0] > 256 + 50


def test_segments_behind_the_view_are_dropped_or_clipped() -> None:
    segments = np.array(
        [
            [[0.0, 0.0, -2.0], [0.0, 0.0, -1.0]],  # wholly behind
            [[0.0, 0.0, -1.0], [1.0, 0.0, 1.0]],
        ]
    )  # crosses the near plane
    points, kept = project_segments(segments, np.eye(4), K_VIEW, near=0.1)
    assert kept.tolist() == [1]
    # clipped end: on the segment where z = 0.1 -> x = 0.55, u = 256 + 256 * 0.55 / 0.1
    np.testing.assert_allclose(points[0, 0], [256 + 256 * 5.5, 256.0])
    np.testing.assert_allclose(points[0, 1], [512.0, 256.0])


def test_script_parsing_accepts_the_documented_actions(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "- step: 20\n- run_until: search\n- select_view: 1\n- accept_outlier: true\n"
        "- reject_outlier: true\n- apply_candidate: 0\n- render_mode: depth\n- orbit: [10, -5]\n"
        "- zoom: 2\n- record_turntable: {frames: 8, out: x.mp4}\n- screenshot: x.png\n"
    )
    actions = load_script(path)
    assert [a.name for a in actions] == [
        "step",
        "run_until",
        "select_view",
        "accept_outlier",
        "reject_outlier",
        "apply_candidate",
        "render_mode",
        "orbit",
        "zoom",
        "record_turntable",
        "screenshot",
    ]
    assert actions[7].arg == [10, -5] and actions[0].index == 1


@pytest.mark.parametrize(
    "document, fragment",
    [
        ([{"fly": 1}], "unknown action 'fly'"),
        ([{"step": "many"}], "action 1 (step): expected"),
        ([{"run_until": "finished"}], "expected one of"),
        ([{"step": 1, "zoom": 2}], "one-key mapping"),
        ({"step": 1}, "expected a YAML list"),
        ([{"render_mode": "normals"}], "render_mode"),
    ],
)
def test_script_errors_are_one_line(document, fragment) -> None:
    with pytest.raises(ScriptError) as info:
        parse_script(document, "s.yaml")
    message = str(info.value)
    assert fragment in message and "\n" not in message and message.startswith("s.yaml")


def test_missing_script_file_names_it(tmp_path) -> None:
    with pytest.raises(ScriptError, match="script file not found"):
        load_script(tmp_path / "nope.yaml")


def test_image_helpers() -> None:
    white = np.full((4, 4, 3), 255, np.uint8)
    black = np.zeros((4, 4, 3), np.float32)
    assert as_float_rgb(white).dtype == np.float32 and as_float_rgb(white).max() == 1.0
    np.testing.assert_allclose(blend(white, black, 0.25), 0.75)
    heat_equal = difference_heatmap(white, white)
    heat_far = difference_heatmap(white, black)
    assert heat_equal.max() < 0.05 and heat_far.mean() > 0.5  # black = equal, bright = different
    grid = grid_2x2(white, black, black, white, gap=2)
    assert grid.shape == (10, 10, 3) and grid[0, 0, 0] == 1.0 and grid[0, 9, 0] == 0.0 and grid.flags.c_contiguous


def test_ui_state_rejects_unknown_mode() -> None:
    state = UiState()
    state.set_render_mode("depth")
    assert state.render_mode == "depth"
    with pytest.raises(ValueError, match="unknown render mode"):
        state.set_render_mode("normals")


# -------------------------------------------------------------------------------------------------
# engine thread with a fake pipeline (fast; the real one is driven by tests/test_gui_app.py)


class FakePipeline:
    """The subset of sparseags.pipeline.Pipeline that the engine thread reads."""

    PHASE_AT = {0: "reconstruct", 5: "loo", 8: "search", 10: "done"}

    def __init__(self, fail_at: int | None = None) -> None:
        self.total_steps = 0
        self.phase = "reconstruct"
        self.fail_at = fail_at
        self.recon = None
        self.scene = SimpleNamespace(ids=["a", "b", "c"], K=np.tile(K_INPUT, (3, 1, 1)), resolution=100, w2c_gt=None)
        self.initial_w2c = np.tile(np.eye(4), (3, 1, 1))
        self.initial_flags = np.ones(3, int)
        self.searches, self.search_order = {}, []
        self.loo = self.arbitration = self.latest_scores = None
        self.decisions: list = []
        self.score_key = "mse_norm"
        self.thread_ids: set = set()

    @property
    def done(self) -> bool:
        return self.phase == "done"

    def step(self, budget: int = 1) -> dict:
        self.thread_ids.add(threading.get_ident())
        if self.fail_at is not None and self.total_steps == self.fail_at:
            raise RuntimeError("boom")
        time.sleep(0.001)
        self.total_steps += 1
        for at, phase in self.PHASE_AT.items():
            if self.total_steps >= at:
                self.phase = phase
        return {"step": self.total_steps}

    def phase_label(self) -> str:
        return self.phase

    def current_flags(self) -> np.ndarray:
        return self.initial_flags.copy()

    def active_search(self):
        return None

    def evidence_key(self, with_step: bool = True):
        return None  # no reconstruction: no evidence to show

    def snapshot(self) -> PipelineSnapshot:
        eye = np.tile(np.eye(4), (3, 1, 1))
        return PipelineSnapshot(
            phase=self.phase,
            phase_label=self.phase_label(),
            total_steps=self.total_steps,
            done=self.done,
            seed=0,
            ids=list(self.scene.ids),
            flags=self.current_flags(),
            initial_flags=self.initial_flags.copy(),
            image_size=self.scene.resolution,
            K=self.scene.K.copy(),
            w2c_initial=eye,
            w2c_current=eye.copy(),
            picked_views=(),
            w2c_gt=None,
            w2c_gt_in_frame=None,
            recon_step=0,
            recon_iters=0,
            loss_warmup=False,
            history={},
            gaussians=None,
            centre=np.zeros(3),
            camera_tracks=None,
            score_key=self.score_key,
            latest_scores=None,
            loo=None,
            searches={},
            search_order=[],
            active_search=None,
            arbitration=None,
            decisions=list(self.decisions),
        )


def test_engine_worker_steps_runs_until_and_serves_calls_off_the_main_thread() -> None:
    pipeline = FakePipeline()
    worker = EngineWorker(pipeline, frame_budget_ms=5).start()
    try:
        assert worker.step(3).result(timeout=10) == 3
        assert pipeline.total_steps == 3
        assert worker.run_until("search").result(timeout=10) == "search"
        assert pipeline.total_steps == 8
        assert worker.call(lambda p: p.total_steps * 10).result(timeout=10) == 80
        with pytest.raises(ZeroDivisionError):
            worker.call(lambda p: 1 / 0).result(timeout=10)
        assert worker.run_until("done").result(timeout=10) == "done"
        assert worker.step(5).result(timeout=10) == 0  # nothing left to do: resolves at once
        assert worker.wait_idle(10)
        view = worker.view
        assert view.phase == "done" and view.total_steps == 10 and view.ids == ["a", "b", "c"] and not view.busy
        assert threading.get_ident() not in pipeline.thread_ids
        replacement = FakePipeline()
        assert worker.swap(lambda old: replacement).result(timeout=10) is replacement
        assert worker.step(2).result(timeout=10) == 2 and replacement.total_steps == 2
    finally:
        worker.stop()
    assert not worker.alive


def test_engine_worker_reports_a_failing_step_and_stops_running() -> None:
    worker = EngineWorker(FakePipeline(fail_at=2), frame_budget_ms=5).start()
    try:
        worker.set_running(True)
        deadline = time.time() + 10
        while time.time() < deadline and not (worker.view and worker.view.error):
            time.sleep(0.01)
        assert "engine step failed: RuntimeError: boom" in worker.view.error
        assert not worker.running
    finally:
        worker.stop()


def test_pending_jobs_run_callbacks_and_report_failures() -> None:
    from concurrent.futures import Future

    messages, results = [], []
    jobs = PendingJobs(lambda message, is_error: messages.append((message, is_error)))
    ok, bad = Future(), Future()
    jobs.add(ok, "ok", results.append)
    jobs.add(bad, "export mesh")
    assert jobs.busy()
    ok.set_result(5)
    bad.set_exception(ValueError("no surface found\nsecond line"))
    jobs.poll()
    assert results == [5] and messages == [("export mesh failed: no surface found", True)] and not jobs.busy()


def test_bar_model_shows_the_round_that_picked_the_candidate() -> None:
    from gui.panels.lpips_bars import bar_model

    rounds = [
        {
            "round": 0,
            "candidate": None,
            "flags": [1, 1, 1, 1],
            "scores": [0.1, 0.5, 0.2, 0.1],
            "mean_inliers": 0.225,
            "next_candidate": 1,
            "mean_without_next": 0.1333,
            "auto_accept": None,
            "manual_accept": None,
        },
        {
            "round": 1,
            "candidate": 1,
            "flags": [1, 0, 1, 1],
            "scores": [0.05, 0.6, 0.06, 0.04],
            "mean_inliers": 0.05,
            "next_candidate": None,
            "mean_without_next": None,
            "auto_accept": True,
            "manual_accept": None,
        },
    ]
    view = SimpleNamespace(
        ids=["a", "b", "c", "d"],
        loo=LooSnapshot(rounds=rounds, threshold=0.05),
        score_key="lpips_norm",
        latest_scores=None,
        flags=np.array([1, 0, 1, 1]),
    )
    model = bar_model(view)
    assert model.candidate == 1 and model.verdict_round == 1
    np.testing.assert_allclose(model.scores, [0.1, 0.5, 0.2, 0.1])  # the scores that chose the candidate
    assert model.mean_before == pytest.approx(0.1333) and model.mean_after == pytest.approx(0.05)
    assert model.required == pytest.approx(0.0833)
    view.loo = None
    view.latest_scores = {"lpips_norm": [0.1, 0.9, 0.2, 0.3]}
    fallback = bar_model(view)
    assert fallback.candidate is None and fallback.mean_inliers == pytest.approx((0.1 + 0.2 + 0.3) / 3)


def test_heat_values_fill_missing_cells_with_the_worst_score() -> None:
    from gui.panels.search_heatmap import heat_values

    heat = np.array([[0.2, np.nan], [0.1, 0.4]])
    search = SimpleNamespace(heat_coarse=heat, heat_refined=heat * 2)
    values, low, high = heat_values(search, "coarse")
    assert (low, high) == (0.1, 0.4) and values[0, 1] == 0.4 and values.shape == (2, 2)
    _, low_refined, _ = heat_values(search, "refined")
    assert low_refined == pytest.approx(0.2)


# -------------------------------------------------------------------------------------------------
# issue 14: read-outs, arbitration rows, search read-out, layout, the window port (no display needed)


def _search_view(**extra):
    heat = np.array([[0.02, np.nan, 0.03], [0.01, 0.05, 0.04]])
    base = dict(
        view=3,
        elevations_deg=np.array([-30.0, 0.0]),
        azimuths_deg=np.array([-120.0, 0.0, 120.0]),
        heat_coarse=heat,
        heat_refined=heat,
        view_id="003",
        n_candidates=0,
        mse_coarse=np.repeat(heat[..., None], 2, axis=-1),
        mse_refined=np.repeat(heat[..., None], 2, axis=-1),
        chosen=None,
        ambiguous=False,
        competitors=[],
        target=np.ones((4, 4, 3), np.float32),
        initial_cell=None,
        chosen_cell=None,
        truth_cell=None,
        top=[],
        stage=3,
        n_stages=3,
        progress=1.0,
        done=True,
        manual=False,
        radii=np.array([1.5, 2.0]),
        best_radius={"coarse": np.full((2, 3), 2.0), "refined": np.full((2, 3), 1.5)},
        cell_lpips=np.array([[0.2, np.nan, np.nan], [0.1, np.nan, np.nan]]),
        cell_rank=np.array([[1, -1, -1], [0, -1, -1]]),
        has_lpips=True,
    )
    base.update(extra)
    return SearchSnapshot(**base)


def test_search_cell_read_out_and_rank_rule() -> None:
    from gui.panels.search_heatmap import ambiguity_text, candidate_label, cell_at, cell_readout, rank_rule

    search = _search_view()
    assert cell_at(search, 5.0, -25.0) == (0, 1) and cell_at(search, 119.0, 3.0) == (1, 2)
    assert cell_at(search, 0.0, 40.0) is None  # outside the searched band
    line = cell_readout(search, "refined", (1, 0))
    assert "MSE 0.0100" in line and "best radius 1.500" in line and "LPIPS 0.100" in line and "#0" in line
    assert "not evaluated" in cell_readout(search, "refined", (0, 1))
    assert "no final candidate" in cell_readout(search, "coarse", (1, 2))
    assert "rank(MSE) + rank(LPIPS)" in rank_rule(search)
    assert "LPIPS off" in rank_rule(_search_view(has_lpips=False))
    label = candidate_label({"rank_position": 2, "mse": 0.0123, "lpips": 0.21, "rank_total": 7})
    assert label.splitlines() == ["#2  Σ7", "M 0.0123", "L 0.210"]
    assert ambiguity_text(search) == ""
    badge = ambiguity_text(_search_view(ambiguous=True, competitors=[{"rank": 3, "angle_deg": 172.0, "score": 0.3}]))
    assert badge.startswith("AMBIGUOUS") and "#3 at 172 deg" in badge


def test_search_solver_line() -> None:
    from gui.panels.search_heatmap import solver_text

    assert solver_text(_search_view()) == ""
    running = _search_view(
        solver={
            "running": True,
            "level": 1,
            "n_levels": 4,
            "iteration": 3,
            "cost": [0.02, 0.01],
            "initial_cost": [0.05, 0.03],
            "damping": [1e-3, 1e-2],
            "last_step": [0.01, 0.12],
            "trust_radius": 0.15,
            "accepted": [3, 2],
        }
    )
    line = solver_text(running)
    assert "level 2/4" in line and "iteration 3" in line and "2 candidates" in line
    assert "0.0400 -> 0.0150" in line and "largest step 0.120 of 0.15 rad" in line
    done = solver_text(
        _search_view(
            solver={"running": False, "cost_start": [0.05, 0.03], "cost_end": [0.01, 0.03], "accepted": [5, 0]}
        )
    )
    assert done.startswith("pose solver: done, 1/2 candidates improved")


def _engine_view(**extra):
    base = dict(
        ids=["a", "b", "c", "d"],
        phase="done",
        arbitration=None,
        initial_flags=np.ones(4, int),
        loo=None,
        search_order=[],
    )
    base.update(extra)
    return SimpleNamespace(**base)


def test_arbitration_rows_per_view_and_scene_level() -> None:
    from gui.panels.arbitration import arbitration_rows, arbitration_summary

    scene_level = ArbitrationSnapshot(
        stage="decided",
        mode="paper",
        outliers=[1, 3],
        scores_recovered={"mse_norm": [0.1, 0.2, 0.3, 0.4], "lpips_norm": [1, 2, 3, 4]},
        scores_initial={"mse_norm": [0.1, 0.3, 0.3, 0.5], "lpips_norm": [1, 3, 3, 5]},
        auto_choice="recovered",
        choice="recovered",
        reason="better",
    )
    rows = arbitration_rows(_engine_view(arbitration=scene_level))
    assert [r["id"] for r in rows] == ["b", "d"] and not rows[0]["per_view"]
    assert rows[1]["scores"]["recovered"]["mse_norm"] == 0.4 and rows[1]["scores"]["initial"]["lpips_norm"] == 5
    assert rows[0]["scores"]["recovered"]["epipolar_px"] is None and rows[0]["choice"] == "recovered"
    per_view = replace(
        scene_level,
        mode="per_view",
        views=[
            {
                "view": 3,
                "id": "d",
                "auto_choice": "initial",
                "manual_choice": None,
                "choice": "initial",
                "reason": "ambiguous",
                "ambiguous": True,
                "candidates": [{"rank": 2, "angle_deg": 90.0, "score": 0.1}],
                "scores": {
                    "recovered": {"lpips_norm": 0.5, "mse_norm": 0.02, "epipolar_px": 3.0},
                    "initial": {"lpips_norm": 0.4, "mse_norm": 0.03, "epipolar_px": None},
                },
            }
        ],
    )
    rows = arbitration_rows(_engine_view(arbitration=per_view))
    assert len(rows) == 1 and rows[0]["per_view"] and rows[0]["ambiguous"] and rows[0]["choice"] == "initial"
    assert rows[0]["scores"]["recovered"]["epipolar_px"] == 3.0 and rows[0]["scores"]["initial"]["epipolar_px"] is None
    assert "no view of 1" in arbitration_summary(_engine_view(arbitration=per_view))
    assert "not started" in arbitration_summary(_engine_view(phase="search"))


def test_outcome_flags_follow_rounds_and_hand_flags() -> None:
    from gui.panels.outliers import outcome_flags

    rounds = [
        {"round": 0, "candidate": None, "accepted": None},
        {"round": 1, "candidate": 2, "accepted": True},
        {"round": 2, "candidate": 1, "accepted": False},
    ]
    flags, why = outcome_flags(
        _engine_view(initial_flags=np.array([1, 1, 1, 0]), loo=LooSnapshot(rounds=rounds), search_order=[2, 3])
    )
    assert flags == [1, 1, 0, 0] and why == {2: "round 1", 3: "by hand"}


def test_read_outs_losses_scores_timing() -> None:
    from gui.actions import OverlayData
    from gui.panels.controls import log_limits, timing_text, unweighted_losses
    from gui.panels.overlays import score_line
    from gui.state import Timing

    history = {
        "step": [1.0, 2.0, 4.0],
        "rgb": [1.0, 2.0, 4.0],
        "mask": [0.5, 1.0, 2.0],
        "prior": [0.0] * 3,
        "epipolar": [0.0] * 3,
        "total": [1.5, 3.0, 6.0],
    }
    losses = unweighted_losses(history, 4, True)
    assert losses["rgb"] == [4.0, 4.0, 4.0] and losses["total"] == [6.0, 6.0, 6.0]
    assert unweighted_losses(history, 4, False)["rgb"] == [1.0, 2.0, 4.0]
    low, high = log_limits([])
    assert low == 1e-3 and high == 1.0  # no 1e-306 axis on an empty plot
    low, high = log_limits([0.02, 300.0])
    assert low < 0.02 and high > 300.0 and low > 1e-4
    data = OverlayData((), np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 3)), [0.0], {"mse": [0.01], "lpips": [0.2]}, 4)
    assert score_line(data, 0, 9, busy=True) == ("scores: when the engine pauses", False)  # stale while live
    line, fresh = score_line(data, 0, 4, busy=True)
    assert fresh and line.startswith("scored @4") and "LPIPS 0.200" in line
    view = SimpleNamespace(ms_per_step=120.0, boundary_count=2, boundary_ms=1800.0, boundary_label="search")
    text = timing_text(view, Timing())
    assert "120 ms/step" in text and "1.80 s" in text and "not in ms/step" in text


def test_layout_scales_and_tiles_the_viewport() -> None:
    from gui.app import LAYOUT, VIEWPORT, layout_for

    assert layout_for(*VIEWPORT) == LAYOUT
    for width, height in ((1366, 768), (1920, 1080)):
        layout = layout_for(width, height)
        assert sum(layout[n][2] for n in ("orbit", "controls", "scores")) == width
        assert layout["scores"][3] + layout["search"][3] == layout["overlays"][1]
        assert layout["overlays"][1] + layout["overlays"][3] == height and layout["overlays"][2] == width


def test_the_window_satisfies_the_port_and_no_panel_imports_it() -> None:
    import ast
    from pathlib import Path

    from gui.app import DebuggerApp
    from gui.port import PORT_METHODS

    assert all(callable(getattr(DebuggerApp, name, None)) for name in PORT_METHODS)
    offenders = []
    for path in sorted((Path(__file__).resolve().parent.parent / "gui" / "panels").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n == "gui.app" or n.startswith("gui.app.")]
    assert offenders == []


def test_new_script_actions_parse_and_reject_bad_arguments() -> None:
    actions = parse_script(
        [
            {"apply_cell": [1, 2]},
            {"apply_cell": {"view": "001", "cell": [0, 3]}},
            {"choose_arbitration": "initial"},
            {"choose_arbitration": {"choice": "recovered", "view": 2}},
            {"hover_cell": [0, 0]},
            {"resize": [1366, 768]},
            {"tab": "arbitration"},
            {"tab": "accuracy"},
        ]
    )
    assert [a.name for a in actions][:4] == ["apply_cell", "apply_cell", "choose_arbitration", "choose_arbitration"]
    for bad in (
        {"apply_cell": [1]},
        {"apply_cell": [-1, 2]},
        {"choose_arbitration": "both"},
        {"choose_arbitration": {"choice": "initial", "view": 1, "x": 2}},
        {"resize": [10, 10]},
    ):
        with pytest.raises(ScriptError):
            parse_script([bad])


def test_relative_rule_verdict_text_shows_the_evidence_and_the_borderline_vote() -> None:
    from gui.panels.outliers import round_choices, verdict_text
    from gui.readouts import bar_model

    r0 = {
        "round": 0,
        "candidate": None,
        "flags": [1, 1, 1, 1],
        "scores": [0.5, 0.9, 0.5, 0.52],
        "mean_inliers": 0.6,
        "next_candidate": 1,
        "mean_without_next": 0.5067,
        "auto_accept": None,
        "manual_accept": None,
        "accepted": None,
        "reason": "",
    }
    kept = dict(
        r0,
        round=1,
        candidate=1,
        flags=[1, 0, 1, 1],
        scores=None,
        next_candidate=None,
        auto_accept=False,
        accepted=False,
        reason="z 1.2 < 3.5 (photometric z 1.2)",
    )
    loo = LooSnapshot(rule="relative", rounds=[r0, kept], threshold=0.05, confirm_drop=0.05, done=True)
    view = _engine_view(loo=loo, score_key="lpips_norm", latest_scores=None, flags=np.ones(4, int))
    head, line = verdict_text(view, bar_model(view))
    assert (
        head.startswith("round 1: candidate view b")
        and line == "z 1.2 < 3.5 (photometric z 1.2) -> automatic REJECT (inlier)"
    )
    assert round_choices(view)[1] == ("round 1: view b kept", 1)
    borderline = dict(kept, auto_accept=None, accepted=None, reason="z 2.5 in [2, 3.5) (photometric z 2.5)")
    view.loo = replace(loo, rounds=[r0, borderline], done=False)
    _, line = verdict_text(view, bar_model(view))
    assert "in [2, 3.5)" in line and "drops by 5% (to <= 0.4814)" in line
    assert round_choices(view)[1] == ("round 1: view b running", 1)
