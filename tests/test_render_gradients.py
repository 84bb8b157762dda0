"""Gradients of the cpu backend: finite differences (float64) and camera-pose updates."""

from __future__ import annotations

import pytest
import torch

from sparseags.cameras import se3_exp
from sparseags.render import render_gaussians
from sparseags.render.synthetic import random_object_scene, ring_cameras

WIDTH, HEIGHT = 24, 20


def _smooth_scene(dtype=torch.float64):
    """Large, faint Gaussians well inside the image: alpha stays far from the 0.99 clamp and the
    transmittance cutoff, so the loss is smooth except for tiny ellipse-boundary jumps that a small
    finite-difference step does not cross."""
    scene = random_object_scene(
        12, sh_degree=2, radius=0.5, scale_range=(0.15, 0.35), opacity_range=(0.15, 0.35), seed=11, dtype=dtype
    )
    viewmats, Ks = ring_cameras(2, WIDTH, HEIGHT, distance=3.0, elevation_deg=25.0, dtype=dtype)
    return scene, viewmats, Ks


def _weights(dtype):
    gen = torch.Generator().manual_seed(3)
    return [torch.rand(2, HEIGHT, WIDTH, k, generator=gen, dtype=dtype) for k in (3, 1, 1)]


def _loss(scene_tensors, viewmats, Ks, weights, backend="cpu"):
    out = render_gaussians(
        *scene_tensors,
        viewmats,
        Ks,
        WIDTH,
        HEIGHT,
        background=torch.tensor([0.2, 0.4, 0.6], dtype=viewmats.dtype),
        backend=backend,
    )
    return sum((x * w).sum() for x, w in zip((out.rgb, out.alpha, out.depth), weights))


def test_viewmat_gradient_matches_central_differences():
    scene, viewmats, Ks = _smooth_scene()
    weights = _weights(torch.float64)
    viewmats = viewmats.clone().requires_grad_(True)
    _loss(scene.tensors(), viewmats, Ks, weights).backward()
    analytic = viewmats.grad[:, :3, :].reshape(-1)
    eps = 1e-6
    numeric = torch.zeros_like(analytic)
    for k in range(analytic.numel()):
        delta = torch.zeros(2, 3, 4, dtype=torch.float64).view(-1)
        delta[k] = eps
        bump = torch.nn.functional.pad(delta.view(2, 3, 4), (0, 0, 0, 1))
        with torch.no_grad():
            plus = _loss(scene.tensors(), viewmats + bump, Ks, weights)
            minus = _loss(scene.tensors(), viewmats - bump, Ks, weights)
        numeric[k] = (plus - minus) / (2 * eps)
    assert float((analytic - numeric).norm() / numeric.norm()) < 1e-4
    assert (viewmats.grad[:, 3, :] == 0).all()


@pytest.mark.parametrize("index", range(5))
def test_gaussian_gradients_match_central_differences(index):
    """means, quats, scales, opacities, sh: a few coordinates each against central differences."""
    scene, viewmats, Ks = _smooth_scene()
    weights = _weights(torch.float64)
    tensors = [t.clone().requires_grad_(True) for t in scene.tensors()]
    _loss(tensors, viewmats, Ks, weights).backward()
    analytic = tensors[index].grad.reshape(-1)
    gen = torch.Generator().manual_seed(index)
    coords = torch.randperm(analytic.numel(), generator=gen)[:8]
    eps = 1e-6
    for k in coords.tolist():
        bumped = []
        for sign in (1.0, -1.0):
            values = [t.detach().clone() for t in tensors]
            values[index].view(-1)[k] += sign * eps
            with torch.no_grad():
                bumped.append(_loss(values, viewmats, Ks, weights))
        numeric = float((bumped[0] - bumped[1]) / (2 * eps))
        assert analytic[k].item() == pytest.approx(numeric, rel=1e-4, abs=1e-6)


def test_pose_update_gets_gradient_matching_reference():
    """w2c = w2c_init @ se3_exp(xi): xi gets a non-zero gradient equal to the reference's (float32)."""
    scene = random_object_scene(120, sh_degree=3, seed=2, scale_range=(0.03, 0.15))
    viewmats, Ks = ring_cameras(2, 32, 32)
    target = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    grads = {}
    for backend in ("cpu", "reference"):
        xi = torch.zeros(2, 6, requires_grad=True)
        out = render_gaussians(*scene.tensors(), viewmats @ se3_exp(xi), Ks, 32, 32, backend=backend)
        ((out.rgb - target) ** 2).mean().backward()
        grads[backend] = xi.grad
    assert grads["cpu"].abs().min() > 0
    assert float((grads["cpu"] - grads["reference"]).norm() / grads["reference"].norm()) < 1e-3
    # translation along +z (towards the scene) must change the loss: both halves of xi matter
    assert grads["cpu"][:, :3].norm() > 0 and grads["cpu"][:, 3:].norm() > 0


def test_pose_gradient_descends():
    """A small step against the xi gradient lowers the photometric loss (sign check)."""
    scene = random_object_scene(150, sh_degree=0, seed=8, scale_range=(0.05, 0.2))
    viewmats, Ks = ring_cameras(1, 32, 32)
    target = render_gaussians(*scene.tensors(), viewmats, Ks, 32, 32, backend="cpu").rgb
    start = viewmats @ se3_exp(torch.tensor([[0.03, -0.02, 0.0, 0.0, 0.02, 0.01]]))
    xi = torch.zeros(1, 6, requires_grad=True)

    def loss_at(x):
        return (
            (render_gaussians(*scene.tensors(), start @ se3_exp(x), Ks, 32, 32, backend="cpu").rgb - target) ** 2
        ).mean()

    loss0 = loss_at(xi)
    loss0.backward()
    with torch.no_grad():
        loss1 = loss_at(-1e-3 * xi.grad / xi.grad.norm())
    assert loss1 < loss0
