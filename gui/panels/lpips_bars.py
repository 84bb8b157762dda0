"""Per-view score bars (LPIPS, area-normalised as the official outlier test; MSE when LPIPS is off).

The bars show the scores that chose the leave-one-out candidate (the latest round that picked one), with
the candidate in orange, inliers green and outliers red. Horizontal lines: the inlier mean, the mean
*without* the candidate before its removal, the level the mean must fall to for the removal to be kept
(before − threshold), and the mean after the removal once that round is scored. Clicking a bar selects
the view everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import dearpygui.dearpygui as dpg
import numpy as np

from gui.engine import EngineView
from gui.readouts import BarModel, bar_model  # noqa: F401 - re-exported (moved to gui.readouts)

if TYPE_CHECKING:
    from gui.port import WindowPort

__all__ = ["BarModel", "bar_model", "LpipsBarsPanel"]

SERIES_COLOURS = {"inlier": (60, 200, 90, 255), "outlier": (230, 70, 60, 255), "candidate": (255, 150, 30, 255)}
LINE_COLOURS = {
    "mean (inliers)": (200, 200, 200, 255),
    "mean without candidate": (120, 180, 255, 255),
    "required after removal": (255, 80, 200, 255),
    "mean after removal": (255, 230, 80, 255),
}


def _series_theme(kind: int, colour: tuple, weight: float = 1.0) -> int:
    with dpg.theme() as theme:
        with dpg.theme_component(kind):
            target = dpg.mvPlotCol_Fill if kind == dpg.mvBarSeries else dpg.mvPlotCol_Line
            dpg.add_theme_color(target, colour, category=dpg.mvThemeCat_Plots)
            if kind == dpg.mvLineSeries:
                dpg.add_theme_style(dpg.mvPlotStyleVar_LineWeight, weight, category=dpg.mvThemeCat_Plots)
    return theme


class LpipsBarsPanel:
    """Bar chart of per-view scores (see the module docstring)."""

    def __init__(self, app: "WindowPort", parent: int | str, width: int, height: int) -> None:
        self.app = app
        self.caption = dpg.add_text("per-view score: not scored yet", parent=parent)
        with dpg.plot(height=height, width=width, parent=parent, no_menus=True) as plot:
            dpg.add_plot_legend(location=dpg.mvPlot_Location_East, outside=True)
            self.x_axis = dpg.add_plot_axis(dpg.mvXAxis, label="view", no_gridlines=True)
            self.y_axis = dpg.add_plot_axis(dpg.mvYAxis, label="score")
            self.bars = {}
            for name, colour in SERIES_COLOURS.items():
                series = dpg.add_bar_series([0.0], [0.0], weight=0.7, label=name, parent=self.y_axis)
                dpg.bind_item_theme(series, _series_theme(dpg.mvBarSeries, colour))
                self.bars[name] = series
            self.lines = {}
            for name, colour in LINE_COLOURS.items():
                series = dpg.add_line_series([0.0], [0.0], label=name, parent=self.y_axis, show=False)
                dpg.bind_item_theme(series, _series_theme(dpg.mvLineSeries, colour, 2.0))
                self.lines[name] = series
        self.plot = plot
        with dpg.item_handler_registry() as handlers:
            dpg.add_item_clicked_handler(callback=self._clicked)
        dpg.bind_item_handler_registry(plot, handlers)
        self.model: Optional[BarModel] = None
        self._key: tuple = ()

    def resize(self, window_height: int) -> None:
        """The scores window's height changed: the plot keeps its share (the outlier panel sits below it)."""
        dpg.configure_item(self.plot, height=int(max(90, window_height - 180)))

    def _clicked(self) -> None:
        x, _ = dpg.get_plot_mouse_pos()
        index = int(round(x))
        if self.model is not None and 0 <= index < len(self.model.scores):
            self.app.select_view(index, snap=True)

    def update(self, view: EngineView) -> None:
        model = bar_model(view)
        key = (view.version if model is not None else None, self.app.ui.selected_view)
        if key == self._key:
            return
        self._key = key
        self.model = model
        ids = view.ids
        ticks = tuple((f"[{v}]" if i == self.app.ui.selected_view else str(v), float(i)) for i, v in enumerate(ids))
        dpg.set_axis_ticks(self.x_axis, ticks)
        if model is None:
            dpg.set_value(self.caption, "per-view score: not scored yet")
            for series in self.bars.values():
                dpg.set_value(series, [[-10.0], [0.0]])
            for series in self.lines.values():
                dpg.configure_item(series, show=False)
            return
        dpg.set_value(self.caption, f"per-view {model.key} from {model.source}; click a bar to select the view")
        scores = np.nan_to_num(model.scores, nan=0.0)
        for name in SERIES_COLOURS:
            if name == "candidate":
                chosen = [model.candidate] if model.candidate is not None else []
            else:
                wanted = 1 if name == "inlier" else 0
                chosen = [i for i in range(len(scores)) if model.flags[i] == wanted and i != model.candidate]
            xs = [float(i) for i in chosen] or [-10.0]
            ys = [float(scores[i]) for i in chosen] or [0.0]
            dpg.set_value(self.bars[name], [xs, ys])
        span = [-0.5, len(scores) - 0.5]
        levels = {
            "mean (inliers)": model.mean_inliers,
            "mean without candidate": model.mean_before,
            "required after removal": model.required,
            "mean after removal": model.mean_after,
        }
        for name, level in levels.items():
            shown = level is not None and np.isfinite(level)
            dpg.configure_item(self.lines[name], show=bool(shown))
            if shown:
                dpg.set_value(self.lines[name], [span, [float(level)] * 2])
        values = [*scores.tolist(), *(v for v in levels.values() if v is not None and np.isfinite(v))]
        # a level far outside the bars (e.g. a negative threshold's target) must not squash them
        reach = 2.0 * max(float(np.max(np.abs(scores))), 1e-6)
        values = [v for v in values if abs(v) <= reach]
        top, bottom = max(max(values), 1e-6), min(min(values), 0.0)
        dpg.set_axis_limits(self.x_axis, -0.7, len(scores) - 0.3)
        dpg.set_axis_limits(self.y_axis, bottom * 1.1, top * 1.3)
