"""`bench basin`: the shipped solver recovers perturbed views against a model trained at the true poses."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from sparseags.basin import parse_case, perturb, pose_errors, run_basin
from sparseags.config import load_config
from sparseags.pose_solver import object_centred_w2c
from sparseags.synth import make_demo_scene
from tests.helpers import REPO

QUICK = [
    "scene.resolution=64",
    "recon.iters=200",
    "recon.num_pts=1500",
    "recon.resolution_schedule=[[0.0,64]]",
    "recon.densify_from=50",
    "recon.densify_interval=50",
    "solver.levels=[[16,1.0,8],[32,1.0,8],[64,0.5,6]]",
    "solver.focal_min_size=64",
    "device=cpu",
]


@pytest.fixture(scope="module")
def demo64(tmp_path_factory):
    return make_demo_scene(tmp_path_factory.mktemp("basin") / "demo", seed=0, n_views=6, n_novel=0, resolution=64)


def test_parse_case():
    assert parse_case("o20t8f") == parse_case("o20t8f")
    spec = parse_case("o20t8f")
    assert (spec.orbit_deg, spec.sideways_pct, spec.focal) == (20.0, 8.0, True)
    assert parse_case("o2").sideways_pct == 0.0 and not parse_case("o2").focal
    with pytest.raises(ValueError):
        parse_case("x10")


def test_perturb_has_the_asked_size():
    generator = torch.Generator().manual_seed(3)
    w2c = object_centred_w2c(
        torch.eye(4).expand(5, 4, 4).clone() + torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 3.0], [0, 0, 0, 0]]),
        torch.randn(5, 3, generator=generator) * 0.3,
        torch.zeros(5, 3),
        torch.zeros(3),
    )
    K = torch.tensor([[200.0, 0, 64], [0, 200.0, 64], [0, 0, 1]]).expand(5, 3, 3).clone()
    moved, K_moved = perturb(w2c, K, torch.zeros(3), "o10t8f", seed=0)
    rot, _ = pose_errors(moved, w2c, torch.zeros(3))
    assert np.allclose(rot, 10.0, atol=0.05)
    ratio = (K_moved[:, 0, 0] / K[:, 0, 0]).numpy()
    assert np.allclose(np.abs(np.log(ratio)), np.log(1.1), atol=1e-5)


def test_quick_basin_recovers_a_10_degree_orbit(demo64, tmp_path):
    """The issue's quick form: against a frozen model trained at the true poses, a 10° orbit comes back."""
    cfg = load_config(REPO / "configs" / "default.yaml", QUICK)
    result = run_basin(str(demo64), cfg, str(tmp_path), ["o10"], ["default"], model="gt", log=lambda *a: None)
    (row,) = result["cases"]
    assert row["solver"] == "default" and row["case"] == "o10" and row["n"] == 6
    assert row["median_start_rot_deg"] == pytest.approx(10.0, abs=0.1)
    assert row["median_rot_deg"] < 1.0, row
    assert row["within_2deg"] >= 5, row
    assert row["worse_than_start"] == 0
    assert any(tmp_path.glob("model-*.pt"))  # the frozen model is cached for the next run


def test_bench_basin_cli_json_and_bad_scene(demo64, tmp_path):
    command = [
        sys.executable,
        "main.py",
        "bench",
        "basin",
        "--scene",
        str(demo64),
        "--out",
        str(tmp_path),
        "--quick",
        "--json",
        *QUICK,
        "solver.levels=[[32,1.0,3]]",
        "solver.focal_min_size=64",
        "recon.iters=40",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result["cases"][0]) >= {"solver", "case", "success", "n", "median_rot_deg", "median_centre_pct"}
    bad = subprocess.run(
        [sys.executable, "main.py", "bench", "basin", "--scene", str(tmp_path / "missing"), "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error:") and len(bad.stderr.strip().splitlines()) == 1
