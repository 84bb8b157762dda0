"""Input-vs-render strip: one tile per input view, ``input | render`` over ``blend | |input - render|``.

Tile borders are green for inliers and red for outliers (yellow marks the selected view); under each
tile the live MSE (tile resolution) and the scorer's MSE / LPIPS (scene resolution, area-normalised as in
the official outlier test) with the step they were scored at. While the engine runs, scores of an earlier
step are not shown (they would be stale); they come back, re-scored, when it pauses. Clicking a tile
selects the view everywhere and snaps the orbit camera to it.

The renders come from the engine thread (:func:`gui.actions.overlay_data`) at a low rate: at once when
the engine is idle, every ``REFRESH_WHILE_RUNNING_S`` seconds while it runs. Full scores (LPIPS) are
recomputed only when the engine is idle, since they cost a full-resolution render plus LPIPS per view.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

import dearpygui.dearpygui as dpg
import numpy as np

from gui import actions
from gui.engine import EngineView
from gui.handles import RawTexture, Text
from gui.imaging import blend, difference_heatmap, grid_2x2, resize

if TYPE_CHECKING:
    from gui.port import WindowPort

TILE = 80  # pixels of each of the four sub-images
REFRESH_WHILE_RUNNING_S = 2.0
BORDER = {"inlier": (60, 220, 90, 255), "outlier": (240, 70, 60, 255), "selected": (255, 215, 0, 255)}


def _border_theme(colour: tuple) -> int:
    with dpg.theme() as theme:
        with dpg.theme_component(dpg.mvAll):
            dpg.add_theme_color(dpg.mvThemeCol_Border, colour, category=dpg.mvThemeCat_Core)
            dpg.add_theme_style(dpg.mvStyleVar_ChildBorderSize, 3, category=dpg.mvThemeCat_Core)
    return theme


class _Tile:
    def __init__(self, app: "WindowPort", parent: int | str, index: int) -> None:
        size = 2 * TILE + 2
        self.texture = RawTexture(app.textures, size, size)
        with dpg.child_window(width=size + 18, height=size + 106, border=True, parent=parent, no_scrollbar=True) as box:
            self.button = dpg.add_image_button(
                self.texture.tag, width=size, height=size, callback=lambda: app.select_view(index, snap=True)
            )
            self.title = Text("-")
            self.live = Text("-")
            self.scores = Text("-", wrap=size)
            small = getattr(app, "small_font", None)
            if small is not None:
                dpg.bind_item_font(self.scores.tag, small)
        self.box = box
        self._theme: Optional[int] = None

    def set_theme(self, theme: int) -> None:
        if theme != self._theme:
            dpg.bind_item_theme(self.box, theme)
            self._theme = theme


class OverlayStrip:
    """The bottom strip (see the module docstring)."""

    def __init__(self, app: "WindowPort", parent: int | str) -> None:
        self.app = app
        with dpg.group(horizontal=True, parent=parent):
            dpg.add_text("blend input -> render")
            self.blend = dpg.add_slider_float(
                default_value=app.ui.blend,
                min_value=0.0,
                max_value=1.0,
                width=160,
                callback=lambda s, a: self.set_blend(a),
            )
            dpg.add_button(label="Re-score views (LPIPS)", callback=lambda: self.request(rescore=True))
            self.info = Text("each tile: input | render  /  blend | |input - render| (black = equal)")
        self.container = dpg.add_group(horizontal=True, parent=parent)
        self.themes = {name: _border_theme(colour) for name, colour in BORDER.items()}
        self.tiles: list[_Tile] = []
        self.data: Optional[actions.OverlayData] = None
        self._cache: dict = {}
        self._requested_key: tuple = ()
        self._last_request = 0.0
        self._composed_key: tuple = ()
        self._rescored_step: tuple = ()

    def set_blend(self, value: float) -> None:
        self.app.ui.blend = float(value)
        dpg.set_value(self.blend, float(value))

    def _ensure_tiles(self, count: int) -> None:
        if len(self.tiles) == count:
            return
        dpg.delete_item(self.container, children_only=True)
        self.tiles = [_Tile(self.app, self.container, i) for i in range(count)]
        self._composed_key = ()

    @property
    def pending(self) -> bool:
        return self.app.jobs.busy("overlay")

    def request(self, rescore: bool = False) -> None:
        if self.pending:
            return
        cache = self._cache
        self._last_request = time.perf_counter()

        def done(data: Optional[actions.OverlayData]) -> None:
            self.data = data

        self.app.jobs.add(
            self.app.worker.call(lambda p: actions.overlay_data(p, TILE, rescore, cache)), "overlay", done
        )

    def wanted_key(self, view: EngineView) -> tuple:
        return (view.gaussians_version, tuple(np.asarray(view.w2c_current).ravel().round(9)))

    def up_to_date(self, view: Optional[EngineView]) -> bool:
        if view is None or self.pending:
            return False
        return self._requested_key == self.wanted_key(view) and self._rescored_step == (
            view.gaussians_version,
            view.recon_step,
        )

    def update(self, view: Optional[EngineView]) -> None:
        if view is None:
            return
        self._ensure_tiles(len(view.ids))
        key = self.wanted_key(view)
        idle = not view.busy
        step_key = (key[0], view.recon_step)
        rescore = idle and self._rescored_step != step_key
        if (key != self._requested_key or rescore) and not self.pending:
            if idle or time.perf_counter() - self._last_request > REFRESH_WHILE_RUNNING_S:
                self.request(rescore=rescore)
                self._requested_key = key
                if rescore:
                    self._rescored_step = step_key
        self._compose(view)

    def _compose(self, view: EngineView) -> None:
        data = self.data
        ui = self.app.ui
        key = (
            None if data is None else data.version_key,
            ui.blend,
            ui.selected_view,
            tuple(view.flags),
            view.busy,
            data is not None and data.scores_step == view.recon_step,
        )
        if key == self._composed_key:
            return
        self._composed_key = key
        for index, tile in enumerate(self.tiles):
            flag = int(view.flags[index])
            name = "selected" if index == ui.selected_view else ("inlier" if flag else "outlier")
            tile.set_theme(self.themes[name])
            tile.title.set(
                f"view {view.ids[index]}  {'inlier' if flag else 'OUTLIER'}",
                colour=BORDER["inlier" if flag else "outlier"],
            )
            if data is None or index >= len(data.targets):
                continue
            target = resize(data.targets[index], TILE, TILE)
            render = resize(data.renders[index], TILE, TILE)
            tile.texture.set(
                grid_2x2(target, render, blend(target, render, ui.blend), difference_heatmap(target, render))
            )
            tile.live.set(f"MSE {data.mse[index]:.4f} (live)")
            line, fresh = score_line(data, index, view.recon_step, view.busy)
            tile.scores.set(line, colour=(220, 220, 220) if fresh else (140, 140, 140))


def score_line(data: actions.OverlayData, index: int, recon_step: int, busy: bool) -> tuple[str, bool]:
    """(the scorer's line under a tile, whether it is current). Scores of an earlier step are dropped while
    the engine runs (stale), labelled with their step otherwise."""
    scores = data.scores
    if not scores:
        return "scores: when the engine pauses", False
    fresh = data.scores_step is not None and int(data.scores_step) == int(recon_step)
    if busy and not fresh:
        return "scores: when the engine pauses", False
    parts = []
    if "mse" in scores:
        parts.append(f"MSE {float(scores['mse'][index]):.4f}")
    if "lpips" in scores:
        parts.append(f"LPIPS {float(scores['lpips'][index]):.3f}")
    when = "scored (earlier)" if data.scores_step is None else f"scored @{data.scores_step}"
    return f"{when}:\n" + "  ".join(parts), fresh
