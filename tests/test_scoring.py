"""Per-view scores on hand-made images: GT preparation, area normalisation, PSNR, LPIPS batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparseags.lpips_model import LpipsMetric
from sparseags.scoring import AREA_FLOOR, prepare_targets, score_views

SIZE = 64  # AlexNet's trunk needs at least ~64 px


def _quarter_scene() -> dict[str, np.ndarray]:
    """One view: the object fills the top-left quadrant; render white there, photo grey (0.5)."""
    render = np.ones((1, SIZE, SIZE, 3), np.float32)
    alpha = np.zeros((1, SIZE, SIZE), np.float32)
    alpha[:, : SIZE // 2, : SIZE // 2] = 1.0
    target = np.full((1, SIZE, SIZE, 3), 0.2, np.float32)  # background colour must be whitened away
    target[:, : SIZE // 2, : SIZE // 2] = 0.5
    mask = alpha.copy()
    return {"renders": render, "alphas": alpha, "targets": target, "target_masks": mask}


def test_prepare_targets_thresholds_at_0_9_or_composites() -> None:
    rgb = np.full((1, 1, 3, 3), 0.2, np.float32)
    mask = np.array([[[0.9, 0.91, 0.5]]], np.float32)  # [1, 1, 3]
    official = prepare_targets(rgb, mask, official=True)[0, 0].numpy()  # [3, 3]
    np.testing.assert_allclose(official[0], 1.0)  # mask == 0.9 counts as background
    np.testing.assert_allclose(official[1], 0.2)
    np.testing.assert_allclose(official[2], 1.0)
    soft = prepare_targets(rgb, mask, official=False)[0, 0].numpy()
    np.testing.assert_allclose(soft[:, 0], 0.2 * mask[0, 0] + 1.0 - mask[0, 0], rtol=1e-6)


def test_quarter_render_is_normalised_by_four(random_alex: LpipsMetric) -> None:
    scores = score_views(**_quarter_scene(), lpips_metric=random_alex)
    assert scores["area"][0] == pytest.approx(0.25)
    # Only the quadrant differs: (1 - 0.5)^2 on a quarter of the pixels.
    assert scores["mse"][0] == pytest.approx(0.0625, rel=1e-6)
    assert scores["mse_norm"][0] == pytest.approx(0.25, rel=1e-6)
    assert scores["psnr"][0] == pytest.approx(-10 * math.log10(0.0625), rel=1e-6)
    assert scores["lpips"][0] > 1e-4
    assert scores["lpips_norm"][0] == pytest.approx(4 * scores["lpips"][0], rel=1e-9)
    assert all(value.dtype == np.float64 and value.shape == (1,) for value in scores.values())


def test_soft_compositing_keeps_partial_mask_pixels() -> None:
    scene = _quarter_scene()
    scene["target_masks"][:, SIZE // 2 :, :] = 0.5  # bottom half: half-transparent 0.2 grey
    official = score_views(**scene, official=True)
    soft = score_views(**scene, official=False)
    assert official["mse"][0] == pytest.approx(0.0625, rel=1e-6)  # thresholded to white == render
    # Soft: bottom half becomes 0.5 * 0.2 + 0.5 = 0.6, off by 0.4 from the white render.
    assert soft["mse"][0] == pytest.approx(0.0625 + 0.5 * 0.16, rel=1e-5)
    assert "lpips" not in official and "lpips_norm" not in official


def test_empty_render_uses_area_floor_and_perfect_match_is_finite() -> None:
    scene = _quarter_scene()
    scene["alphas"][:] = 0.0
    scores = score_views(**scene)
    assert scores["area"][0] == 0.0
    assert scores["mse_norm"][0] == pytest.approx(scores["mse"][0] / AREA_FLOOR)
    white = np.ones((1, SIZE, SIZE, 3), np.float32)
    perfect = score_views(white, scene["alphas"], white, np.zeros((1, SIZE, SIZE), np.float32))
    assert perfect["mse"][0] == 0.0 and perfect["psnr"][0] == pytest.approx(100.0)


def test_chunked_lpips_keeps_view_order(random_alex: LpipsMetric) -> None:
    gen = np.random.default_rng(0)
    views = 5
    renders = gen.random((views, SIZE, SIZE, 3), dtype=np.float32)
    targets = np.clip(
        renders
        + np.linspace(0.0, 0.4, views, dtype=np.float32)[:, None, None, None]
        * gen.random((views, SIZE, SIZE, 3), dtype=np.float32),
        0,
        1,
    )
    masks = np.ones((views, SIZE, SIZE), np.float32)
    alphas = np.ones((views, SIZE, SIZE, 1), np.float32)  # the renderer's [V, H, W, 1] layout
    by_two = score_views(renders, alphas, targets, masks, random_alex, chunk=2)
    one_by_one = [random_alex(renders[i], targets[i]).item() for i in range(views)]
    np.testing.assert_allclose(by_two["lpips"], one_by_one, rtol=1e-5, atol=1e-7)
    assert by_two["lpips"][0] < 1e-6 and np.all(np.diff(by_two["lpips"]) > 0)  # larger noise, larger distance
    torch_input = score_views(
        torch.from_numpy(renders).requires_grad_(True),
        torch.from_numpy(alphas),
        torch.from_numpy(targets),
        torch.from_numpy(masks),
        random_alex,
        chunk=8,
    )
    np.testing.assert_allclose(torch_input["lpips"], by_two["lpips"], rtol=1e-5, atol=1e-7)


def test_bad_shapes_are_one_line_value_errors() -> None:
    scene = _quarter_scene()
    with pytest.raises(ValueError, match=r"alphas \(1, 32, 32\) does not match renders"):
        score_views(scene["renders"], scene["alphas"][:, :32, :32], scene["targets"], scene["target_masks"])
    with pytest.raises(ValueError, match=r"renders must be \[V, H, W, 3\]"):
        score_views(scene["renders"][0], scene["alphas"], scene["targets"], scene["target_masks"])
    with pytest.raises(ValueError, match="targets .* and renders .* differ in shape"):
        score_views(
            scene["renders"],
            scene["alphas"],
            scene["targets"][:, :, :, :3].repeat(2, axis=0),
            scene["target_masks"].repeat(2, axis=0),
        )
