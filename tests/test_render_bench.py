"""The render benchmark's baseline renders what our backend renders, and the table formats."""

from __future__ import annotations

from sparseags.bench import format_render_table, render_baseline
from sparseags.render import render_gaussians
from sparseags.render.synthetic import random_object_scene, ring_cameras


def test_baseline_matches_cpu_backend():
    scene = random_object_scene(400, sh_degree=3, seed=0)
    viewmats, Ks = ring_cameras(1, 48, 40)
    baseline = render_baseline(scene, viewmats, Ks, 48, 40)
    ours = render_gaussians(*scene.tensors(), viewmats, Ks, 48, 40, backend="cpu").rgb
    assert baseline.shape == ours.shape == (1, 40, 48, 3)
    assert ours.max() > 0.3
    assert (baseline - ours).abs().max() < 1e-4


def test_format_render_table():
    row = {
        "n": 5000,
        "res": 256,
        "ours_fwd_ms": 10.0,
        "ours_fwd_bwd_ms": 25.0,
        "baseline_fwd_ms": 300.0,
        "baseline_fwd_bwd_ms": 750.0,
        "ratio_fwd": 30.0,
        "ratio_fwd_bwd": 30.0,
        "ratio_fwd_cpu": 28.0,
        "ratio_fwd_bwd_cpu": 29.0,
        "ours_fwd_bwd_cpu_ms": 24.0,
        "ours_batch8_fwd_bwd_ms": 180.0,
        "batch8_over_8_single": 0.9,
        "peak_rss_mb": 700.0,
        "render_peak_delta_mb": 55.0,
        "batch8_peak_rss_mb": 950.0,
        "batch8_render_peak_delta_mb": 290.0,
    }
    table = format_render_table([row])
    assert "| 5000 | 256 | 10.0 | 25.0 | 300.0 | 750.0 | 30.0x / 28.0x | 30.0x / 29.0x |" in table
    assert "one view 700 MB" in table
