"""``python main.py run``: the pipeline without a window, with a progress bar and every artefact on disk.

Writes into the output folder: ``config.yaml`` (resolved, with the seed), ``gaussians.ply``,
``cameras_updated.json`` (+ ``colmap/`` and ``transforms.json``), ``mesh.glb``, ``turntable.mp4``,
``overlay.png``, ``lpips_bars.png``, ``search_<id>.png`` per searched outlier, ``decisions.json`` (the
manual decisions, replayable with ``--decisions``) and ``metrics.json``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

from sparseags import artifacts
from sparseags.config import Config, read_yaml, resolve_device, save_config
from sparseags.errors import UserError


class DecisionFileError(UserError):
    """A --decisions file that cannot be read."""


def load_decisions(path: str | Path) -> list[dict]:
    """Read a decision log: a JSON/YAML list of entries, or an object with a "decisions" list."""
    data = read_yaml(path, DecisionFileError, "decision file")
    if isinstance(data, dict):
        data = data.get("decisions")
    if not isinstance(data, list) or not all(isinstance(e, dict) and "action" in e for e in data):
        raise DecisionFileError(f"{path}: expected a list of decisions, each with an 'action'")
    return data


def load_lpips_for(cfg: Config, device: str) -> Any:
    """The LPIPS metric, or None when its weights are missing and nothing requires it (metrics then omit it)."""
    from sparseags.lpips_model import LpipsWeightsError, lpips_from_config

    try:
        return lpips_from_config(cfg.lpips, device)
    except LpipsWeightsError:
        if cfg.pipeline.outliers and cfg.outliers.score == "lpips":
            raise
        print("notice: LPIPS weights not found; per-view LPIPS is omitted (see checkpoints/README.md)",
              file=sys.stderr)
        return None


def prior_factory_for(cfg: Config, scene: Any, device: str):
    """A factory of prior hooks when the generative prior is enabled, else None (with a one-line notice)."""
    try:
        from sparseags.prior import make_prior_hook_factory
    except ImportError:
        return None
    factory, notice = make_prior_hook_factory(cfg, scene, device)
    if notice:
        print(f"notice: {notice}", file=sys.stderr)
    return factory


def build_pipeline(scene_dir: Path, cfg: Config, match_cache: Optional[Path] = None):
    """Load the scene and build the pipeline exactly as the headless run and the debugger do."""
    from sparseags.pipeline import Pipeline
    from sparseags.scene import load_scene

    device = resolve_device(cfg)
    scene = load_scene(Path(scene_dir), resolution=cfg.scene.resolution, init=cfg.scene.init)
    lpips_metric = load_lpips_for(cfg, device)
    prior_factory = prior_factory_for(cfg, scene, device)
    return Pipeline(scene, cfg, device=device, lpips_metric=lpips_metric, prior_hook_factory=prior_factory,
                    match_cache=match_cache)


def _progress_bar(enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=None, unit="step", dynamic_ncols=True, file=sys.stderr)


def run_pipeline(pipeline: Any, progress: bool = True, budget: int = 5) -> float:
    """Step the pipeline to the end; returns the elapsed seconds."""
    start = time.perf_counter()
    bar = _progress_bar(progress)
    last_loss = float("nan")
    while not pipeline.done:
        event = pipeline.step(budget)
        if "loss" in event:
            last_loss = event["loss"]
        if bar is not None:
            recon = pipeline.recon
            bar.set_description(pipeline.phase_label(), refresh=False)
            bar.set_postfix(step=f"{recon.step_count}/{recon.iters}" if recon is not None else "-",
                            loss=f"{last_loss:.4g}", gaussians=recon.gaussians.num_gaussians if recon else 0,
                            elapsed=f"{time.perf_counter() - start:.0f}s", refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    return time.perf_counter() - start


def write_outputs(pipeline: Any, out: Path, elapsed_s: float, log=print) -> dict:
    """Every artefact of a finished pipeline into `out` (each write atomic)."""
    cfg = pipeline.cfg
    recon = pipeline.final_recon
    scene = pipeline.scene
    artifacts.export_gaussians(recon, out / "gaussians.ply")
    artifacts.export_cameras(recon, scene, out)
    snapshot = pipeline.snapshot(with_recon=False)
    artifacts.write_overlay(out / "overlay.png", recon, scene, pipeline.latest_scores)
    artifacts.write_lpips_bars(out / "lpips_bars.png", snapshot, scene)
    artifacts.write_search_heatmaps(out, pipeline)
    artifacts.write_json(out / "decisions.json", {"decisions": pipeline.decisions})
    if cfg.pipeline.export_mesh:
        from sparseags.mesh import MeshError

        try:
            artifacts.export_mesh(recon, out / "mesh.glb", cfg.pipeline.mesh_resolution)
        except MeshError as err:
            log(f"notice: no mesh written: {err}")
    if cfg.pipeline.export_video:
        artifacts.export_turntable(recon, out / "turntable.mp4", frames=cfg.pipeline.turntable_frames,
                                   resolution=cfg.pipeline.turntable_resolution)
    metrics = artifacts.compute_metrics(pipeline, pipeline.lpips, elapsed_s)
    artifacts.write_json(out / "metrics.json", metrics)
    return metrics


def run_headless(scene_dir: Path, out: Path, cfg: Config, decisions: Optional[str] = None,
                 progress: bool = True) -> dict:
    """Load, run and export; returns the metrics dict."""
    out = Path(out)
    entries = load_decisions(decisions) if decisions else []  # check the inputs before any heavy work
    out.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(scene_dir, cfg, match_cache=out / "matches.npz")  # matches cached in the run folder
    if entries:
        pipeline.queue_decisions(entries)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    elapsed = run_pipeline(pipeline, progress=progress)
    metrics = write_outputs(pipeline, out, elapsed)
    print(summary_line(metrics, out))
    return metrics


def summary_line(metrics: dict, out: Path) -> str:
    parts = [f"done in {metrics['time_s']:.0f} s"]
    if "pose" in metrics:
        init, final = metrics["pose"]["init"], metrics["pose"]["final"]
        parts.append(f"Rot@15 {init['rot15']:.1f} -> {final['rot15']:.1f}, CC@0.1 {init['cc10']:.1f} -> {final['cc10']:.1f}")
    flagged = metrics.get("outliers", {}).get("flagged", [])
    if flagged:
        parts.append(f"outliers {', '.join(flagged)}")
    psnrs = [v["psnr"] for v in metrics["views"].values() if v["flag"] == 1]
    if psnrs:
        parts.append(f"input PSNR {sum(psnrs) / len(psnrs):.2f} dB")
    if "novel" in metrics:
        novel = metrics["novel"]
        refined = novel.get("pose_refined")
        parts.append(f"novel PSNR {novel['psnr']:.2f} dB"
                     + (f" ({refined['psnr']:.2f} dB pose-refined)" if refined else ""))
    return "; ".join(parts) + f"; outputs in {out}"
