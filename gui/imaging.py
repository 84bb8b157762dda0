"""Small image helpers for the panels (numpy in, float32 RGB in [0, 1] out; no DearPyGui here).

Images are ``[H, W, 3]`` with row 0 at the top. DearPyGui raw textures need C-contiguous float32
buffers (a non-contiguous buffer crashes it), so every helper returns a fresh contiguous array.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["as_float_rgb", "resize", "blend", "difference_heatmap", "grid_2x2", "colormap_lut", "apply_colormap"]


def as_float_rgb(image: Any) -> np.ndarray:
    """uint8 / float / torch ``[H, W, 3]`` (or ``[H, W]``, ``[H, W, 1]``, ``[H, W, 4]``) -> float32 [H, W, 3]."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"expected an [H, W, C] image, got shape {list(array.shape)}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    array = array[..., :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array, dtype=np.float32) / np.float32(255.0)
    return np.ascontiguousarray(np.clip(array, 0.0, 1.0), dtype=np.float32)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of a float [H, W, 3] image."""
    image = as_float_rgb(image)
    if image.shape[:2] == (height, width):
        return image
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(image).permute(2, 0, 1)[None]
    out = F.interpolate(tensor, size=(int(height), int(width)), mode="bilinear", align_corners=False, antialias=True)
    return np.ascontiguousarray(out[0].permute(1, 2, 0).clamp(0, 1).numpy())


def blend(first: np.ndarray, second: np.ndarray, amount: float) -> np.ndarray:
    """``(1 - amount) * first + amount * second`` (amount 0 shows `first`)."""
    t = float(np.clip(amount, 0.0, 1.0))
    return np.ascontiguousarray((1.0 - t) * as_float_rgb(first) + t * as_float_rgb(second), dtype=np.float32)


@lru_cache(maxsize=8)
def colormap_lut(name: str = "inferno", size: int = 256) -> np.ndarray:
    """A matplotlib colour map sampled at `size` points: [size, 3] float32."""
    from matplotlib import colormaps

    return colormaps[name](np.linspace(0.0, 1.0, size))[:, :3].astype(np.float32)


def apply_colormap(values: np.ndarray, vmin: float, vmax: float, name: str = "inferno") -> np.ndarray:
    """Scalar field [H, W] -> colours [H, W, 3] (values clipped to [vmin, vmax])."""
    lut = colormap_lut(name)
    t = (np.asarray(values, dtype=np.float64) - vmin) / max(vmax - vmin, 1e-12)
    index = np.clip(np.rint(t * (len(lut) - 1)), 0, len(lut) - 1).astype(np.int64)
    return np.ascontiguousarray(lut[index])


def difference_heatmap(first: np.ndarray, second: np.ndarray, vmax: float = 0.5) -> np.ndarray:
    """Mean absolute RGB difference as an inferno heatmap (black = equal, yellow = ``>= vmax``)."""
    diff = np.abs(as_float_rgb(first) - as_float_rgb(second)).mean(axis=2)
    return apply_colormap(diff, 0.0, vmax)


def grid_2x2(
    top_left: np.ndarray,
    top_right: np.ndarray,
    bottom_left: np.ndarray,
    bottom_right: np.ndarray,
    gap: int = 2,
    gap_value: float = 0.15,
) -> np.ndarray:
    """Four equally sized images in a 2 x 2 grid with a `gap`-pixel separator."""
    images = [as_float_rgb(i) for i in (top_left, top_right, bottom_left, bottom_right)]
    h, w = images[0].shape[:2]
    if any(i.shape[:2] != (h, w) for i in images):
        raise ValueError("grid_2x2: the four images must have the same size")
    out = np.full((2 * h + gap, 2 * w + gap, 3), gap_value, np.float32)
    out[:h, :w], out[:h, w + gap :] = images[0], images[1]
    out[h + gap :, :w], out[h + gap :, w + gap :] = images[2], images[3]
    return out
