"""Pose-evidence tab of the bottom window: matches of a view pair, per-view evidence curves, pose error.

* **matches**: two view selectors, the two inputs side by side (the active reconstruction's targets) with a
  line per match, verified green and unverified red; under them the pair's match count, the pair's median
  Sampson error at the current poses and both views' epipolar medians from the latest evidence row.
* **epipolar median per view vs step** and **RGB residual per view vs step** (one series per view, the
  colour of the view in both plots; steps where a view was not measured are skipped).
* **guard**: every rollback of the epipolar guard (view, step, reason), in red.
* **pose error vs ground truth** (scenes with ground truth): Rot@5, Rot@15, CC@0.1 (left axis, %) and
  the mean per-view rotation error (right axis, degrees).

Everything comes from :class:`gui.evidence.EvidenceView` (published by the engine thread); nothing here
touches the pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import dearpygui.dearpygui as dpg
import numpy as np

from gui.engine import EngineView
from gui.evidence import EvidenceView, PairView, default_pair, finite_series, pair_sampson_px, pair_segments, pair_view
from gui.handles import RawTexture, Text
from gui.imaging import colormap_lut, resize

if TYPE_CHECKING:
    from gui.port import WindowPort

__all__ = ["EvidencePanel", "PoseAccuracyPanel", "accuracy_headline", "accuracy_table", "TILE", "GAP"]

TILE = 200  # pixels of each of the two images
GAP = 8
PLOT = (330, 262)
MATCH_COLOURS = {True: (60, 230, 90, 220), False: (240, 60, 50, 220)}
GUARD_RED = (255, 110, 100)
POSE_SERIES = {
    "Rot@5": (90, 200, 255, 255),
    "Rot@15": (60, 230, 120, 255),
    "CC@0.1": (255, 200, 60, 255),
    "mean rot err (deg)": (255, 110, 200, 255),
}  # the first three in % (left axis), the last in degrees


def view_colour(index: int, count: int) -> tuple:
    """A distinct colour per view (tab10 for up to 10 views, else turbo)."""
    if count <= 10:
        lut = colormap_lut("tab10", 10)
        rgb = lut[index % 10]
    else:
        rgb = colormap_lut("turbo", 256)[int(255 * index / max(count - 1, 1))]
    return tuple(int(255 * c) for c in rgb) + (255,)


def _line_theme(colour: tuple, weight: float = 2.0) -> int:
    with dpg.theme() as theme:
        with dpg.theme_component(dpg.mvLineSeries):
            dpg.add_theme_color(dpg.mvPlotCol_Line, colour, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_style(dpg.mvPlotStyleVar_LineWeight, weight, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_style(dpg.mvPlotStyleVar_Marker, dpg.mvPlotMarker_Circle, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_style(dpg.mvPlotStyleVar_MarkerSize, 2.5, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_color(dpg.mvPlotCol_MarkerFill, colour, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_color(dpg.mvPlotCol_MarkerOutline, colour, category=dpg.mvThemeCat_Plots)
    return theme


class _ViewPlot:
    """A plot with one line series per view (series rebuilt when the number of views changes)."""

    def __init__(self, parent: int | str, title: str, y_label: str) -> None:
        with dpg.plot(label=title, width=PLOT[0], height=PLOT[1], parent=parent, no_menus=True) as plot:
            dpg.add_plot_legend(location=dpg.mvPlot_Location_East, outside=True)
            self.x_axis = dpg.add_plot_axis(dpg.mvXAxis, label="step")
            self.y_axis = dpg.add_plot_axis(dpg.mvYAxis, label=y_label)
        self.plot = plot
        self.series: list[int] = []
        self.data: list[tuple[list, list]] = []
        self._themes: dict = {}

    def set(self, ids: list, steps: np.ndarray, values: np.ndarray) -> None:
        if len(self.series) != len(ids):
            dpg.delete_item(self.y_axis, children_only=True)
            self.series = []
            for index, view_id in enumerate(ids):
                series = dpg.add_line_series([], [], label=str(view_id), parent=self.y_axis)
                colour = view_colour(index, len(ids))
                if colour not in self._themes:
                    self._themes[colour] = _line_theme(colour)
                dpg.bind_item_theme(series, self._themes[colour])
                self.series.append(series)
        self.data = []
        for index, series in enumerate(self.series):
            column = values[:, index] if values.size else np.zeros(0)
            xs, ys = finite_series(steps, column)
            self.data.append((xs, ys))
            dpg.set_value(series, [xs, ys])
        finite = values[np.isfinite(values)] if values.size else np.zeros(0)
        if len(steps):
            dpg.set_axis_limits(self.x_axis, float(steps[0]) - 0.5, float(steps[-1]) + 0.5)
        if finite.size:
            low, high = float(finite.min()), float(finite.max())
            pad = max(0.08 * (high - low), 1e-6 + 0.05 * abs(high))
            dpg.set_axis_limits(self.y_axis, min(0.0, low - pad) if low >= 0 else low - pad, high + pad)
        else:
            dpg.set_axis_limits(self.y_axis, 0.0, 1.0)


class EvidencePanel:
    """The pose-evidence tab (see the module docstring)."""

    def __init__(self, app: "WindowPort", parent: int | str) -> None:
        self.app = app
        self.evidence: Optional[EvidenceView] = None
        self.pair: Optional[PairView] = None
        self.line_count = 0
        self.line_colours: list[bool] = []
        self._key: tuple = ()
        self._ids: list = []
        with dpg.group(horizontal=True, parent=parent):
            with dpg.group() as left:
                with dpg.group(horizontal=True):
                    dpg.add_text("views")
                    self.combo_a = dpg.add_combo([], width=80, callback=lambda s, a: self._picked())
                    self.combo_b = dpg.add_combo([], width=80, callback=lambda s, a: self._picked())
                    self.pairs_info = Text("matches: none")
                with dpg.drawlist(width=2 * TILE + GAP, height=TILE) as drawlist:
                    self.texture = RawTexture(app.textures, 2 * TILE + GAP, TILE)
                    dpg.draw_image(self.texture.tag, (0, 0), (2 * TILE + GAP, TILE))
                    self.lines_layer = dpg.add_draw_layer()
                self.drawlist = drawlist
                self.pair_text = Text("no reconstruction yet", wrap=2 * TILE + GAP)
                self.view_text = Text("", wrap=2 * TILE + GAP)
            self.left = left
            with dpg.group() as column:
                self.epipolar = _ViewPlot(column, "epipolar median per view (Sampson px)", "px")
            with dpg.group() as column:
                self.rgb = _ViewPlot(column, "RGB residual per view (MSE)", "MSE")
            with dpg.group() as column:
                with dpg.plot(
                    label="pose error vs ground truth", width=PLOT[0], height=PLOT[1] - 92, no_menus=True
                ) as plot:
                    dpg.add_plot_legend(location=dpg.mvPlot_Location_North, horizontal=True, outside=True)
                    self.pose_x = dpg.add_plot_axis(dpg.mvXAxis, label="step")
                    self.pose_y = dpg.add_plot_axis(dpg.mvYAxis, label="%")
                    self.pose_y2 = dpg.add_plot_axis(dpg.mvYAxis2, label="deg", opposite=True)
                    self.pose_series = {}
                    for name, colour in POSE_SERIES.items():
                        axis = self.pose_y2 if name.startswith("mean") else self.pose_y
                        series = dpg.add_line_series([], [], label=name, parent=axis)
                        dpg.bind_item_theme(series, _line_theme(colour))
                        self.pose_series[name] = series
                self.pose_plot = plot
                self.pose_text = Text("pose error: no ground truth", wrap=PLOT[0])
                self.guard_title = Text("guard rollbacks: none")
                with dpg.child_window(width=PLOT[0], height=58, border=False) as guard_box:
                    self.guard_text = Text("", colour=GUARD_RED, wrap=PLOT[0] - 12)
                self.guard_box = guard_box
        self.pose_data: dict = {}

    # ------------------------------------------------------------------------------------------
    def _picked(self) -> None:
        ids = self._ids
        a, b = dpg.get_value(self.combo_a), dpg.get_value(self.combo_b)
        if a in ids and b in ids:
            self.select_pair(ids.index(a), ids.index(b))

    def select_pair(self, a: int, b: int) -> None:
        """Show the matches of views a (left) and b (right) (indices)."""
        self.app.ui.selected_pair = (int(a), int(b))

    # ------------------------------------------------------------------------------------------
    def update(self, view: Optional[EngineView]) -> None:
        evidence = None if view is None else view.evidence
        if evidence is None:
            if self._key != (None,):
                self._key = (None,)
                self.pair_text.set("no reconstruction yet")
            return
        if self.app.ui.selected_pair is None:
            self.app.ui.selected_pair = default_pair(evidence)
        a, b = self.app.ui.selected_pair
        key = (evidence.key, id(evidence), a, b)
        if key == self._key:
            return
        self._key = key
        self.evidence = evidence
        if evidence.ids != self._ids:
            self._ids = list(evidence.ids)
            dpg.configure_item(self.combo_a, items=self._ids)
            dpg.configure_item(self.combo_b, items=self._ids)
        dpg.set_value(self.combo_a, evidence.ids[a])
        dpg.set_value(self.combo_b, evidence.ids[b])
        self._draw_pair(evidence, a, b)
        self.epipolar.set(evidence.ids, evidence.steps, evidence.epipolar)
        self.rgb.set(evidence.ids, evidence.steps, evidence.rgb)
        self._guard(evidence)
        self._pose(evidence)

    def _draw_pair(self, evidence: EvidenceView, a: int, b: int) -> None:
        pair = pair_view(evidence, a, b)
        self.pair = pair
        image = np.full((TILE, 2 * TILE + GAP, 3), 0.12, np.float32)
        image[:, :TILE] = resize(evidence.targets[a], TILE, TILE)
        image[:, TILE + GAP :] = resize(evidence.targets[b], TILE, TILE)
        self.texture.set(image)
        dpg.delete_item(self.lines_layer, children_only=True)
        segments = pair_segments(pair, evidence.image_size, TILE, GAP)
        order = np.argsort(pair.verified, kind="stable")  # verified (green) drawn last, on top
        for m in order:
            x0, y0, x1, y1 = segments[m]
            colour = MATCH_COLOURS[bool(pair.verified[m])]
            dpg.draw_line((x0, y0), (x1, y1), color=colour, thickness=1.2, parent=self.lines_layer)
            dpg.draw_circle((x0, y0), 2.0, color=colour, fill=colour, parent=self.lines_layer)
            dpg.draw_circle((x1, y1), 2.0, color=colour, fill=colour, parent=self.lines_layer)
        self.line_count = int(pair.count)
        self.line_colours = [bool(v) for v in pair.verified[order]]
        n_pairs = len(evidence.pairs)
        total = 0 if evidence.match_summary is None else evidence.match_summary.get("matches", 0)
        names = ", ".join(f"{evidence.ids[p['i']]}-{evidence.ids[p['j']]}" for p in evidence.pairs) or "none"
        self.pairs_info.set(f"{n_pairs} matched pair(s), {total} matches")
        ids = evidence.ids
        latest = evidence.epipolar[-1] if len(evidence.epipolar) else np.full(len(ids), np.nan)

        def median(index: int) -> str:
            value = float(latest[index])
            return "no matches" if not np.isfinite(value) else f"{value:.2f} px"

        if pair.count:
            errors = pair_sampson_px(evidence, pair)
            verified = errors[pair.verified]
            now = f"{np.median(verified):.2f} px" if verified.size else "-"
            self.pair_text.set(
                f"pair {ids[a]}-{ids[b]}: {pair.count} matches ({pair.n_verified} verified, "
                f"{pair.count - pair.n_verified} unverified); median Sampson now {now}",
                colour=(220, 220, 220),
            )
        else:
            self.pair_text.set(
                f"pair {ids[a]}-{ids[b]}: no verified matches (matched pairs: {names})", colour=(200, 170, 120)
            )
        step = int(evidence.steps[-1]) if len(evidence.steps) else None
        where = f" (evidence @ step {step})" if step is not None else " (no evidence row yet)"
        frozen = [ids[v] for v in (a, b) if evidence.pose_frozen[v]]
        self.view_text.set(
            f"epipolar median: view {ids[a]} {median(a)}, view {ids[b]} {median(b)}{where}"
            + (f"; frozen by the guard: {', '.join(frozen)}" if frozen else "")
        )

    def _guard(self, evidence: EvidenceView) -> None:
        log = evidence.guard_log
        ids = evidence.ids
        self.guard_title.set(f"guard rollbacks: {len(log) or 'none'}", colour=GUARD_RED if log else (170, 230, 170))
        lines = []
        for entry in log:
            view = entry.get("view")
            name = ids[view] if isinstance(view, (int, np.integer)) and 0 <= view < len(ids) else str(view)
            lines.append(
                f"view {name} @ step {entry.get('step')}: {entry.get('action', 'rollback')} - {entry.get('reason', '')}"
            )
        self.guard_text.set("\n".join(lines))

    def _pose(self, evidence: EvidenceView) -> None:
        curve = evidence.pose_error
        if curve is None:
            self.pose_data = {}
            for series in self.pose_series.values():
                dpg.set_value(series, [[], []])
            self.pose_text.set("pose error: the scene has no ground truth")
            return
        steps = [float(s) for s in curve["step"]]
        errors = np.asarray(curve["rot_err_deg"], dtype=np.float64)
        mean_err = np.nanmean(errors, axis=1) if errors.size else np.zeros(0)
        data = {
            "Rot@5": [float(v) for v in curve["rot5"]],
            "Rot@15": [float(v) for v in curve["rot15"]],
            "CC@0.1": [float(v) for v in curve["cc10"]],
            "mean rot err (deg)": [float(v) for v in mean_err],
        }
        self.pose_data = {name: (steps, ys) for name, ys in data.items()}
        for name, ys in data.items():
            dpg.set_value(self.pose_series[name], [steps, ys])
        if steps:
            dpg.set_axis_limits(self.pose_x, steps[0] - 0.5, steps[-1] + 0.5)
        dpg.set_axis_limits(self.pose_y, -5.0, 105.0)
        top = float(np.nanmax(mean_err)) if mean_err.size and np.isfinite(mean_err).any() else 1.0
        dpg.set_axis_limits(self.pose_y2, 0.0, max(top * 1.15, 1e-3))
        last = {name: ys[-1] for name, ys in data.items() if ys}
        if last:
            self.pose_text.set(
                f"now: Rot@5 {last['Rot@5']:.0f}%  Rot@15 {last['Rot@15']:.0f}%  CC@0.1 "
                f"{last['CC@0.1']:.0f}%  mean rot err {last['mean rot err (deg)']:.2f} deg"
            )


# ----------------------------------------------------------------------------------------------
# pose accuracy (its own bottom tab; the headline numbers also sit in the controls panel)

ACCURACY_COLOURS = {"start": (150, 150, 150, 255), "now": (90, 170, 255, 255)}
ACCURACY_LEVELS = {
    "rot": ((5.0, (90, 200, 255, 255)), (15.0, (60, 230, 120, 255))),
    "centre": ((0.1, (255, 200, 60, 255)),),
}


def accuracy_headline(accuracy: Optional[dict]) -> str:
    """ "Rot@5 a -> b %  Rot@15 ...  CC@0.1 ..." (start -> now), or why there is none."""
    if accuracy is None:
        return "pose accuracy: the scene has no ground truth"
    start, now = accuracy["metrics"]["start"], accuracy["metrics"]["now"]

    def pct(value: float) -> str:
        return "-" if value is None or not np.isfinite(value) else f"{value:.0f}"

    parts = [
        f"{label} {pct(start[key])} -> {pct(now[key])} %"
        for key, label in (("rot5", "Rot@5"), ("rot15", "Rot@15"), ("cc10", "CC@0.1"))
    ]
    mean_s, mean_n = start.get("rot_err_mean_deg"), now.get("rot_err_mean_deg")
    parts.append(
        f"mean rot err {pct(mean_s) if mean_s is None else f'{mean_s:.1f}'} -> "
        f"{pct(mean_n) if mean_n is None else f'{mean_n:.1f}'} deg"
    )
    return "pose vs GT (start -> now): " + "   ".join(parts)


def accuracy_table(accuracy: Optional[dict], ids: list) -> list[tuple]:
    """Rows (id, rot start, rot now, centre start, centre now) in degrees / GT scene scales."""
    if accuracy is None:
        return []
    rot, centre = accuracy["rot_err_deg"], accuracy["centre_err"]
    return [
        (str(ids[i]), float(rot["start"][i]), float(rot["now"][i]), float(centre["start"][i]), float(centre["now"][i]))
        for i in range(len(ids))
    ]


def _bar_theme(colour: tuple) -> int:
    with dpg.theme() as theme:
        with dpg.theme_component(dpg.mvBarSeries):
            dpg.add_theme_color(dpg.mvPlotCol_Fill, colour, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_color(dpg.mvPlotCol_Line, colour, category=dpg.mvThemeCat_Plots)
    return theme


class PoseAccuracyPanel:
    """Per-view rotation and centre error against ground truth, at the start and now (bars and a table),
    and Rot@5 / Rot@15 / CC@0.1 start -> now. Data: ``EngineView.accuracy`` (:func:`gui.engine.pose_accuracy`)."""

    def __init__(self, app: "WindowPort", parent: int | str) -> None:
        self.app = app
        self.headline = Text("pose accuracy: -", parent=parent, colour=(255, 220, 120), wrap=0)
        self.note = Text(
            "errors after aligning the poses to the ground truth (rotation: best global rotation; "
            "centre: similarity, in units of the GT scene radius); grey = input poses, blue = now",
            parent=parent,
            wrap=0,
        )
        self.plots: dict[str, dict] = {}
        with dpg.group(horizontal=True, parent=parent):
            for name, title, unit in (
                ("rot", "rotation error per view", "deg"),
                ("centre", "camera centre error per view", "GT scene radius"),
            ):
                with dpg.plot(label=title, width=PLOT[0] + 60, height=PLOT[1] - 40, no_menus=True) as plot:
                    dpg.add_plot_legend(location=dpg.mvPlot_Location_NorthEast)
                    x_axis = dpg.add_plot_axis(dpg.mvXAxis, label="view", no_gridlines=True)
                    y_axis = dpg.add_plot_axis(dpg.mvYAxis, label=unit)
                    bars = {}
                    for series, colour in ACCURACY_COLOURS.items():
                        bar = dpg.add_bar_series([-10.0], [0.0], weight=0.38, label=series, parent=y_axis)
                        dpg.bind_item_theme(bar, _bar_theme(colour))
                        bars[series] = bar
                    levels = []
                    for level, colour in ACCURACY_LEVELS[name]:
                        line = dpg.add_line_series([0.0], [level], label=f"{level:g}", parent=y_axis)
                        dpg.bind_item_theme(line, _line_theme(colour, 1.5))
                        levels.append((level, line))
                self.plots[name] = {"plot": plot, "x": x_axis, "y": y_axis, "bars": bars, "levels": levels}
            self.table = dpg.add_table(
                header_row=True,
                borders_innerH=True,
                borders_outerH=True,
                borders_innerV=True,
                borders_outerV=True,
                row_background=True,
                policy=dpg.mvTable_SizingFixedFit,
                scrollY=True,
                height=PLOT[1] - 40,
                width=-1,
            )
            for label in ("view", "rot start", "rot now", "centre start", "centre now"):
                dpg.add_table_column(label=label, parent=self.table)
        self.rows: list[tuple] = []
        self._key: tuple = ()

    def resize(self, window_height: int) -> None:
        """The bottom window's height changed: the plots and the table take what is left under the text."""
        height = int(max(120, window_height - 110))
        for plot in self.plots.values():
            dpg.configure_item(plot["plot"], height=height)
        dpg.configure_item(self.table, height=height)

    def update(self, view: Optional["EngineView"]) -> None:
        if view is None:
            return
        accuracy = view.accuracy
        key = (id(accuracy), tuple(view.ids))
        if key == self._key:
            return
        self._key = key
        self.headline.set(accuracy_headline(accuracy))
        self.rows = accuracy_table(accuracy, view.ids)
        for child in dpg.get_item_children(self.table, 1) or []:
            dpg.delete_item(child)
        for row in self.rows:
            with dpg.table_row(parent=self.table):
                dpg.add_text(row[0])
                for value, limit in zip(row[1:], (5.0, 5.0, 0.1, 0.1)):
                    text = "-" if not np.isfinite(value) else (f"{value:.2f}" if limit < 1 else f"{value:.1f}")
                    dpg.add_text(
                        text, color=(120, 230, 130) if np.isfinite(value) and value < limit else (230, 150, 140)
                    )
        n = len(view.ids)
        ticks = tuple((str(v), float(i)) for i, v in enumerate(view.ids))
        for name, plot in self.plots.items():
            dpg.set_axis_ticks(plot["x"], ticks)
            dpg.set_axis_limits(plot["x"], -0.7, n - 0.3)
            if accuracy is None:
                for bar in plot["bars"].values():
                    dpg.set_value(bar, [[-10.0], [0.0]])
                dpg.set_axis_limits(plot["y"], 0.0, 1.0)
                continue
            data = accuracy["rot_err_deg" if name == "rot" else "centre_err"]
            top = 0.0
            for series, offset in (("start", -0.2), ("now", 0.2)):
                values = np.nan_to_num(np.asarray(data[series], float), nan=0.0)
                top = max(top, float(values.max()) if values.size else 0.0)
                dpg.set_value(plot["bars"][series], [[i + offset for i in range(n)], values.tolist()])
            for level, line in plot["levels"]:
                dpg.set_value(line, [[-0.5, n - 0.5], [level, level]])
            top = max(top, max(level for level, _ in plot["levels"]))
            dpg.set_axis_limits(plot["y"], 0.0, top * 1.15)
