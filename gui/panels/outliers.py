"""Outlier decisions: a round selector (the latest verdict, or any earlier round's), that round's
candidate and automatic verdict with its numbers, Accept / Reject of that verdict, and a flag toggle per
view. The toggles show the **outcome**: a view is unticked when it was unticked by hand or removed by a
leave-one-out round (:func:`outcome_flags`). Unticking a view leaves it out of the reconstructions and has it
pose-searched after the leave-one-out test (``set_flag``); ticking a hand-unticked view puts it back;
ticking a view a round removed overrules that round ("Keep: inlier"). A decision that agrees with the
verdict in force changes nothing.

Every manual decision is appended to the pipeline's log and the log is rewritten to
``<out>/decisions.json`` (atomically) after each one, so that
``python main.py run --scene DIR --decisions <out>/decisions.json`` replays the session headless.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import dearpygui.dearpygui as dpg

from gui.engine import EngineView
from gui.handles import Text
from gui.readouts import BarModel, bar_model

if TYPE_CHECKING:
    from gui.port import WindowPort

__all__ = ["OutliersPanel", "outcome_flags", "round_choices", "verdict_text"]

LATEST = "latest verdict"


def verdict_text(view: EngineView, model: Optional[BarModel]) -> tuple[str, str]:
    """(candidate line, verdict line) describing the leave-one-out test for the panel."""
    if view.loo is None:
        return "leave-one-out: not started", "(runs after the first reconstruction; needs pipeline.outliers=true)"
    if model is None or model.candidate is None or model.verdict_round is None:
        outliers = view.loo.outliers
        ids = ", ".join(view.ids[v] for v in outliers) or "none"
        return f"leave-one-out: {'done' if view.loo.done else 'scoring'}", f"outliers: {ids}"
    name = view.ids[model.candidate]
    rounds = {r["round"]: r for r in view.loo.rounds}
    verdict = rounds.get(model.verdict_round)
    head = f"round {model.verdict_round}: candidate view {name} ({model.key} {model.scores[model.candidate]:.4f})"
    if view.loo.rule == "relative":
        return head, _relative_verdict_line(view, model, verdict, name)
    if verdict is None or verdict["scores"] is None:
        return (
            head,
            f"reconstructing without view {name}; the removal is kept if the mean drops to "
            f"<= {model.required:.4f} (before {model.mean_before:.4f} - threshold {model.threshold:.3f})",
        )
    drop = model.mean_before - model.mean_after
    auto = "ACCEPT (outlier)" if verdict["auto_accept"] else "REJECT (inlier)"
    manual = verdict["manual_accept"]
    line = (
        f"mean without it: before {model.mean_before:.4f}, after {model.mean_after:.4f}, drop {drop:.4f} "
        f"vs threshold {model.threshold:.3f} -> automatic {auto}"
    )
    if manual is not None:
        line += f"; manual {'ACCEPT' if manual else 'REJECT'}"
    return head, line


def _relative_verdict_line(view: EngineView, model: BarModel, verdict: Optional[dict], name: str) -> str:
    """The relative rule's verdict: the candidate's robust z per kind of evidence and what followed."""
    if verdict is None:
        return f"scoring the evidence for view {name}"
    reason = verdict.get("reason") or ""
    if verdict.get("accepted") is None:  # borderline: its leave-one-out round decides
        drop = float(view.loo.confirm_drop)
        return (
            f"{reason}; reconstructing without view {name}: the removal is kept if the others' mean drops "
            f"by {drop:.0%} (to <= {model.mean_before * (1.0 - drop):.4f})"
        )
    auto = "ACCEPT (outlier)" if verdict["auto_accept"] else "REJECT (inlier)"
    line = f"{reason} -> automatic {auto}"
    if verdict["accepted"] and verdict.get("scores") is None:
        line += f"; reconstructing without view {name} for the pose search"
    manual = verdict["manual_accept"]
    if manual is not None:
        line += f"; manual {'ACCEPT' if manual else 'REJECT'}"
    return line


def outcome_flags(view: EngineView) -> tuple[list[int], dict[int, str]]:
    """(flag per view: 1 kept, 0 out; why each 0 is out: "by hand", "round N") from the initial flags, the
    leave-one-out rounds whose removal stands and the searched views."""
    flags = [int(f) for f in view.initial_flags]
    why = {i: "by hand" for i, f in enumerate(flags) if f == 0}
    for r in view.loo.rounds if view.loo is not None else []:
        candidate = r.get("candidate")
        if r.get("round", 0) >= 1 and candidate is not None and r.get("accepted"):
            flags[int(candidate)] = 0
            why.setdefault(int(candidate), f"round {r['round']}")
    for v in view.search_order:
        if flags[int(v)]:
            flags[int(v)] = 0
            why.setdefault(int(v), "searched")
    return flags, why


def round_choices(view: EngineView) -> list[tuple[str, Optional[int]]]:
    """(label, round index) for the round selector: "latest" first, then every round with a verdict."""
    choices: list[tuple[str, Optional[int]]] = [(LATEST, None)]
    for r in view.loo.rounds if view.loo is not None else []:
        if r["round"] < 1 or r["candidate"] is None:
            continue
        if r.get("accepted") is None:  # its reconstruction is still deciding
            state = "running"
        else:
            state = "removed" if r["accepted"] else "kept"
            if r["manual_accept"] is not None:
                state += " (manual)"
        choices.append((f"round {r['round']}: view {view.ids[r['candidate']]} {state}", int(r["round"])))
    return choices


class OutliersPanel:
    """Candidate, verdict, Accept / Reject and the per-view flag toggles."""

    def __init__(self, app: "WindowPort", parent: int | str) -> None:
        self.app = app
        with dpg.group(horizontal=True, parent=parent):
            dpg.add_text("verdict of")
            self.round_combo = dpg.add_combo(
                [LATEST], default_value=LATEST, width=260, callback=lambda s, a: self._round_chosen(a)
            )
            self.log_text = Text("decisions: 0")
        self.candidate = Text("-", parent=parent, colour=(255, 170, 60))
        self.verdict = Text("-", parent=parent, wrap=600)
        with dpg.group(horizontal=True, parent=parent):
            self.accept_button = dpg.add_button(label="Remove: outlier", callback=lambda: self.decide(True))
            self.reject_button = dpg.add_button(label="Keep: inlier", callback=lambda: self.decide(False))
            dpg.add_text("flags (outcome; untick = outlier, searched):")
        self.flag_group = dpg.add_group(horizontal=True, parent=parent)
        self.outcome = Text("", parent=parent, colour=(230, 150, 140), wrap=600)
        self.flag_boxes: list[int] = []
        self.why: dict[int, str] = {}
        self._model: Optional[BarModel] = None
        self._choices: list[tuple[str, Optional[int]]] = [(LATEST, None)]
        self._written = 0

    def decide(self, accept: bool) -> None:
        self.app.decide_outlier(accept, None if self._model is None else self._model.verdict_round)

    def _round_chosen(self, label: str) -> None:
        index = dict(self._choices).get(label)
        self.select_round(index)

    def select_round(self, round_index: Optional[int]) -> None:
        """Show (and decide on) round `round_index`'s verdict; None follows the latest verdict."""
        self.app.ui.selected_round = None if round_index is None else int(round_index)
        view = self.app.worker.view
        if view is not None:
            self.update(view)

    def set_flag(self, index: int, flag: int) -> None:
        """A toggle: untick = outlier by hand; tick = back in (a hand flag is undone, a round's removal is
        overruled with "Keep: inlier")."""
        view = self.app.worker.view
        reason = self.why.get(int(index), "")
        if flag and reason.startswith("round "):
            self.app.decide_outlier(False, int(reason.split()[1]))
        elif flag and reason == "searched" and view is not None and int(view.initial_flags[index]) == 1:
            self.app.report(
                f"view {view.ids[index]} is an outlier of the leave-one-out test: overrule its round "
                "(Keep: inlier) to put it back",
                True,
            )
            self._refresh_boxes()
        else:
            self.app.set_flag(index, flag)

    def _refresh_boxes(self) -> None:
        view = self.app.worker.view
        if view is None:
            return
        flags, _ = outcome_flags(view)
        for box, flag in zip(self.flag_boxes, flags):
            dpg.set_value(box, bool(flag))

    def _ensure_boxes(self, view: EngineView) -> None:
        if len(self.flag_boxes) == len(view.ids):
            return
        dpg.delete_item(self.flag_group, children_only=True)
        self.flag_boxes = [
            dpg.add_checkbox(
                label=str(v),
                default_value=bool(view.initial_flags[i]),
                parent=self.flag_group,
                callback=lambda s, a, u: self.set_flag(u, int(a)),
                user_data=i,
            )
            for i, v in enumerate(view.ids)
        ]

    def update(self, view: EngineView) -> None:
        self._ensure_boxes(view)
        flags, self.why = outcome_flags(view)
        for box, flag in zip(self.flag_boxes, flags):
            if bool(dpg.get_value(box)) != bool(flag):
                dpg.set_value(box, bool(flag))
        self.outcome.set(
            "out: " + ", ".join(f"{view.ids[i]} ({why})" for i, why in sorted(self.why.items())) if self.why else ""
        )
        self._choices = round_choices(view)
        selected = self.app.ui.selected_round
        if selected is not None and selected not in [index for _, index in self._choices]:
            selected = self.app.ui.selected_round = None  # that round was discarded by a decision
        dpg.configure_item(self.round_combo, items=[label for label, _ in self._choices])
        dpg.set_value(self.round_combo, next(label for label, index in self._choices if index == selected))
        self._model = bar_model(view, selected)
        head, line = verdict_text(view, self._model)
        self.candidate.set(head)
        self.verdict.set(line)
        self.log_text.set(f"{len(view.decisions)} decisions logged")
