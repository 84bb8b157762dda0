"""Pose-search panel: the heatmap of one search beside the photo searched for and its top candidates.

* **Heatmap**: best MSE over radius per (elevation, azimuth) cell, Viridis with a colour bar. Elevation
  uses the kiui sign of the search grid (negative = camera above the object); the axis is inverted so
  cameras above the object are drawn at the top. Markers: the initial pose (white square), the chosen
  candidate (red cross), the ground truth (cyan diamond, when the scene has it). Cells not evaluated yet
  are grey.
* **Hover** a cell: its MSE, the radius that gave it, and the LPIPS and rank of the best final candidate
  descending from it (the read-out line under the map). **Click** a cell: that hypothesis is applied
  (``Pipeline.apply_cell``: its best refined candidate, else its grid pose at the best radius).
* **Target photo and candidates**: the photo (white background, as compared) beside the top final
  candidates' renders, each labelled with its rank position, rank sum, MSE (M) and LPIPS (L); clicking
  a candidate applies it (``Pipeline.apply_candidate``). The rank rule is spelled out under them.
* **Ambiguous** (a red badge): other candidates far from the winner score as well as it (a symmetric
  object); they are listed with their angle to the winner.

After an apply, the view's frustum and input-vs-render tile show the new pose at once (see
:meth:`sparseags.pipeline.Pipeline.displayed_w2c`), before the arbitration runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import dearpygui.dearpygui as dpg
import numpy as np

from gui.engine import EngineView
from gui.handles import RawTexture, Text
from sparseags.snapshots import SearchSnapshot

if TYPE_CHECKING:
    from gui.port import WindowPort

__all__ = [
    "SearchHeatmapPanel",
    "heat_values",
    "searched_view_for",
    "cell_at",
    "cell_readout",
    "rank_rule",
    "candidate_label",
    "ambiguity_text",
    "HOVER_HINT",
]

CANDIDATES = 5  # candidate thumbnails (the target photo takes the first slot)
THUMB = 64
HOVER_HINT = "hover a cell: its MSE, best radius and LPIPS; click a cell to apply that hypothesis"
MARKERS = {
    "initial": (dpg.mvPlotMarker_Square, (255, 255, 255, 255)),
    "chosen": (dpg.mvPlotMarker_Cross, (255, 40, 40, 255)),
    "truth": (dpg.mvPlotMarker_Diamond, (0, 230, 255, 255)),
}
AMBIGUOUS_RED = (255, 110, 100)


def heat_values(search: SearchSnapshot, which: str) -> tuple[np.ndarray, float, float]:
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


def _spacing(values: np.ndarray, default: float = 15.0) -> float:
    return float(np.diff(values).mean()) if len(values) > 1 else default


def cell_at(search: SearchSnapshot, azimuth: float, elevation: float) -> Optional[tuple[int, int]]:
    """(elevation index, azimuth index) of the cell under plot point (azimuth, elevation), None outside the map."""
    elev, azim = np.asarray(search.elevations_deg, float), np.asarray(search.azimuths_deg, float)
    if not len(elev) or not len(azim):
        return None
    de, da = _spacing(elev), _spacing(azim)
    if not (elev.min() - de / 2 <= elevation <= elev.max() + de / 2):
        return None
    if not (azim.min() - da / 2 <= azimuth <= azim.max() + da / 2):
        return None
    return int(np.argmin(np.abs(elev - elevation))), int(np.argmin(np.abs(azim - azimuth)))


def _lpips_text(value: Optional[float]) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3f}"


def cell_readout(search: SearchSnapshot, which: str, cell: tuple[int, int]) -> str:
    """The hover line of one heatmap cell: its MSE, the radius of that MSE, and its final candidates' LPIPS."""
    e, a = int(cell[0]), int(cell[1])
    heat = np.asarray(search.heat_coarse if which == "coarse" else search.heat_refined, float)
    where = f"cell elev {search.elevations_deg[e]:.0f}, azim {search.azimuths_deg[a]:.0f} deg"
    mse = heat[e, a]
    if not np.isfinite(mse):
        return f"{where}: not evaluated yet"
    radius = search.best_radius.get(which)
    radius_text = "-" if radius is None or not np.isfinite(radius[e, a]) else f"{float(radius[e, a]):.3f}"
    line = f"{where}: MSE {mse:.4f} ({which}), best radius {radius_text}"
    rank = None if search.cell_rank is None else int(search.cell_rank[e, a])
    if search.cell_rank is None:
        return line + "; LPIPS after the ranking"
    if rank is None or rank < 0:
        return line + "; LPIPS - (no final candidate from this cell: click applies its grid pose)"
    lpips = None if search.cell_lpips is None else float(search.cell_lpips[e, a])
    return line + f"; LPIPS {_lpips_text(lpips) if search.has_lpips else 'off'}, best candidate #{rank}"


def rank_rule(search: SearchSnapshot) -> str:
    """How the final candidates are ranked (shown under the thumbnails)."""
    if search.has_lpips:
        return (
            "rank rule: lowest rank(MSE) + rank(LPIPS) wins (Σ = that sum); M = MSE, L = LPIPS vs the target; "
            "click a candidate or a cell to apply it"
        )
    return "rank rule: lowest MSE wins (LPIPS off); M = MSE vs the target; click a candidate or a cell to apply it"


def candidate_label(entry: dict) -> str:
    """Two short lines under a candidate thumbnail: rank position and rank sum; MSE and LPIPS."""
    lpips = entry.get("lpips")
    total = entry.get("rank_total")
    head = f"#{entry['rank_position']}" + ("" if total is None else f"  Σ{int(total)}")
    return f"{head}\nM {entry['mse']:.4f}" + ("" if lpips is None else f"\nL {lpips:.3f}")


def solver_text(search: SearchSnapshot) -> str:
    """One line on the search's pose-solver stage ('' when it is off or not reached): the level and
    iteration while it runs, the candidates' median cost before -> now, the median damping and the largest
    step against the trust radius; once done, how many candidates it improved."""
    solver = search.solver
    if not solver:
        return ""
    start = solver.get("initial_cost") or solver.get("cost_start")
    now = solver.get("cost") or solver.get("cost_end")
    costs = ""
    if start and now and np.isfinite(now).any():
        costs = f", median cost {np.nanmedian(start):.4f} -> {np.nanmedian(now):.4f}"
    if solver.get("running"):
        return (
            f"pose solver: level {solver['level'] + 1}/{solver['n_levels']}, iteration {solver['iteration']}, "
            f"{len(solver['cost'])} candidates{costs}; damping {np.median(solver['damping']):.1e}, "
            f"largest step {max(solver['last_step'], default=0.0):.3f} of {solver['trust_radius']:.2f} rad"
        )
    improved = sum(1 for a, b in zip(start or [], now or []) if b < a)
    return f"pose solver: done, {improved}/{len(now or [])} candidates improved{costs}"


def ambiguity_text(search: SearchSnapshot) -> str:
    """The ambiguous badge's line ("" when the search is not ambiguous)."""
    if not search.ambiguous:
        return ""
    parts = []
    for c in search.competitors[:4]:
        score = c.get("score")
        parts.append(
            f"#{c.get('rank')} at {float(c.get('angle_deg', float('nan'))):.0f} deg"
            + ("" if score is None else f" (score {float(score):.4f})")
        )
    more = "" if len(search.competitors) <= 4 else f", +{len(search.competitors) - 4} more"
    return "AMBIGUOUS: competing candidates " + (", ".join(parts) or "-") + more


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
    """Heatmap, colour bar, markers, target photo and top-candidate thumbnails of one pose search."""

    def __init__(self, app: "WindowPort", parent: int | str, plot_size: tuple[int, int]) -> None:
        self.app = app
        small = getattr(app, "small_font", None)
        with dpg.group(horizontal=True, parent=parent):
            self.which = dpg.add_radio_button(
                ["refined", "coarse"],
                default_value=app.ui.heatmap_which,
                horizontal=True,
                callback=lambda s, a: self.set_which(a),
            )
            self.title = Text("pose search: not started")
        self.badge = Text("", parent=parent, colour=AMBIGUOUS_RED, wrap=0)
        dpg.configure_item(self.badge.tag, show=False)
        with dpg.group(horizontal=True, parent=parent):
            with dpg.plot(width=plot_size[0], height=plot_size[1], no_menus=True, no_mouse_pos=False) as plot:
                dpg.bind_colormap(plot, dpg.mvPlotColormap_Viridis)
                dpg.add_plot_legend(location=dpg.mvPlot_Location_South, horizontal=True, outside=True)
                self.x_axis = dpg.add_plot_axis(dpg.mvXAxis, label="azimuth (deg)")
                # kiui elevation: negative = camera above; inverted so "above" is up on screen
                self.y_axis = dpg.add_plot_axis(dpg.mvYAxis, label="elevation (deg, up = above)", invert=True)
                self.heat = dpg.add_heat_series(
                    [0.0], 1, 1, scale_min=0.0, scale_max=1.0, format="", parent=self.y_axis
                )
                self.markers = {}
                for name, (marker, colour) in MARKERS.items():
                    series = dpg.add_scatter_series([0.0], [0.0], label=name, parent=self.y_axis, show=False)
                    dpg.bind_item_theme(series, _marker_theme(marker, colour))
                    self.markers[name] = series
            self.plot = plot
            self.scale = dpg.add_colormap_scale(
                min_scale=0.0,
                max_scale=1.0,
                colormap=dpg.mvPlotColormap_Viridis,
                height=plot_size[1],
                width=62,
                label="MSE",
            )
            with dpg.group():
                self.target = RawTexture(app.textures, THUMB, THUMB)
                self.thumbs: list[tuple[RawTexture, int, int]] = []
                slots = [None] + list(range(CANDIDATES))
                for row in range(2):
                    with dpg.group(horizontal=True):
                        for slot in slots[3 * row : 3 * row + 3]:
                            with dpg.group():
                                if slot is None:
                                    self.target_image = dpg.add_image(
                                        self.target.tag, width=THUMB - 8, height=THUMB - 8
                                    )
                                    label = dpg.add_text("target photo\n(as compared)")
                                    if small is not None:
                                        dpg.bind_item_font(label, small)
                                    continue
                                texture = RawTexture(app.textures, THUMB, THUMB)
                                button = dpg.add_image_button(
                                    texture.tag,
                                    width=THUMB - 8,
                                    height=THUMB - 8,
                                    callback=lambda s, a, u: self.apply(u),
                                    user_data=slot,
                                )
                                label = dpg.add_text(f"#{slot}")
                                if small is not None:
                                    dpg.bind_item_font(label, small)
                                self.thumbs.append((texture, label, button))
        self.readout = Text(HOVER_HINT, parent=parent, colour=(255, 230, 150), wrap=0)
        self.rule = Text("", parent=parent, wrap=0)
        self.info = Text("", parent=parent, wrap=0)
        with dpg.item_handler_registry() as handlers:
            dpg.add_item_clicked_handler(button=dpg.mvMouseButton_Left, callback=self._clicked)
        dpg.bind_item_handler_registry(plot, handlers)
        self._key: tuple = ()
        self._shown: Optional[int] = None
        self._search: Optional[SearchSnapshot] = None
        self._x_min = -180.0
        self.hovered: Optional[tuple[int, int]] = None
        self._mouse_over = False  # the read-out follows the mouse (a scripted hover_at stays until it moves in)
        self._overlay: list[int] = []  # plot drawings: grey boxes and marker shapes

    # ------------------------------------------------------------------------------------------
    def set_which(self, which: str) -> None:
        self.app.ui.heatmap_which = which
        dpg.set_value(self.which, which)

    def resize(self, width: int, height: int) -> None:
        """Plot and colour bar size (the window's size changed)."""
        dpg.configure_item(self.plot, width=int(width), height=int(height))
        dpg.configure_item(self.scale, height=int(height))

    def apply(self, rank_position: int, view_index: Optional[int] = None) -> None:
        view = view_index if view_index is not None else self._shown
        if view is None:
            self.app.report("apply candidate: no pose search to apply from", True)
            return
        self.app.apply_candidate(view, rank_position)

    def _plot_cell(self, azimuth: float, elevation: float) -> Optional[tuple[int, int]]:
        search = self._search
        if search is None:
            return None
        wrapped = _wrap_azimuth(azimuth, self._x_min) if np.isfinite(azimuth) else azimuth
        return cell_at(search, wrapped, elevation)

    def hover_at(self, azimuth: float, elevation: float) -> str:
        """Show the read-out of the cell under plot point (azimuth, elevation) (what the mouse does)."""
        cell = self._plot_cell(azimuth, elevation)
        self.hovered = cell
        if cell is None or self._search is None:
            self.readout.set(HOVER_HINT)
        else:
            self.readout.set(cell_readout(self._search, self.app.ui.heatmap_which, cell))
        return self.readout.value

    def poll_hover(self) -> None:
        """Each frame: follow the mouse over the map."""
        if self._search is None or not dpg.is_item_hovered(self.plot):
            if self._mouse_over:
                self._mouse_over = False
                self.hovered = None
                self.readout.set(HOVER_HINT)
            return
        self._mouse_over = True
        x, y = dpg.get_plot_mouse_pos()
        self.hover_at(float(x), float(y))

    def _clicked(self) -> None:
        x, y = dpg.get_plot_mouse_pos()
        cell = self._plot_cell(float(x), float(y))
        if cell is not None:
            self.apply_cell(cell)

    def apply_cell(self, cell: tuple[int, int], view_index: Optional[int] = None) -> None:
        view = view_index if view_index is not None else self._shown
        search = self._search if view_index is None else None
        if view is None:
            self.app.report("apply cell: no pose search to apply from", True)
            return
        if search is not None and not search.done:
            self.app.report("apply cell: the search has not finished yet", True)
            return
        self.app.apply_cell(view, tuple(cell))

    # ------------------------------------------------------------------------------------------
    def update(self, view: EngineView) -> None:
        shown = searched_view_for(view, self.app.ui.selected_view)
        key = (view.version, shown, self.app.ui.heatmap_which)
        if key == self._key:
            return
        self._key = key
        self._shown = shown
        if shown is None:
            self._search = None
            self.title.set("pose search: none yet")
            self.info.set("(runs for each outlier after the leave-one-out test, and for each view unticked by hand)")
            self.rule.set("")
            self._badge("")
            self._clear()
            return
        search = view.searches[shown]
        self._search = search
        which = self.app.ui.heatmap_which
        values, low, high = heat_values(search, which)
        rows, cols = values.shape
        elev, azim = search.elevations_deg, search.azimuths_deg
        de, da = _spacing(elev), _spacing(azim)
        # Row 0 of a DearPyGui heat series lies at bounds_max.y (in data coordinates): order the rows by
        # descending elevation so every cell sits at its own elevation, like the markers.
        order = np.argsort(-elev, kind="stable")
        y_min, y_max = float(elev.min() - de / 2), float(elev.max() + de / 2)
        x_min, x_max = float(azim.min() - da / 2), float(azim.max() + da / 2)
        self._x_min = x_min
        dpg.configure_item(
            self.heat,
            show=True,
            rows=rows,
            cols=cols,
            scale_min=low,
            scale_max=high,
            bounds_min=(x_min, y_min),
            bounds_max=(x_max, y_max),
        )
        dpg.set_value(self.heat, [values[order].ravel().tolist()])
        dpg.configure_item(self.scale, min_scale=low, max_scale=high)
        self._grey_unevaluated(search, which, elev, azim, de, da)
        cells = {"initial": search.initial_cell, "chosen": search.chosen_cell, "truth": search.truth_cell}
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
        dpg.set_axis_limits(
            self.y_axis,
            min([y_min, *(e - de / 2 for e in marker_elevations)]),
            max([y_max, *(e + de / 2 for e in marker_elevations)]),
        )
        stage = f" ({search.stage_name})" if search.stage_name else ""
        status = (
            "done"
            if search.done
            else f"stage {search.stage + 1}/{search.n_stages}{stage}, {100 * search.progress:.0f} %"
        )
        if search.done and search.local is not None and search.local["accepted"]:
            status = f"done: corrected in place, the solver moved it {search.local['moved_deg']:.1f}° (not searched)"
        self.title.set(
            f"pose search for view {view.ids[shown]}: {status}" + ("  (manual choice)" if search.manual else "")
        )
        evaluated = int(np.isfinite(search.heat_coarse if which == "coarse" else search.heat_refined).sum())
        info = (
            f"{which}: {evaluated}/{rows * cols} cells evaluated; {search.score_name} best {low:.4f}, worst {high:.4f}"
        )
        solver = solver_text(search)
        self.info.set(info + ("\n" + solver if solver else ""))
        self.rule.set(rank_rule(search) if search.done else "candidates are ranked when the last stage ends")
        self._badge(ambiguity_text(search))
        if search.target is not None:
            self.target.set(search.target)
        for position, (texture, label, button) in enumerate(self.thumbs):
            if position < len(search.top):
                entry = search.top[position]
                texture.set(entry["render"])
                dpg.set_value(label, candidate_label(entry))
                dpg.configure_item(button, enabled=True)
            else:
                texture.clear()
                dpg.set_value(label, f"#{position}")
                dpg.configure_item(button, enabled=False)
        if self.hovered is not None:
            self.readout.set(cell_readout(search, which, self.hovered))

    def _badge(self, text: str) -> None:
        self.badge.set(text)
        dpg.configure_item(self.badge.tag, show=bool(text))

    def _clear(self) -> None:
        dpg.configure_item(self.heat, show=False)
        for series in self.markers.values():
            dpg.configure_item(series, show=False)
        for item in self._overlay:
            dpg.delete_item(item)
        self._overlay = []
        self.target.clear()
        for texture, label, button in self.thumbs:
            texture.clear()
            dpg.set_value(label, "")
            dpg.configure_item(button, enabled=False)

    def _grey_unevaluated(
        self, search: SearchSnapshot, which: str, elev: np.ndarray, azim: np.ndarray, de: float, da: float
    ) -> None:
        """Grey boxes over cells with no score yet (the heat series itself cannot show missing values)."""
        for item in self._overlay:
            dpg.delete_item(item)
        heat = search.heat_coarse if which == "coarse" else search.heat_refined
        self._overlay = [
            dpg.draw_rectangle(
                (azim[a] - da / 2, elev[e] - de / 2),
                (azim[a] + da / 2, elev[e] + de / 2),
                color=(70, 70, 70, 255),
                fill=(90, 90, 90, 255),
                parent=self.plot,
            )
            for e, a in zip(*np.nonzero(~np.isfinite(heat)))
        ]


def _draw_marker(name: str, x: float, y: float, half_x: float, half_y: float, parent: int | str) -> list[int]:
    """One marker shape in plot coordinates (square / cross / diamond, as in the legend)."""
    colour = MARKERS[name][1]
    if name == "initial":
        return [
            dpg.draw_rectangle(
                (x - half_x, y - half_y), (x + half_x, y + half_y), color=colour, thickness=2, parent=parent
            )
        ]
    if name == "chosen":
        return [
            dpg.draw_line((x - half_x, y - half_y), (x + half_x, y + half_y), color=colour, thickness=3, parent=parent),
            dpg.draw_line((x - half_x, y + half_y), (x + half_x, y - half_y), color=colour, thickness=3, parent=parent),
        ]
    points = [(x, y - half_y), (x + half_x, y), (x, y + half_y), (x - half_x, y), (x, y - half_y)]
    return [dpg.draw_polygon(points, color=colour, fill=colour, thickness=1, parent=parent)]


def _wrap_azimuth(azimuth: float, x_min: float) -> float:
    """Azimuth shifted by whole turns into [x_min, x_min + 360)."""
    return float((azimuth - x_min) % 360.0 + x_min)
