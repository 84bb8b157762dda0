"""SparseAGS Studio debugger: the DearPyGui window that drives the pipeline live.

Layout (``gui.width`` x ``gui.height``, 1600 x 1000 by default; resizable: every window keeps its share of
the viewport, see :func:`layout_for`): the orbit view with its options on the left; the controls
(stepping, phase, timing, loss curves, pose accuracy against ground truth, seed, scene, checkpoints, export,
turntable) next to it; per-view score bars with the outlier decisions top right; the pose-search panel
(heatmap with a hover read-out, the target photo and the top candidates) below them; along the bottom,
four tabs: the input-vs-render strip, the matches of a view pair with the per-view pose-evidence curves
(:mod:`gui.panels.evidence`), the arbitration (:mod:`gui.panels.arbitration`) and the pose accuracy per view.

Panels see the window through :class:`gui.port.WindowPort`; none of them imports this module.

Threads: the pipeline lives on the engine thread (:mod:`gui.engine`), stepped in slices of at most
``cfg.gui.frame_budget_ms``; this (main) thread is the only one that calls DearPyGui. Callbacks are
queued by DearPyGui and run here (``manual_callback_management``), once per frame.

Entry point: :func:`run_app` (``python main.py gui``; ``python main.py`` opens the demo scene).
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import dearpygui.dearpygui as dpg
import numpy as np

from gui import actions
from gui.engine import EngineWorker
from gui.handles import Text
from gui.importer import CaptureLayout, ImportProgress, find_capture, fresh_scene_dir, is_scene, run_import
from gui.panels.arbitration import ArbitrationPanel
from gui.panels.controls import ControlsPanel
from gui.panels.evidence import EvidencePanel, PoseAccuracyPanel
from gui.panels.export import ExportPanel
from gui.panels.lpips_bars import LpipsBarsPanel
from gui.panels.orbit_view import OrbitViewPanel
from gui.panels.outliers import OutliersPanel
from gui.panels.overlays import OverlayStrip
from gui.panels.runs import ComparePanel, EvaluationWindow
from gui.panels.search_heatmap import SearchHeatmapPanel, searched_view_for
from gui.readouts import bar_model
from gui.script import ScriptError, ScriptRunner, load_script
from gui.state import PendingJobs, Timing, UiState, one_line
from sparseags.atomic import atomic_output
from sparseags.config import Config
from sparseags.errors import UserError

__all__ = ["DebuggerApp", "run_app", "default_out_dir", "LAYOUT", "layout_for", "BOTTOM_TABS"]

REPO_ROOT = Path(__file__).resolve().parent.parent
VIEWPORT = (1600, 1000)  # the reference size of LAYOUT (cfg.gui.width / height choose the window's size)
MIN_VIEWPORT = (800, 600)
# window name -> (x, y, width, height) in viewport pixels at the reference size
LAYOUT = {
    "orbit": (0, 0, 532, 640),
    "controls": (532, 0, 440, 640),
    "scores": (972, 0, 628, 300),
    "search": (972, 300, 628, 340),
    "overlays": (0, 640, 1600, 360),
}
BOTTOM_TABS = {
    "overlays": "input vs render",
    "evidence": "matches & pose evidence",
    "arbitration": "arbitration",
    "accuracy": "pose accuracy",
    "compare": "compare runs",
}
FONT_SIZE = 15
SMALL_FONT_SIZE = 13


def layout_for(width: int, height: int) -> dict[str, tuple[int, int, int, int]]:
    """LAYOUT scaled to a `width` x `height` viewport: every window keeps its share (edges rounded, so the
    windows tile the viewport without gaps or overlaps)."""
    sx, sy = width / VIEWPORT[0], height / VIEWPORT[1]
    out = {}
    for name, (x, y, w, h) in LAYOUT.items():
        x0, y0 = round(x * sx), round(y * sy)
        x1, y1 = round((x + w) * sx), round((y + h) * sy)
        out[name] = (int(x0), int(y0), int(x1 - x0), int(y1 - y0))
    return out


def orbit_view_size(layout: dict, wanted: int) -> int:
    """The orbit view's square size: `wanted` (``gui.view_size``, meant for the reference viewport) scaled
    with the layout, so the view keeps its share of the window, and fitted to its window (its options take
    about 150 px below it)."""
    _, _, w, h = layout["orbit"]
    _, _, w_ref, h_ref = LAYOUT["orbit"]
    scaled = int(wanted) * min(w / w_ref, h / h_ref)
    return int(max(128, min(scaled, w - 20, h - 150)))


STATUS_COLOURS = {False: (170, 230, 170), True: (255, 110, 100)}


class DisplayUnavailableError(UserError):
    """No display to open the window on."""


def default_out_dir(scene_dir: Path) -> Path:
    """outputs/<scene>_gui under the repository."""
    return REPO_ROOT / "outputs" / f"{Path(scene_dir).resolve().name}_gui"


def _font_path() -> Optional[Path]:
    """DejaVu Sans shipped with matplotlib (always installed here): readable at 15 px, unlike the default."""
    try:
        import matplotlib
    except ImportError:
        return None
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return path if path.is_file() else None


def _apply_theme() -> None:
    with dpg.theme() as theme:
        with dpg.theme_component(dpg.mvAll):
            dpg.add_theme_style(dpg.mvStyleVar_FrameRounding, 4, category=dpg.mvThemeCat_Core)
            dpg.add_theme_style(dpg.mvStyleVar_WindowPadding, 8, 6, category=dpg.mvThemeCat_Core)
            dpg.add_theme_style(dpg.mvStyleVar_ItemSpacing, 6, 5, category=dpg.mvThemeCat_Core)
            dpg.add_theme_color(dpg.mvThemeCol_WindowBg, (30, 32, 38), category=dpg.mvThemeCat_Core)
            dpg.add_theme_color(dpg.mvThemeCol_Button, (52, 78, 120), category=dpg.mvThemeCat_Core)
            dpg.add_theme_color(dpg.mvThemeCol_ButtonHovered, (72, 108, 165), category=dpg.mvThemeCat_Core)
            dpg.add_theme_color(dpg.mvThemeCol_ButtonActive, (95, 140, 210), category=dpg.mvThemeCat_Core)
    dpg.bind_theme(theme)


class DebuggerApp:
    """The window, its panels and the frame loop (see the module docstring).

    Args:
        scene_dir: the scene folder (SparseAGS layout).
        cfg: the resolved configuration (``cfg.gui`` holds the frame budget, view size, orbit renderer).
        out_dir: where exports, checkpoints and decisions.json go (default outputs/<scene>_gui).
    """

    def __init__(self, scene_dir: Path, cfg: Config, out_dir: Optional[Path] = None) -> None:
        self.scene_dir = Path(scene_dir)
        self.cfg = cfg
        self.explicit_out = out_dir is not None
        self.out_dir = Path(out_dir) if out_dir is not None else default_out_dir(self.scene_dir)
        self.ui = UiState()
        self.timing = Timing()
        self.jobs = PendingJobs(self.report)
        self.worker: Optional[EngineWorker] = None
        self.screenshot_error: Optional[str] = None
        self.import_progress: Optional[ImportProgress] = None  # the latest raw-capture import (progress bar)
        self._applied_version = -1
        self._window_ready = False
        self.small_font: Optional[int] = None
        self.viewport_size: tuple[int, int] = (0, 0)  # the size the layout was last made for
        self._client_size: tuple[int, int] = (0, 0)  # the viewport's client size it was made from
        self.layout: dict = {}
        self.source: Any = None  # the RunInfo of the run folder on display (None: a scene opened fresh)
        self.comparison: Any = None  # the RunComparison of the compare tab
        self.eval_window: Optional[EvaluationWindow] = None
        self.open_timer: Optional[tuple[float, str]] = None  # (perf_counter at the request, what) until drawn
        self.open_seconds: dict[str, float] = {}  # what -> seconds from the request to its first full frame
        self.process_started: Optional[float] = None  # perf_counter at the command's start (main.py)

    # ------------------------------------------------------------------------------------------
    # construction
    def start_engine(self, pipeline: Any = "build") -> None:
        """Start the engine thread on `pipeline` ("build": the scene's fresh pipeline; None: nothing open yet)."""
        from sparseags.session import build_pipeline

        if isinstance(pipeline, str):
            print(f"loading {self.scene_dir} ...", file=sys.stderr)
            pipeline = build_pipeline(self.scene_dir, self.cfg)
        if not self._window_ready:  # numba's LLVM on this thread, before the window's (see warm_renderer)
            actions.warm_renderer(self.cfg.render.backend)
        self.worker = EngineWorker(pipeline, frame_budget_ms=self.cfg.gui.frame_budget_ms).start()

    def build_window(self) -> None:
        dpg.create_context()
        dpg.configure_app(manual_callback_management=True)
        font = _font_path()
        if font is not None:
            with dpg.font_registry():
                dpg.bind_font(dpg.add_font(str(font), FONT_SIZE))
                self.small_font = dpg.add_font(str(font), SMALL_FONT_SIZE)
        _apply_theme()
        self.textures = dpg.add_texture_registry()
        width = max(MIN_VIEWPORT[0], int(getattr(self.cfg.gui, "width", VIEWPORT[0])))
        height = max(MIN_VIEWPORT[1], int(getattr(self.cfg.gui, "height", VIEWPORT[1])))
        layout = self.layout = layout_for(width, height)
        self.viewport_size = (width, height)
        windows = {}
        for name, (x, y, w, h) in layout.items():
            windows[name] = dpg.add_window(
                pos=(x, y),
                width=w,
                height=h,
                no_title_bar=True,
                no_move=True,
                no_resize=True,
                no_collapse=True,
                no_close=True,
                horizontal_scrollbar=name == "overlays",
            )
        self.windows = windows
        self.orbit = OrbitViewPanel(self, windows["orbit"], orbit_view_size(layout, int(self.cfg.gui.view_size)))
        self.status = Text("", parent=windows["orbit"], wrap=layout["orbit"][2] - 16)
        self.controls = ControlsPanel(self, windows["controls"], layout["controls"][2])
        dpg.add_separator(parent=windows["controls"])
        self.export = ExportPanel(self, windows["controls"])
        self.bars = LpipsBarsPanel(self, windows["scores"], -1, 130)
        self.outliers = OutliersPanel(self, windows["scores"])
        self.heatmap = SearchHeatmapPanel(self, windows["search"], self._heatmap_size(layout))
        with dpg.tab_bar(parent=windows["overlays"], callback=lambda s, a: self._tab_changed(a)) as tabs:
            self.bottom_tabs = {name: dpg.add_tab(label=label) for name, label in BOTTOM_TABS.items()}
        self.tab_bar = tabs
        self.overlays = OverlayStrip(self, self.bottom_tabs["overlays"])
        self.evidence = EvidencePanel(self, self.bottom_tabs["evidence"])
        self.arbitration_panel = ArbitrationPanel(self, self.bottom_tabs["arbitration"])
        self.accuracy = PoseAccuracyPanel(self, self.bottom_tabs["accuracy"])
        self.compare_panel = ComparePanel(self, self.bottom_tabs["compare"])
        with dpg.handler_registry():
            dpg.add_mouse_wheel_handler(callback=lambda s, a: self.orbit.on_wheel(a))
            dpg.add_key_press_handler(dpg.mvKey_Spacebar, callback=lambda: self.controls.toggle_run())
        dpg.create_viewport(
            title="SparseAGS Studio - debugger",
            width=width,
            height=height,
            resizable=True,
            min_width=MIN_VIEWPORT[0],
            min_height=MIN_VIEWPORT[1],
        )
        dpg.set_viewport_resize_callback(lambda: self.apply_layout())
        dpg.setup_dearpygui()
        dpg.show_viewport()
        self._window_ready = True

    @staticmethod
    def _heatmap_size(layout: dict) -> tuple[int, int]:
        _, _, w, h = layout["search"]
        return int(max(180, 0.45 * w)), int(max(120, h - 140))

    def apply_layout(self, width: Optional[int] = None, height: Optional[int] = None) -> dict:
        """Fit the windows to a `width` x `height` viewport (default: the viewport's client size now): each
        window keeps its share, the plots follow their windows. Runs on every viewport resize."""
        if width is None or height is None:
            width, height = dpg.get_viewport_client_width(), dpg.get_viewport_client_height()
        self._client_size = (int(width), int(height))
        width, height = max(int(width), MIN_VIEWPORT[0]), max(int(height), MIN_VIEWPORT[1])
        layout = self.layout = layout_for(width, height)
        self.viewport_size = (width, height)
        for name, (x, y, w, h) in layout.items():
            dpg.configure_item(self.windows[name], pos=(x, y), width=w, height=h)
        dpg.configure_item(self.status.tag, wrap=layout["orbit"][2] - 16)
        self.controls.resize(layout["controls"][2], layout["controls"][3])
        self.bars.resize(layout["scores"][3])
        self.heatmap.resize(*self._heatmap_size(layout))
        self.orbit.resize(orbit_view_size(layout, int(self.cfg.gui.view_size)))
        self.accuracy.resize(layout["overlays"][3])
        return layout

    # ------------------------------------------------------------------------------------------
    # messages and selection
    def report(self, message: str, is_error: bool = False) -> None:
        self.ui.status, self.ui.status_is_error = message, is_error
        if self._window_ready:
            self.status.set(message, colour=STATUS_COLOURS[is_error])
        if is_error:
            print(f"debugger: {message}", file=sys.stderr)

    def select_view(self, index: int, snap: bool = False) -> None:
        self.ui.selected_view = int(index)
        if snap:
            self.orbit.snap_to(int(index))

    def show_tab(self, name: str) -> None:
        """Bring a tab of the bottom window to the front: "overlays", "evidence", "arbitration" or "accuracy"."""
        if name not in self.bottom_tabs:
            raise ValueError(f"unknown tab {name!r}; tabs are {', '.join(self.bottom_tabs)}")
        self.ui.bottom_tab = name
        dpg.set_value(self.tab_bar, self.bottom_tabs[name])

    def select_pair(self, a: int, b: int) -> None:
        """Show the matches between views a and b (indices) in the evidence tab."""
        self.evidence.select_pair(a, b)

    def _tab_changed(self, tab: Any) -> None:
        for name, item in self.bottom_tabs.items():
            if item == tab:
                self.ui.bottom_tab = name

    # ------------------------------------------------------------------------------------------
    # decisions (each returns the engine future; decisions.json is rewritten after each)
    def decide_outlier(self, accept: bool, round_index: Optional[int] = None) -> Future:
        """Accept or reject a verdict: round `round_index`, else the round selected in the outlier panel, else
        the verdict on display. A decision that agrees with the verdict changes nothing (and says so)."""
        view = self.worker.view
        if round_index is None:
            round_index = self.ui.selected_round
        if round_index is None and view is not None:
            model = bar_model(view)
            round_index = None if model is None else model.verdict_round
        out_dir, source = self.out_dir, self.source_note()

        def apply(pipeline: Any) -> bool:
            changed = pipeline.decide_outlier(accept, round_index=round_index)
            if changed:
                actions.write_decisions(pipeline, out_dir, source)
            return changed

        label = "accept outlier" if accept else "reject outlier"
        where = "the latest verdict" if round_index is None else f"round {round_index}"

        def done(changed: bool) -> None:
            if changed:
                self.report(f"{label} ({where}): logged", False)
            else:
                self.report(f"{label}: {where} already says so; nothing changed", False)

        return self.jobs.add(self.worker.call(apply), label, done)

    def apply_candidate(self, view_index: Optional[int], rank_position: int) -> Future:
        view = self.worker.view
        if view_index is None and view is not None:
            view_index = searched_view_for(view, self.ui.selected_view)
        if view_index is None:
            future: Future = Future()
            future.set_exception(ScriptError("apply candidate: no pose search yet"))
            return self.jobs.add(future, "apply candidate")
        out_dir, source = self.out_dir, self.source_note()

        def apply(pipeline: Any) -> None:
            pipeline.apply_candidate(view_index, rank_position)
            actions.write_decisions(pipeline, out_dir, source)

        return self.jobs.add(
            self.worker.call(apply),
            "apply candidate",
            lambda _: self.report(f"candidate #{rank_position} applied to view {view_index}", False),
        )

    def apply_cell(self, view_index: Optional[int], cell: tuple) -> Future:
        """Apply the hypothesis of heatmap cell ``(elevation index, azimuth index)`` of the search for
        `view_index` (default: the search on display); its frustum and tile show the new pose at once."""
        view = self.worker.view
        if view_index is None and view is not None:
            view_index = searched_view_for(view, self.ui.selected_view)
        if view_index is None:
            future: Future = Future()
            future.set_exception(ScriptError("apply cell: no pose search yet"))
            return self.jobs.add(future, "apply cell")
        out_dir, source = self.out_dir, self.source_note()
        cell = (int(cell[0]), int(cell[1]))

        def apply(pipeline: Any) -> dict:
            hypothesis = pipeline.apply_cell(view_index, cell)
            actions.write_decisions(pipeline, out_dir, source)
            return hypothesis

        def done(hypothesis: dict) -> None:
            search = None if self.worker.view is None else self.worker.view.searches.get(view_index)
            where = (
                f"elev {search.elevations_deg[cell[0]]:.0f}, azim {search.azimuths_deg[cell[1]]:.0f} deg"
                if search is not None
                else f"cell {cell}"
            )
            what = (
                f"its best candidate #{hypothesis['rank_position']}"
                if hypothesis.get("rank_position") is not None
                else f"its grid pose at radius {hypothesis.get('radius', float('nan')):.3f}"
            )
            name = self.worker.view.ids[view_index] if self.worker.view is not None else view_index
            self.report(f"cell {where} applied to view {name}: {what}", False)

        return self.jobs.add(self.worker.call(apply), "apply cell", done)

    def choose_arbitration(self, choice: str, view_index: Optional[int] = None) -> Future:
        """Overrule the arbitration: "recovered" or "initial" pose for view `view_index` (None: every searched
        view). An engine that arbitrates all views at once takes no view."""
        out_dir, source = self.out_dir, self.source_note()

        def apply(pipeline: Any) -> None:
            if view_index is None:
                pipeline.choose_arbitration(choice)
            else:
                if "view" not in inspect.signature(pipeline.choose_arbitration).parameters:
                    raise ScriptError("this engine arbitrates all searched views at once: choose without a view")
                pipeline.choose_arbitration(choice, view=int(view_index))
            actions.write_decisions(pipeline, out_dir, source)

        ids = [] if self.worker.view is None else self.worker.view.ids
        where = "every searched view" if view_index is None else f"view {ids[view_index] if ids else view_index}"
        return self.jobs.add(
            self.worker.call(apply),
            "choose arbitration",
            lambda _: self.report(f"arbitration: {choice} poses chosen for {where}", False),
        )

    def set_flag(self, index: int, flag: int) -> Future:
        out_dir, source = self.out_dir, self.source_note()

        def apply(pipeline: Any) -> None:
            pipeline.set_flag(index, flag)
            actions.write_decisions(pipeline, out_dir, source)

        return self.jobs.add(
            self.worker.call(apply),
            f"set flag of view {index}",
            lambda _: self.report(f"view {index} flag -> {flag}; pipeline restarted", False),
        )

    # ------------------------------------------------------------------------------------------
    # finished, interrupted and evaluated runs
    def source_note(self) -> Optional[dict]:
        """What decisions.json records about the run folder on display (None for a scene opened fresh)."""
        info = self.source
        if info is None:
            return None
        return {"folder": str(info.folder), "run_id": info.run_id, "kind": info.kind, "ended_at": info.label}

    def open_run(self, folder: Any, scene: Optional[Path] = None, then: Optional[Callable[[], Any]] = None) -> Future:
        """Open a run folder (a path, checked by :func:`sparseags.run_folder.inspect_run` here, or the RunInfo
        the caller got from it): a complete run as it ended, an
        interrupted one at its checkpoint, paused. The check and the loading run on the engine thread; a
        refused folder is a red status line and changes nothing. Decisions and exports then go to a fresh
        folder beside the run (``<run>_rerun``), never into it. `then` runs on the main thread once it is open."""
        from sparseags import run_folder

        checked = folder if isinstance(folder, run_folder.RunInfo) else None  # already inspected by the caller
        folder = checked.folder if checked is not None else Path(folder)
        self.open_timer = (time.perf_counter(), f"run {folder.name}")

        def load(_: Any) -> Any:
            info = checked if checked is not None else run_folder.inspect_run(folder, scene)
            return info, run_folder.open_run(info)

        holder: dict = {}

        def make(old: Any) -> Any:
            info, pipeline = load(old)
            holder["info"] = info
            return pipeline

        def opened(_: Any) -> None:
            info = holder["info"]
            if self.open_timer is not None:
                self.open_timer = (*self.open_timer[:2], "loaded")
            self.source, self.scene_dir, self.comparison = info, info.scene_dir, None
            if not self.explicit_out:
                self.out_dir = run_folder.fresh_sibling(info.folder)
            self.orbit._placed = False
            state = "as it ended" if info.kind == "complete" else "at its checkpoint, paused: Run continues it"
            self.report(
                f"opened {info.kind} run {info.folder.name} ({info.label}) {state}; decisions and exports go to "
                f"{self.out_dir}",
                False,
            )
            if then is not None:
                then()

        future = self.jobs.add(self.worker.swap(make), f"open run {folder}", opened)
        future.add_done_callback(lambda f: self._clear_timer_on_error(f))
        return future

    def _clear_timer_on_error(self, future: Future) -> None:
        if future.cancelled() or future.exception() is not None:
            self.open_timer = None

    def compare_runs(self, folder_a: Path, folder_b: Path) -> Future:
        """Open run A and compare it with run B (the compare tab)."""
        result: Future = Future()

        def failed(f: Future) -> None:  # any thread; success resolves `result` through compare_with
            if not result.done() and (f.cancelled() or f.exception() is not None):
                result.set_exception(f.exception() or UserError("opening run A was cancelled"))

        opened = self.open_run(folder_a, then=lambda: self._chain(self.compare_with(folder_b), lambda v: v, result))
        opened.add_done_callback(failed)
        return result

    def compare_with(self, folder_b: Any, scene: Optional[Path] = None) -> Future:
        """Compare the run on display with run folder B (same scene): B is loaded on the engine thread, the
        comparison built there (:func:`sparseags.compare.compare_pipelines`) and shown in the compare tab."""
        from sparseags import run_folder
        from sparseags.compare import compare_pipelines

        checked = folder_b if isinstance(folder_b, run_folder.RunInfo) else None  # already inspected
        folder_b = checked.folder if checked is not None else Path(folder_b)
        source = self.source
        label_a = str(source.folder) if source is not None else str(self.scene_dir)

        def build(pipeline: Any) -> Any:
            if pipeline is None:
                raise UserError("open a run first, then compare it with another")
            other = run_folder.open_run(checked if checked is not None else run_folder.inspect_run(folder_b, scene))
            label = label_a
            if source is not None and len(pipeline.decisions) != len(source.state.get("decisions") or []):
                label += f" + {len(pipeline.decisions) - len(source.state.get('decisions') or [])} of your decisions"
            return compare_pipelines(pipeline, other, (label, str(folder_b)))

        def shown(comparison: Any) -> None:
            self.comparison = comparison
            self.show_tab("compare")
            self.report(f"comparing with {folder_b}: {len(comparison.decisions)} decisions differ", False)

        return self.jobs.add(self.worker.call(build), f"compare with {folder_b}", shown)

    def open_eval(self, folder: Path) -> EvaluationWindow:
        """Show the evaluation table of `folder` (a floating window); an EvaluationError when it holds no run."""
        from sparseags.evaluate import read_evaluation

        runs = read_evaluation(Path(folder))
        if self.eval_window is not None:
            dpg.delete_item(self.eval_window.window)
        width, height = self.viewport_size
        self.eval_window = EvaluationWindow(
            self,
            Path(folder),
            runs,
            pos=(int(0.06 * width), int(0.08 * height)),
            size=(int(0.8 * width), int(0.6 * height)),
        )
        self.report(f"evaluation {folder}: {len(runs)} runs", False)
        return self.eval_window

    def open_scene(self, scene_dir: Path) -> Future:
        from sparseags.session import build_pipeline

        cfg = self.cfg

        def opened(_: Any) -> None:
            self.scene_dir = Path(scene_dir)
            self.source = None
            if not self.explicit_out:
                self.out_dir = default_out_dir(self.scene_dir)
            self.orbit._placed = False
            self.report(f"opened {scene_dir}", False)

        return self.jobs.add(self.worker.swap(lambda _: build_pipeline(Path(scene_dir), cfg)), "open scene", opened)

    def open_path(self, folder: Path) -> Future:
        """``Open scene...``: a scene folder is opened; a raw capture (photos, optional masks and poses, see
        :mod:`gui.importer`) is imported into a fresh scene folder on the engine thread, then opened.

        The future resolves when the scene is open (to the opened folder) or carries the one-line error.
        """
        from sparseags.run_folder import is_run_folder

        folder = Path(folder)
        if folder.is_dir() and is_run_folder(folder):
            return self._chain(self.open_run(folder), lambda _: folder)
        if folder.is_dir() and not is_scene(folder) and _is_evaluation(folder):
            done: Future = Future()
            try:
                self.open_eval(folder)
                done.set_result(folder)
            except UserError as err:
                done.set_exception(err)
            return done
        if not folder.is_dir() or is_scene(folder):
            return self._chain(self.open_scene(folder), lambda _: folder)
        try:
            layout = find_capture(folder)
            out = fresh_scene_dir(folder, self.out_dir if self.explicit_out else None)
        except UserError as err:
            failed: Future = Future()
            failed.set_exception(err)
            return self.jobs.add(failed, f"open {folder}")
        return self.import_capture(layout, out)

    def import_capture(self, layout: CaptureLayout, out: Path) -> Future:
        """Import on the engine thread (progress in :attr:`import_progress`), then open the new scene."""
        progress = ImportProgress(layout, out)
        self.import_progress = progress
        resolution = int(self.cfg.scene.resolution)
        self.report(f"importing {layout.folder} ({layout.describe()}) into {out} ...", False)
        result: Future = Future()

        def imported(report: Any) -> None:
            skipped = f"; not imported: {', '.join(report.skipped)}" if report.skipped else ""
            self.report(f"imported {len(report.ids)} views into {out}{skipped}; opening ...", False)
            opened = self.open_scene(out)
            self._chain(opened, lambda _: out, result)

        def failed(f: Future) -> None:  # a failed import fails the whole open (success chains in `imported`)
            if not f.cancelled() and f.exception() is not None and not result.done():
                result.set_exception(f.exception())

        self.jobs.add(
            self.worker.call(lambda _: run_import(layout, out, progress, resolution)), "import", imported
        ).add_done_callback(failed)
        return result

    @staticmethod
    def _chain(source: Future, value: Any, target: Optional[Future] = None) -> Future:
        """`target` (a new future by default) resolves to ``value(result)`` of `source`, or its error
        (set from whichever thread completes `source`; no DearPyGui call)."""
        target = Future() if target is None else target

        def done(f: Future) -> None:
            if target.done():
                return
            if f.cancelled():
                target.cancel()
            elif f.exception() is not None:
                target.set_exception(f.exception())
            else:
                target.set_result(value(f.result()))

        source.add_done_callback(done)
        return target

    # ------------------------------------------------------------------------------------------
    # screenshots
    def request_screenshot(self, path: Path) -> threading.Event:
        """Save the next rendered frame to `path` (PNG, atomically); the event is set when written."""
        done = threading.Event()
        self.screenshot_error = None
        width, height = dpg.get_viewport_client_width(), dpg.get_viewport_client_height()

        def save(sender: Any, buffer: Any) -> None:
            try:
                _save_frame_buffer(buffer, width, height, Path(path))
            except (OSError, ValueError) as err:
                self.screenshot_error = f"{path}: cannot write the screenshot ({err})"
            done.set()

        dpg.output_frame_buffer(callback=save)
        return done

    def regions(self) -> dict[str, tuple[int, int, int, int]]:
        """Viewport pixel rectangles (x0, y0, x1, y1) of the main items, for tests and docs."""
        items = {
            "orbit_view": self.orbit.drawlist,
            "loss_plot": self.controls.loss_plot,
            "bars": self.bars.plot,
            "heatmap": self.heatmap.plot,
            "overlays": self.windows["overlays"],
        }
        items.update(
            {
                "search": self.windows["search"],
                "search_target": self.heatmap.target_image,
                "controls": self.windows["controls"],
                "scores": self.windows["scores"],
                "orbit": self.windows["orbit"],
            }
        )
        if self.ui.bottom_tab == "evidence":  # items of a hidden tab have no rectangle
            items.update(
                {
                    "matches": self.evidence.drawlist,
                    "epipolar_plot": self.evidence.epipolar.plot,
                    "rgb_plot": self.evidence.rgb.plot,
                    "pose_plot": self.evidence.pose_plot,
                }
            )
        if self.ui.bottom_tab == "arbitration":
            items["arbitration_table"] = self.arbitration_panel.box
        if self.ui.bottom_tab == "accuracy":
            items.update(
                {
                    "accuracy_rot_plot": self.accuracy.plots["rot"]["plot"],
                    "accuracy_centre_plot": self.accuracy.plots["centre"]["plot"],
                }
            )
        out = {}
        for name, item in items.items():
            state = dpg.get_item_state(item)
            if "rect_size" not in state:  # not drawn (this frame)
                continue
            x, y = state.get("rect_min", state["pos"])  # windows report their position as "pos"
            w, h = state["rect_size"]
            out[name] = (int(x), int(y), int(x + w), int(y + h))
        return out

    # ------------------------------------------------------------------------------------------
    # frame loop
    def frame(self) -> None:
        """One UI frame: callbacks, input, engine results, panels, render."""
        self.timing.frame()
        self._run_callbacks()
        size = (dpg.get_viewport_client_width(), dpg.get_viewport_client_height())
        if size != self._client_size and min(size) > 0:  # also when the resize callback did not come
            self.apply_layout(*size)
        self.orbit.handle_mouse()
        self.jobs.poll()
        view = self.worker.view
        if view is not None:
            if view.version != self._applied_version:
                self.controls.update(view)
                self.outliers.update(view)
                if view.error:
                    self.report(view.error, True)
            self.heatmap.update(view)  # also reacts to selection / coarse-refined changes
            self.bars.update(view)
            self._applied_version = view.version
        self.orbit.update(view)
        self.overlays.update(view)
        self.evidence.update(view)
        self.arbitration_panel.update(view)
        self.accuracy.update(view)
        self.compare_panel.update(self.comparison)
        self.heatmap.poll_hover()
        self.export.update()
        self.controls.update_import(self.import_progress)
        self.controls.update_timing(view)
        dpg.render_dearpygui_frame()
        self._time_open(view)

    def _time_open(self, view: Any) -> None:
        """After an open (a run folder), the first frame with every panel on the new pipeline's state: its
        time since the request goes to :attr:`open_seconds` and stderr."""
        timer = self.open_timer
        if timer is None or len(timer) < 3 or view is None:
            return
        if view.version != self._applied_version or self.jobs.busy() or not self.overlays.up_to_date(view):
            return
        seconds = time.perf_counter() - timer[0]
        self.open_seconds[timer[1]] = seconds
        self.open_timer = None
        since_start = ""
        if self.process_started is not None and "process" not in self.open_seconds:
            self.open_seconds["process"] = time.perf_counter() - self.process_started
            since_start = f" ({self.open_seconds['process']:.2f} s since the process started)"
        print(f"opened {timer[1]}: first full frame after {seconds:.2f} s{since_start}", file=sys.stderr)

    def _run_callbacks(self) -> None:
        """DearPyGui's queued callbacks, each guarded: a failing button reports one line, the window lives on."""
        for job in dpg.get_callback_queue() or []:
            callback = job[0]
            if callback is None:
                continue
            count = len(inspect.signature(callback).parameters)
            try:
                callback(*job[1 : count + 1])
            except Exception as err:  # any button may fail (bad path, wrong state): show it, keep running
                self.report(f"{getattr(callback, '__name__', 'callback')} failed: {one_line(err)}", True)

    def settle(self) -> Iterator[None]:
        """Frames until the engine is idle and every panel shows its latest state (scripted mode)."""
        while True:
            view = self.worker.view
            applied = (view is not None and view.version == self._applied_version) or self.worker.pipeline is None
            applied = applied and not self.jobs.busy()
            if self.worker.running:  # a running engine never goes idle: only wait for the panels
                ready = applied
            else:
                ready = applied and self.worker.idle and (view is None or self.overlays.up_to_date(view))
            if ready:
                break
            yield
        for _ in range(3):
            yield

    def run(self, runner: Optional[ScriptRunner] = None, screenshot: Optional[Path] = None) -> int:
        """The frame loop; with a runner, exits when the script is done (after the final screenshot)."""
        final_shot: Optional[threading.Event] = None
        final_wait: Optional[Iterator[None]] = None
        while dpg.is_dearpygui_running():
            self.frame()
            if runner is None and screenshot is None:
                continue
            if runner is not None and not runner.tick():
                continue
            if runner is not None and runner.error:
                print(f"error: script {runner.error}", file=sys.stderr)
                return 2
            if screenshot is None:
                return 0
            if final_wait is None:
                final_wait = self.settle()
            if final_shot is None:
                if next(final_wait, "ready") != "ready":
                    continue
                final_shot = self.request_screenshot(screenshot)
                continue
            if final_shot.is_set():
                if self.screenshot_error:
                    print(f"error: {self.screenshot_error}", file=sys.stderr)
                    return 2
                print(f"screenshot written to {screenshot}", file=sys.stderr)
                return 0
        return 0

    def pump(self, future: Future) -> bool:
        """Draw frames until `future` is done (an open, a comparison, an import); False when it failed (its
        one line is on the status line and stderr)."""
        while not future.done() and dpg.is_dearpygui_running():
            self.frame()
            # a frame holds the GIL while DearPyGui draws it (tens of ms in software GL): fewer frames while
            # waiting leave the engine thread the interpreter (the status line still updates)
            time.sleep(0.1)
        for _ in range(2):  # let the job's on_done run (it reports)
            self.frame()
        if not future.done() or future.cancelled() or future.exception() is not None:
            error = "closed" if not future.done() else one_line(future.exception() or UserError("cancelled"))
            print(f"error: {error}", file=sys.stderr)
            return False
        return True

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self._window_ready:
            self.orbit.release()
            dpg.destroy_context()
            self._window_ready = False


def _is_evaluation(folder: Path) -> bool:
    """`folder` looks like an evaluation's output: a results.csv, or <preset>/<scene>/run.json below it."""
    folder = Path(folder)
    if (folder / "results.csv").is_file():
        return True
    return any(child.is_dir() and any(child.glob("*/run.json")) for child in folder.iterdir() if child.is_dir())


def _save_frame_buffer(buffer: Any, width: int, height: int, path: Path) -> None:
    """A DearPyGui frame buffer (float RGBA, top row first) -> PNG, written atomically."""
    from PIL import Image

    pixels = np.asarray(buffer, dtype=np.float32)
    if pixels.size != width * height * 4:
        height = pixels.size // (4 * width)
    image = (np.clip(pixels.reshape(height, width, 4)[..., :3], 0, 1) * 255 + 0.5).astype(np.uint8)
    with atomic_output(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def run_app(
    scene_dir: Path,
    cfg: Config,
    out_dir: Optional[Path] = None,
    script: Optional[str] = None,
    screenshot: Optional[str] = None,
    *,
    run_dir: Any = None,
    compare_dir: Any = None,
    eval_dir: Optional[Path] = None,
    import_raw: bool = False,
    started_at: Optional[float] = None,
) -> int:
    """Open the debugger; with `script`, run its actions and exit (0, or 2 on an error).

    What opens: `run_dir` (a finished or interrupted run folder, or its RunInfo; `scene_dir`, when given, is
    its scene), then `compare_dir` (likewise) beside it in the compare tab; else `eval_dir` (the evaluation table); else `scene_dir`, a
    scene, or with `import_raw` a raw capture imported first as *Open scene...* does. The caller has checked
    the folders (one-line errors before any window). With `screenshot`, the window is saved there (PNG)
    after the script (or after it settles) and the app exits. A bad script is reported before anything
    is loaded.
    """
    actions_list = load_script(script) if script else None
    if not os.environ.get("DISPLAY") and sys.platform.startswith("linux") and not os.environ.get("WAYLAND_DISPLAY"):
        raise DisplayUnavailableError(
            "the debugger needs a display: set DISPLAY or run it under xvfb-run "
            "(or use 'python main.py run' for the headless pipeline)"
        )
    shown = Path(getattr(run_dir, "folder", run_dir) or eval_dir or scene_dir)
    app = DebuggerApp(shown, cfg, Path(out_dir) if out_dir else None)
    app.process_started = started_at
    try:
        opening = run_dir is not None or eval_dir is not None or import_raw
        app.start_engine(None if opening else "build")
        app.build_window()
        if run_dir is not None:
            if not app.pump(app.open_run(run_dir, Path(scene_dir) if scene_dir else None)):
                return 2 if actions_list is not None or screenshot else app.run()
            if compare_dir is not None and not app.pump(app.compare_with(compare_dir)):
                return 2 if actions_list is not None or screenshot else app.run()
        elif eval_dir is not None:
            app.open_eval(Path(eval_dir))
        elif import_raw:
            if not app.pump(app.open_path(Path(scene_dir))) and (actions_list is not None or screenshot):
                return 2
        runner = ScriptRunner(app, actions_list) if actions_list is not None else None
        return app.run(runner, Path(screenshot) if screenshot else None)
    finally:
        app.close()
