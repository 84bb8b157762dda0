"""Random Gaussian scenes and ring cameras for tests and benchmarks (not used by the engine)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class GaussianScene:
    """Render-ready Gaussian parameters (see `render_gaussians`)."""

    means: Tensor  # [N, 3]
    quats: Tensor  # [N, 4] wxyz
    scales: Tensor  # [N, 3]
    opacities: Tensor  # [N]
    sh: Tensor  # [N, K, 3]

    def tensors(self) -> list[Tensor]:
        return [self.means, self.quats, self.scales, self.opacities, self.sh]


def random_object_scene(
    num: int,
    sh_degree: int = 3,
    radius: float = 1.0,
    scale_range: tuple[float, float] = (0.005, 0.05),
    opacity_range: tuple[float, float] = (0.3, 1.0),
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> GaussianScene:
    """N Gaussians uniform in a ball, log-uniform scales, random rotations, SH with a grey-ish DC."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(num, 3, generator=gen, dtype=torch.float64)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    means = direction * radius * torch.rand(num, 1, generator=gen, dtype=torch.float64) ** (1 / 3)
    log_lo, log_hi = math.log(scale_range[0]), math.log(scale_range[1])
    scales = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(num, 3, generator=gen, dtype=torch.float64))
    quats = torch.randn(num, 4, generator=gen, dtype=torch.float64)
    lo, hi = opacity_range
    opacities = lo + (hi - lo) * torch.rand(num, generator=gen, dtype=torch.float64)
    num_coeffs = (sh_degree + 1) ** 2
    sh = 0.3 * torch.randn(num, num_coeffs, 3, generator=gen, dtype=torch.float64)
    sh[:, 0, :] = torch.rand(num, 3, generator=gen, dtype=torch.float64) * 2.0 - 0.5
    tensors = [t.to(dtype=dtype, device=device) for t in (means, quats, scales, opacities, sh)]
    return GaussianScene(*tensors)


def look_at_viewmat(campos: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """OpenCV w2c [4, 4] for a camera at `campos` looking at `target`; `up` is world up (-y image)."""
    forward = target - campos
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    if right.norm() < 1e-8:  # looking along `up`: pick any perpendicular right axis
        right = torch.linalg.cross(forward, torch.tensor([1.0, 0.0, 0.0], dtype=campos.dtype))
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    rotation = torch.stack([right, down, forward])  # rows = camera axes in world coordinates
    viewmat = torch.eye(4, dtype=campos.dtype)
    viewmat[:3, :3] = rotation
    viewmat[:3, 3] = -rotation @ campos
    return viewmat


def ring_cameras(
    num_cameras: int,
    width: int,
    height: int,
    distance: float = 2.75,
    fov_deg: float = 49.1,
    elevation_deg: float = 20.0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """Cameras evenly spaced in azimuth around the origin, alternating ±elevation, looking at it.

    Returns viewmats [C, 4, 4] (OpenCV w2c) and Ks [C, 3, 3].
    """
    viewmats = []
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    for i in range(num_cameras):
        azimuth = 2.0 * math.pi * i / num_cameras
        elevation = math.radians(elevation_deg if i % 2 == 0 else -elevation_deg)
        campos = distance * torch.tensor(
            [math.cos(elevation) * math.sin(azimuth), math.sin(elevation), math.cos(elevation) * math.cos(azimuth)],
            dtype=torch.float64,
        )
        viewmats.append(look_at_viewmat(campos, torch.zeros(3, dtype=torch.float64), up))
    focal = 0.5 * width / math.tan(0.5 * math.radians(fov_deg))
    K = torch.tensor(
        [[focal, 0.0, 0.5 * width], [0.0, focal * 1.0, 0.5 * height], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    Ks = K.expand(num_cameras, 3, 3)
    return torch.stack(viewmats).to(dtype=dtype, device=device), Ks.to(dtype=dtype, device=device).clone()
