"""gsplat (CUDA) backend parity with the cpu backend. Skipped without CUDA.

gsplat composites every pixel of a Gaussian's tile-aligned bounding box whose alpha reaches 1/255,
while our backends stop at the 3σ ellipse (alpha ≤ o·e^-4.5 ≈ 0.011 there) and clamp alpha at 0.99
instead of 0.999; images therefore agree to ~1e-2 at a few pixels and ~1e-3 on average, and
gradients agree in direction rather than to 1e-3.
"""

from __future__ import annotations

import pytest
import torch

from sparseags.render import render_gaussians, resolve_backend
from sparseags.render.synthetic import random_object_scene, ring_cameras

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat backend needs CUDA")]


def _render(backend: str, device: str):
    scene = random_object_scene(2000, sh_degree=3, seed=0, device=device)
    viewmats, Ks = ring_cameras(2, 96, 80, device=device)
    leaves = [t.clone().requires_grad_(True) for t in [*scene.tensors(), viewmats]]
    out = render_gaussians(
        *leaves[:5], leaves[5], Ks, 96, 80, background=torch.tensor([1.0, 1.0, 1.0], device=device), backend=backend
    )
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(x.shape, generator=gen).to(device) for x in (out.rgb, out.alpha, out.depth)]
    sum((x * w).sum() for x, w in zip((out.rgb, out.alpha, out.depth), weights)).backward()
    return out, [leaf.grad.cpu() for leaf in leaves] + [out.means2d.grad.cpu()]


def test_auto_picks_gsplat_on_cuda():
    assert resolve_backend("auto", torch.device("cuda")) == "gsplat"


def test_gsplat_matches_cpu_backend():
    ours, our_grads = _render("cpu", "cpu")
    theirs, their_grads = _render("gsplat", "cuda")
    for name in ("rgb", "alpha", "depth"):
        diff = (getattr(theirs, name).cpu() - getattr(ours, name)).abs()
        scale = 3.5 if name == "depth" else 1.0  # depth is Σ w z with z ≈ 2.75
        assert diff.mean() < 3e-3 * scale and diff.max() < 6e-2 * scale, name
    assert (theirs.means2d.detach().cpu() - ours.means2d.detach())[ours.visible].abs().max() < 1e-3
    agree = (theirs.visible.cpu() == ours.visible).float().mean()
    assert agree > 0.98
    for g_theirs, g_ours in zip(their_grads, our_grads):
        cosine = torch.nn.functional.cosine_similarity(g_theirs.reshape(1, -1), g_ours.reshape(1, -1)).item()
        assert cosine > 0.97
