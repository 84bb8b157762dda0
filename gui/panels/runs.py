"""Finished runs in the window: the evaluation table (a floating window) and the compare tab.

* :class:`EvaluationWindow`: every run of an evaluation folder, sortable by any column (click a header),
  rows whose final pose accuracy is below the start in red with "WORSE"; clicking a scene opens that run,
  ticking two runs of one scene and *Compare ticked* opens the first and compares it with the second.
* :class:`ComparePanel` (bottom tab "compare"): two runs of one scene side by side, per-view pose errors
  (or pose changes without ground truth), the input and both renders of the selected view, the decisions
  that differ and the config keys that differ.

Both read plain data (:class:`sparseags.evaluate.EvalRun`, :class:`sparseags.compare.RunComparison`) through
the view models of :mod:`gui.run_table`; they act through the window's port (``open_run``, ``compare_runs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import dearpygui.dearpygui as dpg

from gui.handles import RawTexture, Text
from gui.run_table import EVAL_COLUMNS, EvalTable, compare_headline, compare_rows

if TYPE_CHECKING:
    from gui.port import WindowPort

__all__ = ["ComparePanel", "EvaluationWindow"]

WORSE_COLOUR = (255, 120, 110)
STATUS_COLOURS = {"complete": (220, 220, 220), "interrupted": (255, 210, 120), "failed": (200, 150, 150)}


class EvaluationWindow:
    """A floating window with the runs of one evaluation folder (see the module docstring)."""

    def __init__(self, app: "WindowPort", folder: Path, runs: list, pos: tuple = (120, 80), size: tuple = (1180, 560)):
        self.app = app
        self.folder = Path(folder)
        self.model = EvalTable(list(runs))
        self._columns: dict[int, str] = {}
        self._ticks: dict[str, int] = {}
        with dpg.window(
            label=f"evaluation: {self.folder}", pos=pos, width=size[0], height=size[1], no_collapse=True
        ) as window:
            self.window = window
            complete = sum(r.status == "complete" for r in runs)
            worse = sum(r.worse for r in runs)
            with dpg.group(horizontal=True):
                dpg.add_button(label="Compare ticked", callback=lambda: self.compare_ticked())
                dpg.add_button(label="Close", callback=lambda: dpg.configure_item(self.window, show=False))
                self.summary = Text(
                    f"{len(runs)} runs, {complete} complete, {worse} end worse than their start (red). "
                    "Click a header to sort, a scene to open its run; tick two runs of one scene to compare."
                )
            self.sorted_by = Text("", colour=(150, 210, 255))
            self.message = Text("", colour=WORSE_COLOUR)
            with dpg.table(
                header_row=True,
                sortable=True,
                sort_tristate=False,
                callback=lambda s, a: self._sorted(a),
                resizable=True,
                borders_innerV=True,
                borders_outerH=True,
                row_background=True,
                scrollY=True,
                policy=dpg.mvTable_SizingStretchProp,
                height=-1,
            ) as table:
                self.table = table
                dpg.add_table_column(label="cmp", no_sort=True, width_fixed=True, init_width_or_weight=36)
                for key, header in EVAL_COLUMNS:
                    column = dpg.add_table_column(label=header, default_sort=key == "scene")
                    self._columns[column] = key
        self.rebuild()

    # ------------------------------------------------------------------------------------------
    def show(self) -> None:
        dpg.configure_item(self.window, show=True)
        dpg.focus_item(self.window)

    def rebuild(self) -> None:
        """Rows in the model's order (after a sort)."""
        header = dict(EVAL_COLUMNS).get(self.model.sort_key, self.model.sort_key)
        self.sorted_by.set(f"sorted by {header}, {'ascending' if self.model.ascending else 'descending'}")
        for row in dpg.get_item_children(self.table, 1) or []:
            dpg.delete_item(row)
        self._ticks = {}
        for run in self.model.rows():
            colour = WORSE_COLOUR if run.worse else STATUS_COLOURS.get(run.status, (180, 180, 180))
            with dpg.table_row(parent=self.table):
                self._ticks[run.name] = dpg.add_checkbox(
                    default_value=run.name in self.model.ticked,
                    callback=lambda s, a, u: self.model.tick(u, bool(a)),
                    user_data=run.name,
                )
                cells = self.model.cells(run)
                dpg.add_selectable(
                    label=cells[0], span_columns=True, callback=lambda s, a, u: self.open(u), user_data=run.name
                )
                for text in cells[1:]:
                    dpg.add_text(text, color=colour)

    def _sorted(self, specs: Any) -> None:
        if not specs:
            return
        column, direction = specs[0]
        key = self._columns.get(column)
        if key is not None:
            self.sort(key, direction > 0)

    def sort(self, key: str, ascending: Optional[bool] = None) -> None:
        self.model.sort(key, ascending)
        self.rebuild()

    def open(self, ref: Any) -> Any:
        """Open a run of the table (name or row position) in the debugger; returns the window's future."""
        run = self.model.find(ref)
        if run.status not in ("complete", "interrupted"):
            raise ValueError(f"{run.name}: {run.status} ({run.message or 'nothing to open'})")
        self.message.set("")
        return self.app.open_run(run.folder)

    def tick(self, ref: Any, on: bool = True) -> None:
        run = self.model.find(ref)
        self.model.tick(run.name, on)
        if run.name in self._ticks:
            dpg.set_value(self._ticks[run.name], on)

    def compare_ticked(self) -> Any:
        try:
            a, b = self.model.comparison_pair()
        except ValueError as err:
            self.message.set(str(err))
            raise
        self.message.set("")
        return self.app.compare_runs(a.folder, b.folder)


class ComparePanel:
    """The compare tab (see the module docstring)."""

    IMAGE = 150

    def __init__(self, app: "WindowPort", parent: int | str) -> None:
        self.app = app
        self._shown: tuple = ()
        with dpg.group(horizontal=True, parent=parent):
            with dpg.child_window(width=560, height=-1, border=False) as left:
                self.header = Text("no comparison: open one with --compare B, or tick two runs in an evaluation table")
                with dpg.table(
                    header_row=True,
                    borders_innerV=True,
                    row_background=True,
                    scrollY=True,
                    height=-1,
                    policy=dpg.mvTable_SizingStretchProp,
                ) as table:
                    self.table = table
                    self._headers = [
                        dpg.add_table_column(label=label)
                        for label in ("view", "rot A", "rot B", "centre A", "centre B", "A", "B")
                    ]
            self.left = left
            with dpg.group():
                self.image_label = Text("selected view: input | A | B")
                with dpg.group(horizontal=True):
                    self.textures = [RawTexture(app.textures, self.IMAGE, self.IMAGE) for _ in range(3)]
                    for texture in self.textures:
                        dpg.add_image(texture.tag, width=self.IMAGE, height=self.IMAGE)
            with dpg.child_window(width=-1, height=-1, border=False):
                dpg.add_text("decisions that differ (A | B)", color=(255, 220, 120))
                self.decisions = Text("-", wrap=560)
                dpg.add_text("config keys that differ (A | B)", color=(255, 220, 120))
                self.config = Text("-", wrap=560)

    def update(self, comparison: Any) -> None:
        """Show `comparison` (None: the hint); cheap when nothing changed."""
        key = (id(comparison), self.app.ui.selected_view)
        if key == self._shown:
            return
        first = not self._shown or self._shown[0] != id(comparison)
        self._shown = key
        if comparison is None:
            return
        if first:
            self.header.set("\n".join(compare_headline(comparison)))
            unit = ("rot err deg", "centre err") if comparison.has_gt else ("rot change deg", "centre shift")
            labels = ("view", f"{unit[0]} A", f"{unit[0]} B", f"{unit[1]} A", f"{unit[1]} B", "A", "B")
            for column, label in zip(self._headers, labels):
                dpg.configure_item(column, label=label)
            for row in dpg.get_item_children(self.table, 1) or []:
                dpg.delete_item(row)
            for v, cells in enumerate(compare_rows(comparison)):
                with dpg.table_row(parent=self.table):
                    dpg.add_selectable(
                        label=cells[0], span_columns=True, callback=lambda s, a, u: self.app.select_view(u), user_data=v
                    )
                    for text in cells[1:]:
                        dpg.add_text(text)
            self.decisions.set("\n".join(f"{what}: {a} | {b}" for what, a, b in comparison.decisions) or "none")
            self.config.set("\n".join(f"{k}: {a} | {b}" for k, a, b in comparison.config) or "none: the same config")
        view = self.app.ui.selected_view
        view = 0 if view is None or not 0 <= int(view) < len(comparison.ids) else int(view)
        self.image_label.set(f"view {comparison.ids[view]}: input | A | B (each at its own final pose)")
        for texture, image in zip(
            self.textures, (comparison.targets[view], comparison.renders[0][view], comparison.renders[1][view])
        ):
            texture.set(image)
