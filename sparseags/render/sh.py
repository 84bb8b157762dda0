"""Real spherical harmonics up to degree 3, with the constants and sign conventions of 3DGS.

The basis ordering and signs match `computeColorFromSH` in the 3DGS CUDA rasterizer (and gsplat),
so SH coefficients trained with either load here unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_degree_from_coeffs(num_coeffs: int) -> int:
    """K = (degree + 1)² coefficients -> degree; raises ValueError for other K or degree > 3."""
    degree = math.isqrt(num_coeffs) - 1
    if num_coeffs < 1 or (degree + 1) ** 2 != num_coeffs or degree > 3:
        raise ValueError(f"sh: expected K in (1, 4, 9, 16) coefficients, got K={num_coeffs}")
    return degree


def sh_basis(dirs: Tensor, degree: int) -> Tensor:
    """SH basis functions at unit directions.

    dirs: [..., 3] unit vectors. Returns [..., (degree + 1)²].
    """
    x, y, z = dirs.unbind(-1)
    terms = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        terms += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        terms += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        terms += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(terms, dim=-1)


def camera_centres(viewmats: Tensor) -> Tensor:
    """World-space camera centres of OpenCV world-to-camera matrices: c = -Rᵀ t.

    viewmats: [C, 4, 4]. Returns [C, 3]. Differentiable (view-dependent colour feeds back to the pose).
    """
    rotation = viewmats[:, :3, :3]  # [C, 3, 3]
    translation = viewmats[:, :3, 3]  # [C, 3]
    return -torch.einsum("cji,cj->ci", rotation, translation)


def sh_to_colors(sh: Tensor, means: Tensor, viewmats: Tensor, degree: int) -> Tensor:
    """View-dependent colour per camera: SH(normalize(mean - camera centre)) + 0.5, clamped at 0.

    sh: [N, K, 3], means: [N, 3], viewmats: [C, 4, 4]. Returns [C, N, 3].
    Only the first (degree + 1)² coefficients are used.
    """
    num_used = (degree + 1) ** 2
    if degree == 0:
        rgb = SH_C0 * sh[:, 0, :]  # [N, 3]
        colors = rgb.unsqueeze(0).expand(viewmats.shape[0], -1, -1)
    else:
        dirs = means.unsqueeze(0) - camera_centres(viewmats).unsqueeze(1)  # [C, N, 3]
        dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        basis = sh_basis(dirs, degree)  # [C, N, num_used]
        colors = torch.einsum("cnk,nkd->cnd", basis, sh[:, :num_used, :])
    return (colors + 0.5).clamp_min(0.0)
