"""gsplat (CUDA) backend: `gsplat.rasterization` with colours precomputed by `sh.py`.

Colours are passed as [C, N, 3] so that SH evaluation is identical across backends. Known
differences from the cpu/reference semantics, all confined to faint fragments:
* gsplat does not apply the 3σ-ellipse test: every pixel of the Gaussian's (opacity-aware) bounding
  box whose alpha reaches 1/255 is composited, so pixels just outside the ellipse receive alpha up to
  o·exp(-4.5) ≈ 0.011·o that the cpu backend skips;
* its radii come from an opacity-aware 3.33σ axis-aligned bound, so `radii` and `visible` can differ
  slightly for faint or elongated Gaussians (RenderOutput.radii is the max over gsplat's x/y radii);
* alpha is clamped at 0.999 instead of 0.99.
gsplat is imported lazily: this module is only loaded for CUDA tensors.
"""

from __future__ import annotations

from torch import Tensor

from .projection import EPS2D, NEAR_PLANE
from .types import RenderOutput


def render_gsplat(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [C, N, 3], already SH-evaluated (+0.5, clamped)
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    backgrounds: Tensor,  # [C, 3]
) -> RenderOutput:
    """Render with gsplat.rasterization (RGB+D mode: the 4th channel is the accumulated Σ w z)."""
    import gsplat  # lazy: needs CUDA, and importing it is slow

    render, alpha, meta = gsplat.rasterization(
        means,
        quats,
        scales,
        opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        near_plane=NEAR_PLANE,
        eps2d=EPS2D,
        radius_clip=0.0,
        packed=False,
        sh_degree=None,
        backgrounds=backgrounds,
        render_mode="RGB+D",
        rasterize_mode="classic",
    )
    means2d = meta["means2d"]  # [C, N, 2]
    if means2d.requires_grad:
        means2d.retain_grad()
    radii = meta["radii"]
    if radii.ndim == 3:  # gsplat >= 1.5 returns per-axis radii [C, N, 2]
        radii = radii.max(dim=-1).values
    radii = radii.int()
    return RenderOutput(
        rgb=render[..., :3], alpha=alpha, depth=render[..., 3:4], means2d=means2d, radii=radii, visible=radii > 0
    )
