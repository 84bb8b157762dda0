"""Differentiable 3D Gaussian renderer with camera-pose gradients.

Backends: "cpu" (numba tile rasteriser, ours), "gsplat" (CUDA), "reference" (brute-force torch
oracle); "auto" picks gsplat for CUDA tensors when it is installed, else cpu.
"""

from .api import BACKENDS, RenderInputError, render_gaussians, resolve_backend
from .types import RenderOutput

__all__ = ["BACKENDS", "RenderInputError", "RenderOutput", "render_gaussians", "resolve_backend"]
