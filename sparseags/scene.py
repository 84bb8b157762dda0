"""Scene folder I/O and validation (the SparseAGS / bench layout).

A scene folder holds::

    <scene>/
      images/<id>.png          RGBA input views (alpha = mask, RGB not premultiplied, background white),
                               or RGB images plus masks/<stem>.png (grayscale or RGBA, >= 128 is object)
      cameras.json             initial poses, SparseAGS format (PyTorch3D R, T; pixel intrinsics; flag; filepath)
      cameras_gt.json          optional ground-truth cameras for the same ids
      init/<preset>.json       optional alternative initial poses (filepaths scene-relative)
      novel/images/*.png       optional novel views, with novel/cameras_gt.json (filepaths relative to novel/)
      mesh.ply                 optional ground-truth mesh

Conventions (docs/ARCHITECTURE.md): cameras are returned as OpenCV world-to-camera ``w2c [4, 4]`` and ``K [3, 3]``
in pixels of the image they refer to, with pixel centres at (j + 0.5, i + 0.5).  The camera files store
intrinsics in pixels of the image file's own size; :func:`load_scene` resamples every image to a square
``resolution`` and scales the intrinsics accordingly.

Decisions on edge cases (each violation is a :class:`SceneError` naming the file):

* Images must be square; square images of different sizes are fine (each is resampled on its own).
* Every camera id needs a readable image.  An image in ``images/`` without a camera id is an error too
  (a forgotten view is almost always a mistake); PNGs elsewhere (``processed/``, ``source/``) are not checked.
* ``flag`` defaults to 1 when absent; ``filepath`` defaults to ``images/<id>.png`` (or ``processed/<id>.png``).
* A camera file that lists an id twice is rejected (``json.load`` would silently keep the last one).
"""

from __future__ import annotations

import json
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image

from sparseags import cameras
from sparseags.atomic import atomic_write_text
from sparseags.errors import UserError

__all__ = [
    "SceneError",
    "CameraRecord",
    "NovelViews",
    "Scene",
    "read_cameras_json",
    "write_cameras_json",
    "load_scene",
    "validate_scene",
    "list_init_presets",
]

# The keys SparseAGS writes for every camera; anything else is carried along in CameraRecord.extra.
_REQUIRED_KEYS = ("R", "T", "focal_length", "principal_point")
_KNOWN_KEYS = (*_REQUIRED_KEYS, "flag", "filepath")
_ROTATION_TOL = 1e-3
# A mask pixel belongs to the object when its value is >= 128 of 255 (bench/README: "alpha >= 128").
_MASK_THRESHOLD = 128.0 / 255.0
_IMAGE_FOLDERS = ("images", "processed")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class SceneError(UserError):
    """A problem with a scene on disk, described in one line that names the file.

    ``str(err)`` is ``"<path>: <problem>"``; the CLI prints ``error: <message>`` and exits with status 2.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        message = f"{path}: {problem}" if path is not None else problem
        # One line, whatever the caller passed in (e.g. an OS error message with a newline).
        super().__init__(" ".join(message.split()))
        self.path = None if path is None else Path(path)


@dataclass
class CameraRecord:
    """One camera of a SparseAGS camera file, in the engine's conventions.

    ``w2c`` is the OpenCV world-to-camera matrix; ``K`` is in pixels of the image file the camera refers to
    (256 x 256 for SparseAGS and the bench).  ``extra`` keeps keys this module does not interpret
    (``needs_checking``, ``image_size_wh``, ...) so that rewriting a file does not lose them.
    """

    id: str
    w2c: np.ndarray  # [4, 4] float64, OpenCV world-to-camera
    K: np.ndarray  # [3, 3] float64, pixels of the image file
    flag: int = 1  # 1 = inlier, 0 = outlier
    filepath: str = ""  # as written in the file (relative to the JSON's folder for the bench layout)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class NovelViews:
    """Held-out views with ground-truth cameras, for evaluation only."""

    ids: list[str]
    images: np.ndarray  # [N, H, W, 3] float32 RGB in [0, 1], not premultiplied
    masks: np.ndarray  # [N, H, W] float32 in [0, 1]
    w2c: np.ndarray  # [N, 4, 4] float64 OpenCV world-to-camera
    K: np.ndarray  # [N, 3, 3] float64 pixels at the scene resolution


@dataclass
class Scene:
    """A loaded scene: input views resampled to ``resolution``, cameras in OpenCV convention."""

    root: Path
    ids: list[str]  # view order = key order of cameras.json
    resolution: int
    images: np.ndarray  # [V, H, W, 3] float32 RGB in [0, 1], not premultiplied
    masks: np.ndarray  # [V, H, W] float32 in [0, 1]
    K: np.ndarray  # [V, 3, 3] float64 at `resolution`, from the initial camera file
    w2c_init: np.ndarray  # [V, 4, 4] float64 OpenCV
    flags: np.ndarray  # [V] int64, 1 inlier, 0 outlier
    w2c_gt: np.ndarray | None = None  # [V, 4, 4] from cameras_gt.json
    K_gt: np.ndarray | None = None  # [V, 3, 3] at `resolution`
    novel: NovelViews | None = None
    mesh_path: Path | None = None
    init_name: str = "cameras.json"
    image_paths: list[Path] = field(default_factory=list)  # [V] resolved input image files
    records: dict[str, CameraRecord] = field(default_factory=dict)  # the initial camera file as read

    @property
    def num_views(self) -> int:
        return len(self.ids)

    def white_background_images(self) -> np.ndarray:
        """RGB composited over white: ``rgb * mask + (1 - mask)``, ``[V, H, W, 3]`` float32."""
        mask = self.masks[..., None]
        return (self.images * mask + (1.0 - mask)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Camera conventions (sparseags.cameras does the maths; file I/O keeps float64 numpy arrays)
# ----------------------------------------------------------------------------------------------------------


def _p3d_to_w2c(R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """PyTorch3D row-vector ``X_cam = X_world @ R + T`` -> OpenCV ``w2c [4, 4]`` float64."""
    return cameras.p3d_to_w2c(R, T).numpy()


def _w2c_to_p3d(w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV ``w2c [4, 4]`` -> PyTorch3D ``(R [3, 3], T [3])`` float64; exact inverse of :func:`_p3d_to_w2c`."""
    R, T = cameras.w2c_to_p3d(np.asarray(w2c, dtype=np.float64))
    return R.numpy(), T.numpy()


def _intrinsics(focal: np.ndarray, principal: np.ndarray) -> np.ndarray:
    K = np.eye(3)
    K[0, 0], K[1, 1] = focal
    K[0, 2], K[1, 2] = principal
    return K


def _scale_K(K: np.ndarray, scale: float) -> np.ndarray:
    """Intrinsics for an image resized by ``scale`` in both axes (corner-origin pixels: fx, fy, cx, cy all scale)."""
    return cameras.scale_intrinsics(np.asarray(K, dtype=np.float64), scale, scale).numpy()


# ----------------------------------------------------------------------------------------------------------
# Camera files
# ----------------------------------------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _read_json(path: Path) -> Any:
    """Parse a JSON file, turning every failure into a one-line SceneError naming the file."""
    if not path.is_file():
        raise SceneError("file not found", path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SceneError(f"cannot read file ({err})", path) from err
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as err:
        raise SceneError(f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}", path) from err
    except _DuplicateKey as err:
        raise SceneError(f"duplicate key {str(err)!r}", path) from err


def _float_array(value: Any, shape: tuple[int, ...], name: str, cam_id: str, path: Path) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SceneError(f"camera {cam_id!r}: {name} is not a numeric array", path) from err
    if array.shape != shape:
        raise SceneError(f"camera {cam_id!r}: {name} has shape {list(array.shape)}, expected {list(shape)}", path)
    if not np.all(np.isfinite(array)):
        raise SceneError(f"camera {cam_id!r}: {name} contains NaN or infinite values", path)
    return array


def _parse_camera(cam_id: str, entry: Any, path: Path) -> CameraRecord:
    if not isinstance(entry, dict):
        raise SceneError(f"camera {cam_id!r} is a {type(entry).__name__}, expected an object", path)
    missing = [key for key in _REQUIRED_KEYS if key not in entry]
    if missing:
        raise SceneError(f"camera {cam_id!r} is missing key(s) {', '.join(missing)}", path)
    R = _float_array(entry["R"], (3, 3), "R", cam_id, path)
    T = _float_array(entry["T"], (3,), "T", cam_id, path)
    focal = _float_array(entry["focal_length"], (2,), "focal_length", cam_id, path)
    principal = _float_array(entry["principal_point"], (2,), "principal_point", cam_id, path)

    det = float(np.linalg.det(R))
    orthogonality = float(np.linalg.norm(R @ R.T - np.eye(3)))
    if abs(det - 1.0) > _ROTATION_TOL or orthogonality > _ROTATION_TOL:
        raise SceneError(
            f"camera {cam_id!r}: R is not a rotation (det {det:.4g}, |R R^T - I| {orthogonality:.3g})", path
        )
    if np.any(focal <= 0):
        raise SceneError(f"camera {cam_id!r}: focal_length must be positive, got {focal.tolist()}", path)

    flag = entry.get("flag", 1)
    # bool is an int subclass; true/false are accepted as 1/0 like Python would.
    if isinstance(flag, float) and flag.is_integer():
        flag = int(flag)
    if not isinstance(flag, int) or flag not in (0, 1):
        raise SceneError(f"camera {cam_id!r}: flag must be 0 or 1, got {flag!r}", path)

    filepath = entry.get("filepath", "")
    if not isinstance(filepath, str):
        raise SceneError(f"camera {cam_id!r}: filepath must be a string, got {filepath!r}", path)

    extra = {key: value for key, value in entry.items() if key not in _KNOWN_KEYS}
    return CameraRecord(
        id=cam_id,
        w2c=_p3d_to_w2c(R, T),
        K=_intrinsics(focal, principal),
        flag=int(flag),
        filepath=filepath,
        extra=extra,
    )


def read_cameras_json(path: str | os.PathLike) -> dict[str, CameraRecord]:
    """Read a SparseAGS camera file; the returned dict's order is the file's key order (= view order).

    Raises SceneError for missing/malformed files, duplicate ids, missing keys, wrong shapes, NaN/inf,
    non-rotation R, non-positive focal length and a flag other than 0/1.
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise SceneError(f"expected a JSON object keyed by view id, got a {type(data).__name__}", path)
    return {str(cam_id): _parse_camera(str(cam_id), entry, path) for cam_id, entry in data.items()}


def _record_to_json(record: CameraRecord) -> dict[str, Any]:
    w2c = np.asarray(record.w2c, dtype=np.float64)
    K = np.asarray(record.K, dtype=np.float64)
    if w2c.shape != (4, 4) or K.shape != (3, 3):
        raise ValueError(f"camera {record.id!r}: w2c must be [4, 4] and K [3, 3], got {w2c.shape} and {K.shape}")
    R, T = _w2c_to_p3d(w2c)
    entry: dict[str, Any] = {
        "R": R.tolist(),
        "T": T.tolist(),
        "focal_length": [float(K[0, 0]), float(K[1, 1])],
        "principal_point": [float(K[0, 2]), float(K[1, 2])],
        "flag": int(record.flag),
        "filepath": record.filepath,
    }
    entry.update({key: value for key, value in record.extra.items() if key not in entry})
    return entry


def cameras_to_json_text(records: Mapping[str, CameraRecord] | Iterable[CameraRecord]) -> str:
    """The text :func:`write_cameras_json` writes (SparseAGS format, 1-space indent like the bench)."""
    items = records.values() if isinstance(records, Mapping) else records
    data: dict[str, Any] = {}
    for record in items:
        if record.id in data:
            raise ValueError(f"duplicate camera id {record.id!r}")
        data[record.id] = _record_to_json(record)
    return json.dumps(data, indent=1) + "\n"


def write_cameras_json(path: str | os.PathLike, records: Mapping[str, CameraRecord] | Iterable[CameraRecord]) -> None:
    """Write cameras in SparseAGS format (PyTorch3D R, T), atomically, keeping each record's extra keys.

    ``K`` is written as-is: pass intrinsics in pixels of the image files the cameras refer to.
    """
    atomic_write_text(path, cameras_to_json_text(records))


# ----------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------


def _open_image(path: Path) -> Image.Image:
    """Open and fully decode an image (``.load()`` catches truncated or corrupt files)."""
    if not path.is_file():
        raise SceneError("image not found", path)
    try:
        with Image.open(path) as handle:
            handle.load()
            image = handle.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise SceneError(f"cannot decode image ({err})", path) from err
    return image


def _to_unit_float(array: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / bool / float image data -> float32 in [0, 1]."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16 or (np.issubdtype(array.dtype, np.integer) and array.max(initial=0) > 255):
        return array.astype(np.float32) / 65535.0
    if array.dtype == bool:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / 255.0
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or "transparency" in image.info


def _rgb_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Split into RGB ``[H, W, 3]`` and alpha ``[H, W]`` (None without an alpha channel), floats in [0, 1]."""
    if _has_alpha(image):
        rgba = _to_unit_float(np.asarray(image.convert("RGBA")))
        return rgba[..., :3], rgba[..., 3]
    return _to_unit_float(np.asarray(image.convert("RGB"))), None


def _read_mask_file(path: Path) -> np.ndarray:
    """A mask image (grayscale, or RGBA whose alpha or gray value marks the object) -> binary float ``[H, W]``."""
    image = _open_image(path)
    if _has_alpha(image):
        alpha = _to_unit_float(np.asarray(image.convert("RGBA")))[..., 3]
        if alpha.min() < alpha.max():
            return (alpha >= _MASK_THRESHOLD).astype(np.float32)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        gray = _to_unit_float(np.asarray(image))
    else:
        gray = _to_unit_float(np.asarray(image.convert("L")))
    return (gray >= _MASK_THRESHOLD).astype(np.float32)


def _resize_channel(channel: np.ndarray, size: int) -> np.ndarray:
    """Resample one float channel to ``size x size``: area averaging when shrinking, bilinear when enlarging."""
    if channel.shape == (size, size):
        return channel
    method = Image.Resampling.BOX if channel.shape[0] > size else Image.Resampling.BILINEAR
    resized = Image.fromarray(channel.astype(np.float32), mode="F").resize((size, size), resample=method)
    return np.asarray(resized, dtype=np.float32)


def _resize_rgb_mask(rgb: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample a non-premultiplied RGB + mask pair.

    Colours are averaged premultiplied by the mask and divided back, so the white background does not bleed
    into the object's edge colours.
    """
    if mask.shape == (size, size):
        return rgb, mask
    mask_small = np.clip(_resize_channel(mask, size), 0.0, 1.0)
    premultiplied = np.stack([_resize_channel(rgb[..., c] * mask, size) for c in range(3)], axis=-1)
    background = np.stack([_resize_channel(rgb[..., c], size) for c in range(3)], axis=-1)
    covered = mask_small > 1e-6
    rgb_small = np.where(covered[..., None], premultiplied / np.maximum(mask_small, 1e-6)[..., None], background)
    return np.clip(rgb_small, 0.0, 1.0).astype(np.float32), mask_small.astype(np.float32)


def _find_mask_file(image_path: Path, scene_root: Path) -> Path | None:
    for folder in (scene_root / "masks", image_path.parent.parent / "masks", image_path.parent / "masks"):
        for suffix in (".png", ".jpg", ".jpeg"):
            candidate = folder / f"{image_path.stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


@dataclass
class _View:
    rgb: np.ndarray  # [S, S, 3] float32 at the scene resolution
    mask: np.ndarray  # [S, S] float32
    native_size: int  # side of the square image file, in pixels


def _load_view(image_path: Path, scene_root: Path, resolution: int) -> _View:
    image = _open_image(image_path)
    width, height = image.size
    if width != height:
        raise SceneError(f"image is {width}x{height}, expected a square image", image_path)
    rgb, alpha = _rgb_alpha(image)
    mask_path = None
    if alpha is None:
        mask_path = _find_mask_file(image_path, scene_root)
        if mask_path is None:
            raise SceneError(f"image has no alpha channel and there is no masks/{image_path.stem}.png", image_path)
        alpha = _read_mask_file(mask_path)
        if alpha.shape != (height, width):
            raise SceneError(f"mask is {alpha.shape[1]}x{alpha.shape[0]} but its image is {width}x{height}", mask_path)
    if not np.any(alpha > 0.5):
        raise SceneError("empty mask (no pixel above 0.5)", mask_path or image_path)
    rgb, mask = _resize_rgb_mask(rgb, alpha, resolution)
    return _View(rgb=rgb, mask=mask, native_size=width)


def _resolve_image(record: CameraRecord, json_path: Path, scene_root: Path) -> Path:
    """Find a camera's image: scene-relative, JSON-relative, then the basename under images/ or processed/.

    The last rule covers old SparseAGS files whose filepaths are relative to the repo root
    (``data/demo/eagle/processed/0_rgba.png``).
    """
    candidates: list[Path] = []
    if record.filepath:
        relative = Path(record.filepath)
        candidates += [scene_root / relative, json_path.parent / relative]
        candidates += [scene_root / folder / relative.name for folder in _IMAGE_FOLDERS]
    else:
        for folder in _IMAGE_FOLDERS:
            candidates += [scene_root / folder / f"{record.id}{suffix}" for suffix in _IMAGE_SUFFIXES]
            candidates.append(scene_root / folder / f"{record.id}_rgba.png")
    for candidate in candidates:
        if candidate.is_file():
            return Path(os.path.normpath(candidate))
    wanted = record.filepath or f"images/{record.id}.png"
    raise SceneError(f"camera {record.id!r}: image {wanted!r} not found", json_path)


# ----------------------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------------------


def _check_scene_root(root: Path) -> None:
    if not root.exists():
        raise SceneError("scene folder not found", root)
    if not root.is_dir():
        raise SceneError("not a folder", root)
    if not (root / "cameras.json").is_file():
        raise SceneError("not found (every scene needs this SparseAGS camera file)", root / "cameras.json")


def _check_same_ids(reference: list[str], records: Mapping[str, CameraRecord], path: Path, against: str) -> None:
    missing = [cam_id for cam_id in reference if cam_id not in records]
    extra = [cam_id for cam_id in records if cam_id not in set(reference)]
    if missing:
        raise SceneError(f"missing camera id(s) {', '.join(missing)} that {against} has", path)
    if extra:
        raise SceneError(f"camera id(s) {', '.join(extra)} not in {against}", path)


def _check_unclaimed_images(root: Path, image_paths: list[Path], cameras_path: Path) -> None:
    images_dir = root / "images"
    if not images_dir.is_dir():
        return
    claimed = {path.resolve() for path in image_paths}
    for candidate in sorted(images_dir.iterdir()):
        if candidate.suffix.lower() == ".png" and candidate.resolve() not in claimed:
            raise SceneError(f"image has no camera id in {cameras_path.name}", candidate)


def list_init_presets(root: str | os.PathLike) -> list[str]:
    """Names of the initial-pose presets available under ``<root>/init/`` (sorted)."""
    init_dir = Path(root) / "init"
    if not init_dir.is_dir():
        return []
    return sorted(path.stem for path in init_dir.glob("*.json"))


def _init_file(root: Path, init: str | None) -> tuple[Path, str]:
    if init is None or init == "cameras.json":
        return root / "cameras.json", "cameras.json"
    name = init[:-5] if init.endswith(".json") else init
    path = root / "init" / f"{name}.json"
    if not path.is_file():
        available = ", ".join(list_init_presets(root)) or "none"
        raise SceneError(f"init preset {name!r} not found (available: {available})", path)
    return path, name


def _stack_K(
    records: Mapping[str, CameraRecord], ids: list[str], native_sizes: list[int], resolution: int
) -> np.ndarray:
    """``[V, 3, 3]`` intrinsics at ``resolution``, each scaled from its own image file's size."""
    return np.stack([_scale_K(records[cam_id].K, resolution / size) for cam_id, size in zip(ids, native_sizes)])


def _load_novel(root: Path, resolution: int) -> NovelViews | None:
    novel_dir = root / "novel"
    if not novel_dir.is_dir():
        return None
    cameras_path = novel_dir / "cameras_gt.json"
    if not cameras_path.is_file():
        raise SceneError("novel/ exists but has no cameras_gt.json", cameras_path)
    records = read_cameras_json(cameras_path)
    if not records:
        raise SceneError("no cameras", cameras_path)
    ids = list(records)
    views = [_load_view(_resolve_image(records[cam_id], cameras_path, novel_dir), root, resolution) for cam_id in ids]
    return NovelViews(
        ids=ids,
        images=np.stack([view.rgb for view in views]),
        masks=np.stack([view.mask for view in views]),
        w2c=np.stack([records[cam_id].w2c for cam_id in ids]),
        K=_stack_K(records, ids, [view.native_size for view in views], resolution),
    )


def load_scene(root: str | os.PathLike, resolution: int = 256, init: str | None = None) -> Scene:
    """Load a scene folder; images are resampled to ``resolution`` x ``resolution`` and K scaled to match.

    ``init`` picks the initial poses: None (or ``"cameras.json"``) uses ``cameras.json``; a preset name uses
    ``init/<preset>.json``, whose ids must match ``cameras.json``.  The view order is always ``cameras.json``'s.
    Raises SceneError (one line naming the file) on any problem.
    """
    root = Path(root)
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral) or resolution < 8:
        raise SceneError(f"resolution must be an integer >= 8, got {resolution!r}", root)
    resolution = int(resolution)
    _check_scene_root(root)
    cameras_path = root / "cameras.json"
    base_records = read_cameras_json(cameras_path)
    ids = list(base_records)
    if len(ids) < 2:
        raise SceneError(f"{len(ids)} view(s); at least 2 are needed", cameras_path)

    init_path, init_name = _init_file(root, init)
    records = base_records if init_path == cameras_path else read_cameras_json(init_path)
    _check_same_ids(ids, records, init_path, "cameras.json")

    image_paths = [_resolve_image(records[cam_id], init_path, root) for cam_id in ids]
    _check_unclaimed_images(root, image_paths, init_path)
    flags = np.array([records[cam_id].flag for cam_id in ids], dtype=np.int64)
    if int(flags.sum()) < 2:
        raise SceneError(f"{int(flags.sum())} inlier view(s) (flag 1); at least 2 are needed", init_path)

    views = [_load_view(path, root, resolution) for path in image_paths]
    native_sizes = [view.native_size for view in views]

    w2c_gt = K_gt = None
    gt_path = root / "cameras_gt.json"
    if gt_path.is_file():
        gt_records = read_cameras_json(gt_path)
        _check_same_ids(ids, gt_records, gt_path, "cameras.json")
        w2c_gt = np.stack([gt_records[cam_id].w2c for cam_id in ids])
        K_gt = _stack_K(gt_records, ids, native_sizes, resolution)

    mesh_path = root / "mesh.ply"
    return Scene(
        root=root,
        ids=ids,
        resolution=resolution,
        images=np.stack([view.rgb for view in views]),
        masks=np.stack([view.mask for view in views]),
        K=_stack_K(records, ids, native_sizes, resolution),
        w2c_init=np.stack([records[cam_id].w2c for cam_id in ids]),
        flags=flags,
        w2c_gt=w2c_gt,
        K_gt=K_gt,
        novel=_load_novel(root, resolution),
        mesh_path=mesh_path if mesh_path.is_file() else None,
        init_name=init_name,
        image_paths=image_paths,
        records=records,
    )


def _check_mesh(path: Path) -> tuple[int, int]:
    import trimesh  # only validation needs it; loading a scene does not

    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise SceneError(f"cannot read mesh ({err})", path) from err
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))))
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))))
    if len(vertices) == 0 or len(faces) == 0:
        raise SceneError("mesh has no faces", path)
    if not np.all(np.isfinite(vertices)):
        raise SceneError("mesh has NaN or infinite vertices", path)
    return len(vertices), len(faces)


def _image_side(path: Path) -> int:
    with Image.open(path) as image:
        return image.size[0]


def validate_scene(root: str | os.PathLike, resolution: int = 256) -> str:
    """Load everything in a scene (every init preset, GT, novel views, mesh) and summarise it in a few lines.

    Raises SceneError (one line naming the file) on the first problem found.
    """
    root = Path(root)
    scene = load_scene(root, resolution=resolution)
    presets = list_init_presets(root)
    for preset in presets:
        path = root / "init" / f"{preset}.json"
        records = read_cameras_json(path)
        _check_same_ids(scene.ids, records, path, "cameras.json")
        for cam_id in scene.ids:
            _resolve_image(records[cam_id], path, root)
        if sum(record.flag for record in records.values()) < 2:
            raise SceneError("fewer than 2 inlier views (flag 1)", path)

    centres = -np.einsum("vji,vj->vi", scene.w2c_init[:, :3, :3], scene.w2c_init[:, :3, 3])  # [V, 3] = -R^T t
    focals = scene.K[:, [0, 1], [0, 1]] * (256.0 / scene.resolution)
    native = sorted({_image_side(path) for path in scene.image_paths})
    optional = [
        f"cameras_gt.json: {'yes' if scene.w2c_gt is not None else 'no'}",
        f"init presets: {', '.join(presets) if presets else 'none'}",
        f"novel views: {len(scene.novel.ids) if scene.novel is not None else 'none'}",
    ]
    if scene.mesh_path is not None:
        n_vertices, n_faces = _check_mesh(scene.mesh_path)
        optional.append(f"mesh.ply: {n_vertices} vertices, {n_faces} faces")
    else:
        optional.append("mesh.ply: none")
    outliers = [cam_id for cam_id, flag in zip(scene.ids, scene.flags) if flag == 0]
    lines = [
        f"scene {root}",
        f"views: {scene.num_views} ({int(scene.flags.sum())} inliers"
        + (f"; flagged outliers: {', '.join(outliers)})" if outliers else ")"),
        f"images: {', '.join(f'{s}x{s}' for s in native)} -> resolution {scene.resolution}",
        f"focal (256 px units): {focals.min():.1f} .. {focals.max():.1f}",
        f"mean camera distance from origin: {float(np.linalg.norm(centres, axis=1).mean()):.3f}",
        *optional,
    ]
    return "\n".join(lines)
