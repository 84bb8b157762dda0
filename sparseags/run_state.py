"""A headless run that survives interruption: checkpoints that are plain data, and an output folder
published as one unit.

**Checkpoints** (``<out>/.checkpoint/state.pt``) hold the pipeline's :meth:`~sparseags.pipeline.Pipeline.state_dict`,
the resolved config, a scene fingerprint (view ids + SHA-1 of every input image), the run id and the
elapsed time. They are written atomically with ``torch.save`` of plain data only (numpy arrays become
tensors, numpy scalars Python numbers) and read with ``torch.load(weights_only=True)``: a file that needs
any pickled class or function is refused before anything in it runs. The debugger's checkpoints
(``gui/actions.py``) use the same helpers.

Publishing a finished run's folder (``run.json``, the final state) is :mod:`sparseags.run_folder`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import pickle
import secrets
import signal
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from sparseags.atomic import OutputError, atomic_output
from sparseags.config import Config, config_to_dict
from sparseags.errors import RunInterrupted, UserError

RUN_CHECKPOINT_FORMAT = "sparseags-run-checkpoint/1"
CHECKPOINT_DIR = ".checkpoint"
CHECKPOINT_FILE = "state.pt"
# Config sections that never change a result: a resume may differ there.
NEUTRAL_SECTIONS = ("run", "gui")


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used (refused, damaged, of another scene or config), in one line."""


# -------------------------------------------------------------------------------------------------
# scene fingerprint


def scene_fingerprint(scene: Any) -> dict:
    """What identifies a scene: its view ids and the SHA-1 of each input image (the file's bytes when the
    scene was read from files, else the image array's)."""
    paths = list(getattr(scene, "image_paths", None) or [])
    hashes = []
    for index in range(len(scene.ids)):
        digest = hashlib.sha1()
        path = Path(paths[index]) if index < len(paths) else None
        if path is not None and path.is_file():
            digest.update(path.read_bytes())
        else:
            digest.update(np.ascontiguousarray(np.asarray(scene.images[index], dtype=np.float32)).tobytes())
        hashes.append(digest.hexdigest())
    return {"ids": [str(i) for i in scene.ids], "image_sha1": hashes}


def fingerprint_mismatch(saved: Any, current: dict) -> Optional[str]:
    """Why a saved fingerprint does not match a scene's (None when it does)."""
    if not isinstance(saved, dict) or "ids" not in saved or "image_sha1" not in saved:
        return "it has no scene fingerprint"
    if list(saved["ids"]) != current["ids"]:
        return f"its views are {', '.join(map(str, saved['ids']))}, the scene's are {', '.join(current['ids'])}"
    changed = [i for i, a, b in zip(current["ids"], saved["image_sha1"], current["image_sha1"]) if a != b]
    if changed:
        return f"the images of view(s) {', '.join(changed)} differ"
    return None


# -------------------------------------------------------------------------------------------------
# plain data: what torch.load(weights_only=True) accepts

_NDARRAY_TAG = "__sparseags_ndarray__"


def to_plain(value: Any) -> Any:
    """numpy arrays as tagged tensors, numpy scalars as Python numbers, containers recursively."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("a checkpoint cannot hold numpy object arrays")
        return {_NDARRAY_TAG: torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {(k.item() if isinstance(k, np.generic) else k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(to_plain(v) for v in value)
    return value


def from_plain(value: Any) -> Any:
    """The inverse of :func:`to_plain`."""
    if isinstance(value, dict):
        if set(value) == {_NDARRAY_TAG}:
            return value[_NDARRAY_TAG].numpy()
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(from_plain(v) for v in value)
    return value


def save_plain(payload: dict, path: Path, error: type[Exception] = CheckpointError) -> Path:
    """``torch.save`` of `payload` (converted by :func:`to_plain`) to `path`, atomically.

    Saved through a file handle, so the archive's inner folder is torch's fixed "archive" rather than the
    temporary file's random name. (The bytes still vary between saves of equal payloads: torch writes a
    random serialization id and pickle shares repeated strings by identity; compare contents, not bytes.)"""
    path = Path(path)
    payload = to_plain(payload)
    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            torch.save(payload, handle)
    except OutputError as err:  # already names the file
        raise error(f"cannot write the checkpoint: {one_line(err)}") from None
    except OSError as err:
        raise error(f"{path}: cannot write the checkpoint ({err.strerror or err})") from None
    return path


def load_plain(path: Path, error: type[Exception] = CheckpointError) -> Any:
    """A file written by :func:`save_plain`, read with ``torch.load(weights_only=True)``: a file that needs
    anything but tensors and plain containers to unpickle is refused before any of it runs."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" in str(err).lower():  # a class or function to import: refused before anything ran
            raise error(
                f"{path}: refused: the file carries pickled code or objects, not plain data "
                "(a checkpoint holds only tensors, numbers, strings and containers)"
            ) from None
        raise error(f"{path}: not a readable checkpoint (damaged or another file type)") from None
    except Exception as err:  # torch raises many types for a damaged file
        raise error(f"{path}: not a readable checkpoint ({type(err).__name__})") from None
    return payload


def one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# -------------------------------------------------------------------------------------------------
# config identity


def comparable_config(cfg: Config | dict) -> dict:
    """The resolved config without the sections that never change a result (run, gui)."""
    data = config_to_dict(cfg) if not isinstance(cfg, dict) else dict(cfg)
    return {k: v for k, v in data.items() if k not in NEUTRAL_SECTIONS}


def config_hash(cfg: Config | dict) -> str:
    text = json.dumps(comparable_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = sorted(set(saved) | set(current), key=str)
    diffs = []
    for key in keys:
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key} ({a!r} -> {b!r})")
    return diffs


# -------------------------------------------------------------------------------------------------
# run checkpoints


def checkpoint_path(out: Path) -> Path:
    return Path(out) / CHECKPOINT_DIR / CHECKPOINT_FILE


def new_run_id() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def save_run_checkpoint(
    path: Path, pipeline: Any, *, scene_dir: Path, run_id: str, elapsed_s: float, decision_entries: list
) -> Path:
    payload = {
        "format": RUN_CHECKPOINT_FORMAT,
        "run_id": run_id,
        "scene_dir": str(scene_dir),
        "scene": scene_fingerprint(pipeline.scene),
        "config": config_to_dict(pipeline.cfg),
        "config_hash": config_hash(pipeline.cfg),
        "elapsed_s": float(elapsed_s),
        "decision_entries": list(decision_entries),
        "phase": pipeline.phase,
        "phase_label": pipeline.phase_label(),
        "total_steps": int(pipeline.total_steps),
        "pipeline": pipeline.state_dict(),
    }
    return save_plain(payload, path)


def read_run_checkpoint(path: Path) -> dict:
    """The payload of a headless-run checkpoint (plain data only; see :func:`load_plain`)."""
    payload = load_plain(path)
    if not isinstance(payload, dict) or payload.get("format") != RUN_CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a SparseAGS Studio run checkpoint")
    return from_plain(payload)


def check_compatible(payload: dict, path: Path, scene: Any, cfg: Config, decision_entries: list) -> None:
    """A CheckpointError when the checkpoint belongs to another scene, config or decision log."""
    mismatch = fingerprint_mismatch(payload.get("scene"), scene_fingerprint(scene))
    if mismatch is not None:
        raise CheckpointError(f"{path}: a checkpoint of another scene ({payload.get('scene_dir', '?')}): {mismatch}")
    saved = comparable_config(payload.get("config") or {})
    diffs = config_differences(saved, comparable_config(cfg))
    if diffs:
        more = f" and {len(diffs) - 2} more" if len(diffs) > 2 else ""
        raise CheckpointError(f"{path}: the checkpoint was made with another config: {', '.join(diffs[:2])}{more}")
    if decision_entries and list(decision_entries) != list(payload.get("decision_entries") or []):
        raise CheckpointError(f"{path}: the checkpoint was made with another --decisions log")


# -------------------------------------------------------------------------------------------------
# signals


class SignalGuard:
    """SIGINT / SIGTERM handlers for the duration of a run (main thread only; elsewhere a no-op).

    While ``deferred`` a signal is only recorded (:attr:`received`): the run loop checkpoints at the next
    step boundary and stops. Otherwise (the outputs are being written, the checkpoint is already on disk)
    the handler raises :class:`RunInterrupted` at once. A second signal while deferred raises at once too.
    """

    EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}

    def __init__(self, message_fn):
        self.message_fn = message_fn  # () -> the one line
        self.received: Optional[int] = None
        self.deferred = True
        self._previous: dict = {}

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for signum in self.EXIT:
                try:
                    self._previous[signum] = signal.signal(signum, self._handle)
                except (ValueError, OSError):
                    pass
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        first = self.received is None
        self.received = signum
        if not self.deferred or not first:
            raise self.interrupted()

    def interrupted(self) -> RunInterrupted:
        return RunInterrupted(self.message_fn(), self.EXIT.get(self.received, 130))
