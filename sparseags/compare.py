"""Two runs of one scene side by side: per-view pose errors (or pose changes), renders, decisions, configs.

The debugger's compare tab (``gui --run A --compare B``, or two rows of an evaluation table) shows a
:class:`RunComparison`, built here from the two pipelines as they ended (:func:`compare_pipelines`). Plain
data only; the GUI never touches the pipelines for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sparseags.config import config_to_dict
from sparseags.errors import UserError
from sparseags.run_state import fingerprint_mismatch, scene_fingerprint

# keys Pipeline._log adds to every decision: when it was taken, not what it decided
DECISION_CONTEXT = ("phase", "total_steps", "elapsed_s")


class CompareError(UserError, ValueError):
    """Two runs that cannot be compared (another scene), in one line."""


@dataclass(frozen=True)
class RunComparison:
    """Run A against run B on the same scene (arrays are per view, in the scene's view order).

    With ground truth, ``rot`` / ``centre`` are errors against it (degrees after the best global rotation;
    similarity-aligned centre error in GT scene radii) and ``metrics`` holds Rot@5 / Rot@15 / CC@0.1;
    without it they are each run's change from its own starting poses (degrees; centre shift over the
    cameras' mean distance to their centroid) and ``metrics`` is empty.
    """

    labels: tuple[str, str]
    ids: list[str]
    has_gt: bool
    rot: tuple[np.ndarray, np.ndarray]  # [V] each
    centre: tuple[np.ndarray, np.ndarray]  # [V] each
    flags: tuple[np.ndarray, np.ndarray]  # [V] int, 1 = inlier at the end
    metrics: tuple[dict, dict]
    phases: tuple[str, str]
    decisions: list[tuple[str, str, str]]  # (what, in A, in B), only where they differ
    config: list[tuple[str, str, str]]  # (dotted key, A, B), only where they differ
    targets: np.ndarray  # [V, h, w, 3] the inputs on white
    renders: tuple[np.ndarray, np.ndarray]  # [V, h, w, 3] each run's render of every view at its own pose


def config_diff(a: dict, b: dict, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, value in a, value in b) for every leaf that differs, sorted by key."""
    rows = []
    for key in sorted(set(a) | set(b), key=str):
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict):
            rows += config_diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            rows.append((f"{prefix}{key}", repr(va), repr(vb)))
    return rows


def _result_recon(pipeline: Any) -> Any:
    return pipeline.final_recon if pipeline.final_recon is not None else pipeline.recon


def _pose_numbers(w2c: np.ndarray, start: np.ndarray, gt: Any) -> tuple[np.ndarray, np.ndarray, dict]:
    from sparseags.cameras import rotation_angle_deg
    from sparseags.metrics import pose_errors

    if gt is not None:
        return pose_errors(w2c, np.asarray(gt, dtype=np.float64))
    rot = np.array(
        [float(rotation_angle_deg(torch.as_tensor(a[:3, :3]), torch.as_tensor(b[:3, :3]))) for a, b in zip(w2c, start)]
    )
    centres, starts = np.linalg.inv(w2c)[:, :3, 3], np.linalg.inv(start)[:, :3, 3]
    scale = max(float(np.linalg.norm(starts - starts.mean(0), axis=1).mean()), 1e-9)
    return rot, np.linalg.norm(centres - starts, axis=1) / scale, {}


def decision_rows(a: Any, b: Any) -> list[tuple[str, str, str]]:
    """The decisions of two pipelines on the same views, where they differ: the final inlier flag, the
    leave-one-out verdict, the search, an ambiguous search, the arbitration's choice, and each manual decision
    that only one of them made."""
    ids = list(a.scene.ids)

    def per_view(p: Any) -> dict[str, dict[str, str]]:
        recon = _result_recon(p)
        flagged = set(p.loo.outliers) if p.loo is not None and p.loo.done else set()
        rows: dict[str, dict[str, str]] = {}
        for v, view_id in enumerate(ids):
            search = p.searches.get(v)
            arb = p.arbitration
            rows[view_id] = {
                "final flag": "inlier" if recon is not None and int(recon.flags[v]) == 1 else "outlier",
                "leave-one-out": "outlier" if v in flagged else "-",
                "searched": "yes" if v in p.search_order else "-",
                "ambiguous": "yes" if search is not None and search.done and search.ambiguous else "-",
                "arbitration": (arb.view_choice(v) or "-") if arb is not None and v in arb.outliers else "-",
            }
        return rows

    rows_a, rows_b = per_view(a), per_view(b)
    out = []
    for view_id in ids:
        for what, value_a in rows_a[view_id].items():
            value_b = rows_b[view_id][what]
            if value_a != value_b:
                out.append((f"view {view_id}: {what}", value_a, value_b))

    def describe(entry: dict) -> str:  # what was decided, without when (Pipeline._log adds the context)
        return ", ".join(f"{k}={v}" for k, v in entry.items() if k not in DECISION_CONTEXT)

    manual_a = [describe(d) for d in a.decisions]
    manual_b = [describe(d) for d in b.decisions]
    out += [("manual decision", text, "-") for text in manual_a if text not in manual_b]
    out += [("manual decision", "-", text) for text in manual_b if text not in manual_a]
    return out


@torch.no_grad()
def _renders(pipeline: Any, tile: int) -> tuple[np.ndarray, np.ndarray]:
    recon = _result_recon(pipeline)
    size = int(min(tile, recon.width))
    images, _, K = recon.targets_at(size)
    height, width = images.shape[1:3]
    out = recon.render(recon.current_w2c().detach(), K, width, height, torch.ones(3, device=recon.device))
    return images.cpu().numpy(), out.rgb.clamp(0, 1).cpu().numpy()


def compare_pipelines(a: Any, b: Any, labels: tuple[str, str], tile: int = 160) -> RunComparison:
    """A :class:`RunComparison` of two pipelines on the same scene (as they are now: a finished run's end,
    an interrupted run's checkpoint). A CompareError when the scenes differ."""
    mismatch = fingerprint_mismatch(scene_fingerprint(a.scene), scene_fingerprint(b.scene))
    if mismatch is not None:
        raise CompareError(f"{labels[1]} is a run of another scene than {labels[0]}: {mismatch}")
    gt = a.scene.w2c_gt
    numbers = []
    for p in (a, b):
        recon = _result_recon(p)
        w2c = recon.current_w2c().detach().double().cpu().numpy()
        numbers.append(_pose_numbers(w2c, np.asarray(p.scene.w2c_init, dtype=np.float64), gt))
    targets, render_a = _renders(a, tile)
    _, render_b = _renders(b, tile)
    return RunComparison(
        labels=(str(labels[0]), str(labels[1])),
        ids=list(a.scene.ids),
        has_gt=gt is not None,
        rot=(numbers[0][0], numbers[1][0]),
        centre=(numbers[0][1], numbers[1][1]),
        flags=tuple(np.asarray(_result_recon(p).flags, dtype=np.int64).copy() for p in (a, b)),
        metrics=(numbers[0][2], numbers[1][2]),
        phases=(a.phase_label(), b.phase_label()),
        decisions=decision_rows(a, b),
        config=config_diff(config_to_dict(a.cfg), config_to_dict(b.cfg)),
        targets=targets,
        renders=(render_a, render_b),
    )
