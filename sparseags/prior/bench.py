"""``python main.py bench prior``: time of one multi-view SDS step on randomly initialised Zero123 models.

One step = VAE-encode a rendered 256x256 image (with grad), one UNet call of batch 2V (no grad),
CFG per view and the mean over views, then backward to the rendered image, as in training. Cases:
"tiny" (the test model) and, unless `quick`, "full" (SD-1.x / zero123-xl-sized UNet 320-640-1280-1280,
cross-attention 768, and the SD VAE; random weights), both with V = 8 condition views (UNet batch 16)
at 32x32 latents. Peak RSS is the process high-water mark after each case (tiny runs first).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time

import torch

from sparseags.cameras import orbit_camera

from .ckpt_6dof import apply_6dof_weights
from .synthetic import (
    FULL,
    TINY,
    Zero123Spec,
    make_image_encoder,
    make_scheduler,
    make_unet,
    make_vae,
    random_6dof_state_dict,
)
from .zero123 import ClipInput, Zero123Guidance

NUM_VIEWS = 8


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def build_random_guidance(spec: Zero123Spec, device: str = "cpu") -> Zero123Guidance:
    """A guidance on random weights of size `spec`, loaded through the production 6-DoF mapping."""
    torch.manual_seed(0)
    unet = make_unet(spec)
    projection, _ = apply_6dof_weights(unet, random_6dof_state_dict(unet))
    clip_input = ClipInput(size=spec.clip_image_size, mean=(0.481, 0.458, 0.408), std=(0.269, 0.261, 0.276))
    return Zero123Guidance(
        unet, make_vae(spec), make_image_encoder(spec), clip_input, projection, make_scheduler(), device=device
    )


def bench_case(name: str, spec: Zero123Spec, steps: int) -> dict:
    start = time.perf_counter()
    guidance = build_random_guidance(spec)
    build_s = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    azimuths = torch.arange(NUM_VIEWS, dtype=torch.float64) * (360.0 / NUM_VIEWS)
    c2w = orbit_camera(torch.full((NUM_VIEWS,), -15.0), azimuths, 1.85, dtype=torch.float64)
    images = torch.rand(NUM_VIEWS, 3, 256, 256, generator=generator)
    start = time.perf_counter()
    guidance.set_conditions(images, c2w, torch.full((NUM_VIEWS, 2), 280.0))
    encode_s = time.perf_counter() - start
    target = orbit_camera(-30.0, 20.0, 1.85, dtype=torch.float64)
    step_times, cpu_times = [], []
    for _ in range(steps):
        rendered = torch.rand(1, 3, 256, 256, generator=generator).requires_grad_(True)
        start, cpu_start = time.perf_counter(), time.process_time()
        loss, _ = guidance.sds_loss(rendered, target, 280.0, step_ratio=0.5, generator=generator)
        loss.backward()
        step_times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)  # all threads; robust to other processes' load
        if not torch.isfinite(rendered.grad).all():
            raise RuntimeError(f"bench {name}: non-finite gradient")
    unet_params = sum(p.numel() for p in guidance.unet.parameters())
    return {
        "case": name,
        "unet_params_M": round(unet_params / 1e6, 1),
        "views": NUM_VIEWS,
        "unet_batch": 2 * NUM_VIEWS,
        "latent": "4x32x32",
        "build_s": round(build_s, 2),
        "encode_conditions_s": round(encode_s, 2),
        "sds_step_s": [round(t, 2) for t in step_times],
        "sds_step_median_s": round(statistics.median(step_times), 2),
        "sds_step_cpu_median_s": round(statistics.median(cpu_times), 2),
        "peak_rss_mib": round(_peak_rss_mib()),
    }


def bench_prior_main(json_out: bool = False, quick: bool = False) -> int:
    """Run the prior benchmark on the CPU and print a table (or JSON); returns the exit status."""
    cases = [("tiny", TINY, 3)] + ([] if quick else [("full", FULL, 2)])
    header = {
        "command": "python main.py bench prior" + (" --quick" if quick else ""),
        "device": "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    results = [bench_case(name, spec, steps) for name, spec, steps in cases]
    if json_out:
        print(json.dumps([header | row for row in results], indent=1))  # one JSON list of rows
        return 0
    print(" ".join(f"{k}={v}" for k, v in header.items()))
    print(
        f"{'case':6} {'UNet M':>7} {'batch':>5} {'build s':>8} {'encode s':>9} {'SDS wall s':>11} "
        f"{'SDS CPU s':>10} {'peak RSS MiB':>13}"
    )
    for r in results:
        print(
            f"{r['case']:6} {r['unet_params_M']:7.1f} {r['unet_batch']:5d} {r['build_s']:8.2f} "
            f"{r['encode_conditions_s']:9.2f} {r['sds_step_median_s']:11.2f} {r['sds_step_cpu_median_s']:10.2f} "
            f"{r['peak_rss_mib']:13d}"
        )
    return 0
