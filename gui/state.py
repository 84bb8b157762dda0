"""UI-side state of the debugger: selection and display options, pending engine requests, timings.

Nothing here touches the pipeline (that is the engine thread's, see :mod:`gui.engine`) and nothing here
calls DearPyGui, so it is tested without a display.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

__all__ = ["UiState", "PendingJobs", "Timing", "one_line", "RENDER_MODES"]

RENDER_MODES = ("rgb", "depth", "alpha", "centres", "ellipsoids")


@dataclass
class UiState:
    """What the user chose in the window (shared by every panel)."""

    selected_view: int = 0
    render_mode: str = "rgb"
    show_initial: bool = True
    show_current: bool = True
    show_gt: bool = True
    heatmap_which: str = "refined"  # "coarse" | "refined"
    selected_round: Optional[int] = None  # leave-one-out round whose verdict the outlier panel shows (None: latest)
    blend: float = 0.5  # overlay: 0 = input, 1 = render
    selected_pair: Optional[tuple] = None  # (a, b) view indices of the matches panel (None: the best pair)
    bottom_tab: str = "overlays"  # "overlays" (input vs render) | "evidence" (matches and pose evidence)
    status: str = ""
    status_is_error: bool = False

    def set_render_mode(self, mode: str) -> None:
        if mode not in RENDER_MODES:
            raise ValueError(f"unknown render mode {mode!r}; modes are {', '.join(RENDER_MODES)}")
        self.render_mode = mode


@dataclass
class _Job:
    future: Future
    label: str
    on_done: Optional[Callable[[Any], None]]


class PendingJobs:
    """Futures from the engine thread whose results the main thread handles when they complete.

    ``poll()`` runs each completed job's ``on_done(result)`` on the calling (main) thread; a failure
    becomes the one-line ``report(message, True)``.
    """

    def __init__(self, report: Callable[[str, bool], None]) -> None:
        self._jobs: list[_Job] = []
        self._report = report

    def add(self, future: Future, label: str, on_done: Optional[Callable[[Any], None]] = None) -> Future:
        self._jobs.append(_Job(future, label, on_done))
        return future

    def poll(self) -> None:
        finished = [job for job in self._jobs if job.future.done()]
        self._jobs = [job for job in self._jobs if not job.future.done()]
        for job in finished:
            if job.future.cancelled():
                self._report(f"{job.label}: cancelled", True)
                continue
            error = job.future.exception()
            if error is not None:
                self._report(f"{job.label} failed: {one_line(error)}", True)
            elif job.on_done is not None:
                job.on_done(job.future.result())

    def busy(self, label: Optional[str] = None) -> bool:
        return any(label is None or job.label == label for job in self._jobs)


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


@dataclass
class Timing:
    """Exponential moving averages of named durations in milliseconds (and the frame rate)."""

    smoothing: float = 0.1
    values: dict = field(default_factory=dict)
    _last_frame: Optional[float] = None

    def add(self, name: str, milliseconds: float) -> None:
        previous = self.values.get(name)
        self.values[name] = (
            milliseconds if previous is None else (1 - self.smoothing) * previous + self.smoothing * milliseconds
        )

    def frame(self) -> None:
        now = time.perf_counter()
        if self._last_frame is not None:
            self.add("frame_ms", 1000.0 * (now - self._last_frame))
        self._last_frame = now

    def get(self, name: str) -> float:
        return float(self.values.get(name, 0.0))

    @property
    def fps(self) -> float:
        frame = self.get("frame_ms")
        return 1000.0 / frame if frame > 0 else 0.0
