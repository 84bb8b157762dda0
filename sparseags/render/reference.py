"""Brute-force pure-torch rasteriser: every Gaussian against every pixel, autograd for all gradients.

Obviously-correct oracle for the fast backends; memory is O(C·H·W·N), so keep it to small problems
(N ≲ 200 at ≤ 32×32 in tests, a few thousand at most interactively).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .constants import MAX_ALPHA, MAX_MAHALANOBIS_HALF, MIN_ALPHA, MIN_TRANSMITTANCE
from .projection import Projected


def pixel_centres(width: int, height: int, like: Tensor) -> Tensor:
    """[H·W, 2] (u, v) pixel centres, row-major; pixel (i, j) is centred at (j + 0.5, i + 0.5)."""
    us = torch.arange(width, dtype=like.dtype, device=like.device) + 0.5
    vs = torch.arange(height, dtype=like.dtype, device=like.device) + 0.5
    grid_v, grid_u = torch.meshgrid(vs, us, indexing="ij")
    return torch.stack([grid_u.reshape(-1), grid_v.reshape(-1)], dim=-1)


def composite_front_to_back(
    alphas: Tensor,  # [P, M] fragment alphas in depth order, 0 where a fragment is skipped
    valid: Tensor,  # [P, M] bool, fragment passed the ellipse and 1/255 tests
    features: Tensor,  # [M, F] per-fragment features (rgb, depth, ...)
) -> tuple[Tensor, Tensor]:
    """Front-to-back alpha compositing with the transmittance cutoff.

    A pixel stops at the first valid fragment after which T would drop below 1e-4; that fragment
    and all later ones are not composited. Returns (Σ wᵢ fᵢ [P, F], final transmittance [P]).
    """
    if alphas.shape[1] == 0:  # nothing visible: empty sums, untouched transmittance
        return (alphas.new_zeros(alphas.shape[0], features.shape[1]), alphas.new_ones(alphas.shape[0]))
    ones = torch.ones_like(alphas[:, :1])
    one_minus = 1.0 - alphas
    transmittance_before = torch.cumprod(torch.cat([ones, one_minus[:, :-1]], dim=1), dim=1)
    stops_here = valid & (transmittance_before * one_minus < MIN_TRANSMITTANCE)
    # cumsum > 0 from the stopping fragment on: exclude it and everything behind it.
    included = torch.cumsum(stops_here.to(torch.int32), dim=1) == 0
    alphas = torch.where(included, alphas, torch.zeros_like(alphas))
    one_minus = 1.0 - alphas
    transmittance_before = torch.cumprod(torch.cat([ones, one_minus[:, :-1]], dim=1), dim=1)
    weights = alphas * transmittance_before  # [P, M]
    final_transmittance = transmittance_before[:, -1] * one_minus[:, -1]
    return weights @ features, final_transmittance


def rasterize_reference(
    projected: Projected,
    colors: Tensor,  # [C, N, 3]
    opacities: Tensor,  # [N]
    backgrounds: Tensor,  # [C, 3]
    width: int,
    height: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Rasterise C views. Returns rgb [C, H, W, 3], alpha [C, H, W, 1], depth [C, H, W, 1]."""
    num_cameras = colors.shape[0]
    pixels = pixel_centres(width, height, colors)  # [P, 2]
    rgbs, alphas_out, depths_out = [], [], []
    for cam in range(num_cameras):
        index = torch.nonzero(projected.visible[cam]).squeeze(-1)
        index = index[torch.argsort(projected.depths[cam, index].detach(), stable=True)]
        mean2d = projected.means2d[cam, index]  # [M, 2]
        conic_a, conic_b, conic_c = projected.conics[cam, index].unbind(-1)  # [M] each
        delta = pixels[:, None, :] - mean2d[None, :, :]  # [P, M, 2]
        dx, dy = delta[..., 0], delta[..., 1]
        sigma = 0.5 * (conic_a * dx * dx + conic_c * dy * dy) + conic_b * dx * dy  # [P, M]
        alpha = torch.clamp(opacities[index] * torch.exp(-sigma), max=MAX_ALPHA)
        valid = (sigma <= MAX_MAHALANOBIS_HALF) & (alpha >= MIN_ALPHA)
        alpha = torch.where(valid, alpha, torch.zeros_like(alpha))
        features = torch.cat(
            [
                colors[cam, index],
                torch.ones_like(index, dtype=colors.dtype)[:, None],
                projected.depths[cam, index][:, None],
            ],
            dim=-1,
        )  # [M, 5]: rgb, 1 (alpha), z
        accumulated, final_t = composite_front_to_back(alpha, valid, features)
        rgbs.append(accumulated[:, :3] + final_t[:, None] * backgrounds[cam])
        alphas_out.append(accumulated[:, 3:4])
        depths_out.append(accumulated[:, 4:5])
    shape = (num_cameras, height, width)
    return (
        torch.stack(rgbs).reshape(*shape, 3),
        torch.stack(alphas_out).reshape(*shape, 1),
        torch.stack(depths_out).reshape(*shape, 1),
    )
