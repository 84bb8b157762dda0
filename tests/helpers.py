"""Small pieces shared by several test modules (not a test module itself)."""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent

# A tiny, fast full-pipeline configuration (outlier stage on, every candidate accepted: the official rule
# with a negative threshold) for window tests.
FAST_PIPELINE = [
    "recon.iters=6",
    "recon.num_pts=300",
    "recon.resolution_schedule=[[0.0,32]]",
    "outliers.round_iters=4",
    "outliers.score=mse",
    "outliers.rule=paper",
    "outliers.threshold=-1",
    "lpips.weights_dir=/nonexistent/lpips",
    "search.stage_steps=[3,3,3]",
    "search.stage_resolution=[16,16,16]",
    "search.keep_min=4",
    "search.n_azimuth=8",
    "search.align_copies=4",
    "search.align_steps=3",
    "scene.resolution=32",
    "pipeline.outliers=true",
    "prior.enabled=false",
    "pipeline.rotation_averaging=false",
    "device=cpu",
]


class TouchOnUnpickle:
    """Unpickling this object creates a file: a stand-in for any code a shared checkpoint could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def run_gui_script(scene: Path, out: Path, script: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    """``main.py gui --script`` in a subprocess, single-threaded (window tests share the cores)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    command = [sys.executable, "main.py", "gui", "--scene", str(scene), "--out", str(out), "--script", str(script)]
    return subprocess.run([*command, *overrides], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def plain_digest(value: Any) -> str:
    """SHA-256 of plain data's content (tensors by dtype, shape and values; NaN equals NaN), independent of
    how a file holding it was pickled: what "the same final state" means."""
    digest = hashlib.sha256()

    def feed(item: Any) -> None:
        if isinstance(item, dict):
            digest.update(b"{")
            for key in sorted(item, key=repr):
                feed(key)
                feed(item[key])
            digest.update(b"}")
        elif isinstance(item, (list, tuple)):
            digest.update(b"[" if isinstance(item, list) else b"(")
            for element in item:
                feed(element)
            digest.update(b"]")
        elif isinstance(item, torch.Tensor):
            data = item.detach().cpu().contiguous()
            if data.dtype == torch.bfloat16:
                data = data.float()
            if data.is_floating_point():  # NaN payload bits may differ: hash where the NaNs are, then zeros
                digest.update(torch.isnan(data).numpy().tobytes())
                data = torch.nan_to_num(data, nan=0.0)
            digest.update(f"T{data.dtype}{tuple(data.shape)}".encode())
            digest.update(data.numpy().tobytes())
        elif isinstance(item, float) and item != item:
            digest.update(b"nan")
        else:
            digest.update(repr(item).encode())

    feed(value)
    return digest.hexdigest()
