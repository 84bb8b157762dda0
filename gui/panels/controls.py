"""Controls panel: stepping (1 / N / run / pause / reset), phase and step, timing, loss curves, the pose
accuracy against ground truth (start -> now), seed, scene and checkpoint. Every engine request goes through
the worker; results come back as jobs.

Read-outs that do not mislead:

* the loss curves are the **unweighted** terms (λ·MSE): the reconstruction multiplies its RGB and mask
  losses by the warm-up factor step / iters, which makes the weighted curves rise while the fit improves;
  the plot divides that factor out (:func:`unweighted_losses`) and says so;
* an empty plot has fixed, readable axes (no auto-fit of nothing);
* the engine's ms/step averages the regular steps; the one-off work at a phase boundary (a round's scoring,
  a search's ranking, a new reconstruction) is shown on its own;
* the seed field follows the pipeline's seed (a scripted reset, a loaded checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import dearpygui.dearpygui as dpg
import numpy as np

from gui import actions
from gui.engine import EngineView
from gui.handles import Text
from gui.panels.evidence import accuracy_headline

if TYPE_CHECKING:
    from concurrent.futures import Future

    from gui.importer import ImportProgress
    from gui.port import WindowPort

LOSS_SERIES = (("total", "total"), ("rgb", "RGB"), ("mask", "mask"), ("prior", "prior (SDS)"))
LOSS_FLOOR = 1e-6  # the loss plot is log-scaled: zeros (no prior) are drawn at this floor
WEIGHTED = ("rgb", "mask")  # the terms the warm-up factor multiplies


def unweighted_losses(history: dict, iters: int, warmup: bool) -> dict:
    """The loss terms of `history` with the warm-up factor (step / iters, step = the completed step count the
    history records) divided out of the RGB and mask terms; the total is re-summed from the unweighted terms
    (plus the unweighted epipolar and prior terms). Lists of floats, one per history step."""
    steps = np.asarray(history.get("step", []), dtype=np.float64)
    out = {"step": steps.tolist()}
    weight = np.clip(steps / max(int(iters), 1), 1e-9, 1.0) if warmup else np.ones_like(steps)
    total = np.zeros_like(steps)
    for name in ("rgb", "mask", "prior", "epipolar"):
        values = np.nan_to_num(np.asarray(history.get(name, [0.0] * len(steps)), dtype=np.float64))
        if len(values) != len(steps):
            values = np.zeros_like(steps)
        if name in WEIGHTED:
            values = values / weight
        out[name] = values.tolist()
        total = total + values
    out["total"] = total.tolist()
    return out


def log_limits(values: list) -> tuple[float, float]:
    """Readable log-axis limits around the positive values (a decade of margin; 1e-3..1 when there are none)."""
    positive = np.asarray([v for v in values if v > LOSS_FLOOR and np.isfinite(v)], dtype=np.float64)
    if positive.size == 0:
        return 1e-3, 1.0
    low, high = float(positive.min()), float(positive.max())
    return 10 ** (np.floor(np.log10(low)) - 0.1), 10 ** (np.ceil(np.log10(high)) + 0.1)


class ControlsPanel:
    """Buttons and read-outs that drive the engine thread."""

    def __init__(self, app: "WindowPort", parent: int | str, width: int) -> None:
        self.app = app
        self._history_key: tuple = ()
        with dpg.group(horizontal=True, parent=parent):
            dpg.add_button(label="Step 1", callback=lambda: self.step(1))
            dpg.add_button(label="Step N", callback=lambda: self.step(dpg.get_value(self.step_count)))
            self.step_count = dpg.add_input_int(default_value=10, width=90, min_value=1, min_clamped=True)
            self.run_button = dpg.add_button(label="Run", width=70, callback=self.toggle_run)
            dpg.add_button(label="Reset", callback=lambda: self.reset(None))
        self.phase = Text("phase: -", parent=parent, colour=(255, 220, 120))
        self.steps = Text("step: -", parent=parent)
        self.timing = Text("timing: -", parent=parent, wrap=width - 20)
        self.accuracy = Text("pose vs GT: -", parent=parent, colour=(150, 210, 255), wrap=width - 20)
        with dpg.plot(label="losses, unweighted (warm-up factor removed)", height=170, width=-1, parent=parent) as plot:
            dpg.add_plot_legend(location=dpg.mvPlot_Location_NorthEast)
            self.loss_x = dpg.add_plot_axis(dpg.mvXAxis, label="step")
            self.loss_y = dpg.add_plot_axis(dpg.mvYAxis, label="loss (λ·MSE)", scale=dpg.mvPlotScale_Log10)
            self.loss_series = {
                key: dpg.add_line_series([0.0], [LOSS_FLOOR], label=label, parent=self.loss_y, show=False)
                for key, label in LOSS_SERIES
            }
        dpg.set_axis_limits(self.loss_x, 0.0, 1.0)
        dpg.set_axis_limits(self.loss_y, *log_limits([]))
        self.loss_plot = plot
        self.loss_data: dict = {}
        self._seed_seen: Optional[int] = None
        with dpg.group(horizontal=True, parent=parent):
            dpg.add_text("seed")
            self.seed = dpg.add_input_int(default_value=int(app.cfg.seed), width=100)
            dpg.add_button(label="Reset with seed", callback=lambda: self.reset(dpg.get_value(self.seed)))
        with dpg.group(horizontal=True, parent=parent):
            dpg.add_button(label="Open scene...", callback=lambda: dpg.show_item(self.scene_dialog))
            dpg.add_button(label="Open run...", callback=lambda: dpg.show_item(self.run_dialog))
            dpg.add_button(label="Save checkpoint", callback=self.save_checkpoint)
            dpg.add_button(label="Load checkpoint...", callback=lambda: dpg.show_item(self.checkpoint_dialog))
        self.scene_label = Text(f"scene: {app.scene_dir}", parent=parent, wrap=width - 20)
        # a raw capture chosen in "Open scene..." is imported first (gui/importer.py): its progress
        self.import_bar = dpg.add_progress_bar(
            default_value=0.0, width=width - 20, overlay="", show=False, parent=parent
        )
        self._import_shown: tuple = ()
        # both dialogs pick a folder and open it by what it is (a scene, a raw capture, a run, an evaluation):
        # they differ only in where they start
        self.scene_dialog = self._folder_dialog(app.scene_dir)
        self.run_dialog = self._folder_dialog(app.out_dir.parent)
        with dpg.file_dialog(
            show=False, width=700, height=420, callback=self._checkpoint_chosen, default_path=str(app.out_dir)
        ) as dialog:
            dpg.add_file_extension(".pt")
            dpg.add_file_extension(".*")
        self.checkpoint_dialog = dialog

    def _folder_dialog(self, start: Path) -> int:
        return dpg.add_file_dialog(
            directory_selector=True,
            show=False,
            width=700,
            height=420,
            callback=self._scene_chosen,
            default_path=str(start),
        )

    # ------------------------------------------------------------------------------------------
    def step(self, count: int) -> None:
        self.app.jobs.add(self.app.worker.step(int(count)), f"step {count}")

    def toggle_run(self) -> None:
        self.app.worker.set_running(not self.app.worker.running)

    def reset(self, seed: Optional[int]) -> None:
        label = "reset" if seed is None else f"reset with seed {seed}"

        def done(_: object) -> None:
            if seed is not None:
                dpg.set_value(self.seed, int(seed))
            self.app.report(f"{label}: done", False)

        self.app.jobs.add(self.app.worker.swap(lambda p: actions.rebuilt(p, seed)), label, done)

    def resize(self, width: int, height: int) -> None:
        """The window's size changed: wrap widths follow it, the loss plot takes a share of its height."""
        for text in (self.timing, self.accuracy, self.scene_label):
            dpg.configure_item(text.tag, wrap=int(width) - 20)
        dpg.configure_item(self.loss_plot, height=int(max(110, min(240, 0.26 * height))))
        dpg.configure_item(self.import_bar, width=int(width) - 20)

    def save_checkpoint(self, path: Optional[Path] = None) -> "Future":
        """Save on the engine thread; a failure is a red status line (and the future's exception)."""
        target = Path(path) if path else self.app.out_dir / "checkpoint.pt"
        scene_dir = self.app.scene_dir
        return self.app.jobs.add(
            self.app.worker.call(lambda p: actions.save_checkpoint(p, target, scene_dir)),
            "save checkpoint",
            lambda written: self.app.report(f"checkpoint saved: {written}", False),
        )

    def load_checkpoint(self, path: Path) -> "Future":
        """Load (plain data only, same scene required); a failure is a red status line and changes nothing."""
        return self.app.jobs.add(
            self.app.worker.swap(lambda p: actions.load_checkpoint(p, Path(path))),
            "load checkpoint",
            lambda _: self.app.report(f"checkpoint loaded: {path}", False),
        )

    def _checkpoint_chosen(self, sender: int, app_data: dict) -> None:
        path = app_data.get("file_path_name")
        if path:
            self.load_checkpoint(Path(path))

    def _scene_chosen(self, sender: int, app_data: dict) -> None:
        path = app_data.get("file_path_name")
        if path:
            self.app.open_path(Path(path))  # a scene, or a raw capture to import first

    # ------------------------------------------------------------------------------------------
    def update(self, view: EngineView) -> None:
        dpg.set_item_label(self.run_button, "Pause" if view.running else "Run")
        self.phase.set(f"phase: {view.phase_label}" + ("  (done)" if view.done else ""))
        self.steps.set(
            f"reconstruction step {view.recon_step}/{view.recon_iters}   pipeline steps {view.total_steps}"
            f"   Gaussians {0 if view.gaussians is None else len(view.gaussians['means'])}"
        )
        self.scene_label.set(f"scene: {self.app.scene_dir}")
        self.accuracy.set(accuracy_headline(view.accuracy))
        if view.seed != self._seed_seen:  # the pipeline's seed changed (reset, checkpoint): the field follows
            self._seed_seen = view.seed
            dpg.set_value(self.seed, int(view.seed))
        history = view.history
        key = (view.gaussians_version, len(history.get("step", [])))
        if key == self._history_key:
            return
        self._history_key = key
        if not history.get("step"):
            self.loss_data = {}
            for series in self.loss_series.values():
                dpg.set_value(series, [[0.0], [LOSS_FLOOR]])
                dpg.configure_item(series, show=False)
            dpg.set_axis_limits(self.loss_x, 0.0, 1.0)
            dpg.set_axis_limits(self.loss_y, *log_limits([]))
            return
        losses = unweighted_losses(history, view.recon_iters, view.loss_warmup)
        steps = losses["step"]
        shown = []
        self.loss_data = {}
        for name, series in self.loss_series.items():
            raw = np.asarray(losses.get(name, [0.0] * len(steps)), float)
            # a term that is zero throughout (no prior) is hidden rather than drawn at the log floor
            visible = bool(np.any(raw > 0))
            dpg.configure_item(series, show=visible)
            dpg.set_value(series, [steps, np.maximum(raw, LOSS_FLOOR).tolist()])
            if visible:
                shown.extend(raw.tolist())
                self.loss_data[name] = raw.tolist()
        dpg.set_axis_limits(self.loss_x, float(steps[0]) - 0.5, float(steps[-1]) + 0.5)
        dpg.set_axis_limits(self.loss_y, *log_limits(shown))

    def update_import(self, progress: Optional["ImportProgress"]) -> None:
        """The import progress bar (hidden until a raw capture is imported) and, while it runs, the status line."""
        if progress is None:
            return
        fraction, message = progress.read()
        shown = (progress.state, fraction, message)
        if shown == self._import_shown:
            return
        self._import_shown = shown
        label = {"running": "importing", "done": "import done", "failed": "import failed"}[progress.state]
        dpg.configure_item(self.import_bar, show=True, overlay=f"{label} {100 * fraction:.0f}%: {message}")
        dpg.set_value(self.import_bar, fraction)
        if progress.state == "running":
            self.app.report(f"importing {progress.layout.folder.name} -> {progress.out}: {message}", False)

    def update_timing(self, view: Optional[EngineView]) -> None:
        self.timing.set(timing_text(view, self.app.timing))


def timing_text(view: Optional[EngineView], timing: object) -> str:
    """Engine ms/step (regular steps), the latest phase-boundary step on its own, render and frame times."""
    engine = "-" if view is None or view.ms_per_step <= 0 else f"{view.ms_per_step:.0f} ms/step"
    boundary = ""
    if view is not None and view.boundary_count:
        seconds = view.boundary_ms / 1000.0
        boundary = f"\nphase boundary (one-off, not in ms/step): {seconds:.2f} s before '{view.boundary_label}'"
    return (
        f"engine {engine}   orbit render {timing.get('render_ms'):.1f} ms   "
        f"UI frame {timing.get('frame_ms'):.0f} ms ({timing.fps:.0f} FPS)" + boundary
    )
