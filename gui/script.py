"""Scripted mode: a YAML list of one-key actions run inside the real window's frame loop.

    - step: 20                      # pipeline steps (waits until done)
    - run_until: search             # a pipeline phase: reconstruct, loo, search, arbitration, done
                                    # (an error if the pipeline finishes without reaching it)
    - run_until_stage: coarse       # step until the running pose search is in this stage (solver mode:
                                    # local, score, coarse, fine, rank, symmetry); an error if it ends first
    - select_view: 1                # index, or the view id as a string ("001")
    - select_pair: [0, 2]           # matches panel: views 0 and 2 (indices or ids); shows the evidence tab
    - tab: evidence                 # bottom window: overlays, evidence, arbitration or accuracy
    - select_round: 1               # the outlier panel shows (and decides on) round 1's verdict; or latest
    - accept_outlier: true          # or a round index; reject_outlier likewise (a no-op changes nothing)
    - apply_candidate: 0            # rank position in the shown search, or {view: "001", rank: 2}
    - apply_cell: [2, 5]            # heatmap cell [elevation index, azimuth index] of the shown search,
                                    # or {view: "001", cell: [2, 5]}: its best candidate, else its grid pose
    - hover_cell: [2, 5]            # the search panel's hover read-out for that cell (as the mouse shows it)
    - choose_arbitration: initial   # recovered or initial for every searched view, or
                                    # {choice: recovered, view: "004"} for one view (per-view arbitration)
    - resize: [1366, 768]           # the viewport's size (the layout follows)
    - render_mode: depth            # rgb, depth, alpha, centres, ellipsoids
    - orbit: [dx, dy]               # mouse-drag pixels (0.05 degrees per pixel)
    - zoom: 2                       # wheel steps (radius *= 1.1 ** -zoom)
    - pan: [dx, dy]                 # right-drag pixels: the scene follows the pointer, as with the mouse
    - snap_to: 1                    # orbit camera to an input view
    - fit_all: true                 # orbit view: frame every frustum, the trajectories and the Gaussians
    - record_turntable: {frames: 8, out: x.mp4, elevation: -20, radius: 0, resolution: 128}
    - screenshot: x.png
    - set_flag: [1, 0]              # view, flag (restarts the pipeline; a view set to 0 is pose-searched)
    - heatmap: coarse               # or refined
    - blend: 0.5
    - frusta: {initial: true, current: true, gt: false, tracks: true}
    - run: true / pause: true
    - export: gaussians             # gaussians, mesh, cameras (a failure is an error)
    - save_checkpoint: ck.pt / load_checkpoint: ck.pt
    - open_scene: DIR               # "Open scene...": a scene, or a raw capture imported first (gui/importer.py)
    - open_run: DIR                 # a run folder: finished (as it ended) or interrupted (at its checkpoint)
    - compare: DIR                  # compare the run on display with this run folder (compare tab)
    - open_eval: DIR                # the evaluation table of an eval folder
    - eval_sort: final_rot15 / {column: rot15, ascending: false}
    - eval_open: 0                  # open a table row (position after sorting, or "scene/preset")
    - eval_compare: [0, 1]          # tick two rows of one scene and compare them
    - seed: 3                       # reset with this seed
    - wait_frames: 10
    - benchmark_orbit: {frames: 120, out: bench.json}   # orbit every frame, measure the frame rate

Relative paths are relative to the current directory. After each action the runner waits until the
engine is idle and every panel shows the latest state, then renders a few frames, so screenshots show
what the action produced. Any problem is a :class:`ScriptError` (one line; the CLI exits with 2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from sparseags.config import read_yaml
from sparseags.errors import UserError
from sparseags.pipeline import PHASES

if TYPE_CHECKING:
    from gui.port import WindowPort

__all__ = ["Action", "ScriptError", "ScriptRunner", "load_script", "parse_script", "ACTIONS"]

SETTLE_FRAMES = 3


class ScriptError(UserError, ValueError):
    """A script that cannot be run, or an action that failed."""


@dataclass(frozen=True)
class Action:
    name: str
    arg: Any
    index: int  # 1-based position in the script, for messages


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pair(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value)


def _view_ref(value: Any) -> bool:
    return _is_int(value) or isinstance(value, str)


def _decision(value: Any) -> bool:
    return value is True or _is_int(value)


def _candidate(value: Any) -> bool:
    if _is_int(value):
        return True
    return isinstance(value, dict) and _is_int(value.get("rank")) and set(value) <= {"view", "rank"}


def _cell_pair(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) and v >= 0 for v in value)


def _cell(value: Any) -> bool:
    if _cell_pair(value):
        return True
    return isinstance(value, dict) and set(value) <= {"view", "cell"} and _cell_pair(value.get("cell"))


def _arbitration(value: Any) -> bool:
    if value in ("recovered", "initial"):
        return True
    return (
        isinstance(value, dict)
        and set(value) <= {"choice", "view"}
        and value.get("choice") in ("recovered", "initial")
        and ("view" not in value or _view_ref(value["view"]))
    )


def _turntable(value: Any) -> bool:
    return isinstance(value, dict) and set(value) <= {"frames", "out", "elevation", "radius", "resolution"}


SEARCH_STAGES = ("local", "score", "coarse", "fine", "rank", "symmetry")

# action -> (check of the argument, what the argument should be)
ACTIONS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "step": (lambda v: _is_int(v) and v >= 0, "a number of steps >= 0"),
    "run_until": (lambda v: v in PHASES, f"one of {', '.join(PHASES)}"),
    "run_until_stage": (lambda v: v in SEARCH_STAGES, f"one of {', '.join(SEARCH_STAGES)}"),
    "select_view": (_view_ref, "a view index or id"),
    "snap_to": (_view_ref, "a view index or id"),
    "fit_all": (lambda v: v is True, "true"),
    "accept_outlier": (_decision, "true or a round index"),
    "reject_outlier": (_decision, "true or a round index"),
    "apply_candidate": (_candidate, "a rank position or {view: ID, rank: N}"),
    "apply_cell": (_cell, "[elevation index, azimuth index] or {view: ID, cell: [e, a]}"),
    "hover_cell": (_cell_pair, "[elevation index, azimuth index]"),
    "choose_arbitration": (_arbitration, "recovered, initial or {choice: recovered|initial, view: ID}"),
    "resize": (
        lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(x) and x >= 100 for x in v),
        "[width, height] in pixels",
    ),
    "render_mode": (
        lambda v: v in ("rgb", "depth", "alpha", "centres", "ellipsoids"),
        "rgb, depth, alpha, centres or ellipsoids",
    ),
    "orbit": (_pair, "[dx, dy]"),
    "pan": (_pair, "[dx, dy]"),
    "zoom": (_is_number, "a number of wheel steps"),
    "record_turntable": (_turntable, "{frames, out, elevation, radius, resolution}"),
    "screenshot": (lambda v: isinstance(v, str) and v != "", "a file path"),
    "set_flag": (
        lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and _view_ref(v[0]) and v[1] in (0, 1),
        "[view, 0 or 1]",
    ),
    "heatmap": (lambda v: v in ("coarse", "refined"), "coarse or refined"),
    "blend": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "frusta": (
        lambda v: isinstance(v, dict) and set(v) <= {"initial", "current", "gt", "tracks"},
        "{initial, current, gt, tracks}",
    ),
    "run": (lambda v: isinstance(v, bool), "true or false"),
    "pause": (lambda v: v is True, "true"),
    "export": (lambda v: v in ("gaussians", "mesh", "cameras"), "gaussians, mesh or cameras"),
    "save_checkpoint": (lambda v: isinstance(v, str) and v != "", "a file path"),
    "load_checkpoint": (lambda v: isinstance(v, str) and v != "", "a file path"),
    "seed": (_is_int, "an integer"),
    "open_scene": (lambda v: isinstance(v, str) and v != "", "a scene or raw capture folder"),
    "select_pair": (
        lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_view_ref(x) for x in v),
        "[view, view] (indices or ids)",
    ),
    "tab": (
        lambda v: v in ("overlays", "evidence", "arbitration", "accuracy", "compare"),
        "overlays, evidence, arbitration, accuracy or compare",
    ),
    "open_run": (lambda v: isinstance(v, str) and v != "", "a run folder (finished or interrupted)"),
    "compare": (lambda v: isinstance(v, str) and v != "", "a run folder of the same scene"),
    "open_eval": (lambda v: isinstance(v, str) and v != "", "an evaluation folder"),
    "eval_sort": (
        lambda v: isinstance(v, str) or (isinstance(v, dict) and set(v) <= {"column", "ascending"} and "column" in v),
        "a column key or {column: KEY, ascending: true|false}",
    ),
    "eval_open": (lambda v: _is_int(v) or isinstance(v, str), "a row position or scene/preset"),
    "eval_compare": (
        lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(x) or isinstance(x, str) for x in v),
        "[row, row] (positions or scene/preset)",
    ),
    "select_round": (lambda v: v == "latest" or (_is_int(v) and v >= 1), "a round index >= 1 or latest"),
    "wait_frames": (lambda v: _is_int(v) and v >= 0, "a number of frames"),
    "benchmark_orbit": (lambda v: isinstance(v, dict) and set(v) <= {"frames", "out", "dx"}, "{frames, out, dx}"),
}


def parse_script(data: Any, source: str = "script") -> list[Action]:
    """Validate a loaded YAML document (a list of one-key mappings) into actions."""
    if not isinstance(data, list):
        raise ScriptError(f"{source}: expected a YAML list of actions, e.g. '- step: 20'")
    actions = []
    for position, entry in enumerate(data, start=1):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ScriptError(f"{source}: action {position} must be a one-key mapping like '- step: 20', got {entry!r}")
        name, arg = next(iter(entry.items()))
        if name not in ACTIONS:
            raise ScriptError(f"{source}: action {position}: unknown action {name!r} (known: {', '.join(ACTIONS)})")
        check, expected = ACTIONS[name]
        if not check(arg):
            raise ScriptError(f"{source}: action {position} ({name}): expected {expected}, got {arg!r}")
        actions.append(Action(name, arg, position))
    return actions


def load_script(path: str | Path) -> list[Action]:
    data = read_yaml(path, ScriptError, "script file")
    return parse_script(data, str(path))


def dpg_viewport_resize(width: int, height: int) -> None:
    """Ask the window system for a `width` x `height` viewport (the layout is applied by the caller)."""
    import dearpygui.dearpygui as dpg

    dpg.set_viewport_width(int(width))
    dpg.set_viewport_height(int(height))


class ScriptRunner:
    """Runs actions as a generator advanced once per frame by :meth:`tick` (one yield = one frame)."""

    def __init__(self, app: "WindowPort", actions: list[Action]) -> None:
        self.app = app
        self.actions = actions
        self.error: Optional[str] = None
        self.finished = False
        self.current: Optional[Action] = None
        self.results: dict = {}
        self._steps = self._run()

    def tick(self) -> bool:
        """Advance by one frame; True once every action ran (or one failed: see :attr:`error`)."""
        if self.finished:
            return True
        try:
            next(self._steps)
        except StopIteration:
            self.finished = True
        except Exception as err:  # one line for the user, whatever the action raised
            where = f"action {self.current.index} ({self.current.name})" if self.current else "script"
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            self.error = f"{where}: {message}"
            self.finished = True
        return self.finished

    def _run(self) -> Iterator[None]:
        yield from self.app.settle()
        for action in self.actions:
            self.current = action
            yield from getattr(self, f"_do_{action.name}")(action.arg)
            yield from self.app.settle()
        self.current = None

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _wait(future: Any) -> Iterator[None]:
        while not future.done():
            yield
        error = future.exception()
        if error is not None:
            raise error
        return future.result()

    def _view_index(self, ref: Any) -> int:
        view = self.app.worker.view
        ids = list(view.ids) if view is not None else []
        if isinstance(ref, str):
            if ref not in ids:
                raise ScriptError(f"no view with id {ref!r} (ids: {', '.join(ids)})")
            return ids.index(ref)
        if not 0 <= ref < len(ids):
            raise ScriptError(f"view index {ref} out of range 0..{len(ids) - 1}")
        return int(ref)

    def _do_step(self, count: int) -> Iterator[None]:
        yield from self._wait(self.app.worker.step(count))

    def _do_run_until(self, phase: str) -> Iterator[None]:
        reached = yield from self._wait(self.app.worker.run_until(phase))
        if reached != phase:
            view = self.app.worker.view
            where = view.phase_label if view is not None else str(reached)
            raise ScriptError(
                f"phase '{phase}' was never reached: the pipeline went on to '{reached}' ({where}) without it"
            )

    def _do_run_until_stage(self, stage: str) -> Iterator[None]:
        for _ in range(100000):
            view = self.app.worker.view
            running = None if view is None else next((s for s in view.searches.values() if not s.done), None)
            if running is not None and running.stage_name == stage:
                return
            if view is not None and view.phase not in ("reconstruct", "loo", "search"):
                raise ScriptError(f"search stage '{stage}' was never reached: the pipeline went on to '{view.phase}'")
            yield from self._wait(self.app.worker.step(1))
        raise ScriptError(f"search stage '{stage}' was not reached")

    def _do_select_view(self, ref: Any) -> Iterator[None]:
        self.app.select_view(self._view_index(ref), snap=True)
        yield

    def _do_snap_to(self, ref: Any) -> Iterator[None]:
        self.app.orbit.snap_to(self._view_index(ref))
        yield

    def _do_fit_all(self, _: Any) -> Iterator[None]:
        self.app.orbit.fit_all()
        yield

    def _decide(self, accept: bool, arg: Any) -> Iterator[None]:
        round_index = None if arg is True else int(arg)
        yield from self._wait(self.app.decide_outlier(accept, round_index))

    def _do_accept_outlier(self, arg: Any) -> Iterator[None]:
        yield from self._decide(True, arg)

    def _do_reject_outlier(self, arg: Any) -> Iterator[None]:
        yield from self._decide(False, arg)

    def _do_apply_candidate(self, arg: Any) -> Iterator[None]:
        if isinstance(arg, dict):
            view, rank = (self._view_index(arg["view"]) if "view" in arg else None), int(arg["rank"])
        else:
            view, rank = None, int(arg)
        yield from self._wait(self.app.apply_candidate(view, rank))

    def _do_apply_cell(self, arg: Any) -> Iterator[None]:
        if isinstance(arg, dict):
            view, cell = (self._view_index(arg["view"]) if "view" in arg else None), tuple(arg["cell"])
        else:
            view, cell = None, tuple(arg)
        if view is None:
            view = self._shown_search()
        search = self.app.worker.view.searches.get(view) if view is not None else None
        if search is not None:
            rows, cols = len(search.elevations_deg), len(search.azimuths_deg)
            if not (cell[0] < rows and cell[1] < cols):
                raise ScriptError(f"cell {list(cell)} is outside the {rows} x {cols} search grid")
        result = yield from self._wait(self.app.apply_cell(view, cell))
        self.results.setdefault("apply_cell", []).append(result)

    def _shown_search(self) -> Optional[int]:
        from gui.panels.search_heatmap import searched_view_for

        view = self.app.worker.view
        return None if view is None else searched_view_for(view, self.app.ui.selected_view)

    def _do_hover_cell(self, arg: list) -> Iterator[None]:
        view = self.app.worker.view
        shown = self._shown_search()
        if shown is None:
            raise ScriptError("hover_cell: no pose search yet")
        search = view.searches[shown]
        rows, cols = len(search.elevations_deg), len(search.azimuths_deg)
        if not (arg[0] < rows and arg[1] < cols):
            raise ScriptError(f"cell {list(arg)} is outside the {rows} x {cols} search grid")
        text = self.app.heatmap.hover_at(float(search.azimuths_deg[arg[1]]), float(search.elevations_deg[arg[0]]))
        self.results.setdefault("hover_cell", []).append(text)
        yield

    def _do_choose_arbitration(self, arg: Any) -> Iterator[None]:
        if isinstance(arg, dict):
            choice, view = arg["choice"], (self._view_index(arg["view"]) if "view" in arg else None)
        else:
            choice, view = arg, None
        yield from self._wait(self.app.choose_arbitration(choice, view))

    def _do_resize(self, size: list) -> Iterator[None]:
        width, height = int(size[0]), int(size[1])
        dpg_viewport_resize(width, height)
        for _ in range(3):  # the window system answers within a few frames
            yield
        self.app.apply_layout(width, height)
        yield

    def _do_render_mode(self, mode: str) -> Iterator[None]:
        self.app.orbit.set_mode(mode)
        yield

    def _do_orbit(self, delta: list) -> Iterator[None]:
        self.app.orbit.camera.orbit(float(delta[0]), float(delta[1]))
        yield

    def _do_pan(self, delta: list) -> Iterator[None]:
        self.app.orbit.camera.pan_pixels(float(delta[0]), float(delta[1]))
        yield

    def _do_zoom(self, steps: float) -> Iterator[None]:
        self.app.orbit.camera.scale(float(steps))
        yield

    def _do_record_turntable(self, spec: dict) -> Iterator[None]:
        out = Path(spec["out"]) if "out" in spec else None
        radius = spec.get("radius")
        future = self.app.export.record(
            frames=spec.get("frames"),
            out=out,
            elevation_deg=spec.get("elevation"),
            radius=0.0 if radius is None else float(radius),
            resolution=spec.get("resolution"),
        )
        self.results["turntable"] = str((yield from self._wait(future)))

    def _do_screenshot(self, path: str) -> Iterator[None]:
        done = self.app.request_screenshot(Path(path))
        while not done.is_set():
            yield
        if self.app.screenshot_error:
            raise ScriptError(self.app.screenshot_error)

    def _do_set_flag(self, arg: list) -> Iterator[None]:
        yield from self._wait(self.app.set_flag(self._view_index(arg[0]), int(arg[1])))

    def _do_heatmap(self, which: str) -> Iterator[None]:
        self.app.heatmap.set_which(which)
        yield

    def _do_blend(self, value: float) -> Iterator[None]:
        self.app.overlays.set_blend(float(value))
        yield

    def _do_frusta(self, spec: dict) -> Iterator[None]:
        for name, value in spec.items():
            self.app.orbit.set_toggle(f"show_{name}", bool(value))
        yield

    def _do_run(self, running: bool) -> Iterator[None]:
        self.app.worker.set_running(running)
        yield

    def _do_pause(self, _: Any) -> Iterator[None]:
        self.app.worker.pause_all()
        yield

    def _do_export(self, what: str) -> Iterator[None]:
        written = yield from self._wait(self.app.export.export(what))
        self.results.setdefault("export", {})[what] = written

    def _do_save_checkpoint(self, path: str) -> Iterator[None]:
        yield from self._wait(self.app.controls.save_checkpoint(Path(path)))

    def _do_load_checkpoint(self, path: str) -> Iterator[None]:
        yield from self._wait(self.app.controls.load_checkpoint(Path(path)))

    def _do_open_scene(self, path: str) -> Iterator[None]:
        opened = yield from self._wait(self.app.open_path(Path(path)))
        self.results.setdefault("open_scene", []).append(str(opened))

    def _do_open_run(self, path: str) -> Iterator[None]:
        yield from self._wait(self.app.open_run(Path(path)))

    def _do_compare(self, path: str) -> Iterator[None]:
        yield from self._wait(self.app.compare_with(Path(path)))

    def _do_open_eval(self, path: str) -> Iterator[None]:
        self.app.open_eval(Path(path))
        yield

    def _eval_window(self) -> Any:
        window = getattr(self.app, "eval_window", None)
        if window is None:
            raise ScriptError("no evaluation table open (open_eval first, or gui --eval DIR)")
        return window

    def _do_eval_sort(self, arg: Any) -> Iterator[None]:
        column, ascending = (arg, None) if isinstance(arg, str) else (arg["column"], arg.get("ascending"))
        try:
            self._eval_window().sort(column, ascending)
        except ValueError as err:
            raise ScriptError(str(err)) from None
        yield

    def _do_eval_open(self, ref: Any) -> Iterator[None]:
        try:
            future = self._eval_window().open(ref)
        except ValueError as err:
            raise ScriptError(str(err)) from None
        yield from self._wait(future)

    def _do_eval_compare(self, refs: list) -> Iterator[None]:
        window = self._eval_window()
        try:
            for name in list(window.model.ticked):
                window.tick(name, False)
            for ref in refs:
                window.tick(ref, True)
            future = window.compare_ticked()
        except ValueError as err:
            raise ScriptError(str(err)) from None
        yield from self._wait(future)

    def _do_select_round(self, arg: Any) -> Iterator[None]:
        view = self.app.worker.view
        rounds = [
            r["round"]
            for r in (view.loo.rounds if view is not None and view.loo is not None else [])
            if r["round"] >= 1
        ]
        if arg != "latest" and arg not in rounds:
            raise ScriptError(f"round {arg} has no verdict (rounds: {', '.join(map(str, rounds)) or 'none yet'})")
        self.app.outliers.select_round(None if arg == "latest" else int(arg))
        yield

    def _do_select_pair(self, arg: list) -> Iterator[None]:
        a, b = self._view_index(arg[0]), self._view_index(arg[1])
        if a == b:
            raise ScriptError(f"select_pair: two different views, got {arg[0]!r} twice")
        self.app.select_pair(a, b)
        self.app.show_tab("evidence")
        yield

    def _do_tab(self, name: str) -> Iterator[None]:
        self.app.show_tab(name)
        yield

    def _do_seed(self, seed: int) -> Iterator[None]:
        self.app.controls.reset(int(seed))
        while self.app.jobs.busy(f"reset with seed {seed}"):
            yield

    def _do_wait_frames(self, count: int) -> Iterator[None]:
        for _ in range(count):
            yield

    def _do_benchmark_orbit(self, spec: dict) -> Iterator[None]:
        """Orbit by `dx` pixels every frame for `frames` frames; record frame and render times."""
        frames, dx = int(spec.get("frames", 120)), float(spec.get("dx", 3.0))
        frame_times, render_times = [], []
        last = time.perf_counter()
        for _ in range(frames):
            self.app.orbit.camera.orbit(dx, 0.0)
            yield
            now = time.perf_counter()
            frame_times.append(1000.0 * (now - last))
            render_times.append(self.app.timing.get("render_ms"))
            last = now
        view = self.app.worker.view
        result = {
            "frames": frames,
            "view_size": self.app.orbit.size,
            "renderer": self.app.orbit.renderer.renderer_name,
            "n_gaussians": 0 if view is None or view.gaussians is None else int(len(view.gaussians["means"])),
            "frame_ms_median": float(sorted(frame_times)[len(frame_times) // 2]) if frame_times else 0.0,
            "fps_median": 1000.0 / max(1e-9, sorted(frame_times)[len(frame_times) // 2]) if frame_times else 0.0,
            "frame_ms_p95": float(sorted(frame_times)[int(0.95 * (len(frame_times) - 1))]) if frame_times else 0.0,
        }
        self.results["benchmark_orbit"] = result
        if "out" in spec:
            from sparseags.artifacts import write_json

            write_json(Path(spec["out"]), result)
