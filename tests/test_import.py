"""`python main.py import`: captures built in code (non-square photos of a grey sphere with black dots at known
3D points, known poses in an arbitrary frame) written in every pose format, imported, and checked:
pose round trips, reprojection of the dots into the crops, agreement between formats, and every bad input."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparseags import capture
from sparseags.capture import CaptureError, import_capture, to_input_frame
from sparseags.export import write_colmap_text, write_nerfstudio_transforms
from sparseags.scene import load_scene, read_cameras_json, validate_scene

REPO = Path(__file__).resolve().parent.parent
W, H = 200, 150
RES = 96
GREY = 180
DOT_RADIUS = 3.5  # px in the photo
BACKGROUND = (50, 120, 200)
IDS = ["a0", "a1", "a2", "a3", "a4"]


# ---------------------------------------------------------------------------------------------------------------
# the synthetic capture
# ---------------------------------------------------------------------------------------------------------------
def _look_at(centre, target, roll_deg):
    f = target - centre
    f /= np.linalg.norm(f)
    r = np.cross(f, [0.0, 1.0, 0.0])
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    R = np.stack([r, d, f])
    c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ R
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ centre
    return w2c


def _dots():
    """Known 3D points on the unit-diameter sphere (canonical frame), spread over it."""
    pts = []
    golden = math.pi * (3 - math.sqrt(5))
    n = 40
    for i in range(n):
        y = 1 - 2 * (i + 0.5) / n
        r = math.sqrt(1 - y * y)
        pts.append([r * math.cos(golden * i), y, r * math.sin(golden * i)])
    return 0.5 * np.array(pts)


def _visible_dots(w2c, K, dots):
    """Dots facing the camera (cos > 0.6), their projections in the photo, and which are well isolated."""
    centre = -w2c[:3, :3].T @ w2c[:3, 3]
    normals = dots / np.linalg.norm(dots, axis=1, keepdims=True)
    view = centre - dots
    cos = np.sum(normals * view, axis=1) / np.linalg.norm(view, axis=1)
    cam = dots @ w2c[:3, :3].T + w2c[:3, 3]
    uv = cam @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    return cos, uv


def _render(w2c, K, dots, ss=4):
    """RGB uint8 photo [H, W, 3] and binary mask [H, W]: grey sphere (r 0.5 at the origin), black dots (discs of
    DOT_RADIUS px in the image, on front-facing points), coloured background; ss x ss supersampling."""
    R, t = w2c[:3, :3], w2c[:3, 3]
    centre = -R.T @ t
    offs = (np.arange(ss) + 0.5) / ss
    u = (np.arange(W)[:, None] + offs[None]).reshape(-1)
    v = (np.arange(H)[:, None] + offs[None]).reshape(-1)
    uu, vv = np.meshgrid(u, v)  # [H*ss, W*ss]
    rays = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu)], -1) @ R  # world dirs
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    b = rays @ centre
    disc = b * b - (centre @ centre - 0.25)
    hit = disc > 0
    cos, uv = _visible_dots(w2c, K, dots)
    dark = np.zeros_like(hit)
    for (px, py), c in zip(uv, cos):
        if c > 0.3:
            dark |= (uu - px) ** 2 + (vv - py) ** 2 <= DOT_RADIUS**2
    colour = np.where(hit, np.where(dark, 0.0, GREY), np.nan)
    img = np.empty((H * ss, W * ss, 3))
    for ch in range(3):
        img[..., ch] = np.where(hit, colour, BACKGROUND[ch])
    img = img.reshape(H, ss, W, ss, 3).mean(axis=(1, 3))
    cover = hit.reshape(H, ss, W, ss).mean(axis=(1, 3))
    return np.round(img).astype(np.uint8), (cover >= 0.5)


def _random_similarity(seed):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    R = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )
    return float(rng.uniform(0.3, 3.0)), R, rng.normal(size=3) * 2.0


def build_capture(root: Path, alpha=False, shared_K=False, seed=0):
    """Photos (W x H, non-square) + masks + known poses. Returns a dict with the ground truth.

    Cameras are made in a canonical frame (sphere at the origin, +y up), then everything is expressed in an
    arbitrary input frame ``X_in = s R X_can + t`` so the import's normalisation has work to do.
    """
    root.mkdir(parents=True, exist_ok=True)
    photos, masks = root / "photos", root / "masks"
    photos.mkdir(exist_ok=True)
    if not alpha:
        masks.mkdir(exist_ok=True)
    dots = _dots()
    azimuths = [0, 55, 120, 190, 260]
    elevations = [15, 35, 5, 25, 40]
    w2c_can, Ks = [], []
    for i, (az, el) in enumerate(zip(azimuths, elevations)):
        a, e = math.radians(az), math.radians(el)
        d = 2.6 + 0.1 * i
        centre = d * np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
        target = np.array([0.05 * (i - 2), 0.03 * (-1) ** i, 0.0])
        w2c_can.append(_look_at(centre, target, roll_deg=1.5 * (i - 2)))
        fx = 150.0 if shared_K else 150.0 + 6 * i
        cx = 110.0 if shared_K else 104.0 + 3 * i
        if i == 3 and not shared_K:  # the sphere runs off the photo's left edge: the crop needs white padding
            cx = 22.0
        Ks.append(np.array([[fx, 0, cx], [0, fx * 1.01, 70.0], [0, 0, 1]]))
    for view_id, w2c, K in zip(IDS, w2c_can, Ks):
        rgb, mask = _render(w2c, K, dots)
        if alpha:
            rgba = np.concatenate([rgb, (mask * 255).astype(np.uint8)[..., None]], -1)
            Image.fromarray(rgba, "RGBA").save(photos / f"{view_id}.png")
        else:
            Image.fromarray(rgb).save(photos / f"{view_id}.png")
            Image.fromarray((mask * 255).astype(np.uint8)).save(masks / f"{view_id}.png")
    s, R, t = _random_similarity(seed)
    # X_in = s R X_can + t  =>  w2c_in = w2c_can @ inv(S)
    S = np.eye(4)
    S[:3, :3] = s * R
    S[:3, 3] = t
    w2c_in = []
    for w2c in w2c_can:
        m = w2c @ np.linalg.inv(S)
        m[:3, :] /= np.linalg.norm(m[0, :3])  # remove the scale: same camera, metric frame of X_in
        w2c_in.append(m)
    dots_in = dots @ (s * R).T + t
    return {
        "sim": (s, R, t),
        "root": root,
        "photos": photos,
        "masks": masks if not alpha else None,
        "w2c": np.array(w2c_in),
        "K": np.array(Ks),
        "dots": dots_in,
        "dots_can": dots,
        "w2c_can": np.array(w2c_can),
    }


def _p3d(w2c):
    R_cv, t_cv = w2c[:3, :3], w2c[:3, 3]
    flip = np.diag([-1.0, -1.0, 1.0])
    return (flip @ R_cv).T, flip @ t_cv


# ---------------------------------------------------------------------------------------------------------------
# writers of every pose format
# ---------------------------------------------------------------------------------------------------------------
def write_colmap(cap, folder):
    write_colmap_text(folder, IDS, cap["w2c"], cap["K"], W, H, [f"{i}.png" for i in IDS])
    return folder


def write_colmap_binary(cap, folder):
    import pycolmap

    text = write_colmap(cap, folder.parent / (folder.name + "_txt"))
    folder.mkdir(parents=True, exist_ok=True)
    pycolmap.Reconstruction(str(text)).write_binary(str(folder))
    assert (folder / "images.bin").is_file() and not (folder / "images.txt").exists()
    return folder


def write_nerfstudio(cap, path, with_masks=True):
    write_nerfstudio_transforms(path, IDS, cap["w2c"], cap["K"], W, H, [f"photos/{i}.png" for i in IDS])
    data = json.loads(path.read_text())
    for frame in data["frames"]:
        frame.pop("sparseags_id")
        if with_masks and cap["masks"] is not None:
            frame["mask_path"] = f"masks/{Path(frame['file_path']).stem}.png"
    path.write_text(json.dumps(data))
    return path


def write_instant_ngp(cap, path):
    """instant-ngp style: shared intrinsics at the top (camera_angle_x, cx, cy), no w/h, paths without suffix."""
    K = cap["K"][0]
    assert np.allclose(cap["K"], K)
    frames = []
    for view_id, w2c in zip(IDS, cap["w2c"]):
        c2w = np.linalg.inv(w2c) @ np.diag([1.0, -1.0, -1.0, 1.0])
        frames.append({"file_path": f"./photos/{view_id}", "transform_matrix": c2w.tolist()})
    data = {
        "camera_angle_x": 2 * math.atan(W / (2 * K[0, 0])),
        "fl_y": K[1, 1],
        "cx": K[0, 2],
        "cy": K[1, 2],
        "frames": frames,
    }
    path.write_text(json.dumps(data))
    return path


def write_sparseags_full(cap, path):
    """SparseAGS cameras.json with intrinsics in pixels of the full photos (no crop)."""
    data = {}
    for view_id, w2c, K in zip(IDS, cap["w2c"], cap["K"]):
        R, T = _p3d(w2c)
        data[view_id] = {
            "R": R.tolist(),
            "T": T.tolist(),
            "focal_length": [K[0, 0], K[1, 1]],
            "principal_point": [K[0, 2], K[1, 2]],
            "flag": 1,
            "filepath": f"photos/{view_id}.png",
        }
    path.write_text(json.dumps(data))
    return path


def write_sparseags_raydiffusion(cap, path, crop_res=256):
    """SparseAGS cameras.json of 256-px crops described by RayDiffusion crop_parameters + image_size_wh."""
    data = {}
    for i, (view_id, w2c, K) in enumerate(zip(IDS, cap["w2c"], cap["K"])):
        x0, y0, side = 20.0 + 3 * i, -10.0 + i, 140.0 + 5 * i
        Kc = capture.crop_intrinsics(K, (x0, y0, side), crop_res)
        length = max(W, H)
        s = length / min(W, H)
        centre_sq = np.array([x0 + side / 2, y0 + side / 2]) + (length - np.array([W, H])) / 2
        cc = s - 2 * s * centre_sq / length
        R, T = _p3d(w2c)
        data[view_id] = {
            "R": R.tolist(),
            "T": T.tolist(),
            "focal_length": [Kc[0, 0], Kc[1, 1]],
            "principal_point": [Kc[0, 2], Kc[1, 2]],
            "flag": 1,
            "crop_parameters": [-cc[0], -cc[1], 2 * s * side / length, s],
            "image_size_wh": [W, H],
        }
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------------------------------------------------------
# fixtures and checks
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cap(tmp_path_factory):
    return build_capture(tmp_path_factory.mktemp("capture") / "cap")


@pytest.fixture(scope="module")
def colmap_scene(cap, tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes") / "colmap"
    import_capture(
        cap["photos"], out, poses=write_colmap(cap, cap["root"] / "colmap"), resolution=RES, log=lambda *_: None
    )
    return out


def _scene_cameras(out):
    records = read_cameras_json(out / "cameras.json")
    return (np.stack([records[i].w2c for i in IDS]), np.stack([records[i].K for i in IDS]), records)


def check_round_trip(cap, out, tol=1e-7):
    """The scene's poses mapped back with normalisation.json equal the input poses; its K, uncropped, the input K."""
    w2c, K, records = _scene_cameras(out)
    norm = capture.load_normalisation(out)
    back = to_input_frame(w2c, norm)
    assert np.abs(back - cap["w2c"]).max() < tol
    crops = json.loads((out / "crops.json").read_text())["views"]
    for i, view_id in enumerate(IDS):
        box = crops[view_id]
        assert records[view_id].extra["crop_box"] == [box["x0"], box["y0"], box["side"]]
        K_back = K[i].copy()
        scale = box["side"] / RES
        K_back[:2, :2] *= scale
        K_back[0, 2] = K[i][0, 2] * scale + box["x0"]
        K_back[1, 2] = K[i][1, 2] * scale + box["y0"]
        assert np.abs(K_back - cap["K"][i]).max() < 1e-6
    # the frame is normalised: mean distance 1.85, rays to the object centre meet near the origin, +y up
    centres = -np.einsum("vji,vj->vi", w2c[:, :3, :3], w2c[:, :3, 3])
    assert np.linalg.norm(centres, axis=1).mean() == pytest.approx(1.85, abs=1e-9)
    # +y up: the canonical frame's up (the cameras' rolls are within 3 degrees) maps to +y within a few degrees
    s_in, R_in, _ = cap["sim"]
    up = np.array(norm["rotation"]) @ R_in @ np.array([0.0, 1.0, 0.0])
    assert math.degrees(math.acos(min(1.0, up[1]))) < 3.0


def reprojection_errors(cap, out):
    """Centroids of the dots in the cropped images vs the projection of the known 3D points (scene frame)."""
    w2c, K, _ = _scene_cameras(out)
    norm = capture.load_normalisation(out)
    s, R, t = norm["scale"], np.array(norm["rotation"]), np.array(norm["translation"])
    dots_scene = cap["dots"] @ (s * R).T + t
    errors = []
    for i, view_id in enumerate(IDS):
        rgba = np.asarray(Image.open(out / "images" / f"{view_id}.png")).astype(np.float64)
        assert rgba.shape == (RES, RES, 4)
        cos, uv = _visible_dots(w2c[i], K[i], dots_scene)
        r_crop = DOT_RADIUS * K[i][0, 0] / cap["K"][i][0, 0]
        half = int(math.ceil(r_crop + 2))
        candidates = [k for k in range(len(uv)) if cos[k] > 0.6]
        tested = 0
        for k in candidates:
            px, py = uv[k]
            others = [j for j in range(len(uv)) if j != k and cos[j] > 0.3]
            if any(np.max(np.abs(uv[j] - uv[k])) < half + r_crop + 2 for j in others):
                continue
            x0, y0 = int(px) - half, int(py) - half
            if x0 < 0 or y0 < 0 or x0 + 2 * half + 1 > RES or y0 + 2 * half + 1 > RES:
                continue
            win = rgba[y0 : y0 + 2 * half + 1, x0 : x0 + 2 * half + 1]
            if win[..., 3].min() < 250:  # the window must lie on the object
                continue
            weight = np.clip((GREY - win[..., 0]) / GREY, 0, 1)
            jj, ii = np.meshgrid(np.arange(x0, x0 + 2 * half + 1) + 0.5, np.arange(y0, y0 + 2 * half + 1) + 0.5)
            centroid = np.array([(weight * jj).sum(), (weight * ii).sum()]) / weight.sum()
            errors.append(float(np.linalg.norm(centroid - uv[k])))
            tested += 1
        assert tested >= 1, f"no isolated dot to test in view {view_id}"
    return np.array(errors)


# ---------------------------------------------------------------------------------------------------------------
# tests: formats, round trips, reprojection
# ---------------------------------------------------------------------------------------------------------------
def test_colmap_text_round_trip_and_reprojection(cap, colmap_scene):
    check_round_trip(cap, colmap_scene)
    errors = reprojection_errors(cap, colmap_scene)
    assert len(errors) >= 8
    assert errors.max() < 0.5, errors
    text = validate_scene(colmap_scene, resolution=RES)
    assert "views: 5" in text
    scene = load_scene(colmap_scene, resolution=RES)
    assert scene.ids == IDS
    # originals and crop boxes are kept
    crops = json.loads((colmap_scene / "crops.json").read_text())["views"]
    for view_id in IDS:
        assert (colmap_scene / crops[view_id]["original"]).is_file()
        assert crops[view_id]["image_size_wh"] == [W, H]
    # view a3 looks past the sphere, which runs off the photo: the crop is padded white outside the photo
    box = crops["a3"]
    assert box["x0"] < 0 or box["y0"] < 0 or box["x0"] + box["side"] > W or box["y0"] + box["side"] > H
    rgba = np.asarray(Image.open(colmap_scene / "images" / "a3.png"))
    assert np.all(rgba[rgba[..., 3] == 0][:, :3] == 255)


def _same_cameras(out_a, out_b, tol=1e-6):
    wa, Ka, _ = _scene_cameras(out_a)
    wb, Kb, _ = _scene_cameras(out_b)
    assert np.abs(wa - wb).max() < tol
    assert np.abs(Ka - Kb).max() < tol * 100
    ia = np.asarray(Image.open(out_a / "images" / "a1.png")).astype(int)
    ib = np.asarray(Image.open(out_b / "images" / "a1.png")).astype(int)
    assert np.abs(ia - ib).max() <= 1


@pytest.mark.parametrize("fmt", ["colmap_binary", "nerfstudio", "sparseags_full", "sparseags_raydiffusion"])
def test_every_format_gives_the_same_scene(cap, colmap_scene, tmp_path, fmt):
    writer = {
        "colmap_binary": (write_colmap_binary, "bin"),
        "nerfstudio": (write_nerfstudio, "transforms.json"),
        "sparseags_full": (write_sparseags_full, "cameras.json"),
        "sparseags_raydiffusion": (write_sparseags_raydiffusion, "cameras.json"),
    }[fmt]
    poses = writer[0](cap, tmp_path / writer[1])
    out = tmp_path / "scene"
    report = import_capture(cap["photos"], out, poses=poses, resolution=RES, log=lambda *_: None)
    assert report.ids == IDS and not report.skipped
    assert report.format == fmt.split("_")[0]
    check_round_trip(cap, out, tol=1e-6)
    _same_cameras(colmap_scene, out)


def test_format_detection_and_override(cap, tmp_path):
    ns = write_nerfstudio(cap, tmp_path / "transforms.json")
    sp = write_sparseags_full(cap, tmp_path / "cameras.json")
    col = write_colmap(cap, tmp_path / "proj" / "sparse" / "0")
    assert capture.detect_format(ns) == "nerfstudio"
    assert capture.detect_format(sp) == "sparseags"
    assert capture.detect_format(tmp_path / "proj") == "colmap"
    assert capture.detect_format(col / "images.txt") == "colmap"
    # an override that does not fit the file is one clear error
    with pytest.raises(CaptureError, match="'frames'"):
        import_capture(cap["photos"], tmp_path / "x", poses=ns, fmt="sparseags", resolution=RES, log=lambda *_: None)
    assert not (tmp_path / "x").exists()


def test_masks_from_alpha_and_instant_ngp_shared_intrinsics(tmp_path):
    cap = build_capture(tmp_path / "cap", alpha=True, shared_K=True, seed=3)
    poses = write_instant_ngp(cap, cap["root"] / "transforms.json")
    out = tmp_path / "scene"
    import_capture(cap["photos"], out, poses=poses, resolution=RES, log=lambda *_: None)
    check_round_trip(cap, out, tol=1e-6)
    assert reprojection_errors(cap, out).max() < 0.5
    crops = json.loads((out / "crops.json").read_text())["views"]
    assert crops["a0"]["mask"] == "alpha channel of the original"


def test_nerfstudio_mask_path_and_explicit_masks_folder(cap, colmap_scene, tmp_path):
    # masks named by mask_path only (no masks/ beside the photos)
    photos = tmp_path / "in" / "photos"
    photos.mkdir(parents=True)
    sil = tmp_path / "in" / "silhouettes"
    sil.mkdir()
    for view_id in IDS:
        (photos / f"{view_id}.png").write_bytes((cap["photos"] / f"{view_id}.png").read_bytes())
        (sil / f"{view_id}.png").write_bytes((cap["masks"] / f"{view_id}.png").read_bytes())
    ns = write_nerfstudio(cap, tmp_path / "in" / "transforms.json", with_masks=False)
    data = json.loads(ns.read_text())
    for frame in data["frames"]:
        frame["mask_path"] = f"silhouettes/{Path(frame['file_path']).stem}.png"
    ns.write_text(json.dumps(data))
    out = tmp_path / "s1"
    import_capture(photos, out, poses=ns, resolution=RES, log=lambda *_: None)
    _same_cameras(colmap_scene, out)
    # --masks wins over mask_path
    out2 = tmp_path / "s2"
    import_capture(
        photos, out2, masks=sil, poses=write_colmap(cap, tmp_path / "col"), resolution=RES, log=lambda *_: None
    )
    _same_cameras(colmap_scene, out2)


def test_reimporting_an_imported_scene_is_the_identity(cap, colmap_scene, tmp_path):
    """The scene's own cameras.json (crop_box) with its originals imports back to the same scene."""
    out = tmp_path / "again"
    import_capture(
        colmap_scene / "originals" / "images",
        out,
        masks=colmap_scene / "originals" / "masks",
        poses=colmap_scene / "cameras.json",
        resolution=RES,
        log=lambda *_: None,
    )
    _same_cameras(colmap_scene, out, tol=1e-9)
    norm = capture.load_normalisation(out)
    assert norm["scale"] == pytest.approx(1.0, abs=1e-9)
    assert np.allclose(norm["rotation"], np.eye(3), atol=1e-9)
    assert np.allclose(norm["translation"], 0.0, atol=1e-9)


def test_images_without_poses_are_reported_not_imported(cap, tmp_path):
    poses = write_colmap(cap, tmp_path / "col")
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in cap["photos"].iterdir():
        (photos / p.name).write_bytes(p.read_bytes())
    (photos / "extra.png").write_bytes((cap["photos"] / "a0.png").read_bytes())
    report = import_capture(
        photos, tmp_path / "s", masks=cap["masks"], poses=poses, resolution=RES, log=lambda *_: None
    )
    assert report.ids == IDS and report.skipped == ["extra"]
    assert "not imported (1): extra" in report.summary()


def test_export_in_the_input_frame(cap, colmap_scene, tmp_path):
    """Scene-frame cameras written back in the user's frame, with the original photos' intrinsics."""
    from sparseags.export import read_colmap_text, read_nerfstudio_transforms

    w2c, K, _ = _scene_cameras(colmap_scene)
    written = capture.export_input_frame(colmap_scene, tmp_path / "exp", IDS, w2c, K)
    assert written
    col = read_colmap_text(tmp_path / "exp" / "colmap")
    ns = read_nerfstudio_transforms(tmp_path / "exp" / "transforms.json")
    for got in (col, ns):
        assert got.ids == IDS
        assert np.abs(got.w2c - cap["w2c"]).max() < 1e-7
        assert np.abs(got.K - cap["K"]).max() < 1e-6
        assert list(got.widths) == [W] * 5 and list(got.heights) == [H] * 5


def test_crop_box_follows_the_official_rule():
    mask = np.zeros((120, 160))
    mask[10:50, 30:110] = 1  # 80 x 40 bbox centred at (70, 30)
    assert capture.crop_box(mask, 0.8) == (70 - 50, 30 - 50, 100)
    K = np.array([[100.0, 0, 80], [0, 100, 60], [0, 0, 1]])
    Kc = capture.crop_intrinsics(K, (20, -20, 100), 256)
    assert np.allclose(Kc, [[256, 0, 60 * 2.56], [0, 256, 80 * 2.56], [0, 0, 1]])


# ---------------------------------------------------------------------------------------------------------------
# bad input: one error, nothing written
# ---------------------------------------------------------------------------------------------------------------
def _copy_capture(cap, dst):
    (dst / "photos").mkdir(parents=True)
    (dst / "masks").mkdir()
    for view_id in IDS:
        (dst / "photos" / f"{view_id}.png").write_bytes((cap["photos"] / f"{view_id}.png").read_bytes())
        (dst / "masks" / f"{view_id}.png").write_bytes((cap["masks"] / f"{view_id}.png").read_bytes())
    return dst


def _bad(case, cap, root):
    """(images dir, poses path, kwargs, expected message fragment) for one kind of bad input."""
    c = _copy_capture(cap, root / "in")
    photos, masks = c / "photos", c / "masks"
    kwargs = {}
    if case == "ids_do_not_match":
        poses = write_colmap(cap, c / "col")
        text = (c / "col" / "images.txt").read_text().replace("a2.png", "zz.png")
        (c / "col" / "images.txt").write_text(text)
        return photos, poses, kwargs, "match no image"
    if case == "mask_wrong_size":
        Image.fromarray(np.full((H // 2, W // 2), 255, np.uint8)).save(masks / "a1.png")
        return photos, write_colmap(cap, c / "col"), kwargs, "mask is 100x75 but its image is 200x150"
    if case == "empty_mask":
        Image.fromarray(np.zeros((H, W), np.uint8)).save(masks / "a4.png")
        return photos, write_colmap(cap, c / "col"), kwargs, "empty mask"
    if case == "missing_mask":
        (masks / "a3.png").unlink()
        return photos, write_colmap(cap, c / "col"), kwargs, "no alpha channel and no mask"
    if case == "nan_pose":
        path = write_nerfstudio(cap, c / "transforms.json")
        data = json.loads(path.read_text())
        data["frames"][2]["transform_matrix"][0][3] = float("nan")
        path.write_text(json.dumps(data).replace("NaN", "NaN"))
        return photos, path, kwargs, "NaN"
    if case == "scaled_rotation":
        path = write_nerfstudio(cap, c / "transforms.json")
        data = json.loads(path.read_text())
        m = np.array(data["frames"][1]["transform_matrix"])
        m[:3, :3] *= 2.0
        data["frames"][1]["transform_matrix"] = m.tolist()
        path.write_text(json.dumps(data))
        return photos, path, kwargs, "rotation is degenerate"
    if case == "cameras_at_one_point":
        w2c = cap["w2c"].copy()
        centre = -w2c[0, :3, :3].T @ w2c[0, :3, 3]
        for m in w2c:
            m[:3, 3] = -m[:3, :3] @ centre
        write_colmap_text(c / "col", IDS, w2c, cap["K"], W, H, [f"{i}.png" for i in IDS])
        return photos, c / "col", kwargs, "degenerate poses"
    if case == "opengl_axes_given_as_opencv":
        w2c = np.diag([1.0, -1.0, -1.0, 1.0]) @ cap["w2c"]
        write_colmap_text(c / "col", IDS, w2c, cap["K"], W, H, [f"{i}.png" for i in IDS])
        return photos, c / "col", kwargs, "behind camera"
    if case == "unreadable_image":
        (photos / "a2.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
        return photos, write_colmap(cap, c / "col"), kwargs, "cannot"
    if case == "too_few_views":
        poses = write_colmap(cap, c / "col")
        lines = (c / "col" / "images.txt").read_text().splitlines()
        keep, skip = [], 0
        for line in lines:
            if line.startswith(("3 ", "4 ", "5 ")):
                skip = 2
            if skip:
                skip -= 1
                continue
            keep.append(line)
        (c / "col" / "images.txt").write_text("\n".join(keep) + "\n")
        return photos, poses, kwargs, "at least 3 are needed"
    if case == "malformed_json":
        path = c / "transforms.json"
        path.write_text('{"frames": [')
        return photos, path, {"fmt": "nerfstudio"}, "malformed JSON"
    if case == "wrong_image_size_for_camera":
        img = Image.open(photos / "a0.png").resize((W + 10, H))
        img.save(photos / "a0.png")
        Image.open(masks / "a0.png").resize((W + 10, H)).save(masks / "a0.png")
        return photos, write_colmap(cap, c / "col"), kwargs, "its camera says 200x150"
    if case == "unknown_poses_path":
        (c / "notes.txt").write_text("hello")
        return photos, c / "notes.txt", kwargs, "cannot tell the poses format"
    if case == "output_not_empty":
        (root / "out").mkdir()
        (root / "out" / "keep.txt").write_text("x")
        return photos, write_colmap(cap, c / "col"), kwargs, "already exists"
    raise AssertionError(case)


BAD_CASES = [
    "ids_do_not_match",
    "mask_wrong_size",
    "empty_mask",
    "missing_mask",
    "nan_pose",
    "scaled_rotation",
    "cameras_at_one_point",
    "opengl_axes_given_as_opencv",
    "unreadable_image",
    "too_few_views",
    "malformed_json",
    "wrong_image_size_for_camera",
    "unknown_poses_path",
    "output_not_empty",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_error_and_nothing_written(cap, tmp_path, case):
    photos, poses, kwargs, fragment = _bad(case, cap, tmp_path)
    out = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(CaptureError) as info:
        import_capture(photos, out, poses=poses, resolution=RES, log=lambda *_: None, **kwargs)
    message = str(info.value)
    assert fragment in message, message
    assert "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp folder left, no --out created
    if case == "output_not_empty":
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def run_cli(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_cli_import_and_cli_error(cap, tmp_path):
    out = tmp_path / "scene"
    ok = run_cli(
        "import",
        "--images",
        cap["photos"],
        "--poses",
        write_colmap(cap, tmp_path / "col"),
        "--out",
        out,
        "--resolution",
        RES,
    )
    assert ok.returncode == 0, ok.stderr
    assert "imported 5 views (colmap poses)" in ok.stdout
    val = run_cli("validate", "--scene", out, "--resolution", RES)
    assert val.returncode == 0 and val.stdout.strip().endswith("ok"), val.stderr
    bad = run_cli("import", "--images", cap["photos"], "--poses", tmp_path / "col", "--out", out)
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), bad.stderr


def test_no_poses_and_nothing_registers_is_one_clear_line(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        rgba = np.zeros((60, 80, 4), np.uint8)
        rgba[..., :3] = 128
        rgba[20:40, 30:50, 3] = 255
        Image.fromarray(rgba, "RGBA").save(photos / f"{i}.png")
    out = tmp_path / "out"
    result = run_cli("import", "--images", photos, "--out", out)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr  # COLMAP's own log is silenced
    assert "registered none of the 3 photos" in lines[0] and "external tool" in lines[0] and "--poses" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_no_poses_reports_unregistered_views(cap, tmp_path, monkeypatch):
    """Only the images structure from motion registers are imported; the rest are named in the report."""

    def fake_sfm(images, workdir, log=print):
        poses = capture.PoseSet(format="sfm", w2c={}, K={}, sizes={})
        for view_id, w2c, K in zip(IDS, cap["w2c"], cap["K"]):
            if view_id != "a2":
                poses.w2c[view_id], poses.K[view_id], poses.sizes[view_id] = w2c, K, (W, H)
        poses.notes.append("sfm: registered 4 of 5 photos")
        return poses

    monkeypatch.setattr(capture, "run_sfm", fake_sfm)
    report = import_capture(cap["photos"], tmp_path / "s", resolution=RES, log=lambda *_: None)
    assert report.ids == ["a0", "a1", "a3", "a4"] and report.skipped == ["a2"]
    assert "not registered by structure from motion" in report.summary()
