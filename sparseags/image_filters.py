"""Image filters shared by the joint loop (its blur schedule) and the pose solver (its coarse levels).

A module of its own so that ``recon`` and ``pose_solver`` both use it without importing each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """[V, H, W, C] blurred by a separable Gaussian of std `sigma` pixels (replicate padding; 0 = unchanged)."""
    if sigma <= 0.0:
        return images
    radius = max(1, int(3.0 * sigma + 0.5))
    taps = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[-1]
    x = F.pad(images.permute(0, 3, 1, 2), (radius, radius, radius, radius), mode="replicate")  # [V, C, H', W']
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return x.permute(0, 2, 3, 1).contiguous()
