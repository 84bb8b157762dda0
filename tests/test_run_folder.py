"""The run folder read back (sparseags/run_folder.py), the comparison of two runs (sparseags/compare.py) and the
evaluation table's reader (sparseags.evaluate.read_evaluation), without a window."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseags import run_folder
from sparseags.compare import CompareError, compare_pipelines, config_diff
from sparseags.config import load_config
from sparseags.headless import run_headless
from sparseags.pipeline import Pipeline
from tests.helpers import FAST_PIPELINE, REPO

SETTINGS = [*FAST_PIPELINE, "pipeline.export_video=false", "pipeline.export_mesh=false"]


def cfg(*extra: str):
    return load_config(REPO / "configs" / "default.yaml", [*SETTINGS, *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny scene and two finished runs of it (seed 0 and seed 3), in a layout a user could copy around."""
    from sparseags.synth import make_demo_scene

    root = tmp_path_factory.mktemp("runs")
    scene = make_demo_scene(root / "scene", seed=0, n_views=5, n_novel=1, resolution=32)
    run_headless(scene, root / "out" / "a", cfg(), progress=False)
    run_headless(scene, root / "out" / "b", cfg("seed=3"), progress=False)
    return root


def snapshot_numbers(pipeline) -> dict:
    snap = pipeline.snapshot()
    return {
        "phase": snap.phase_label,
        "w2c": np.asarray(snap.w2c_current),
        "flags": np.asarray(snap.flags),
        "means": np.asarray(snap.gaussians["means"]),
        "loss_steps": list(snap.history.get("step", [])),
        "searches": sorted(snap.searches),
    }


def files_of(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


# -------------------------------------------------------------------------------------------------
# a finished run


def test_finished_run_reopens_as_it_ended(runs):
    folder = runs / "out" / "a"
    manifest = json.loads((folder / "run.json").read_text())
    assert manifest["format"] == run_folder.RUN_FORMAT
    assert manifest["scene_dir"] == "../../scene"  # relative: the folder is portable
    assert run_folder.FINAL_STATE in manifest["files"] and run_folder.MATCHES not in manifest["files"]
    # the final state is plain data: weights_only loading is all it needs
    torch.load(folder / run_folder.FINAL_STATE, weights_only=True)

    info = run_folder.inspect_run(folder)
    assert (
        info.kind == "complete" and info.run_id == manifest["run_id"] and info.scene_dir == (runs / "scene").resolve()
    )
    pipeline = run_folder.open_run(info)
    assert pipeline.done and pipeline.phase == "done"
    exported = json.loads((folder / "cameras_updated.json").read_text())
    shown = snapshot_numbers(pipeline)
    assert shown["searches"], "the run searched an outlier: its search panel must be filled"
    assert len(shown["loss_steps"]) > 0 and len(shown["means"]) > 10
    # the poses on display are the run's exported poses (cameras_updated.json, PyTorch3D convention)
    from sparseags.cameras import p3d_to_w2c

    for v, view_id in enumerate(pipeline.scene.ids):
        w2c = p3d_to_w2c(np.asarray(exported[view_id]["R"]), np.asarray(exported[view_id]["T"]))
        np.testing.assert_allclose(np.asarray(shown["w2c"][v]), np.asarray(w2c), atol=1e-5)


def test_a_reopened_run_continues_like_the_original_after_a_decision(runs):
    """Overruling a decision re-runs from that phase: the same as doing it on the live pipeline."""
    folder = runs / "out" / "a"
    live = run_folder.open_run(folder)
    assert live.search_order, "the fixture run must have searched a view"
    view = live.search_order[0]
    live.choose_arbitration("initial", view=view) if live.arbitration is not None else live.apply_candidate(view, 1)
    while not live.done:
        live.step(5)
    assert live.decisions and live.done


def test_a_copied_run_opens_elsewhere_with_its_scene_beside_it_or_given(runs, tmp_path):
    shutil.copytree(runs / "out" / "a", tmp_path / "out" / "a")
    with pytest.raises(run_folder.RunFolderError, match="the run's scene is not there .*--scene"):
        run_folder.inspect_run(tmp_path / "out" / "a")
    info = run_folder.inspect_run(tmp_path / "out" / "a", scene=runs / "scene")
    assert run_folder.open_run(info).done
    shutil.copytree(runs / "scene", tmp_path / "scene")
    assert run_folder.inspect_run(tmp_path / "out" / "a").scene_dir == (tmp_path / "scene").resolve()


@pytest.mark.parametrize(
    "damage, message",
    [
        ("edit_ply", "gaussians.ply differs from the run's run.json"),
        ("drop_state", "final_state.pt is missing"),
        ("bad_json", "run.json: not a readable run manifest"),
        ("old_format", "a run of an earlier version \\(sparseags-run/1"),
        ("foreign_format", "not a run manifest of this version"),
        ("state_swapped", "final_state.pt differs from the run's run.json"),
        ("other_scene", "not this run's scene: the images of view"),
    ],
)
def test_a_tampered_or_foreign_run_is_refused_in_one_line_and_nothing_is_written(runs, tmp_path, damage, message):
    folder = tmp_path / "out" / "a"
    shutil.copytree(runs / "out" / "a", folder)
    shutil.copytree(runs / "scene", tmp_path / "scene")
    manifest_path = folder / "run.json"
    manifest = json.loads(manifest_path.read_text())
    if damage == "edit_ply":
        with open(folder / "gaussians.ply", "ab") as handle:
            handle.write(b"\0")
    elif damage == "drop_state":
        (folder / run_folder.FINAL_STATE).unlink()
    elif damage == "bad_json":
        manifest_path.write_text("{ not json")
    elif damage in ("old_format", "foreign_format"):
        manifest["format"] = "sparseags-run/1" if damage == "old_format" else "sparseags-run/99"
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "state_swapped":
        shutil.copy(runs / "out" / "b" / run_folder.FINAL_STATE, folder / run_folder.FINAL_STATE)
    elif damage == "other_scene":
        image = next((tmp_path / "scene" / "images").iterdir())
        from PIL import Image

        pixels = np.asarray(Image.open(image)).copy()
        pixels[0, 0] = 255 - pixels[0, 0]
        Image.fromarray(pixels).save(image)
    before = files_of(tmp_path)
    with pytest.raises(run_folder.RunFolderError) as caught:
        run_folder.open_run(folder)
    assert len(str(caught.value).splitlines()) == 1
    assert __import__("re").search(message, str(caught.value)), str(caught.value)
    assert files_of(tmp_path) == before


def test_a_final_state_that_carries_code_is_refused_before_it_runs(runs, tmp_path):
    from tests.helpers import TouchOnUnpickle

    folder = tmp_path / "a"
    shutil.copytree(runs / "out" / "a", folder)
    marker = tmp_path / "ran"
    torch.save({"format": run_folder.FINAL_STATE_FORMAT, "x": TouchOnUnpickle(marker)}, folder / run_folder.FINAL_STATE)
    manifest = json.loads((folder / "run.json").read_text())
    manifest["files"][run_folder.FINAL_STATE]["sha256"] = run_folder.sha256_file(folder / run_folder.FINAL_STATE)
    (folder / "run.json").write_text(json.dumps(manifest))
    with pytest.raises(run_folder.RunFolderError, match="refused: the file carries pickled code"):
        run_folder.inspect_run(folder, scene=runs / "scene")
    assert not marker.exists()


# -------------------------------------------------------------------------------------------------
# an interrupted run


def test_an_interrupted_run_opens_at_its_checkpoint_paused_and_runs_on(runs, tmp_path, monkeypatch):
    calls = [0]
    original = Pipeline.step

    def step(self, budget=1):
        calls[0] += 1
        if calls[0] == 9:
            raise KeyboardInterrupt  # stands for a kill: the last checkpoint stays
        return original(self, budget)

    monkeypatch.setattr(Pipeline, "step", step)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run_headless(runs / "scene", out, cfg("run.checkpoint_every_s=0"), progress=False)
    monkeypatch.undo()
    assert not (out / "run.json").exists()
    info = run_folder.inspect_run(out)
    assert info.kind == "interrupted" and info.scene_dir == (runs / "scene").resolve()
    pipeline = run_folder.open_run(info)
    assert not pipeline.done and pipeline.total_steps > 0
    steps = pipeline.total_steps
    pipeline.step(1)
    assert pipeline.total_steps == steps + 1
    with pytest.raises(run_folder.RunFolderError, match="not a run folder"):
        run_folder.inspect_run(runs / "scene")


# -------------------------------------------------------------------------------------------------
# two runs compared


def test_two_runs_of_one_scene_compare_view_by_view(runs):
    a, b = (run_folder.open_run(runs / "out" / name) for name in ("a", "b"))
    comparison = compare_pipelines(a, b, ("a", "b"), tile=24)
    n = len(a.scene.ids)
    assert comparison.has_gt and len(comparison.rot[0]) == n and comparison.renders[1].shape == (n, 24, 24, 3)
    assert ("seed", "0", "3") in comparison.config
    # the numbers are the metrics of each run's exported poses
    metrics_a = json.loads((runs / "out" / "a" / "metrics.json").read_text())
    assert comparison.metrics[0]["rot15"] == pytest.approx(metrics_a["pose"]["final"]["rot15"])
    np.testing.assert_allclose(
        comparison.rot[0], [metrics_a["views"][i]["rot_err_deg"] for i in a.scene.ids], atol=1e-6
    )
    same = compare_pipelines(a, a, ("a", "a"), tile=16)
    assert same.decisions == [] and same.config == []
    np.testing.assert_array_equal(same.rot[0], same.rot[1])


def test_runs_of_different_scenes_do_not_compare(runs, tmp_path):
    from sparseags.synth import make_demo_scene

    other = make_demo_scene(tmp_path / "other", seed=4, n_views=5, n_novel=0, resolution=32)
    run_headless(other, tmp_path / "run", cfg("pipeline.outliers=false"), progress=False)
    with pytest.raises(CompareError, match="another scene"):
        compare_pipelines(run_folder.open_run(runs / "out" / "a"), run_folder.open_run(tmp_path / "run"), ("a", "x"))


def test_config_diff_lists_every_differing_leaf():
    assert config_diff({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 5}, "e": 4}) == [
        ("a.c", "2", "5"),
        ("d", "3", "'<missing>'"),
        ("e", "'<missing>'", "4"),
    ]


# -------------------------------------------------------------------------------------------------
# an evaluation folder


def test_an_evaluation_folder_reads_as_rows_with_worse_than_start_marked(runs, tmp_path):
    from sparseags.evaluate import EvaluationError, read_evaluation

    eval_dir = tmp_path / "eval"
    shutil.copytree(runs / "out" / "a", eval_dir / "cameras" / "scene")
    shutil.copytree(runs / "out" / "b", eval_dir / "dust3r_like" / "scene")
    (eval_dir / "dust3r_like" / "broken").mkdir()
    (eval_dir / "dust3r_like" / "broken" / "error.txt").write_text("scene: cameras.json missing\n")
    rows = read_evaluation(eval_dir)
    assert [(r.scene, r.preset, r.status) for r in rows] == [
        ("broken", "dust3r_like", "failed"),
        ("scene", "cameras", "complete"),
        ("scene", "dust3r_like", "complete"),
    ]
    metrics = json.loads((runs / "out" / "a" / "metrics.json").read_text())
    row = rows[1]
    assert row.metrics["final_rot15"] == pytest.approx(metrics["pose"]["final"]["rot15"])
    init, final = metrics["pose"]["init"], metrics["pose"]["final"]
    assert row.worse == any(final[k] < init[k] for k in ("rot5", "rot15", "cc10"))
    assert rows[0].message == "scene: cameras.json missing"
    with pytest.raises(EvaluationError, match="no runs of an evaluation"):
        read_evaluation(runs / "scene")


# -------------------------------------------------------------------------------------------------
# the command line refuses before any window


def gui_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", DISPLAY=os.environ.get("DISPLAY", ":99"))
    return subprocess.run(
        [sys.executable, "main.py", "gui", *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env
    )


def test_gui_refuses_a_bad_run_folder_in_one_line_with_exit_2(runs, tmp_path):
    folder = tmp_path / "a"
    shutil.copytree(runs / "out" / "a", folder)
    with open(folder / "metrics.json", "a") as handle:
        handle.write(" ")
    before = files_of(tmp_path)
    result = gui_cli("--run", str(folder))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {folder}: metrics.json differs from the run's run.json (changed after the run)"]
    assert files_of(tmp_path) == before
    result = gui_cli("--run", str(runs / "out" / "a"), "--compare", str(tmp_path / "missing"))
    assert result.returncode == 2 and "no such folder" in result.stderr
    result = gui_cli("--eval", str(runs / "scene"))
    assert result.returncode == 2 and "no runs of an evaluation" in result.stderr
