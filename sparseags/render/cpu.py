"""Fast CPU backend: numba kernels for projection + SH and for tile rasterisation, each wrapped in a
torch.autograd.Function with an explicit backward.

Two Functions rather than one so that `means2d` is a real autograd node: `RenderOutput.means2d.grad`
(densification statistics) works exactly as with gsplat.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import kernels, projection_kernels
from .constants import TILE_SIZE
from .types import RenderOutput


def _numpy(tensor: Tensor) -> np.ndarray:
    return tensor.detach().cpu().contiguous().numpy()


class _ProjectCPU(torch.autograd.Function):
    """(means, quats, scales, sh, viewmats, Ks) -> (means2d, conics, depths, colors, radii)."""

    @staticmethod
    def forward(
        ctx,
        means: Tensor,
        quats: Tensor,
        scales: Tensor,
        sh: Tensor,
        viewmats: Tensor,
        Ks: Tensor,
        width: int,
        height: int,
        degree: int,
    ):
        arrays = [_numpy(t) for t in (means, quats, scales, sh, viewmats, Ks)]
        outputs = projection_kernels.project_forward(*arrays, width, height, degree)
        ctx.arrays = arrays
        ctx.radii = outputs[-1]
        ctx.settings = (width, height, degree, means.device, means.dtype)
        means2d, conics, depths, colors, radii = (torch.from_numpy(x).to(means.device) for x in outputs)
        ctx.mark_non_differentiable(radii)
        return means2d, conics, depths, colors, radii

    @staticmethod
    def backward(ctx, v_means2d: Tensor, v_conics: Tensor, v_depths: Tensor, v_colors: Tensor, _v_radii):
        width, height, degree, device, dtype = ctx.settings
        grads = projection_kernels.project_backward(
            *ctx.arrays,
            width,
            height,
            degree,
            ctx.radii,
            _numpy(v_means2d),
            _numpy(v_conics),
            _numpy(v_depths),
            _numpy(v_colors),
        )
        v_means, v_quats, v_scales, v_sh, v_viewmats = (torch.from_numpy(g).to(device, dtype) for g in grads)
        return v_means, v_quats, v_scales, v_sh, v_viewmats, None, None, None, None


class _RasterizeTiles(torch.autograd.Function):
    """(means2d, conics, colors, opacities, depths, backgrounds) -> (rgb, alpha, depth)."""

    @staticmethod
    def forward(
        ctx,
        means2d: Tensor,
        conics: Tensor,
        colors: Tensor,
        opacities: Tensor,
        depths: Tensor,
        backgrounds: Tensor,
        radii: Tensor,
        width: int,
        height: int,
    ):
        arrays = [_numpy(t) for t in (means2d, conics, colors, opacities, depths, backgrounds)]
        means2d_np, conics_np, colors_np, opacities_np, depths_np, backgrounds_np = arrays
        radii_np = _numpy(radii).astype(np.int32, copy=False)
        tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
        tiles_y = (height + TILE_SIZE - 1) // TILE_SIZE

        rects = kernels.pixel_rects(means2d_np, conics_np, radii_np, width, height)
        depth_order = np.argsort(depths_np, axis=1, kind="stable")
        tile_offsets, isect_ids = kernels.bin_tiles(rects, depth_order, tiles_x, tiles_y)
        rgb, alpha, depth, final_t, n_used = kernels.rasterize_forward(
            means2d_np,
            conics_np,
            colors_np,
            opacities_np,
            depths_np,
            backgrounds_np,
            rects,
            tile_offsets,
            isect_ids,
            width,
            height,
            tiles_x,
        )

        ctx.arrays = arrays
        ctx.binning = (rects, tile_offsets, isect_ids, final_t, n_used)
        ctx.size = (width, height, tiles_x)
        ctx.device = means2d.device
        return tuple(torch.from_numpy(x).to(means2d.device) for x in (rgb, alpha[..., None], depth[..., None]))

    @staticmethod
    def backward(ctx, grad_rgb: Tensor, grad_alpha: Tensor, grad_depth: Tensor):
        means2d_np, conics_np, colors_np, opacities_np, depths_np, backgrounds_np = ctx.arrays
        rects, tile_offsets, isect_ids, final_t, n_used = ctx.binning
        width, height, tiles_x = ctx.size
        dtype = means2d_np.dtype
        grad_rgb_np = _numpy(grad_rgb).astype(dtype, copy=False)
        grad_alpha_np = np.ascontiguousarray(_numpy(grad_alpha)[..., 0], dtype=dtype)
        grad_depth_np = np.ascontiguousarray(_numpy(grad_depth)[..., 0], dtype=dtype)
        isect_grads = kernels.rasterize_backward(
            means2d_np,
            conics_np,
            colors_np,
            opacities_np,
            depths_np,
            backgrounds_np,
            rects,
            tile_offsets,
            isect_ids,
            final_t,
            n_used,
            grad_rgb_np,
            grad_alpha_np,
            grad_depth_np,
            width,
            height,
            tiles_x,
        )
        num_cameras, num = depths_np.shape
        grads = torch.from_numpy(kernels.reduce_isect_grads(isect_grads, isect_ids, tile_offsets, num_cameras, num))
        grads = grads.to(device=ctx.device, dtype=grad_rgb.dtype)  # [C, N, 10]
        grad_backgrounds = None
        if ctx.needs_input_grad[5]:  # rgb = ... + T_final · background
            grad_backgrounds = torch.einsum("chw,chwk->ck", torch.from_numpy(final_t).to(grad_rgb), grad_rgb)
        return (
            grads[..., 0:2],
            grads[..., 2:5],
            grads[..., 5:8],
            grads[..., 8].sum(0),
            grads[..., 9],
            grad_backgrounds,
            None,
            None,
            None,
        )


def render_cpu(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    sh: Tensor,  # [N, K, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    degree: int,
    backgrounds: Tensor,  # [C, 3]
) -> RenderOutput:
    """The cpu backend of `render_gaussians` (inputs already validated)."""
    means2d, conics, depths, colors, radii = _ProjectCPU.apply(
        means, quats, scales, sh, viewmats, Ks, width, height, degree
    )
    rgb, alpha, depth = _RasterizeTiles.apply(
        means2d, conics, colors, opacities, depths, backgrounds, radii, width, height
    )
    if means2d.requires_grad:
        means2d.retain_grad()
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, means2d=means2d, radii=radii, visible=radii > 0)
