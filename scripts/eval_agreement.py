"""How well a quick evaluation agrees with a full one (issue 25: the quick preset).

Reads two evaluation folders (``main.py eval --out``), pairs their complete runs by scene x preset, and
prints, per pose metric (final Rot@5, Rot@15, CC@0.1) and novel-view PSNR:

* the Spearman rank correlation of the paired runs (does the quick preset order the scenes the same way?);
* the share of runs whose verdict agrees (final above, equal to or below the start: does refinement help
  this scene?);
* the mean of each side and the mean absolute difference;
* per preset, both sides' means (does the quick preset rank the presets the same way?).

    python scripts/eval_agreement.py outputs/eval25_quick outputs/eval22_rd [--markdown]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparseags.evaluate import read_evaluation  # noqa: E402

METRICS = (("final_rot5", "init_rot5"), ("final_rot15", "init_rot15"), ("final_cc10", "init_cc10"), ("psnr", None))


def paired_runs(quick_dir: Path, full_dir: Path) -> list[tuple[str, str, dict, dict]]:
    """(scene, preset, quick numbers, full numbers) for every scene x preset complete in both folders."""
    quick = {(r.scene, r.preset): r for r in read_evaluation(quick_dir) if r.status == "complete"}
    full = {(r.scene, r.preset): r for r in read_evaluation(full_dir) if r.status == "complete"}
    return [(s, p, quick[(s, p)].metrics, full[(s, p)].metrics) for s, p in sorted(set(quick) & set(full))]


def _sign(value: float) -> int:
    return 0 if abs(value) < 1e-9 else (1 if value > 0 else -1)


def agreement(pairs: list[tuple[str, str, dict, dict]]) -> list[dict]:
    from scipy.stats import spearmanr

    rows = []
    for key, start in METRICS:
        q = np.array([a[key] for _, _, a, _ in pairs], dtype=float)
        f = np.array([b[key] for _, _, _, b in pairs], dtype=float)
        ok = np.isfinite(q) & np.isfinite(f)
        rho = float(spearmanr(q[ok], f[ok]).statistic) if ok.sum() >= 3 else math.nan
        verdict = math.nan
        if start is not None:
            same = [
                _sign(a[key] - a[start]) == _sign(b[key] - b[start])
                for _, _, a, b in pairs
                if all(math.isfinite(x) for x in (a[key], a[start], b[key], b[start]))
            ]
            verdict = 100.0 * float(np.mean(same)) if same else math.nan
        rows.append(
            {
                "metric": key,
                "runs": int(ok.sum()),
                "spearman": rho,
                "same_verdict_pct": verdict,
                "quick_mean": float(q[ok].mean()) if ok.any() else math.nan,
                "full_mean": float(f[ok].mean()) if ok.any() else math.nan,
                "mean_abs_diff": float(np.abs(q[ok] - f[ok]).mean()) if ok.any() else math.nan,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("quick")
    parser.add_argument("full")
    args = parser.parse_args()
    pairs = paired_runs(Path(args.quick), Path(args.full))
    if not pairs:
        print("no scene x preset is complete in both folders", file=sys.stderr)
        return 2
    print(f"{len(pairs)} paired runs: " + ", ".join(f"{p}/{s}" for s, p, _, _ in pairs))
    print("\n| metric | runs | Spearman ρ | same verdict vs start | quick mean | full mean | mean abs diff |")
    print("|---|---|---|---|---|---|---|")
    for row in agreement(pairs):
        verdict = "–" if math.isnan(row["same_verdict_pct"]) else f"{row['same_verdict_pct']:.0f} %"
        print(
            f"| {row['metric']} | {row['runs']} | {row['spearman']:.2f} | {verdict} | {row['quick_mean']:.1f} | "
            f"{row['full_mean']:.1f} | {row['mean_abs_diff']:.1f} |"
        )
    presets = sorted({p for _, p, _, _ in pairs})
    print("\n| preset | runs | quick final Rot@15 / CC@0.1 | full final Rot@15 / CC@0.1 | quick time s | full time s |")
    print("|---|---|---|---|---|---|")
    for preset in presets:
        mine = [(a, b) for _, p, a, b in pairs if p == preset]

        def mean(side: int, key: str, mine=mine) -> float:
            return float(np.nanmean([pair[side][key] for pair in mine]))

        print(
            f"| {preset} | {len(mine)} | {mean(0, 'final_rot15'):.1f} / {mean(0, 'final_cc10'):.1f} | "
            f"{mean(1, 'final_rot15'):.1f} / {mean(1, 'final_cc10'):.1f} | {mean(0, 'time_s'):.0f} | {mean(1, 'time_s'):.0f} |"
        )
    print("\n| run | quick Rot@15 / CC@0.1 | full Rot@15 / CC@0.1 | start Rot@15 / CC@0.1 |")
    print("|---|---|---|---|")
    for scene, preset, a, b in pairs:
        print(
            f"| {preset}/{scene} | {a['final_rot15']:.1f} / {a['final_cc10']:.1f} | {b['final_rot15']:.1f} / "
            f"{b['final_cc10']:.1f} | {b['init_rot15']:.1f} / {b['init_cc10']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
