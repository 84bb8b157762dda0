"""Per-view arbitration: each searched view keeps its recovered pose only on its own evidence."""

from types import SimpleNamespace

import numpy as np
import pytest

from sparseags.pipeline import Arbitration, per_view_verdict
from sparseags.recon import Reconstruction


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
    views = {v["id"]: v for v in arb.snapshot().views}
    assert views["001"]["choice"] == "recovered" and views["003"]["choice"] == "initial"
    assert views["003"]["reason"] and views["001"]["scores"]["recovered"]["lpips_norm"] == pytest.approx(0.2)


class _DoneRecon(Reconstruction):
    """A reconstruction that is finished at once (the arbitration's bookkeeping is what is tested)."""

    done = True

    def __init__(self, poses):
        self.poses = poses

    def step(self, budget=1):
        return {}

    def view_epipolar_consistency(self):
        return np.full(4, np.nan)


def test_views_corrected_in_place_need_no_aligner_and_no_second_reconstruction():
    trained = []

    def make_recon(flags, poses, iters=None):
        trained.append(poses.copy())
        return _DoneRecon(poses)

    pipeline = SimpleNamespace(
        score_key="lpips_norm",
        scene=SimpleNamespace(ids=["000", "001", "002", "003"]),
        num_views=4,
        arbitration_iters=10,
        make_recon=make_recon,
        score=lambda recon: scores([0.3] * 4, [0.01] * 4),
        make_aligner=lambda view, base: pytest.fail("a view corrected in place was aligned again"),
    )
    recovered = {1: np.eye(4) * 2, 3: np.eye(4) * 3}
    arb = Arbitration(pipeline, np.tile(np.eye(4), (4, 1, 1)), [1, 3], recovered, local=[1, 3])
    for _ in range(10):
        if arb.done:
            break
        arb.step(1)
    assert arb.done and arb.choice == "recovered" and len(trained) == 1
    assert np.allclose(trained[0][1], np.eye(4) * 2) and np.allclose(trained[0][3], np.eye(4) * 3)
    assert "corrected in place" in arb.view_reason[1] and arb.result()[0] is arb.recon_recovered
    # one searched view that is not local: both reconstructions are trained as before
    trained.clear()
    arb = Arbitration(pipeline, np.tile(np.eye(4), (4, 1, 1)), [1], {1: np.eye(4) * 2}, local=[])
    pipeline.make_aligner = lambda view, base: SimpleNamespace(
        done=True, step=lambda budget=1: {}, chosen_w2c=lambda: np.eye(4) * 7
    )
    for _ in range(10):
        if arb.done:
            break
        arb.step(1)
    assert arb.done and len(trained) == 2


def test_the_paper_rule_reverts_every_view_when_one_fails():
    arb = fake_arbitration(mode="paper")
    arb._decide()
    assert arb.choice == "initial" and arb.stage == "decided"
    assert arb.view_choices() == {1: "initial", 3: "initial"}


def test_an_ambiguous_view_keeps_its_initial_pose_and_says_why():
    arb = fake_arbitration(ambiguous={1: [{"rank": -1, "angle_deg": 90.0, "score": 0.2}]})
    arb._decide()
    assert arb.view_choices() == {1: "initial", 3: "initial"} and arb.stage == "decided"
    view = arb.snapshot().views[0]
    assert view["ambiguous"] and view["reason"].startswith("ambiguous") and view["candidates"][0]["angle_deg"] == 90


def test_a_manual_choice_per_view_reopens_or_settles_the_mixed_reconstruction():
    arb = fake_arbitration()
    arb._decide()
    arb.stage = "decided"  # pretend the mixed reconstruction was trained
    arb.choose("initial", view=1)  # now every view is "initial": no mixed reconstruction needed
    assert arb.choice == "initial" and arb.done
    arb.choose("recovered", view=3)  # view 1 initial, view 3 recovered: a new mixture to train
    assert arb.choice == "mixed" and arb.stage == "recon_mixed" and arb.mixed_for == {1: "initial", 3: "recovered"}


# -------------------------------------------------------------------------------------------------
# in the pipeline (tiny synthetic scene, MSE scores: no LPIPS weights needed)

TINY = [
    "scene.resolution=32",
    "recon.iters=8",
    "recon.num_pts=300",
    "recon.resolution_schedule=[[0.0,32]]",
    "recon.densify_from=1000",
    "outliers.round_iters=6",
    "outliers.score=mse",
    "search.stage_steps=[2,2,2]",
    "search.stage_resolution=[16,16,16]",
    "search.keep_min=4",
    "search.n_azimuth=8",
    "search.align_copies=2",
    "search.align_steps=2",
    "search.max_gaussians=300",
    "search.rank_candidates=4",
    "pipeline.outliers=true",
    "prior.enabled=false",
    "pipeline.rotation_averaging=false",
    "device=cpu",
]


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    from sparseags.synth import make_demo_scene

    return make_demo_scene(tmp_path_factory.mktemp("arb") / "scene", seed=0, n_views=6, n_novel=0, resolution=32)


def tiny_pipeline(scene_dir, overrides=()):
    from sparseags.config import load_config
    from sparseags.pipeline import Pipeline
    from sparseags.scene import load_scene

    cfg = load_config(None, TINY + list(overrides))
    return Pipeline(load_scene(scene_dir, resolution=cfg.scene.resolution), cfg, device="cpu")


def finish(pipeline, budget=4):
    for _ in range(100000):
        if pipeline.done:
            return
        pipeline.step(budget)
    raise AssertionError("pipeline did not finish")


def test_a_hand_flagged_view_is_searched_and_gets_a_per_view_verdict(tiny_scene):
    pipeline = tiny_pipeline(tiny_scene)
    pipeline.set_flag(2, 0)
    finish(pipeline)
    assert 2 in pipeline.search_order and pipeline.searches[2].done
    views = {v["view"]: v for v in pipeline.snapshot().arbitration.views}
    assert views[2]["choice"] in ("recovered", "initial") and views[2]["reason"]
    from sparseags.artifacts import outlier_report

    report = outlier_report(pipeline)
    assert report["by_hand"] == ["002"] and "002" in report["searched"]
    assert report["arbitration"]["views"]["002"]["reason"] == views[2]["reason"]


def test_checkpoint_resume_mid_arbitration_is_exact(tiny_scene):
    reference = tiny_pipeline(tiny_scene)
    reference.set_flag(2, 0)
    finish(reference)

    first = tiny_pipeline(tiny_scene)
    first.set_flag(2, 0)
    while first.phase != "arbitration":
        first.step(4)
    for _ in range(3):
        first.step(4)
    resumed = tiny_pipeline(tiny_scene)
    resumed.load_state_dict(first.state_dict())
    finish(resumed)
    assert resumed.arbitration.view_choices() == reference.arbitration.view_choices()
    np.testing.assert_allclose(
        resumed.final_recon.current_w2c().detach().numpy(),
        reference.final_recon.current_w2c().detach().numpy(),
        atol=1e-6,
    )


def test_choose_arbitration_per_view_in_the_pipeline(tiny_scene):
    pipeline = tiny_pipeline(tiny_scene)
    pipeline.set_flag(2, 0)
    finish(pipeline)
    other = "initial" if pipeline.arbitration.view_choice(2) == "recovered" else "recovered"
    pipeline.choose_arbitration(other, view=2)
    finish(pipeline)  # another searched view may keep its own choice: then the mixed poses are trained
    assert pipeline.arbitration.view_choice(2) == other
    chosen = pipeline.arbitration.recovered[2] if other == "recovered" else pipeline.arbitration.aligned[2]
    # the final reconstruction started view 2 from the chosen pose
    np.testing.assert_allclose(pipeline.final_recon.initial_w2c[2].double().numpy(), chosen, atol=1e-5)
    assert pipeline.decisions[-1] == dict(pipeline.decisions[-1], action="choose_arbitration", choice=other, view="002")
    unsearched = next(v for v in range(6) if v not in pipeline.search_order)
    with pytest.raises(Exception, match="was not searched"):
        pipeline.choose_arbitration("initial", view=unsearched)
