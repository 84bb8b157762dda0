"""Leave-one-out outlier identification (SparseAGS ``run.py``) as a steppable object.

The rule (docs/reference/sparseags.md, section 5):

* round 0 reconstructs with every flagged view and scores every view (LPIPS normalised by object area);
* each later round removes the *inlier with the worst score* (the candidate), reconstructs without it
  (inliers start from the previous round's optimised poses, the Gaussians start afresh) and scores again;
* the removal is kept only if the mean score of the remaining inliers drops by at least ``threshold``
  (0.05) compared with the previous round's mean *without the candidate*; otherwise the loop reverts to
  the previous round and stops;
* at most ``max_removals(N)`` views are removed: 1 for N ≤ 5, N − 4 for 5 < N < 8, 4 for N ≥ 8.

Every verdict can be overruled (:meth:`LeaveOneOut.override`): the loop rewinds to that verdict, applies
the user's decision and continues from there, exactly as if the automatic rule had decided so.

The loop does not know how to reconstruct or score: the pipeline passes two callables, so the rules
can be tested on hand-made score sequences.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import numpy as np


def max_removals(num_views: int) -> int:
    """How many views the loop may remove (official MAX_CNT)."""
    if num_views <= 5:
        return 1
    if num_views < 8:
        return num_views - 4
    return 4


def removal_accepted(mean_without_candidate_before: float, mean_after: float, threshold: float) -> bool:
    """Official rule: keep the removal only if the others' mean score dropped by at least `threshold`."""
    # A tiny tolerance so that a drop of exactly `threshold` is not lost to float rounding.
    return (mean_without_candidate_before - mean_after) >= threshold - 1e-12


class Steppable(Protocol):
    """What the loop needs of a reconstruction (sparseags.recon.Reconstruction satisfies it)."""

    done: bool

    def step(self, budget: int = 1) -> dict: ...

    def current_w2c(self) -> Any: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


# make_recon(flags [V] int, w2c_init [V, 4, 4]) -> a fresh steppable reconstruction
MakeRecon = Callable[[np.ndarray, np.ndarray], Steppable]
# score(recon) -> per-view scores [V] (lower is better), computed for inliers and outliers alike
ScoreViews = Callable[[Steppable], np.ndarray]


@dataclass
class Round:
    """One reconstruction of the loop and what was decided about it."""

    index: int
    flags: np.ndarray  # [V] flags used by this round's reconstruction
    candidate: Optional[int] = None  # view removed for this round (None for round 0)
    scores: Optional[np.ndarray] = None  # [V] per-view scores after the round
    w2c: Optional[np.ndarray] = None  # [V, 4, 4] optimised poses after the round
    mean_inliers: Optional[float] = None  # mean score over this round's inliers
    # Filled when the *next* candidate is chosen from this round:
    next_candidate: Optional[int] = None
    mean_without_next: Optional[float] = None
    # Verdict on this round's removal (rounds >= 1): automatic, and the manual override if any.
    auto_accept: Optional[bool] = None
    manual_accept: Optional[bool] = None
    recon_state: Optional[dict] = None  # final state of the reconstruction (to revert to it)

    @property
    def accepted(self) -> Optional[bool]:
        return self.manual_accept if self.manual_accept is not None else self.auto_accept

    def summary(self) -> dict:
        return {
            "round": self.index,
            "candidate": self.candidate,
            "flags": None if self.flags is None else self.flags.tolist(),
            "scores": None if self.scores is None else self.scores.tolist(),
            "mean_inliers": self.mean_inliers,
            "next_candidate": self.next_candidate,
            "mean_without_next": self.mean_without_next,
            "auto_accept": self.auto_accept,
            "manual_accept": self.manual_accept,
            "accepted": self.accepted,
        }


def mean_over(scores: np.ndarray, flags: np.ndarray) -> float:
    chosen = scores[flags.astype(bool)]
    return float(np.mean(chosen)) if chosen.size else float("nan")


@dataclass
class LeaveOneOut:
    """The leave-one-out loop. ``step(budget)`` advances the running reconstruction by `budget` steps."""

    make_recon: MakeRecon
    score_views: ScoreViews
    flags: np.ndarray  # [V] initial flags
    w2c_init: np.ndarray  # [V, 4, 4] initial poses
    threshold: float = 0.05
    max_count: Optional[int] = None  # default: max_removals(V)
    rounds: list = field(default_factory=list)
    recon: Optional[Steppable] = None
    finished: bool = False
    final_round: Optional[int] = None  # index of the round whose result stands
    log: list = field(default_factory=list)  # decisions, in order

    def __post_init__(self) -> None:
        self.flags = np.asarray(self.flags, dtype=np.int64).copy()
        self.w2c_init = np.asarray(self.w2c_init, dtype=np.float64).copy()
        if self.max_count is None:
            self.max_count = max_removals(len(self.flags))

    # ---------------------------------------------------------------------------------------------
    # stepping

    @property
    def done(self) -> bool:
        return self.finished

    def start_with(self, recon: Steppable) -> None:
        """Use an existing (possibly finished) reconstruction as round 0."""
        self.rounds = [Round(index=0, flags=self.flags.copy())]
        self.recon = recon

    def step(self, budget: int = 1) -> dict:
        if self.finished:
            return {"phase": "loo", "event": "done"}
        if self.recon is None:
            self._start_round(Round(index=0, flags=self.flags.copy()), self.w2c_init)
        assert self.recon is not None
        if not self.recon.done:
            event = dict(self.recon.step(budget))
            event.update(phase="loo", round=len(self.rounds) - 1)
            return event
        return self._finish_round()

    def _start_round(self, round_: Round, w2c_init: np.ndarray) -> None:
        self.rounds.append(round_)
        self.recon = self.make_recon(round_.flags.copy(), w2c_init.copy())

    def _finish_round(self) -> dict:
        current = self.rounds[-1]
        assert self.recon is not None
        current.scores = np.asarray(self.score_views(self.recon), dtype=np.float64)
        current.w2c = np.asarray(_to_numpy(self.recon.current_w2c()), dtype=np.float64)
        current.mean_inliers = mean_over(current.scores, current.flags)
        current.recon_state = self.recon.state_dict()
        event = {"phase": "loo", "event": "round_scored", "round": current.index,
                 "mean": current.mean_inliers}
        if current.index > 0:
            previous = self.rounds[-2]
            current.auto_accept = removal_accepted(previous.mean_without_next, current.mean_inliers,
                                                   self.threshold)
            self.log.append({"round": current.index, "candidate": current.candidate,
                             "auto_accept": current.auto_accept,
                             "mean_without_candidate_before": previous.mean_without_next,
                             "mean_after": current.mean_inliers})
            event.update(candidate=current.candidate, accept=current.auto_accept)
        self._advance_from(len(self.rounds) - 1)
        return event

    def _advance_from(self, index: int) -> None:
        """Decide what follows round `index`, whose scores (and verdict, if any) are known."""
        current = self.rounds[index]
        if index > 0 and not current.accepted:
            self._stop(index - 1)
            return
        if index >= self.max_count:
            self._stop(index)
            return
        inlier_ids = np.flatnonzero(current.flags)
        if len(inlier_ids) <= 2:
            self._stop(index)
            return
        worst = int(inlier_ids[np.argmax(current.scores[inlier_ids])])
        current.next_candidate = worst
        others = current.flags.copy()
        others[worst] = 0
        current.mean_without_next = mean_over(current.scores, others)
        next_round = Round(index=index + 1, flags=others, candidate=worst)
        self._start_round(next_round, current.w2c)

    def _stop(self, final_index: int) -> None:
        self.finished = True
        self.final_round = final_index
        self.recon = None

    # ---------------------------------------------------------------------------------------------
    # results and manual decisions

    @property
    def result_flags(self) -> np.ndarray:
        """Flags after the loop: the final round's flags (outliers = 0)."""
        assert self.final_round is not None
        return self.rounds[self.final_round].flags.copy()

    @property
    def outliers(self) -> list[int]:
        return [int(i) for i in np.flatnonzero((self.flags == 1) & (self.result_flags == 0))]

    def pending_candidate(self) -> Optional[int]:
        """The view whose removal is being tested right now (None when no round is running)."""
        if self.finished or not self.rounds:
            return None
        return self.rounds[-1].candidate

    def override(self, round_index: int, accept: bool) -> None:
        """Overrule the verdict on round `round_index`'s removal and continue from that decision.

        Later rounds are discarded (they were built on the old decision). The reconstruction of the
        decided round is kept, so accepting continues with the next candidate at once.
        """
        if not 1 <= round_index < len(self.rounds):
            raise ValueError(f"round {round_index} has no verdict to override")
        target = self.rounds[round_index]
        if target.scores is None:
            raise ValueError(f"round {round_index} is still running; its verdict is not known yet")
        del self.rounds[round_index + 1:]
        # The candidate chosen from this round is recomputed by _advance_from.
        target.next_candidate = None
        target.mean_without_next = None
        target.manual_accept = bool(accept)
        self.finished = False
        self.final_round = None
        self.recon = None
        self.log.append({"round": round_index, "candidate": target.candidate, "manual_accept": bool(accept)})
        self._advance_from(round_index)

    def snapshot(self) -> dict:
        running = None if self.finished or not self.rounds else self.rounds[-1].index
        return {
            "phase": "loo",
            "rounds": [r.summary() for r in self.rounds],
            "running_round": running,
            "candidate": self.pending_candidate(),
            "threshold": self.threshold,
            "max_count": self.max_count,
            "done": self.finished,
            "final_round": self.final_round,
            "outliers": self.outliers if self.finished else [],
            "log": copy.deepcopy(self.log),
        }

    # ---------------------------------------------------------------------------------------------
    # checkpointing

    def state_dict(self) -> dict:
        return {
            "flags": self.flags.copy(),
            "w2c_init": self.w2c_init.copy(),
            "threshold": self.threshold,
            "max_count": self.max_count,
            "rounds": [copy.deepcopy(vars(r)) for r in self.rounds],
            "recon": None if self.recon is None else self.recon.state_dict(),
            "finished": self.finished,
            "final_round": self.final_round,
            "log": copy.deepcopy(self.log),
        }

    def load_state_dict(self, state: dict) -> None:
        self.flags = np.asarray(state["flags"]).copy()
        self.w2c_init = np.asarray(state["w2c_init"]).copy()
        self.threshold = state["threshold"]
        self.max_count = state["max_count"]
        self.rounds = [Round(**copy.deepcopy(r)) for r in state["rounds"]]
        self.finished = state["finished"]
        self.final_round = state["final_round"]
        self.log = copy.deepcopy(state["log"])
        self.recon = None
        if state["recon"] is not None:
            running = self.rounds[-1]
            start_w2c = self.rounds[-2].w2c if len(self.rounds) > 1 else self.w2c_init
            self.recon = self.make_recon(running.flags.copy(), np.asarray(start_w2c).copy())
            self.recon.load_state_dict(state["recon"])


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)
