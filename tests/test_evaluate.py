"""Tests of the dataset evaluation (sparseags/evaluate.py).

The reporting helpers are tested on hand-made metrics; the end-to-end tests run the real pipeline on two tiny
synthetic scenes (64 px, 10 reconstruction steps) plus one broken scene, sequentially, resumed and on a local
Ray instance, and once with the outlier stage on a tiny pose search.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseags.config import load_config
from sparseags.evaluate import (
    OUTLIER_COLUMNS,
    RESULT_COLUMNS,
    EvalJob,
    EvaluationError,
    JobResult,
    RayUnavailableError,
    check_ray_address,
    cpus_per_task,
    find_scenes,
    gpus_per_task,
    normalise_presets,
    outlier_row,
    plan_jobs,
    plan_workers,
    result_row,
    run_evaluation,
    summary_markdown,
    true_outliers,
)
from sparseags.scene import CameraRecord, write_cameras_json
from sparseags.synth import look_at_w2c, make_demo_scene

TINY = [
    "device=cpu",
    "prior.enabled=false",
    "scene.resolution=64",
    "recon.iters=10",
    "recon.num_pts=300",
    "recon.resolution_schedule=[[0,64]]",
    "pipeline.outliers=false",
    "pipeline.turntable_frames=4",
    "pipeline.turntable_resolution=32",
    "pipeline.mesh_resolution=32",
    "pipeline.export_video=false",
    "pipeline.export_mesh=false",
    "metrics.novel_pose_steps=20",
    "metrics.mesh_points=5000",
]
TINY_OUTLIERS = [
    "pipeline.outliers=true",
    "outliers.score=mse",
    "outliers.round_iters=5",
    "search.stage_steps=[2,2,2]",
    "search.stage_resolution=[32,32,32]",
    "search.keep_min=4",
    "search.n_azimuth=8",
    "search.align_copies=4",
    "search.align_steps=2",
]
NUMERIC_COLUMNS = [c for c in RESULT_COLUMNS if c not in ("scene", "preset")]


def assert_same_numbers(seq_rows: list[dict[str, str]], other_rows: list[dict[str, str]]) -> None:
    """Every numeric cell but time_s equal (to 1e-9) in two results.csv row lists, empty where the other is."""
    for seq, par in zip(seq_rows, other_rows):
        for col in NUMERIC_COLUMNS:
            if col == "time_s":
                continue
            assert (seq[col] == "") == (par[col] == ""), col
            if seq[col]:
                assert float(par[col]) == pytest.approx(float(seq[col]), abs=1e-9), (seq["scene"], col)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


# -------------------------------------------------------------------------------------------------
# planning


def _touch_scene(folder: Path) -> None:
    (folder / "novel").mkdir(parents=True)
    (folder / "cameras_gt.json").write_text("{}")
    (folder / "novel" / "cameras_gt.json").write_text("{}")


def test_find_scenes_recursive_sorted_and_not_inside_scenes(tmp_path: Path) -> None:
    for name in ("ycb/mug", "ycb/apple", "dtu/scan24", ".hidden/x", "out/cameras/y"):
        _touch_scene(tmp_path / name)
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    scenes = find_scenes(tmp_path, exclude=[tmp_path / "out"])
    assert [p.relative_to(tmp_path).as_posix() for p in scenes] == ["dtu/scan24", "ycb/apple", "ycb/mug"]


def test_find_scenes_missing_folder_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="data folder not found"):
        find_scenes(tmp_path / "nope")


def test_plan_jobs_layout_and_no_scene_error(tmp_path: Path) -> None:
    _touch_scene(tmp_path / "data" / "b")
    _touch_scene(tmp_path / "data" / "a")
    jobs = plan_jobs(tmp_path / "data", tmp_path / "out", ["dust3r_like", "cameras"])
    assert [(j.preset, j.scene) for j in jobs] == [
        ("dust3r_like", "a"),
        ("dust3r_like", "b"),
        ("cameras", "a"),
        ("cameras", "b"),
    ]
    assert jobs[1].out_dir == (tmp_path / "out" / "dust3r_like" / "b").resolve()
    assert jobs[0].init == "dust3r_like" and jobs[2].init is None
    (tmp_path / "nothing").mkdir()
    with pytest.raises(EvaluationError, match="no scene folders"):
        plan_jobs(tmp_path / "nothing", tmp_path / "out", ["cameras"])


def test_normalise_presets() -> None:
    cfg = load_config(None)
    assert normalise_presets(None, cfg) == ["cameras"]
    assert normalise_presets([], cfg) == ["cameras"]
    assert normalise_presets(["dust3r_like", "cameras.json", "dust3r_like.json", "raydiff_like"], cfg) == [
        "dust3r_like",
        "cameras",
        "raydiff_like",
    ]
    assert normalise_presets(None, load_config(None, ["scene.init=raydiff_like"])) == ["raydiff_like"]
    with pytest.raises(EvaluationError, match="key=value"):
        normalise_presets(["dust3r_like", "recon.iters=3"], cfg)
    with pytest.raises(EvaluationError):
        normalise_presets(["../x"], cfg)


def test_ray_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_ray_address("local") == "local"
    assert check_ray_address("ray://head:10001") == "ray://head:10001"
    with pytest.raises(EvaluationError, match="overrides before"):
        check_ray_address("recon.iters=3")
    with pytest.raises(EvaluationError):
        check_ray_address("headnode")
    monkeypatch.delenv("SPARSEAGS_EVAL_CPUS_PER_TASK", raising=False)
    assert cpus_per_task() == 1.0
    monkeypatch.setenv("SPARSEAGS_EVAL_CPUS_PER_TASK", "4")
    assert cpus_per_task() == 4.0
    for bad in ("0", "-1", "two", "nan"):
        monkeypatch.setenv("SPARSEAGS_EVAL_CPUS_PER_TASK", bad)
        with pytest.raises(EvaluationError, match="SPARSEAGS_EVAL_CPUS_PER_TASK"):
            cpus_per_task()
    assert gpus_per_task(load_config(None, ["device=cpu"])) == 0
    assert gpus_per_task(load_config(None, ["device=cuda"])) == 1
    assert gpus_per_task(load_config(None, ["device=auto"])) == int(torch.cuda.is_available())


def test_missing_ray_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch_scene(tmp_path / "data" / "a")
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(RayUnavailableError, match="'ray' package"):
        run_evaluation(tmp_path / "data", tmp_path / "out", load_config(None, TINY), None, "local", log=lambda s: None)


# -------------------------------------------------------------------------------------------------
# true outliers and report rows


def _rotated(w2c: np.ndarray, degrees: float, axis: tuple[float, float, float]) -> np.ndarray:
    """Rotate the camera about its own centre by `degrees` (camera-frame axis)."""
    from scipy.spatial.transform import Rotation

    delta = np.eye(4)
    delta[:3, :3] = Rotation.from_rotvec(np.radians(degrees) * np.asarray(axis) / np.linalg.norm(axis)).as_matrix()
    return delta @ w2c


def test_true_outliers_from_the_init_file(tmp_path: Path) -> None:
    K = np.array([[100.0, 0, 32], [0, 100.0, 32], [0, 0, 1]])
    ids = [f"{i:03d}" for i in range(6)]
    gt = [
        look_at_w2c(np.array([2 * math.sin(a), 0.5, 2 * math.cos(a)]), np.zeros(3))
        for a in np.linspace(0, 2 * math.pi, 6, endpoint=False)
    ]
    # 2 degrees on most views, 20 on view 004 (not an outlier), 40 on view 002 (an outlier)
    noise = {"000": 2.0, "001": 2.0, "002": 40.0, "003": 2.0, "004": 20.0, "005": 2.0}
    axes = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 0, 1)]
    init = [_rotated(w, noise[i], ax) for w, i, ax in zip(gt, ids, axes)]

    def records(poses):
        return [CameraRecord(id=i, w2c=w, K=K, filepath=f"images/{i}.png") for i, w in zip(ids, poses)]

    write_cameras_json(tmp_path / "cameras_gt.json", records(gt))
    write_cameras_json(tmp_path / "cameras.json", records(gt))
    (tmp_path / "init").mkdir()
    write_cameras_json(tmp_path / "init" / "noisy.json", records(init))
    assert true_outliers(tmp_path, "noisy") == ["002"]
    assert true_outliers(tmp_path, "noisy", threshold_deg=10.0) == ["002", "004"]
    assert true_outliers(tmp_path, "cameras") == []


def _metrics(flagged: list[str], n_views: int = 4) -> dict:
    return {
        "pose": {
            "init": {"rot5": 10.0, "rot15": 20.0, "cc10": 30.0, "rot_err_mean_deg": 9.0},
            "final": {"rot5": 40.0, "rot15": 50.0, "cc10": 60.0, "rot_err_mean_deg": 1.0},
        },
        "views": {f"{i:03d}": {"psnr": 20.0, "flag": 1} for i in range(n_views)},
        "outliers": {"flagged": flagged, "views": {}},
        "novel": {
            "psnr": 21.5,
            "ssim": 0.8,
            "lpips": 0.2,
            "pose_refined": {"psnr": 25.0, "ssim": 0.9, "lpips": 0.1, "steps": 100, "mean_correction_deg": 0.5},
        },
        "mesh": {"f1_0.01": 70.0, "chamfer": 0.01, "icp": {"f1_0.01": 75.0, "chamfer": 0.008}},
        "time_s": 12.5,
    }


def _result(scene: str, preset: str, metrics: dict | None, truth: list[str] | None, error: str = "") -> JobResult:
    job = EvalJob(scene_dir=Path("/data") / scene, scene=scene, preset=preset, out_dir=Path("/out") / preset / scene)
    result = JobResult(job, "done" if metrics else "failed", metrics=metrics, error=error)
    result.extra["true_outliers"] = truth
    return result


def test_result_row_maps_every_column() -> None:
    row = result_row(_result("mug", "dust3r_like", _metrics(["001", "003"], n_views=5), ["001"]))
    assert list(row) == list(RESULT_COLUMNS)
    assert row == {
        "scene": "mug",
        "preset": "dust3r_like",
        "n_views": "5",
        "init_rot5": "10.0",
        "init_rot15": "20.0",
        "init_cc10": "30.0",
        "final_rot5": "40.0",
        "final_rot15": "50.0",
        "final_cc10": "60.0",
        "outliers_flagged": "2",
        "psnr": "21.5",
        "ssim": "0.8",
        "lpips": "0.2",
        "f1": "70.0",
        "time_s": "12.5",
        "psnr_refined": "25.0",
        "ssim_refined": "0.9",
        "lpips_refined": "0.1",
        "f1_icp": "75.0",
        "final_rot5_x": "40.0",  # nothing excluded: the final figures
        "final_rot15_x": "50.0",
        "final_cc10_x": "60.0",
    }
    metrics = _metrics([])
    del metrics["mesh"], metrics["novel"]
    partial = result_row(_result("scan24", "cameras", metrics, []))
    assert partial["f1"] == partial["psnr"] == partial["lpips"] == "" and partial["final_rot5"] == "40.0"
    assert partial["f1_icp"] == partial["psnr_refined"] == ""
    failed = result_row(_result("bad", "cameras", None, None, error="boom"))
    assert all(failed[c] == "" for c in NUMERIC_COLUMNS) and failed["scene"] == "bad"


def test_outlier_rows_and_summary_precision_recall() -> None:
    cfg = load_config(None, ["pipeline.outliers=true"])
    results = [
        _result("a", "p", _metrics(["002", "003"]), ["002"]),  # tp 1, fp 1, fn 0
        _result("b", "p", _metrics([]), ["001"]),  # tp 0, fp 0, fn 1
        _result("c", "p", _metrics(["000"]), ["000", "001"]),  # tp 1, fp 0, fn 1
        _result("d", "p", None, ["000"], error="cameras.json: broken | badly"),
    ]
    rows = [outlier_row(r) for r in results]
    assert list(rows[0]) == list(OUTLIER_COLUMNS)
    assert [(r["tp"], r["fp"], r["fn"]) for r in rows] == [
        ("1", "1", "0"),
        ("0", "0", "1"),
        ("1", "0", "1"),
        ("", "", ""),
    ]
    assert rows[0]["flagged"] == "002 003" and rows[2]["true_outliers"] == "000 001"
    text = summary_markdown(results, ["p"], cfg, Path("/data"))
    # overall: TP 2, FP 1, FN 2 -> precision 2/3, recall 2/4
    assert "| all | 4 | 3 | 2 | 1 | 2 | 66.7 | 50.0 |" in text
    assert "| p | 3/4 | 10.0 | 20.0 | 30.0 | – | – | – | – | – | – | – |" in text
    assert "| p + SparseAGS | 3/4 | 40.0 | 50.0 | 60.0 | 21.50 | 0.200 | 70.0 | 12 | 25.00 | 0.100 | 75.0 |" in text
    assert "| p | d | cameras.json: broken / badly |" in text
    assert "| p + SparseAGS, symmetric ambiguous views out |" not in text  # nothing was excluded


def test_final_verdict_counts_local_corrections_as_inliers_and_leaves_symmetric_views_out() -> None:
    cfg = load_config(None, ["pipeline.outliers=true"])
    metrics = _metrics(["001", "002", "003"])
    # 001: a true outlier, ambiguous, its truth among the alternatives (a symmetric object); 002: a view a few
    # degrees off, corrected in place; 003: ambiguous, but the truth is none of the alternatives (a miss)
    metrics["outliers"].update(
        ambiguous={"001": [], "003": []},
        gt_symmetric={"001": "the truth is 2.0° from the alternative 180° from the winner"},
        corrected_locally={"002": {"cost": 0.01, "accept_cost": 0.02, "moved_deg": 1.5}},
    )
    metrics["pose"]["final_x"] = {"rot5": 80.0, "rot15": 90.0, "cc10": 70.0}
    result = _result("bowl", "p", metrics, ["001", "003"])
    row = outlier_row(result)
    assert (row["tp"], row["fp"], row["fn"]) == ("2", "1", "0")  # the leave-one-out flags as they are
    assert (row["tp_x"], row["fp_x"], row["fn_x"]) == ("1", "0", "0")  # 002 is no outlier, 001 left out
    assert row["corrected_locally"] == "002" and row["gt_symmetric"] == "001" and row["ambiguous"] == "001 003"
    pose_row = result_row(result)
    assert (pose_row["final_rot15"], pose_row["final_rot15_x"]) == ("50.0", "90.0")
    text = summary_markdown([result], ["p"], cfg, Path("/data"))
    assert "| p + SparseAGS, symmetric ambiguous views out | 1/1 | 80.0 | 90.0 | 70.0 |" in text
    assert "| all | 2 | 3 | 2 | 1 | 0 | 66.7 | 100.0 | 2 | 100.0 / 100.0 |" in text


# -------------------------------------------------------------------------------------------------
# end to end (real pipeline on tiny scenes)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval_data")
    make_demo_scene(root / "scene_a", seed=1, n_views=4, n_novel=2, resolution=64)
    make_demo_scene(root / "scene_b", seed=2, n_views=4, n_novel=2, resolution=64)
    broken = root / "zz_broken"
    broken.mkdir()
    shutil.copy(root / "scene_a" / "cameras_gt.json", broken / "cameras_gt.json")
    (broken / "cameras.json").write_text("{not json")
    return root


@pytest.fixture(scope="module")
def sequential_eval(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, list[str]]:
    out = tmp_path_factory.mktemp("eval_seq")
    lines: list[str] = []
    status = run_evaluation(dataset, out, load_config(None, TINY), None, None, log=lines.append)
    return out, status, lines


def _check_in_range(row: dict[str, str]) -> None:
    assert int(row["n_views"]) == 4
    for col in ("init_rot5", "init_rot15", "init_cc10", "final_rot5", "final_rot15", "final_cc10", "f1"):
        assert 0.0 <= float(row[col]) <= 100.0, col
    assert float(row["init_rot5"]) <= float(row["init_rot15"]) and float(row["final_rot5"]) <= float(row["final_rot15"])
    assert 5.0 < float(row["psnr"]) < 60.0 and 0.0 < float(row["ssim"]) <= 1.0
    assert row["lpips"] == "" or 0.0 <= float(row["lpips"]) <= 1.0  # empty when the LPIPS weights are absent
    assert int(row["outliers_flagged"]) == 0  # outlier stage off
    assert float(row["time_s"]) > 0.0


def test_sequential_eval_writes_reports(dataset: Path, sequential_eval: tuple[Path, int, list[str]]) -> None:
    out, status, lines = sequential_eval
    assert status == 1  # the broken scene failed, the others did not stop
    header, rows = read_csv(out / "results.csv")
    assert header == list(RESULT_COLUMNS)
    assert [(r["scene"], r["preset"]) for r in rows] == [
        ("scene_a", "cameras"),
        ("scene_b", "cameras"),
        ("zz_broken", "cameras"),
    ]
    for row in rows[:2]:
        _check_in_range(row)
        metrics = json.loads((out / "cameras" / row["scene"] / "metrics.json").read_text())
        assert float(row["init_rot15"]) == metrics["pose"]["init"]["rot15"]
        assert float(row["final_cc10"]) == metrics["pose"]["final"]["cc10"]
    assert all(rows[2][c] == "" for c in NUMERIC_COLUMNS)
    assert "cameras.json" in (out / "cameras" / "zz_broken" / "error.txt").read_text()
    assert sum("FAILED" in line and "zz_broken" in line for line in lines) == 1
    assert sum(" done in " in line for line in lines) == 2

    summary = (out / "summary.md").read_text()
    assert (
        "| initial poses | scenes | Rot@5 ↑ | Rot@15 ↑ | CC@0.1 ↑ | PSNR ↑ | LPIPS ↓ | F1 ↑ | time (s) "
        "| PSNR* ↑ | LPIPS* ↓ | F1* ↑ |"
    ) in summary
    mean_final_rot15 = (float(rows[0]["final_rot15"]) + float(rows[1]["final_rot15"])) / 2
    assert "| cameras + SparseAGS | 2/3 | " in summary and f" | {mean_final_rot15:.1f} | " in summary
    assert "| cameras | zz_broken |" in summary  # failed-runs table names the scene and its error
    assert (out / "pose_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    header, outlier_rows = read_csv(out / "outliers.csv")
    assert header == list(OUTLIER_COLUMNS)
    for row in outlier_rows[:2]:  # the demo scene's one gross outlier is the only true outlier
        meta = json.loads((dataset / row["scene"] / "meta.json").read_text())
        assert row["true_outliers"] == meta["outlier"]
        assert (row["flagged"], row["tp"], row["fp"], row["fn"]) == ("", "0", "0", "1")
    assert not list(out.glob("**/.*.tmp"))  # atomic writes leave no temporaries


def test_resume_skips_finished_runs(dataset: Path, sequential_eval: tuple[Path, int, list[str]]) -> None:
    out, _, _ = sequential_eval
    before = {p: p.stat().st_mtime_ns for p in out.glob("cameras/*/metrics.json")}
    csv_before = (out / "results.csv").read_text()
    assert len(before) == 2
    lines: list[str] = []
    status = run_evaluation(dataset, out, load_config(None, TINY), ["cameras"], None, log=lines.append)
    assert status == 1
    assert {p: p.stat().st_mtime_ns for p in out.glob("cameras/*/metrics.json")} == before
    assert sum("skipped" in line for line in lines) == 2
    assert (out / "results.csv").read_text() == csv_before


def test_rescore_reproduces_and_follows_metric_settings(
    dataset: Path, sequential_eval: tuple[Path, int, list[str]], tmp_path: Path
) -> None:
    out_seq, _, _ = sequential_eval
    out = tmp_path / "out"
    shutil.copytree(out_seq, out)
    before = {p.parent.name: json.loads(p.read_text()) for p in out.glob("cameras/*/metrics.json")}
    lines: list[str] = []
    assert run_evaluation(dataset, out, load_config(None, TINY), None, None, log=lines.append, rescore=True) == 1
    assert sum("[re-score" in line for line in lines) == 2
    for name, old in before.items():
        new = json.loads((out / "cameras" / name / "metrics.json").read_text())
        # same files, same code, same settings: the numbers are reproduced from gaussians.ply + cameras_updated.json
        assert new["novel"]["psnr"] == pytest.approx(old["novel"]["psnr"], abs=1e-4)
        assert new["novel"]["pose_refined"]["psnr"] == pytest.approx(old["novel"]["pose_refined"]["psnr"], abs=1e-3)
        assert new["mesh"]["f1_0.01"] == pytest.approx(old["mesh"]["f1_0.01"], abs=1e-6)
        assert new["pose"] == old["pose"] and new["time_s"] == old["time_s"] and new["views"] == old["views"]
    # different metric settings: no refinement, no ICP -> those columns empty, the rest unchanged
    assert (
        run_evaluation(
            dataset,
            out,
            load_config(None, TINY + ["metrics.novel_pose_steps=0", "metrics.mesh_icp=false"]),
            None,
            None,
            log=lambda s: None,
            rescore=True,
        )
        == 1
    )
    _, rows = read_csv(out / "results.csv")
    _, seq_rows = read_csv(out_seq / "results.csv")
    for row, seq in zip(rows[:2], seq_rows[:2]):
        assert row["psnr_refined"] == row["f1_icp"] == "" and seq["psnr_refined"] != "" and seq["f1_icp"] != ""
        assert float(row["psnr"]) == pytest.approx(float(seq["psnr"]), abs=1e-4)
        assert row["final_rot5"] == seq["final_rot5"]
    # a run whose files are gone cannot be re-scored: one FAILED line, exit status 1, metrics.json untouched
    (out / "cameras" / "scene_a" / "gaussians.ply").unlink()
    kept = (out / "cameras" / "scene_a" / "metrics.json").read_bytes()
    lines = []
    status = run_evaluation(dataset, out, load_config(None, TINY), None, None, log=lines.append, rescore=True)
    assert status == 1
    assert sum("FAILED" in line and "gaussians.ply" in line for line in lines) == 1
    assert any("1 finished run(s) could not be re-scored" in line for line in lines)
    assert (out / "cameras" / "scene_a" / "metrics.json").read_bytes() == kept


def test_local_ray_matches_sequential(
    dataset: Path, sequential_eval: tuple[Path, int, list[str]], tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray")
    out_seq, _, _ = sequential_eval
    status = run_evaluation(dataset, tmp_path, load_config(None, TINY), None, "local", log=lambda s: None)
    assert status == 1
    assert not ray.is_initialized()  # the instance run_evaluation started is shut down
    _, seq_rows = read_csv(out_seq / "results.csv")
    header, ray_rows = read_csv(tmp_path / "results.csv")
    assert header == list(RESULT_COLUMNS)
    assert [(r["scene"], r["preset"]) for r in ray_rows] == [(r["scene"], r["preset"]) for r in seq_rows]
    assert_same_numbers(seq_rows, ray_rows)
    assert (tmp_path / "outliers.csv").read_text() == (out_seq / "outliers.csv").read_text()


def test_side_by_side_jobs_match_sequential(
    dataset: Path, sequential_eval: tuple[Path, int, list[str]], tmp_path: Path
) -> None:
    """`--jobs 2`: two spawned workers, one thread each, give the sequential numbers; the broken scene
    still fails alone, and summary.md says how the runs were spread and how long each took."""
    out_seq, _, _ = sequential_eval
    lines: list[str] = []
    status = run_evaluation(dataset, tmp_path, load_config(None, TINY), None, None, log=lines.append, jobs=2)
    assert status == 1
    assert any("2 jobs side by side, 1 thread(s) each" in line for line in lines)
    _, seq_rows = read_csv(out_seq / "results.csv")
    _, par_rows = read_csv(tmp_path / "results.csv")
    assert [(r["scene"], r["preset"]) for r in par_rows] == [(r["scene"], r["preset"]) for r in seq_rows]
    assert_same_numbers(seq_rows, par_rows)
    summary = (tmp_path / "summary.md").read_text()
    assert "## Time" in summary and "2 jobs side by side" in summary
    assert "| cameras | scene_a |" in summary and "| cameras | scene_b |" in summary
    assert (tmp_path / "cameras" / "zz_broken" / "error.txt").is_file()


def test_plan_workers_spreads_runs_over_the_cpus() -> None:
    cpu = load_config(None, ["device=cpu"])
    assert (plan_workers(10, cpu, None, cpus=2).jobs, plan_workers(10, cpu, None, cpus=2).threads) == (2, 1)
    assert (plan_workers(1, cpu, None, cpus=2).jobs, plan_workers(1, cpu, None, cpus=2).threads) == (1, 2)
    assert (plan_workers(10, cpu, 1, cpus=4).jobs, plan_workers(10, cpu, 1, cpus=4).threads) == (1, 4)
    assert (plan_workers(10, cpu, 3, cpus=2).jobs, plan_workers(10, cpu, 3, cpus=2).threads) == (3, 1)
    assert plan_workers(10, cpu, 3, cpus=8).threads == 2
    cuda = load_config(None, ["device=cuda"])
    assert (plan_workers(10, cuda, None, cpus=16).jobs, plan_workers(10, cuda, None, cpus=16).threads) == (1, 16)
    with pytest.raises(EvaluationError, match="--jobs"):
        plan_workers(10, cpu, 0, cpus=2)


def test_outlier_stage_rows_are_consistent(dataset: Path, tmp_path: Path) -> None:
    single = tmp_path / "data"
    shutil.copytree(dataset / "scene_a", single / "scene_a")
    cfg = load_config(None, TINY + TINY_OUTLIERS)
    status = run_evaluation(single, tmp_path / "out", cfg, ["dust3r_like"], None, log=lambda s: None)
    assert status == 0
    _, rows = read_csv(tmp_path / "out" / "outliers.csv")
    metrics = json.loads((tmp_path / "out" / "dust3r_like" / "scene_a" / "metrics.json").read_text())
    meta = json.loads((single / "scene_a" / "meta.json").read_text())
    (row,) = rows
    truth, flagged = set(row["true_outliers"].split()), set(row["flagged"].split())
    assert truth == {meta["outlier"]}
    assert flagged == set(metrics["outliers"]["flagged"])
    assert int(row["tp"]) == len(truth & flagged) and int(row["fp"]) == len(flagged - truth)
    assert int(row["tp"]) + int(row["fn"]) == 1
    _, results = read_csv(tmp_path / "out" / "results.csv")
    assert int(results[0]["outliers_flagged"]) == len(flagged)
    assert "Outlier detection was off" not in (tmp_path / "out" / "summary.md").read_text()
