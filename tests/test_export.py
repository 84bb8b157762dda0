"""Tests for sparseags.export: camera files round trips, hand-checked conventions, the turntable video."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from sparseags import cameras
from sparseags.atomic import OutputError
from sparseags.export import (
    ExportError,
    iter_turntable,
    read_colmap_text,
    read_nerfstudio_transforms,
    turntable_cameras,
    turntable_fovy_deg,
    write_colmap_text,
    write_nerfstudio_transforms,
    write_sparseags_cameras,
    write_turntable,
)
from sparseags.scene import read_cameras_json

IDS = ["002", "n1", "017", "a_b"]


def random_cameras(count: int = len(IDS), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV w2c [V, 4, 4] with random rotations and K [V, 3, 3] with distinct fx, fy, cx, cy."""
    rng = np.random.default_rng(seed)
    w2c = np.tile(np.eye(4), (count, 1, 1))
    w2c[:, :3, :3] = Rotation.random(count, random_state=seed).as_matrix()
    w2c[:, :3, 3] = rng.uniform(-2.0, 2.0, (count, 3))
    K = np.tile(np.eye(3), (count, 1, 1))
    K[:, 0, 0], K[:, 1, 1] = rng.uniform(200, 300, count), rng.uniform(200, 300, count)
    K[:, 0, 2], K[:, 1, 2] = rng.uniform(100, 150, count), rng.uniform(100, 150, count)
    return w2c, K


def camera_behind_origin() -> np.ndarray:
    """Camera at (0, 0, -2) looking at the origin with world up +y (orbit azimuth 180, elevation 0)."""
    c2w_gl = cameras.orbit_camera(0.0, 180.0, 2.0, dtype=torch.float64)
    return cameras.c2w_gl_to_w2c(c2w_gl).numpy()


def test_sparseags_json_round_trip(tmp_path):
    w2c, K = random_cameras()
    path = tmp_path / "out" / "cameras.json"
    write_sparseags_cameras(
        path,
        IDS,
        torch.as_tensor(w2c),
        K,
        [1, 0, 1, 1],
        [f"images/{i}.png" for i in IDS],
        extra={"n1": {"needs_checking": True}},
    )
    records = read_cameras_json(path)
    assert list(records) == IDS
    for index, view_id in enumerate(IDS):
        np.testing.assert_allclose(records[view_id].w2c, w2c[index], atol=1e-9, rtol=0)
        np.testing.assert_allclose(records[view_id].K, K[index], atol=1e-9, rtol=0)
        assert records[view_id].filepath == f"images/{view_id}.png"
    assert [records[i].flag for i in IDS] == [1, 0, 1, 1]
    assert records["n1"].extra == {"needs_checking": True}
    # The file holds PyTorch3D R, T: R = (diag(-1, -1, 1) w2c_R)^T, T = diag(-1, -1, 1) t.
    raw = json.loads(path.read_text())
    flip = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(raw["002"]["R"], (flip @ w2c[0, :3, :3]).T, atol=1e-12)
    np.testing.assert_allclose(raw["002"]["T"], flip @ w2c[0, :3, 3], atol=1e-12)
    assert raw["002"]["focal_length"] == [K[0, 0, 0], K[0, 1, 1]]
    assert not list(path.parent.glob(".*tmp*"))


def test_sparseags_json_rejects_mismatched_input(tmp_path):
    w2c, K = random_cameras()
    with pytest.raises(ExportError, match="counts differ"):
        write_sparseags_cameras(tmp_path / "c.json", IDS[:3], w2c, K, [1] * 3, ["x"] * 3)
    with pytest.raises(ExportError, match=r"K has shape \[4, 2, 3\]"):
        write_sparseags_cameras(tmp_path / "c.json", IDS, w2c, K[:, :2], [1] * 4, ["x"] * 4)
    with pytest.raises(ExportError, match="flags must be 0 or 1"):
        write_sparseags_cameras(tmp_path / "c.json", IDS, w2c, K, [1, 2, 1, 1], ["x"] * 4)
    assert not (tmp_path / "c.json").exists()


def test_colmap_round_trip(tmp_path):
    w2c, K = random_cameras()
    names = [f"{i}.png" for i in IDS]
    write_colmap_text(tmp_path / "sparse", IDS, w2c, torch.as_tensor(K), 256, 192, names)
    assert sorted(p.name for p in (tmp_path / "sparse").iterdir()) == ["cameras.txt", "images.txt", "points3D.txt"]
    loaded = read_colmap_text(tmp_path / "sparse")
    assert loaded.ids == IDS and loaded.names == names
    np.testing.assert_allclose(loaded.w2c, w2c, atol=1e-9, rtol=0)
    np.testing.assert_allclose(loaded.K, K, atol=1e-9, rtol=0)
    assert loaded.widths.tolist() == [256] * 4 and loaded.heights.tolist() == [192] * 4


def test_colmap_images_txt_by_hand(tmp_path):
    # Camera at (0, 0, -2) looking at +z with world up +y: OpenCV x = -x_world, y = -y_world, z = +z_world,
    # i.e. R = diag(-1, -1, 1) = 180 deg about z -> q = (0, 0, 0, 1); t = -R C = (0, 0, 2).
    K = np.array([[[300.0, 0.0, 128.0], [0.0, 310.0, 120.0], [0.0, 0.0, 1.0]]])
    write_colmap_text(tmp_path, ["v0"], camera_behind_origin()[None], K, 256, 240, ["v0.png"])
    lines = [line for line in (tmp_path / "images.txt").read_text().split("\n") if not line.startswith("#")]
    fields = lines[0].split()
    assert fields[0] == "1" and fields[8] == "1" and fields[9] == "v0.png"
    np.testing.assert_allclose([float(v) for v in fields[1:8]], [0, 0, 0, 1, 0, 0, 2], atol=1e-12)
    assert lines[1] == ""  # the empty POINTS2D line
    camera_line = [line for line in (tmp_path / "cameras.txt").read_text().splitlines() if not line.startswith("#")]
    assert camera_line == ["1 PINHOLE 256 240 300.0 310.0 128.0 120.0"]


def test_nerfstudio_round_trip_and_gl_convention(tmp_path):
    w2c, K = random_cameras()
    w2c[0] = camera_behind_origin()
    path = tmp_path / "transforms.json"
    write_nerfstudio_transforms(path, IDS, w2c, K, 256, 256, [f"images/{i}.png" for i in IDS])
    loaded = read_nerfstudio_transforms(path)
    assert loaded.ids == IDS
    np.testing.assert_allclose(loaded.w2c, w2c, atol=1e-9, rtol=0)
    np.testing.assert_allclose(loaded.K, K, atol=1e-9, rtol=0)

    meta = json.loads(path.read_text())
    assert meta["camera_model"] == "OPENCV"
    frame = meta["frames"][0]
    assert frame["file_path"] == "images/002.png" and frame["w"] == 256 and frame["h"] == 256
    assert (frame["fl_x"], frame["fl_y"], frame["cx"], frame["cy"]) == (K[0, 0, 0], K[0, 1, 1], K[0, 0, 2], K[0, 1, 2])
    c2w = np.array(frame["transform_matrix"])
    # Translation = camera centre; OpenGL camera looks down -z, so the third column points from the object
    # (origin) to the camera; +y (second column) is world up for this upright camera.
    np.testing.assert_allclose(c2w[:3, 3], [0.0, 0.0, -2.0], atol=1e-12)
    np.testing.assert_allclose(c2w[:3, 2], [0.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(c2w[:3, 1], [0.0, 1.0, 0.0], atol=1e-12)
    for pose, frame in zip(w2c, meta["frames"]):
        c2w = np.array(frame["transform_matrix"])
        centre = -pose[:3, :3].T @ pose[:3, 3]
        np.testing.assert_allclose(c2w[:3, 3], centre, atol=1e-9)
        np.testing.assert_allclose(c2w[:3, 2], -pose[2, :3], atol=1e-9)  # -(viewing direction)


def test_nerfstudio_reader_errors(tmp_path):
    path = tmp_path / "transforms.json"
    path.write_text("{ not json")
    with pytest.raises(ExportError, match="transforms.json: malformed JSON"):
        read_nerfstudio_transforms(path)
    path.write_text(json.dumps({"frames": [{"file_path": "a.png", "transform_matrix": np.eye(4).tolist()}]}))
    with pytest.raises(ExportError, match="frame 0: missing or non-numeric 'fl_x'"):
        read_nerfstudio_transforms(path)


def test_turntable_cameras_geometry():
    w2c, K = turntable_cameras(frames=120, elevation_deg=-30.0, radius=3.0, fovy_deg=49.1, resolution=256)
    assert w2c.shape == (120, 4, 4) and K.shape == (120, 3, 3) and w2c.dtype == torch.float32
    w2c, K = w2c.double(), K.double()
    centres = cameras.camera_centers(w2c)
    azimuths = torch.deg2rad(torch.arange(120, dtype=torch.float64) * 3.0)
    e = math.radians(-30.0)
    expected = 3.0 * torch.stack(
        [math.cos(e) * azimuths.sin(), torch.full_like(azimuths, -math.sin(e)), math.cos(e) * azimuths.cos()], -1
    )
    torch.testing.assert_close(centres, expected, atol=1e-5, rtol=0)
    assert (centres[:, 1] > 1.4).all()  # negative elevation = camera above
    focal = 128.0 / math.tan(math.radians(49.1 / 2))
    torch.testing.assert_close(
        K[0], torch.tensor([[focal, 0, 128.0], [0, focal, 128.0], [0, 0, 1]], dtype=torch.float64), atol=1e-3, rtol=0
    )
    # The target projects to the image centre and world up points up the image (smaller v).
    uv, depth = cameras.project_points(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.3, 0.0]], dtype=torch.float64), w2c, K)
    torch.testing.assert_close(uv[:, 0], torch.full((120, 2), 128.0, dtype=torch.float64), atol=1e-3, rtol=0)
    assert (depth > 0).all() and (uv[:, 1, 1] < uv[:, 0, 1] - 5).all()


def test_write_turntable_mp4(tmp_path):
    import imageio.v2 as imageio

    seen, progress = [], []

    def render_fn(w2c: torch.Tensor, K: torch.Tensor, width: int, height: int) -> np.ndarray:
        assert w2c.shape == (4, 4) and K.shape == (3, 3) and (width, height) == (32, 32)
        seen.append(cameras.camera_centers(w2c))
        return np.full((height, width, 3), 30 * len(seen), dtype=np.uint8)  # frame i has grey level 30 (i + 1)

    path = write_turntable(
        tmp_path / "turn.mp4",
        render_fn,
        frames=8,
        resolution=32,
        radius=2.0,
        fps=10,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert progress == [(i, 8) for i in range(1, 9)]
    reader = imageio.get_reader(path, format="FFMPEG")
    frames = [frame for frame in reader]
    reader.close()
    assert len(frames) == 8 and frames[0].shape == (32, 32, 3)
    np.testing.assert_allclose([f.mean() for f in frames], [30 * (i + 1) for i in range(8)], atol=6)
    # Azimuth steps of 45 deg: consecutive centres are 2 * r cos(e) sin(22.5 deg) apart.
    step = float(torch.linalg.norm(seen[1] - seen[0]))
    assert step == pytest.approx(2 * 2.0 * math.cos(math.radians(30)) * math.sin(math.radians(22.5)), rel=1e-5)
    assert not list(tmp_path.glob(".*tmp*"))


def test_write_turntable_bad_frame_leaves_no_file(tmp_path):
    def render_fn(w2c, K, width, height):
        return np.zeros((height, width, 3), dtype=np.float32)

    with pytest.raises(ExportError, match=r"float32 \[9, 9, 3\] for frame 0, expected uint8 \[9, 9, 3\]"):
        write_turntable(tmp_path / "bad.mp4", render_fn, frames=2, resolution=9)
    assert list(tmp_path.iterdir()) == []


def test_write_turntable_odd_resolution_is_padded(tmp_path):
    import imageio.v2 as imageio

    path = write_turntable(
        tmp_path / "odd.mp4", lambda w2c, K, w, h: np.full((h, w, 3), 200, np.uint8), frames=2, resolution=33
    )
    reader = imageio.get_reader(path, format="FFMPEG")
    first = reader.get_data(0)
    reader.close()
    assert first.shape == (34, 34, 3)


def test_unwritable_destination_is_a_one_line_export_error(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    w2c, K = random_cameras()
    with pytest.raises(OutputError, match="not_a_folder/cameras.json: cannot write file") as info:
        write_sparseags_cameras(blocker / "cameras.json", IDS, w2c, K, [1] * 4, ["x"] * 4)
    assert "\n" not in str(info.value)
    # Results get the usual permissions (mkstemp alone would leave 0600).
    write_sparseags_cameras(tmp_path / "ok.json", IDS, w2c, K, [1] * 4, ["x"] * 4)
    assert (tmp_path / "ok.json").stat().st_mode & 0o044 == 0o644 & 0o044 & ~_umask()


def _umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_iter_turntable_yields_per_frame_and_returns_the_path(tmp_path):
    gen = iter_turntable(
        tmp_path / "gen.mp4", lambda w2c, K, w, h: np.full((h, w, 3), 90, np.uint8), frames=3, resolution=16
    )
    steps = []
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            path = stop.value
            break
    assert steps == [(1, 3), (2, 3), (3, 3)] and path == tmp_path / "gen.mp4" and path.is_file()
    # Closed early (a cancelled debugger job): no file, no temporary left behind.
    gen = iter_turntable(
        tmp_path / "cut.mp4", lambda w2c, K, w, h: np.zeros((h, w, 3), np.uint8), frames=5, resolution=16
    )
    next(gen)
    gen.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.mp4"]
    with pytest.raises(ExportError, match="frames >= 1"):  # checked at the call, before any frame
        iter_turntable(tmp_path / "none.mp4", lambda *a: None, frames=0)


def test_turntable_fovy_is_the_first_cameras():
    K = np.array([[[100.0, 0, 64], [0, 128.0, 64], [0, 0, 1]], [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1]]])
    assert turntable_fovy_deg(K, 128) == pytest.approx(2 * math.degrees(math.atan(0.5)))
    assert turntable_fovy_deg(K[0], 128) == turntable_fovy_deg(K, 128)
    # The inverse of turntable_cameras' focal length rule.
    _, K_t = turntable_cameras(frames=1, fovy_deg=40.0, resolution=64)
    assert turntable_fovy_deg(K_t.double(), 64) == pytest.approx(40.0, rel=1e-6)
