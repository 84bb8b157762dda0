"""Export panel: Gaussians (.ply), mesh (.glb), cameras (SparseAGS JSON, COLMAP text, nerfstudio) and a
turntable video recorded on the engine thread, frame by frame, with a progress bar (the window keeps
running while it records).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import dearpygui.dearpygui as dpg

from gui import actions
from gui.handles import Text

if TYPE_CHECKING:
    from concurrent.futures import Future

    from gui.port import WindowPort

__all__ = ["ExportPanel"]


class ExportPanel:
    """Export buttons and the turntable recorder."""

    def __init__(self, app: "WindowPort", parent: int | str) -> None:
        self.app = app
        with dpg.group(horizontal=True, parent=parent):
            dpg.add_text("export")
            dpg.add_button(label="Gaussians PLY", callback=lambda: self.export("gaussians"))
            dpg.add_button(label="Mesh GLB", callback=lambda: self.export("mesh"))
            dpg.add_button(label="Cameras", callback=lambda: self.export("cameras"))
        self.out_label = Text(f"into {app.out_dir}", parent=parent, wrap=400)
        with dpg.group(horizontal=True, parent=parent):
            dpg.add_text("turntable")
            self.frames = dpg.add_input_int(label="frames", default_value=60, width=80, min_value=1, min_clamped=True)
            self.elevation = dpg.add_input_float(label="elev", default_value=-20.0, width=70, step=0)
        with dpg.group(horizontal=True, parent=parent):
            self.radius = dpg.add_input_float(label="radius (0 = auto)", default_value=0.0, width=70, step=0)
            self.resolution = dpg.add_input_int(label="px", default_value=256, width=80, step=0)
            dpg.add_button(label="Record", callback=lambda: self.record())
        self.progress_bar = dpg.add_progress_bar(default_value=0.0, width=-1, overlay="no recording", parent=parent)
        self.progress = actions.TurntableProgress()
        self.recording: Optional["Future"] = None

    def export(self, what: str) -> "Future":
        """Export on the engine thread; the future resolves to the path(s) written (a failure: red status)."""
        out = self.app.out_dir
        job = {"gaussians": actions.export_gaussians, "mesh": actions.export_mesh, "cameras": actions.export_cameras}[
            what
        ]
        return self.app.jobs.add(
            self.app.worker.call(lambda p: job(p, out)),
            f"export {what}",
            lambda written: self.app.report(f"exported {what}: {_describe(written)}", False),
        )

    def record(
        self,
        frames: Optional[int] = None,
        out: Optional[Path] = None,
        elevation_deg: Optional[float] = None,
        radius: Optional[float] = None,
        resolution: Optional[int] = None,
    ) -> "Future":
        """Start recording (arguments default to the panel's fields); returns the job's future."""
        if self.recording is not None and not self.recording.done():
            raise RuntimeError("a turntable is already being recorded")
        frames = int(frames if frames is not None else dpg.get_value(self.frames))
        elevation_deg = float(elevation_deg if elevation_deg is not None else dpg.get_value(self.elevation))
        radius = float(radius if radius is not None else dpg.get_value(self.radius)) or None
        resolution = int(resolution if resolution is not None else dpg.get_value(self.resolution))
        path = Path(out) if out is not None else self.app.out_dir / "turntable.mp4"
        progress = self.progress = actions.TurntableProgress(total=frames, path=str(path))
        future = self.app.worker.start_task(
            lambda p: actions.turntable_job(p, path, frames, elevation_deg, radius, resolution, progress)
        )
        self.recording = future
        self.app.jobs.add(future, "turntable", lambda written: self.app.report(f"turntable written: {written}", False))
        return future

    def update(self) -> None:
        self.out_label.set(f"into {self.app.out_dir}")
        progress = self.progress
        if progress.total:
            fraction = progress.done / progress.total
            state = "done" if self.recording is not None and self.recording.done() else "recording"
            dpg.set_value(self.progress_bar, fraction)
            dpg.configure_item(self.progress_bar, overlay=f"{state} {progress.done}/{progress.total}")


def _describe(written: object) -> str:
    if isinstance(written, (list, tuple)):
        return ", ".join(str(w) for w in written)
    return str(written)
