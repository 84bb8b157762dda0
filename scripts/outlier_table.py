"""Per-scene outlier table of an evaluation folder (the outlier issue's benchmark rows), from each run's metrics.json.

    python scripts/outlier_table.py outputs/eval24_oo [--preset one_outlier] [--data /tmp/bench16]

Columns: the true outliers (initial rotation error above sparseags.evaluate.TRUE_OUTLIER_DEG, from the scene's
camera files when --data is given), what the run flagged, and for each searched view its verdict (found /
false positive / corrected in place / ambiguous, with whether the ground truth is symmetric), its rotation
error before → the search's pose → final, then the final pose figures (and without the symmetric ambiguous
views) and the pipeline time. Ends with the totals: precision and recall of the leave-one-out flags and of the
final verdict, every searched true outlier within 5° or reported ambiguous, and the mean figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparseags.evaluate import true_outliers  # noqa: E402


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def scene_row(scene: str, metrics: dict, truth: list[str] | None) -> tuple[str, dict]:
    report = metrics.get("outliers", {})
    flagged = list(report.get("flagged", []))
    local = set(report.get("corrected_locally", {}))
    ambiguous = set(report.get("ambiguous", {}))
    symmetric = set(report.get("gt_symmetric", {}))
    truth_set = set(truth or [])
    verdicts = []
    counts = {"tp": 0, "fp": 0, "fn": 0, "tp_x": 0, "fp_x": 0, "fn_x": 0, "landed": 0, "searched_true": 0}
    for view, entry in report.get("views", {}).items():
        kind = "found" if view in truth_set else "false positive"
        if view in local:
            kind = "missed: corrected in place" if view in truth_set else "corrected in place"
        if view in ambiguous:
            kind += ", ambiguous" + (" (GT symmetric)" if view in symmetric else " (GT not symmetric)")
        search = entry.get("rot_err_search_deg")
        verdicts.append(
            f"{view} {kind}: {_fmt(entry.get('rot_err_before_deg'))}° → search {_fmt(search)}° → final "
            f"{_fmt(entry.get('rot_err_after_deg'))}°"
        )
        if view in truth_set and view not in local:
            counts["searched_true"] += 1
            if (search is not None and search < 5.0) or view in symmetric:
                counts["landed"] += 1
    flagged_set = set(flagged)
    counts["tp"] = len(truth_set & flagged_set)
    counts["fp"] = len(flagged_set - truth_set)
    counts["fn"] = len(truth_set - flagged_set)
    verdict_set = flagged_set - local - symmetric
    truth_x = truth_set - symmetric
    counts["tp_x"] = len(truth_x & verdict_set)
    counts["fp_x"] = len(verdict_set - truth_x)
    counts["fn_x"] = len(truth_x - verdict_set)
    pose = metrics.get("pose", {})
    init, final = pose.get("init", {}), pose.get("final", {})
    final_x = pose.get("final_x") or final
    figures = lambda p: " / ".join(_fmt(p.get(k)) for k in ("rot5", "rot15", "cc10"))  # noqa: E731
    row = (
        f"| {scene} | {' '.join(sorted(truth_set)) or '–'} | {' '.join(flagged) or '–'} | "
        f"{'; '.join(verdicts) or '–'} | {figures(init)} | {figures(final)} | "
        f"{figures(final_x) if pose.get('final_x') else '='} | {_fmt(metrics.get('time_s'), 0)} |"
    )
    counts.update(
        init=[init.get(k) for k in ("rot5", "rot15", "cc10")],
        final=[final.get(k) for k in ("rot5", "rot15", "cc10")],
        final_x=[final_x.get(k) for k in ("rot5", "rot15", "cc10")],
    )
    return row, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--preset", default="one_outlier")
    parser.add_argument("--data", type=Path, default=None, help="the scenes' folder (for the true outliers)")
    args = parser.parse_args()
    rows, totals = [], []
    for metrics_path in sorted((args.folder / args.preset).glob("*/metrics.json")):
        scene = metrics_path.parent.name
        truth = None
        if args.data is not None and (args.data / scene).is_dir():
            truth = true_outliers(args.data / scene, args.preset)
        row, counts = scene_row(scene, json.loads(metrics_path.read_text()), truth)
        rows.append(row)
        totals.append(counts)
    print(
        "| scene | true outliers | flagged | searched views: verdict, rotation error before → search → final "
        "| init Rot@5 / Rot@15 / CC@0.1 | final | final, symmetric views out | time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if not totals:
        return

    def ratio(a: int, b: int) -> str:
        return f"{100.0 * a / b:.1f} %" if b else "–"

    total = {
        k: sum(c[k] for c in totals) for k in ("tp", "fp", "fn", "tp_x", "fp_x", "fn_x", "landed", "searched_true")
    }
    means = {
        k: [
            sum(c[k][i] for c in totals if c[k][i] is not None) / max(1, sum(c[k][i] is not None for c in totals))
            for i in range(3)
        ]
        for k in ("init", "final", "final_x")
    }
    print()
    print(f"scenes: {len(totals)}")
    print(
        f"leave-one-out flags: precision {ratio(total['tp'], total['tp'] + total['fp'])}, recall "
        f"{ratio(total['tp'], total['tp'] + total['fn'])} (TP {total['tp']}, FP {total['fp']}, FN {total['fn']})"
    )
    print(
        f"final verdict: precision {ratio(total['tp_x'], total['tp_x'] + total['fp_x'])}, recall "
        f"{ratio(total['tp_x'], total['tp_x'] + total['fn_x'])} (TP {total['tp_x']}, FP {total['fp_x']}, FN {total['fn_x']})"
    )
    print(
        f"searched true outliers within 5° or ambiguous with a symmetric GT: {total['landed']}/{total['searched_true']}"
    )
    for k in ("init", "final", "final_x"):
        print(f"mean {k} Rot@5 / Rot@15 / CC@0.1: " + " / ".join(f"{v:.1f}" for v in means[k]))


if __name__ == "__main__":
    main()
