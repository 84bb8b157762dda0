"""Leave-one-out outlier identification (SparseAGS ``run.py``) as a steppable object.

The rule (docs/reference/sparseags.md, section 5):

* round 0 reconstructs with every flagged view and scores every view (LPIPS normalised by object area);
* each later round removes the *inlier with the worst score* (the candidate), reconstructs without it
  (inliers start from the previous round's optimised poses, the Gaussians start afresh) and scores again;
* the removal is kept only if the mean score of the remaining inliers drops by at least ``threshold``
  (0.05) compared with the previous round's mean *without the candidate*; otherwise the loop reverts to
  the previous round and stops;
* at most ``max_removals(N)`` views are removed: 1 for N ≤ 5, N − 4 for 5 < N < 8, 4 for N ≥ 8.

``rule="relative"`` (the default of configs/default.yaml) keeps the loop but replaces the absolute test:
each round also returns per-view *evidence* (photometric score, and where available the epipolar residual
of the view's verified matches and its silhouette disagreement). Every kind of evidence becomes a robust
modified z-score over the round's inliers (:func:`robust_z`); the candidate is the inlier with the largest
combined z (:func:`combined_z`, the largest over the kinds), and it is removed if, and only if, that z is at
least ``z_threshold`` (5; the Iglewicz-Hoaglin outlier cut-off is 3.5, but the largest of several kinds of
evidence over 6-16 views needs a margin). A candidate below ``z_confirm`` (3) is kept at once,
and its round is never run; one in between is put to the leave-one-out vote, relative to the scores: its
removal stands if the others' mean score drops by at least ``confirm_drop`` (a fraction, 5 %) without it.
An accepted candidate's round is run in every case: its Gaussians, built without the candidate, are what
the pose search renders.

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

from sparseags.snapshots import LooSnapshot


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


# Robust z-scores: per kind of evidence, the smallest spread (MAD) that counts, so that views that agree
# closely do not turn a tiny difference into a large z. ("relative", f): MAD >= f x |median|;
# ("absolute", a): MAD >= a, in the evidence's own unit.
EVIDENCE_MAD_FLOOR = {
    "photometric": ("relative", 0.05),  # LPIPS (or MSE) normalised by object area
    "epipolar": ("absolute", 0.5),  # median Sampson error, pixels
    "mask": ("relative", 0.1),  # 1 - IoU of rendered and photographed silhouettes
    "rgb_run": ("relative", 0.1),  # RGB MSE of the view over the training run
    "mask_run": ("relative", 0.1),  # silhouette MSE of the view over the training run
}


def robust_z(values: np.ndarray, among: np.ndarray, floor: tuple[str, float] = ("relative", 0.05)) -> np.ndarray:
    """Modified z-score 0.6745 (x - median) / MAD of every entry of `values` [V], median and MAD taken over
    the finite entries selected by the bool mask `among` [V]; nan where the value is nan, or everywhere
    when fewer than 3 selected entries are finite (no spread to compare with)."""
    values = np.asarray(values, dtype=np.float64)
    chosen = values[np.asarray(among, dtype=bool)]
    chosen = chosen[np.isfinite(chosen)]
    if chosen.size < 3:
        return np.full(values.shape, np.nan)
    median = float(np.median(chosen))
    mad = float(np.median(np.abs(chosen - median)))
    kind, amount = floor
    mad = max(mad, amount * abs(median) if kind == "relative" else amount, 1e-12)
    return 0.6745 * (values - median) / mad


def evidence_z(evidence: dict, flags: np.ndarray) -> dict:
    """Per kind of evidence ([V] each), the robust z over the inliers (`flags` == 1), plus "combined"."""
    among = np.asarray(flags, dtype=bool)
    zs = {
        kind: robust_z(values, among, EVIDENCE_MAD_FLOOR.get(kind, ("relative", 0.05)))
        for kind, values in evidence.items()
    }
    zs["combined"] = combined_z(zs)
    return zs


def combined_z(zs: dict) -> np.ndarray:
    """Largest z over the kinds of evidence per view (nan kinds ignored; nan if no kind has a value)."""
    stack = np.stack([np.asarray(z, dtype=np.float64) for kind, z in zs.items() if kind != "combined"])
    with np.errstate(all="ignore"):
        best = np.nanmax(np.where(np.isnan(stack), -np.inf, stack), axis=0)
    return np.where(np.isneginf(best), np.nan, best)


def as_evidence(result: Any) -> dict:
    """A score callable's result as evidence: a dict with at least "photometric" [V], or a bare [V] array."""
    if isinstance(result, dict):
        if "photometric" not in result:
            raise ValueError("evidence needs a 'photometric' entry")
        return {k: np.asarray(_to_numpy(v), dtype=np.float64) for k, v in result.items()}
    return {"photometric": np.asarray(_to_numpy(result), dtype=np.float64)}


def relative_verdict(evidence: dict, flags: np.ndarray, z_threshold: float) -> tuple[int, bool, str, dict]:
    """The relative rule on one round: (candidate, accept, reason, z per kind) among the inliers of `flags`."""
    zs = evidence_z(evidence, flags)
    inliers = np.flatnonzero(flags)
    combined = np.where(np.isnan(zs["combined"][inliers]), -np.inf, zs["combined"][inliers])
    photometric = evidence["photometric"][inliers]
    # largest combined z; ties (and all-nan) broken by the photometric score
    order = np.lexsort((-photometric, -combined))
    candidate = int(inliers[order[0]])
    z = float(zs["combined"][candidate])
    parts = ", ".join(
        f"{kind} z {float(zs[kind][candidate]):.1f}" for kind in evidence if np.isfinite(zs[kind][candidate])
    )
    accept = bool(np.isfinite(z) and z >= z_threshold - 1e-12)
    reason = f"z {z:.1f} {'>=' if accept else '<'} {z_threshold:g} ({parts or 'no evidence'})"
    return candidate, accept, reason, zs


class ReconLike(Protocol):
    """What the loop needs of a reconstruction (sparseags.recon.Reconstruction satisfies it): the stepping part
    of :class:`sparseags.steppable.Steppable` plus the current poses."""

    done: bool

    def step(self, budget: int = 1) -> dict: ...

    def current_w2c(self) -> Any: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


# make_recon(flags [V] int, w2c_init [V, 4, 4]) -> a fresh steppable reconstruction
MakeRecon = Callable[[np.ndarray, np.ndarray], ReconLike]
# score(recon) -> per-view scores [V] (lower is better), computed for inliers and outliers alike, or a
# dict of per-view evidence {"photometric": [V], "epipolar": [V], "mask": [V], ...} (nan = not available)
ScoreViews = Callable[[ReconLike], Any]


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
    evidence: Optional[dict] = None  # kind -> [V] per-view evidence after the round ("photometric" = scores)
    z: Optional[dict] = None  # kind -> [V] robust z over this round's inliers, and "combined" (relative rule)
    reason: str = ""  # why the automatic verdict on this round's removal is what it is

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
            "ran": self.scores is not None or self.index == 0,
            "reason": self.reason,
            "evidence": None
            if self.evidence is None
            else {k: np.asarray(v).tolist() for k, v in self.evidence.items()},
            "z": None if self.z is None else {k: np.asarray(v).tolist() for k, v in self.z.items()},
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
    rule: str = "paper"  # "paper" (absolute drop of the mean) or "relative" (robust z of the evidence)
    z_threshold: float = 5.0  # relative rule: a candidate at or above this z is removed outright
    z_confirm: float = 3.0  # ... between this and z_threshold, its leave-one-out round decides
    confirm_drop: float = 0.05  # ... by whether the others' mean score drops by this fraction
    rounds: list = field(default_factory=list)
    recon: Optional[ReconLike] = None
    finished: bool = False
    final_round: Optional[int] = None  # index of the round whose result stands
    log: list = field(default_factory=list)  # decisions, in order

    def __post_init__(self) -> None:
        self.flags = np.asarray(self.flags, dtype=np.int64).copy()
        self.w2c_init = np.asarray(self.w2c_init, dtype=np.float64).copy()
        if self.max_count is None:
            self.max_count = max_removals(len(self.flags))
        if self.rule not in ("paper", "relative"):
            raise ValueError(f"leave-one-out rule must be 'paper' or 'relative', not {self.rule!r}")

    # ---------------------------------------------------------------------------------------------
    # stepping

    @property
    def done(self) -> bool:
        return self.finished

    def start_with(self, recon: ReconLike) -> None:
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
        current.evidence = as_evidence(self.score_views(self.recon))
        current.scores = current.evidence["photometric"]
        current.w2c = np.asarray(_to_numpy(self.recon.current_w2c()), dtype=np.float64)
        current.mean_inliers = mean_over(current.scores, current.flags)
        current.recon_state = self.recon.state_dict()
        event = {"phase": "loo", "event": "round_scored", "round": current.index, "mean": current.mean_inliers}
        if current.index > 0 and current.auto_accept is None:
            # the official test, or the relative rule's confirmation of a borderline candidate
            previous = self.rounds[-2]
            before, after = previous.mean_without_next, current.mean_inliers
            drop = self.threshold if self.rule == "paper" else self.confirm_drop * before
            current.auto_accept = removal_accepted(before, after, drop)
            if self.rule == "relative":
                current.reason += (
                    f"; without it the others' mean went {before:.4f} -> {after:.4f} "
                    f"({'a' if current.auto_accept else 'not a'} drop of {self.confirm_drop:.0%})"
                )
            self.log.append(
                {
                    "round": current.index,
                    "candidate": current.candidate,
                    "auto_accept": current.auto_accept,
                    "mean_without_candidate_before": before,
                    "mean_after": after,
                }
            )
        if current.index > 0:
            event.update(candidate=current.candidate, accept=current.accepted)
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
        if self.rule == "relative":
            evidence = current.evidence if current.evidence is not None else {"photometric": current.scores}
            worst, accept, reason, current.z = relative_verdict(evidence, current.flags, self.z_threshold)
        else:
            worst = int(inlier_ids[np.argmax(current.scores[inlier_ids])])
        current.next_candidate = worst
        others = current.flags.copy()
        others[worst] = 0
        current.mean_without_next = mean_over(current.scores, others)
        next_round = Round(index=index + 1, flags=others, candidate=worst)
        if self.rule == "relative":
            z = float(current.z["combined"][worst])
            if accept:  # stands out: removed without a leave-one-out vote
                next_round.auto_accept, next_round.reason = True, reason
            elif np.isfinite(z) and z >= self.z_confirm:  # borderline: the round without it decides
                next_round.reason = reason.replace(
                    f"< {self.z_threshold:g}", f"in [{self.z_confirm:g}, {self.z_threshold:g})"
                )
            else:  # does not stand out: kept, and its round costs nothing
                next_round.auto_accept, next_round.reason = False, reason
                self.log.append({"round": next_round.index, "candidate": worst, "auto_accept": False, "reason": reason})
                self.rounds.append(next_round)
                self._stop(index)
                return
            if accept:
                self.log.append({"round": next_round.index, "candidate": worst, "auto_accept": True, "reason": reason})
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
        if target.accepted is None:
            raise ValueError(f"round {round_index} is still running; its verdict is not known yet")
        del self.rounds[round_index + 1 :]
        # The candidate chosen from this round is recomputed by _advance_from.
        target.next_candidate = None
        target.mean_without_next = None
        target.manual_accept = bool(accept)
        self.finished = False
        self.final_round = None
        self.recon = None
        self.log.append({"round": round_index, "candidate": target.candidate, "manual_accept": bool(accept)})
        if accept and target.scores is None:
            # The round never ran (the relative rule rejected it up front, or it was still running): run it.
            self.recon = self.make_recon(target.flags.copy(), np.asarray(self.rounds[round_index - 1].w2c).copy())
            return
        self._advance_from(round_index)

    def snapshot(self) -> LooSnapshot:
        """The loop as a :class:`sparseags.snapshots.LooSnapshot`."""
        running = None if self.finished or not self.rounds else self.rounds[-1].index
        return LooSnapshot(
            rounds=[r.summary() for r in self.rounds],
            running_round=running,
            candidate=self.pending_candidate(),
            threshold=float(self.threshold),
            max_count=int(self.max_count),
            rule=self.rule,
            z_threshold=float(self.z_threshold),
            z_confirm=float(self.z_confirm),
            confirm_drop=float(self.confirm_drop),
            done=bool(self.finished),
            final_round=self.final_round,
            outliers=list(self.outliers) if self.finished else [],
            log=copy.deepcopy(self.log),
        )

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
