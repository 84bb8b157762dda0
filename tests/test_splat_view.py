"""GLSL splat view vs the engine renderer; pixel convention, debug modes, sorting, fallback.

The GL tests need an OpenGL 3.3 context (Mesa llvmpipe: EGL headless, or GLX under ``xvfb-run -a``);
they skip with the reason when none can be created. The fallback tests always run.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from gui import splat_view
from gui.orbit import OrbitCamera, ProgressivePolicy
from gui.splat_view import (
    EngineFallbackView,
    GLUnavailableError,
    ProgressiveRenderer,
    SplatView,
    make_orbit_renderer,
    scale_intrinsics,
    sh_colors_numpy,
    turbo_lut,
)
from sparseags.render import render_gaussians
from sparseags.render.sh import sh_to_colors
from sparseags.render.synthetic import random_object_scene

SIZE = 96


@pytest.fixture(scope="module")
def view() -> SplatView:
    try:
        gl_view = SplatView(SIZE, SIZE)
    except GLUnavailableError as err:
        pytest.skip(f"{err}; run under xvfb-run -a or install Mesa EGL")
    yield gl_view
    gl_view.release()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10.0 * math.log10(1.0 / max(mse, 1e-20))


def _engine(scene, w2c: np.ndarray, K: np.ndarray, width: int, height: int, background=(0.0, 0.0, 0.0)):
    with torch.no_grad():
        out = render_gaussians(
            *scene.tensors(),
            torch.tensor(w2c, dtype=torch.float32)[None],
            torch.tensor(K, dtype=torch.float32)[None],
            width,
            height,
            background=torch.tensor(background, dtype=torch.float32),
            backend="reference",
        )
    return out.rgb[0].numpy(), out.alpha[0].numpy(), out.depth[0].numpy()


def _single_gaussian(mean, scale, opacity, color, sh_degree: int = 0):
    """One isotropic Gaussian whose view-independent colour is ``color`` (DC = (color - 0.5) / C0)."""
    sh = torch.zeros(1, (sh_degree + 1) ** 2, 3)
    sh[0, 0] = (torch.tensor(color, dtype=torch.float32) - 0.5) / 0.28209479177387814
    return (
        torch.tensor([mean], dtype=torch.float32),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        torch.full((1, 3), float(scale)),
        torch.tensor([float(opacity)]),
        sh,
    )


@pytest.mark.parametrize("sh_degree, seed, elev, azim", [(1, 0, -20.0, 30.0), (3, 1, 35.0, -140.0)])
def test_matches_engine_renderer(view: SplatView, sh_degree: int, seed: int, elev: float, azim: float) -> None:
    scene = random_object_scene(
        400, sh_degree=sh_degree, radius=0.6, scale_range=(0.01, 0.12), opacity_range=(0.05, 1.0), seed=seed
    )
    camera = OrbitCamera(SIZE, SIZE, radius=2.2)
    camera.from_angle(elev, azim)
    view.set_gaussians(*scene.tensors(), sh_degree=sh_degree)
    layers = view.render_layers(camera.w2c(), camera.K(), background=(0.2, 0.4, 0.6))
    rgb, alpha, depth = _engine(scene, camera.w2c(), camera.K(), SIZE, SIZE, background=(0.2, 0.4, 0.6))
    assert _psnr(layers.rgb, rgb) >= 30.0
    assert _psnr(layers.alpha, alpha) >= 30.0
    np.testing.assert_allclose(layers.depth, depth, atol=0.05 * depth.max())
    # Not blank: a good part of the image is covered and it is not uniform.
    assert (alpha > 0.5).mean() > 0.1 and layers.rgb.std() > 0.05
    # A mirrored or transposed read-back would not match.
    assert _psnr(layers.rgb[::-1], rgb) < 25.0 and _psnr(layers.rgb.transpose(1, 0, 2), rgb) < 25.0


def test_uint8_render_matches_layers(view: SplatView) -> None:
    scene = random_object_scene(300, sh_degree=2, radius=0.5, scale_range=(0.02, 0.1), seed=4)
    camera = OrbitCamera(SIZE, SIZE, radius=2.0)
    view.set_gaussians(*scene.tensors())
    image = view.render(camera.w2c(), camera.K(), background=(1.0, 1.0, 1.0))
    assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
    layers = view.render_layers(camera.w2c(), camera.K(), background=(1.0, 1.0, 1.0))
    assert np.abs(image.astype(np.float64) - np.clip(layers.rgb, 0.0, 1.0) * 255.0).max() <= 0.51
    alpha_image = view.render(camera.w2c(), camera.K(), mode="alpha")
    np.testing.assert_allclose(alpha_image[..., 0] / 255.0, layers.alpha[..., 0], atol=0.5 / 255 + 1e-6)
    assert alpha_image.min() == 0 and alpha_image.max() > 200


@pytest.mark.parametrize("width, height, row, col", [(64, 48, 10, 37), (33, 20, 17, 3)])
def test_pixel_centre_convention(width: int, height: int, row: int, col: int) -> None:
    """A tiny Gaussian projected onto pixel centre (col + .5, row + .5) lights exactly that pixel."""
    try:
        gl_view = SplatView(width, height)
    except GLUnavailableError as err:
        pytest.skip(str(err))
    with gl_view:
        K = np.array([[60.0, 0.0, 0.45 * width], [0.0, 55.0, 0.55 * height], [0.0, 0.0, 1.0]])
        z = 2.0
        mean = [(col + 0.5 - K[0, 2]) / K[0, 0] * z, (row + 0.5 - K[1, 2]) / K[1, 1] * z, z]
        gaussian = _single_gaussian(mean, 1e-4, 0.99, (1.0, 1.0, 1.0))
        gl_view.set_gaussians(*gaussian)
        layers = gl_view.render_layers(np.eye(4), K)
        alpha = layers.alpha[..., 0]
        assert np.unravel_index(np.argmax(alpha), alpha.shape) == (row, col)
        assert alpha[row, col] == pytest.approx(0.99, abs=1e-4)
        # sigma^2 = 0.3 px^2 (the low-pass): the 4 neighbours are equal, exp(-1 / 0.6) * 0.99.
        neighbours = [alpha[row, col - 1], alpha[row, col + 1], alpha[row - 1, col], alpha[row + 1, col]]
        np.testing.assert_allclose(neighbours, 0.99 * math.exp(-1.0 / 0.6), rtol=1e-3)
        assert layers.depth[row, col, 0] / alpha[row, col] == pytest.approx(z, rel=1e-5)

        class Scene:
            def tensors(self):
                return list(gaussian)

        _, engine_alpha, _ = _engine(Scene(), np.eye(4), K, width, height)
        np.testing.assert_allclose(alpha, engine_alpha[..., 0], atol=1e-5)


def test_depth_mode_uses_range_and_colormap(view: SplatView) -> None:
    K = np.array([[80.0, 0.0, SIZE / 2], [0.0, 80.0, SIZE / 2], [0.0, 0.0, 1.0]])
    near = _single_gaussian([-0.5, 0.0, 2.0], 0.08, 0.99, (0.5, 0.5, 0.5))
    far = _single_gaussian([1.0, 0.0, 4.0], 0.16, 0.99, (0.5, 0.5, 0.5))
    view.set_gaussians(*(torch.cat([a, b]) for a, b in zip(near, far)))
    image = view.render(np.eye(4), K, mode="depth", depth_range=(2.0, 4.0), background=(0.0, 0.0, 0.0))
    lut = turbo_lut()
    near_pixel = image[SIZE // 2, int(SIZE / 2 - 0.5 / 2.0 * 80.0)] / 255.0
    far_pixel = image[SIZE // 2, int(SIZE / 2 + 1.0 / 4.0 * 80.0)] / 255.0
    np.testing.assert_allclose(near_pixel, 0.99 * lut[0], atol=0.02)
    np.testing.assert_allclose(far_pixel, 0.99 * lut[-1], atol=0.02)
    assert image[0, 0].tolist() == [0, 0, 0]
    auto = view.render(np.eye(4), K, mode="depth", background=(0.0, 0.0, 0.0))
    assert auto.shape == (SIZE, SIZE, 3) and auto.max() > 0


def test_centres_and_ellipsoid_modes(view: SplatView) -> None:
    K = np.array([[80.0, 0.0, SIZE / 2], [0.0, 80.0, SIZE / 2], [0.0, 0.0, 1.0]])
    gaussian = _single_gaussian([0.0, 0.0, 2.0], 0.1, 0.3, (1.0, 0.0, 0.0))  # sigma = 4 px (+ low-pass)
    view.set_gaussians(*gaussian)
    centres = view.render(np.eye(4), K, mode="centres", background=(0.0, 0.0, 1.0))
    centre = SIZE // 2
    assert centres[centre, centre].tolist() == [255, 0, 0]
    assert centres[centre, centre + 3].tolist() == [0, 0, 255]  # dots are point_radius = 1.5 px
    rgb = view.render(np.eye(4), K, mode="rgb", background=(0.0, 0.0, 1.0))
    assert rgb[centre, centre, 0] < 0.35 * 255  # translucent in rgb (opacity 0.3)...
    ellipsoids = view.render(np.eye(4), K, mode="ellipsoids", background=(0.0, 0.0, 1.0))
    sigma = math.sqrt(16.0 + 0.3)
    assert ellipsoids[centre, centre].tolist() == [255, 0, 0]  # ...opaque in the ellipsoid view
    inside = ellipsoids[centre, centre + int(1.5 * sigma)]
    assert inside[2] == 0 and 0.55 * 255 - 1 <= inside[0] < 255  # rim-darkened, no background
    assert ellipsoids[centre, centre + int(2.5 * sigma) + 1].tolist() == [0, 0, 255]  # outside 2 sigma


def test_resort_only_when_view_direction_turns(view: SplatView) -> None:
    scene = random_object_scene(200, sh_degree=1, seed=2)
    view.set_gaussians(*scene.tensors())
    view.resort_angle_deg = 1.0
    camera = OrbitCamera(SIZE, SIZE)
    base_sorts, base_colors = view.sort_count, view.color_update_count
    view.render(camera.w2c(), camera.K())
    assert view.sort_count == base_sorts + 1
    view.render(camera.w2c(), camera.K())
    assert view.sort_count == base_sorts + 1 and view.color_update_count == base_colors + 1
    camera.pan(50.0, -20.0)
    camera.scale(2.0)
    view.render(camera.w2c(), camera.K())  # translation: z order unchanged, SH colours change
    assert view.sort_count == base_sorts + 1 and view.color_update_count == base_colors + 2
    camera.orbit(10.0, 0.0)  # 0.5 deg
    view.render(camera.w2c(), camera.K())
    assert view.sort_count == base_sorts + 1
    camera.orbit(20.0, 0.0)  # 1.5 deg since the last sort
    view.render(camera.w2c(), camera.K())
    assert view.sort_count == base_sorts + 2
    view.set_gaussians(*scene.tensors())  # new data always re-sorts
    view.render(camera.w2c(), camera.K())
    assert view.sort_count == base_sorts + 3


def test_bad_inputs(view: SplatView) -> None:
    scene = random_object_scene(10, sh_degree=0, seed=0)
    with pytest.raises(ValueError, match="quats"):
        view.set_gaussians(scene.means, scene.quats[:5], scene.scales, scene.opacities, scene.sh)
    view.set_gaussians(*scene.tensors())
    with pytest.raises(ValueError, match="w2c"):
        view.render(np.eye(4)[:3], np.eye(3))
    with pytest.raises(ValueError, match="mode"):
        view.render(np.eye(4), np.eye(3), mode="normals")


def test_empty_scene_renders_background(view: SplatView) -> None:
    view.set_gaussians(np.zeros((0, 3)), np.zeros((0, 4)), np.zeros((0, 3)), np.zeros(0), np.zeros((0, 1, 3)))
    image = view.render(np.eye(4), np.diag([50.0, 50.0, 1.0]), background=(0.0, 1.0, 0.0))
    assert (image == [0, 255, 0]).all()


def test_fallback_view_matches_engine() -> None:
    scene = random_object_scene(150, sh_degree=2, radius=0.5, scale_range=(0.02, 0.1), seed=5)
    camera = OrbitCamera(48, 40, radius=2.0)
    camera.from_angle(-15.0, 20.0)
    fallback = EngineFallbackView(48, 40, backend="reference")
    fallback.set_gaussians(*scene.tensors())
    image = fallback.render(camera.w2c(), camera.K(), background=(1.0, 1.0, 1.0))
    rgb, _, _ = _engine(scene, camera.w2c(), camera.K(), 48, 40, background=(1.0, 1.0, 1.0))
    assert image.shape == (40, 48, 3) and image.dtype == np.uint8
    assert np.abs(image / 255.0 - np.clip(rgb, 0.0, 1.0)).max() <= 0.5 / 255 + 1e-6
    for mode in ("depth", "alpha", "centres", "ellipsoids"):
        other = fallback.render(camera.w2c(), camera.K(), mode=mode)
        assert other.shape == (40, 48, 3) and other.std() > 0


def test_make_orbit_renderer_falls_back(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def no_gl(backend=None):
        raise GLUnavailableError("no OpenGL 3.3 context (egl: test)")

    monkeypatch.setattr(splat_view, "create_gl_context", no_gl)
    with caplog.at_level(logging.WARNING, logger="gui.splat_view"):
        renderer = make_orbit_renderer(32, 32, resort_angle_deg=2.0)
    assert isinstance(renderer, EngineFallbackView)
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()
    assert isinstance(make_orbit_renderer(32, 32, prefer="engine"), EngineFallbackView)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_numpy_sh_matches_engine(degree: int) -> None:
    scene = random_object_scene(64, sh_degree=3, seed=degree)
    w2c = torch.tensor(OrbitCamera(32, 32).w2c(), dtype=torch.float32)
    expected = sh_to_colors(scene.sh, scene.means, w2c[None], degree)[0].numpy()
    campos = (-w2c[:3, :3].T @ w2c[:3, 3]).numpy()
    got = sh_colors_numpy(scene.sh.numpy(), scene.means.numpy(), campos, degree)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (
        degree == 0
        or np.abs(got - sh_colors_numpy(scene.sh.numpy(), scene.means.numpy(), -campos, degree)).max() > 0.05
    )


def test_benchmark_runs_small(view: SplatView) -> None:
    from gui.bench_orbit import run_orbit_benchmark

    result = run_orbit_benchmark(quick=True, num_gaussians=300, size=48)
    assert result["paused"]["fps"] > 0 and result["orbiting"]["fps"] > 0
    assert result["sorts_paused"] == 1 and result["sorts_orbiting"] == result["frames"]
    old, new = result["interactive"]["full_every_frame"], result["interactive"]["progressive"]
    assert old["moving_width_median"] == 48 and new["moving_width_median"] < 48  # quick frames while moving
    assert old["settle_s"] == 0.0 and new["settle_s"] > 0
    for stats in (old, new):
        assert stats["fps_moving"] > 0 and stats["refine_s_median"] > 0
    assert new["refine_s_median"] >= new["settle_s"]  # the full frame comes once the camera is still


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_scaled_render_matches_full_render_at_that_size(view: SplatView) -> None:
    scene = random_object_scene(300, sh_degree=2, radius=0.6, scale_range=(0.02, 0.1), seed=4)
    view.set_gaussians(*scene.tensors())
    big = OrbitCamera(SIZE, SIZE, radius=2.2)
    big.from_angle(-20.0, 40.0)
    small_size = (SIZE // 3, SIZE // 3)
    small = OrbitCamera(*small_size, radius=2.2)
    small.set_state({**big.state(), "width": small_size[0], "height": small_size[1]})
    np.testing.assert_allclose(scale_intrinsics(big.K(), (SIZE, SIZE), small_size), small.K(), atol=1e-9)
    with SplatView(*small_size) as other:
        other.set_gaussians(*scene.tensors())
        expected = other.render(small.w2c(), small.K())
    got = view.render(big.w2c(), small.K(), size=small_size)
    assert got.shape == (small_size[1], small_size[0], 3)
    np.testing.assert_array_equal(got, expected)
    # the interactive path (one GL point per splat) draws nearly the same image
    quick = view.render(big.w2c(), small.K(), size=small_size, interactive=True)
    assert _psnr(quick / 255.0, expected / 255.0) > 35.0
    assert view.render(big.w2c(), big.K()).shape == (SIZE, SIZE, 3)  # the full size is unaffected
    with pytest.raises(ValueError, match="size"):
        view.render(big.w2c(), big.K(), size=(0, 10))


def test_progressive_renderer_quick_while_moving_full_when_still(view: SplatView) -> None:
    scene = random_object_scene(300, sh_degree=3, radius=0.6, scale_range=(0.02, 0.1), seed=6)
    view.set_gaussians(*scene.tensors(), sh_degree=3)
    clock = _Clock()
    policy = ProgressivePolicy(settle_s=0.1, target_ms=1e9, divisor=4, clock=clock)
    renderer = ProgressiveRenderer(view, policy)
    camera = OrbitCamera(SIZE, SIZE, radius=2.2)
    first = renderer.frame(camera.w2c(), camera.K())
    assert first.full and first.image.shape == (SIZE, SIZE, 3)  # a still camera: full size at once
    assert renderer.frame(camera.w2c(), camera.K()) is None  # nothing changed: nothing drawn
    colors = view.color_update_count
    camera.orbit(30.0, 0.0)
    quick = renderer.frame(camera.w2c(), camera.K())
    assert not quick.full and quick.image.shape == (SIZE // 4, SIZE // 4, 3)
    assert view.color_update_count == colors  # no SH re-evaluation while moving
    clock.now += 0.05
    assert renderer.frame(camera.w2c(), camera.K()) is None  # still moving, this camera already drawn
    clock.now += 0.06  # still for 0.11 s > settle_s
    full = renderer.frame(camera.w2c(), camera.K())
    assert full.full and full.image.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(full.image, view.render(camera.w2c(), camera.K()))
    assert view.color_update_count == colors + 1
    assert renderer.frame(camera.w2c(), camera.K()) is None
    # new content while still: drawn at full size; the old mode draws every camera at full size
    assert renderer.frame(camera.w2c(), camera.K(), content_key=1).full
    old = ProgressiveRenderer(view, ProgressivePolicy(clock=clock), progressive=False)
    old.frame(camera.w2c(), camera.K())
    camera.orbit(30.0, 0.0)
    assert old.frame(camera.w2c(), camera.K()).full


def test_fallback_view_renders_at_another_size() -> None:
    scene = random_object_scene(80, sh_degree=1, radius=0.5, scale_range=(0.02, 0.1), seed=3)
    camera = OrbitCamera(48, 40, radius=2.0)
    fallback = EngineFallbackView(48, 40, backend="reference")
    fallback.set_gaussians(*scene.tensors())
    K = scale_intrinsics(camera.K(), (48, 40), (24, 20))
    for mode in ("rgb", "depth", "alpha", "centres", "ellipsoids"):
        assert fallback.render(camera.w2c(), K, mode=mode, size=(24, 20), interactive=True).shape == (20, 24, 3)
    assert fallback.last_depth_range is not None
