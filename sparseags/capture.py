"""Import a user's capture (full-resolution photos, masks, poses from COLMAP / nerfstudio / SparseAGS or none)
into a SparseAGS scene folder that ``validate``, ``run`` and the debugger open as they are.

Steps (``python main.py import --images DIR [--masks DIR] [--poses PATH] --out SCENE``):

1. **Poses** (:func:`read_poses`) in the input's own frame, as OpenCV world-to-camera ``w2c [4, 4]`` and pixel
   intrinsics ``K [3, 3]`` of the full-resolution photo, pixel (row i, col j) centred at (j + 0.5, i + 0.5):
   * COLMAP text or binary models through pycolmap (pinhole part of the camera model; distortion is reported
     and ignored);
   * nerfstudio / instant-ngp ``transforms.json`` (OpenGL camera-to-world; per-frame or shared ``fl_x fl_y cx cy
     w h`` or ``camera_angle_x``; ``mask_path``);
   * SparseAGS ``cameras.json`` (PyTorch3D R, T). Its intrinsics are in pixels of the image file, unless the
     camera carries a crop (``crop_box`` = [x0, y0, side] as this module writes it, or the RayDiffusion
     ``crop_parameters`` = [-cc_x, -cc_y, crop_width, s] in NDC with ``image_size_wh``): then they are in pixels
     of the ``image_size_crop`` (default 256) square crop of the photo, and are mapped back to the photo;
   * no poses: pycolmap SIFT + exhaustive matching + incremental mapping on the photos (:func:`run_sfm`).
2. **Masks**: the alpha channel of the photo, else ``<masks>/<stem>.*`` (``--masks``, or a ``masks/`` folder
   beside the images folder), else a nerfstudio ``mask_path``; a pixel is object when its value is >= 128/255.
3. **Crop** (:func:`crop_box`, :func:`crop_view`): a square of integer side ``round(max(h, w) / margin)`` centred
   on the mask's bounding box (integer corner), white outside the photo, area-resized to ``resolution``.
   Intrinsics follow exactly: ``fx' = fx * R / side``, ``cx' = (cx - x0) * R / side`` (corner-origin pixels).
4. **Frame** (:func:`normalise_frame`), as SparseAGS's ``normalize_cameras_with_up_axis``: the least-squares
   intersection of the rays through the mask centroids goes to the origin; up is the smallest-singular-value
   direction of the centred camera x-axes, signed to agree with camera 0's up (-y in OpenCV), rotated to +y;
   then (as the bench's DTU scene) a rotation about +y puts the mean camera direction on +z; the mean camera
   distance is scaled to 1.85. ``X_scene = scale * rotation @ X_input + translation`` is written to
   ``normalisation.json``; :func:`to_input_frame` maps poses back (``export_cameras`` uses it to write
   ``*_input_frame`` exports next to the normal ones).

The scene is built in a temporary folder beside ``--out`` and renamed into place only when complete; every
problem with the input is a :class:`CaptureError` (one line; the CLI prints ``error: ...`` and exits 2).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from sparseags.errors import UserError
from sparseags.export import frame_c2w

__all__ = [
    "CaptureError",
    "PoseSet",
    "ImportReport",
    "detect_format",
    "read_poses",
    "read_colmap",
    "read_transforms",
    "read_sparseags",
    "crop_box",
    "crop_intrinsics",
    "crop_view",
    "normalise_frame",
    "apply_similarity",
    "to_input_frame",
    "uncrop_intrinsics",
    "export_input_frame",
    "load_normalisation",
    "run_sfm",
    "import_capture",
    "camera_agreement",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
MEAN_DISTANCE = 1.85
MIN_VIEWS = 3
_ROT_TOL = 1e-2  # inputs are re-orthonormalised within this (|R R^T - I|); beyond it they are rejected
_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV <-> OpenGL camera axes


class CaptureError(UserError):
    """A problem with the capture being imported, in one line naming the file."""

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        message = f"{path}: {problem}" if path is not None else problem
        super().__init__(" ".join(str(message).split()))


@dataclass
class PoseSet:
    """Poses read from a file, in the input's frame; keyed by view id (image stem), in the file's order."""

    format: str
    w2c: dict[str, np.ndarray]  # id -> [4, 4] OpenCV world-to-camera
    K: dict[str, np.ndarray]  # id -> [3, 3] pixels of the full-resolution photo (None size = check later)
    sizes: dict[str, tuple[int, int] | None]  # id -> (W, H) the intrinsics refer to, when the file says
    masks: dict[str, Path] = field(default_factory=dict)  # id -> mask file named by the pose file
    notes: list[str] = field(default_factory=list)
    source: Path | None = None


@dataclass
class ImportReport:
    out: Path
    format: str
    ids: list[str]
    skipped: list[str]  # images that were not imported (no pose / not registered)
    notes: list[str]
    normalisation: dict[str, Any]

    def summary(self) -> str:
        lines = [f"imported {len(self.ids)} views ({self.format} poses) into {self.out}: {', '.join(self.ids)}"]
        if self.skipped:
            lines.append(f"not imported ({len(self.skipped)}): {', '.join(self.skipped)}")
        lines += self.notes
        s = self.normalisation
        lines.append(
            f"frame: X_scene = {s['scale']:.6g} * R @ X_input + t (normalisation.json)"
            + ("; up axis uncertain (needs_checking)" if s.get("needs_checking") else "")
        )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------------------
def _rigid(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = R
    m[:3, 3] = t
    return m


def _intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _check_pose(view_id: str, w2c: np.ndarray, K: np.ndarray, path: Path | None) -> np.ndarray:
    """Finite, a rotation (re-orthonormalised within _ROT_TOL), positive focal lengths; returns the clean w2c."""
    w2c = np.asarray(w2c, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    if not (np.all(np.isfinite(w2c)) and np.all(np.isfinite(K))):
        raise CaptureError(f"view {view_id!r}: pose or intrinsics contain NaN or infinite values", path)
    R = w2c[:3, :3]
    det = float(np.linalg.det(R))
    err = float(np.linalg.norm(R @ R.T - np.eye(3)))
    if abs(det - 1.0) > _ROT_TOL or err > _ROT_TOL:
        raise CaptureError(
            f"view {view_id!r}: the rotation is degenerate (det {det:.4g}, |R R^T - I| {err:.3g}); "
            "a scaled, sheared or mirrored pose cannot be imported",
            path,
        )
    U, _, Vt = np.linalg.svd(R)
    clean = w2c.copy()
    clean[:3, :3] = U @ Vt
    clean[3] = [0.0, 0.0, 0.0, 1.0]
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CaptureError(f"view {view_id!r}: focal length must be positive, got {K[0, 0]:.4g}, {K[1, 1]:.4g}", path)
    return clean


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise CaptureError(f"cannot read file ({err})", path) from err
    except json.JSONDecodeError as err:
        raise CaptureError(f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}", path) from err


def _quiet_pycolmap():
    try:
        import pycolmap
    except ImportError as err:
        raise CaptureError(
            "pycolmap is not installed (pip install pycolmap); it reads COLMAP models and "
            "estimates poses when none are given"
        ) from err
    logging = getattr(pycolmap, "logging", None)
    if logging is not None:
        try:
            # COLMAP logs every step (and "Failed to create any sparse model") on stderr; we report in one line
            logging.minloglevel = 3
            logging.stderrthreshold = 3
        except Exception:  # pragma: no cover - older pycolmap
            pass
    return pycolmap


# --------------------------------------------------------------------------------------------------------------
# pose readers
# --------------------------------------------------------------------------------------------------------------
def _colmap_folder(path: Path) -> Path | None:
    """The model folder for a COLMAP path (a model folder, a file in it, or a project with sparse/0)."""
    if path.is_file() and path.name in (
        "cameras.txt",
        "images.txt",
        "points3D.txt",
        "cameras.bin",
        "images.bin",
        "points3D.bin",
        "rigs.bin",
        "frames.bin",
    ):
        path = path.parent
    if not path.is_dir():
        return None
    for candidate in (path, path / "sparse" / "0", path / "sparse", path / "0"):
        if ((candidate / "cameras.txt").is_file() and (candidate / "images.txt").is_file()) or (
            (candidate / "cameras.bin").is_file() and (candidate / "images.bin").is_file()
        ):
            return candidate
    return None


def detect_format(path: str | os.PathLike) -> str:
    """'colmap', 'nerfstudio' or 'sparseags' from a poses path (file or folder)."""
    path = Path(path)
    if not path.exists():
        raise CaptureError("poses file or folder not found", path)
    if _colmap_folder(path) is not None:
        return "colmap"
    if path.is_dir():
        for name, fmt in (("transforms.json", "nerfstudio"), ("cameras.json", "sparseags")):
            if (path / name).is_file():
                return fmt
        raise CaptureError("no COLMAP model (cameras/images .txt or .bin), transforms.json or cameras.json here", path)
    if path.suffix.lower() == ".json":
        data = _load_json(path)
        if isinstance(data, dict) and isinstance(data.get("frames"), list):
            return "nerfstudio"
        if isinstance(data, dict) and data and all(isinstance(v, dict) and "R" in v for v in data.values()):
            return "sparseags"
        raise CaptureError(
            "JSON is neither a nerfstudio/instant-ngp transforms file (a 'frames' list) nor a "
            "SparseAGS camera file (objects with 'R', 'T'); pass --format",
            path,
        )
    raise CaptureError("cannot tell the poses format from this path; pass --format colmap|nerfstudio|sparseags", path)


def _pose_file(path: Path, fmt: str) -> Path:
    if fmt == "colmap":
        folder = _colmap_folder(path)
        if folder is None:
            raise CaptureError("no COLMAP model here (cameras/images .txt or .bin)", path)
        return folder
    if path.is_dir():
        path = path / ("transforms.json" if fmt == "nerfstudio" else "cameras.json")
    if not path.is_file():
        raise CaptureError("file not found", path)
    return path


def read_colmap(path: str | os.PathLike) -> PoseSet:
    """A COLMAP model (text or binary) through pycolmap: registered images, pinhole part of their cameras."""
    folder = _pose_file(Path(path), "colmap")
    pycolmap = _quiet_pycolmap()
    try:
        rec = pycolmap.Reconstruction(str(folder))
    except Exception as err:  # pycolmap raises plain RuntimeError/ValueError on malformed files
        raise CaptureError(f"cannot read COLMAP model ({' '.join(str(err).split())[:200]})", folder) from err
    return _poses_from_reconstruction(rec, "colmap", folder)


_PINHOLE_PARAMS = {  # model -> indices of (fx, fy, cx, cy) in params; None = fy is fx
    "SIMPLE_PINHOLE": (0, None, 1, 2),
    "PINHOLE": (0, 1, 2, 3),
    "SIMPLE_RADIAL": (0, None, 1, 2),
    "RADIAL": (0, None, 1, 2),
    "OPENCV": (0, 1, 2, 3),
    "FULL_OPENCV": (0, 1, 2, 3),
    "OPENCV_FISHEYE": (0, 1, 2, 3),
    "SIMPLE_RADIAL_FISHEYE": (0, None, 1, 2),
    "RADIAL_FISHEYE": (0, None, 1, 2),
    "THIN_PRISM_FISHEYE": (0, 1, 2, 3),
}


def _poses_from_reconstruction(rec: Any, fmt: str, source: Path | None) -> PoseSet:
    poses = PoseSet(format=fmt, w2c={}, K={}, sizes={}, source=source)
    distorted = []
    for image_id in sorted(rec.images):
        image = rec.images[image_id]
        if hasattr(image, "has_pose") and not image.has_pose:
            continue
        view_id = Path(image.name).stem
        if view_id in poses.w2c:
            raise CaptureError(f"two images with the stem {view_id!r}", source)
        camera = rec.cameras[image.camera_id]
        model = str(camera.model).split(".")[-1]
        if model not in _PINHOLE_PARAMS:
            raise CaptureError(f"camera model {model} of image {image.name} is not supported", source)
        params = np.asarray(camera.params, dtype=np.float64)
        ifx, ify, icx, icy = _PINHOLE_PARAMS[model]
        fx = params[ifx]
        fy = fx if ify is None else params[ify]
        n_pinhole = 3 if ify is None else 4
        if len(params) > n_pinhole and np.any(np.abs(params[n_pinhole:]) > 1e-9):
            distorted.append(view_id)
        cam_from_world = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
        matrix = np.asarray(cam_from_world.matrix(), dtype=np.float64)  # [3, 4]
        K = _intrinsics(fx, fy, params[icx], params[icy])
        poses.w2c[view_id] = _check_pose(view_id, np.vstack([matrix, [0, 0, 0, 1]]), K, source)
        poses.K[view_id] = K
        poses.sizes[view_id] = (int(camera.width), int(camera.height))
    if distorted:
        poses.notes.append(
            f"note: lens distortion ignored for {len(distorted)} view(s) (pinhole part kept; "
            "undistort the photos first for exact intrinsics)"
        )
    return poses


def _frame_value(frame: dict, meta: dict, key: str) -> Any:
    return frame.get(key, meta.get(key))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def read_transforms(path: str | os.PathLike, image_sizes: dict[str, tuple[int, int]] | None = None) -> PoseSet:
    """nerfstudio / instant-ngp ``transforms.json``: OpenGL camera-to-world, per-frame or shared intrinsics.

    ``image_sizes`` (id -> (W, H)) fills in ``w``/``h`` and the default principal point when the file has none.
    """
    path = _pose_file(Path(path), "nerfstudio")
    meta = _load_json(path)
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise CaptureError("expected an object with a non-empty 'frames' list", path)
    poses = PoseSet(format="nerfstudio", w2c={}, K={}, sizes={}, source=path)
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise CaptureError(f"frame {index}: needs 'file_path' and 'transform_matrix'", path)
        view_id = str(frame.get("sparseags_id", Path(str(frame["file_path"])).stem))
        if view_id in poses.w2c:
            raise CaptureError(f"frame {index}: a second frame for image {view_id!r}", path)
        try:
            c2w = frame_c2w(frame)
        except ValueError as err:
            raise CaptureError(f"frame {index} ({view_id}): {err}", path) from None
        size = (image_sizes or {}).get(view_id)
        w = _number(_frame_value(frame, meta, "w"))
        h = _number(_frame_value(frame, meta, "h"))
        if w is None or h is None:
            if size is None:
                raise CaptureError(f"frame {index} ({view_id}): no 'w'/'h' and no image to take them from", path)
            w, h = float(size[0]), float(size[1])
        fx = _number(_frame_value(frame, meta, "fl_x"))
        fy = _number(_frame_value(frame, meta, "fl_y"))
        if fx is None:
            angle_x = _number(_frame_value(frame, meta, "camera_angle_x"))
            if angle_x is None:
                raise CaptureError(f"frame {index} ({view_id}): no 'fl_x' or 'camera_angle_x'", path)
            fx = 0.5 * w / math.tan(0.5 * angle_x)
        if fy is None:
            angle_y = _number(_frame_value(frame, meta, "camera_angle_y"))
            fy = 0.5 * h / math.tan(0.5 * angle_y) if angle_y is not None else fx
        cx = _number(_frame_value(frame, meta, "cx"))
        cy = _number(_frame_value(frame, meta, "cy"))
        cx = w / 2.0 if cx is None else cx
        cy = h / 2.0 if cy is None else cy
        K = _intrinsics(fx, fy, cx, cy)
        scale = np.linalg.norm(c2w[:3, :3], axis=0)
        if np.any(scale < 1e-12):
            raise CaptureError(f"frame {index} ({view_id}): transform_matrix has a zero axis", path)
        try:
            w2c = np.linalg.inv(c2w @ _FLIP)
        except np.linalg.LinAlgError as err:
            raise CaptureError(f"frame {index} ({view_id}): transform_matrix is singular", path) from err
        poses.w2c[view_id] = _check_pose(view_id, w2c, K, path)
        poses.K[view_id] = K
        poses.sizes[view_id] = (int(round(w)), int(round(h)))
        mask_path = frame.get("mask_path")
        if isinstance(mask_path, str) and mask_path:
            poses.masks[view_id] = path.parent / mask_path
    if any(_number(meta.get(k)) is not None for k in ("k1", "k2", "p1", "p2")) and any(
        abs(float(meta.get(k, 0.0) or 0.0)) > 1e-9 for k in ("k1", "k2", "k3", "p1", "p2")
    ):
        poses.notes.append("note: lens distortion in transforms.json ignored (undistort the photos first)")
    return poses


def _raydiffusion_box(params: Sequence[float], size_wh: Sequence[float]) -> tuple[float, float, float]:
    """RayDiffusion ``crop_parameters = [-cc_x, -cc_y, crop_width, s]`` (NDC of the padded square) -> x0, y0, side."""
    p = [float(v) for v in params]
    width, height = float(size_wh[0]), float(size_wh[1])
    length = max(width, height)
    s = p[3]
    centre_sq = (s + np.array([p[0], p[1]])) * length / (2.0 * s)  # cc = s - 2 s c / length, cc = -p[:2]
    centre = centre_sq - (length - np.array([width, height])) / 2.0
    side = p[2] * length / (2.0 * s)
    return float(centre[0] - side / 2.0), float(centre[1] - side / 2.0), float(side)


def read_sparseags(path: str | os.PathLike) -> PoseSet:
    """SparseAGS ``cameras.json`` (PyTorch3D ``R, T``); crops (``crop_box`` or ``crop_parameters``) undone."""
    from sparseags.scene import SceneError, read_cameras_json

    path = _pose_file(Path(path), "sparseags")
    data = _load_json(path)
    if isinstance(data, dict) and isinstance(data.get("frames"), list):
        raise CaptureError(
            "this is a nerfstudio transforms file (a 'frames' list), not a SparseAGS camera file; "
            "use --format nerfstudio",
            path,
        )
    try:
        records = read_cameras_json(path)
    except SceneError as err:
        raise CaptureError(str(err)) from err
    poses = PoseSet(format="sparseags", w2c={}, K={}, sizes={}, source=path)
    for view_id, record in records.items():
        K = np.asarray(record.K, dtype=np.float64).copy()
        size = record.extra.get("image_size_wh")
        box = None
        if "crop_box" in record.extra:
            box = [float(v) for v in record.extra["crop_box"]]
        elif record.extra.get("crop_parameters") is not None:
            if size is None:
                raise CaptureError(f"camera {view_id!r}: crop_parameters without image_size_wh", path)
            box = list(_raydiffusion_box(record.extra["crop_parameters"], size))
        if box is not None:
            crop_res = record.extra.get("image_size_crop", 256)
            crop_res = float(crop_res[0] if isinstance(crop_res, (list, tuple)) else crop_res)
            if len(box) != 3 or not all(map(math.isfinite, box)) or box[2] <= 0 or crop_res <= 0:
                raise CaptureError(f"camera {view_id!r}: malformed crop ({box})", path)
            scale = box[2] / crop_res  # crop pixels -> photo pixels
            K[0, 0] *= scale
            K[1, 1] *= scale
            K[0, 2] = K[0, 2] * scale + box[0]
            K[1, 2] = K[1, 2] * scale + box[1]
            poses.sizes[view_id] = (int(size[0]), int(size[1])) if size is not None else None
        else:
            poses.sizes[view_id] = None  # intrinsics are in pixels of the image file, whatever its size
        poses.w2c[view_id] = _check_pose(view_id, record.w2c, K, path)
        poses.K[view_id] = K
    return poses


def read_poses(
    path: str | os.PathLike, fmt: str | None = None, image_sizes: dict[str, tuple[int, int]] | None = None
) -> PoseSet:
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt == "colmap":
        return read_colmap(path)
    if fmt == "nerfstudio":
        return read_transforms(path, image_sizes)
    if fmt == "sparseags":
        return read_sparseags(path)
    raise CaptureError(f"unknown poses format {fmt!r} (colmap, nerfstudio or sparseags)")


# --------------------------------------------------------------------------------------------------------------
# images and masks
# --------------------------------------------------------------------------------------------------------------
def list_images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise CaptureError("images folder not found", folder)
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            if path.stem in images:
                raise CaptureError(
                    f"two images with the stem {path.stem!r} ({images[path.stem].name}, {path.name})", folder
                )
            images[path.stem] = path
    if not images:
        raise CaptureError(f"no images ({', '.join(IMAGE_SUFFIXES)})", folder)
    return images


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise CaptureError("file not found", path)
    try:
        with Image.open(path) as handle:
            handle.load()
            return handle.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CaptureError(f"cannot decode image ({' '.join(str(err).split())})", path) from err


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as handle:
            return handle.size
    except (OSError, SyntaxError, ValueError) as err:
        raise CaptureError(f"cannot read image ({' '.join(str(err).split())})", path) from err


def _rgb_and_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 RGB [H, W, 3] and the alpha as float [H, W] in [0, 1] (None without a non-constant alpha)."""
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"))
        alpha = rgba[..., 3].astype(np.float32) / 255.0
        if alpha.min() < alpha.max():
            return np.ascontiguousarray(rgba[..., :3]), alpha
        return np.ascontiguousarray(rgba[..., :3]), None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image).astype(np.float64)
        array = (array / max(array.max(), 1.0) * 255.0).astype(np.uint8)
        return np.repeat(array[..., None], 3, axis=-1), None
    return np.asarray(image.convert("RGB")), None


def _mask_from_file(path: Path) -> np.ndarray:
    from sparseags.scene import SceneError, _read_mask_file

    try:
        return _read_mask_file(path)
    except SceneError as err:
        raise CaptureError(str(err)) from err


def _find_mask(view_id: str, folder: Path | None) -> Path | None:
    if folder is None:
        return None
    for suffix in IMAGE_SUFFIXES:
        for name in (f"{view_id}{suffix}", f"{view_id}{suffix.upper()}"):
            if (folder / name).is_file():
                return folder / name
    return None


# --------------------------------------------------------------------------------------------------------------
# cropping
# --------------------------------------------------------------------------------------------------------------
def crop_box(mask: np.ndarray, margin: float = 0.8) -> tuple[int, int, int]:
    """Integer ``(x0, y0, side)``: a square of side ``round(max(h, w) / margin)`` centred on the bbox of mask >= 0.5.

    The bbox of pixels ``[c0, c1] x [r0, r1]`` spans the continuous box ``[c0, c1 + 1] x [r0, r1 + 1]``; the corner
    is rounded half to even (this reproduces the bench's DTU crops exactly).
    """
    rows = np.flatnonzero(np.any(mask >= 0.5, axis=1))
    cols = np.flatnonzero(np.any(mask >= 0.5, axis=0))
    if len(rows) == 0:
        raise ValueError("empty mask")
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(1, int(round(max(r1 - r0, c1 - c0) / margin)))
    x0 = int(round((c0 + c1) / 2.0 - side / 2.0))  # Python's round (half to even), as the bench's DTU crops
    y0 = int(round((r0 + r1) / 2.0 - side / 2.0))
    return x0, y0, side


def crop_intrinsics(K: np.ndarray, box: Sequence[float], resolution: int) -> np.ndarray:
    """Photo intrinsics -> intrinsics of the ``resolution``-square crop of ``box = (x0, y0, side)`` (exact)."""
    x0, y0, side = (float(v) for v in box)
    s = resolution / side
    out = np.asarray(K, dtype=np.float64).copy()
    out[0, 0] *= s
    out[1, 1] *= s
    out[0, 2] = (out[0, 2] - x0) * s
    out[1, 2] = (out[1, 2] - y0) * s
    return out


def _window(array: np.ndarray, box: tuple[int, int, int], fill: float) -> np.ndarray:
    """The ``side x side`` window of ``array`` at (x0, y0), ``fill`` outside the array."""
    x0, y0, side = box
    h, w = array.shape[:2]
    out = np.full((side, side) + array.shape[2:], fill, dtype=array.dtype)
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if xa < xb and ya < yb:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = array[ya:yb, xa:xb]
    return out


def _area_resize(array: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if array.shape[0] == size:
        return array
    # INTER_AREA averages exact pixel areas (output pixel k covers [k, k+1] * side / size): the corner-origin
    # mapping that crop_intrinsics assumes. Enlarging falls back to bilinear with the same centre convention.
    return cv2.resize(array, (size, size), interpolation=cv2.INTER_AREA if array.shape[0] > size else cv2.INTER_LINEAR)


def crop_view(rgb: np.ndarray, mask: np.ndarray, box: tuple[int, int, int], resolution: int) -> np.ndarray:
    """RGBA uint8 ``[R, R, 4]``: the crop of the photo (white outside it), area-resized; alpha = resized mask.

    RGB is averaged premultiplied by the mask and divided back (no white fringe on the object); background
    pixels are white.
    """
    m = _window(mask.astype(np.float32), box, 0.0)
    colour = _window(rgb.astype(np.float32) / 255.0, box, 1.0)
    m_small = np.clip(_area_resize(m, resolution), 0.0, 1.0)
    pre = _area_resize(colour * m[..., None], resolution)
    covered = m_small >= 0.5 / 255.0  # alpha stored as >= 1: anything less is background, white
    rgb_small = np.where(covered[..., None], pre / np.maximum(m_small, 1e-6)[..., None], 1.0)
    rgba = np.concatenate([np.clip(rgb_small, 0, 1), m_small[..., None]], axis=-1)
    return np.round(rgba * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------
# frame normalisation
# --------------------------------------------------------------------------------------------------------------
def apply_similarity(w2c: np.ndarray, scale: float, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Cameras ``[..., 4, 4]`` re-expressed in the frame ``X' = scale * rotation @ X + translation``."""
    w2c = np.asarray(w2c, dtype=np.float64)
    R = w2c[..., :3, :3] @ rotation.T
    t = scale * w2c[..., :3, 3] - (R @ translation[:, None])[..., 0]
    out = np.array(w2c, copy=True)
    out[..., :3, :3] = R
    out[..., :3, 3] = t
    return out


def _inverse_similarity(sim: dict[str, Any]) -> tuple[float, np.ndarray, np.ndarray]:
    s, R, t = float(sim["scale"]), np.asarray(sim["rotation"], float), np.asarray(sim["translation"], float)
    return 1.0 / s, R.T, -(R.T @ t) / s


def to_input_frame(w2c: Any, normalisation: dict[str, Any]) -> np.ndarray:
    """Scene-frame cameras ``[..., 4, 4]`` (OpenCV w2c) back in the user's original frame (normalisation.json)."""
    w2c = w2c.detach().cpu().numpy() if hasattr(w2c, "detach") else np.asarray(w2c)
    return apply_similarity(w2c, *_inverse_similarity(normalisation))


def load_normalisation(scene_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The similarity an import recorded in ``<scene>/normalisation.json``, or None for other scenes."""
    path = Path(scene_dir) / "normalisation.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if all(k in data for k in ("scale", "rotation", "translation")) else None


def uncrop_intrinsics(K: np.ndarray, box: Sequence[float], resolution: int) -> np.ndarray:
    """Inverse of :func:`crop_intrinsics`: intrinsics of a ``resolution``-square crop -> the full photo's."""
    x0, y0, side = (float(v) for v in box)
    s = side / resolution
    out = np.asarray(K, dtype=np.float64).copy()
    out[..., 0, 0] *= s
    out[..., 1, 1] *= s
    out[..., 0, 2] = out[..., 0, 2] * s + x0
    out[..., 1, 2] = out[..., 1, 2] * s + y0
    return out


def export_input_frame(
    scene_dir: str | os.PathLike, out_dir: str | os.PathLike, ids: Sequence[str], w2c: Any, K: Any
) -> list[Path]:
    """Write cameras of an imported scene back in the user's frame, for the full-resolution original photos.

    ``w2c [V, 4, 4]`` scene-frame OpenCV cameras and ``K [V, 3, 3]`` in pixels of the scene's image files (the
    crops, at the resolution crops.json records). Writes ``<out_dir>/colmap/`` (text) and
    ``<out_dir>/transforms.json`` (file paths relative to it, pointing at ``<scene>/originals``). Returns the
    written paths; ``[]`` when the scene has no normalisation.json / crops.json (not made by ``import``).
    """
    from sparseags.export import write_colmap_text, write_nerfstudio_transforms

    scene_dir, out_dir = Path(scene_dir), Path(out_dir)
    norm = load_normalisation(scene_dir)
    crops_path = scene_dir / "crops.json"
    if norm is None or not crops_path.is_file():
        return []
    crops = json.loads(crops_path.read_text(encoding="utf-8"))["views"]
    ids = [str(i) for i in ids]
    w2c_in = to_input_frame(np.asarray(w2c, dtype=np.float64), norm)
    K = K.detach().cpu().numpy() if hasattr(K, "detach") else np.asarray(K, dtype=np.float64)
    K_photo = np.stack(
        [
            uncrop_intrinsics(k, (crops[i]["x0"], crops[i]["y0"], crops[i]["side"]), crops[i]["resolution"])
            for i, k in zip(ids, K)
        ]
    )
    sizes = [tuple(crops[i]["image_size_wh"]) for i in ids]
    names = [Path(crops[i]["original"]).name for i in ids]
    out_dir.mkdir(parents=True, exist_ok=True)
    originals = [os.path.relpath(scene_dir / crops[i]["original"], out_dir) for i in ids]
    write_colmap_text(out_dir / "colmap", ids, w2c_in, K_photo, sizes[0][0], sizes[0][1], names)
    write_nerfstudio_transforms(out_dir / "transforms.json", ids, w2c_in, K_photo, sizes[0][0], sizes[0][1], originals)
    if len(set(sizes)) > 1:  # the writers take one size: put each photo's own size in
        from sparseags.atomic import atomic_write_text

        cam_path = out_dir / "colmap" / "cameras.txt"
        lines = cam_path.read_text().splitlines()
        index = 0
        for n, line in enumerate(lines):
            if line and not line.startswith("#"):
                fields = line.split()
                fields[2], fields[3] = str(sizes[index][0]), str(sizes[index][1])
                lines[n] = " ".join(fields)
                index += 1
        atomic_write_text(cam_path, "\n".join(lines) + "\n")
        data = json.loads((out_dir / "transforms.json").read_text())
        for frame, (w, h) in zip(data["frames"], sizes):
            frame["w"], frame["h"] = int(w), int(h)
        atomic_write_text(out_dir / "transforms.json", json.dumps(data, indent=2) + "\n")
    return [out_dir / "colmap", out_dir / "transforms.json"]


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector ``a`` to unit vector ``b``."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1.0 + 1e-12:  # opposite: 180 degrees about any axis perpendicular to a
        axis = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def normalise_frame(
    w2c: np.ndarray,
    K: np.ndarray,
    centre_px: np.ndarray,
    ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The similarity ``X_scene = scale * rotation @ X_input + translation`` SparseAGS's normalisation defines.

    ``w2c [V, 4, 4]``, ``K [V, 3, 3]`` and ``centre_px [V, 2]`` (the mask centroid in the same pixels as K).
    Raises CaptureError for degenerate geometry (parallel rays, coincident cameras, object behind a camera).
    """
    ids = list(ids) if ids is not None else [str(i) for i in range(len(w2c))]
    R, t = w2c[:, :3, :3], w2c[:, :3, 3]
    centres = -np.einsum("vji,vj->vi", R, t)  # C = -R^T t
    spread = float(np.linalg.norm(centres - centres.mean(axis=0), axis=1).max())
    if spread <= 1e-9 * max(1.0, float(np.abs(centres).max())):
        raise CaptureError("all cameras sit at one point (degenerate poses)")
    pix = np.concatenate([centre_px, np.ones((len(w2c), 1))], axis=1)
    dirs_cam = np.linalg.solve(K, pix[..., None])[..., 0]
    dirs = np.einsum("vji,vj->vi", R, dirs_cam)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for c, d in zip(centres, dirs):
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ c
    eig = np.linalg.eigvalsh(A)
    if eig[0] < 1e-6 * max(eig[-1], 1e-300):
        raise CaptureError(
            "the rays through the mask centres are (nearly) parallel: the cameras do not look at "
            "a common object, or all sit at one point (degenerate poses)"
        )
    centre = np.linalg.solve(A, b)
    depth = np.einsum("vij,j->vi", R, centre)[:, 2] + t[:, 2]  # z of the centre in each camera
    behind = [i for i, z in zip(ids, depth) if z <= 0]
    if behind:
        raise CaptureError(
            f"the object centre is behind camera(s) {', '.join(behind)}: the poses are not "
            "world-to-camera in the stated convention, or are inconsistent with each other"
        )
    dist = np.linalg.norm(centres - centre, axis=1)
    if dist.mean() < 1e-9:
        raise CaptureError("all cameras sit at the object centre (degenerate poses)")
    scale = MEAN_DISTANCE / float(dist.mean())

    x_axes = R[:, 0, :]  # OpenCV camera x-axes in world coordinates (rows of R)
    _, S, Vt = np.linalg.svd(x_axes - x_axes.mean(axis=0))
    up = Vt[-1]
    needs_checking = bool(S[1] > 0 and S[2] > 0 and S[0] / S[1] > S[1] / S[2])
    cam_up = -R[:, 1, :]  # OpenCV y points down
    if up @ cam_up[0] < 0:
        up = -up
    needs_checking = needs_checking or bool(np.any(cam_up @ up < 0))
    rot_up = _rotation_between(up, np.array([0.0, 1.0, 0.0]))
    # Azimuth: the mean viewing position (horizontal part) on +z, as the bench's DTU frame.
    horizontal = rot_up @ (centres - centre).mean(axis=0)
    azimuth = math.atan2(horizontal[0], horizontal[2]) if np.hypot(horizontal[0], horizontal[2]) > 1e-9 else 0.0
    ca, sa = math.cos(-azimuth), math.sin(-azimuth)
    rot_az = np.array([[ca, 0.0, sa], [0.0, 1.0, 0.0], [-sa, 0.0, ca]])
    rotation = rot_az @ rot_up
    translation = -scale * rotation @ centre
    return {
        "scale": scale,
        "rotation": rotation.tolist(),
        "translation": translation.tolist(),
        "object_centre_input": centre.tolist(),
        "up_input": up.tolist(),
        "needs_checking": needs_checking,
        "up_singular_values": S.tolist(),
    }


# --------------------------------------------------------------------------------------------------------------
# no poses: structure from motion
# --------------------------------------------------------------------------------------------------------------
def run_sfm(images: dict[str, Path], workdir: Path, log: Callable[[str], None] = print) -> PoseSet:
    """pycolmap SIFT + exhaustive matching + incremental mapping; the largest model's registered images."""
    pycolmap = _quiet_pycolmap()
    image_dir = workdir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for path in images.values():
        _link_or_copy(path, image_dir / path.name)
    database = workdir / "database.db"
    threads = int(os.environ.get("OMP_NUM_THREADS", "-1") or -1)
    sizes = {_image_size(p) for p in images.values()}
    mode = pycolmap.CameraMode.SINGLE if len(sizes) == 1 else pycolmap.CameraMode.PER_IMAGE
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "SIMPLE_PINHOLE"
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = threads
    log(f"sfm: extracting SIFT features from {len(images)} photos ...")
    try:
        pycolmap.extract_features(
            database,
            image_dir,
            camera_mode=mode,
            reader_options=reader,
            extraction_options=extraction,
            device=pycolmap.Device.cpu,
        )
        matching = pycolmap.FeatureMatchingOptions()
        matching.num_threads = threads
        log("sfm: matching all pairs ...")
        pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
        options = pycolmap.IncrementalPipelineOptions()
        options.num_threads = threads
        options.min_model_size = 3
        options.random_seed = 0
        log("sfm: incremental mapping ...")
        models = pycolmap.incremental_mapping(database, image_dir, workdir / "sparse", options=options)
    except Exception as err:  # pragma: no cover - pycolmap internals
        raise CaptureError(
            f"structure from motion failed ({' '.join(str(err).split())[:200]}); estimate poses "
            "with an external tool (COLMAP GUI, DUSt3R, RayDiffusion) and pass --poses"
        ) from err
    if not models:
        return PoseSet(format="sfm", w2c={}, K={}, sizes={}, source=None)
    best = max(models.values(), key=lambda rec: rec.num_reg_images())
    poses = _poses_from_reconstruction(best, "sfm", None)
    poses.notes.append(
        f"sfm: registered {len(poses.w2c)} of {len(images)} photos "
        f"({best.num_points3D()} points, mean reprojection error "
        f"{best.compute_mean_reprojection_error():.2f} px)"
    )
    return poses


# --------------------------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------------------------
def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@dataclass
class _Prepared:
    view_id: str
    image_path: Path
    mask_path: Path | None  # None: the photo's alpha channel
    rgb: np.ndarray
    mask: np.ndarray
    size: tuple[int, int]


def _prepare_view(view_id: str, image_path: Path, mask_path: Path | None) -> _Prepared:
    rgb, alpha = _rgb_and_alpha(_open(image_path))
    h, w = rgb.shape[:2]
    if alpha is not None and mask_path is None:
        mask = (alpha >= 0.5).astype(np.float32)
        source = image_path
    else:
        if mask_path is None:
            raise CaptureError(
                f"image {view_id!r} has no alpha channel and no mask (pass --masks DIR with "
                f"{view_id}.png, or use RGBA photos)",
                image_path,
            )
        mask = _mask_from_file(mask_path)
        source = mask_path
        if mask.shape != (h, w):
            raise CaptureError(f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is {w}x{h}", mask_path)
    if not np.any(mask >= 0.5):
        raise CaptureError("empty mask (no object pixel)", source)
    return _Prepared(view_id, image_path, mask_path, rgb, mask, (w, h))


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CaptureError("output already exists and is not an empty folder (choose a new --out)", out)


def import_capture(
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    masks: str | os.PathLike | None = None,
    poses: str | os.PathLike | None = None,
    fmt: str | None = None,
    resolution: int = 256,
    margin: float = 0.8,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import a capture into a new scene folder ``out`` (see the module docstring). Returns a report."""
    images_dir, out = Path(images), Path(out)
    if isinstance(resolution, bool) or int(resolution) != resolution or resolution < 8:
        raise CaptureError(f"--resolution must be an integer >= 8, got {resolution!r}")
    if not (0.0 < float(margin) <= 1.0):
        raise CaptureError(f"--margin must be in (0, 1], got {margin!r}")
    _check_out(out)
    all_images = list_images(images_dir)
    masks_dir = Path(masks) if masks is not None else None
    if masks_dir is not None and not masks_dir.is_dir():
        raise CaptureError("masks folder not found", masks_dir)
    if masks_dir is None and (images_dir.parent / "masks").is_dir() and images_dir.parent != images_dir:
        masks_dir = images_dir.parent / "masks"
        log(f"masks: using {masks_dir}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    try:
        if poses is None:
            pose_set = run_sfm(all_images, tmp / "_sfm", log=log)
            if not pose_set.w2c:
                raise CaptureError(
                    f"structure from motion registered none of the {len(all_images)} photos; "
                    "estimate poses with an external tool (COLMAP GUI, DUSt3R, RayDiffusion) and "
                    "pass --poses",
                    images_dir,
                )
            source_desc = "sfm (pycolmap)"
        else:
            sizes = {}
            if (fmt or detect_format(Path(poses))) == "nerfstudio":
                sizes = {vid: _image_size(p) for vid, p in all_images.items()}
            pose_set = read_poses(poses, fmt, sizes)
            source_desc = pose_set.format
        missing = [vid for vid in pose_set.w2c if vid not in all_images]
        if missing:
            raise CaptureError(
                f"pose id(s) {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} match no "
                f"image in {images_dir} (images are matched by file stem)",
                pose_set.source,
            )
        ids = list(pose_set.w2c)
        skipped = [vid for vid in all_images if vid not in pose_set.w2c]
        if len(ids) < MIN_VIEWS:
            what = "registered" if poses is None else "with poses"
            raise CaptureError(
                f"{len(ids)} view(s) {what}; at least {MIN_VIEWS} are needed", pose_set.source or images_dir
            )

        prepared: list[_Prepared] = []
        for index, vid in enumerate(ids):
            mask_path = _find_mask(vid, masks_dir) or pose_set.masks.get(vid)
            if mask_path is not None and not mask_path.is_file():
                raise CaptureError(f"mask of {vid!r} not found", mask_path)
            view = _prepare_view(vid, all_images[vid], mask_path)
            expected = pose_set.sizes.get(vid)
            if expected is not None and tuple(expected) != view.size:
                raise CaptureError(
                    f"image is {view.size[0]}x{view.size[1]} but its camera says {expected[0]}x{expected[1]}",
                    view.image_path,
                )
            prepared.append(view)
            if progress is not None:
                progress(index + 1, 2 * len(ids))

        w2c_in = np.stack([pose_set.w2c[v] for v in ids])
        K_in = np.stack([pose_set.K[v] for v in ids])
        centroids = []
        for view in prepared:
            rows, cols = np.nonzero(view.mask >= 0.5)
            centroids.append([cols.mean() + 0.5, rows.mean() + 0.5])
        sim = normalise_frame(w2c_in, K_in, np.array(centroids), ids)
        rotation, translation = np.array(sim["rotation"]), np.array(sim["translation"])
        w2c_scene = apply_similarity(w2c_in, sim["scale"], rotation, translation)

        build = tmp / "scene"
        for sub in ("images", "originals/images", "originals/masks"):
            (build / sub).mkdir(parents=True, exist_ok=True)
        from sparseags.scene import CameraRecord, write_cameras_json

        records, crops = [], {}
        for index, (view, pose, K) in enumerate(zip(prepared, w2c_scene, K_in)):
            box = crop_box(view.mask, margin)
            rgba = crop_view(view.rgb, view.mask, box, resolution)
            Image.fromarray(rgba, mode="RGBA").save(build / "images" / f"{view.view_id}.png")
            original = f"originals/images/{view.image_path.name}"
            _link_or_copy(view.image_path, build / original)
            mask_rel = None
            if view.mask_path is not None:
                mask_rel = f"originals/masks/{view.view_id}{view.mask_path.suffix}"
                _link_or_copy(view.mask_path, build / mask_rel)
            crops[view.view_id] = {
                "x0": box[0],
                "y0": box[1],
                "side": box[2],
                "image_size_wh": list(view.size),
                "original": original,
                "mask": mask_rel or "alpha channel of the original",
                "resolution": int(resolution),
                "margin": float(margin),
                "K_original": K.tolist(),
            }
            records.append(
                CameraRecord(
                    id=view.view_id,
                    w2c=pose,
                    K=crop_intrinsics(K, box, resolution),
                    flag=1,
                    filepath=f"images/{view.view_id}.png",
                    extra={
                        "needs_checking": sim["needs_checking"],
                        "image_size_wh": list(view.size),
                        "crop_box": list(box),
                        "image_size_crop": int(resolution),
                        "original": original,
                    },
                )
            )
            if progress is not None:
                progress(len(ids) + index + 1, 2 * len(ids))
        write_cameras_json(build / "cameras.json", records)
        (build / "crops.json").write_text(
            json.dumps(
                {
                    "convention": "square crop [x0, x0 + side] x [y0, y0 + side] of the original in corner-origin pixels "
                    "(pixel (i, j) centred at (j + 0.5, i + 0.5)), white outside the photo, area-resized "
                    "to resolution; K_crop = K_original with fx, fy scaled by resolution/side and "
                    "(cx - x0, cy - y0) scaled likewise",
                    "views": crops,
                },
                indent=1,
            )
            + "\n"
        )
        normalisation = {
            "note": "X_scene = scale * rotation @ X_input + translation (X_input: the frame of the imported poses)",
            **sim,
            "input_format": source_desc,
            "input_poses": str(Path(poses).resolve()) if poses is not None else None,
            "mean_camera_distance": MEAN_DISTANCE,
        }
        (build / "normalisation.json").write_text(json.dumps(normalisation, indent=1) + "\n")
        (build / "import.json").write_text(
            json.dumps(
                {
                    "images": str(images_dir.resolve()),
                    "masks": str(masks_dir.resolve()) if masks_dir else None,
                    "poses": normalisation["input_poses"],
                    "format": source_desc,
                    "resolution": int(resolution),
                    "margin": float(margin),
                    "imported": ids,
                    "not_imported": skipped,
                    "notes": pose_set.notes,
                },
                indent=1,
            )
            + "\n"
        )

        # everything is written: move it into place (an empty existing --out is replaced)
        if out.exists():
            out.rmdir()
        os.replace(build, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    notes = list(pose_set.notes)
    if skipped:
        why = "not registered by structure from motion" if poses is None else "no pose in the poses file"
        notes.append(f"({why})")
    return ImportReport(out=out, format=source_desc, ids=ids, skipped=skipped, notes=notes, normalisation=normalisation)


# --------------------------------------------------------------------------------------------------------------
# comparing two camera sets (benchmarks)
# --------------------------------------------------------------------------------------------------------------
def camera_agreement(pred_json: str | os.PathLike, ref_json: str | os.PathLike) -> dict[str, Any]:
    """Agreement of two SparseAGS camera files (matched by id) after a similarity alignment of the centres.

    Returns the per-view rotation error (deg) after applying the alignment's rotation, the centre error as a
    fraction of the mean reference camera distance from the reference centroid, the alignment scale, and the
    largest relative focal-length / principal-point difference (pixels of the crops).
    """
    from sparseags.cameras import umeyama
    from sparseags.scene import read_cameras_json

    pred, ref = read_cameras_json(pred_json), read_cameras_json(ref_json)
    ids = [i for i in ref if i in pred]
    if len(ids) < 3:
        raise CaptureError(f"only {len(ids)} common view ids", pred_json)
    wp = np.stack([pred[i].w2c for i in ids])
    wr = np.stack([ref[i].w2c for i in ids])
    cp = -np.einsum("vji,vj->vi", wp[:, :3, :3], wp[:, :3, 3])
    cr = -np.einsum("vji,vj->vi", wr[:, :3, :3], wr[:, :3, 3])
    s, R, t = (x.numpy() for x in umeyama(cp, cr))
    aligned = float(s) * cp @ R.T + t
    spread = float(np.linalg.norm(cr - cr.mean(0), axis=1).mean())
    rot_err = []
    for a, b in zip(wp, wr):
        Ra = a[:3, :3] @ R.T  # pred camera in the reference frame
        cos = (np.trace(Ra.T @ b[:3, :3]) - 1.0) / 2.0
        rot_err.append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
    centre_err = np.linalg.norm(aligned - cr, axis=1) / spread
    fp = np.array([pred[i].K[0, 0] for i in ids])
    fr = np.array([ref[i].K[0, 0] for i in ids])
    pp = np.array([pred[i].K[:2, 2] for i in ids])
    pr = np.array([ref[i].K[:2, 2] for i in ids])
    return {
        "views": len(ids),
        "rot_err_deg_max": max(rot_err),
        "rot_err_deg_mean": float(np.mean(rot_err)),
        "centre_err_max_rel": float(centre_err.max()),
        "centre_err_mean_rel": float(centre_err.mean()),
        "scale": float(s),
        "focal_rel_diff_max": float(np.max(np.abs(fp / fr - 1.0))),
        "principal_point_diff_max_px": float(np.max(np.abs(pp - pr))),
    }
