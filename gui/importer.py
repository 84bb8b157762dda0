"""`Open scene...` on a raw capture: recognise the folder, pick a fresh scene folder, import it on the engine thread.

A folder is opened as a *scene* when it has a ``cameras.json`` whose first image is square (the SparseAGS layout).
Otherwise it is read as a *raw capture* (:func:`find_capture`):

* photos: ``images/``, ``photos/``, ``rgb/``, ``imgs/`` or the folder itself (any size; alpha = mask);
* masks: ``masks/`` or ``mask/`` (optional);
* poses (optional; the first found): a COLMAP model in ``colmap/`` or in the folder (``sparse/0``, ``sparse``),
  a ``transforms.json``, or a SparseAGS ``cameras.json`` of the full photos / RayDiffusion crops; none means
  structure from motion.

The scene goes to ``<folder>_scene`` beside the capture (under ``--out`` when the run has one); a name that
exists and is not an empty folder is never overwritten: ``_scene2``, ``_scene3``, ... are tried instead.

:func:`run_import` runs :func:`sparseags.capture.import_capture` on the engine thread and reports through an
:class:`ImportProgress`, which the window reads once per frame. Nothing here touches DearPyGui.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sparseags import capture
from sparseags.capture import CaptureError

__all__ = ["CaptureLayout", "ImportProgress", "find_capture", "fresh_scene_dir", "is_scene", "run_import"]

IMAGE_FOLDERS = ("images", "photos", "rgb", "imgs")
MASK_FOLDERS = ("masks", "mask")
MAX_NAMES = 100


@dataclass(frozen=True)
class CaptureLayout:
    """What :func:`find_capture` found in a raw capture folder."""

    folder: Path
    images: Path
    masks: Optional[Path]
    poses: Optional[Path]  # None: structure from motion
    fmt: Optional[str]  # colmap, nerfstudio, sparseags (None with no poses)

    def describe(self) -> str:
        poses = (
            "no poses (structure from motion)"
            if self.poses is None
            else f"{self.fmt} poses ({_relative(self.poses, self.folder)})"
        )
        masks = f", masks {_relative(self.masks, self.folder)}" if self.masks is not None else ""
        return f"photos {_relative(self.images, self.folder)}{masks}, {poses}"


def _relative(path: Path, root: Path) -> str:
    try:
        text = str(path.relative_to(root))
    except ValueError:
        return str(path)
    return "." if text == "." else text + ("/" if path.is_dir() else "")


def _first_camera_image(folder: Path) -> Optional[Path]:
    try:
        data = json.loads((folder / "cameras.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data:
        return None
    view_id, entry = next(iter(data.items()))
    candidates = []
    if isinstance(entry, dict) and isinstance(entry.get("filepath"), str):
        candidates.append(folder / entry["filepath"])
    candidates += [folder / "images" / f"{view_id}{suffix}" for suffix in capture.IMAGE_SUFFIXES]
    return next((c for c in candidates if c.is_file()), None)


def is_scene(folder: Path) -> bool:
    """A SparseAGS scene folder: a ``cameras.json`` whose first image is square (or cannot be told apart).

    A ``cameras.json`` beside full-size photos (not square) is a raw capture's poses instead.
    """
    folder = Path(folder)
    if not (folder / "cameras.json").is_file():
        return False
    image = _first_camera_image(folder)
    if image is None:
        return True  # let the scene loader say what is wrong with it
    try:
        from PIL import Image

        with Image.open(image) as handle:
            width, height = handle.size
    except (OSError, ValueError):
        return True
    return width == height


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.is_file() and p.suffix.lower() in capture.IMAGE_SUFFIXES and not p.name.startswith(".")
        for p in folder.iterdir()
    )


def _poses_in(folder: Path) -> tuple[Optional[Path], Optional[str]]:
    colmap = folder / "colmap"
    if colmap.is_dir():
        try:
            if capture.detect_format(colmap) == "colmap":
                return colmap, "colmap"
        except CaptureError:
            pass
    try:
        fmt = capture.detect_format(folder)
    except CaptureError:
        return None, None
    if fmt == "colmap":
        return folder, fmt
    return folder / ("transforms.json" if fmt == "nerfstudio" else "cameras.json"), fmt


def find_capture(folder: Path) -> CaptureLayout:
    """The photos, masks and poses of a raw capture folder; a :class:`CaptureError` when there are no photos."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CaptureError("folder not found", folder)
    images = next((folder / name for name in IMAGE_FOLDERS if _has_images(folder / name)), None)
    if images is None and _has_images(folder):
        images = folder
    if images is None:
        raise CaptureError(
            f"neither a scene (no cameras.json) nor a raw capture (no photos in "
            f"{', '.join(n + '/' for n in IMAGE_FOLDERS)} or the folder itself)",
            folder,
        )
    masks = next((folder / name for name in MASK_FOLDERS if (folder / name).is_dir()), None)
    poses, fmt = _poses_in(folder)
    return CaptureLayout(folder=folder, images=images, masks=masks, poses=poses, fmt=fmt)


def _usable(path: Path) -> bool:
    if not path.exists() and not path.is_symlink():
        return True
    return path.is_dir() and not any(path.iterdir())


def fresh_scene_dir(capture_dir: Path, out_root: Optional[Path] = None) -> Path:
    """``<root>/<name>_scene`` (root: `out_root`, else beside the capture), or ``_scene2``, ... if that is taken."""
    capture_dir = Path(capture_dir).resolve()
    root = Path(out_root) if out_root is not None else capture_dir.parent
    base = f"{capture_dir.name}_scene"
    for index in range(1, MAX_NAMES + 1):
        candidate = root / (base if index == 1 else f"{base}{index}")
        if _usable(candidate):
            return candidate
    raise CaptureError(f"{base}, {base}2 ... {base}{MAX_NAMES} are all taken; remove some", root)


class ImportProgress:
    """Progress of one import: written by the engine thread, read by the window each frame (under a lock)."""

    def __init__(self, layout: CaptureLayout, out: Path) -> None:
        self.layout, self.out = layout, Path(out)
        self._lock = threading.Lock()
        self._fraction, self._message = 0.0, "starting"
        self.state = "running"  # running, done, failed

    def set(self, fraction: Optional[float] = None, message: Optional[str] = None) -> None:
        with self._lock:
            if fraction is not None:
                self._fraction = min(1.0, max(0.0, float(fraction)))
            if message is not None:
                self._message = " ".join(str(message).split())

    def finish(self, ok: bool, message: str) -> None:
        self.set(1.0 if ok else None, message)
        self.state = "done" if ok else "failed"

    def read(self) -> tuple[float, str]:
        with self._lock:
            return self._fraction, self._message


def run_import(
    layout: CaptureLayout, out: Path, progress: ImportProgress, resolution: int = 256
) -> capture.ImportReport:
    """Import `layout` into `out` (engine thread). Raises :class:`CaptureError` (one line) on bad input."""
    progress.set(0.0, "reading poses" if layout.poses is not None else "structure from motion (pycolmap)")
    # photos  ->  crops: the import calls back twice per view (read + check, crop + write)
    labels = ("reading photos and masks", "cropping and writing")

    def step(done: int, total: int) -> None:
        half = total // 2
        stage = labels[0] if done <= half else labels[1]
        shown = done if done <= half else done - half
        progress.set(0.05 + 0.9 * done / max(total, 1), f"{stage} {shown}/{half}")

    try:
        report = capture.import_capture(
            layout.images,
            out,
            masks=layout.masks,
            poses=layout.poses,
            fmt=layout.fmt,
            resolution=int(resolution),
            log=lambda line: progress.set(message=line),
            progress=step,
        )
    except CaptureError as err:
        progress.finish(False, str(err))
        raise
    except OSError as err:  # an unwritable destination, a vanished file: one line, like the CLI
        error = CaptureError(f"cannot write the scene ({err.strerror or err})", getattr(err, "filename", None) or out)
        progress.finish(False, str(error))
        raise error from err
    progress.finish(True, f"imported {len(report.ids)} views")
    return report
