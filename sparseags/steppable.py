"""The one protocol every long-running engine object follows: advance in bounded steps, show, save, resume.

The reconstruction (:class:`sparseags.recon.Reconstruction`), the leave-one-out loop
(:class:`sparseags.outliers.LeaveOneOut`), the pose search (:class:`sparseags.pose_search.PoseSearch`), the
arbitration and the whole :class:`sparseags.pipeline.Pipeline` are steppable. A front end (the debugger's
engine thread, the headless run's loop, a test) drives any of them the same way::

    while not obj.done:
        event = obj.step(budget)      # a bounded amount of work; a small dict describing what happened
        show(obj.snapshot())          # plain data for display, never live tensors the engine keeps using
    state = obj.state_dict()          # plain data (numpy / tensors / builtins), picklable
    fresh.load_state_dict(state)      # ... and `fresh` continues exactly as `obj` would have

Rules (the contract a new phase must keep; docs/ARCHITECTURE.md, "Steppable engine protocol"):

* ``step(budget)`` does at most ``budget`` units of work (optimisation steps, candidates, rounds) and
  returns at once when ``done`` is already true. It never blocks on the user: a decision the engine needs
  from a person is a state the snapshot shows, and a method call (for example
  ``Pipeline.decide_outlier``) resolves it.
* ``done`` is a cheap read-only property, true once no further ``step`` changes anything.
* ``snapshot()`` returns data the caller may keep: copies, detached from autograd, on the CPU; the
  pipeline and its stages return the frozen dataclasses of :mod:`sparseags.snapshots`.
* ``load_state_dict(state_dict())`` on an object built with the same inputs gives an object whose next
  steps are bit-identical to the original's (random generators are part of the state), so an interrupted
  and resumed run equals an uninterrupted one. Objects whose state needs their owner to be rebuilt
  (the arbitration needs its pipeline) may offer a classmethod such as ``from_state(owner, state)``
  instead of ``load_state_dict``.

This module has no dependencies, so any layer may import it to type against it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Steppable"]


@runtime_checkable
class Steppable(Protocol):
    """A bounded-work, resumable engine object (see the module docstring for the contract)."""

    @property
    def done(self) -> bool:
        """True once no further :meth:`step` changes anything."""
        ...

    def step(self, budget: int = 1) -> dict:
        """Do at most `budget` units of work; returns an event summary (a plain dict)."""
        ...

    def snapshot(self) -> Any:
        """Plain data for display: copies on the CPU, detached from autograd."""
        ...

    def state_dict(self) -> dict:
        """Everything needed to continue exactly, as plain data."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output into an object built with the same inputs."""
        ...
