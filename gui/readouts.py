"""View models shared by several panels, built from a published :class:`gui.engine.EngineView` (pure data:
no DearPyGui, no pipeline), so panels do not import each other and tests need no display.

* :func:`bar_model`: which per-view scores the score bars show and which leave-one-out verdict the outlier
  panel decides on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    from gui.engine import EngineView

__all__ = ["BarModel", "bar_model"]


@dataclass(frozen=True)
class BarModel:
    """What the bar chart shows; every mean is over the inliers of the round named."""

    scores: np.ndarray  # [V] (NaN = not scored)
    flags: np.ndarray  # [V] flags of the round the scores come from
    key: str  # score name, e.g. "lpips_norm"
    source: str  # where the scores come from, for the caption
    candidate: Optional[int] = None
    verdict_round: Optional[int] = None  # the leave-one-out round that tests removing `candidate`
    threshold: Optional[float] = None
    mean_inliers: Optional[float] = None
    mean_before: Optional[float] = None  # mean without the candidate, before its removal
    mean_after: Optional[float] = None  # inlier mean of the verdict round, once scored

    @property
    def required(self) -> Optional[float]:
        """The removal is kept when the mean after falls to this level or below."""
        if self.mean_before is None or self.threshold is None:
            return None
        return self.mean_before - self.threshold


def bar_model(view: "EngineView", verdict_round: Optional[int] = None) -> Optional[BarModel]:
    """Choose the scores to show from a published engine view (None when nothing is scored yet).

    By default the latest round that picked a candidate; with `verdict_round`, the round before it (whose
    scores picked that round's candidate), when the leave-one-out loop has such a round.
    """
    loo = view.loo
    if loo is not None and loo.rounds:
        rounds = loo.rounds
        picked = [r for r in rounds if r["scores"] is not None and r["next_candidate"] is not None]
        scored = [r for r in rounds if r["scores"] is not None]
        base = picked[-1] if picked else (scored[-1] if scored else None)
        chosen = [r for r in picked if verdict_round is not None and r["round"] == verdict_round - 1]
        if chosen:
            base = chosen[0]
        if base is not None:
            after = None
            verdict = None
            if base["next_candidate"] is not None:
                verdict = base["round"] + 1
                following = [r for r in rounds if r["round"] == verdict]
                if following and following[0]["scores"] is not None:
                    after = following[0]["mean_inliers"]
            return BarModel(
                scores=np.asarray(base["scores"], float),
                flags=np.asarray(base["flags"], int),
                key=view.score_key,
                source=f"leave-one-out round {base['round']}",
                candidate=base["next_candidate"],
                verdict_round=verdict,
                threshold=loo.threshold,
                mean_inliers=base["mean_inliers"],
                mean_before=base["mean_without_next"],
                mean_after=after,
            )
    scores = view.latest_scores
    if scores and view.score_key in scores:
        values = np.asarray(scores[view.score_key], float)
        flags = np.asarray(view.flags, int)
        inliers = values[flags.astype(bool)]
        return BarModel(
            scores=values,
            flags=flags,
            key=view.score_key,
            source="latest scores",
            mean_inliers=float(inliers.mean()) if inliers.size else None,
        )
    return None
