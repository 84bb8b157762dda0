"""Camera exports (SparseAGS JSON, COLMAP text, nerfstudio ``transforms.json``) and turntable videos.

Conventions (docs/ARCHITECTURE.md): inputs are OpenCV world-to-camera ``w2c [V, 4, 4]`` and pixel
intrinsics ``K [V, 3, 3]`` whose pixel (row i, col j) is centred at (j + 0.5, i + 0.5).  Every function
accepts torch tensors or numpy arrays and writes its files atomically (a temp file beside the target, then
``os.replace``), so a reader never sees a half-written file.

Pixel conventions of the formats, checked against their documentation:

* COLMAP: "the upper left image corner has coordinate (0, 0) and the center of the upper left most pixel
  has coordinate (0.5, 0.5)" - the same as ours, so ``cx, cy`` are written unchanged.
* nerfstudio generates the ray of pixel (i, j) through (j + 0.5, i + 0.5) (``pixel_offset=0.5``) and its
  ``colmap_to_json`` copies COLMAP's ``cx, cy`` verbatim - again the same as ours.

The world frame is written as it is (our scenes: +y up); nerfstudio re-orients worlds itself when it loads
(``orientation_method``), so no ``applied_transform`` is written (it is optional in the format).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from sparseags import cameras
from sparseags.atomic import atomic_output, atomic_write_bytes
from sparseags.errors import UserError
from sparseags.scene import CameraRecord, cameras_to_json_text

__all__ = [
    "ExportError",
    "CameraSet",
    "atomic_output",
    "atomic_write_bytes",
    "write_sparseags_cameras",
    "write_colmap_text",
    "read_colmap_text",
    "write_nerfstudio_transforms",
    "read_nerfstudio_transforms",
    "turntable_cameras",
    "turntable_fovy_deg",
    "iter_turntable",
    "drive_turntable",
    "write_turntable",
]

RenderFn = Callable[[Tensor, Tensor, int, int], np.ndarray]
ProgressFn = Callable[[int, int], None]


class ExportError(UserError, ValueError):
    """Bad input to an exporter, or an unreadable exported file, described in one line naming the file."""

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        message = f"{path}: {problem}" if path is not None else problem
        super().__init__(" ".join(message.split()))


@dataclass
class CameraSet:
    """Cameras read back from an exported file, in the engine's conventions (float64 numpy)."""

    ids: list[str]
    w2c: np.ndarray  # [V, 4, 4] OpenCV world-to-camera
    K: np.ndarray  # [V, 3, 3] pixels, pixel centres at (j + 0.5, i + 0.5)
    widths: np.ndarray  # [V] int
    heights: np.ndarray  # [V] int
    names: list[str]  # image file names / paths as written in the file


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------
def _as_numpy(value: Any, name: str, shape_tail: tuple[int, ...], path: Path) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
    try:
        array = array.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ExportError(f"{name} is not numeric", path) from err
    if array.ndim != 1 + len(shape_tail) or array.shape[1:] != shape_tail:
        raise ExportError(
            f"{name} has shape {list(array.shape)}, expected [V, {', '.join(map(str, shape_tail))}]", path
        )
    if not np.all(np.isfinite(array)):
        raise ExportError(f"{name} contains NaN or infinite values", path)
    return array


def _check_cameras(path: Path, ids: Sequence[str], w2c: Any, K: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids = [str(i) for i in ids]
    w2c_np = _as_numpy(w2c, "w2c", (4, 4), path)
    K_np = _as_numpy(K, "K", (3, 3), path)
    if not (len(ids) == len(w2c_np) == len(K_np)):
        raise ExportError(f"{len(ids)} ids, {len(w2c_np)} w2c and {len(K_np)} K: counts differ", path)
    if len(set(ids)) != len(ids):
        raise ExportError("camera ids are not unique", path)
    return ids, w2c_np, K_np


def _check_names(path: Path, names: Sequence[str], count: int, what: str) -> list[str]:
    names = [str(n) for n in names]
    if len(names) != count:
        raise ExportError(f"{len(names)} {what} for {count} cameras", path)
    if any(not n or any(c.isspace() for c in n) for n in names):
        # COLMAP splits lines on whitespace; an empty or spaced name would corrupt the file.
        raise ExportError(f"{what} must be non-empty and contain no whitespace", path)
    return names


def _image_size(path: Path, width: int, height: int) -> tuple[int, int]:
    if int(width) != width or int(height) != height or width <= 0 or height <= 0:
        raise ExportError(f"image size must be positive integers, got {width} x {height}", path)
    return int(width), int(height)


# ----------------------------------------------------------------------------------------------------------
# SparseAGS cameras.json
# ----------------------------------------------------------------------------------------------------------
def write_sparseags_cameras(
    path: str | os.PathLike,
    ids: Sequence[str],
    w2c: Any,
    K: Any,
    flags: Sequence[int],
    filepaths: Sequence[str],
    extra: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Write a SparseAGS ``cameras.json`` (PyTorch3D ``R, T``; ``focal_length``, ``principal_point``; ``flag``;
    ``filepath``), keys in the order of ``ids``, atomically.

    ``w2c [V, 4, 4]`` OpenCV; ``K [V, 3, 3]`` in pixels of the image files (256 px, the file convention: pass
    ``scale_intrinsics`` output if the engine ran at another resolution).  ``extra`` holds additional keys per
    camera (a sequence aligned with ``ids`` or a mapping id -> keys); they never override the standard keys.
    """
    path = Path(path)
    ids, w2c_np, K_np = _check_cameras(path, ids, w2c, K)
    flags = [int(f) for f in flags]
    filepaths = [str(f) for f in filepaths]
    if len(flags) != len(ids) or len(filepaths) != len(ids):
        raise ExportError(f"{len(flags)} flags and {len(filepaths)} filepaths for {len(ids)} cameras", path)
    if any(f not in (0, 1) for f in flags):
        raise ExportError(f"flags must be 0 or 1, got {flags}", path)
    if extra is None:
        extras: list[Mapping[str, Any]] = [{} for _ in ids]
    elif isinstance(extra, Mapping):
        extras = [extra.get(i, {}) for i in ids]
    else:
        extras = list(extra)
        if len(extras) != len(ids):
            raise ExportError(f"{len(extras)} extra entries for {len(ids)} cameras", path)
    records = [
        CameraRecord(id=i, w2c=w, K=k, flag=f, filepath=p, extra=dict(e))
        for i, w, k, f, p, e in zip(ids, w2c_np, K_np, flags, filepaths, extras)
    ]
    # scene.py's text (the format lives there) through our writer, which reports OS errors as ExportError.
    atomic_write_bytes(path, cameras_to_json_text(records).encode("utf-8"))


# ----------------------------------------------------------------------------------------------------------
# COLMAP text model
# ----------------------------------------------------------------------------------------------------------
def write_colmap_text(
    folder: str | os.PathLike, ids: Sequence[str], w2c: Any, K: Any, width: int, height: int, image_names: Sequence[str]
) -> None:
    """Write a COLMAP text model (``cameras.txt``, ``images.txt``, empty ``points3D.txt``) into ``folder``.

    One PINHOLE camera per image (``CAMERA_ID = IMAGE_ID = 1..V`` in the order of ``ids``; COLMAP ids are
    integers, so the string ids survive only through ``image_names``, whose stems the reader returns).
    ``images.txt`` holds ``QW QX QY QZ TX TY TZ``: the world-to-camera rotation as a Hamilton unit quaternion
    with ``QW >= 0`` and the translation, in the OpenCV camera frame (COLMAP's, identical to ours), followed
    by an empty line for the (absent) 2D points.  ``fx fy cx cy`` are written unchanged because COLMAP puts
    pixel centres at integer + 0.5 as we do.
    """
    folder = Path(folder)
    ids, w2c_np, K_np = _check_cameras(folder, ids, w2c, K)
    names = _check_names(folder, image_names, len(ids), "image_names")
    width, height = _image_size(folder, width, height)
    quats = cameras.rotmat_to_quat_wxyz(torch.as_tensor(w2c_np[:, :3, :3])).numpy()  # [V, 4]
    count = len(ids)

    camera_lines = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"# Number of cameras: {count}",
    ]
    image_lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {count}, mean observations per image: 0",
    ]
    for index, (name, pose, intr, quat) in enumerate(zip(names, w2c_np, K_np, quats), start=1):
        # repr of a Python float: the shortest text that reads back to the same double.
        params = " ".join(repr(float(v)) for v in (intr[0, 0], intr[1, 1], intr[0, 2], intr[1, 2]))
        camera_lines.append(f"{index} PINHOLE {width} {height} {params}")
        numbers = " ".join(repr(float(v)) for v in (*quat, *pose[:3, 3]))
        image_lines.append(f"{index} {numbers} {index} {name}")
        image_lines.append("")  # no 2D points
    points_lines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        "# Number of points: 0, mean track length: 0",
    ]

    folder.mkdir(parents=True, exist_ok=True)
    _write_text(folder / "cameras.txt", "\n".join(camera_lines) + "\n")
    _write_text(folder / "images.txt", "\n".join(image_lines) + "\n")
    _write_text(folder / "points3D.txt", "\n".join(points_lines) + "\n")


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise ExportError("file not found", path)
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ExportError(f"cannot read file ({err})", path) from err


def _read_colmap_cameras(path: Path) -> dict[int, tuple[np.ndarray, int, int]]:
    """cameras.txt -> {camera_id: (K [3, 3], width, height)}; PINHOLE and SIMPLE_PINHOLE only."""
    result: dict[int, tuple[np.ndarray, int, int]] = {}
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        try:
            camera_id, model, width, height = int(fields[0]), fields[1], int(fields[2]), int(fields[3])
            params = [float(v) for v in fields[4:]]
        except (IndexError, ValueError) as err:
            raise ExportError(f"line {number}: malformed camera line", path) from err
        if model == "PINHOLE" and len(params) == 4:
            fx, fy, cx, cy = params
        elif model == "SIMPLE_PINHOLE" and len(params) == 3:
            (fx, cx, cy), fy = params, params[0]
        else:
            raise ExportError(
                f"line {number}: camera model {model} with {len(params)} parameters is not supported "
                "(PINHOLE or SIMPLE_PINHOLE)",
                path,
            )
        result[camera_id] = (np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), width, height)
    return result


def read_colmap_text(folder: str | os.PathLike) -> CameraSet:
    """Read a COLMAP text model written by :func:`write_colmap_text` (or COLMAP, pinhole cameras only).

    Images are returned in the file's order; ``ids`` are the stems of the image names.
    """
    folder = Path(folder)
    intrinsics = _read_colmap_cameras(folder / "cameras.txt")
    images_path = folder / "images.txt"
    lines = _read_lines(images_path)
    ids, names, w2c, K, widths, heights = [], [], [], [], [], []
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        try:
            quat = [float(v) for v in fields[1:5]]
            translation = [float(v) for v in fields[5:8]]
            camera_id, name = int(fields[8]), fields[9]
        except (IndexError, ValueError) as err:
            raise ExportError(f"line {number}: malformed image line", images_path) from err
        if camera_id not in intrinsics:
            raise ExportError(f"line {number}: unknown CAMERA_ID {camera_id}", images_path)
        number += 1  # the POINTS2D line that follows every image line (may be empty)
        pose = np.eye(4)
        pose[:3, :3] = cameras.quat_wxyz_to_rotmat(torch.tensor(quat, dtype=torch.float64)).numpy()
        pose[:3, 3] = translation
        K_i, width, height = intrinsics[camera_id]
        ids.append(Path(name).stem)
        names.append(name)
        w2c.append(pose)
        K.append(K_i)
        widths.append(width)
        heights.append(height)
    return CameraSet(
        ids=ids,
        w2c=np.array(w2c).reshape(-1, 4, 4),
        K=np.array(K).reshape(-1, 3, 3),
        widths=np.array(widths, dtype=np.int64),
        heights=np.array(heights, dtype=np.int64),
        names=names,
    )


# ----------------------------------------------------------------------------------------------------------
# nerfstudio transforms.json
# ----------------------------------------------------------------------------------------------------------
def write_nerfstudio_transforms(
    path: str | os.PathLike, ids: Sequence[str], w2c: Any, K: Any, width: int, height: int, file_paths: Sequence[str]
) -> None:
    """Write a nerfstudio ``transforms.json``: ``"camera_model": "OPENCV"`` and one frame per camera with
    ``file_path`` (relative to the JSON's folder), ``transform_matrix`` = camera-to-world in the
    OpenGL/Blender camera convention (+x right, +y up, looking down -z: ``inv(w2c) @ diag(1, -1, -1, 1)``)
    and per-frame ``fl_x fl_y cx cy w h`` (no distortion: k1..p2 default to 0).  The view id is kept in
    the extra per-frame key ``"sparseags_id"``, which nerfstudio ignores.
    """
    path = Path(path)
    ids, w2c_np, K_np = _check_cameras(path, ids, w2c, K)
    file_paths = _check_names(path, file_paths, len(ids), "file_paths")
    width, height = _image_size(path, width, height)
    c2w_gl = cameras.w2c_to_c2w_gl(torch.as_tensor(w2c_np)).numpy()  # [V, 4, 4]
    frames = []
    for view_id, file_path, pose, intr in zip(ids, file_paths, c2w_gl, K_np):
        frames.append(
            {
                "file_path": file_path,
                "transform_matrix": pose.tolist(),
                "fl_x": float(intr[0, 0]),
                "fl_y": float(intr[1, 1]),
                "cx": float(intr[0, 2]),
                "cy": float(intr[1, 2]),
                "w": width,
                "h": height,
                "sparseags_id": view_id,
            }
        )
    _write_text(path, json.dumps({"camera_model": "OPENCV", "frames": frames}, indent=2) + "\n")


def _frame_value(frame: Mapping[str, Any], meta: Mapping[str, Any], key: str, index: int, path: Path) -> float:
    """A per-frame intrinsic, falling back to the file-level value (nerfstudio's rule)."""
    value = frame.get(key, meta.get(key))
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ExportError(f"frame {index}: missing or non-numeric {key!r}", path)
    return float(value)


def frame_c2w(frame: dict) -> np.ndarray:
    """[4, 4] float64 c2w of a nerfstudio / instant-ngp frame's ``transform_matrix`` (3x4 rows accepted).

    Raises ValueError (a short reason) when it is not numeric, not 4x4 / 3x4, or not finite.
    """
    try:
        c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError("transform_matrix is not numeric") from err
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
    if c2w.shape != (4, 4):
        raise ValueError("transform_matrix must be 4x4 (or 3x4)")
    if not np.all(np.isfinite(c2w)):
        raise ValueError("transform_matrix contains NaN or infinite values")
    return c2w


def read_nerfstudio_transforms(path: str | os.PathLike) -> CameraSet:
    """Read a nerfstudio ``transforms.json`` (pinhole intrinsics per frame or per file) into OpenCV ``w2c``.

    ``ids`` are the ``sparseags_id`` keys when present, else the stems of ``file_path``.  Distortion
    coefficients, if any, are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError("file not found", path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ExportError(f"cannot read file ({err})", path) from err
    except json.JSONDecodeError as err:
        raise ExportError(f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}", path) from err
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list):
        raise ExportError("expected an object with a 'frames' list", path)
    ids, names, w2c, K, widths, heights = [], [], [], [], [], []
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise ExportError(f"frame {index}: needs 'file_path' and 'transform_matrix'", path)
        try:
            c2w = frame_c2w(frame)
        except ValueError as err:
            raise ExportError(f"frame {index}: {err}", path) from None
        fx, fy, cx, cy, w, h = (
            _frame_value(frame, meta, key, index, path) for key in ("fl_x", "fl_y", "cx", "cy", "w", "h")
        )
        name = str(frame["file_path"])
        ids.append(str(frame.get("sparseags_id", Path(name).stem)))
        names.append(name)
        w2c.append(cameras.c2w_gl_to_w2c(torch.as_tensor(c2w)).numpy())
        K.append(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]))
        widths.append(int(w))
        heights.append(int(h))
    return CameraSet(
        ids=ids,
        w2c=np.array(w2c).reshape(-1, 4, 4),
        K=np.array(K).reshape(-1, 3, 3),
        widths=np.array(widths, dtype=np.int64),
        heights=np.array(heights, dtype=np.int64),
        names=names,
    )


# ----------------------------------------------------------------------------------------------------------
# Turntable
# ----------------------------------------------------------------------------------------------------------
def turntable_cameras(
    frames: int = 120,
    elevation_deg: float = -30.0,
    radius: float = 3.0,
    target: Sequence[float] = (0.0, 0.0, 0.0),
    fovy_deg: float = 49.1,
    resolution: int = 256,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Cameras of a turntable: ``(w2c [F, 4, 4] OpenCV, K [F, 3, 3] at resolution x resolution)``.

    Frame i sits at azimuth ``i * 360 / frames`` degrees (0, 3, ..., 357 for 120 frames: kiui.render's
    turntable) on :func:`sparseags.cameras.orbit_camera` with the kiui sign (**negative elevation = camera
    above**, azimuth 0 on +z), looking at ``target``.  ``fovy_deg`` is the full vertical field of view; the
    principal point is the image centre.  Defaults follow SparseAGS's turntable (elevation -30, radius 3).
    """
    if frames < 1 or resolution < 1:
        raise ExportError(f"turntable needs frames >= 1 and resolution >= 1, got {frames} and {resolution}")
    if not 0.0 < fovy_deg < 180.0:
        raise ExportError(f"turntable fovy_deg must be in (0, 180), got {fovy_deg}")
    azimuths = torch.arange(frames, dtype=torch.float64) * (360.0 / frames)  # [F]
    c2w_gl = cameras.orbit_camera(
        torch.full_like(azimuths, float(elevation_deg)),
        azimuths,
        float(radius),
        torch.as_tensor(target, dtype=torch.float64),
    )
    w2c = cameras.c2w_gl_to_w2c(c2w_gl)  # [F, 4, 4]
    focal = cameras.focal_from_fov(float(fovy_deg), float(resolution))
    half = resolution / 2.0
    K = cameras.intrinsics_matrix(focal, focal, half, half).expand(frames, 3, 3)
    return w2c.to(dtype=dtype, device=device), K.to(dtype=dtype, device=device).contiguous()


def _even_frame(frame: Any, index: int, size: int, path: Path) -> np.ndarray:
    """Check a rendered frame and pad it to even height and width (yuv420p subsamples chroma by 2)."""
    array = frame.detach().cpu().numpy() if isinstance(frame, Tensor) else np.asarray(frame)
    if array.dtype != np.uint8 or array.shape != (size, size, 3):
        raise ExportError(
            f"render_fn returned {array.dtype} {list(array.shape)} for frame {index}, "
            f"expected uint8 [{size}, {size}, 3]",
            path,
        )
    pad = size % 2
    return np.pad(array, ((0, pad), (0, pad), (0, 0)), mode="edge") if pad else array


def turntable_fovy_deg(K: Any, image_height: float) -> float:
    """The turntable's full vertical field of view in degrees: that of the scene's first camera,
    ``2 atan(H / (2 fy))`` with ``K [V, 3, 3]`` (or ``[3, 3]``) in the pixels of images ``image_height`` tall.

    The one field-of-view rule of every turntable (headless export and the debugger's recorder)."""
    fy = float(np.asarray(K, dtype=np.float64).reshape(-1, 3, 3)[0, 1, 1])
    return float(np.degrees(2.0 * np.arctan(0.5 * float(image_height) / fy)))


def iter_turntable(
    path: str | os.PathLike,
    render_fn: RenderFn,
    frames: int = 120,
    elevation_deg: float = -30.0,
    radius: float = 3.0,
    target: Sequence[float] = (0.0, 0.0, 0.0),
    fovy_deg: float = 49.1,
    resolution: int = 256,
    fps: int = 30,
) -> Generator[tuple[int, int], None, Path]:
    """The one turntable writer: a generator that renders and encodes one frame per item.

    Yields ``(frames done, frames)`` after each encoded frame and returns the path (``StopIteration.value``)
    once the video is complete and renamed into place. ``render_fn(w2c [4, 4], K [3, 3], width, height) ->
    uint8 [H, W, 3]`` renders a frame; the cameras come from :func:`turntable_cameras` (float32 CPU tensors).
    The video is H.264 / yuv420p (imageio-ffmpeg), written atomically: a generator closed early (or a failed
    frame) leaves no file. An odd ``resolution`` is padded by one edge-replicated row and column (yuv420p needs
    even sizes); imageio's resize to a multiple of 16 is disabled. The arguments are checked at the call.
    """
    w2c, K = turntable_cameras(frames, elevation_deg, radius, target, fovy_deg, resolution)  # checks the arguments
    return _turntable_frames(Path(path), render_fn, w2c, K, int(resolution), fps)


def _turntable_frames(
    path: Path, render_fn: RenderFn, w2c: Tensor, K: Tensor, resolution: int, fps: int
) -> Generator[tuple[int, int], None, Path]:
    import imageio.v2 as imageio  # imported here: only the turntable needs ffmpeg

    frames = len(w2c)
    with atomic_output(path) as tmp:
        writer = imageio.get_writer(
            tmp,
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=1,
            quality=8,
        )
        try:
            for index in range(frames):
                frame = render_fn(w2c[index], K[index], resolution, resolution)
                writer.append_data(_even_frame(frame, index, resolution, path))
                yield index + 1, frames
        finally:
            writer.close()
    return path


def drive_turntable(frames: Generator[tuple[int, int], None, Path], progress: ProgressFn | None = None) -> Path:
    """Run a turntable generator (:func:`iter_turntable`) to the end; ``progress(done, frames)`` after each
    frame. Returns the written path."""
    while True:
        try:
            done, total = next(frames)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)


def write_turntable(
    path: str | os.PathLike,
    render_fn: RenderFn,
    frames: int = 120,
    elevation_deg: float = -30.0,
    radius: float = 3.0,
    target: Sequence[float] = (0.0, 0.0, 0.0),
    fovy_deg: float = 49.1,
    resolution: int = 256,
    fps: int = 30,
    progress: ProgressFn | None = None,
) -> Path:
    """Render a turntable with ``render_fn(w2c [4, 4], K [3, 3], width, height) -> uint8 [H, W, 3]`` and write
    it as an H.264 / yuv420p mp4, atomically (:func:`iter_turntable`, run to the end).  Returns the path.

    ``progress(done, frames)`` is called after each frame is encoded.
    """
    return drive_turntable(
        iter_turntable(path, render_fn, frames, elevation_deg, radius, target, fovy_deg, resolution, fps), progress
    )
