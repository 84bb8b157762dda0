"""The procedural demo scene: layout, ground truth consistency, asymmetry, noise, determinism, atomic output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image
from scipy.ndimage import binary_dilation

from sparseags import synth
from sparseags.scene import read_cameras_json
from sparseags.synth import build_demo_object, look_at_w2c, make_demo_scene

RES = 48


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_scene(tmp_path_factory.mktemp("demo") / "scene", seed=0, n_views=4, n_novel=2, resolution=RES)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _rotation_error_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    cos = (np.trace(R_a.T @ R_b) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def test_layout_and_meta(demo_dir: Path) -> None:
    for relative in [
        "cameras.json",
        "cameras_gt.json",
        "init/dust3r_like.json",
        "novel/cameras_gt.json",
        "novel/images/n000.png",
        "novel/images/n001.png",
        "mesh.ply",
        "meta.json",
    ] + [f"images/{i:03d}.png" for i in range(4)]:
        assert (demo_dir / relative).is_file(), relative
    # cameras.json is the init preset (all flags 1: the estimator does not know which view is wrong).
    assert (demo_dir / "cameras.json").read_bytes() == (demo_dir / "init/dust3r_like.json").read_bytes()
    assert all(record.flag == 1 for record in read_cameras_json(demo_dir / "cameras.json").values())
    meta = json.loads((demo_dir / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["generator"] == "sparseags.synth"
    assert meta["outlier"] in {f"{i:03d}" for i in range(4)}
    assert meta["noise"]["dust3r_like"]["outliers"] == [meta["outlier"]]
    assert not list(demo_dir.parent.glob(".scene.*")), "temporary build folders must not be left behind"


def test_images_are_rgba_with_white_background_and_soft_edges(demo_dir: Path) -> None:
    rgba = np.asarray(Image.open(demo_dir / "images/000.png"))
    assert rgba.shape == (RES, RES, 4) and rgba.dtype == np.uint8
    alpha = rgba[..., 3]
    assert np.all(rgba[alpha == 0, :3] == 255)
    assert np.any((alpha > 0) & (alpha < 255)), "2x2 supersampling gives fractional coverage on edges"
    assert 0.05 < (alpha > 127).mean() < 0.7
    # Fully inside the frame, like the bench.
    assert alpha[0].max() == alpha[-1].max() == alpha[:, 0].max() == alpha[:, -1].max() == 0


def test_gt_cameras_project_the_mesh_into_the_alpha(demo_dir: Path) -> None:
    """Uses the PyTorch3D formula straight from the JSON (u = cx - fx X/Z), independent of the loader."""
    vertices = trimesh.load(demo_dir / "mesh.ply", process=False).vertices
    assert np.linalg.norm(vertices, axis=1).max() == pytest.approx(0.5, abs=1e-6)
    data = json.loads((demo_dir / "cameras_gt.json").read_text())
    for view_id, camera in data.items():
        R, T = np.array(camera["R"]), np.array(camera["T"])
        (fx, fy), (cx, cy) = camera["focal_length"], camera["principal_point"]
        cam = vertices @ R + T
        assert np.all(cam[:, 2] > 0)
        u, v = cx - fx * cam[:, 0] / cam[:, 2], cy - fy * cam[:, 1] / cam[:, 2]
        alpha = np.asarray(Image.open(demo_dir / camera["filepath"]))[..., 3] > 0
        rows, cols = v.astype(int), u.astype(int)
        assert alpha[rows, cols].mean() > 0.95, view_id
        # Thin tips (the cone's apex) can fall between the 2x2 samples at this low resolution: allow 2 px.
        inside = binary_dilation(alpha, iterations=2)[rows, cols]
        assert inside.all(), f"view {view_id}: {(~inside).sum()} vertices outside the alpha"
        # Elevation sign: cameras are level or above, never far below (bench: elevation in [-10, 45]).
        centre = -T @ R.T
        assert centre[1] > -0.45


def test_object_is_not_mirror_symmetric() -> None:
    """A mirror-symmetric object would render at azimuth -a as the mirror image of azimuth a."""
    demo = build_demo_object()
    K = np.array([[110.0, 0, 32], [0, 110.0, 32], [0, 0, 1]])
    for azimuth in (30.0, 90.0, 150.0):
        views = []
        for sign in (1.0, -1.0):
            a = np.radians(sign * azimuth)
            centre = 2.0 * np.array([np.sin(a) * np.cos(0.3), np.sin(0.3), np.cos(a) * np.cos(0.3)])
            views.append(demo.render(look_at_w2c(centre, np.zeros(3)), K, 64).astype(float))
        mirrored = views[1][:, ::-1]
        assert np.abs(views[0] - mirrored).mean() > 10.0, azimuth


def test_outlier_is_gross_and_inliers_are_close(tmp_path: Path) -> None:
    for seed in (0, 1, 2):
        scene = make_demo_scene(tmp_path / f"s{seed}", seed=seed, n_views=8, n_novel=0, resolution=16)
        gt = read_cameras_json(scene / "cameras_gt.json")
        init = read_cameras_json(scene / "init/dust3r_like.json")
        outlier = json.loads((scene / "meta.json").read_text())["outlier"]
        for view_id in gt:
            error = _rotation_error_deg(gt[view_id].w2c[:3, :3], init[view_id].w2c[:3, :3])
            if view_id == outlier:
                assert error > 60.0, (seed, view_id, error)
            else:
                assert error < 15.0, (seed, view_id, error)
        # The outlier still looks at the object: the origin projects near the image centre.
        w2c, K = init[outlier].w2c, init[outlier].K
        origin_cam = w2c[:3, 3]
        u = K[0, 0] * origin_cam[0] / origin_cam[2] + K[0, 2]
        v = K[1, 1] * origin_cam[1] / origin_cam[2] + K[1, 2]
        assert origin_cam[2] > 0 and abs(u - 8) < 2 and abs(v - 8) < 2


def test_input_azimuths_keep_the_minimum_gap() -> None:
    rng = np.random.default_rng(5)
    for count in (3, 8, 16):
        azimuths = synth._input_azimuths(rng, count)
        gaps = np.diff(np.concatenate([azimuths, [azimuths[0] + 360.0]]))
        assert np.all(np.diff(azimuths) >= 0) and len(azimuths) == count
        assert gaps.min() >= min(25.0, 180.0 / count) - 1e-9


def test_deterministic_bytes(demo_dir: Path, tmp_path: Path) -> None:
    again = make_demo_scene(tmp_path / "again", seed=0, n_views=4, n_novel=2, resolution=RES)
    assert _tree_digest(again) == _tree_digest(demo_dir)
    other = make_demo_scene(tmp_path / "other", seed=1, n_views=4, n_novel=2, resolution=RES)
    assert (other / "cameras_gt.json").read_bytes() != (demo_dir / "cameras_gt.json").read_bytes()


def test_replaces_an_old_demo_but_never_a_foreign_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = make_demo_scene(tmp_path / "demo", seed=3, n_views=3, n_novel=0, resolution=16)
    before = _tree_digest(target)

    def broken_build(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth, "_build_scene", broken_build)
    with pytest.raises(RuntimeError):
        make_demo_scene(target, seed=4, n_views=3, n_novel=0, resolution=16)
    assert _tree_digest(target) == before, "a failed build must leave the previous scene untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"], "no temporary folders left behind"
    monkeypatch.undo()

    replaced = make_demo_scene(target, seed=4, n_views=3, n_novel=0, resolution=16)
    assert json.loads((replaced / "meta.json").read_text())["seed"] == 4

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine"):
        make_demo_scene(foreign, n_views=3, n_novel=0, resolution=16)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_views"):
        make_demo_scene(tmp_path / "x", n_views=2)
    with pytest.raises(ValueError, match="resolution"):
        make_demo_scene(tmp_path / "x", resolution=4)
