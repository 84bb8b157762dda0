"""The window as the panels and the script runner see it: a small :class:`typing.Protocol`.

Panels (``gui/panels/*``) and :mod:`gui.script` depend on :class:`WindowPort`, never on
:class:`gui.app.DebuggerApp` itself, so a panel can be built and tested against any object with these
attributes and methods, and ``gui.app`` is free to change its layout code. ``DebuggerApp`` satisfies the
protocol (checked in tests/test_gui_units.py).

Only the main thread calls these (DearPyGui is not thread-safe); the decisions return the engine's
``Future`` and rewrite ``<out>/decisions.json`` when they change something.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:
    from gui.engine import EngineWorker
    from gui.state import PendingJobs, Timing, UiState
    from sparseags.config import Config

__all__ = ["WindowPort", "PORT_METHODS"]

# the callables of the port (tests check that DebuggerApp has each of them)
PORT_METHODS = (
    "report",
    "select_view",
    "select_pair",
    "show_tab",
    "open_path",
    "open_run",
    "compare_runs",
    "compare_with",
    "open_eval",
    "decide_outlier",
    "set_flag",
    "apply_candidate",
    "apply_cell",
    "choose_arbitration",
    "request_screenshot",
    "settle",
)


@runtime_checkable
class WindowPort(Protocol):
    """What panels and scripts may use of the window."""

    cfg: "Config"
    ui: "UiState"
    jobs: "PendingJobs"
    timing: "Timing"
    worker: "EngineWorker"
    scene_dir: Path
    out_dir: Path
    textures: Any  # the DearPyGui texture registry
    screenshot_error: Optional[str]
    # panels the script runner drives directly (their own methods: set_which, set_blend, select_round, ...)
    orbit: Any
    heatmap: Any
    overlays: Any
    outliers: Any
    controls: Any
    export: Any
    arbitration_panel: Any

    # messages and selection
    def report(self, message: str, is_error: bool = False) -> None: ...

    def select_view(self, index: int, snap: bool = False) -> None: ...

    def select_pair(self, a: int, b: int) -> None: ...

    def show_tab(self, name: str) -> None: ...

    def open_path(self, folder: Path) -> Future: ...

    # finished, interrupted and evaluated runs
    def open_run(self, folder: Path, scene: Optional[Path] = None, then: Any = None) -> Future: ...

    def compare_runs(self, folder_a: Path, folder_b: Path) -> Future: ...

    def compare_with(self, folder_b: Path, scene: Optional[Path] = None) -> Future: ...

    def open_eval(self, folder: Path) -> Any: ...

    # decisions (each returns the engine future)
    def decide_outlier(self, accept: bool, round_index: Optional[int] = None) -> Future: ...

    def set_flag(self, index: int, flag: int) -> Future: ...

    def apply_candidate(self, view_index: Optional[int], rank_position: int) -> Future: ...

    def apply_cell(self, view_index: Optional[int], cell: tuple) -> Future: ...

    def choose_arbitration(self, choice: str, view_index: Optional[int] = None) -> Future: ...

    # scripted mode
    def request_screenshot(self, path: Path) -> Any: ...

    def settle(self) -> Iterator[None]: ...
