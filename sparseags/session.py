"""One way to open a scene as a running :class:`~sparseags.pipeline.Pipeline`, shared by every front end.

The headless run (:mod:`sparseags.headless`), the evaluation (:mod:`sparseags.evaluate`) and the debugger
(``gui/``) all build their pipeline, LPIPS metric and prior here, so the three cannot drift apart: a scene
opened in the debugger is the scene ``main.py run`` optimises, with the same config, device and notices.

This module belongs to the engine: it imports nothing from ``gui/`` (tests/test_layering.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sparseags.config import Config, resolve_device

__all__ = ["build_pipeline", "load_lpips_for", "prior_factory_for"]


def load_lpips_for(cfg: Config, device: str) -> Any:
    """The LPIPS metric, or None when its weights are missing and nothing requires it (metrics then omit it)."""
    from sparseags.lpips_model import LpipsWeightsError, lpips_from_config

    try:
        return lpips_from_config(cfg.lpips, device)
    except LpipsWeightsError:
        if cfg.pipeline.outliers and cfg.outliers.score == "lpips":
            raise
        print("notice: LPIPS weights not found; per-view LPIPS is omitted (see checkpoints/README.md)", file=sys.stderr)
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


def build_pipeline(scene_dir: Path, cfg: Config, match_cache: Path | None = None, restoring: bool = False):
    """Load the scene and build the pipeline exactly as the headless run and the debugger do.

    `restoring`: the caller loads a saved state next (a run folder, a checkpoint), which holds the starting
    poses, so the learned-match rotation averaging is not run again.
    """
    from sparseags.pipeline import Pipeline
    from sparseags.scene import load_scene

    device = resolve_device(cfg)
    scene = load_scene(Path(scene_dir), resolution=cfg.scene.resolution, init=cfg.scene.init)
    lpips_metric = load_lpips_for(cfg, device)
    prior_factory = prior_factory_for(cfg, scene, device)
    return Pipeline(
        scene,
        cfg,
        device=device,
        lpips_metric=lpips_metric,
        prior_hook_factory=prior_factory,
        match_cache=match_cache,
        restoring=restoring,
    )
