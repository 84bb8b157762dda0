"""Finished, interrupted and evaluated runs in the real window (issue 23), under ``xvfb-run``.

One window for the module, opened on the runs' scene, driven by scripts: they open a finished run, overrule a
decision, compare two runs, open an evaluation table, sort it, open a row, compare two rows and open an
interrupted run. The tests then check what the window showed and wrote. The command-line entry points
(``gui --run``, ``gui --eval``, which start with nothing open) run in subprocesses: a window whose orbit view
never drew, closed and followed by a second window in the same process, crashed DearPyGui here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from sparseags import run_folder
from sparseags.config import load_config
from sparseags.headless import run_headless
from sparseags.pipeline import Pipeline
from tests.helpers import FAST_PIPELINE, REPO

pytestmark = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run -a)")

SETTINGS = [*FAST_PIPELINE, "pipeline.export_video=false", "pipeline.export_mesh=false"]


def cfg(*extra: str):
    return load_config(REPO / "configs" / "default.yaml", [*SETTINGS, *extra])


def hashes(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): run_folder.sha256_file(p) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from sparseags.synth import make_demo_scene

    root = tmp_path_factory.mktemp("runs_gui")
    scene = make_demo_scene(root / "scene", seed=0, n_views=5, n_novel=0, resolution=32)
    eval_dir = root / "eval"
    a, b = eval_dir / "cameras" / "scene", eval_dir / "seed3" / "scene"
    run_headless(scene, a, cfg(), progress=False)
    run_headless(scene, b, cfg("seed=3"), progress=False)
    # an interrupted run: killed after a few steps, its checkpoint left behind
    calls = [0]
    original = Pipeline.step

    def step(self, budget=1):
        calls[0] += 1
        if calls[0] == 6:
            raise KeyboardInterrupt
        return original(self, budget)

    Pipeline.step = step
    try:
        run_headless(scene, root / "interrupted", cfg("run.checkpoint_every_s=0"), progress=False)
    except KeyboardInterrupt:
        pass
    finally:
        Pipeline.step = original
    return {"root": root, "scene": scene, "a": a, "b": b, "eval": eval_dir, "interrupted": root / "interrupted"}


@pytest.fixture(scope="module")
def session(folders):
    from gui.app import DebuggerApp
    from gui.script import ScriptRunner, parse_script

    root = folders["root"]
    before = {name: hashes(folders[name]) for name in ("a", "b")}
    app = DebuggerApp(folders["scene"], cfg())
    app.start_engine()
    app.build_window()
    shots = {name: root / f"{name}.png" for name in ("run", "compare", "eval")}
    facts: dict = {"shots": shots, "before": before}
    try:
        script = [
            {"open_run": str(folders["a"])},
            {"tab": "accuracy"},
            {"screenshot": str(shots["run"])},
        ]
        runner = ScriptRunner(app, parse_script(script))
        facts["exit_open"] = app.run(runner)
        facts["error_open"] = runner.error
        facts["open_seconds"] = dict(app.open_seconds)
        facts["opened"] = app.worker.pipeline
        facts["out_after_open"] = app.out_dir
        facts["phase_after_open"] = app.worker.view.phase_label
        searched = list(app.worker.pipeline.search_order)
        facts["searched"] = searched
        decision = [{"choose_arbitration": {"choice": "initial", "view": app.worker.view.ids[searched[0]]}}]
        runner = ScriptRunner(app, parse_script([*decision, {"step": 2}]))
        facts["exit_decide"] = app.run(runner)
        facts["error_decide"] = runner.error
        script = [
            {"compare": str(folders["b"])},
            {"select_view": 1},
            {"screenshot": str(shots["compare"])},
        ]
        runner = ScriptRunner(app, parse_script(script))
        facts["exit_compare"] = app.run(runner)
        facts["error_compare"] = runner.error
        facts["comparison"] = app.comparison
        facts["tab"] = app.ui.bottom_tab
        script = [
            {"open_eval": str(folders["eval"])},
            {"eval_sort": {"column": "preset", "ascending": False}},
            {"screenshot": str(shots["eval"])},
        ]
        runner = ScriptRunner(app, parse_script(script))
        facts["exit_eval"] = app.run(runner)
        facts["error_eval"] = runner.error
        facts["eval_rows"] = [r.name for r in app.eval_window.model.rows()]
        runner = ScriptRunner(app, parse_script([{"eval_open": 0}]))
        facts["exit_row"] = app.run(runner)
        facts["source_after_row"] = app.source.folder
        runner = ScriptRunner(app, parse_script([{"eval_compare": ["scene/cameras", "scene/seed3"]}]))
        facts["exit_eval_compare"] = app.run(runner)
        facts["eval_comparison"] = app.comparison
        runner = ScriptRunner(app, parse_script([{"open_run": str(folders["interrupted"])}]))
        facts["exit_interrupted"] = app.run(runner)
        facts["interrupted_view"] = app.worker.view
        facts["interrupted_source"] = app.source
        runner = ScriptRunner(app, parse_script([{"step": 1}]))
        facts["exit_interrupted_step"] = app.run(runner)
        facts["steps_after"] = app.worker.view.total_steps
        runner = ScriptRunner(app, parse_script([{"open_run": str(folders["scene"])}]))
        facts["exit_not_a_run"] = app.run(runner)
        facts["error_not_a_run"] = runner.error
        facts["source_after_refusal"] = app.source
        # "Open scene..." / "Open run..." on a run folder opens the run (the dialogs' shared route)
        runner = ScriptRunner(app, parse_script([{"open_scene": str(folders["b"])}]))
        facts["exit_dialog_route"] = app.run(runner)
        facts["source_after_dialog"] = app.source
        facts["after"] = {name: hashes(folders[name]) for name in ("a", "b")}
        yield facts
    finally:
        app.close()


def test_a_finished_run_opens_as_it_ended(session, folders) -> None:
    assert session["exit_open"] == 0, session["error_open"]
    assert session["phase_after_open"] == "final" and session["opened"].done
    assert session["searched"], "the fixture's run searched an outlier"
    seconds = session["open_seconds"]
    assert len(seconds) == 1 and 0 < next(iter(seconds.values())) < 120


def test_a_decision_on_a_finished_run_goes_to_a_new_folder_and_never_into_the_run(session, folders) -> None:
    assert session["exit_decide"] == 0, session["error_decide"]
    rerun = session["out_after_open"]
    assert rerun == folders["a"].with_name("scene_rerun").resolve()
    logged = json.loads((rerun / "decisions.json").read_text())
    assert logged["decisions"][-1]["action"] == "choose_arbitration"
    assert logged["source_run"]["folder"] == str(folders["a"]) and logged["source_run"]["kind"] == "complete"
    assert session["after"] == session["before"], "the opened runs' files must not change"
    assert run_folder.check_run(folders["a"]) is None


def test_two_runs_side_by_side_in_the_compare_tab(session, folders) -> None:
    assert session["exit_compare"] == 0, session["error_compare"]
    comparison = session["comparison"]
    assert session["tab"] == "compare" and comparison.has_gt
    assert ("seed", "0", "3") in comparison.config
    metrics_b = json.loads((folders["b"] / "metrics.json").read_text())
    assert comparison.metrics[1]["rot15"] == pytest.approx(metrics_b["pose"]["final"]["rot15"])
    from PIL import Image

    shot = np.asarray(Image.open(session["shots"]["compare"]).convert("RGB")).astype(float)
    bottom = shot[int(0.66 * shot.shape[0]) :]
    assert bottom.std() > 10, "the compare tab must show its table and images"


def test_the_evaluation_table_sorts_opens_and_compares(session, folders) -> None:
    assert session["exit_eval"] == 0, session["error_eval"]
    assert session["eval_rows"] == ["scene/seed3", "scene/cameras"]  # preset, descending
    assert session["exit_row"] == 0 and session["source_after_row"] == folders["b"]
    assert session["exit_eval_compare"] == 0
    assert session["eval_comparison"].labels == (str(folders["a"]), str(folders["b"]))


def test_an_interrupted_run_opens_paused_at_its_checkpoint_and_steps_on(session, folders) -> None:
    assert session["exit_interrupted"] == 0
    view, source = session["interrupted_view"], session["interrupted_source"]
    assert source.kind == "interrupted" and not view.done and not view.running
    assert session["exit_interrupted_step"] == 0 and session["steps_after"] == view.total_steps + 1


def test_a_folder_that_is_not_a_run_is_refused_and_the_shown_run_stays(session, folders) -> None:
    assert session["exit_not_a_run"] == 2 and "not a run folder" in str(session["error_not_a_run"])
    assert session["source_after_refusal"].kind == "interrupted"


def test_the_open_dialog_route_opens_a_run_folder_as_a_run(session, folders) -> None:
    assert session["exit_dialog_route"] == 0
    assert session["source_after_dialog"].folder == folders["b"] and session["source_after_dialog"].kind == "complete"


def test_a_copied_run_opens_through_the_command_line_with_its_scene_given(folders, tmp_path) -> None:
    import subprocess
    import sys

    shutil.copytree(folders["a"], tmp_path / "a")
    script = tmp_path / "s.yaml"
    script.write_text("- tab: accuracy\n")
    command = [sys.executable, "main.py", "gui", "--run", str(tmp_path / "a"), "--script", str(script)]
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert refused.returncode == 2 and "give it with --scene DIR" in refused.stderr
    assert [line for line in refused.stderr.splitlines() if line.strip()][-1].startswith("error:")
    opened = subprocess.run(
        [*command, "--scene", str(folders["scene"])], cwd=REPO, capture_output=True, text=True, timeout=300, env=env
    )
    assert opened.returncode == 0, opened.stderr[-2000:]
    assert "first full frame after" in opened.stderr


def test_gui_eval_opens_the_table_and_a_row_through_the_command_line(folders, tmp_path) -> None:
    import subprocess
    import sys

    script = tmp_path / "s.yaml"
    script.write_text("- eval_sort: {column: rot15, ascending: false}\n- eval_open: scene/seed3\n- tab: accuracy\n")
    command = [sys.executable, "main.py", "gui", "--eval", str(folders["eval"]), "--script", str(script)]
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    result = subprocess.run(
        [*command, "--screenshot", str(tmp_path / "eval.png")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "opened run scene: first full frame after" in result.stderr
    assert (tmp_path / "eval.png").is_file()
