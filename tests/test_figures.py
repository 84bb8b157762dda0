"""Tests for sparseags.figures: exact PNG sizes, border colours, highlighted candidate, non-uniform heat map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from sparseags.figures import FigureError, lpips_bars_png, overlay_grid_png, search_heatmap_png


def read_rgb(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def has_colour(pixels: np.ndarray, rgb, tol: int = 12) -> bool:
    return bool((np.abs(pixels - np.asarray(rgb)).max(-1) <= tol).any())


def test_overlay_grid_size_and_borders(tmp_path):
    rng = np.random.default_rng(0)
    targets = rng.random((3, 24, 24, 3)).astype(np.float32)
    renders = (rng.random((3, 24, 24, 3)) * 255).astype(np.uint8)
    scores = {"mse": [0.01, 0.2, 0.03], "lpips": [0.1, 0.5, float("nan")], "psnr": [30.0, 12.0, 25.0]}
    path = overlay_grid_png(
        tmp_path / "vis.png", ["a", "b", "c"], torch.as_tensor(targets), renders, [1, 0, 1], scores, cell_px=120
    )
    with Image.open(path) as image:
        assert image.format == "PNG"
        size = image.size
    label_px, caption_px = 120 // 3, 14 * (2 + 3)
    assert size == (label_px + 3 * 120, caption_px + 3 * 120)
    pixels = read_rgb(path)
    middle = size[1] // 2
    # Column borders (pixels 1..3 from the left edge of each column): green, red, green.
    green, red = (44, 160, 44), (214, 39, 40)
    for view, (colour, other) in enumerate([(green, red), (red, green), (green, red)]):
        strip = pixels[middle - 20 : middle + 20, label_px + view * 120 + 1 : label_px + view * 120 + 4]
        assert has_colour(strip, colour, tol=30), f"view {view} border"
        assert not has_colour(strip, other, tol=60), f"view {view} border"


def test_overlay_grid_rejects_mismatched_input(tmp_path):
    images = np.zeros((2, 8, 8, 3))
    with pytest.raises(FigureError, match="do not match"):
        overlay_grid_png(tmp_path / "x.png", ["a", "b"], images, images[:1], [1, 1])
    with pytest.raises(FigureError, match="score 'mse' has 1 values for 2 views"):
        overlay_grid_png(tmp_path / "x.png", ["a", "b"], images, images, [1, 1], {"mse": [0.1]})
    assert not (tmp_path / "x.png").exists()


def test_lpips_bars_highlight_candidate(tmp_path):
    ids = ["000", "001", "002", "003"]
    plain = lpips_bars_png(tmp_path / "plain.png", ids, [0.1, 0.4, 0.2, 0.15], [1, 1, 1, 0])
    marked = lpips_bars_png(
        tmp_path / "bars.png",
        ids,
        np.array([0.1, 0.4, 0.2, 0.15]),
        [1, 1, 1, 0],
        candidate="001",
        threshold=0.05,
        mean_before=0.233,
        mean_after=0.15,
        width_px=500,
        height_px=300,
    )
    assert Image.open(plain).size == (640, 360)
    assert Image.open(marked).size == (500, 300)
    orange = (0xDD, 0x84, 0x52)
    assert has_colour(read_rgb(marked), orange) and not has_colour(read_rgb(plain), orange)
    with pytest.raises(FigureError, match="candidate 'zzz' is not one of the view ids"):
        lpips_bars_png(tmp_path / "x.png", ids, [0.1] * 4, [1] * 4, candidate="zzz")


def test_search_heatmap_png(tmp_path):
    elevations = np.arange(-45.0, 46.0, 15.0)  # 7
    azimuths = np.arange(-180.0, 180.0, 15.0)  # 24
    grid = (1.0 - np.cos(np.deg2rad(azimuths - 30.0)))[None, :] + 0.01 * np.abs(elevations)[:, None]
    grid[0, 0] = np.nan  # not evaluated
    path = search_heatmap_png(
        tmp_path / "heat.png",
        elevations,
        azimuths,
        torch.as_tensor(grid),
        chosen=(0.0, 30.0),
        truth=(15.0, 390.0),
        current=(-30.0, -90.0),
    )
    pixels = read_rgb(path)
    assert pixels.shape == (400, 640, 3)
    lowest = np.round(np.array(colormaps["viridis"](0.0)[:3]) * 255)
    highest = np.round(np.array(colormaps["viridis"](1.0)[:3]) * 255)
    assert has_colour(pixels, lowest, tol=6) and has_colour(pixels, highest, tol=6)
    # The plot area is far from uniform: many distinct colours.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100

    uniform = search_heatmap_png(tmp_path / "flat.png", elevations, azimuths, np.full(grid.shape, 0.3))
    assert Image.open(uniform).size == (640, 400)
    with pytest.raises(FigureError, match=r"grid has shape \[24, 7\], expected \[7, 24\]"):
        search_heatmap_png(tmp_path / "x.png", elevations, azimuths, grid.T)
