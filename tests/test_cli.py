"""The command line as a user meets it: one-line errors with exit 2, and a headless run's artefacts."""

import json
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import pytest
import trimesh
from plyfile import PlyData

from sparseags.synth import make_demo_scene

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "scene.resolution=64",
    "recon.iters=12",
    "recon.num_pts=400",
    "recon.resolution_schedule=[[0,64]]",
    "pipeline.turntable_frames=6",
    "pipeline.turntable_resolution=48",
    "pipeline.mesh_resolution=40",
    "lpips.net=alex",
    # every phase runs, each as small as the artefacts allow: a short leave-one-out round, a coarse
    # search, a short novel-view pose refinement (these tests check files and exits, not accuracy)
    "outliers.round_iters=6",
    "search.stage_steps=[2,2,2]",
    "search.stage_resolution=[32,32,32]",
    "search.keep_min=4",
    "search.n_azimuth=8",
    "search.align_copies=4",
    "search.align_steps=2",
    "metrics.novel_pose_steps=10",
    "metrics.mesh_points=5000",
]


def run_cli(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_demo_scene(tmp_path_factory.mktemp("cli") / "demo", seed=1, n_views=5, n_novel=2, resolution=64)


def one_error_line(result):
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_validate_ok_and_missing_folder(scene, tmp_path):
    ok = run_cli("validate", "--scene", scene)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("ok")
    line = one_error_line(run_cli("validate", "--scene", tmp_path / "nowhere"))
    assert "nowhere" in line


def test_validate_nan_pose_names_the_file(scene, tmp_path):
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(scene, broken)
    cameras = json.loads((broken / "cameras.json").read_text())
    first = next(iter(cameras))
    cameras[first]["T"][0] = float("nan")
    (broken / "cameras.json").write_text(json.dumps(cameras).replace("NaN", "NaN"))
    line = one_error_line(run_cli("validate", "--scene", broken))
    assert "cameras.json" in line


def test_eval_bad_jobs_is_one_line(scene, tmp_path):
    line = one_error_line(run_cli("eval", "--data", scene.parent, "--out", tmp_path / "out", "--jobs", "two"))
    assert "--jobs" in line
    assert not (tmp_path / "out").exists()


def test_unknown_config_key_is_one_line(scene, tmp_path):
    line = one_error_line(run_cli("run", "--scene", scene, "--out", tmp_path / "out", "recon.itres=3"))
    assert "recon.itres" in line
    assert not (tmp_path / "out").exists()


def test_headless_run_writes_every_artefact_and_keeps_them_on_a_later_failure(scene, tmp_path, random_alex_weights_dir):
    out = tmp_path / "run"
    tiny = [*TINY, f"lpips.weights_dir={random_alex_weights_dir}"]
    result = run_cli("run", "--scene", scene, "--out", out, "--quiet", *tiny)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (
        "gaussians.ply",
        "cameras_updated.json",
        "mesh.glb",
        "turntable.mp4",
        "overlay.png",
        "config.yaml",
        "metrics.json",
        "transforms.json",
        "decisions.json",
        "colmap/images.txt",
    ):
        assert (out / name).is_file(), name

    ply = PlyData.read(str(out / "gaussians.ply"))
    names = [p.name for p in ply["vertex"].properties]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    mesh = trimesh.load(out / "mesh.glb", force="mesh")
    assert len(mesh.faces) > 0
    frames = imageio.mimread(out / "turntable.mp4")
    assert len(frames) == 6 and frames[0].shape[:2] == (48, 48)

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["pose"]) == {"init", "averaged", "final"}  # averaged: after the learned-match rotations
    assert set(metrics["rotation_averaging"]) >= {"pairs_matched", "pairs_gated", "views_linked", "seconds"}
    assert set(metrics["pose"]["final"]) == {"rot5", "rot15", "cc10", "rot_err_mean_deg"}
    assert len(metrics["views"]) == 5 and {"psnr", "flag", "rot_err_deg"} <= set(metrics["views"]["000"])
    assert {"psnr", "ssim"} <= set(metrics["novel"]) and "f1_0.01" in metrics["mesh"]
    assert metrics["time_s"] > 0
    cameras = json.loads((out / "cameras_updated.json").read_text())
    assert list(cameras) == ["000", "001", "002", "003", "004"]

    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    (scene / "images" / "002.png").rename(scene / "images" / "002.bak")
    try:
        line = one_error_line(run_cli("run", "--scene", scene, "--out", out, "--quiet", *tiny))
        assert "002" in line
    finally:
        (scene / "images" / "002.bak").rename(scene / "images" / "002.png")
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before


def test_decisions_file_flags_a_view_by_hand(scene, tmp_path):
    decisions = tmp_path / "decisions.json"
    decisions.write_text(json.dumps([{"action": "set_flag", "view": "003", "flag": 0}]))
    out = tmp_path / "flagged"
    # pipeline.outliers=false: a single reconstruction without the view (with the outlier stage on, a view
    # unticked by hand is pose-searched and arbitrated like a detected outlier; tests/test_gui_decisions.py)
    result = run_cli(
        "run",
        "--scene",
        scene,
        "--out",
        out,
        "--quiet",
        "--decisions",
        decisions,
        *TINY,
        "pipeline.export_video=false",
        "pipeline.export_mesh=false",
        "pipeline.outliers=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["views"]["003"]["flag"] == 0
    assert json.loads((out / "cameras_updated.json").read_text())["003"]["flag"] == 0
    logged = json.loads((out / "decisions.json").read_text())["decisions"]
    assert logged[0]["action"] == "set_flag" and logged[0]["view"] == "003"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    one_error_line(run_cli("run", "--scene", scene, "--out", tmp_path / "x", "--decisions", bad, *TINY))
