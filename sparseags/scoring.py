"""Per-view render-vs-photo scores, as SparseAGS's outlier test computes them (``vis_output`` in ``run.py``).

For view i, with the render composited on a white background:

* the target photo is prepared like the official code: pixels whose mask is ``<= 0.9`` become white
  (``official=True``), or, with ``official=False``, the photo is alpha-composited on white
  (``rgb * mask + 1 - mask``, as :meth:`Scene.white_background_images`);
* ``mse_i`` = mean over pixels and channels of ``(render - target)^2`` and ``lpips_i`` = LPIPS(render, target);
* ``area_i`` = a_i = (number of render pixels with alpha > 0) / (H * W), the object-area fraction;
* ``mse_norm_i = mse_i / max(a_i, 1e-3)`` and ``lpips_norm_i = lpips_i / max(a_i, 1e-3)``. The official
  code divides by a_i directly; the floor only matters for an empty render (a_i = 0), where it turns a
  division by zero into a large finite score (1000 x the raw value) so that the view still ranks worst;
* ``psnr_i`` = plain PSNR in dB on the white-background images (not masked, peak 1.0; an exact match
  is reported as 100 dB rather than infinity so results stay JSON-friendly).

Whether LPIPS sees [0, 1] or [-1, 1] inputs is a property of the :class:`LpipsMetric` passed in
(``LpipsConfig.official_01_inputs``), not of this module.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sparseags.lpips_model import LpipsMetric

# Pixels with target mask <= this value are treated as background (official: alpha <= 0.9 * 255).
TARGET_MASK_THRESHOLD = 0.9
# Lower bound on the object-area fraction used for normalisation (guards empty renders).
AREA_FLOOR = 1e-3
# Smallest MSE used for PSNR, so an exact match reads 100 dB instead of infinity.
PSNR_MSE_FLOOR = 1e-10


def prepare_targets(
    targets: Tensor | np.ndarray,  # [V, H, W, 3] RGB in [0, 1], not premultiplied
    target_masks: Tensor | np.ndarray,  # [V, H, W] in [0, 1]
    official: bool = True,
) -> Tensor:  # [V, H, W, 3] on white
    """Targets on a white background: hard threshold at mask 0.9 (official) or alpha compositing."""
    rgb = _as_float_cpu(targets)
    mask = _as_mask(target_masks, rgb, "target_masks", "targets")
    if official:
        return torch.where((mask <= TARGET_MASK_THRESHOLD).unsqueeze(-1), torch.ones_like(rgb), rgb)
    mask = mask.unsqueeze(-1)  # [V, H, W, 1]
    return rgb * mask + (1.0 - mask)


def score_views(
    renders: Tensor | np.ndarray,  # [V, H, W, 3] in [0, 1], composited on white
    alphas: Tensor | np.ndarray,  # [V, H, W] accumulated render opacity
    targets: Tensor | np.ndarray,  # [V, H, W, 3] photos in [0, 1]
    target_masks: Tensor | np.ndarray,  # [V, H, W] photo masks in [0, 1]
    lpips_metric: LpipsMetric | None = None,
    official: bool = True,
    chunk: int = 8,
) -> dict[str, np.ndarray]:
    """Per-view scores (each a float64 array ``[V]``), see the module docstring for definitions.

    Keys: ``"mse"``, ``"area"``, ``"mse_norm"``, ``"psnr"``, and, when `lpips_metric` is given,
    ``"lpips"`` and ``"lpips_norm"``. LPIPS runs over the views in batches of `chunk` without gradients.
    Masks and alphas may also be given as ``[V, H, W, 1]`` (the renderer's layout).
    """
    render = _as_float_cpu(renders)
    alpha = _as_mask(alphas, render, "alphas", "renders")
    target = prepare_targets(targets, target_masks, official)
    if target.shape != render.shape:
        raise ValueError(f"targets {tuple(target.shape)} and renders {tuple(render.shape)} differ in shape")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")

    mse = ((render - target) ** 2).mean(dim=(1, 2, 3)).double()  # [V]
    area = (alpha > 0).double().mean(dim=(1, 2))  # [V]
    area_floored = area.clamp_min(AREA_FLOOR)  # [V]
    scores = {
        "mse": mse,
        "area": area,
        "mse_norm": mse / area_floored,
        "psnr": -10.0 * torch.log10(mse.clamp_min(PSNR_MSE_FLOOR)),
    }
    if lpips_metric is not None:
        lp = _batched_lpips(lpips_metric, render, target, chunk).double()  # [V]
        scores["lpips"] = lp
        scores["lpips_norm"] = lp / area_floored
    return {name: value.numpy() for name, value in scores.items()}


def _batched_lpips(metric: LpipsMetric, render: Tensor, target: Tensor, chunk: int) -> Tensor:
    """LPIPS per view, `chunk` views per forward pass; [V, H, W, 3] inputs, [V] output on the CPU."""
    out = []
    with torch.no_grad():
        for start in range(0, render.shape[0], chunk):
            r = render[start : start + chunk].permute(0, 3, 1, 2)  # [B, 3, H, W]
            t = target[start : start + chunk].permute(0, 3, 1, 2)  # [B, 3, H, W]
            out.append(metric(r, t).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def _as_float_cpu(array: Tensor | np.ndarray) -> Tensor:
    """Detached float32 CPU copy (scores are reported, never back-propagated)."""
    return torch.as_tensor(array).detach().to(device="cpu", dtype=torch.float32)


def _as_mask(mask: Tensor | np.ndarray, rgb: Tensor, mask_name: str, rgb_name: str) -> Tensor:  # [V, H, W]
    """Validate `rgb` as [V, H, W, 3] and return `mask` as a matching [V, H, W] float tensor."""
    m = _as_float_cpu(mask)
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"{rgb_name} must be [V, H, W, 3], got {tuple(rgb.shape)}")
    if m.ndim == 4 and m.shape[-1] == 1:
        m = m[..., 0]  # [V, H, W, 1] -> [V, H, W]
    if m.shape != rgb.shape[:3]:
        raise ValueError(f"{mask_name} {tuple(m.shape)} does not match {rgb_name} {tuple(rgb.shape)}")
    return m
