"""EWA projection of 3D Gaussians to 2D screen-space Gaussians (torch, autograd-differentiable).

Shared by the `cpu` and `reference` backends so that both rasterise exactly the same 2D Gaussians;
autograd through this module gives the exact gradients w.r.t. means, quats, scales *and* the
world-to-camera matrices, including the term through the rotation W inside the 2D covariance
J W Σ Wᵀ Jᵀ (which the official SparseAGS rasterizer drops).

Conventions (docs/ARCHITECTURE.md): OpenCV w2c, K in pixels, pixel (i, j) centred at (j + .5, i + .5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

NEAR_PLANE = 0.01  # Gaussians with view-space z < NEAR_PLANE are culled
EPS2D = 0.3  # px² low-pass added to the 2D covariance (anti-aliasing, as in 3DGS/gsplat)
# The Jacobian is evaluated at x/z clamped to 1.3x the half field of view (3DGS and gsplat do the
# same): far off-screen Gaussians otherwise get huge, meaningless screen-space footprints.
FOV_CLAMP_MARGIN = 0.3
MAX_RADIUS = 1 << 20  # keeps radii of degenerate (huge) Gaussians inside int32


@dataclass
class Projected:
    """Screen-space Gaussians for C cameras."""

    means2d: Tensor  # [C, N, 2] pixels
    conics: Tensor  # [C, N, 3] upper triangle (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
    depths: Tensor  # [C, N] view-space z
    radii: Tensor  # [C, N] int32, ceil(3·sqrt(largest eigenvalue)); 0 = culled
    visible: Tensor  # [C, N] bool


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices of wxyz quaternions (normalised here). quats: [N, 4] -> [N, 3, 3]."""
    quats = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = quats.unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return rot.reshape(quats.shape[:-1] + (3, 3))


def project_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] wxyz
    scales: Tensor,  # [N, 3] linear
    viewmats: Tensor,  # [C, 4, 4] OpenCV w2c
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
) -> Projected:
    """Project Gaussians: 2D mean, conic (inverse of J W Σ Wᵀ Jᵀ + 0.3 I), depth, 3σ radius."""
    rot_w2c = viewmats[:, :3, :3]  # [C, 3, 3]
    t_w2c = viewmats[:, :3, 3]  # [C, 3]
    means_cam = torch.einsum("cij,nj->cni", rot_w2c, means) + t_w2c[:, None, :]  # [C, N, 3]
    # Σ = M Mᵀ with M = R(q) diag(s); in camera space W M, projected J W M, so cov2d = (JWM)(JWM)ᵀ.
    scaled_rot = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3]
    cam_scaled_rot = torch.einsum("cij,njk->cnik", rot_w2c, scaled_rot)  # [C, N, 3, 3]

    x, y, z = means_cam.unbind(-1)  # [C, N] each
    in_front = z >= NEAR_PLANE
    # Culled Gaussians get a harmless z so that no inf/NaN reaches the (masked) gradients.
    z_safe = torch.where(in_front, z, torch.ones_like(z))
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    lim_x_pos = (width - cx) / fx + FOV_CLAMP_MARGIN * 0.5 * width / fx
    lim_x_neg = cx / fx + FOV_CLAMP_MARGIN * 0.5 * width / fx
    lim_y_pos = (height - cy) / fy + FOV_CLAMP_MARGIN * 0.5 * height / fy
    lim_y_neg = cy / fy + FOV_CLAMP_MARGIN * 0.5 * height / fy
    x_over_z = torch.maximum(torch.minimum(x / z_safe, lim_x_pos), -lim_x_neg)
    y_over_z = torch.maximum(torch.minimum(y / z_safe, lim_y_pos), -lim_y_neg)

    # Rows of J W M with J = [[fx/z, 0, -fx x/z²], [0, fy/z, -fy y/z²]].
    row_u = (fx / z_safe)[..., None] * (cam_scaled_rot[..., 0, :] - x_over_z[..., None] * cam_scaled_rot[..., 2, :])
    row_v = (fy / z_safe)[..., None] * (cam_scaled_rot[..., 1, :] - y_over_z[..., None] * cam_scaled_rot[..., 2, :])
    cov_a = (row_u * row_u).sum(-1) + EPS2D  # [C, N]
    cov_b = (row_u * row_v).sum(-1)
    cov_c = (row_v * row_v).sum(-1) + EPS2D
    det = cov_a * cov_c - cov_b * cov_b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([cov_c / det_safe, -cov_b / det_safe, cov_a / det_safe], dim=-1)  # [C, N, 3]

    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], dim=-1)  # [C, N, 2]

    with torch.no_grad():
        half_gap = 0.5 * (cov_a - cov_c)
        largest_eig = 0.5 * (cov_a + cov_c) + torch.sqrt(half_gap * half_gap + cov_b * cov_b)
        radius = torch.ceil(3.0 * torch.sqrt(largest_eig))
        finite = torch.isfinite(radius) & torch.isfinite(means2d).all(-1) & torch.isfinite(conics).all(-1)
        radius = torch.nan_to_num(radius, nan=0.0, posinf=float(MAX_RADIUS)).clamp(0, MAX_RADIUS)
        u, v = means2d.detach().unbind(-1)
        on_screen = (u + radius > 0) & (u - radius < width) & (v + radius > 0) & (v - radius < height)
        visible = in_front & (det > 0) & finite & on_screen & (radius > 0)
        radii = torch.where(visible, radius, torch.zeros_like(radius)).to(torch.int32)

    return Projected(means2d=means2d, conics=conics, depths=z, radii=radii, visible=visible)
