"""Controls panel: stepping (1 / N / run / pause / reset), phase and step, timing, loss curves, seed,
scene and checkpoint. Every engine request goes through the worker; results come back as jobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import dearpygui.dearpygui as dpg
import numpy as np

from gui import actions
from gui.engine import EngineView
from gui.handles import Text

if TYPE_CHECKING:
    from concurrent.futures import Future

    from gui.app import DebuggerApp
    from gui.importer import ImportProgress

LOSS_SERIES = (("total", "total"), ("rgb", "RGB"), ("mask", "mask"), ("prior", "prior (SDS)"))
LOSS_FLOOR = 1e-6  # the loss plot is log-scaled: zeros (no prior) are drawn at this floor


class ControlsPanel:
    """Buttons and read-outs that drive the engine thread."""

    def __init__(self, app: "DebuggerApp", parent: int | str, width: int) -> None:
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
        with dpg.plot(label="losses (active reconstruction)", height=190, width=width - 20, parent=parent) as plot:
            dpg.add_plot_legend(location=dpg.mvPlot_Location_NorthEast)
            self.loss_x = dpg.add_plot_axis(dpg.mvXAxis, label="step", auto_fit=True)
            self.loss_y = dpg.add_plot_axis(dpg.mvYAxis, label="loss", scale=dpg.mvPlotScale_Log10, auto_fit=True)
            self.loss_series = {key: dpg.add_line_series([0.0], [LOSS_FLOOR], label=label, parent=self.loss_y)
                                for key, label in LOSS_SERIES}
        self.loss_plot = plot
        with dpg.group(horizontal=True, parent=parent):
            dpg.add_text("seed")
            self.seed = dpg.add_input_int(default_value=int(app.cfg.seed), width=100)
            dpg.add_button(label="Reset with seed", callback=lambda: self.reset(dpg.get_value(self.seed)))
        with dpg.group(horizontal=True, parent=parent):
            dpg.add_button(label="Open scene...", callback=lambda: dpg.show_item(self.scene_dialog))
            dpg.add_button(label="Save checkpoint", callback=self.save_checkpoint)
            dpg.add_button(label="Load checkpoint...", callback=lambda: dpg.show_item(self.checkpoint_dialog))
        self.scene_label = Text(f"scene: {app.scene_dir}", parent=parent, wrap=width - 20)
        # a raw capture chosen in "Open scene..." is imported first (gui/importer.py): its progress
        self.import_bar = dpg.add_progress_bar(default_value=0.0, width=width - 20, overlay="", show=False,
                                               parent=parent)
        self._import_shown: tuple = ()
        self.scene_dialog = dpg.add_file_dialog(directory_selector=True, show=False, width=700, height=420,
                                                callback=self._scene_chosen, default_path=str(app.scene_dir))
        with dpg.file_dialog(show=False, width=700, height=420, callback=self._checkpoint_chosen,
                             default_path=str(app.out_dir)) as dialog:
            dpg.add_file_extension(".pt")
            dpg.add_file_extension(".*")
        self.checkpoint_dialog = dialog

    # ------------------------------------------------------------------------------------------
    def step(self, count: int) -> None:
        self.app.jobs.add(self.app.worker.step(int(count)), f"step {count}")

    def toggle_run(self) -> None:
        self.app.worker.set_running(not self.app.worker.running)

    def reset(self, seed: Optional[int]) -> None:
        label = "reset" if seed is None else f"reset with seed {seed}"
        self.app.jobs.add(self.app.worker.swap(lambda p: actions.rebuilt(p, seed)), label,
                          lambda _: self.app.report(f"{label}: done", False))

    def save_checkpoint(self, path: Optional[Path] = None) -> "Future":
        """Save on the engine thread; a failure is a red status line (and the future's exception)."""
        target = Path(path) if path else self.app.out_dir / "checkpoint.pt"
        scene_dir = self.app.scene_dir
        return self.app.jobs.add(self.app.worker.call(lambda p: actions.save_checkpoint(p, target, scene_dir)),
                                 "save checkpoint",
                                 lambda written: self.app.report(f"checkpoint saved: {written}", False))

    def load_checkpoint(self, path: Path) -> "Future":
        """Load (plain data only, same scene required); a failure is a red status line and changes nothing."""
        return self.app.jobs.add(self.app.worker.swap(lambda p: actions.load_checkpoint(p, Path(path))),
                                 "load checkpoint", lambda _: self.app.report(f"checkpoint loaded: {path}", False))

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
        self.steps.set(f"reconstruction step {view.recon_step}/{view.recon_iters}   pipeline steps {view.total_steps}"
                       f"   Gaussians {0 if view.gaussians is None else len(view.gaussians['means'])}")
        self.scene_label.set(f"scene: {self.app.scene_dir}")
        history = view.history
        key = (view.gaussians_version, len(history.get("step", [])))
        if key == self._history_key:
            return
        self._history_key = key
        if not history.get("step"):
            for series in self.loss_series.values():
                dpg.set_value(series, [[0.0], [LOSS_FLOOR]])
                dpg.configure_item(series, show=False)
            return
        steps = [float(s) for s in history["step"]]
        for name, series in self.loss_series.items():
            raw = np.nan_to_num(np.asarray(history.get(name, [0.0] * len(steps)), float))
            # a term that is zero throughout (no prior) is hidden rather than drawn at the log floor
            dpg.configure_item(series, show=bool(np.any(raw > 0)))
            dpg.set_value(series, [steps, np.maximum(raw, LOSS_FLOOR).tolist()])
        dpg.fit_axis_data(self.loss_x)
        dpg.fit_axis_data(self.loss_y)

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
        timing = self.app.timing
        engine = "-" if view is None or view.ms_per_step <= 0 else f"{view.ms_per_step:.0f} ms/step"
        self.timing.set(f"engine {engine}   orbit render {timing.get('render_ms'):.1f} ms\n"
                        f"UI frame {timing.get('frame_ms'):.0f} ms ({timing.fps:.0f} FPS)")
