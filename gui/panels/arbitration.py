"""Arbitration tab: the two candidate reconstructions' scores per searched view and the decision.

After the pose search, two reconstructions are trained: one with the searched views at their
**recovered** poses, one with them at their **initial** poses (aligned to the inliers). Per searched view
the table shows both reconstructions' LPIPS, MSE (area-normalised, as the outlier test) and, when the
engine measured it, the epipolar error of the view's matches; the lower value of each pair is green. Then
which one won (automatic, or the manual choice) and why, and a button to choose the other one
(``Pipeline.choose_arbitration(choice, view)``; scripted: ``choose_arbitration``).

The engine's snapshot has a ``"views"`` list when it arbitrates per view; an engine that decides for all
searched views at once has only the scene-level keys, and the rows are built from those (one decision,
so the buttons choose for every view).
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, Optional

import dearpygui.dearpygui as dpg
import numpy as np

from gui.engine import EngineView
from gui.handles import Text

if TYPE_CHECKING:
    from gui.port import WindowPort

__all__ = ["ArbitrationPanel", "arbitration_rows", "arbitration_summary", "OTHER"]

OTHER = {"recovered": "initial", "initial": "recovered"}
SCORE_COLUMNS = (("lpips_norm", "LPIPS"), ("mse_norm", "MSE"), ("epipolar_px", "epipolar px"))
BETTER = (120, 230, 130)
WORSE = (200, 200, 200)
CHOICE_COLOURS = {"recovered": (120, 200, 255), "initial": (255, 200, 90), None: (170, 170, 170)}
STAGES = {
    "align": "aligning the initial poses to the inliers",
    "recon_recovered": "training with the recovered poses",
    "recon_initial": "training with the initial poses",
    "decided": "decided",
}


def _value(scores: Optional[dict], key: str, view: int) -> Optional[float]:
    if not scores or key not in scores or scores[key] is None:
        return None
    values = np.asarray(scores[key], dtype=np.float64).reshape(-1)
    if not 0 <= view < len(values) or not np.isfinite(values[view]):
        return None
    return float(values[view])


def _clean(value: Any) -> Optional[float]:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def arbitration_rows(view: EngineView) -> list[dict]:
    """One row per searched view: ``{"view", "id", "scores": {"recovered": {...}, "initial": {...}},
    "auto_choice", "manual_choice", "choice", "reason", "ambiguous", "candidates", "per_view"}``.

    Built from the snapshot's ``"views"`` when present (per-view arbitration), else from the scene-level
    keys (``per_view`` False: one decision for all the searched views).
    """
    arb = view.arbitration
    if arb is None:
        return []
    rows = []
    if arb.views:
        for entry in arb.views:
            index = int(entry["view"])
            scores = entry.get("scores") or {}
            rows.append(
                {
                    "view": index,
                    "id": str(entry.get("id", view.ids[index] if index < len(view.ids) else index)),
                    "scores": {
                        side: {key: _clean((scores.get(side) or {}).get(key)) for key, _ in SCORE_COLUMNS}
                        for side in ("recovered", "initial")
                    },
                    "auto_choice": entry.get("auto_choice"),
                    "manual_choice": entry.get("manual_choice"),
                    "choice": entry.get("choice"),
                    "reason": str(entry.get("reason") or ""),
                    "ambiguous": bool(entry.get("ambiguous", False)),
                    "candidates": list(entry.get("candidates") or []),
                    "per_view": True,
                }
            )
        return rows
    for index in arb.outliers:
        index = int(index)
        rows.append(
            {
                "view": index,
                "id": view.ids[index] if index < len(view.ids) else str(index),
                "scores": {
                    side: {key: _value(getattr(arb, f"scores_{side}"), key, index) for key, _ in SCORE_COLUMNS}
                    for side in ("recovered", "initial")
                },
                "auto_choice": arb.auto_choice,
                "manual_choice": arb.manual_choice,
                "choice": arb.choice,
                "reason": str(arb.reason or ""),
                "ambiguous": False,
                "candidates": [],
                "per_view": False,
            }
        )
    return rows


def arbitration_summary(view: EngineView) -> str:
    """The head line of the tab: stage, and the decision(s)."""
    arb = view.arbitration
    if arb is None:
        if view.phase in ("reconstruct", "loo", "search"):
            return "arbitration: not started (runs after the pose search of the outliers)"
        return "arbitration: none (no view was searched)"
    stage = str(arb.stage)
    head = f"arbitration: {STAGES.get(stage, stage)}"
    rows = arbitration_rows(view)
    if not rows or all(r["choice"] is None for r in rows):
        return head
    if rows[0]["per_view"]:
        kept = [r["id"] for r in rows if r["choice"] == "recovered"]
        return head + f"; recovered pose kept for {', '.join(kept) or 'no view'} of {len(rows)} searched"
    manual = " (manual)" if arb.manual_choice else ""
    return head + f"; {arb.choice} poses for every searched view{manual}"


def _fmt(value: Optional[float], key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if key == "epipolar_px" else f"{value:.4f}"


class ArbitrationPanel:
    """The arbitration tab (see the module docstring)."""

    def __init__(self, app: "WindowPort", parent: int | str) -> None:
        self.app = app
        self.summary = Text("arbitration: not started", parent=parent, colour=(255, 220, 120))
        self.rule = Text(
            "rule: the recovered pose is kept when it explains the view better (lower LPIPS and MSE, "
            "and epipolar error when measured) than the initial pose; lower = better, green",
            parent=parent,
            wrap=0,
        )
        with dpg.group(horizontal=True, parent=parent):
            self.all_recovered = dpg.add_button(
                label="Choose recovered for all", callback=lambda: self.choose("recovered", None)
            )
            self.all_initial = dpg.add_button(
                label="Choose initial for all", callback=lambda: self.choose("initial", None)
            )
            self.note = Text("")
        self.box = dpg.add_group(parent=parent)  # the table's rectangle (tables report none)
        self.table = dpg.add_table(
            parent=self.box,
            header_row=True,
            borders_innerH=True,
            borders_outerH=True,
            borders_innerV=True,
            borders_outerV=True,
            row_background=True,
            policy=dpg.mvTable_SizingFixedFit,
            scrollY=True,
            height=-1,
        )
        columns = ["view"]
        for _, name in SCORE_COLUMNS:
            columns += [f"{name} rec.", f"{name} init."]
        columns += ["winner", "why", ""]
        for name in columns:
            dpg.add_table_column(
                label=name,
                parent=self.table,
                width_stretch=name == "why",
                init_width_or_weight=0.0 if name != "why" else 1.0,
            )
        self.rows: list[dict] = []
        self.buttons: dict[int, int] = {}  # view -> its "choose ..." button
        self._key: tuple = ()

    def choose(self, choice: str, view_index: Optional[int]) -> None:
        self.app.choose_arbitration(choice, view_index)

    def update(self, view: Optional[EngineView]) -> None:
        if view is None:
            return
        arb = view.arbitration
        key = (
            id(arb),
            None
            if arb is None
            else repr(
                [(f.name, str(getattr(arb, f.name))) for f in fields(arb) if f.name not in ("recovered", "aligned")]
            ),
            tuple(view.ids),
        )
        if key == self._key:
            return
        self._key = key
        self.summary.set(arbitration_summary(view))
        rows = arbitration_rows(view)
        self.rows = rows
        decided = arb is not None and (arb.stage == "decided" or any(r["choice"] for r in rows))
        per_view = bool(rows) and rows[0]["per_view"]
        for button in (self.all_recovered, self.all_initial):
            dpg.configure_item(button, enabled=decided)
        self.note.set("" if decided or arb is None else "(the buttons work once the arbitration has decided)")
        for child in dpg.get_item_children(self.table, 1) or []:
            dpg.delete_item(child)
        self.buttons = {}
        for row in rows:
            with dpg.table_row(parent=self.table):
                dpg.add_text(
                    row["id"] + ("  (ambiguous)" if row["ambiguous"] else ""),
                    color=(255, 110, 100) if row["ambiguous"] else (230, 230, 230),
                )
                for key, _ in SCORE_COLUMNS:
                    rec, init = row["scores"]["recovered"][key], row["scores"]["initial"][key]
                    both = rec is not None and init is not None
                    dpg.add_text(_fmt(rec, key), color=BETTER if both and rec < init else WORSE)
                    dpg.add_text(_fmt(init, key), color=BETTER if both and init < rec else WORSE)
                choice = row["choice"]
                how = "" if choice is None else (" (manual)" if row["manual_choice"] else " (auto)")
                dpg.add_text(f"{choice or '-'}{how}", color=CHOICE_COLOURS.get(choice, WORSE))
                dpg.add_text(row["reason"] or "-", wrap=0)
                other = OTHER.get(choice or "", "recovered")
                target = row["view"] if per_view else None
                button = dpg.add_button(
                    label=f"choose {other}",
                    enabled=decided and choice is not None,
                    callback=lambda s, a, u: self.choose(*u),
                    user_data=(other, target),
                )
                self.buttons[row["view"]] = button
