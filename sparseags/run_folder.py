"""The run folder: one module writes it and reads it back.

A headless run (``main.py run``, every job of ``main.py eval``) leaves a folder that holds:

* the exports (``gaussians.ply``, ``cameras_updated.json`` + ``colmap/`` + ``transforms.json``, ``mesh.glb``,
  ``turntable.mp4``), the panels as PNGs, ``decisions.json``, ``config.yaml`` and ``metrics.json``
  (:func:`write_outputs`);
* ``final_state.pt``: the pipeline as it ended, plain data only (read with ``torch.load(weights_only=True)``,
  like the checkpoints). It is the pipeline's ``state_dict``, so it holds every reconstruction the panels
  show (leave-one-out rounds, searches, arbitration, final) with their series: loss curves, camera tracks,
  per-view evidence. The debugger opens a run from it (:func:`open_run`);
* ``matches.npz``: a cache of the verified SIFT matches of the scene's views (the evidence panel's pairs),
  checked against the images when read, not part of the run (its extraction time differs between runs);
* ``run.json``, the manifest, written last: format, run id, config hash, the scene (its folder *relative to
  the run folder* and a fingerprint of its images) and every file with its SHA-256 and size.

**Publishing**: a run writes its artefacts into ``<out>/.staging-<run id>/``. When the set is complete,
:func:`publish` writes ``run.json`` into the staging folder, removes the old ``<out>/run.json``, moves every
file into ``<out>`` by renames and moves ``run.json`` in last. So:

* ``<out>/run.json`` present = a complete run, and exactly the files it lists (with those hashes) are that
  run's; anything else in the folder (caches, leftovers of older runs) is not part of it;
* no ``run.json`` = an interrupted (or pre-manifest) run: its checkpoint (``.checkpoint/state.pt``,
  :mod:`sparseags.run_state`) is what is left, and :func:`open_run` opens it there, paused;
* until the new set is complete in the staging folder, the old outputs and their ``run.json`` are
  untouched; a publish interrupted half-way is finished by the next run in that folder
  (:func:`prepare_output_folder`), as the staging folder already holds its manifest.

**Portable**: every path inside a run is relative (the scene is found from the run folder), so a folder
copied from another machine opens here when the scene sits at the same relative place, or with ``--scene``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sparseags import artifacts
from sparseags.atomic import OutputError, atomic_write_text
from sparseags.config import Config, ConfigError, config_from_dict, config_to_dict, resolve_device
from sparseags.errors import UserError
from sparseags.run_state import (
    CheckpointError,
    checkpoint_path,
    config_hash,
    fingerprint_mismatch,
    from_plain,
    load_plain,
    read_run_checkpoint,
    save_plain,
    scene_fingerprint,
)

# run.json formats: /1 had no final state and an absolute scene path (still read as a complete run by the
# evaluation; the debugger cannot open it), /2 has both.
RUN_FORMAT = "sparseags-run/2"
READABLE_RUN_FORMATS = ("sparseags-run/1", RUN_FORMAT)
MANIFEST = "run.json"
STAGING_PREFIX = ".staging-"
FINAL_STATE = "final_state.pt"
FINAL_STATE_FORMAT = "sparseags-final-state/1"
MATCHES = "matches.npz"


class RunFolderError(UserError, ValueError):
    """A run folder that cannot be opened (tampered, incomplete, another version, its scene missing), in one
    line naming the first bad file."""


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
    if (
        not isinstance(data, dict)
        or data.get("format") not in READABLE_RUN_FORMATS
        or not isinstance(data.get("files"), dict)
    ):
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
# writing a finished run


def relative_scene_dir(scene_dir: Path, out: Path) -> str:
    """The scene folder as a POSIX path relative to the run folder (what run.json and checkpoints store)."""
    return Path(os.path.relpath(Path(scene_dir).resolve(), Path(out).resolve())).as_posix()


def write_final_state(pipeline: Any, path: Path) -> Path:
    """``final_state.pt``: the finished pipeline's state (plain data) with its config and scene fingerprint.

    Nothing in it depends on the run id or the clock, so a resumed run's final state holds what an
    uninterrupted one's does (tests/test_resume.py compares them by content); run.json's hash ties it to
    its run."""
    payload = {
        "format": FINAL_STATE_FORMAT,
        "config": config_to_dict(pipeline.cfg),
        "scene": scene_fingerprint(pipeline.scene),
        "phase_label": pipeline.phase_label(),
        "pipeline": compact_state(pipeline.state_dict()),
    }
    return save_plain(payload, path)


def compact_state(state: Any) -> Any:
    """A finished pipeline's state without the Adam moments of its finished reconstructions (two thirds of
    each one's bytes): nothing steps them again, and a decision that re-runs a phase builds new ones."""
    if isinstance(state, dict):
        finished = (
            "optimizer" in state and "version" in state and int(state.get("step", 0)) >= int(state.get("iters", 1))
        )
        return {k: (None if finished and k == "optimizer" else compact_state(v)) for k, v in state.items()}
    if isinstance(state, list):
        return [compact_state(v) for v in state]
    return state


def write_outputs(pipeline: Any, out: Path, elapsed_s: float, log=print) -> dict:
    """Every file of a finished pipeline into `out` (each write atomic); returns the metrics."""
    cfg = pipeline.cfg
    recon = pipeline.final_recon
    scene = pipeline.scene
    out = Path(out)
    artifacts.export_gaussians(recon, out / "gaussians.ply")
    artifacts.export_cameras(recon, scene, out)
    snapshot = pipeline.snapshot(with_gaussians=False)
    artifacts.write_overlay(out / "overlay.png", recon, scene, pipeline.latest_scores)
    artifacts.write_lpips_bars(out / "lpips_bars.png", snapshot)
    artifacts.write_search_heatmaps(out, snapshot)
    artifacts.write_json(out / "decisions.json", {"decisions": pipeline.decisions})
    write_final_state(pipeline, out / FINAL_STATE)
    if cfg.pipeline.export_mesh:
        from sparseags.mesh import MeshError

        try:
            artifacts.export_mesh(recon, out / "mesh.glb", cfg.pipeline.mesh_resolution)
        except MeshError as err:
            log(f"notice: no mesh written: {err}")
    if cfg.pipeline.export_video:
        artifacts.export_turntable(
            recon,
            out / "turntable.mp4",
            frames=cfg.pipeline.turntable_frames,
            resolution=cfg.pipeline.turntable_resolution,
        )
    metrics = artifacts.compute_metrics(pipeline, pipeline.lpips, elapsed_s)
    artifacts.write_json(out / "metrics.json", metrics)
    return metrics


# -------------------------------------------------------------------------------------------------
# reading a run back


@dataclass(frozen=True)
class RunInfo:
    """What :func:`inspect_run` found in a folder, before any heavy work.

    kind: "complete" (run.json, verified) or "interrupted" (a checkpoint, no run.json).
    state: the pipeline's state_dict; cfg: the run's resolved config (device adapted to this machine);
    scene_dir: the scene, found from the run folder (or given); label: where the run stopped.
    """

    folder: Path
    kind: str
    run_id: str
    cfg: Config
    scene_dir: Path
    state: dict
    label: str
    manifest: Optional[dict] = None
    elapsed_s: Optional[float] = None
    decision_entries: tuple = ()


def is_run_folder(folder: Path) -> bool:
    """A finished run (run.json) or an interrupted one (a checkpoint) lives here."""
    folder = Path(folder)
    return (folder / MANIFEST).is_file() or checkpoint_path(folder).is_file()


def inspect_run(folder: Path, scene: Optional[Path] = None) -> RunInfo:
    """Check a run folder and read its state (no pipeline is built); a RunFolderError names the first bad file.

    A complete run: run.json must be a manifest of this version, every file it lists must be there with its
    SHA-256, final_state.pt must be among them and hold this version's plain data with the config whose hash
    run.json names. An interrupted run: its checkpoint must be readable. Either way the scene is found
    through the folder (its relative path) unless `scene` is given, and its images must be the run's.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: no such folder")
    if (folder / MANIFEST).is_file():
        return _inspect_complete(folder, scene)
    ckpt = checkpoint_path(folder)
    if ckpt.is_file():
        return _inspect_interrupted(folder, ckpt, scene)
    raise RunFolderError(f"{folder}: not a run folder (no {MANIFEST} and no checkpoint {ckpt.relative_to(folder)})")


def _inspect_complete(folder: Path, scene: Optional[Path]) -> RunInfo:
    try:
        raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RunFolderError(f"{folder / MANIFEST}: not a readable run manifest (damaged JSON)") from None
    fmt = raw.get("format") if isinstance(raw, dict) else None
    if fmt in READABLE_RUN_FORMATS and fmt != RUN_FORMAT:
        raise RunFolderError(
            f"{folder / MANIFEST}: a run of an earlier version ({fmt}: no final state); run it again to open it here"
        )
    manifest = read_manifest(folder)
    if manifest is None:
        raise RunFolderError(f"{folder / MANIFEST}: not a run manifest of this version (format {fmt!r})")
    problem = check_run(folder)
    if problem is not None:
        raise RunFolderError(problem)
    if FINAL_STATE not in manifest["files"]:
        raise RunFolderError(f"{folder / MANIFEST}: lists no {FINAL_STATE}")
    payload = _read_final_state(folder / FINAL_STATE)
    cfg = _config_of(payload.get("config"), folder / FINAL_STATE)
    if config_hash(cfg) != manifest.get("config_hash"):
        raise RunFolderError(f"{folder / FINAL_STATE}: its config is not the one run.json names (config hash differs)")
    scene_dir = _find_scene(folder, manifest.get("scene_dir"), scene, manifest.get("scene"), MANIFEST)
    return RunInfo(
        folder=folder,
        kind="complete",
        run_id=str(manifest["run_id"]),
        cfg=_adapt_device(cfg),
        scene_dir=scene_dir,
        state=payload["pipeline"],
        label=str(payload.get("phase_label", "done")),
        manifest=manifest,
    )


def _inspect_interrupted(folder: Path, ckpt: Path, scene: Optional[Path]) -> RunInfo:
    try:
        payload = read_run_checkpoint(ckpt)
    except CheckpointError as err:
        raise RunFolderError(str(err)) from None
    cfg = _config_of(payload.get("config"), ckpt)
    scene_dir = _find_scene(folder, payload.get("scene_dir"), scene, payload.get("scene"), ckpt.relative_to(folder))
    return RunInfo(
        folder=folder,
        kind="interrupted",
        run_id=str(payload.get("run_id", "")),
        cfg=_adapt_device(cfg),
        scene_dir=scene_dir,
        state=payload["pipeline"],
        label=str(payload.get("phase_label", payload.get("phase", "?"))),
        elapsed_s=float(payload.get("elapsed_s", 0.0)),
        decision_entries=tuple(payload.get("decision_entries") or ()),
    )


def _read_final_state(path: Path) -> dict:
    try:
        payload = load_plain(path, RunFolderError)
    except CheckpointError as err:
        raise RunFolderError(str(err)) from None
    if not isinstance(payload, dict) or payload.get("format") != FINAL_STATE_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise RunFolderError(f"{path}: not a final state of this version (format {found!r})")
    return from_plain(payload)


def _config_of(data: Any, path: Path) -> Config:
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: holds no config")
    try:
        return config_from_dict(data)
    except ConfigError as err:
        raise RunFolderError(f"{path}: its config is not one this version reads ({err})") from None


def _adapt_device(cfg: Config) -> Config:
    """A run made on a GPU opens on a machine without one: on the CPU, with the CPU renderer."""
    try:
        resolve_device(cfg)
    except ConfigError:
        cfg.device = "cpu"
        if cfg.render.backend == "gsplat":
            cfg.render.backend = "auto"
    return cfg


def _find_scene(folder: Path, stored: Any, given: Optional[Path], fingerprint: Any, where: Any) -> Path:
    """The run's scene: `given`, else `stored` (relative to the run folder; an older run stored it absolute).
    Its images must match the run's fingerprint."""
    if given is not None:
        scene_dir = Path(given)
        source = "--scene"
    elif stored:
        scene_dir = (folder / str(stored)) if not Path(str(stored)).is_absolute() else Path(str(stored))
        source = f"{where} names"
    else:
        raise RunFolderError(f"{folder / str(where)}: names no scene; give it with --scene DIR")
    if not (scene_dir / "cameras.json").is_file():
        raise RunFolderError(f"{scene_dir}: the run's scene is not there ({source} it); give it with --scene DIR")
    if fingerprint is not None:
        from sparseags.scene import SceneError, load_scene

        try:
            loaded = load_scene(scene_dir, resolution=64)
        except SceneError as err:
            raise RunFolderError(f"{scene_dir}: the run's scene cannot be read ({err})") from None
        mismatch = fingerprint_mismatch(fingerprint, scene_fingerprint(loaded))
        if mismatch is not None:
            raise RunFolderError(f"{scene_dir}: not this run's scene: {mismatch}")
    return scene_dir.resolve()


def open_run(info: RunInfo | Path, scene: Optional[Path] = None) -> Any:
    """The pipeline of a run folder as it ended (complete) or at its checkpoint (interrupted), ready to step.

    Built like every pipeline (:func:`sparseags.session.build_pipeline`), without redoing what the state
    already holds (the learned-match rotation averaging, the initial Gaussians); the matches come from the
    folder's ``matches.npz`` cache when it fits the images, else they are extracted again (into that cache).
    """
    from sparseags.session import build_pipeline

    if not isinstance(info, RunInfo):
        info = inspect_run(Path(info), scene)
    pipeline = build_pipeline(info.scene_dir, info.cfg, match_cache=info.folder / MATCHES, restoring=True)
    try:
        pipeline.load_state_dict(info.state)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
        name = FINAL_STATE if info.kind == "complete" else checkpoint_path(Path(".")).as_posix()
        raise RunFolderError(
            f"{info.folder / name}: the pipeline state cannot be restored by this version ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})"
        ) from None
    return pipeline


def fresh_sibling(folder: Path, suffix: str = "rerun") -> Path:
    """``<folder>_<suffix>``, or with a number, that does not exist yet (where a re-run's files go)."""
    folder = Path(folder).resolve()
    candidate = folder.with_name(f"{folder.name}_{suffix}")
    number = 2
    while candidate.exists():
        candidate = folder.with_name(f"{folder.name}_{suffix}{number}")
        number += 1
    return candidate
