"""Scene I/O: camera files, loading, resampling, and one clear SceneError for every kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import trimesh
from PIL import Image
from skimage.draw import polygon

from sparseags.scene import (
    CameraRecord,
    SceneError,
    load_scene,
    read_cameras_json,
    validate_scene,
    write_cameras_json,
)
from sparseags.synth import make_demo_scene

NATIVE = 32  # the template scene's image size


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("template") / "demo"
    return make_demo_scene(folder, seed=7, n_views=4, n_novel=2, resolution=NATIVE)


@pytest.fixture
def scene_dir(template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "scene"
    shutil.copytree(template, target)
    return target


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=1))


def _rotation_about_axis(axis: np.ndarray, degrees: float) -> np.ndarray:
    return trimesh.transformations.rotation_matrix(np.radians(degrees), axis)[:3, :3]


# ----------------------------------------------------------------------------------------------------------
# Camera files
# ----------------------------------------------------------------------------------------------------------


def test_p3d_json_converts_to_opencv(tmp_path: Path) -> None:
    """A P3D camera with R = I, T = (0, 0, 2) sits at z = -2 looking along +z with image x = world -x."""
    path = tmp_path / "cameras.json"
    camera = {"R": np.eye(3).tolist(), "T": [0.1, 0.2, 2.0], "focal_length": [100, 100]}
    camera["principal_point"] = [128, 120]
    path.write_text(json.dumps({"a": {**camera, "flag": 1, "filepath": "images/a.png"}}))
    record = read_cameras_json(path)["a"]
    np.testing.assert_allclose(record.w2c[:3, :3], np.diag([-1.0, -1.0, 1.0]))
    np.testing.assert_allclose(record.w2c[:3, 3], [-0.1, -0.2, 2.0])
    np.testing.assert_allclose(record.K, [[100, 0, 128], [0, 100, 120], [0, 0, 1]])
    # Both conventions project a world point to the same pixel (bench/README: u = cx - fx X/Z).
    R = _rotation_about_axis(np.array([0.3, 1.0, -0.2]), 37.0)
    path.write_text(json.dumps({"a": {**camera, "R": R.tolist()}}))
    record = read_cameras_json(path)["a"]
    point = np.array([0.2, -0.3, 0.4])
    cam_p3d = point @ R + np.array(camera["T"])
    uv_p3d = [128 - 100 * cam_p3d[0] / cam_p3d[2], 120 - 100 * cam_p3d[1] / cam_p3d[2]]
    cam_cv = record.w2c[:3, :3] @ point + record.w2c[:3, 3]
    uv_cv = (record.K @ cam_cv)[:2] / cam_cv[2]
    np.testing.assert_allclose(uv_cv, uv_p3d, atol=1e-9)
    assert record.flag == 1 and record.filepath == ""


def test_write_read_round_trip_keeps_order_flags_and_extra_keys(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = ["b", "010", "a", "2"]
    records = {}
    for index, view_id in enumerate(ids):
        w2c = np.eye(4)
        w2c[:3, :3] = _rotation_about_axis(rng.normal(size=3), rng.uniform(0, 180))
        w2c[:3, 3] = rng.normal(size=3)
        K = np.array([[300.0 + index, 0, 127.5], [0, 301.0 + index, 129.25], [0, 0, 1]])
        extra = {"needs_checking": index % 2 == 0, "image_size_wh": [4032, 3024]} if index < 2 else {}
        filepath = f"images/{view_id}.png"
        records[view_id] = CameraRecord(view_id, w2c, K, flag=index % 2, filepath=filepath, extra=extra)
    path = tmp_path / "out" / "cameras.json"
    write_cameras_json(path, records)
    assert [p.name for p in path.parent.iterdir()] == ["cameras.json"], "no temp file left behind"

    raw = json.loads(path.read_text())
    assert list(raw) == ids
    known = ["R", "T", "focal_length", "principal_point", "flag", "filepath"]
    assert list(raw["b"]) == known + ["needs_checking", "image_size_wh"]
    D = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(np.array(raw["a"]["R"]), (D @ records["a"].w2c[:3, :3]).T)
    np.testing.assert_allclose(raw["a"]["T"], D @ records["a"].w2c[:3, 3])

    read = read_cameras_json(path)
    assert list(read) == ids
    for view_id in ids:
        np.testing.assert_allclose(read[view_id].w2c, records[view_id].w2c, rtol=0, atol=1e-15)
        np.testing.assert_array_equal(read[view_id].K, records[view_id].K)
        assert read[view_id].flag == records[view_id].flag
        assert read[view_id].filepath == records[view_id].filepath
        assert read[view_id].extra == records[view_id].extra

    # Overwriting replaces the file as a whole.
    write_cameras_json(path, [records["a"]])
    assert list(json.loads(path.read_text())) == ["a"]


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------


def test_demo_loads_at_native_resolution(scene_dir: Path) -> None:
    scene = load_scene(scene_dir, resolution=NATIVE)
    assert scene.ids == ["000", "001", "002", "003"] and scene.init_name == "cameras.json"
    assert scene.images.shape == (4, NATIVE, NATIVE, 3) and scene.images.dtype == np.float32
    assert scene.masks.shape == (4, NATIVE, NATIVE)
    rgba = np.asarray(Image.open(scene_dir / "images/002.png")).astype(np.float32) / 255.0
    np.testing.assert_array_equal(scene.images[2], rgba[..., :3])
    np.testing.assert_array_equal(scene.masks[2], rgba[..., 3])
    np.testing.assert_array_equal(scene.flags, [1, 1, 1, 1])
    assert scene.w2c_gt is not None and scene.K_gt is not None and scene.mesh_path == scene_dir / "mesh.ply"
    assert scene.novel is not None and scene.novel.ids == ["n000", "n001"] and scene.novel.images.shape[1] == NATIVE
    files = read_cameras_json(scene_dir / "cameras.json")
    np.testing.assert_array_equal(scene.K[1], files["001"].K)
    np.testing.assert_array_equal(scene.w2c_init[1], files["001"].w2c)

    white = scene.white_background_images()
    background = scene.masks == 0
    assert background.any() and np.all(white[background] == 1.0)
    solid = scene.masks == 1
    np.testing.assert_array_equal(white[solid], scene.images[solid])


@pytest.mark.parametrize("resolution", [64, 24])
def test_intrinsics_scale_with_resolution(scene_dir: Path, resolution: int) -> None:
    scene = load_scene(scene_dir, resolution=resolution)
    files = read_cameras_json(scene_dir / "cameras.json")
    gt = read_cameras_json(scene_dir / "cameras_gt.json")
    scale = resolution / NATIVE
    for index, view_id in enumerate(scene.ids):
        expected = files[view_id].K.copy()
        expected[:2] *= scale
        np.testing.assert_allclose(scene.K[index], expected)
        np.testing.assert_allclose(scene.K_gt[index, 0, 0], gt[view_id].K[0, 0] * scale)
    assert scene.images.shape[1:3] == (resolution, resolution)
    novel_file = read_cameras_json(scene_dir / "novel/cameras_gt.json")
    assert scene.novel.K[0, 0, 2] == pytest.approx(novel_file["n000"].K[0, 2] * scale)
    assert 0.0 <= scene.masks.min() and scene.masks.max() <= 1.0


def _silhouette_iou(mesh: trimesh.Trimesh, w2c: np.ndarray, K: np.ndarray, mask: np.ndarray) -> float:
    """IoU of the rasterised projected mesh (pixel centres at +0.5) with a binary mask."""
    cam = mesh.vertices @ w2c[:3, :3].T + w2c[:3, 3]
    assert np.all(cam[:, 2] > 0)
    uv = cam @ K.T
    uv = uv[:, :2] / uv[:, 2:] - 0.5  # skimage tests integer pixel centres
    silhouette = np.zeros(mask.shape, dtype=bool)
    for face in mesh.faces:
        rows, cols = polygon(uv[face, 1], uv[face, 0], mask.shape)
        silhouette[rows, cols] = True
    return float((silhouette & mask).sum() / (silhouette | mask).sum())


def test_gt_cameras_project_mesh_onto_masks_after_resampling(template: Path) -> None:
    scene = load_scene(template, resolution=80)  # a non-integer scale of the 32 px files
    mesh = trimesh.load(scene.mesh_path, process=False)
    D = np.diag([-1.0, -1.0, 1.0])
    wrong_ious: dict[str, list[float]] = {"R not transposed": [], "no P3D axis flip": [], "w2c R transposed": []}
    for view in range(scene.num_views):
        w2c, K, mask = scene.w2c_gt[view], scene.K_gt[view], scene.masks[view] > 0.5
        assert _silhouette_iou(mesh, w2c, K, mask) > 0.92
        # The same measure exposes the classic convention bugs, so the check above has teeth.
        R_p3d, T_p3d = (D @ w2c[:3, :3]).T, D @ w2c[:3, 3]
        not_transposed, no_flip, transposed = w2c.copy(), w2c.copy(), w2c.copy()
        not_transposed[:3, :3] = D @ R_p3d
        no_flip[:3, :3], no_flip[:3, 3] = R_p3d.T, T_p3d
        transposed[:3, :3] = w2c[:3, :3].T
        for name, wrong in zip(wrong_ious, (not_transposed, no_flip, transposed)):
            wrong_ious[name].append(_silhouette_iou(mesh, wrong, K, mask))
    for name, ious in wrong_ious.items():
        assert np.mean(ious) < 0.85, name


def test_init_preset_selects_the_file(scene_dir: Path) -> None:
    _edit_json(scene_dir / "init/dust3r_like.json", lambda d: d["001"].update(flag=0, focal_length=[55.0, 55.0]))
    default = load_scene(scene_dir, resolution=NATIVE)
    preset = load_scene(scene_dir, resolution=NATIVE, init="dust3r_like")
    assert preset.init_name == "dust3r_like" and default.init_name == "cameras.json"
    np.testing.assert_array_equal(preset.flags, [1, 0, 1, 1])
    np.testing.assert_array_equal(default.flags, [1, 1, 1, 1])
    assert preset.K[1, 0, 0] == 55.0 and default.K[1, 0, 0] != 55.0


def test_resampling_does_not_bleed_the_white_background(tmp_path: Path, scene_dir: Path) -> None:
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[:, :33] = (200, 0, 0, 255)  # an odd boundary: output column 16 is half covered
    Image.fromarray(rgba).save(scene_dir / "images/000.png")
    _set_camera("000", focal_length=[80.0, 80.0], principal_point=[32.0, 32.0])(scene_dir)
    scene = load_scene(scene_dir, resolution=32)
    assert scene.masks[0, 5, 16] == pytest.approx(0.5, abs=1e-6)
    np.testing.assert_allclose(scene.images[0, 5, 16], [200 / 255, 0, 0], atol=1e-6)
    np.testing.assert_allclose(scene.images[0, 5, 20], [1, 1, 1])
    # Different square sizes are fine: each image's own size sets its intrinsics scale.
    np.testing.assert_allclose(scene.K[0], [[40.0, 0, 16.0], [0, 40.0, 16.0], [0, 0, 1]])


def test_rgb_images_with_masks_folder(scene_dir: Path) -> None:
    masks = scene_dir / "masks"
    masks.mkdir()
    for index in range(4):
        path = scene_dir / f"images/{index:03d}.png"
        rgba = np.asarray(Image.open(path))
        Image.fromarray(rgba[..., :3]).save(path)
        Image.fromarray(np.where(rgba[..., 3] >= 128, 255, 0).astype(np.uint8)).save(masks / f"{index:03d}.png")
    scene = load_scene(scene_dir, resolution=NATIVE)
    original = np.asarray(Image.open(scene_dir / "images/001.png"))
    assert set(np.unique(scene.masks)) <= {0.0, 1.0}
    np.testing.assert_array_equal(scene.masks[1] == 1.0, np.asarray(Image.open(masks / "001.png")) == 255)
    np.testing.assert_array_equal(scene.images[1], original.astype(np.float32) / 255.0)


def test_filepath_resolution_rules(scene_dir: Path) -> None:
    """Old SparseAGS repo-root paths fall back to processed/<basename>; init files may use ../ paths."""
    processed = scene_dir / "processed"
    shutil.move(scene_dir / "images", processed)
    for index in range(4):
        (processed / f"{index:03d}.png").rename(processed / f"{index}_rgba.png")

    def repo_root_paths(data: dict) -> None:
        for index, camera in enumerate(data.values()):
            camera["filepath"] = f"data/demo/eagle/processed/{index}_rgba.png"

    _edit_json(scene_dir / "cameras.json", repo_root_paths)
    _edit_json(
        scene_dir / "init/dust3r_like.json",
        lambda d: [c.update(filepath=f"../processed/{i}_rgba.png") for i, c in enumerate(d.values())],
    )
    scene = load_scene(scene_dir, resolution=NATIVE)
    assert [p.name for p in scene.image_paths] == ["0_rgba.png", "1_rgba.png", "2_rgba.png", "3_rgba.png"]
    assert load_scene(scene_dir, resolution=NATIVE, init="dust3r_like").image_paths == scene.image_paths


def test_validate_summary(scene_dir: Path) -> None:
    summary = validate_scene(scene_dir, resolution=NATIVE)
    assert "views: 4 (4 inliers)" in summary
    assert "init presets: dust3r_like" in summary and "novel views: 2" in summary
    assert "cameras_gt.json: yes" in summary and "mesh.ply:" in summary and "faces" in summary
    assert "mean camera distance" in summary and "focal" in summary


# ----------------------------------------------------------------------------------------------------------
# Bad input: one SceneError per problem, one line, naming the file
# ----------------------------------------------------------------------------------------------------------


def _write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def _set_camera(view_id: str, **values: object) -> Callable[[Path], None]:
    return lambda root: _edit_json(root / "cameras.json", lambda d: d[view_id].update(values))


def _truncate(path_in_scene: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        data = (root / path_in_scene).read_bytes()
        (root / path_in_scene).write_bytes(data[: len(data) // 2])

    return mutate


def _drop_camera_key(key: str) -> Callable[[Path], None]:
    return lambda root: _edit_json(root / "cameras.json", lambda d: d["001"].pop(key))


def _keep_cameras(*ids: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        _edit_json(root / "cameras.json", lambda d: [d.pop(k) for k in list(d) if k not in ids])
        for k in ("000", "001", "002", "003"):
            if k not in ids:
                (root / f"images/{k}.png").unlink()

    return mutate


def _duplicate_id(root: Path) -> None:
    text = (root / "cameras.json").read_text()
    data = json.loads(text)
    entry = json.dumps(data["001"])
    (root / "cameras.json").write_text(text.rstrip().rstrip("}") + f', "001": {entry}}}')


def _rgb_without_mask(root: Path) -> None:
    _write_png(root / "images/001.png", np.asarray(Image.open(root / "images/001.png"))[..., :3].copy())


def _empty_alpha(root: Path) -> None:
    rgba = np.asarray(Image.open(root / "images/002.png")).copy()
    rgba[..., 3] = 0
    _write_png(root / "images/002.png", rgba)


def _empty_mask_file(root: Path) -> None:
    _rgb_without_mask(root)
    (root / "masks").mkdir()
    _write_png(root / "masks/001.png", np.zeros((NATIVE, NATIVE), dtype=np.uint8))


def _wrong_mask_size(root: Path) -> None:
    _rgb_without_mask(root)
    (root / "masks").mkdir()
    _write_png(root / "masks/001.png", np.full((NATIVE, NATIVE + 2), 255, dtype=np.uint8))


def _non_square(root: Path) -> None:
    rgba = np.asarray(Image.open(root / "images/003.png"))
    _write_png(root / "images/003.png", np.ascontiguousarray(rgba[:, :-4]))


def _reflection(root: Path) -> None:
    _set_camera("002", R=np.diag([1.0, 1.0, -1.0]).tolist())(root)


def _scaled_rotation(root: Path) -> None:
    R = np.array(json.loads((root / "cameras.json").read_text())["002"]["R"]) * 1.01
    _set_camera("002", R=R.tolist())(root)


def _nan_in_file(root: Path) -> None:
    _set_camera("001", T=[0.0, float("nan"), 2.0])(root)
    assert "NaN" in (root / "cameras.json").read_text()


def _malformed_json(root: Path) -> None:
    (root / "cameras.json").write_text('{\n "000": {\n  "R": [1, 2\n}')


def _corrupt_png(root: Path) -> None:
    (root / "images/001.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a PNG")


def _extra_image(root: Path) -> None:
    shutil.copy(root / "images/000.png", root / "images/009.png")


def _not_an_object(root: Path) -> None:
    (root / "cameras.json").write_text("[1, 2, 3]")


def _bad_gt(root: Path) -> None:
    _edit_json(root / "cameras_gt.json", lambda d: d.pop("003"))


def _bad_novel(root: Path) -> None:
    (root / "novel/cameras_gt.json").unlink()


def _missing_novel_image(root: Path) -> None:
    (root / "novel/images/n001.png").unlink()


BAD_SCENES: list[tuple[str, Callable[[Path], None], str, str]] = [
    # (case, mutation, file named in the message, words of the problem)
    ("missing cameras.json", lambda r: (r / "cameras.json").unlink(), "cameras.json", "not found"),
    ("malformed json", _malformed_json, "cameras.json", "line 4"),
    ("not an object", _not_an_object, "cameras.json", "JSON object"),
    ("duplicate id", _duplicate_id, "cameras.json", "duplicate key '001'"),
    ("missing image", lambda r: (r / "images/001.png").unlink(), "cameras.json", "001.png"),
    ("corrupt png", _corrupt_png, "001.png", "decode"),
    ("truncated png", _truncate("images/001.png"), "001.png", "decode"),
    ("no alpha no mask", _rgb_without_mask, "001.png", "no alpha"),
    ("empty alpha", _empty_alpha, "002.png", "empty mask"),
    ("empty mask file", _empty_mask_file, "masks/001.png", "empty mask"),
    ("mask size", _wrong_mask_size, "masks/001.png", "mask is"),
    ("non-square", _non_square, "003.png", "square"),
    ("missing R", _drop_camera_key("R"), "cameras.json", "missing key(s) R"),
    ("missing focal", _drop_camera_key("focal_length"), "cameras.json", "focal_length"),
    ("wrong R shape", _set_camera("001", R=[[1, 0, 0], [0, 1, 0]]), "cameras.json", "shape [2, 3]"),
    ("wrong T shape", _set_camera("001", T=[0, 0]), "cameras.json", "T has shape"),
    ("non-numeric", _set_camera("001", T=["a", 0, 1]), "cameras.json", "not a numeric"),
    ("nan", _nan_in_file, "cameras.json", "NaN"),
    ("inf", _set_camera("001", focal_length=[float("inf"), 1.0]), "cameras.json", "infinite"),
    ("reflection", _reflection, "cameras.json", "not a rotation"),
    ("scaled R", _scaled_rotation, "cameras.json", "not a rotation"),
    ("zero focal", _set_camera("001", focal_length=[0.0, 50.0]), "cameras.json", "positive"),
    ("negative focal", _set_camera("001", focal_length=[50.0, -50.0]), "cameras.json", "positive"),
    ("flag 2", _set_camera("001", flag=2), "cameras.json", "flag"),
    ("flag string", _set_camera("001", flag="yes"), "cameras.json", "flag"),
    ("image without camera", _extra_image, "009.png", "no camera"),
    ("one view", _keep_cameras("000"), "cameras.json", "at least 2"),
    ("one inlier", lambda r: [_set_camera(k, flag=0)(r) for k in ("001", "002", "003")], "cameras.json", "inlier"),
    ("gt ids differ", _bad_gt, "cameras_gt.json", "003"),
    ("novel without cameras", _bad_novel, "novel/cameras_gt.json", "novel"),
    ("novel image missing", _missing_novel_image, "novel/cameras_gt.json", "n001.png"),
]


@pytest.mark.parametrize("case,mutate,file_named,problem", BAD_SCENES, ids=[case[0] for case in BAD_SCENES])
def test_bad_scene_raises_one_line_scene_error(
    scene_dir: Path, case: str, mutate: Callable[[Path], None], file_named: str, problem: str
) -> None:
    mutate(scene_dir)
    with pytest.raises(SceneError) as raised:
        load_scene(scene_dir, resolution=NATIVE)
    message = str(raised.value)
    assert "\n" not in message
    assert file_named in message, message
    assert problem in message, message
    # validate_scene reports the same problem.
    with pytest.raises(SceneError):
        validate_scene(scene_dir, resolution=NATIVE)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(SceneError, match="nowhere.*scene folder not found"):
        load_scene(tmp_path / "nowhere")


def test_unknown_init_preset_lists_the_available_ones(scene_dir: Path) -> None:
    with pytest.raises(SceneError, match=r"init/raydiff_like\.json.*available: dust3r_like"):
        load_scene(scene_dir, init="raydiff_like")


def test_validate_checks_files_that_load_scene_does_not_need(scene_dir: Path) -> None:
    (scene_dir / "init/one_outlier.json").write_text('{"000": ')
    load_scene(scene_dir, resolution=NATIVE)  # the default init does not read it
    with pytest.raises(SceneError, match=r"one_outlier\.json: malformed JSON at line 1"):
        validate_scene(scene_dir, resolution=NATIVE)
    (scene_dir / "init/one_outlier.json").unlink()
    (scene_dir / "mesh.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n")
    with pytest.raises(SceneError, match=r"mesh\.ply"):
        validate_scene(scene_dir, resolution=NATIVE)


def test_scene_error_is_one_line() -> None:
    error = SceneError("bad thing\nwith detail", Path("x/cameras.json"))
    assert str(error) == "x/cameras.json: bad thing with detail"
    assert error.path == Path("x/cameras.json")
