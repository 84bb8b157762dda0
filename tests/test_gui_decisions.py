"""The debugger's decisions, checkpoints and exports (issue 14's defects, issue 18 item 6).

* checkpoints are plain data (``torch.load(weights_only=True)``): a file carrying a pickled callable is
  refused and runs nothing; a checkpoint of another scene is refused (scene fingerprint);
* the export of cameras reports the paths written;
* in the real window (under ``xvfb-run``): a view unticked by hand is pose-searched and its candidates can
  be applied; a decision that agrees with the verdict changes nothing; the round selector lets an earlier
  round's verdict be overruled; failed exports / checkpoint loads are exit 2 with one line and a red status;
  ``run_until`` a phase that never comes is exit 2 with one line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import FAST_PIPELINE as FAST
from tests.helpers import TouchOnUnpickle, run_gui_script

REPO = Path(__file__).resolve().parent.parent
needs_display = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run -a)")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from sparseags.synth import make_demo_scene

    root = tmp_path_factory.mktemp("scenes")
    return {
        "a": make_demo_scene(root / "a", seed=0, n_views=5, n_novel=0, resolution=32),
        "b": make_demo_scene(root / "b", seed=1, n_views=5, n_novel=0, resolution=32),
    }


def _pipeline(scene_dir: Path, *overrides: str):
    from sparseags.config import load_config
    from sparseags.session import build_pipeline

    return build_pipeline(Path(scene_dir), load_config(None, FAST + list(overrides)))


# ------------------------------------------------------------------------------------------------------
# checkpoints and exports (no display needed)


def test_checkpoint_carrying_a_pickled_callable_is_refused_and_runs_nothing(scenes, tmp_path) -> None:
    from gui import actions

    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pt"
    torch.save({"format": actions.CHECKPOINT_FORMAT, "pipeline": TouchOnUnpickle(marker)}, bad)
    pipeline = _pipeline(scenes["a"])
    with pytest.raises(actions.CheckpointError) as caught:
        actions.load_checkpoint(pipeline, bad)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "refused" in message and str(bad) in message
    assert not marker.exists(), "unpickling the checkpoint ran code"


def test_checkpoint_round_trip_and_another_scene_refused(scenes, tmp_path) -> None:
    from gui import actions

    pipeline = _pipeline(scenes["a"])
    pipeline.step(3)
    path = actions.save_checkpoint(pipeline, tmp_path / "a.pt", scenes["a"])
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain data only
    assert raw["scene"]["ids"] == list(pipeline.scene.ids) and len(raw["scene"]["image_sha1"]) == 5
    restored = actions.load_checkpoint(pipeline, path)
    assert restored.total_steps == pipeline.total_steps and restored.phase == pipeline.phase
    assert torch.equal(restored.recon.gaussians.means.detach(), pipeline.recon.gaussians.means.detach())
    other = _pipeline(scenes["b"])  # same view ids, other images
    with pytest.raises(actions.CheckpointError) as caught:
        actions.load_checkpoint(other, path)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "another scene" in message and "differ" in message


def test_damaged_or_missing_checkpoint_is_one_line(scenes, tmp_path) -> None:
    from gui import actions

    pipeline = _pipeline(scenes["a"])
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint at all")
    for path, words in ((damaged, "not a readable checkpoint"), (tmp_path / "missing.pt", "not found")):
        with pytest.raises(actions.CheckpointError) as caught:
            actions.load_checkpoint(pipeline, path)
        assert words in str(caught.value) and len(str(caught.value).splitlines()) == 1
    with pytest.raises(actions.CheckpointError, match="cannot write"):
        actions.save_checkpoint(pipeline, damaged / "inside_a_file.pt", scenes["a"])


def test_export_cameras_reports_the_paths_written(scenes, tmp_path) -> None:
    from gui import actions

    pipeline = _pipeline(scenes["a"])
    written = actions.export_cameras(pipeline, tmp_path)
    assert [Path(w).name for w in written] == ["cameras_updated.json", "colmap", "transforms.json"]
    assert all(Path(w).exists() for w in written)


def test_no_pickle_loading_of_user_files_in_the_product() -> None:
    offenders = []
    for folder in ("gui", "sparseags"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "weights_only=False" in text or "pickle.load(" in text or "allow_pickle=True" in text:
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


# ------------------------------------------------------------------------------------------------------
# the real window, scripted


@pytest.fixture(scope="module")
def session(scenes, tmp_path_factory):
    from gui import actions
    from gui.app import DebuggerApp
    from gui.script import ScriptRunner, parse_script
    from sparseags.config import load_config

    root = tmp_path_factory.mktemp("decisions")
    out = root / "out"
    app = DebuggerApp(scenes["a"], load_config(None, FAST), out)
    app.start_engine()
    app.build_window()
    facts: dict = {"root": root, "out": out}

    def run(script: list) -> tuple[int, str | None, dict]:
        runner = ScriptRunner(app, parse_script(script))
        code = app.run(runner)
        return code, runner.error, runner.results

    try:
        # 1. untick view 4 by hand, reach the pose search
        facts["first"] = run([{"set_flag": [4, 0]}, {"run_until": "search"}, {"step": 2}])
        p = app.worker.pipeline
        facts["order_first"] = list(p.search_order)
        facts["searches_first"] = {v: id(s) for v, s in p.searches.items()}
        facts["decisions_first"] = len(p.decisions)
        # 2. accepting the already accepted verdict (displayed and by round) changes nothing
        facts["noop"] = run([{"accept_outlier": True}, {"accept_outlier": 1}])
        p = app.worker.pipeline
        facts["phase_after_noop"] = p.phase
        facts["searches_after_noop"] = {v: id(s) for v, s in p.searches.items()}
        facts["decisions_after_noop"] = len(p.decisions)
        facts["status_after_noop"] = app.ui.status
        # 3. the round selector: show round 1's verdict, overrule it from the panel's buttons
        shot = root / "outlier_panel.png"
        facts["shot"] = shot
        facts["select"] = run([{"select_round": 1}, {"screenshot": str(shot)}])
        facts["combo"] = app.outliers._choices
        facts["selected"] = app.ui.selected_round
        app.outliers.decide(False)  # the "Keep: inlier" button
        facts["select"] += run([{"wait_frames": 2}])
        p = app.worker.pipeline
        facts["round1_after_reject"] = p.loo.rounds[1].accepted
        facts["decision_last"] = dict(p.decisions[-1])
        # 4. the hand-flagged view alone is searched now; apply one of its candidates
        facts["hand"] = run(
            [{"run_until": "arbitration"}, {"apply_candidate": {"view": 4, "rank": 1}}, {"export": "cameras"}]
        )
        p = app.worker.pipeline
        facts["order_hand"] = list(p.search_order)
        facts["manual_hand"] = p.searches[4].manual_choice if 4 in p.searches else None
        facts["status_export"] = app.ui.status
        # 5. failures: exit 2, one line, red status, the pipeline untouched
        before = app.worker.pipeline
        other = actions.save_checkpoint(_pipeline(scenes["b"]), root / "other.pt", scenes["b"])
        evil = root / "evil.pt"
        facts["marker"] = root / "pwned"
        torch.save({"format": actions.CHECKPOINT_FORMAT, "pipeline": TouchOnUnpickle(facts["marker"])}, evil)
        damaged = root / "damaged.pt"
        damaged.write_bytes(b"\x00garbage")
        failures = {}
        for name, action in (
            ("other", {"load_checkpoint": str(other)}),
            ("evil", {"load_checkpoint": str(evil)}),
            ("missing", {"load_checkpoint": str(root / "missing.pt")}),
            ("damaged", {"load_checkpoint": str(damaged)}),
            ("save", {"save_checkpoint": str(damaged / "x.pt")}),
        ):
            code, error, _ = run([action])
            app.jobs.poll()  # what the window's next frame does: the failed job becomes the status line
            failures[name] = (code, error, app.ui.status_is_error)
            app.report("", False)
        app.out_dir = damaged / "out"  # a folder below a file: unwritable
        for what in ("cameras", "gaussians"):
            code, error, _ = run([{"export": what}])
            app.jobs.poll()
            failures[f"export {what}"] = (code, error, app.ui.status_is_error)
            app.report("", False)
        facts["failures"] = failures
        facts["pipeline_kept"] = app.worker.pipeline is before
        yield facts
    finally:
        app.close()


@needs_display
def test_hand_flagged_view_is_searched_and_its_candidate_applied(session) -> None:
    assert session["first"][:2] == (0, None)
    assert 4 in session["order_first"] and len(session["order_first"]) == 2  # the test's outlier and view 4
    assert session["hand"][:2] == (0, None), session["hand"][1]
    assert session["order_hand"] == [4]  # round 1's removal was overruled: only the hand-flagged view is left
    assert session["manual_hand"] is not None


@needs_display
def test_a_decision_that_changes_nothing_keeps_the_search(session) -> None:
    assert session["noop"][:2] == (0, None)
    assert session["phase_after_noop"] == "search"
    assert session["searches_after_noop"] == session["searches_first"]  # the very same search objects
    assert session["decisions_after_noop"] == session["decisions_first"]  # nothing logged
    assert "nothing changed" in session["status_after_noop"]


@needs_display
def test_round_selector_overrules_an_earlier_round(session) -> None:
    from PIL import Image

    assert session["select"][:2] == (0, None)
    assert [index for _, index in session["combo"]] == [None, 1]
    assert session["selected"] == 1
    assert session["round1_after_reject"] is False
    assert session["decision_last"]["action"] == "reject_outlier" and session["decision_last"]["round"] == 1
    assert Image.open(session["shot"]).size[0] > 1000


@needs_display
def test_export_reports_paths(session) -> None:
    status = session["status_export"]
    assert "None" not in status and "cameras_updated.json" in status and "transforms.json" in status


@needs_display
def test_failed_checkpoint_and_export_are_exit_2_one_line_red(session) -> None:
    expected = {
        "other": "another scene",
        "evil": "refused",
        "missing": "not found",
        "damaged": "not a readable",
        "save": "cannot write",
        "export cameras": "export",
        "export gaussians": "export",
    }
    for name, (code, error, red) in session["failures"].items():
        assert code == 2, name
        assert error is not None and len(error.splitlines()) == 1 and expected[name] in error, (name, error)
        assert red, name
    assert not session["marker"].exists()
    assert session["pipeline_kept"]


@needs_display
def test_run_until_a_phase_that_never_comes_is_exit_2(scenes, tmp_path) -> None:
    script = tmp_path / "until.yaml"
    script.write_text("- run_until: search\n")
    # a threshold no removal can meet: the leave-one-out test keeps its only candidate, nothing is searched
    overrides = [o for o in FAST if not o.startswith("outliers.threshold")] + ["outliers.threshold=10"]
    result = run_gui_script(scenes["a"], tmp_path / "out", script, overrides)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "phase 'search' was never reached" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
