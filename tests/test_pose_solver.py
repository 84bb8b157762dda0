"""The shared pose solver: object-centred parametrisation, bounded focal, anti-aliased levels, LM recovery."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparseags.cameras import camera_centers, rotation_angle_deg, so3_exp
from sparseags.pose_solver import (
    Level,
    PoseSolver,
    SolverSettings,
    area_downsample,
    bounded_log_focal,
    object_centred_w2c,
    pose_from_params,
    render_antialiased,
)
from sparseags.synth import look_at_w2c


def _cameras(n: int = 4, distance: float = 2.5) -> torch.Tensor:
    angles = torch.linspace(0, 2 * math.pi, n + 1)[:-1]
    centres = torch.stack([distance * torch.sin(angles), 0.3 * torch.ones(n), distance * torch.cos(angles)], -1)
    return torch.as_tensor(np.stack([look_at_w2c(c.numpy(), np.zeros(3)) for c in centres])).float()


def test_object_centred_identity_and_orbit():
    w2c0 = _cameras()
    centre = torch.tensor([0.05, -0.02, 0.03])
    zero = torch.zeros(4, 3)
    assert torch.allclose(object_centred_w2c(w2c0, zero, zero, centre), w2c0, atol=1e-6)
    # A pure omega keeps the distance to the centre and the centre's image position: an orbit.
    omega = torch.tensor([[0.0, 0.2, 0.0], [0.1, 0.0, 0.0], [0.05, -0.05, 0.0], [0.0, 0.0, 0.3]])
    moved = object_centred_w2c(w2c0, omega, zero, centre)
    before = (w2c0[:, :3, :3] @ centre[:, None])[..., 0] + w2c0[:, :3, 3]
    after = (moved[:, :3, :3] @ centre[:, None])[..., 0] + moved[:, :3, 3]
    assert torch.allclose(before, after, atol=1e-5)
    angle = rotation_angle_deg(moved[:, :3, :3], w2c0[:, :3, :3])
    assert torch.allclose(angle, torch.rad2deg(omega.norm(dim=-1)), atol=1e-3)
    # The camera centre moved on the sphere about `centre` by that angle.
    radius0 = (camera_centers(w2c0) - centre).norm(dim=-1)
    radius1 = (camera_centers(moved) - centre).norm(dim=-1)
    assert torch.allclose(radius0, radius1, atol=1e-5)


def test_object_centred_rho_is_relative_shift_in_camera_frame():
    w2c0 = _cameras(3)
    centre = torch.zeros(3)
    rho = torch.tensor([[0.1, 0.0, 0.0], [0.0, -0.05, 0.0], [0.0, 0.0, 0.2]])
    moved = object_centred_w2c(w2c0, torch.zeros(3, 3), rho, centre)
    distance = w2c0[:, :3, 3].norm(dim=-1, keepdim=True)
    assert torch.allclose(moved[:, :3, 3] - w2c0[:, :3, 3], distance * rho, atol=1e-6)
    assert torch.allclose(moved[:, :3, :3], w2c0[:, :3, :3])


def test_object_centred_matches_world_rotation_about_centre():
    """exp(omega) R0 with the centre fixed equals turning the world about the centre by R0^T exp(omega) R0."""
    w2c0 = _cameras(2)
    centre = torch.tensor([0.1, 0.2, -0.1])
    omega = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.4, 0.0]])
    moved = object_centred_w2c(w2c0, omega, torch.zeros(2, 3), centre)
    R0 = w2c0[:, :3, :3]
    world_turn = R0.transpose(1, 2) @ so3_exp(omega) @ R0  # [2, 3, 3]
    point = torch.tensor([0.3, -0.1, 0.2])
    expected = (R0 @ (world_turn @ (point - centre)[:, None]))[..., 0] + (R0 @ centre[:, None])[..., 0] + w2c0[:, :3, 3]
    got = (moved[:, :3, :3] @ point[:, None])[..., 0] + moved[:, :3, 3]
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("bound", [0.1, 0.25, 1.0])
def test_focal_scale_is_bounded_with_unit_slope(bound):
    u = torch.linspace(-50, 50, 1001, requires_grad=True)
    log_scale = bounded_log_focal(u, bound)
    assert float(log_scale.abs().max()) <= bound + 1e-6
    (grad,) = torch.autograd.grad(log_scale.sum(), u)
    assert abs(float(grad[500]) - 1.0) < 1e-6  # slope 1 at 0: small corrections are not squashed
    K = torch.eye(3).expand(3, 3, 3).clone() * 100
    _, scaled = pose_from_params(
        _cameras(3), K, torch.tensor([[0, 0, 0, 0, 0, 0, 1e3]] * 3).float(), torch.zeros(3), bound
    )
    assert torch.allclose(scaled[:, 0, 0], torch.full((3,), 100 * math.exp(bound)), rtol=1e-5)


def test_area_downsample_averages_blocks():
    image = torch.arange(16.0).reshape(1, 4, 4, 1)
    out = area_downsample(image, 2)
    assert out.shape == (1, 2, 2, 1)
    assert torch.allclose(out[0, :, :, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))


def _blob_scene(native: int = 64):
    """Textured synthetic Gaussians (an asymmetric cluster) and a render_fn on the CPU backend."""
    from sparseags.render import render_gaussians

    generator = torch.Generator().manual_seed(0)
    n = 400
    means = (torch.rand(n, 3, generator=generator) - 0.5) * torch.tensor([0.9, 0.6, 0.5])
    means[:60] += torch.tensor([0.35, 0.25, 0.0])  # a lump that breaks the symmetry
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=generator), dim=-1)
    scales = torch.full((n, 3), 0.06)
    opacities = torch.full((n,), 0.9)
    colours = torch.rand(n, 3, generator=generator)
    sh = ((colours - 0.5) / 0.28209479177387814)[:, None, :]

    def render(w2c, K, width, height):
        with torch.no_grad():
            out = render_gaussians(
                means,
                quats,
                scales,
                opacities,
                sh,
                w2c,
                K,
                width,
                height,
                sh_degree=0,
                background=torch.ones(3),
                backend="cpu",
            )
        return out.rgb, out.alpha[..., 0]

    w2c_gt = _cameras(4, 2.5)
    K = torch.tensor([[1.6 * native, 0, native / 2], [0, 1.6 * native, native / 2], [0, 0, 1]]).expand(4, 3, 3).clone()
    rgb, alpha = render(w2c_gt, K, native, native)
    return render, rgb, alpha, w2c_gt, K


def test_solver_recovers_orbit_and_focal_on_synthetic_scene():
    render, targets, masks, w2c_gt, K = _blob_scene()
    omega = torch.tensor([[0.0, 0.12, 0.0], [0.1, 0.0, 0.0], [-0.08, 0.08, 0.0], [0.0, -0.15, 0.0]])
    w2c0 = object_centred_w2c(w2c_gt, omega, torch.tensor([[0.03, 0.0, 0.0]] * 4), torch.zeros(3))
    K0 = K.clone()
    K0[:, 0, 0] *= 1.08
    K0[:, 1, 1] *= 1.08
    settings = SolverSettings(levels=(Level(32, 1.0, 10), Level(64, 0.0, 8)), focal_min_size=64)
    solver = PoseSolver(render, targets, masks, w2c0, K0, torch.zeros(3), settings)
    start = rotation_angle_deg(w2c0[:, :3, :3], w2c_gt[:, :3, :3])
    solver.run()
    w2c, K_end = solver.current()
    end = rotation_angle_deg(w2c[:, :3, :3], w2c_gt[:, :3, :3])
    assert float(start.min()) > 4.0
    assert float(end.max()) < 1.0, end
    assert torch.allclose(K_end[:, 0, 0], K[:, 0, 0], rtol=0.02)


def test_solver_never_raises_cost_and_state_roundtrip():
    render, targets, masks, w2c_gt, K = _blob_scene()
    w2c0 = object_centred_w2c(w2c_gt, torch.full((4, 3), 0.05), torch.zeros(4, 3), torch.zeros(3))
    settings = SolverSettings(levels=(Level(32, 1.0, 3), Level(64, 0.0, 3)), moment_steps=1)
    solver = PoseSolver(render, targets, masks, w2c0, K, torch.zeros(3), settings)
    solver.step()  # the silhouette-moment alignment
    assert solver.moment_steps_done == 1
    solver.step()
    cost_after_one = solver.cost.clone()
    solver.step()
    assert torch.all(solver.cost <= cost_after_one + 1e-9)  # a step is taken only when it lowers the cost
    state = solver.state_dict()
    twin = PoseSolver(render, targets, masks, w2c0, K, torch.zeros(3), settings)
    twin.load_state_dict(state)
    solver.run()
    twin.run()
    assert torch.equal(solver.params, twin.params)
    # the cost where solving began survives the round trip (the search's summary reports it)
    np.testing.assert_array_equal(solver.snapshot()["initial_cost"], twin.snapshot()["initial_cost"])
    snap = solver.snapshot()
    assert snap["trajectory"].shape[1:] == (4, 7)
    assert snap["damping"].shape == (4,) and snap["done"]


def test_antialiased_render_is_the_block_average():
    render, _, _, w2c, K = _blob_scene(64)
    low = render_antialiased(render, w2c, K, 64, 16)
    rgb, alpha = render(w2c, K, 64, 64)
    expected = torch.cat([rgb, alpha[..., None]], -1).reshape(4, 16, 4, 16, 4, 4).mean(dim=(2, 4))
    assert torch.allclose(low, expected, atol=1e-6)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_object_centred_pose_gradient_through_antialiased_render_matches_oracle(backend):
    """d(loss)/d(omega, rho) through the area-averaged (anti-aliased) render: the CPU backend against the
    pure-torch reference renderer (the oracle), and both against central differences (float64)."""
    from sparseags.render import render_gaussians
    from sparseags.render.synthetic import random_object_scene, ring_cameras

    scene = random_object_scene(
        12, sh_degree=1, radius=0.5, scale_range=(0.15, 0.35), opacity_range=(0.15, 0.35), seed=5, dtype=torch.float64
    )
    viewmats, Ks = ring_cameras(2, 24, 24, distance=3.0, elevation_deg=20.0, dtype=torch.float64)
    weights = torch.rand(2, 12, 12, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss(params: torch.Tensor, which: str) -> torch.Tensor:
        w2c = object_centred_w2c(viewmats, params[:, :3], params[:, 3:], torch.zeros(3, dtype=torch.float64))

        def render(w, K, width, height):
            out = render_gaussians(
                *scene.tensors(), w, K, width, height, background=torch.ones(3, dtype=torch.float64), backend=which
            )
            return out.rgb, out.alpha[..., 0]

        return (render_antialiased(render, w2c, Ks, 24, 12) * weights).sum()

    params = torch.tensor(
        [[0.02, -0.01, 0.03, 0.01, 0.0, -0.02], [0.0, 0.02, 0.0, -0.01, 0.02, 0.01]], dtype=torch.float64
    )
    ours = params.clone().requires_grad_(True)
    loss(ours, backend).backward()
    oracle = params.clone().requires_grad_(True)
    loss(oracle, "reference").backward()
    assert torch.allclose(ours.grad, oracle.grad, rtol=1e-5, atol=1e-8)
    numeric = torch.zeros_like(params)
    eps = 1e-6
    for index in np.ndindex(*params.shape):
        bump = torch.zeros_like(params)
        bump[index] = eps
        with torch.no_grad():
            numeric[index] = (loss(params + bump, backend) - loss(params - bump, backend)) / (2 * eps)
    assert float((ours.grad - numeric).norm() / numeric.norm()) < 1e-4
