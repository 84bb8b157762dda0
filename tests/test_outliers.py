"""Leave-one-out loop decisions on hand-made score sequences (no rendering involved)."""

import numpy as np
import pytest

from sparseags.outliers import LeaveOneOut, combined_z, max_removals, removal_accepted, robust_z


@pytest.mark.parametrize("n, expected", [(2, 1), (4, 1), (5, 1), (6, 2), (7, 3), (8, 4), (12, 4), (16, 4)])
def test_max_removals_official_rule(n, expected):
    assert max_removals(n) == expected


def test_removal_accepted_needs_a_drop_of_at_least_the_threshold():
    assert removal_accepted(0.30, 0.25, 0.05)  # drop of exactly 0.05
    assert removal_accepted(0.30, 0.10, 0.05)
    assert not removal_accepted(0.30, 0.26, 0.05)  # too small a drop
    assert not removal_accepted(0.30, 0.35, 0.05)  # got worse


class FakeRecon:
    """A 'reconstruction' that takes `steps` steps and then exposes the scores the test scripted."""

    def __init__(self, flags, w2c_init, scores, steps=2):
        self.flags = flags
        self.w2c_init = w2c_init
        self.scores = np.asarray(scores, dtype=float)
        self.steps = steps
        self.count = 0

    @property
    def done(self):
        return self.count >= self.steps

    def step(self, budget=1):
        self.count = min(self.steps, self.count + budget)
        return {"step": self.count}

    def current_w2c(self):
        # pretend optimisation moves every inlier camera by +1 in the [0, 3] entry
        out = self.w2c_init.copy()
        out[self.flags == 1, 0, 3] += 1.0
        return out

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def scripted(score_table):
    """make_recon that looks up the scores by the set of removed views."""
    made = []

    def make_recon(flags, w2c_init):
        removed = tuple(int(i) for i in np.flatnonzero(flags == 0))
        recon = FakeRecon(flags, w2c_init, score_table[removed])
        made.append((removed, w2c_init.copy()))
        return recon

    return make_recon, made


def run_to_end(loop, budget=5):
    for _ in range(1000):
        if loop.done:
            return
        loop.step(budget)
    raise AssertionError("loop did not finish")


def eye(v):
    return np.tile(np.eye(4), (v, 1, 1))


def test_clear_outlier_is_removed_and_loop_stops_when_next_removal_does_not_help():
    v = 6
    table = {
        (): [0.10, 0.12, 0.11, 0.60, 0.13, 0.12],  # view 3 is bad
        (3,): [0.05, 0.06, 0.05, 0.70, 0.06, 0.07],  # others improve a lot: mean 0.058
        (3, 5): [0.05, 0.06, 0.05, 0.70, 0.06, 0.50],  # removing 5 does not help
    }
    make_recon, made = scripted(table)
    loop = LeaveOneOut(make_recon, lambda r: r.scores, np.ones(v, int), eye(v))
    run_to_end(loop)
    assert loop.outliers == [3]
    assert loop.result_flags.tolist() == [1, 1, 1, 0, 1, 1]
    snap = loop.snapshot()
    r1 = snap.rounds[1]
    assert r1["candidate"] == 3 and r1["auto_accept"] is True
    assert snap.rounds[0]["mean_without_next"] == pytest.approx(np.mean([0.10, 0.12, 0.11, 0.13, 0.12]))
    assert snap.rounds[2]["candidate"] == 5 and snap.rounds[2]["auto_accept"] is False
    assert snap.final_round == 1
    # round 1 started from round 0's optimised poses (inliers moved by +1), not from the initial ones
    assert made[1][1][0, 0, 3] == pytest.approx(1.0)


def test_no_outlier_when_removal_barely_helps():
    v = 8
    table = {
        (): [0.10, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.20],
        (7,): [0.09, 0.10, 0.11, 0.12, 0.13, 0.14, 0.15, 0.30],  # drop 0.01 < 0.05
    }
    make_recon, _ = scripted(table)
    loop = LeaveOneOut(make_recon, lambda r: r.scores, np.ones(v, int), eye(v))
    run_to_end(loop)
    assert loop.outliers == []
    assert loop.final_round == 0


def test_at_most_max_removals_for_five_views():
    v = 5  # max 1 removal even though a second removal would help
    table = {
        (): [0.1, 0.1, 0.9, 0.1, 0.8],
        (2,): [0.05, 0.05, 0.9, 0.05, 0.8],  # mean over inliers 0.2375 vs before 0.275: no!
    }
    # make the first removal clearly good
    table[(2,)] = [0.02, 0.02, 0.9, 0.02, 0.2]
    make_recon, made = scripted(table)
    loop = LeaveOneOut(make_recon, lambda r: r.scores, np.ones(v, int), eye(v))
    run_to_end(loop)
    assert loop.outliers == [2]
    assert len(made) == 2  # round 0 and round 1 only


def test_already_flagged_views_are_never_candidates():
    v = 6
    flags = np.array([1, 1, 0, 1, 1, 1])
    table = {
        (2,): [0.1, 0.1, 0.99, 0.5, 0.1, 0.1],
        (2, 3): [0.05, 0.05, 0.99, 0.9, 0.05, 0.05],
        (0, 2, 3): [0.05, 0.05, 0.99, 0.9, 0.05, 0.05],
    }
    make_recon, _ = scripted(table)
    loop = LeaveOneOut(make_recon, lambda r: r.scores, flags, eye(v))
    run_to_end(loop)
    assert loop.snapshot().rounds[1]["candidate"] == 3
    assert loop.outliers == [3]  # view 2 was flagged by the user, not by the loop


def test_manual_reject_reverts_and_manual_accept_continues():
    v = 6
    table = {
        (): [0.10, 0.12, 0.11, 0.60, 0.13, 0.12],
        (3,): [0.05, 0.06, 0.05, 0.70, 0.06, 0.07],
        (3, 5): [0.05, 0.06, 0.05, 0.70, 0.06, 0.50],
    }
    make_recon, _ = scripted(table)
    loop = LeaveOneOut(make_recon, lambda r: r.scores, np.ones(v, int), eye(v))
    run_to_end(loop)
    assert loop.outliers == [3]

    loop.override(1, accept=False)  # the user says view 3 is fine after all
    assert loop.done and loop.outliers == [] and loop.final_round == 0

    loop.override(1, accept=True)  # ... changes their mind: the loop continues from there
    assert not loop.done
    run_to_end(loop)
    assert loop.outliers == [3]

    loop.override(2, accept=True)  # force the removal of view 5 as well (max 2 for 6 views)
    assert loop.done
    assert sorted(loop.outliers) == [3, 5]
    decisions = [entry for entry in loop.log if "manual_accept" in entry]
    assert [(d["round"], d["manual_accept"]) for d in decisions] == [(1, False), (1, True), (2, True)]


def test_override_of_unknown_round_is_an_error():
    make_recon, _ = scripted({(): [0.1, 0.2, 0.3], (2,): [0.1, 0.1, 0.3]})
    loop = LeaveOneOut(make_recon, lambda r: r.scores, np.ones(3, int), eye(3))
    with pytest.raises(ValueError):
        loop.override(1, accept=True)


def test_checkpoint_resume_mid_round_gives_same_result():
    v = 6
    table = {
        (): [0.10, 0.12, 0.11, 0.60, 0.13, 0.12],
        (3,): [0.05, 0.06, 0.05, 0.70, 0.06, 0.07],
        (3, 5): [0.05, 0.06, 0.05, 0.70, 0.06, 0.50],
    }
    make_recon, _ = scripted(table)
    loop = LeaveOneOut(make_recon, lambda r: r.scores, np.ones(v, int), eye(v))
    for _ in range(4):
        loop.step(1)
    state = loop.state_dict()
    resumed = LeaveOneOut(make_recon, lambda r: r.scores, np.ones(v, int), eye(v))
    resumed.load_state_dict(state)
    run_to_end(resumed, budget=1)
    run_to_end(loop, budget=1)
    assert resumed.snapshot().rounds == loop.snapshot().rounds
    assert resumed.outliers == loop.outliers == [3]


# -------------------------------------------------------------------------------------------------
# the relative rule (default): robust z of the per-view evidence, decided before the round runs


def evidence_scripted(table):
    """make_recon whose reconstruction exposes the evidence dict scripted for its set of removed views."""
    made = []

    def make_recon(flags, w2c_init):
        removed = tuple(int(i) for i in np.flatnonzero(flags == 0))
        entry = table[removed]
        recon = FakeRecon(flags, w2c_init, entry["photometric"])
        recon.evidence = {k: np.asarray(v, dtype=float) for k, v in entry.items()}
        made.append(removed)
        return recon

    return make_recon, made


def relative_loop(make_recon, v, **kw):
    return LeaveOneOut(make_recon, lambda r: r.evidence, np.ones(v, int), eye(v), rule="relative", **kw)


def test_robust_z_is_the_modified_z_score_with_a_floored_spread():
    values = np.array([1.0, 1.1, 0.9, 1.0, 3.0])
    z = robust_z(values, np.ones(5, bool), ("relative", 0.0))
    # median 1.0, MAD 0.1 -> z = 0.6745 (x - 1) / 0.1
    assert z == pytest.approx(0.6745 * (values - 1.0) / 0.1)
    # a spread below the floor is raised to it: MAD >= 0.5 x |median| = 0.5
    assert robust_z(values, np.ones(5, bool), ("relative", 0.5))[4] == pytest.approx(0.6745 * 2.0 / 0.5)
    # absolute floor, nan entries ignored for the statistics but kept nan
    z = robust_z(np.array([1.0, np.nan, 1.0, 1.0, 2.0]), np.ones(5, bool), ("absolute", 0.5))
    assert np.isnan(z[1]) and z[4] == pytest.approx(0.6745 * 1.0 / 0.5)
    # fewer than 3 finite values among the selected views: no z at all
    assert np.isnan(robust_z(np.array([1.0, np.nan, 5.0]), np.ones(3, bool))).all()
    # only the selected views set the median and spread
    z = robust_z(np.array([1.0, 1.2, 0.8, 100.0]), np.array([True, True, True, False]), ("absolute", 0.0))
    assert z[3] == pytest.approx(0.6745 * 99.0 / 0.2)


def test_combined_z_takes_the_strongest_witness_and_ignores_missing_ones():
    zs = {
        "photometric": np.array([0.5, 4.0, np.nan]),
        "epipolar": np.array([np.nan, 1.0, np.nan]),
        "mask": np.array([2.0, -1.0, np.nan]),
    }
    combined = combined_z(zs)
    assert combined[:2].tolist() == [2.0, 4.0] and np.isnan(combined[2])


def test_relative_rule_removes_the_view_that_stands_out_even_when_the_mean_rises():
    # the scan24 case: the true outlier is the candidate, but the others' mean rises without it; the
    # official rule keeps it, the relative rule removes it (its epipolar residual is far off the others')
    v = 8
    table = {
        (): {
            "photometric": [0.60, 0.62, 0.66, 0.64, 0.61, 0.63, 0.65, 0.80],
            "epipolar": [1.0, 1.2, 0.9, 1.1, 1.0, 1.3, 0.8, 22.0],
            "mask": [0.05, 0.06, 0.05, 0.05, 0.06, 0.05, 0.06, 0.07],
        },
        (7,): {
            "photometric": [0.63, 0.64, 0.67, 0.66, 0.64, 0.65, 0.66, 0.95],
            "epipolar": [1.0, 1.1, 0.9, 1.0, 1.0, 1.1, 0.8, np.nan],
            "mask": [0.05, 0.06, 0.05, 0.05, 0.06, 0.05, 0.06, 0.30],
        },
    }
    paper = LeaveOneOut(*_paper_args(table, v))
    run_to_end(paper)
    assert paper.outliers == []  # mean without 7 rose from 0.63 to 0.65: the official rule reverts

    make_recon, made = evidence_scripted(table)
    loop = relative_loop(make_recon, v)
    run_to_end(loop)
    assert loop.outliers == [7]
    snap = loop.snapshot()
    assert snap.rounds[1]["auto_accept"] is True and "epipolar z" in snap.rounds[1]["reason"]
    # round 2's candidate did not stand out: rejected without running its reconstruction
    assert snap.rounds[2]["auto_accept"] is False and snap.rounds[2]["ran"] is False
    assert made == [(), (7,)]


def _paper_args(table, v):
    make_recon, _ = evidence_scripted(table)
    return make_recon, lambda r: r.evidence["photometric"], np.ones(v, int), eye(v)


def test_relative_rule_keeps_the_worst_inlier_when_nothing_stands_out():
    # hammer / banana: the highest score belongs to an inlier that is only a little worse than the rest
    v = 8
    table = {
        (): {
            "photometric": [0.50, 0.55, 0.52, 0.58, 0.51, 0.54, 0.60, 0.53],
            "mask": [0.05, 0.06, 0.05, 0.06, 0.05, 0.06, 0.06, 0.05],
        }
    }
    make_recon, made = evidence_scripted(table)
    loop = relative_loop(make_recon, v)
    run_to_end(loop)
    assert loop.outliers == [] and made == [()]
    r1 = loop.snapshot().rounds[1]
    assert r1["candidate"] == 6 and r1["auto_accept"] is False and r1["reason"].startswith("z ")


def test_relative_rule_manual_accept_runs_the_skipped_round_and_manual_reject_reverts():
    v = 8
    photometric = [0.50, 0.55, 0.52, 0.58, 0.51, 0.54, 0.60, 0.53]
    table = {(): {"photometric": photometric}, (6,): {"photometric": photometric}}
    make_recon, made = evidence_scripted(table)
    loop = relative_loop(make_recon, v)
    run_to_end(loop)
    assert loop.outliers == []
    loop.override(1, accept=True)  # the user removes view 6 anyway: its round runs now
    assert not loop.done
    run_to_end(loop)
    assert loop.outliers == [6] and made == [(), (6,)]
    loop.override(1, accept=False)
    assert loop.done and loop.outliers == []


def test_relative_rule_respects_max_removals_and_resumes_exactly():
    v = 5  # at most one removal
    table = {
        (): {"photometric": [0.5, 0.5, 0.52, 0.51, 2.0], "mask": [0.05, 0.05, 0.06, 0.05, 0.4]},
        (4,): {"photometric": [0.5, 0.5, 2.0, 0.51, 2.0], "mask": [0.05, 0.05, 0.4, 0.05, 0.4]},
    }
    make_recon, _ = evidence_scripted(table)
    loop = relative_loop(make_recon, v)
    for _ in range(3):
        loop.step(1)
    resumed = relative_loop(make_recon, v)
    resumed.load_state_dict(loop.state_dict())
    run_to_end(loop, budget=1)
    run_to_end(resumed, budget=1)
    assert loop.outliers == resumed.outliers == [4]
    assert resumed.snapshot().rounds == loop.snapshot().rounds


def test_unknown_rule_is_an_error():
    with pytest.raises(ValueError, match="rule"):
        LeaveOneOut(lambda f, w: None, lambda r: None, np.ones(3, int), eye(3), rule="strict")


@pytest.mark.parametrize("after, accepted", [(0.48, True), (0.52, False)])
def test_relative_rule_puts_a_borderline_candidate_to_a_relative_leave_one_out_vote(after, accepted):
    v = 8
    before = [0.50, 0.52, 0.50, 0.52, 0.50, 0.52, 0.50, 0.60]  # view 7: z = 0.6745 x 0.09 / 0.0255 ~ 2.4
    table = {(): {"photometric": before}, (7,): {"photometric": [after] * 7 + [0.9]}}
    make_recon, made = evidence_scripted(table)
    loop = relative_loop(make_recon, v, z_threshold=3.5, z_confirm=2.0)
    run_to_end(loop)
    assert (7,) in made  # the round without the candidate ran: it decides
    r1 = loop.snapshot().rounds[1]
    assert r1["auto_accept"] is accepted and "in [2, 3.5)" in r1["reason"] and "drop of 5%" in r1["reason"]
    assert loop.outliers == ([7] if accepted else [])
