"""Development probe of the joint loop (docs/BENCHMARKS.md, "Pose solver"): one reconstruction from a bench
preset, with the pose metrics every 25 steps.

    python scripts/joint_probe.py SCENE TAG [key=value ...]        # SCENE: a ycb-dev name or scan24
    AVG=1 python scripts/joint_probe.py ...                         # start from the learned-match rotation average
    AVG=1 LOCK=1 python scripts/joint_probe.py ...                  # ... and keep those rotations (centres move)

It drives the same Reconstruction as the pipeline; the shipped measurement is `python main.py eval`.
"""

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparseags.config import load_config  # noqa: E402
from sparseags.metrics import per_view_rotation_error_deg, pose_metrics  # noqa: E402
from sparseags.recon import Reconstruction  # noqa: E402
from sparseags.scene import load_scene  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent.parent / "shared" / "bench"


def main() -> None:
    name, tag, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    root = BENCH / ("dtu-dev/scan24" if name == "scan24" else f"ycb-dev/{name}")
    scene = load_scene(root, init=os.environ.get("PRESET", "raydiff_like"))
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "default.yaml", overrides)
    gt = torch.as_tensor(scene.w2c_gt)
    start_w2c, report = None, None
    if os.environ.get("AVG"):
        from sparseags.learned_matches import RotationSettings, rotation_averaging_init

        start_w2c, report = rotation_averaging_init(scene, scene.w2c_init, scene.flags, RotationSettings())
        averaged = pose_metrics(torch.as_tensor(start_w2c), gt)
        print(
            "averaged", report.summary()["pairs_gated"], {k: round(averaged[k], 1) for k in ("rot5", "rot15", "cc10")}
        )
    recon = Reconstruction(scene, cfg, w2c_init=start_w2c)
    if os.environ.get("LOCK") and report is not None:
        for pair in report.pairs:
            if pair.gated:
                recon.rotation_locked[[pair.i, pair.j]] = True
    started = time.time()
    first = pose_metrics(torch.as_tensor(scene.w2c_init), gt)
    rows = []
    while not recon.done:
        recon.step(25)
        w2c = recon.current_w2c().detach().double()
        metrics = pose_metrics(w2c, gt)
        mean_error = float(per_view_rotation_error_deg(w2c, gt).numpy().mean())
        rows.append(
            (recon.step_count, *(round(metrics[k], 1) for k in ("rot5", "rot15", "cc10")), round(mean_error, 2))
        )
    print(
        tag,
        name,
        "time",
        round(time.time() - started, 1),
        "start",
        {k: round(first[k], 1) for k in ("rot5", "rot15", "cc10")},
    )
    for row in rows[::4] + [rows[-1]]:
        print("  ", row)
    passes = [(p["step"], np.round(p["focal_scale"], 3).tolist()) for p in recon.solver_passes]
    print("FINAL", tag, name, rows[-1], "solver passes", passes)


if __name__ == "__main__":
    main()
