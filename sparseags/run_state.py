"""A headless run that survives interruption: checkpoints that are plain data, and an output folder
published as one unit.

**Checkpoints** (``<out>/.checkpoint/state.pt``) hold the pipeline's :meth:`~sparseags.pipeline.Pipeline.state_dict`,
the resolved config, a scene fingerprint (view ids + SHA-1 of every input image), the run id and the
elapsed time. They are written atomically with ``torch.save`` of plain data only (numpy arrays become
tensors, numpy scalars Python numbers) and read with ``torch.load(weights_only=True)``: a file that needs
any pickled class or function is refused before anything in it runs. The debugger's checkpoints
(``gui/actions.py``) use the same helpers.

**Publishing**: a run writes its artefacts into ``<out>/.staging-<run id>/``. When the set is complete,
:func:`publish` writes the manifest ``run.json`` (run id, config hash, every file with its SHA-256 and
size) into the staging folder, removes the old ``<out>/run.json``, moves every file into ``<out>`` by
renames and moves ``run.json`` in last. So:

* ``<out>/run.json`` present = a complete run, and exactly the files it lists (with those hashes) are that
  run's; anything else in the folder (caches, leftovers of older runs) is not part of it;
* no ``run.json`` = an interrupted (or pre-manifest) run: do not trust the folder;
* until the new set is complete in the staging folder, the old outputs and their ``run.json`` are
  untouched; a publish interrupted half-way is finished by the next run in that folder
  (:func:`prepare_output_folder`), as the staging folder already holds its manifest.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
import secrets
import shutil
import signal
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from sparseags.atomic import OutputError, atomic_output, atomic_write_text
from sparseags.config import Config, config_to_dict
from sparseags.errors import RunInterrupted, UserError

RUN_CHECKPOINT_FORMAT = "sparseags-run-checkpoint/1"
RUN_FORMAT = "sparseags-run/1"
MANIFEST = "run.json"
CHECKPOINT_DIR = ".checkpoint"
CHECKPOINT_FILE = "state.pt"
STAGING_PREFIX = ".staging-"
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
    """``torch.save`` of `payload` (converted by :func:`to_plain`) to `path`, atomically."""
    path = Path(path)
    payload = to_plain(payload)
    try:
        with atomic_output(path) as tmp:
            torch.save(payload, tmp)
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
# manifest and publishing


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files_under(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp" + p.suffix) and not p.name.startswith(".")
    )


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def staging_dir(out: Path, run_id: str) -> Path:
    return Path(out) / f"{STAGING_PREFIX}{run_id}"


def publish(staging: Path, out: Path, run_id: str, cfg: Config, extra: Optional[dict] = None) -> dict:
    """Write the manifest of the complete set in `staging`, then move the set into `out` (see the module
    docstring). Returns the manifest."""
    staging, out = Path(staging), Path(out)
    files = {}
    for rel in _files_under(staging):
        path = staging / rel
        files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {
        "format": RUN_FORMAT,
        "run_id": run_id,
        "status": "complete",
        "config_hash": config_hash(cfg),
        "finished": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        **(extra or {}),
        "files": files,
    }
    atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=2))  # the staged set is complete
    finish_publish(staging, out)
    return manifest


def finish_publish(staging: Path, out: Path) -> None:
    """Move a complete staged set (its run.json written) into `out`; safe to run again after an interruption."""
    staging, out = Path(staging), Path(out)
    manifest = json.loads((staging / MANIFEST).read_text(encoding="utf-8"))
    old = read_manifest(out)
    try:
        (out / MANIFEST).unlink(missing_ok=True)  # from here on the folder reads as incomplete
        _fsync_dir(out)
        for rel in manifest["files"]:
            src, dst = staging / rel, out / rel
            if src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
        for folder in {(out / rel).parent for rel in manifest["files"]}:
            _fsync_dir(folder)
        os.replace(staging / MANIFEST, out / MANIFEST)  # last: the folder is the new run
        _fsync_dir(out)
    except OSError as err:
        raise OutputError(f"{out}: cannot publish the run ({err.strerror or err})") from None
    if old is not None:  # files of the previous run that the new one does not have
        for rel in set(old.get("files", {})) - set(manifest["files"]):
            target = out / rel
            if target.is_file() and out in target.resolve().parents:
                target.unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)


def read_manifest(out: Path) -> Optional[dict]:
    """``<out>/run.json`` when it exists and is a run manifest, else None."""
    try:
        data = json.loads((Path(out) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT or not isinstance(data.get("files"), dict):
        return None
    return data


def check_run(out: Path, files: Optional[list[str]] = None) -> Optional[str]:
    """Why `out` is not a complete run (None when it is): run.json present, and each listed file (or each
    of `files`) present with its recorded SHA-256."""
    out = Path(out)
    manifest = read_manifest(out)
    if manifest is None:
        return f"{out}: no valid {MANIFEST} (an interrupted run, or one made before manifests)"
    for rel in manifest["files"] if files is None else files:
        entry = manifest["files"].get(rel)
        if entry is None:
            return f"{out}: {rel} is not part of the run ({MANIFEST})"
        path = out / rel
        if not path.is_file():
            return f"{out}: {rel} is missing"
        if sha256_file(path) != entry.get("sha256"):
            return f"{out}: {rel} differs from the run's {MANIFEST} (changed after the run)"
    return None


def refresh_manifest(out: Path, names: list[str]) -> None:
    """Record the current hashes of `names` (files rewritten in place, e.g. metrics.json by a re-score)."""
    out = Path(out)
    manifest = read_manifest(out)
    if manifest is None:
        return
    for rel in names:
        path = out / rel
        manifest["files"][rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))


def prepare_output_folder(out: Path, keep: Optional[str] = None) -> None:
    """Finish a publish that was interrupted half-way, and remove the staging folders of runs that never
    completed (except `keep`, the run being resumed)."""
    out = Path(out)
    if not out.is_dir():
        return
    for staging in sorted(out.glob(f"{STAGING_PREFIX}*")):
        if not staging.is_dir():
            continue
        if (staging / MANIFEST).is_file():
            try:
                finish_publish(staging, out)
                continue
            except (ValueError, KeyError, OutputError):
                pass
        if staging.name != keep:
            shutil.rmtree(staging, ignore_errors=True)


def discard_staging(staging: Path) -> None:
    """Remove a staging folder whose publish has not started (no run.json in it)."""
    staging = Path(staging)
    if staging.is_dir() and not (staging / MANIFEST).exists():
        shutil.rmtree(staging, ignore_errors=True)


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
