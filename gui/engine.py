"""The engine side of the debugger: the pipeline lives on one worker thread, the window on the main thread.

Why a thread: one engine step on the CPU (a reconstruction step at 256 px, a leave-one-out scoring with
LPIPS, a pose-search chunk) can take longer than a UI frame, so stepping inside the frame loop would
freeze the window. The worker steps the pipeline in slices of at most ``frame_budget_ms`` (at least one
``pipeline.step(1)`` per slice), publishes an :class:`EngineView` (plain data, never mutated after
publication) and runs the UI's requests between steps. This module never imports DearPyGui; the UI
thread never touches the pipeline, it only reads ``worker.view`` and submits requests:

* ``step(n)``, ``run_until(phase)``, ``set_running(flag)``: work orders, each returning a ``Future``;
* ``call(fn)``: run ``fn(pipeline)`` between two steps (manual decisions, exports, checkpoints) and
  return its result through a ``Future``;
* ``start_task(generator_fn)``: a long job (the turntable) advanced one item per slice, interleaved
  with the steps, so it neither blocks the engine nor the window.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator, Optional

import numpy as np

from gui.evidence import EvidenceView, build_evidence
from sparseags.pipeline import PHASES
from sparseags.snapshots import PipelineSnapshot

__all__ = ["EngineView", "EngineWorker", "build_view"]


@dataclass(frozen=True)
class EngineView(PipelineSnapshot):
    """One published state: the pipeline's snapshot (every field of
    :class:`sparseags.snapshots.PipelineSnapshot`) and what the worker adds (plain data, never mutated)."""

    version: int
    gaussians_version: int  # changes whenever the Gaussians may have changed
    busy: bool  # the worker has work (running, steps pending or a run_until target)
    running: bool
    ms_per_step: float
    steps_per_s: float
    last_event: dict = field(default_factory=dict)
    error: str = ""
    evidence: Optional[EvidenceView] = None  # matches and per-view pose evidence of the active reconstruction
    accuracy: Optional[dict] = None  # pose error against ground truth, now and at the start (see pose_accuracy)
    boundary_ms: float = 0.0  # the latest one-off phase-boundary step (scoring, new round), excluded from ms/step
    boundary_label: str = ""  # what that step was (the phase label it led to)
    boundary_count: int = 0


def pose_accuracy(snap: PipelineSnapshot, cache: Optional[dict] = None) -> Optional[dict]:
    """Pose error against ground truth (None without it): per-view rotation error (degrees, after the best
    global rotation) and centre error (Umeyama-aligned, in GT scene scales), and Rot@5 / Rot@15 / CC@0.1 (%),
    for the poses shown now and for the input poses ("start").

    ``{"rot_err_deg": {"start", "now"} [V], "centre_err": {"start", "now"} [V], "metrics": {"start", "now"}
    {"rot5", "rot15", "cc10", "rot_err_mean_deg"}}``, from the snapshot's ground truth, input and shown poses;
    `cache` keeps the last results (the start changes only with the input poses).
    """
    from sparseags.metrics import MetricError, pose_errors

    gt = snap.w2c_gt
    if gt is None or len(gt) < 2:
        return None
    gt = np.asarray(gt, dtype=np.float64)

    def measure(w2c: np.ndarray) -> tuple:
        w2c = np.asarray(w2c, dtype=np.float64)
        try:
            return pose_errors(w2c, gt)
        except (MetricError, ValueError, RuntimeError, np.linalg.LinAlgError):
            nan = np.full(len(gt), np.nan)
            return (
                nan,
                nan,
                {"rot5": float("nan"), "rot15": float("nan"), "cc10": float("nan"), "rot_err_mean_deg": float("nan")},
            )

    cache = {} if cache is None else cache

    def key_of(w2c: np.ndarray) -> bytes:
        return gt.tobytes() + np.asarray(w2c, dtype=np.float64).round(9).tobytes()

    for name, w2c in (("start", snap.w2c_initial), ("now", snap.w2c_current)):
        key = key_of(w2c)
        if cache.get(name + "_key") != key:
            cache[name + "_key"], cache[name] = key, measure(w2c)
    start, now = cache["start"], cache["now"]
    return {
        "rot_err_deg": {"start": start[0], "now": now[0]},
        "centre_err": {"start": start[1], "now": now[1]},
        "metrics": {"start": dict(start[2]), "now": dict(now[2])},
    }


def build_view(
    pipeline: Any,
    version: int,
    gaussians_version: int,
    *,
    busy: bool,
    running: bool,
    ms_per_step: float,
    steps_per_s: float,
    last_event: dict,
    error: str = "",
    previous_evidence: Optional[EvidenceView] = None,
    accuracy_cache: Optional[dict] = None,
    boundary: tuple = (0.0, "", 0),
) -> EngineView:
    """The panels' data: the pipeline's snapshot, the worker's state and the evidence (call on the thread that
    owns `pipeline`)."""
    snap = pipeline.snapshot()
    return EngineView(
        **{f.name: getattr(snap, f.name) for f in fields(PipelineSnapshot)},
        version=version,
        gaussians_version=gaussians_version,
        busy=busy,
        running=running,
        ms_per_step=ms_per_step,
        steps_per_s=steps_per_s,
        last_event=dict(last_event),
        error=error,
        evidence=build_evidence(pipeline, busy, previous_evidence),
        accuracy=pose_accuracy(snap, accuracy_cache),
        boundary_ms=float(boundary[0]),
        boundary_label=str(boundary[1]),
        boundary_count=int(boundary[2]),
    )


@dataclass
class _StepOrder:
    total: int
    remaining: int
    future: Future


@dataclass
class _UntilOrder:
    phase: str
    future: Future


@dataclass
class _Task:
    items: Iterator
    future: Future


class EngineWorker:
    """Owns a pipeline on a daemon thread (see the module docstring).

    Args:
        pipeline: a :class:`sparseags.pipeline.Pipeline` (or anything with its step/phase/snapshot API), or
            None while nothing is open (:meth:`swap` opens one; the view is None until then).
        frame_budget_ms: the longest slice of back-to-back steps before the worker publishes a view
            and serves requests (``cfg.gui.frame_budget_ms``).
        publish_interval_s: while stepping, publish at most this often (views copy the Gaussians).
    """

    def __init__(self, pipeline: Any, frame_budget_ms: float = 50.0, publish_interval_s: float = 0.1) -> None:
        self.pipeline = pipeline
        self.budget_s = max(1e-3, float(frame_budget_ms) / 1000.0)
        self.publish_interval_s = float(publish_interval_s)
        self._requests: "queue.Queue[tuple[Callable, Future]]" = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards the order lists and the running flag
        self._steps: list[_StepOrder] = []
        self._until: list[_UntilOrder] = []
        self._tasks: list[_Task] = []
        self._running = False
        self._version = 0
        self._gaussians_version = 0
        self._gaussian_key: tuple = ()
        self._ms_per_step = 0.0
        self._steps_per_s = 0.0
        self._last_event: dict = {}
        self._boundary: tuple = (0.0, "", 0)  # (ms, label, count) of the one-off phase-boundary steps
        self._accuracy_cache: dict = {}
        self._error = ""
        self._dirty = True
        self._serving = False
        self._last_publish = 0.0
        self.view: Optional[EngineView] = None
        self._thread = threading.Thread(target=self._loop, name="sparseags-engine", daemon=True)

    # -----------------------------------------------------------------------------------------
    # lifecycle

    def start(self) -> "EngineWorker":
        self._publish(force=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -----------------------------------------------------------------------------------------
    # requests from the UI thread

    def step(self, count: int) -> Future:
        """Advance `count` pipeline steps; the future resolves to the number of steps run."""
        future: Future = Future()
        if int(count) <= 0:
            future.set_result(0)
            return future
        with self._lock:
            self._steps.append(_StepOrder(int(count), int(count), future))
        self._wake.set()
        return future

    def run_until(self, phase: str) -> Future:
        """Step until the pipeline reaches `phase` (or finishes); resolves to the phase reached."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; phases are {', '.join(PHASES)}")
        future: Future = Future()
        with self._lock:
            self._until.append(_UntilOrder(phase, future))
        self._wake.set()
        return future

    def set_running(self, running: bool) -> None:
        with self._lock:
            self._running = bool(running)
        self._dirty = True
        self._wake.set()

    def pause_all(self) -> None:
        """Stop running and cancel pending step / run-until orders (their futures resolve)."""
        with self._lock:
            self._running = False
            for order in self._steps:
                order.future.set_result(0)
            for order in self._until:
                order.future.set_result(None if self.pipeline is None else self.pipeline.phase)
            self._steps, self._until = [], []
        self._dirty = True
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._running

    def call(self, fn: Callable[[Any], Any]) -> Future:
        """Run ``fn(pipeline)`` on the worker between two steps; the future carries its result or error."""
        future: Future = Future()
        self._requests.put((fn, future))
        self._wake.set()
        return future

    def swap(self, make_pipeline: Callable[[Any], Any]) -> Future:
        """Replace the pipeline by ``make_pipeline(old)`` (reset, new seed, other scene, checkpoint).

        Pending orders and tasks are cancelled; the future resolves to the new pipeline.
        """

        def replace(old: Any) -> Any:
            new = make_pipeline(old)
            self.pause_all()
            for task in self._tasks:
                task.future.cancel()
            self._tasks = []
            self.pipeline = new
            self._last_event = {}
            return new

        return self.call(replace)

    def start_task(self, make_items: Callable[[Any], Iterator]) -> Future:
        """Start a long job: ``make_items(pipeline)`` returns an iterator advanced one item per slice.

        The future resolves to the iterator's return value (``StopIteration.value``).
        """

        def begin(pipeline: Any) -> None:
            self._tasks.append(_Task(iter(make_items(pipeline)), future))

        future: Future = Future()
        self.call(begin)
        return future

    # -----------------------------------------------------------------------------------------
    # worker thread

    def _wants_steps(self) -> bool:
        if self.pipeline is None or self.pipeline.done:
            self._resolve_finished_orders()
            return False
        with self._lock:
            return self._running or bool(self._steps) or bool(self._until)

    def _resolve_finished_orders(self) -> None:
        with self._lock:
            for order in self._steps:
                order.future.set_result(0)
            for order in self._until:
                order.future.set_result(None if self.pipeline is None else self.pipeline.phase)
            self._steps, self._until = [], []
            self._running = False

    def _after_step(self) -> None:
        with self._lock:
            if self._steps:
                self._steps[0].remaining -= 1
                if self._steps[0].remaining <= 0:
                    done = self._steps.pop(0)
                    done.future.set_result(done.total)
            reached = [o for o in self._until if self.pipeline.phase == o.phase or self.pipeline.done]
            for order in reached:
                order.future.set_result(self.pipeline.phase)
            self._until = [o for o in self._until if o not in reached]

    def _serve_requests(self) -> None:
        while True:
            try:
                fn, future = self._requests.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            self._serving = True
            self._dirty = True
            try:
                result = fn(self.pipeline)
            except Exception as err:  # handed to the UI, which shows it as one line
                self._publish(force=True)
                future.set_exception(err)
            else:
                self._publish(force=True)  # the caller sees the new state as soon as its future resolves
                future.set_result(result)
            finally:
                self._serving = False

    def _advance_tasks(self) -> None:
        for task in list(self._tasks):
            try:
                next(task.items)
            except StopIteration as stop:
                self._tasks.remove(task)
                task.future.set_result(stop.value)
            except Exception as err:  # an export failure must not kill the engine thread
                self._tasks.remove(task)
                task.future.set_exception(err)

    def _step_slice(self) -> None:
        """Steps until the budget is spent (at least one).

        ms/step and steps/s average the regular steps only: a step that crosses a phase boundary (a new
        phase or stage, a new reconstruction, a round's scoring, a search's ranking: ``pipeline.step`` then
        returns an ``"event"``) is one-off work, published separately as ``boundary_ms``.
        """
        start = time.perf_counter()
        count = 0
        regular_s = 0.0
        while self._wants_steps() and not self._stop.is_set():
            p = self.pipeline
            before = (p.phase_label(), id(p.recon))
            began = time.perf_counter()
            try:
                self._last_event = p.step(1)
                self._error = ""
            except Exception as err:  # keep the window alive; show the failure and stop running
                self._error = f"engine step failed: {type(err).__name__}: {err}"
                self.pause_all()
                break
            took = time.perf_counter() - began
            after = (p.phase_label(), id(p.recon))
            if after != before or "event" in (self._last_event or {}):
                # the latest boundary that cost more than a regular step (cheap ones keep the previous)
                if self._boundary[2] == 0 or 1000.0 * took > 1.5 * self._ms_per_step:
                    self._boundary = (1000.0 * took, after[0], self._boundary[2] + 1)
            else:
                count += 1
                regular_s += took
            self._after_step()
            self._dirty = True
            if time.perf_counter() - start >= self.budget_s:
                break
        if count:
            elapsed = regular_s
            # smoothed: single steps vary a lot (a leave-one-out round ends with a full LPIPS scoring)
            ms, rate = 1000.0 * elapsed / count, count / max(elapsed, 1e-9)
            first = self._ms_per_step == 0.0
            self._ms_per_step = ms if first else 0.8 * self._ms_per_step + 0.2 * ms
            self._steps_per_s = rate if first else 0.8 * self._steps_per_s + 0.2 * rate

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._serve_requests()
            busy = self._wants_steps()
            if busy:
                self._step_slice()
            if self._tasks:
                self._advance_tasks()
            self._publish(force=not self._wants_steps())
            if not busy and not self._tasks and self._requests.empty():
                self._wake.wait(0.05)
                self._wake.clear()

    def _publish(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not self._dirty or (not force and now - self._last_publish < self.publish_interval_s):
            return
        p = self.pipeline
        if p is None:  # nothing open yet (an evaluation table, a capture being imported): no view to publish
            self.view = None
            self._dirty = False
            self._last_publish = now
            return
        key = (id(p), id(p.recon), p.recon.step_count if p.recon is not None else -1, p.total_steps, p.phase)
        if key != self._gaussian_key:
            self._gaussian_key = key
            self._gaussians_version += 1
        self._version += 1
        busy = self._running or bool(self._steps) or bool(self._until)
        try:
            self.view = build_view(
                p,
                self._version,
                self._gaussians_version,
                busy=busy and not p.done,
                running=self._running,
                ms_per_step=self._ms_per_step,
                steps_per_s=self._steps_per_s,
                last_event=self._last_event,
                error=self._error,
                previous_evidence=None if self.view is None else self.view.evidence,
                accuracy_cache=self._accuracy_cache,
                boundary=self._boundary,
            )
        except Exception as err:  # a half-built state must not stop the engine; report it instead
            self._error = f"cannot read the pipeline state: {type(err).__name__}: {err}"
        self._dirty = False
        self._last_publish = now

    @property
    def idle(self) -> bool:
        """Nothing pending, nothing being served, and the published view is current."""
        with self._lock:
            pending = self._running or bool(self._steps) or bool(self._until)
        return (
            not pending
            and not self._tasks
            and not self._serving
            and self._requests.empty()
            and not self._dirty
            and (self.view is not None or self.pipeline is None)
        )

    def wait_idle(self, timeout: float = 600.0) -> bool:
        """Block until :attr:`idle` (for tests and code outside the frame loop)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.idle:
                return True
            time.sleep(0.01)
        return False
