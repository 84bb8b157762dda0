"""View models of the evaluation table and the compare tab (no DearPyGui: tested on their own).

:class:`EvalTable` holds the runs of an evaluation folder (:func:`sparseags.evaluate.read_evaluation`), the
sort column and direction, and the rows ticked for a comparison; it formats every cell. ``compare_rows``
turns a :class:`sparseags.compare.RunComparison` into the compare tab's per-view table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["EVAL_COLUMNS", "EvalTable", "compare_rows", "compare_headline"]

# (key, header): the table's columns; a key of EvalRun.metrics, or an attribute of the run
EVAL_COLUMNS = (
    ("scene", "scene"),
    ("preset", "preset"),
    ("status", "status"),
    ("rot5", "Rot@5 start>end"),
    ("rot15", "Rot@15 start>end"),
    ("cc10", "CC@0.1 start>end"),
    ("psnr", "novel PSNR"),
    ("time_s", "time s"),
)
_PAIRED = ("rot5", "rot15", "cc10")


def _number(value: float, digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


@dataclass
class EvalTable:
    """The rows of an evaluation folder, sorted by one column (``sort_key``; the paired pose columns sort by
    their final value), with the ticked rows (``ticked``, run names) for a comparison."""

    runs: list
    sort_key: str = "scene"
    ascending: bool = True
    ticked: list = field(default_factory=list)

    def sort(self, key: str, ascending: Optional[bool] = None) -> None:
        """Sort by `key` (a column key); the same key again flips the direction unless `ascending` is given."""
        keys = [k for k, _ in EVAL_COLUMNS] + ["worse"]
        if key not in keys:
            raise ValueError(f"unknown column {key!r}; columns are {', '.join(keys)}")
        if ascending is None:
            ascending = not self.ascending if key == self.sort_key else True
        self.sort_key, self.ascending = key, bool(ascending)

    def value(self, run: Any, key: str) -> Any:
        if key in ("scene", "preset", "status"):
            return getattr(run, key)
        if key == "worse":
            return int(run.worse)
        if key in _PAIRED:
            return run.metrics[f"final_{key}"]
        return run.metrics[key]

    def rows(self) -> list:
        """The runs in display order; unknown numbers (NaN) go last in either direction."""

        def order(run: Any) -> tuple:
            value = self.value(run, self.sort_key)
            missing = isinstance(value, float) and not math.isfinite(value)
            return (missing, value if not missing else 0.0, run.scene, run.preset)

        known = [r for r in self.runs if not order(r)[0]]
        unknown = [r for r in self.runs if order(r)[0]]
        known.sort(key=order, reverse=not self.ascending)
        return known + sorted(unknown, key=lambda r: (r.scene, r.preset))

    def cells(self, run: Any) -> list[str]:
        out = []
        for key, _ in EVAL_COLUMNS:
            if key in ("scene", "preset"):
                out.append(getattr(run, key))
            elif key == "status":
                out.append(run.status + ("  WORSE" if run.worse else ""))
            elif key in _PAIRED:
                m = run.metrics
                out.append(f"{_number(m[f'init_{key}'])} > {_number(m[f'final_{key}'])}")
            elif key == "psnr":
                out.append(_number(run.metrics["psnr"], 2))
            else:
                out.append(_number(run.metrics[key], 0))
        return out

    def find(self, ref: Any) -> Any:
        """A run by its name ("scene/preset") or its position in :meth:`rows`."""
        rows = self.rows()
        if isinstance(ref, int) and not isinstance(ref, bool):
            if not 0 <= ref < len(rows):
                raise ValueError(f"row {ref} does not exist (the table has {len(rows)})")
            return rows[ref]
        for run in rows:
            if run.name == ref:
                return run
        raise ValueError(f"no run {ref!r} in the table")

    def tick(self, name: str, on: bool) -> None:
        if on and name not in self.ticked:
            self.ticked.append(name)
        if not on and name in self.ticked:
            self.ticked.remove(name)

    def comparison_pair(self) -> tuple:
        """The two ticked runs to compare, or a ValueError saying what is wrong."""
        if len(self.ticked) != 2:
            raise ValueError(f"tick two runs of one scene to compare ({len(self.ticked)} ticked)")
        a, b = (self.find(name) for name in self.ticked)
        if a.scene != b.scene:
            raise ValueError(f"{a.name} and {b.name} are runs of different scenes")
        return a, b


def compare_headline(comparison: Any) -> list[str]:
    """The compare tab's header lines: both runs, where they ended, and their pose accuracy."""
    a, b = comparison.labels
    lines = [f"A: {a}  ({comparison.phases[0]})", f"B: {b}  ({comparison.phases[1]})"]
    if comparison.has_gt:
        for name, metrics in zip("AB", comparison.metrics):
            lines.append(
                f"{name}: Rot@5 {metrics['rot5']:.1f}  Rot@15 {metrics['rot15']:.1f}  CC@0.1 {metrics['cc10']:.1f}"
                f"  mean rot err {metrics['rot_err_mean_deg']:.2f} deg"
            )
    else:
        lines.append("no ground truth: per-view pose change from each run's start")
    return lines


def compare_rows(comparison: Any) -> list[list[str]]:
    """Per view: id, rotation A / B, centre A / B, flags A / B; a changed flag or a > 2x error gap is starred."""
    rows = []
    for v, view_id in enumerate(comparison.ids):
        ra, rb = float(comparison.rot[0][v]), float(comparison.rot[1][v])
        ca, cb = float(comparison.centre[0][v]), float(comparison.centre[1][v])
        fa, fb = int(comparison.flags[0][v]), int(comparison.flags[1][v])
        differs = fa != fb or max(ra, rb) > 2.0 * max(min(ra, rb), 1.0)
        rows.append(
            [
                ("* " if differs else "") + view_id,
                _number(ra, 2),
                _number(rb, 2),
                _number(ca, 3),
                _number(cb, 3),
                "in" if fa else "out",
                "in" if fb else "out",
            ]
        )
    return rows
