"""Per-view score bars (LPIPS, area-normalised as the official outlier test; MSE when LPIPS is off).

The bars show the scores that chose the leave-one-out candidate (the latest round that picked one), with
the candidate in orange, inliers green and outliers red. Horizontal lines: the inlier mean, the mean
*without* the candidate before its removal, the level the mean must fall to for the removal to be kept
(before − threshold), and the mean after the removal once that round is scored. Clicking a bar selects
the view everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import dearpygui.dearpygui as dpg
import numpy as np

from gui.engine import EngineView

if TYPE_CHECKING:
    from gui.app import DebuggerApp

__all__ = ["BarModel", "bar_model", "LpipsBarsPanel"]

SERIES_COLOURS = {"inlier": (60, 200, 90, 255), "outlier": (230, 70, 60, 255), "candidate": (255, 150, 30, 255)}
LINE_COLOURS = {"mean (inliers)": (200, 200, 200, 255), "mean without candidate": (120, 180, 255, 255),
                "required after removal": (255, 80, 200, 255), "mean after removal": (255, 230, 80, 255)}


@dataclass(frozen=True)
class BarModel:
    """What the bar chart shows; every mean is over the inliers of the round named."""

    scores: np.ndarray  # [V] (NaN = not scored)
    flags: np.ndarray  # [V] flags of the round the scores come from
    key: str  # score name, e.g. "lpips_norm"
    source: str  # where the scores come from, for the caption
    candidate: Optional[int] = None
    verdict_round: Optional[int] = None  # the leave-one-out round that tests removing `candidate`
    threshold: Optional[float] = None
    mean_inliers: Optional[float] = None
    mean_before: Optional[float] = None  # mean without the candidate, before its removal
    mean_after: Optional[float] = None  # inlier mean of the verdict round, once scored

    @property
    def required(self) -> Optional[float]:
        """The removal is kept when the mean after falls to this level or below."""
        if self.mean_before is None or self.threshold is None:
            return None
        return self.mean_before - self.threshold


def bar_model(view: EngineView, verdict_round: Optional[int] = None) -> Optional[BarModel]:
    """Choose the scores to show from a published engine view (None when nothing is scored yet).

    By default the latest round that picked a candidate; with `verdict_round`, the round before it (whose
    scores picked that round's candidate), when the leave-one-out loop has such a round.
    """
    loo = view.loo
    if loo and loo.get("rounds"):
        rounds = loo["rounds"]
        picked = [r for r in rounds if r["scores"] is not None and r["next_candidate"] is not None]
        scored = [r for r in rounds if r["scores"] is not None]
        base = picked[-1] if picked else (scored[-1] if scored else None)
        chosen = [r for r in picked if verdict_round is not None and r["round"] == verdict_round - 1]
        if chosen:
            base = chosen[0]
        if base is not None:
            after = None
            verdict = None
            if base["next_candidate"] is not None:
                verdict = base["round"] + 1
                following = [r for r in rounds if r["round"] == verdict]
                if following and following[0]["scores"] is not None:
                    after = following[0]["mean_inliers"]
            return BarModel(scores=np.asarray(base["scores"], float), flags=np.asarray(base["flags"], int),
                            key=view.score_key, source=f"leave-one-out round {base['round']}",
                            candidate=base["next_candidate"], verdict_round=verdict, threshold=loo["threshold"],
                            mean_inliers=base["mean_inliers"], mean_before=base["mean_without_next"],
                            mean_after=after)
    scores = view.latest_scores
    if scores and view.score_key in scores:
        values = np.asarray(scores[view.score_key], float)
        flags = np.asarray(view.flags, int)
        inliers = values[flags.astype(bool)]
        return BarModel(scores=values, flags=flags, key=view.score_key, source="latest scores",
                        mean_inliers=float(inliers.mean()) if inliers.size else None)
    return None


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

    def __init__(self, app: "DebuggerApp", parent: int | str, width: int, height: int) -> None:
        self.app = app
        self.caption = dpg.add_text("per-view score: not scored yet", parent=parent)
        with dpg.plot(height=height, width=width, parent=parent, no_menus=True) as plot:
            dpg.add_plot_legend(location=dpg.mvPlot_Location_North, horizontal=True, outside=True)
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
        levels = {"mean (inliers)": model.mean_inliers, "mean without candidate": model.mean_before,
                  "required after removal": model.required, "mean after removal": model.mean_after}
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
