"""Output container shared by every render backend."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class RenderOutput:
    """What `render_gaussians` returns (identical layout for all backends).

    Images are channels-last. `depth` is the *accumulated* view-space depth Σ wᵢ zᵢ, so the
    expected depth of a pixel is `depth / alpha` where alpha > 0.
    """

    rgb: Tensor  # [C, H, W, 3]
    alpha: Tensor  # [C, H, W, 1]
    depth: Tensor  # [C, H, W, 1]
    means2d: Tensor  # [C, N, 2] pixels (meaningful where visible); retain_grad() set when it requires grad
    radii: Tensor  # [C, N] int32, 0 = not visible
    visible: Tensor  # [C, N] bool
