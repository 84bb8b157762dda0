"""`render_gaussians`: input checking and backend dispatch (docs/ARCHITECTURE.md, "Renderer")."""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from .projection import project_gaussians
from .sh import sh_degree_from_coeffs, sh_to_colors
from .types import RenderOutput

BACKENDS = ("auto", "cpu", "reference", "gsplat")


class RenderInputError(ValueError):
    """Inputs of `render_gaussians` have wrong shapes, dtypes, devices or values."""


def _check_shape(name: str, tensor: Tensor, shape: tuple[int | None, ...]) -> None:
    ok = tensor.ndim == len(shape) and all(s is None or s == t for s, t in zip(shape, tensor.shape))
    if not ok:
        expected = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise RenderInputError(f"render_gaussians: {name} must have shape {expected}, got {list(tensor.shape)}")


def _check_inputs(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    sh: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
) -> None:
    num = means.shape[0] if means.ndim == 2 else -1
    _check_shape("means", means, (None, 3))
    _check_shape("quats", quats, (num, 4))
    _check_shape("scales", scales, (num, 3))
    _check_shape("opacities", opacities, (num,))
    _check_shape("sh", sh, (num, None, 3))
    _check_shape("viewmats", viewmats, (None, 4, 4))
    _check_shape("Ks", Ks, (viewmats.shape[0], 3, 3))
    tensors = {
        "means": means,
        "quats": quats,
        "scales": scales,
        "opacities": opacities,
        "sh": sh,
        "viewmats": viewmats,
        "Ks": Ks,
    }
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise RenderInputError(f"render_gaussians: {name} must be a floating-point tensor, got {tensor.dtype}")
        if tensor.dtype != means.dtype or tensor.device != means.device:
            raise RenderInputError(
                f"render_gaussians: {name} is {tensor.dtype} on {tensor.device}, "
                f"but means is {means.dtype} on {means.device}"
            )
    if int(width) <= 0 or int(height) <= 0:
        raise RenderInputError(f"render_gaussians: width and height must be positive, got {width}x{height}")


def _backgrounds(background: Tensor | None, num_cameras: int, like: Tensor) -> Tensor:
    """[3] or [C, 3] (or None = black) -> [C, 3] in the dtype/device of `like`."""
    if background is None:
        return like.new_zeros(num_cameras, 3)
    background = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if background.shape == (3,):
        return background.expand(num_cameras, 3)
    if background.shape == (num_cameras, 3):
        return background
    raise RenderInputError(
        f"render_gaussians: background must have shape [3] or [{num_cameras}, 3], got {list(background.shape)}"
    )


def gsplat_available() -> bool:
    """True when the gsplat package is installed (importing it is deferred to the backend)."""
    return importlib.util.find_spec("gsplat") is not None


def resolve_backend(backend: str, device: torch.device) -> str:
    """ "auto" -> "gsplat" for CUDA tensors when gsplat is installed, else "cpu"."""
    if backend not in BACKENDS:
        raise RenderInputError(f"render_gaussians: unknown backend {backend!r}, expected one of {BACKENDS}")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "cpu"
    if backend == "gsplat" and device.type != "cuda":
        raise RenderInputError("render_gaussians: backend 'gsplat' needs CUDA tensors")
    return backend


def render_gaussians(
    means: Tensor,  # [N, 3] world
    quats: Tensor,  # [N, 4] wxyz, need not be normalised
    scales: Tensor,  # [N, 3] linear
    opacities: Tensor,  # [N] in [0, 1]
    sh: Tensor,  # [N, K, 3], K = (degree + 1)², DC at index 0
    viewmats: Tensor,  # [C, 4, 4] OpenCV world-to-camera
    Ks: Tensor,  # [C, 3, 3] pixels
    width: int,
    height: int,
    sh_degree: int | None = None,
    background: Tensor | None = None,  # [3] or [C, 3]; None = black
    backend: str = "auto",
) -> RenderOutput:
    """Render 3D Gaussians into C views; differentiable w.r.t. all Gaussian parameters and viewmats.

    colour = SH(normalize(mean - camera centre)) + 0.5 clamped at 0; EWA projection with a +0.3 px²
    low-pass; z < 0.01 culled; 3σ ellipse; alpha = min(0.99, o·g), skipped below 1/255; front-to-back
    in view-space depth order, stopping before T < 1e-4; rgb = Σ cᵢwᵢ + T·background.
    """
    _check_inputs(means, quats, scales, opacities, sh, viewmats, Ks, width, height)
    width, height = int(width), int(height)
    try:
        max_degree = sh_degree_from_coeffs(sh.shape[1])
    except ValueError as error:
        raise RenderInputError(f"render_gaussians: {error}") from None
    degree = max_degree if sh_degree is None else int(sh_degree)
    if not 0 <= degree <= max_degree:
        raise RenderInputError(f"render_gaussians: sh_degree={sh_degree} but sh holds degree {max_degree}")
    backgrounds = _backgrounds(background, viewmats.shape[0], means)
    backend = resolve_backend(backend, means.device)
    if backend == "cpu":
        from .cpu import render_cpu

        return render_cpu(means, quats, scales, opacities, sh, viewmats, Ks, width, height, degree, backgrounds)

    colors = sh_to_colors(sh, means, viewmats, degree)  # [C, N, 3]
    if backend == "gsplat":
        from .gsplat_backend import render_gsplat

        return render_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds)

    from .reference import rasterize_reference

    projected = project_gaussians(means, quats, scales, viewmats, Ks, width, height)
    rgb, alpha, depth = rasterize_reference(projected, colors, opacities, backgrounds, width, height)
    if projected.means2d.requires_grad:
        projected.means2d.retain_grad()
    return RenderOutput(
        rgb=rgb, alpha=alpha, depth=depth, means2d=projected.means2d, radii=projected.radii, visible=projected.visible
    )
