"""Renderer semantics and cpu-vs-reference agreement (sparseags/render)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from sparseags.render import RenderInputError, render_gaussians, resolve_backend
from sparseags.render.sh import SH_C0, SH_C1
from sparseags.render.synthetic import random_object_scene, ring_cameras

BACKENDS = ("cpu", "reference")


def _identity_camera(width: int = 32, height: int = 32, focal: float = 40.0, dtype=torch.float32):
    viewmats = torch.eye(4, dtype=dtype)[None]
    Ks = torch.tensor([[[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]]], dtype=dtype)
    return viewmats, Ks


def _single_gaussian(position, scale=0.05, opacity=0.9, dc=(0.0, 0.0, 0.0), dtype=torch.float32):
    sh = torch.zeros(1, 1, 3, dtype=dtype)
    sh[0, 0] = torch.tensor(dc, dtype=dtype)
    return (
        torch.tensor([position], dtype=dtype),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype),
        torch.full((1, 3), scale, dtype=dtype),
        torch.tensor([opacity], dtype=dtype),
        sh,
    )


def _render_with_grads(scene_tensors, viewmats, Ks, width, height, backend, background=None, seed=0):
    """Render, back-propagate a fixed random weighting of rgb/alpha/depth, return (output, grads)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in [*scene_tensors, viewmats]]
    out = render_gaussians(*leaves[:5], leaves[5], Ks, width, height, background=background, backend=backend)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((x * torch.randn(x.shape, generator=gen, dtype=x.dtype)).sum() for x in (out.rgb, out.alpha, out.depth))
    loss.backward()
    return out, [leaf.grad for leaf in leaves] + [out.means2d.grad]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("backend", BACKENDS)
def test_projection_orientation_and_pixel_centres(backend):
    """+x world is right, +y world is down (OpenCV); pixel (i, j) is centred at (j + .5, i + .5)."""
    viewmats, Ks = _identity_camera()
    means, quats, scales, opac, sh = _single_gaussian((0.26, -0.13, 2.0), scale=0.02)
    out = render_gaussians(means, quats, scales, opac, sh, viewmats, Ks, 32, 32, backend=backend)
    u, v = out.means2d[0, 0].tolist()
    assert u == pytest.approx(40.0 * 0.26 / 2.0 + 16.0) and v == pytest.approx(40.0 * -0.13 / 2.0 + 16.0)
    peak = int(torch.argmax(out.alpha[0, :, :, 0]))
    assert (peak // 32, peak % 32) == (int(v), int(u))  # row from y, column from x
    assert out.visible.tolist() == [[True]] and out.radii.dtype == torch.int32


@pytest.mark.parametrize("backend", BACKENDS)
def test_dc_colour_alpha_and_depth(backend):
    """colour = C0·dc + 0.5; depth / alpha = view-space z; a Gaussian centred on a pixel has alpha = o."""
    viewmats, Ks = _identity_camera(33, 33)
    means, quats, scales, opac, sh = _single_gaussian((0.0, 0.0, 3.0), scale=0.1, opacity=0.6, dc=(1.0, -0.5, 0.0))
    out = render_gaussians(means, quats, scales, opac, sh, viewmats, Ks, 33, 33, backend=backend)
    centre = out.rgb[0, 16, 16]
    expected = torch.tensor([SH_C0 + 0.5, -0.5 * SH_C0 + 0.5, 0.5]) * 0.6
    assert torch.allclose(centre, expected, atol=1e-5)
    assert out.alpha[0, 16, 16, 0].item() == pytest.approx(0.6, abs=1e-5)
    covered = out.alpha[0, ..., 0] > 0
    assert torch.allclose(
        out.depth[0, ..., 0][covered] / out.alpha[0, ..., 0][covered], torch.full((int(covered.sum()),), 3.0), atol=1e-4
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_sigma_ellipse_and_min_alpha(backend):
    """Support is the 3σ ellipse (½ d²/σ² ≤ 4.5) and fragments under 1/255 are skipped."""
    viewmats, Ks = _identity_camera(64, 64, focal=100.0)
    means, quats, scales, opac, sh = _single_gaussian((0.0, 0.0, 5.0), scale=0.2, opacity=1.0)
    out = render_gaussians(means, quats, scales, opac, sh, viewmats, Ks, 64, 64, backend=backend)
    sigma_px = math.sqrt((100.0 * 0.2 / 5.0) ** 2 + 0.3)
    jj, ii = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="xy")
    dist2 = (jj - 32.0) ** 2 + (ii - 32.0) ** 2
    alpha = out.alpha[0, ..., 0]
    assert (alpha[dist2 > 9.0 * sigma_px**2 * 1.001] == 0).all()
    inside = dist2 < 9.0 * sigma_px**2 * 0.999
    assert (alpha[inside] >= math.exp(-4.5) * 0.999).all()  # > 1/255, so nothing inside is skipped
    faint = render_gaussians(means, quats, scales, torch.tensor([0.9 / 255]), sh, viewmats, Ks, 64, 64, backend=backend)
    assert faint.alpha.abs().max() == 0 and faint.visible.all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_front_to_back_order_and_transmittance_cutoff(backend):
    """A near opaque stack hides what is behind it; the pixel stops once T would drop below 1e-4."""
    viewmats, Ks = _identity_camera(17, 17, focal=20.0)  # pixel (8, 8) is centred on the axis
    num = 12
    z = torch.linspace(2.0, 3.0, num)
    means = torch.stack([torch.zeros(num), torch.zeros(num), z], dim=-1).flip(0)  # stored back to front
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(num, 1)
    scales = torch.full((num, 3), 0.3)
    opac = torch.full((num,), 0.95)
    sh = torch.zeros(num, 1, 3)
    sh[:, 0, 0] = torch.where(z.flip(0) < 2.5, 1.5, -1.5)  # front half red, back half not
    out = render_gaussians(means, quats, scales, opac, sh, viewmats, Ks, 17, 17, backend=backend)
    # T = 0.05, 0.0025, 1.25e-4 after 1..3 fragments; the 4th would give 6e-6 < 1e-4: not composited.
    expected_alpha = 1.0 - 0.05**3
    assert out.alpha[0, 8, 8, 0].item() == pytest.approx(expected_alpha, abs=1e-6)
    assert out.rgb[0, 8, 8, 0].item() == pytest.approx(expected_alpha * (SH_C0 * 1.5 + 0.5), abs=1e-5)
    assert out.rgb[0, 8, 8, 1].item() == pytest.approx(expected_alpha * 0.5, abs=1e-5)
    expected_depth = float((0.95 * 0.05 ** torch.arange(3) * z[:3]).sum())
    assert out.depth[0, 8, 8, 0].item() == pytest.approx(expected_depth, abs=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_background_and_culling(backend):
    """rgb = Σ c w + T·bg (per camera bg); Gaussians behind or at z < 0.01 are culled."""
    scene = random_object_scene(60, sh_degree=1, seed=3)
    viewmats, Ks = ring_cameras(2, 24, 24)
    args = (*scene.tensors(), viewmats, Ks, 24, 24)
    black = render_gaussians(*args, backend=backend)
    bg = torch.tensor([[0.2, 0.5, 1.0], [1.0, 0.0, 0.3]])
    coloured = render_gaussians(*args, background=bg, backend=backend)
    assert torch.allclose(coloured.rgb - black.rgb, (1 - black.alpha) * bg[:, None, None, :], atol=1e-5)
    assert black.alpha.max() > 0.5

    viewmats1, Ks1 = _identity_camera()
    for z in (-2.0, 0.005):
        gauss = _single_gaussian((0.0, 0.0, z), scale=0.5)
        out = render_gaussians(
            *gauss, viewmats1, Ks1, 32, 32, background=torch.tensor([0.1, 0.2, 0.3]), backend=backend
        )
        assert not out.visible.any() and (out.radii == 0).all()
        assert torch.allclose(out.rgb, torch.tensor([0.1, 0.2, 0.3]).expand(1, 32, 32, 3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_scene(backend):
    viewmats, Ks = ring_cameras(2, 16, 8)
    means = torch.zeros(0, 3, requires_grad=True)
    out = render_gaussians(
        means,
        torch.zeros(0, 4),
        torch.zeros(0, 3),
        torch.zeros(0),
        torch.zeros(0, 4, 3),
        viewmats,
        Ks,
        16,
        8,
        background=torch.ones(3),
        backend=backend,
    )
    assert out.rgb.shape == (2, 8, 16, 3) and out.means2d.shape == (2, 0, 2) and out.radii.shape == (2, 0)
    assert (out.rgb == 1).all() and (out.alpha == 0).all() and (out.depth == 0).all()
    if out.rgb.requires_grad:  # the reference has no graph at all when nothing is visible
        out.rgb.sum().backward()
        assert means.grad.shape == (0, 3)


@pytest.mark.parametrize("seed", [0, 1])
def test_cpu_matches_reference(seed):
    """Images within 1e-4, gradients of every input (and means2d) within 1e-3 norm-relative."""
    scene = random_object_scene(150, sh_degree=3, seed=seed, scale_range=(0.02, 0.15))
    viewmats, Ks = ring_cameras(2, 32, 28, elevation_deg=30.0)
    background = torch.tensor([0.3, 0.6, 0.9])
    ref, ref_grads = _render_with_grads(scene.tensors(), viewmats, Ks, 32, 28, "reference", background, seed)
    cpu, cpu_grads = _render_with_grads(scene.tensors(), viewmats, Ks, 32, 28, "cpu", background, seed)
    for name in ("rgb", "alpha", "depth"):
        assert (getattr(cpu, name) - getattr(ref, name)).abs().max() < 1e-4, name
    assert torch.equal(cpu.visible, ref.visible)
    assert (cpu.radii - ref.radii).abs().max() <= 1
    names = ("means", "quats", "scales", "opacities", "sh", "viewmats", "means2d")
    for name, g_cpu, g_ref in zip(names, cpu_grads, ref_grads):
        assert g_ref.norm() > 0, name
        assert _rel(g_cpu, g_ref) < 1e-3, name


def test_partially_offscreen_and_near_camera():
    """Big Gaussians straddling the border and close to the camera (clamped Jacobian) agree too."""
    gen = torch.Generator().manual_seed(7)
    num = 40
    means = torch.cat([torch.rand(num, 2, generator=gen) * 3.0 - 1.5, torch.rand(num, 1, generator=gen) * 2 + 0.3], -1)
    quats = torch.randn(num, 4, generator=gen)
    scales = torch.rand(num, 3, generator=gen) * 0.3 + 0.05
    opac = torch.rand(num, generator=gen) * 0.7 + 0.2
    sh = torch.randn(num, 4, 3, generator=gen) * 0.5
    viewmats, Ks = _identity_camera(30, 20, focal=25.0)
    tensors = [means, quats, scales, opac, sh]
    ref, ref_grads = _render_with_grads(tensors, viewmats, Ks, 30, 20, "reference")
    cpu, cpu_grads = _render_with_grads(tensors, viewmats, Ks, 30, 20, "cpu")
    assert (cpu.rgb - ref.rgb).abs().max() < 1e-4
    for g_cpu, g_ref in zip(cpu_grads, ref_grads):
        assert _rel(g_cpu, g_ref) < 1e-3


def test_batch_equals_concatenation_of_single_views():
    scene = random_object_scene(300, sh_degree=2, seed=4)
    viewmats, Ks = ring_cameras(3, 40, 24)
    batch, batch_grads = _render_with_grads(scene.tensors(), viewmats, Ks, 40, 24, "cpu", seed=9)
    gen = torch.Generator().manual_seed(9)
    weights = [torch.randn(x.shape, generator=gen) for x in (batch.rgb, batch.alpha, batch.depth)]
    viewmat_grads, sh_grad = [], 0
    for cam in range(3):
        leaves = [t.detach().clone().requires_grad_(True) for t in [*scene.tensors(), viewmats[cam : cam + 1]]]
        single = render_gaussians(*leaves[:5], leaves[5], Ks[cam : cam + 1], 40, 24, backend="cpu")
        assert torch.allclose(single.rgb[0], batch.rgb[cam], atol=1e-6)
        assert torch.equal(single.radii[0], batch.radii[cam])
        loss = sum((x * w[cam : cam + 1]).sum() for x, w in zip((single.rgb, single.alpha, single.depth), weights))
        loss.backward()
        viewmat_grads.append(leaves[5].grad[0])
        sh_grad = sh_grad + leaves[4].grad
    assert torch.allclose(torch.stack(viewmat_grads), batch_grads[5], rtol=1e-4, atol=1e-4)
    assert _rel(sh_grad, batch_grads[4]) < 1e-5


def test_degenerate_scales_stay_finite():
    scene = random_object_scene(50, sh_degree=1, seed=5)
    scales = scene.scales.clone()
    scales[:10] = 1e-8
    scales[10:15] = 1e3
    scales[15:20, 0] = 1e-9  # needle
    scene.scales = scales
    viewmats, Ks = ring_cameras(2, 32, 32)
    for backend in BACKENDS:
        out, grads = _render_with_grads(scene.tensors(), viewmats, Ks, 32, 32, backend)
        assert all(torch.isfinite(x).all() for x in (out.rgb, out.alpha, out.depth))
        assert all(torch.isfinite(g).all() for g in grads)


def test_sh_view_dependence_and_active_degree():
    """Degree-1 colour follows -C1·y·sh1 + C1·z·sh2 - C1·x·sh3 of the view direction."""
    viewmats, Ks = _identity_camera(33, 33)
    means, quats, scales, opac, sh = _single_gaussian((0.0, 0.0, 3.0), scale=0.1, opacity=0.6)
    sh = torch.zeros(1, 16, 3)
    sh[0, 2, 1] = 1.0  # z-term in the green channel: direction (0, 0, 1) -> +C1
    sh[0, 9:, :] = 5.0  # degree-3 terms, disabled by sh_degree=1
    out = render_gaussians(means, quats, scales, opac, sh, viewmats, Ks, 33, 33, sh_degree=1, backend="cpu")
    assert out.rgb[0, 16, 16, 1].item() == pytest.approx(0.6 * (SH_C1 + 0.5), abs=1e-5)
    with pytest.raises(RenderInputError, match="sh_degree"):
        render_gaussians(means, quats, scales, opac, sh[:, :4], viewmats, Ks, 33, 33, sh_degree=2)


def test_input_errors_are_clear():
    viewmats, Ks = _identity_camera()
    means, quats, scales, opac, sh = _single_gaussian((0.0, 0.0, 2.0))
    with pytest.raises(RenderInputError, match="quats must have shape"):
        render_gaussians(means, quats[:, :3], scales, opac, sh, viewmats, Ks, 32, 32)
    with pytest.raises(RenderInputError, match="background"):
        render_gaussians(means, quats, scales, opac, sh, viewmats, Ks, 32, 32, background=torch.ones(4))
    with pytest.raises(RenderInputError, match="unknown backend"):
        render_gaussians(means, quats, scales, opac, sh, viewmats, Ks, 32, 32, backend="vulkan")
    with pytest.raises(RenderInputError, match="float64"):
        render_gaussians(means.double(), quats, scales, opac, sh, viewmats, Ks, 32, 32)
    with pytest.raises(RenderInputError, match="K in"):
        render_gaussians(means, quats, scales, opac, torch.zeros(1, 5, 3), viewmats, Ks, 32, 32)


def test_auto_backend_and_lazy_gsplat_import():
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"
    code = (
        "import sys, torch; from sparseags.render import render_gaussians; "
        "from sparseags.render.synthetic import random_object_scene, ring_cameras; "
        "s = random_object_scene(5); v, K = ring_cameras(1, 8, 8); "
        "render_gaussians(*s.tensors(), v, K, 8, 8, backend='reference'); "
        "assert 'gsplat' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
