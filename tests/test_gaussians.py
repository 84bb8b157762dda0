"""GaussianModel: initialisation, densification with Adam-state surgery, PLY I/O, visual-hull carving."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from plyfile import PlyData

from sparseags.gaussians import (
    GaussianModel,
    PlyFormatError,
    carve_visual_hull,
    knn_log_scales,
    look_at_point,
    rgb_to_sh0,
    sh0_to_rgb,
)
from sparseags.render.synthetic import ring_cameras


def _random_model(n: int, sh_degree: int, seed: int = 0) -> GaussianModel:
    gen = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2
    return GaussianModel(
        means=torch.randn(n, 3, generator=gen),
        quats=torch.randn(n, 4, generator=gen),
        log_scales=torch.randn(n, 3, generator=gen) - 3.0,
        opacity_logits=torch.randn(n, generator=gen),
        sh0=torch.randn(n, 1, 3, generator=gen),
        shN=torch.randn(n, k - 1, 3, generator=gen),
    )


def _adam_for(model: GaussianModel) -> torch.optim.Adam:
    groups = [{"params": [p], "lr": 1e-3, "name": name} for name, p in model.splats.items()]
    return torch.optim.Adam(groups, eps=1e-15)


def _adam_step(model: GaussianModel, optimizer: torch.optim.Adam) -> None:
    loss = sum((p**2).sum() for p in model.splats.values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _assert_optimizer_matches(model: GaussianModel, optimizer: torch.optim.Adam) -> None:
    for group in optimizer.param_groups:
        param = group["params"][0]
        assert param is model.splats[group["name"]]
        state = optimizer.state[param]
        assert state["exp_avg"].shape == param.shape
        assert state["exp_avg_sq"].shape == param.shape
    assert model.grad_accum.shape == (model.num_gaussians,)


# ----------------------------------------------------------------------------------------------
# initialisation
# ----------------------------------------------------------------------------------------------
def test_init_ball_matches_official_recipe():
    gen = torch.Generator().manual_seed(0)
    model = GaussianModel.init_ball(500, radius=0.3, sh_degree=3, generator=gen, center=(1.0, 0.0, 0.0))
    assert model.num_gaussians == 500
    offsets = model.means - torch.tensor([1.0, 0.0, 0.0])
    radii = offsets.norm(dim=-1)
    assert radii.max() <= 0.3 + 1e-6
    # Uniform in the ball: P(r < R/2) = 1/8, far from the 1/2 of a uniform-in-radius draw.
    assert 0.06 < (radii < 0.15).float().mean() < 0.2
    rgb = sh0_to_rgb(model.splats["sh0"][:, 0])
    assert torch.all((rgb >= 0.5) & (rgb <= 0.5 + 0.3 / 255))  # ~grey (official U/255 SH DC)
    assert torch.allclose(model.opacities, torch.full((500,), 0.1), atol=1e-6)
    assert torch.equal(model.quats, torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(500, 4))
    assert model.splats["shN"].shape == (500, 15, 3) and torch.all(model.splats["shN"] == 0)
    # Scale = sqrt(mean squared distance to the 3 nearest neighbours), checked by brute force.
    points = model.means.detach().double()
    d2 = torch.cdist(points, points) ** 2
    d2.fill_diagonal_(float("inf"))
    expected = torch.sqrt(d2.topk(3, largest=False).values.mean(-1))
    assert torch.allclose(model.scales[:, 0].double(), expected, rtol=1e-4)


def test_init_ball_is_deterministic_per_generator():
    a = GaussianModel.init_ball(50, 0.3, 1, torch.Generator().manual_seed(3))
    b = GaussianModel.init_ball(50, 0.3, 1, torch.Generator().manual_seed(3))
    c = GaussianModel.init_ball(50, 0.3, 1, torch.Generator().manual_seed(4))
    assert torch.equal(a.means, b.means)
    assert not torch.equal(a.means, c.means)


def test_knn_scales_on_a_grid():
    points = np.stack(np.meshgrid(*[np.arange(5.0) * 0.1] * 3, indexing="ij"), -1).reshape(-1, 3)
    scales = np.exp(knn_log_scales(points))
    assert np.allclose(scales[62], 0.1)  # interior point: 6 neighbours at distance 0.1


def test_colour_sh_conversion_round_trip():
    rgb = torch.tensor([[0.0, 0.5, 1.0]])
    assert torch.allclose(sh0_to_rgb(rgb_to_sh0(rgb)), rgb)
    assert torch.allclose(rgb_to_sh0(torch.tensor([0.5])), torch.tensor([0.0]))


# ----------------------------------------------------------------------------------------------
# densification
# ----------------------------------------------------------------------------------------------
def test_densification_stats_are_in_ndc_units():
    model = _random_model(3, 0)
    grad = torch.zeros(2, 3, 2)
    grad[0, 0] = torch.tensor([1.0, 0.0])  # 1 per pixel in x -> W/2 = 32 in NDC units
    grad[1, 0] = torch.tensor([0.0, 1.0])  # in y -> H/2 = 16
    grad[0, 1] = torch.tensor([5.0, 5.0])  # invisible below: must not count
    visible = torch.tensor([[True, False, True], [True, True, False]])
    model.add_densification_stats(grad, visible, width=64, height=32)
    assert torch.allclose(model.grad_accum, torch.tensor([48.0, 0.0, 0.0]))
    assert torch.equal(model.denom, torch.tensor([2.0, 1.0, 1.0]))
    assert torch.allclose(model.mean_grads(), torch.tensor([24.0, 0.0, 0.0]))


def _densify_fixture():
    """6 Gaussians: 0 small+high grad (clone), 1 large+high grad (split), 2 low grad, 3 transparent,
    4 huge (pruned), 5 never visible."""
    n = 6
    model = _random_model(n, 1)
    with torch.no_grad():
        model.splats["log_scales"][:] = math.log(0.01)
        model.splats["log_scales"][1] = torch.log(torch.tensor([0.2, 0.1, 0.05]))
        model.splats["log_scales"][4] = math.log(0.5)
        model.splats["opacity_logits"][:] = 2.0
        model.splats["opacity_logits"][3] = -6.0  # sigmoid = 0.0025 < 0.01
        model.splats["quats"][1] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    optimizer = _adam_for(model)
    _adam_step(model, optimizer)
    model.grad_accum = torch.tensor([0.05, 0.05, 0.001, 0.0, 0.0, 0.0])
    model.denom = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    return model, optimizer


def test_densify_clone_split_prune_and_adam_surgery():
    model, optimizer = _densify_fixture()
    before = {name: p.detach().clone() for name, p in model.splats.items()}
    moments = {name: optimizer.state[p]["exp_avg"].clone() for name, p in model.splats.items()}
    gen = torch.Generator().manual_seed(0)
    counts = model.densify_and_prune(
        optimizer,
        gen,
        grad_threshold=0.01,
        percent_dense=0.01,
        extent=4.0,
        min_opacity=0.01,
        max_scale=0.4,
        max_gaussians=100,
    )
    assert counts == {"n_before": 6, "n_cloned": 1, "n_split": 1, "n_pruned": 2, "n_after": 6}
    _assert_optimizer_matches(model, optimizer)
    # Survivors in order: 0, 2, 5 (kept originals), clone of 0, two children of 1.
    means = model.splats["means"].detach()
    assert torch.equal(means[0], before["means"][0]) and torch.equal(means[1], before["means"][2])
    assert torch.equal(means[2], before["means"][5]) and torch.equal(means[3], before["means"][0])
    for name in model.splats:  # kept rows keep their moments, new rows start at zero
        state = optimizer.state[model.splats[name]]
        assert torch.equal(state["exp_avg"][:3], moments[name][[0, 2, 5]])
        assert torch.all(state["exp_avg"][3:] == 0) and torch.all(state["exp_avg_sq"][3:] == 0)
    children_scales = model.scales[4:].detach()
    parent_scales = before["log_scales"][1].exp()  # ~(0.2, 0.1, 0.05) after one Adam step
    assert torch.allclose(children_scales, parent_scales.expand(2, 3) / 1.6, rtol=1e-5)
    # Children are drawn from N(parent, diag(s)^2) (identity rotation): within 4 sigma per axis.
    offsets = (means[4:] - before["means"][1]).abs()
    assert torch.all(offsets < 4 * torch.tensor([0.2, 0.1, 0.05]))
    assert torch.all(model.opacities > 0.01)  # the transparent one is gone
    assert torch.all(model.grad_accum == 0) and torch.all(model.denom == 0)
    _adam_step(model, optimizer)  # the optimizer still works on the new tensors


def test_densify_respects_max_gaussians():
    model, optimizer = _densify_fixture()
    model.grad_accum = torch.tensor([0.05, 0.08, 0.001, 0.0, 0.0, 0.0])  # split has the larger gradient
    counts = model.densify_and_prune(
        optimizer, torch.Generator().manual_seed(0), 0.01, 0.01, 4.0, 0.01, 0.4, max_gaussians=7
    )
    assert counts["n_cloned"] == 0 and counts["n_split"] == 1
    _assert_optimizer_matches(model, optimizer)


def test_prune_removes_transparent_and_large():
    model, optimizer = _densify_fixture()
    removed = model.prune(optimizer, min_opacity=0.01, max_scale=0.1)
    assert removed == 3  # transparent 3, large 1 (0.2 > 0.1), huge 4
    assert model.num_gaussians == 3
    _assert_optimizer_matches(model, optimizer)


# ----------------------------------------------------------------------------------------------
# PLY
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sh_degree", [0, 1, 3])
def test_ply_round_trip_standard_layout(tmp_path, sh_degree):
    model = _random_model(17, sh_degree)
    path = model.save_ply(tmp_path / "sub" / "model.ply")
    assert not list(path.parent.glob("*.tmp"))
    k_rest = (sh_degree + 1) ** 2 - 1
    names = [p.name for p in PlyData.read(str(path))["vertex"].properties]
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    expected += [f"f_rest_{i}" for i in range(3 * k_rest)]
    expected += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert names == expected
    vertex = PlyData.read(str(path))["vertex"]
    assert np.allclose(vertex["opacity"], model.splats["opacity_logits"].detach().numpy())  # logits, not sigmoid
    assert np.allclose(vertex["scale_1"], model.splats["log_scales"][:, 1].detach().numpy())  # logs
    if k_rest:
        # Channel-major: f_rest_0 .. f_rest_{K-2} are the red channel of coefficients 1 .. K-1.
        assert np.allclose(vertex["f_rest_1"], model.splats["shN"][:, 1, 0].detach().numpy())
        assert np.allclose(vertex[f"f_rest_{k_rest}"], model.splats["shN"][:, 0, 1].detach().numpy())
    loaded = GaussianModel.load_ply(path)
    assert loaded.sh_degree == sh_degree
    assert loaded.active_sh_degree == sh_degree  # a saved model renders with every degree it stores
    for name, param in model.splats.items():
        assert torch.equal(loaded.splats[name], param.detach()), name


def test_ply_errors_name_the_file(tmp_path):
    with pytest.raises(PlyFormatError, match="missing.ply: file not found"):
        GaussianModel.load_ply(tmp_path / "missing.ply")
    bad = tmp_path / "bad.ply"
    bad.write_text("this is not a ply")
    with pytest.raises(PlyFormatError, match="bad.ply"):
        GaussianModel.load_ply(bad)


# ----------------------------------------------------------------------------------------------
# visual hull
# ----------------------------------------------------------------------------------------------
def _sphere_masks(w2c: torch.Tensor, K: torch.Tensor, size: int, center: np.ndarray, radius: float) -> np.ndarray:
    """Exact silhouettes [V, size, size] of a sphere: a pixel ray passing within `radius` of the centre."""
    masks = []
    jj, ii = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    for view, k in zip(w2c.double().numpy(), K.double().numpy()):
        rays_cam = np.stack([(jj - k[0, 2]) / k[0, 0], (ii - k[1, 2]) / k[1, 1], np.ones_like(jj)], -1)
        rays = rays_cam @ view[:3, :3]  # world directions (R^T d)
        rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
        cam_center = -view[:3, :3].T @ view[:3, 3]
        to_center = center - cam_center
        along = rays @ to_center
        dist_sq = (to_center**2).sum() - along**2
        masks.append((dist_sq < radius**2).astype(np.float32))
    return np.stack(masks)


def test_look_at_point_of_ring_cameras_is_origin():
    w2c, _ = ring_cameras(6, 32, 32)
    assert torch.allclose(look_at_point(w2c), torch.zeros(3, dtype=torch.float64), atol=1e-5)


def test_visual_hull_points_lie_inside_every_mask():
    size, center, radius = 48, np.array([0.1, -0.05, 0.0]), 0.3
    w2c, K = ring_cameras(5, size, size, distance=2.0)
    masks = _sphere_masks(w2c, K, size, center, radius)
    images = np.zeros((5, size, size, 3), np.float32)
    images[..., 0] = 0.9  # red object
    gen = torch.Generator().manual_seed(0)
    model = GaussianModel.init_visual_hull(
        masks, images, w2c, K, num_pts=400, sh_degree=1, generator=gen, grid=32, max_missed_views=0
    )
    assert model.num_gaussians == 400
    points = model.means.detach().double()
    # The visual hull of a sphere contains it and is not much larger (5 views, 1.5 voxels of slack).
    assert (points - torch.as_tensor(center)).norm(dim=-1).max() < radius * 1.6
    uv_list = []
    for v in range(5):
        cam = points @ w2c[v, :3, :3].double().T + w2c[v, :3, 3].double()
        uv = cam @ K[v].double().T
        uv = (uv[:, :2] / uv[:, 2:]).floor().long().clamp(0, size - 1)
        uv_list.append(masks[v][uv[:, 1].numpy(), uv[:, 0].numpy()])
    inside_fraction = np.mean(np.stack(uv_list) > 0.5)
    assert inside_fraction > 0.97  # jitter may push a few points across the silhouette by < 1 voxel
    rgb = sh0_to_rgb(model.splats["sh0"][:, 0]).detach()
    assert torch.allclose(rgb, torch.tensor([0.9, 0.0, 0.0]).expand(400, 3), atol=1e-5)


def test_visual_hull_tolerates_one_bad_view_and_falls_back_to_ball():
    size, center, radius = 32, np.zeros(3), 0.3
    w2c, K = ring_cameras(5, size, size, distance=2.0)
    masks = _sphere_masks(w2c, K, size, center, radius)
    masks[2] = 0.0  # one view whose mask (or pose) disagrees with all others
    strict = carve_visual_hull(masks, w2c, K, grid=24, max_missed_views=0)
    robust = carve_visual_hull(masks, w2c, K, grid=24)  # default: 1 miss allowed with >= 4 views
    assert len(strict.points) == 0 and len(robust.points) > 50
    assert robust.min_votes == 4 and robust.coverage > 0.9
    gen = torch.Generator().manual_seed(0)
    empty = np.zeros_like(masks)
    model = GaussianModel.init_visual_hull(
        empty, np.zeros((5, size, size, 3), np.float32), w2c, K, 100, 0, gen, grid=16, fallback_radius=0.25
    )
    assert model.num_gaussians == 100
    assert model.means.norm(dim=-1).max() <= 0.25 + 1e-5  # ball around the look-at point (origin)


def test_split_samples_follow_the_rotated_covariance():
    """Children are drawn from N(mean, R diag(s)² Rᵀ): a 90° turn about z swaps the x and y spreads."""
    n = 400
    half_turn = math.sqrt(0.5)
    model = GaussianModel(
        means=torch.zeros(n, 3),
        quats=torch.tensor([half_turn, 0.0, 0.0, half_turn]).expand(n, 4),  # 90° about +z: x -> y
        log_scales=torch.log(torch.tensor([0.2, 0.05, 0.01])).expand(n, 3),
        opacity_logits=torch.full((n,), 2.0),
        sh0=torch.zeros(n, 1, 3),
        shN=torch.zeros(n, 0, 3),
    )
    model.grad_accum = torch.ones(n)
    model.denom = torch.ones(n)
    counts = model.densify_and_prune(None, torch.Generator().manual_seed(0), 0.01, 0.01, 4.0, 0.01, 1.0, 10_000)
    assert counts["n_split"] == n and model.num_gaussians == 2 * n
    std = model.means.detach().std(dim=0)
    assert torch.allclose(std, torch.tensor([0.05, 0.2, 0.01]), rtol=0.15), std


def test_detached_is_a_frozen_copy_with_the_render_arguments():
    model = _random_model(40, sh_degree=2)
    model.set_active_sh_degree(1)
    frozen = model.detached()
    assert len(frozen) == 40 and frozen.sh_degree == 1
    assert all(not t.requires_grad for t in frozen.render_args())
    for got, want in zip(
        frozen.render_args(), (model.means, model.splats["quats"], model.scales, model.opacities, model.sh)
    ):
        assert torch.equal(got, want)
    assert torch.equal(frozen.unit_quats, model.quats)
    assert torch.equal(frozen.colors, sh0_to_rgb(model.splats["sh0"][:, 0]).clamp(0, 1))
    arrays = frozen.arrays()
    assert sorted(arrays) == ["means", "opacities", "quats", "scales", "sh", "sh_degree"]
    assert torch.equal(arrays["quats"], model.quats)
    # A later in-place update of the parameters (an optimiser step) does not reach the copy.
    before = frozen.means.clone()
    with torch.no_grad():
        model.splats["means"].add_(1.0)
        model.splats["quats"].mul_(2.0)
    assert torch.equal(frozen.means, before) and not torch.equal(frozen.quats, model.splats["quats"])
    keep = torch.tensor([0, 5, 7])
    sub = frozen.subset(keep)
    assert len(sub) == 3 and torch.equal(sub.sh, frozen.sh[keep]) and sub.sh_degree == 1
