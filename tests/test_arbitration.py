"""Per-view arbitration: each searched view keeps its recovered pose only on its own evidence."""

from types import SimpleNamespace

import numpy as np
import pytest

from sparseags.pipeline import Arbitration, per_view_verdict


def scores(lpips, mse):
    return {"lpips_norm": np.asarray(lpips, float), "mse_norm": np.asarray(mse, float)}


def test_verdict_needs_lower_lpips_and_one_more_witness():
    rec, ini = scores([0.2, 0.5, 0.3, 0.3], [0.01, 0.01, 0.05, 0.05]), scores([0.4, 0.4, 0.4, 0.4], [0.02] * 4)
    assert per_view_verdict(rec, ini, 0)[0] == "recovered"  # LPIPS and MSE lower
    choice, why = per_view_verdict(rec, ini, 1)
    assert choice == "initial" and "not lower" in why  # LPIPS higher
    assert per_view_verdict(rec, ini, 2)[0] == "initial"  # only LPIPS prefers it
    # ... unless the matches agree
    assert per_view_verdict(rec, ini, 2, epipolar_recovered=1.0, epipolar_initial=9.0)[0] == "recovered"
    # matches that clearly contradict the recovered pose veto it
    choice, why = per_view_verdict(rec, ini, 0, epipolar_recovered=20.0, epipolar_initial=2.0)
    assert choice == "initial" and "contradict" in why and "20.0 vs 2.0 px" in why


def fake_arbitration(mode="per_view", ambiguous=None):
    pipeline = SimpleNamespace(score_key="lpips_norm", scene=SimpleNamespace(ids=["000", "001", "002", "003"]))
    base = np.tile(np.eye(4), (4, 1, 1))
    recovered = {1: np.eye(4) * 2, 3: np.eye(4) * 3}
    arb = Arbitration(pipeline, base, [1, 3], recovered, mode=mode, ambiguous=ambiguous or {})
    arb.aligned = {1: np.eye(4) * 5, 3: np.eye(4) * 6}
    # view 1: the recovered pose explains its image better; view 3: it does not
    arb.scores_recovered = scores([0.3, 0.2, 0.3, 0.6], [0.01, 0.01, 0.01, 0.05])
    arb.scores_initial = scores([0.3, 0.5, 0.3, 0.4], [0.01, 0.04, 0.01, 0.02])
    arb.epipolar_recovered = np.full(4, np.nan)
    arb.epipolar_initial = np.full(4, np.nan)
    return arb


def test_one_views_failure_does_not_revert_anothers_success():
    arb = fake_arbitration()
    arb._decide()
    assert arb.view_choices() == {1: "recovered", 3: "initial"}
    assert arb.choice == "mixed" and arb.stage == "recon_mixed"  # the mixed poses get their own reconstruction
    mixed = arb.poses_for(arb.mixed_for)
    assert np.allclose(mixed[1], np.eye(4) * 2) and np.allclose(mixed[3], np.eye(4) * 6)
    views = {v["id"]: v for v in arb.snapshot()["views"]}
    assert views["001"]["choice"] == "recovered" and views["003"]["choice"] == "initial"
    assert views["003"]["reason"] and views["001"]["scores"]["recovered"]["lpips_norm"] == pytest.approx(0.2)


def test_the_paper_rule_reverts_every_view_when_one_fails():
    arb = fake_arbitration(mode="paper")
    arb._decide()
    assert arb.choice == "initial" and arb.stage == "decided"
    assert arb.view_choices() == {1: "initial", 3: "initial"}


def test_an_ambiguous_view_keeps_its_initial_pose_and_says_why():
    arb = fake_arbitration(ambiguous={1: [{"rank": -1, "angle_deg": 90.0, "score": 0.2}]})
    arb._decide()
    assert arb.view_choices() == {1: "initial", 3: "initial"} and arb.stage == "decided"
    view = arb.snapshot()["views"][0]
    assert view["ambiguous"] and view["reason"].startswith("ambiguous") and view["candidates"][0]["angle_deg"] == 90


def test_a_manual_choice_per_view_reopens_or_settles_the_mixed_reconstruction():
    arb = fake_arbitration()
    arb._decide()
    arb.stage = "decided"  # pretend the mixed reconstruction was trained
    arb.choose("initial", view=1)  # now every view is "initial": no mixed reconstruction needed
    assert arb.choice == "initial" and arb.done
    arb.choose("recovered", view=3)  # view 1 initial, view 3 recovered: a new mixture to train
    assert arb.choice == "mixed" and arb.stage == "recon_mixed" and arb.mixed_for == {1: "initial", 3: "recovered"}
