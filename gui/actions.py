"""What the debugger's buttons do to the pipeline. Every function here runs on the engine thread
(through :meth:`gui.engine.EngineWorker.call`, ``swap`` or ``start_task``) and never touches DearPyGui.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from sparseags import artifacts
from sparseags.config import Config, config_to_dict
from sparseags.errors import UserError

__all__ = [
    "CheckpointError",
    "OverlayData",
    "TurntableProgress",
    "export_cameras",
    "export_gaussians",
    "export_mesh",
    "load_checkpoint",
    "overlay_data",
    "read_checkpoint",
    "rebuilt",
    "save_checkpoint",
    "scene_fingerprint",
    "turntable_job",
    "write_decisions",
]

CHECKPOINT_FORMAT = "sparseags-gui-checkpoint/2"


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot be used."""


def rebuilt(pipeline: Any, seed: Optional[int] = None) -> Any:
    """A fresh pipeline on the same scene (same LPIPS model and prior), optionally with a new seed."""
    from sparseags.pipeline import Pipeline

    cfg: Config = copy.deepcopy(pipeline.cfg)
    if seed is not None:
        cfg.seed = int(seed)
    fresh = Pipeline(
        pipeline.scene,
        cfg,
        device=pipeline.device,
        lpips_metric=pipeline.lpips,
        prior_hook_factory=pipeline.prior_hook_factory,
    )
    # Keep the hand-edited flags (and their log entries, so decisions.json still replays them); the
    # other decisions concerned the discarded run.
    fresh.restart(pipeline.initial_flags)
    fresh.decisions = [dict(d) for d in pipeline.decisions if d.get("action") == "set_flag"]
    return fresh


# One checkpoint format for the debugger and the headless run (sparseags/run_state.py): plain data only
# (numpy arrays as tensors), read with torch.load(weights_only=True), with a scene fingerprint.
from sparseags.run_state import fingerprint_mismatch as _fingerprint_mismatch  # noqa: E402
from sparseags.run_state import from_plain as _from_plain  # noqa: E402
from sparseags.run_state import (  # noqa: E402
    load_plain,
    save_plain,
    scene_fingerprint,  # noqa: E402,F401
)


def save_checkpoint(pipeline: Any, path: Path, scene_dir: Path) -> Path:
    """``torch.save`` of the pipeline state (plain data only), its config, scene folder and scene
    fingerprint, written atomically."""
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "scene_dir": str(scene_dir),
        "config": config_to_dict(pipeline.cfg),
        "scene": scene_fingerprint(pipeline.scene),
        "pipeline": pipeline.state_dict(),
    }
    return save_plain(payload, path, CheckpointError)


def read_checkpoint(path: Path) -> dict:
    """The payload of a checkpoint file, read with ``torch.load(weights_only=True)``: a file that needs
    anything but tensors and plain containers to unpickle is refused before any of it runs."""
    path = Path(path)
    payload = load_plain(path, CheckpointError)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        older = isinstance(payload, dict) and str(payload.get("format", "")).startswith("sparseags-gui-checkpoint/")
        raise CheckpointError(
            f"{path}: "
            + (
                "a checkpoint of an older format (no scene fingerprint); save it again"
                if older
                else "not a SparseAGS Studio debugger checkpoint"
            )
        )
    return _from_plain(payload)


def load_checkpoint(pipeline: Any, path: Path) -> Any:
    """A pipeline restored from a checkpoint written by :func:`save_checkpoint` (same scene required)."""
    path = Path(path)
    payload = read_checkpoint(path)
    mismatch = _fingerprint_mismatch(payload.get("scene"), scene_fingerprint(pipeline.scene))
    if mismatch is not None:
        raise CheckpointError(f"{path}: a checkpoint of another scene ({payload.get('scene_dir', '?')}): {mismatch}")
    try:
        state = payload["pipeline"]
        if len(state["initial_flags"]) != pipeline.num_views:
            raise CheckpointError(
                f"{path}: made for {len(state['initial_flags'])} views, the scene has {pipeline.num_views}"
            )
        fresh = rebuilt(pipeline, seed=int(payload["config"].get("seed", pipeline.cfg.seed)))
        fresh.load_state_dict(state)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: the checkpoint's pipeline state cannot be restored ({type(err).__name__}: {one_line_text(err)})"
        ) from None
    return fresh


@torch.no_grad()
def warm_renderer(backend: str) -> None:
    """One tiny CPU render on the calling thread, so that numba and the renderer's compiled kernels are
    loaded there.

    The window's thread must call this before the window exists: numba (llvmlite) and Mesa's software
    OpenGL (llvmpipe) each drive an LLVM, and the engine thread loading numba's kernels while the window
    compiles its shaders crashed the process (a segmentation fault, reproduced by opening a run in a fresh
    process: its first render is the engine thread's)."""
    from sparseags.render import render_gaussians
    from sparseags.render.api import resolve_backend

    if resolve_backend(backend, torch.device("cpu")) != "cpu":
        return
    means = torch.tensor([[0.0, 0.0, 3.0]])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    K = torch.tensor([[[8.0, 0.0, 4.0], [0.0, 8.0, 4.0], [0.0, 0.0, 1.0]]])
    render_gaussians(
        means,
        quats,
        torch.full((1, 3), 0.1),
        torch.full((1,), 0.5),
        torch.full((1, 1, 3), 0.5),
        torch.eye(4)[None],
        K,
        8,
        8,
        sh_degree=0,
        background=torch.ones(3),
        backend=backend,
    )


def one_line_text(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def write_decisions(pipeline: Any, out_dir: Path, source: Optional[dict] = None) -> Path:
    """decisions.json in the run's output folder (replayable with ``main.py run --decisions``); `source` names
    the run folder the debugger opened, when the decisions overrule a finished or interrupted run."""
    data: dict = {"decisions": list(pipeline.decisions)}
    if source:
        data["source_run"] = dict(source)
    return artifacts.write_json(Path(out_dir) / "decisions.json", data)


def export_gaussians(pipeline: Any, out_dir: Path) -> Path:
    return artifacts.export_gaussians(pipeline.recon, Path(out_dir) / "gaussians.ply")


def export_mesh(pipeline: Any, out_dir: Path) -> Path:
    return artifacts.export_mesh(pipeline.recon, Path(out_dir) / "mesh.glb", pipeline.cfg.pipeline.mesh_resolution)


CAMERA_FILES = ("cameras_updated.json", "colmap", "transforms.json")  # what artifacts.export_cameras writes


def export_cameras(pipeline: Any, out_dir: Path) -> list[Path]:
    """SparseAGS JSON, COLMAP text folder and nerfstudio transforms.json; returns the paths written."""
    out_dir = Path(out_dir)
    written = artifacts.export_cameras(pipeline.recon, pipeline.scene, out_dir)
    # the low-level writers return None: name the paths they write
    return [Path(w) if w is not None else out_dir / name for w, name in zip(written, CAMERA_FILES)]


@dataclass(frozen=True)
class OverlayData:
    """Inputs and renders of every view at the tile size, with the scores shown under each tile."""

    version_key: tuple
    targets: np.ndarray  # [V, h, w, 3] white-background inputs
    renders: np.ndarray  # [V, h, w, 3] renders at the current poses on white
    mse: list  # [V] live MSE at the tile size
    scores: Optional[dict]  # per-view scores of the full-resolution scorer (mse, lpips, ... ) or None
    scores_step: Optional[int]  # the reconstruction step the scores belong to


@torch.no_grad()
def overlay_data(pipeline: Any, size: int, rescore: bool, cache: dict) -> Optional[OverlayData]:
    """Per-view tiles for the overlay strip. `rescore` runs :meth:`Pipeline.score` (LPIPS: slower)."""
    recon = pipeline.recon
    if recon is None:
        return None
    shown, _ = pipeline.displayed_w2c()
    key = (id(pipeline), id(recon), recon.step_count, pipeline.total_steps, shown.round(9).tobytes())
    size = int(min(size, recon.width))
    images, _, K = recon.targets_at(size)
    height, width = images.shape[1:3]
    w2c = torch.as_tensor(shown, dtype=recon.current_w2c().dtype, device=recon.device)
    out = recon.render(w2c, K, width, height, torch.ones(3, device=recon.device))
    renders = out.rgb.clamp(0, 1).cpu().numpy()
    targets = images.cpu().numpy()
    mse = ((renders - targets) ** 2).mean(axis=(1, 2, 3)).tolist()
    scores, scores_step = cache.get("scores"), cache.get("scores_step")
    if cache.get("scores_key") != (id(pipeline), id(recon)):
        scores, scores_step = None, None
    if rescore and _final_scores_apply(pipeline, recon, shown):
        # a finished pipeline scored its final reconstruction as it ended (LPIPS of every view, seconds on a
        # CPU): those are the scores of what is shown, so a finished run opens without scoring again
        scores = {k: np.asarray(v, float) for k, v in pipeline.latest_scores.items()}
        scores_step = recon.step_count
        cache.update(scores=scores, scores_step=scores_step, scores_key=(id(pipeline), id(recon)))
    elif rescore or scores is None:
        if rescore:
            scores = {k: np.asarray(v, float) for k, v in pipeline.score(recon).items()}
            scores_step = recon.step_count
        elif pipeline.latest_scores is not None:
            scores = {k: np.asarray(v, float) for k, v in pipeline.latest_scores.items()}
            scores_step = None
        cache.update(scores=scores, scores_step=scores_step, scores_key=(id(pipeline), id(recon)))
    return OverlayData(key, targets, renders, mse, scores, scores_step)


def _final_scores_apply(pipeline: Any, recon: Any, shown: np.ndarray) -> bool:
    """The pipeline is done, `recon` is its final reconstruction shown at its own poses, and it has scores."""
    if not pipeline.done or recon is not pipeline.final_recon or pipeline.latest_scores is None:
        return False
    own = recon.current_w2c().detach().double().cpu().numpy()
    return bool(np.allclose(np.asarray(shown, dtype=np.float64), own, atol=1e-9))


@dataclass
class TurntableProgress:
    """Shared with the UI thread: plain ints written by the engine thread."""

    done: int = 0
    total: int = 0
    path: str = ""


def turntable_job(
    pipeline: Any,
    path: Path,
    frames: int,
    elevation_deg: float,
    radius: Optional[float],
    resolution: int,
    progress: TurntableProgress,
    fps: int = 30,
) -> Iterator[None]:
    """Render a turntable of the *current* Gaussians (frozen at the start) into an mp4, one frame per item.

    elevation_deg uses the kiui sign (negative = above); radius None = the input cameras' mean distance.
    The headless export's writer (artifacts.iter_recon_turntable): same cameras, field of view and encoding;
    the video is written to a temporary file beside `path` and renamed when complete.
    """
    recon = pipeline.recon
    if recon is None:
        raise ValueError("no reconstruction to record")
    if frames < 1 or resolution < 16:
        raise ValueError(f"turntable needs frames >= 1 and resolution >= 16, got {frames} and {resolution}")
    path = Path(path)
    progress.done, progress.total, progress.path = 0, int(frames), str(path)
    writer = artifacts.iter_recon_turntable(
        recon,
        path,
        frames=int(frames),
        resolution=int(resolution),
        elevation_deg=float(elevation_deg),
        radius=radius,
        fps=fps,
    )
    for done, _ in writer:
        progress.done = done
        yield None
    return path
