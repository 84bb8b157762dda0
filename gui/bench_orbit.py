"""Orbit-view benchmark (``python main.py bench orbit``): frames per second of the GLSL splat view.

Scene: ``sparseags.render.synthetic.random_object_scene`` with 20k Gaussians (SH degree 3, uniform
in a ball of radius 0.6, scales log-uniform in [0.005, 0.03], opacities in [0.3, 1]) seen at 512x512
from the default orbit camera (radius 2.5, fovy 49.1 deg). Two loops, each frame = draw + read-back
to ``uint8 [H, W, 3]`` (what the GUI uploads to DearPyGui):

* paused: the same view every frame (no re-sort, no SH re-evaluation);
* orbiting: ``orbit(5, 0)`` (0.25 deg) per frame with ``resort_angle_deg = 0``, so every frame
  re-sorts and re-evaluates the SH colours.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np

from gui.orbit import OrbitCamera
from gui.splat_view import GLUnavailableError, SplatView

BENCH_SIZE = 512
BENCH_GAUSSIANS = 20_000
TARGET_PAUSED_FPS = 30.0


def _time_frames(view: SplatView, camera: OrbitCamera, frames: int, orbit_dx: float) -> dict[str, float]:
    """Render ``frames`` frames (after one warm-up); mean wall time and the per-stage means."""
    view.render(camera.w2c(), camera.K())
    stages: dict[str, list[float]] = {}
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(frames):
        if orbit_dx:
            camera.orbit(orbit_dx, 0.0)
        view.render(camera.w2c(), camera.K())
        for name, value in view.last_timings.items():
            stages.setdefault(name, []).append(value)
    seconds = (time.perf_counter() - start) / frames
    # CPU time of this process (Python + llvmpipe's threads) per frame: unlike wall time it barely
    # depends on how busy the shared cores are; wall time on idle cores is roughly cpu_ms / threads.
    cpu_ms = 1e3 * (time.process_time() - cpu_start) / frames
    result = {"fps": 1.0 / seconds, "ms_per_frame": 1e3 * seconds, "cpu_ms_per_frame": cpu_ms}
    result.update({name: float(np.mean(values)) for name, values in stages.items()})
    return result


def run_orbit_benchmark(quick: bool = False, num_gaussians: int = BENCH_GAUSSIANS,
                        size: int = BENCH_SIZE) -> dict[str, Any]:
    """Measure the paused and orbiting frame rates; raises GLUnavailableError without GL."""
    from sparseags.render.synthetic import random_object_scene

    frames = 10 if quick else 40
    scene = random_object_scene(num_gaussians, sh_degree=3, radius=0.6, scale_range=(0.005, 0.03), seed=0)
    camera = OrbitCamera(size, size, radius=2.5, fovy_deg=49.1)
    camera.from_angle(-20.0, 30.0)
    with SplatView(size, size) as view:
        view.set_gaussians(*scene.tensors(), sh_degree=3)
        paused = _time_frames(view, camera, frames, orbit_dx=0.0)
        sorts_paused = view.sort_count
        view.resort_angle_deg = 0.0
        orbiting = _time_frames(view, camera, frames, orbit_dx=5.0)
        renderer = view.renderer_name
        sorts_orbiting = view.sort_count - sorts_paused
    return {
        "renderer": renderer,
        "width": size, "height": size, "num_gaussians": num_gaussians, "sh_degree": 3, "frames": frames,
        "paused": paused, "orbiting": orbiting, "sorts_paused": sorts_paused, "sorts_orbiting": sorts_orbiting,
        "target_paused_fps": TARGET_PAUSED_FPS, "meets_target": paused["fps"] >= TARGET_PAUSED_FPS,
        "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
        "display": os.environ.get("DISPLAY", ""),
    }


def bench_orbit_main(json_out: bool = False, quick: bool = False) -> int:
    """CLI entry: print the results (JSON or text); 0 on success, 2 when no GL context exists."""
    try:
        result = run_orbit_benchmark(quick=quick)
    except GLUnavailableError as err:
        print(f"bench orbit: {err}", file=sys.stderr)
        return 2
    if json_out:
        print(json.dumps(result, indent=2))
        return 0
    print(f"orbit view: {result['renderer']}, {result['num_gaussians']} Gaussians (SH 3), "
          f"{result['width']}x{result['height']}, {result['frames']} frames, "
          f"{result['cpu_count']} CPUs, load average {result['load_average_1min']:.1f}")
    for name in ("paused", "orbiting"):
        stats = result[name]
        stages = ", ".join(f"{key} {value:.1f}" for key, value in stats.items()
                           if key.endswith("_ms") or key == "cpu_ms_per_frame")
        print(f"  {name:9s} {stats['fps']:6.1f} FPS  {stats['ms_per_frame']:7.1f} ms/frame  ({stages})")
    verdict = "meets" if result["meets_target"] else "below"
    print(f"  paused target {result['target_paused_fps']:.0f} FPS: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(bench_orbit_main(json_out="--json" in sys.argv, quick="--quick" in sys.argv))
