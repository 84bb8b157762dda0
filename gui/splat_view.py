"""Offscreen GLSL splat renderer for the debugger's orbit view (OpenGL 3.3 core through moderngl).

DearPyGui cannot run user shaders inside its own render pass, so the orbit view renders offscreen
(a standalone moderngl context: GLX under a DISPLAY such as Xvfb, EGL without one) into a float
framebuffer and reads it back to numpy for a DearPyGui raw texture.

Conventions (docs/ARCHITECTURE.md): cameras are OpenCV world-to-camera ``w2c [4, 4]`` plus pixel
``K [3, 3]``; pixel (row i, col j) is centred at (j + 0.5, i + 0.5). The shaders (shaders/splat.vert,
shaders/splat.frag) follow the engine renderer's semantics: EWA with the +0.3 px^2 low-pass, 3 sigma
ellipse, alpha = min(0.99, o g), fragments below 1/255 skipped, colour = SH(view dir) + 0.5 clamped
at 0 (evaluated on the CPU, degree <= 3), splats composited in view-space depth order (back to front
with SRC_ALPHA / ONE_MINUS_SRC_ALPHA blending, which equals the engine's front-to-back sum except for
its T < 1e-4 early stop).

Progressive rendering (:class:`ProgressiveRenderer`): while the orbit camera moves, frames are drawn at a
fraction of the size (``render(..., size=(w, h), interactive=True)``: one GL point per splat instead of a
quad, SH colours kept from the last full frame); once the camera has been still for a moment the full
size is drawn again (the policy, pure logic, is :class:`gui.orbit.ProgressivePolicy`).

Sorting is by view-space z, which depends only on the viewing direction (moving the camera adds the
same constant to every z), so the order is recomputed only when the direction turned by more than
``resort_angle_deg`` since the last sort (antimatter15's "1 %" rule, as an angle); ``sort_count``
counts sorts. Colours are re-evaluated whenever the camera centre moves (exact view-dependent SH).

A moderngl context is bound to the thread that created it: create and use a ``SplatView`` on one
thread (the GUI's main thread).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from sparseags.render.projection import NEAR_PLANE, quat_to_rotmat
from sparseags.render.sh import SH_C0, SH_C1, SH_C2, SH_C3, sh_degree_from_coeffs, sh_to_colors

__all__ = [
    "GLUnavailableError",
    "RENDER_MODES",
    "RenderLayers",
    "SplatView",
    "EngineFallbackView",
    "create_gl_context",
    "covariances_from_scales_quats",
    "make_orbit_renderer",
    "ProgressiveFrame",
    "ProgressiveRenderer",
    "scale_intrinsics",
    "sh_colors_numpy",
    "turbo_lut",
]

logger = logging.getLogger(__name__)

SHADER_DIR = Path(__file__).resolve().parent.parent / "shaders"
RENDER_MODES = {"rgb": 0, "depth": 1, "alpha": 2, "centres": 3, "ellipsoids": 4}
TEXTURE_WIDTH = 2048  # texels per row of the per-splat data textures
COLORMAP_SIZE = 256


class GLUnavailableError(RuntimeError):
    """No OpenGL 3.3 core context could be created (no display, no EGL, or too old a driver)."""


@dataclass
class RenderLayers:
    """Float images of one view, the layout of the engine's ``RenderOutput`` for a single camera."""

    rgb: np.ndarray  # [H, W, 3] float32, composited over the background
    alpha: np.ndarray  # [H, W, 1] float32, 1 - final transmittance
    depth: np.ndarray  # [H, W, 1] float32, accumulated sum_i w_i z_i (divide by alpha for the mean depth)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------
@dataclass
class _Gaussians:
    """Validated Gaussians: torch tensors on their original device (for sorting and SH)."""

    means: Tensor  # [N, 3] float32
    quats: Tensor  # [N, 4] wxyz
    scales: Tensor  # [N, 3] linear
    opacities: Tensor  # [N] in [0, 1]
    sh: Tensor  # [N, K, 3]
    sh_degree: int

    @property
    def count(self) -> int:
        return int(self.means.shape[0])


def _to_tensor(value: Any, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().to(torch.float32)
    try:
        return torch.as_tensor(np.asarray(value, dtype=np.float32))
    except (TypeError, ValueError) as err:
        raise ValueError(f"set_gaussians: {name} is not a numeric array ({err})") from None


def _check_shape(tensor: Tensor, shape: tuple[int | None, ...], name: str) -> None:
    ok = tensor.ndim == len(shape) and all(s is None or s == t for s, t in zip(shape, tensor.shape))
    if not ok:
        expected = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"set_gaussians: {name} must have shape {expected}, got {list(tensor.shape)}")


def _validate_gaussians(
    means: Any, quats: Any, scales: Any, opacities: Any, sh: Any, sh_degree: int | None
) -> _Gaussians:
    tensors = {
        name: _to_tensor(value, name)
        for name, value in (
            ("means", means),
            ("quats", quats),
            ("scales", scales),
            ("opacities", opacities),
            ("sh", sh),
        )
    }
    num = tensors["means"].shape[0] if tensors["means"].ndim == 2 else -1
    _check_shape(tensors["means"], (None, 3), "means")
    _check_shape(tensors["quats"], (num, 4), "quats")
    _check_shape(tensors["scales"], (num, 3), "scales")
    _check_shape(tensors["opacities"], (num,), "opacities")
    _check_shape(tensors["sh"], (num, None, 3), "sh")
    max_degree = sh_degree_from_coeffs(tensors["sh"].shape[1])
    degree = max_degree if sh_degree is None else int(sh_degree)
    if not 0 <= degree <= max_degree:
        raise ValueError(f"set_gaussians: sh_degree={sh_degree} but sh holds degree {max_degree}")
    device = tensors["means"].device
    for name, tensor in tensors.items():
        if tensor.device != device:
            raise ValueError(f"set_gaussians: {name} is on {tensor.device} but means is on {device}")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"set_gaussians: {name} contains NaN or inf")
    return _Gaussians(sh_degree=degree, **tensors)


def _camera_arrays(w2c: Any, K: Any) -> tuple[np.ndarray, np.ndarray]:
    """(w2c [4, 4], K [3, 3]) as float64 numpy; ValueError naming the bad argument."""
    arrays = []
    for value, shape, name in ((w2c, (4, 4), "w2c"), (K, (3, 3), "K")):
        if isinstance(value, Tensor):
            value = value.detach().cpu().numpy()
        array = np.asarray(value, dtype=np.float64)
        if array.shape != shape:
            raise ValueError(f"render: {name} must have shape {list(shape)}, got {list(array.shape)}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"render: {name} contains NaN or inf")
        arrays.append(array)
    return arrays[0], arrays[1]


def _check_mode(mode: str) -> int:
    if mode not in RENDER_MODES:
        raise ValueError(f"render: unknown mode {mode!r}, expected one of {tuple(RENDER_MODES)}")
    return RENDER_MODES[mode]


def covariances_from_scales_quats(quats: Tensor, scales: Tensor) -> np.ndarray:
    """Unique entries of ``S = R diag(s)^2 R^T`` [N, 6] float32 as (S00, S01, S02, S11, S12, S22).

    quats: [N, 4] wxyz (normalised here); scales: [N, 3] linear. Computed in float64.
    """
    rotation = quat_to_rotmat(quats.detach().cpu().double())  # [N, 3, 3]
    scaled = rotation * scales.detach().cpu().double()[:, None, :]  # R diag(s)
    cov = scaled @ scaled.transpose(-1, -2)  # [N, 3, 3]
    rows, cols = (0, 0, 0, 1, 1, 2), (0, 1, 2, 1, 2, 2)
    return cov[:, rows, cols].numpy().astype(np.float32)


def sh_colors_numpy(sh: np.ndarray, means: np.ndarray, campos: np.ndarray, degree: int) -> np.ndarray:
    """``SH(normalize(mean - campos)) + 0.5`` clamped at 0, [N, 3] float32: numpy twin of
    :func:`sparseags.render.sh.sh_to_colors` (same constants and basis order, checked in the tests).

    Used for CPU data because numpy's single-threaded elementwise ops are ~10x faster here than
    torch's OpenMP kernels when llvmpipe's render threads and other processes share the cores.
    sh: [N, K, 3], means: [N, 3], campos: [3].
    """
    colors = SH_C0 * sh[:, 0, :]
    if degree > 0:
        dirs = means - campos
        dirs = dirs / np.maximum(np.linalg.norm(dirs, axis=-1, keepdims=True), 1e-12)
        x, y, z = dirs[:, 0:1], dirs[:, 1:2], dirs[:, 2:3]
        terms = [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
        if degree > 1:
            xx, yy, zz = x * x, y * y, z * z
            terms += [
                SH_C2[0] * x * y,
                SH_C2[1] * y * z,
                SH_C2[2] * (2.0 * zz - xx - yy),
                SH_C2[3] * x * z,
                SH_C2[4] * (xx - yy),
            ]
        if degree > 2:
            terms += [
                SH_C3[0] * y * (3.0 * xx - yy),
                SH_C3[1] * x * y * z,
                SH_C3[2] * y * (4.0 * zz - xx - yy),
                SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
                SH_C3[4] * x * (4.0 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy),
                SH_C3[6] * x * (xx - 3.0 * yy),
            ]
        for k, term in enumerate(terms, start=1):
            colors = colors + term * sh[:, k, :]
    return np.maximum(colors + 0.5, 0.0).astype(np.float32)


def turbo_lut(size: int = COLORMAP_SIZE) -> np.ndarray:
    """matplotlib's "turbo" colour map sampled at ``size`` points [size, 3] float32 (near = blue)."""
    from matplotlib import colormaps  # matplotlib is only needed for the depth mode's table

    return colormaps["turbo"](np.linspace(0.0, 1.0, size))[:, :3].astype(np.float32)


def _apply_lut(values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Linear interpolation of a [S, 3] table at ``values`` in [0, 1]; returns [..., 3]."""
    position = np.clip(values, 0.0, 1.0) * (len(lut) - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, len(lut) - 1)
    frac = (position - low)[..., None]
    return lut[low] * (1.0 - frac) + lut[high] * frac


def _auto_depth_range(means: Tensor, w2c: np.ndarray) -> tuple[float, float]:
    """1st-99th percentile of the view-space depth of the means in front of the camera."""
    z = means.detach().cpu().double().numpy() @ w2c[2, :3] + w2c[2, 3]
    z = z[z >= NEAR_PLANE]
    if z.size == 0:
        return NEAR_PLANE, 1.0
    low, high = np.percentile(z, [1.0, 99.0])
    return float(low), float(max(high, low + 1e-6))


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(rgb * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# GL context
# ----------------------------------------------------------------------------------------------
def create_gl_context(backend: str | None = None) -> Any:
    """Standalone OpenGL >= 3.3 core context (moderngl).

    backend: None tries GLX when ``DISPLAY`` is set (e.g. under ``xvfb-run``) and then EGL (headless
    Mesa); "x11" or "egl" force one. Raises :class:`GLUnavailableError` with a one-line reason.
    """
    try:
        import moderngl
    except ImportError as err:
        raise GLUnavailableError(f"moderngl is not installed ({err})") from None
    if backend is None:
        attempts = (["x11"] if os.environ.get("DISPLAY") else []) + ["egl"]
    elif backend in ("x11", "egl"):
        attempts = [backend]
    else:
        raise ValueError(f"create_gl_context: backend must be None, 'x11' or 'egl', got {backend!r}")
    reasons = []
    for attempt in attempts:
        kwargs = {"backend": "egl"} if attempt == "egl" else {}
        try:
            return moderngl.create_standalone_context(require=330, **kwargs)
        except Exception as err:  # glcontext raises plain Exception for every failure
            reasons.append(f"{attempt}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    raise GLUnavailableError("no OpenGL 3.3 context (" + "; ".join(reasons) + ")")


def _read_shader(name: str) -> str:
    path = SHADER_DIR / name
    try:
        return path.read_text()
    except OSError as err:
        raise GLUnavailableError(f"cannot read shader {path}: {err.strerror}") from None


# ----------------------------------------------------------------------------------------------
# GLSL renderer
# ----------------------------------------------------------------------------------------------
class SplatView:
    """Offscreen GLSL splat renderer of a fixed ``width x height``.

    Args:
        width, height: image size in pixels.
        resort_angle_deg: re-sort when the viewing direction turned by more than this since the last
            sort (0 = sort every frame the direction changes at all).
        point_radius: half size in pixels of the dots of the "centres" mode.
        ellipse_sigma: the "ellipsoids" mode draws each splat's k-sigma ellipse (k = 1 or 2 typically).
        ellipse_min_opacity: the "ellipsoids" mode hides splats below this opacity.
        backend: None (auto), "x11" or "egl"; see :func:`create_gl_context`.
    """

    def __init__(
        self,
        width: int,
        height: int,
        resort_angle_deg: float = 1.0,
        point_radius: float = 1.5,
        ellipse_sigma: float = 2.0,
        ellipse_min_opacity: float = 0.1,
        backend: str | None = None,
    ) -> None:
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"SplatView: width and height must be positive, got {width}x{height}")
        self.ctx = create_gl_context(backend)
        import moderngl  # importable: create_gl_context succeeded

        self.width, self.height = int(width), int(height)
        self.resort_angle_deg = float(resort_angle_deg)
        self.point_radius = float(point_radius)
        self.ellipse_sigma = float(ellipse_sigma)
        self.ellipse_min_opacity = float(ellipse_min_opacity)
        self.sort_count = 0
        self.color_update_count = 0
        self.last_timings: dict[str, float] = {}
        self._gl = moderngl
        self._gl_renderer = str(self.ctx.info.get("GL_RENDERER", "unknown"))  # queried while current
        # Programs specialised per (fragment path, depth output), compiled on first use; compiling the
        # default one now surfaces shader/driver problems as GLUnavailableError at construction.
        self._programs: dict[tuple[int, bool, bool], Any] = {}
        try:
            self._program_for(RENDER_MODES["rgb"], depth_layer=False)
        except moderngl.Error as err:
            self.ctx.release()
            raise GLUnavailableError(f"splat shaders failed to compile: {str(err).strip().splitlines()[0]}") from None
        size = (self.width, self.height)
        self._color_target = self.ctx.texture(size, 4, dtype="f4")
        self._depth_target = self.ctx.texture(size, 4, dtype="f4")
        self._fbo_color = self.ctx.framebuffer(color_attachments=[self._color_target])
        self._fbo_depth = self.ctx.framebuffer(color_attachments=[self._depth_target])
        self._fbo_layers = self.ctx.framebuffer(color_attachments=[self._color_target, self._depth_target])
        self._small_targets: dict[tuple[int, int], tuple[Any, Any]] = {}  # (w, h) -> (texture, framebuffer)
        point_range = self.ctx.info.get("GL_POINT_SIZE_RANGE", (1.0, 64.0))
        self.max_point_size = float(point_range[1]) if isinstance(point_range, (tuple, list)) else 64.0
        self.last_depth_range: tuple[float, float] | None = None  # (near, far) of the latest "depth" frame
        self._colormap = self.ctx.texture((COLORMAP_SIZE, 1), 3, turbo_lut().tobytes(), dtype="f4")
        self._colormap.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self._colormap.repeat_x = self._colormap.repeat_y = False
        self._data_textures: dict[str, Any] = {}
        self._quad_indices: Any = None
        self._vaos: dict[tuple[int, bool, bool], Any] = {}
        self._gaussians: _Gaussians | None = None
        self._means_np: np.ndarray | None = None
        self._sh_np: np.ndarray | None = None
        self._sorted_forward: np.ndarray | None = None
        self._colored_campos: np.ndarray | None = None

    def _program_for(self, mode: int, depth_layer: bool, points: bool = False) -> Any:
        """The program for a mode: fragment path pinned with STATIC_MODE (0 = splats, 3, 4), optional
        depth output (DEPTH_LAYER), one point per splat (POINT_SPRITES) or a quad. The vertex shader
        still reads ``u_mode`` (rgb/depth/alpha colour)."""
        key = (0 if mode <= 2 else mode, depth_layer, points)
        if key not in self._programs:
            defines = f"#define STATIC_MODE {key[0]}\n" + ("#define DEPTH_LAYER\n" if depth_layer else "")
            version, rest = _read_shader("splat.frag").split("\n", 1)  # #defines must follow #version
            vert_version, vert_rest = _read_shader("splat.vert").split("\n", 1)
            vert_defines = "#define POINT_SPRITES\n" if points else ""
            self._programs[key] = self.ctx.program(
                vertex_shader=f"{vert_version}\n{vert_defines}{vert_rest}",
                fragment_shader=f"{version}\n{defines}{rest}",
            )
        return self._programs[key]

    def _vao_for(self, mode: int, depth_layer: bool, points: bool = False) -> Any:
        key = (0 if mode <= 2 else mode, depth_layer, points)
        if key not in self._vaos:
            program = self._program_for(mode, depth_layer, points)
            if points:  # glDrawArrays(GL_POINTS): vertex k = splat k in draw order
                self._vaos[key] = self.ctx.vertex_array(program, [])
            else:
                self._vaos[key] = self.ctx.vertex_array(
                    program, [], index_buffer=self._quad_indices, index_element_size=4
                )
        return self._vaos[key]

    def _small_target(self, width: int, height: int) -> tuple[Any, Any]:
        """(colour texture, framebuffer) of a reduced size, made on first use and kept (a few sizes)."""
        key = (int(width), int(height))
        if key not in self._small_targets:
            texture = self.ctx.texture(key, 4, dtype="f4")
            self._small_targets[key] = (texture, self.ctx.framebuffer(color_attachments=[texture]))
        return self._small_targets[key]

    # ------------------------------------------------------------------------------------------
    @property
    def num_gaussians(self) -> int:
        return 0 if self._gaussians is None else self._gaussians.count

    @property
    def renderer_name(self) -> str:
        return f"GLSL ({self._gl_renderer})"

    def _current(self) -> Any:
        """Context manager making our context current and restoring the previous one afterwards, so
        several views, and the GUI toolkit's own GL context on the same thread, can coexist."""
        if self.ctx is None:
            raise RuntimeError("SplatView: used after release()")
        return self.ctx

    def resize(self, width: int, height: int) -> None:
        """Render at `width` x `height` from now on: the full-size colour and depth targets are made anew
        (the Gaussians, programs and reduced-size targets are kept)."""
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise ValueError(f"SplatView.resize: width and height must be positive, got {width}x{height}")
        if (width, height) == (self.width, self.height):
            return
        with self._current():
            for item in (self._fbo_layers, self._fbo_color, self._fbo_depth, self._color_target, self._depth_target):
                item.release()
            self.width, self.height = width, height
            self._color_target = self.ctx.texture((width, height), 4, dtype="f4")
            self._depth_target = self.ctx.texture((width, height), 4, dtype="f4")
            self._fbo_color = self.ctx.framebuffer(color_attachments=[self._color_target])
            self._fbo_depth = self.ctx.framebuffer(color_attachments=[self._depth_target])
            self._fbo_layers = self.ctx.framebuffer(color_attachments=[self._color_target, self._depth_target])

    def release(self) -> None:
        """Free the GL objects and the context (the view is unusable afterwards)."""
        if self.ctx is not None:
            self.ctx.release()
            self.ctx = None

    def __enter__(self) -> "SplatView":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ------------------------------------------------------------------------------------------
    def set_gaussians(
        self, means: Any, quats: Any, scales: Any, opacities: Any, sh: Any, sh_degree: int | None = None
    ) -> None:
        """Upload Gaussians (numpy or torch; CUDA tensors stay there for sorting and SH).

        means [N, 3] world, quats [N, 4] wxyz, scales [N, 3] linear, opacities [N] in [0, 1],
        sh [N, K, 3] with K = (degree + 1)^2; ``sh_degree`` is the active degree (None = all).
        """
        gaussians = _validate_gaussians(means, quats, scales, opacities, sh, sh_degree)
        with self._current():
            self._upload_gaussians(gaussians)

    def _upload_gaussians(self, gaussians: _Gaussians) -> None:
        num = gaussians.count
        rows = max(1, math.ceil(num / TEXTURE_WIDTH))
        cols = TEXTURE_WIDTH if num > TEXTURE_WIDTH else max(num, 1)
        centers = np.concatenate([gaussians.means.cpu().numpy(), gaussians.opacities.cpu().numpy()[:, None]], 1)
        cov = covariances_from_scales_quats(gaussians.quats, gaussians.scales)  # [N, 6]
        cov_b = np.concatenate([cov[:, 4:6], np.zeros((num, 2), np.float32)], 1)
        for name, data in (
            ("u_centers", centers),
            ("u_cov_a", cov[:, :4]),
            ("u_cov_b", cov_b),
            ("u_colors", np.zeros((num, 4), np.float32)),
        ):
            self._upload_texture(name, data, cols, rows)
        self._upload_order(np.arange(num, dtype=np.int32), cols, rows)
        if self._quad_indices is not None:
            for vao in self._vaos.values():
                vao.release()
            self._quad_indices.release()
        # Quad k = vertices 4k .. 4k+3 = triangles (4k, 4k+1, 4k+2) and (4k+2, 4k+1, 4k+3).
        corners = np.array([0, 1, 2, 2, 1, 3], dtype=np.uint32)
        indices = (4 * np.arange(max(num, 1), dtype=np.uint32)[:, None] + corners).ravel()
        self._quad_indices = self.ctx.buffer(indices.tobytes())
        self._vaos = {}  # rebuilt lazily around the new index buffer
        self._gaussians = gaussians
        on_cpu = gaussians.means.device.type == "cpu"
        # numpy copies for sorting and SH on the CPU (torch, possibly on a GPU, is used otherwise)
        self._means_np = gaussians.means.numpy() if on_cpu else None
        self._sh_np = gaussians.sh.numpy() if on_cpu else None
        self._sorted_forward = None
        self._colored_campos = None

    def _upload_order(self, order: np.ndarray, cols: int, rows: int) -> None:
        """Write the draw order (splat ids, farthest first) into the R32I texture ``u_order``."""
        padded = np.zeros(rows * cols, np.int32)
        padded[: len(order)] = order
        texture = self._data_textures.get("u_order")
        if texture is None or texture.size != (cols, rows):
            if texture is not None:
                texture.release()
            texture = self.ctx.texture((cols, rows), 1, dtype="i4")
            texture.filter = (self._gl.NEAREST, self._gl.NEAREST)
            self._data_textures["u_order"] = texture
        texture.write(padded.tobytes())

    def _upload_texture(self, name: str, data: np.ndarray, cols: int, rows: int) -> None:
        padded = np.zeros((rows * cols, 4), np.float32)
        padded[: len(data)] = data
        texture = self._data_textures.get(name)
        if texture is None or texture.size != (cols, rows):
            if texture is not None:
                texture.release()
            texture = self.ctx.texture((cols, rows), 4, dtype="f4")
            # texelFetch ignores filtering, but the default mipmapped filter makes the texture incomplete.
            texture.filter = (self._gl.NEAREST, self._gl.NEAREST)
            self._data_textures[name] = texture
        texture.write(padded.tobytes())

    # ------------------------------------------------------------------------------------------
    def _update_order(self, w2c: np.ndarray) -> None:
        """Back-to-front order by view-space z, recomputed when the view direction turned enough."""
        forward = w2c[2, :3] / np.linalg.norm(w2c[2, :3])  # camera +z in world coordinates
        if self._sorted_forward is not None:
            cos_turn = float(np.clip(forward @ self._sorted_forward, -1.0, 1.0))
            if math.degrees(math.acos(cos_turn)) <= self.resort_angle_deg:
                return
        if self._means_np is not None:
            key = self._means_np @ forward.astype(np.float32)  # view-space z up to a constant
            order = np.argsort(-key, kind="stable").astype(np.int32)  # farthest first
        else:
            means = self._gaussians.means
            key = means @ torch.as_tensor(forward, dtype=means.dtype, device=means.device)
            order = torch.argsort(key, descending=True, stable=True).to(torch.int32).cpu().numpy()
        size = self._data_textures["u_order"].size
        self._upload_order(order, size[0], size[1])
        self._sorted_forward = forward
        self.sort_count += 1

    def _update_colors(self, w2c: np.ndarray, keep: bool = False) -> None:
        """SH colours for the current camera centre (once for degree 0; ``keep``: reuse any earlier ones)."""
        gaussians = self._gaussians
        campos = -w2c[:3, :3].T @ w2c[:3, 3]
        if self._colored_campos is not None and (
            keep or gaussians.sh_degree == 0 or np.array_equal(campos, self._colored_campos)
        ):
            return
        if self._means_np is not None:
            colors = sh_colors_numpy(self._sh_np, self._means_np, campos.astype(np.float32), gaussians.sh_degree)
        else:
            viewmat = torch.as_tensor(w2c, dtype=gaussians.means.dtype, device=gaussians.means.device)[None]
            colors = sh_to_colors(gaussians.sh, gaussians.means, viewmat, gaussians.sh_degree)[0].cpu().numpy()
        padded = np.concatenate([colors, np.zeros((len(colors), 1), np.float32)], axis=1)
        texture = self._data_textures["u_colors"]
        self._upload_texture("u_colors", padded, texture.size[0], texture.size[1])
        self._colored_campos = campos
        self.color_update_count += 1

    @staticmethod
    def _set_uniform(program: Any, name: str, value: Any) -> None:
        uniform = program.get(name, None)  # unused uniforms are compiled away
        if uniform is None:
            return
        if isinstance(value, np.ndarray):
            uniform.write(value.astype(np.float32).tobytes())
        else:
            uniform.value = value

    def _draw(
        self,
        w2c: np.ndarray,
        K: np.ndarray,
        mode: int,
        fbo: Any,
        background: Sequence[float],
        depth_range: tuple[float, float],
        viewport: tuple[int, int] | None = None,
        interactive: bool = False,
    ) -> None:
        timings = {}
        fbo.use()
        fbo.clear(float(background[0]), float(background[1]), float(background[2]), 0.0)
        if fbo is self._fbo_layers:  # the depth layer accumulates sum w z from 0
            self._fbo_depth.clear(0.0, 0.0, 0.0, 0.0)
            fbo.use()
        if self.num_gaussians == 0:
            self.last_timings = timings
            return
        start = time.perf_counter()
        self._update_order(w2c)
        timings["sort_ms"] = 1e3 * (time.perf_counter() - start)
        start = time.perf_counter()
        self._update_colors(w2c, keep=interactive)
        timings["color_ms"] = 1e3 * (time.perf_counter() - start)
        start = time.perf_counter()
        gl = self._gl
        layers = fbo is self._fbo_layers
        program = self._program_for(mode, layers, points=interactive)
        width, height = viewport or (self.width, self.height)

        def set_uniform(name: str, value: Any) -> None:
            self._set_uniform(program, name, value)

        self.ctx.disable(gl.DEPTH_TEST | gl.CULL_FACE)
        self.ctx.enable(gl.BLEND)
        self.ctx.blend_func = (gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA, gl.ONE, gl.ONE_MINUS_SRC_ALPHA)
        for unit, name in enumerate(("u_centers", "u_cov_a", "u_cov_b", "u_colors", "u_order")):
            self._data_textures[name].use(location=unit)
            set_uniform(name, unit)
        self._colormap.use(location=5)
        set_uniform("u_colormap", 5)
        set_uniform("u_tex_width", self._data_textures["u_centers"].size[0])
        set_uniform("u_w2c", w2c.T.copy())  # GLSL matrices are column-major
        set_uniform("u_intrinsics", (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
        set_uniform("u_viewport", (float(width), float(height)))
        set_uniform("u_max_point_size", self.max_point_size)
        set_uniform("u_near", NEAR_PLANE)
        set_uniform("u_mode", mode)
        set_uniform("u_point_radius", self.point_radius)
        set_uniform("u_ellipse_sigma", self.ellipse_sigma)
        set_uniform("u_ellipse_min_opacity", self.ellipse_min_opacity)
        set_uniform("u_depth_range", (float(depth_range[0]), float(depth_range[1])))
        if interactive:
            self.ctx.enable(gl.PROGRAM_POINT_SIZE)
            self._vao_for(mode, layers, points=True).render(gl.POINTS, vertices=self.num_gaussians)
        else:
            self._vao_for(mode, layers).render(gl.TRIANGLES, vertices=6 * self.num_gaussians)
        timings["draw_ms"] = 1e3 * (time.perf_counter() - start)
        self.last_timings = timings

    def _read(self, texture: Any) -> np.ndarray:
        """[H, W, 4] float32 in image order: framebuffer row i (from the bottom) is image row i."""
        start = time.perf_counter()
        width, height = texture.size
        data = np.frombuffer(texture.read(), dtype=np.float32).reshape(height, width, 4)
        self.last_timings["read_ms"] = 1e3 * (time.perf_counter() - start)
        return data

    # ------------------------------------------------------------------------------------------
    def render(
        self,
        w2c: Any,
        K: Any,
        mode: str = "rgb",
        background: Sequence[float] = (1.0, 1.0, 1.0),
        depth_range: tuple[float, float] | None = None,
        size: tuple[int, int] | None = None,
        interactive: bool = False,
    ) -> np.ndarray:
        """Render one view to ``uint8 [H, W, 3]`` (row 0 = image top).

        w2c [4, 4] OpenCV world-to-camera, K [3, 3] pixels for the rendered size. mode: "rgb", "depth"
        (turbo colour map of view-space z over ``depth_range = (near, far)``; None = 1st-99th
        percentile of the visible means' depths, kept in :attr:`last_depth_range`), "alpha" (grey
        accumulated alpha; background ignored), "centres", "ellipsoids". ``size = (w, h)`` renders
        at another (smaller) size than the view's. ``interactive``: the quick frame drawn while the
        camera moves (one point per splat, the SH colours of the last full frame).
        """
        mode_id = _check_mode(mode)
        w2c, K = _camera_arrays(w2c, K)
        width, height = (self.width, self.height) if size is None else (int(size[0]), int(size[1]))
        if width <= 0 or height <= 0:
            raise ValueError(f"render: size must be positive, got {size}")
        if mode == "alpha":
            background = (0.0, 0.0, 0.0)
        if mode == "depth" and depth_range is None and self._gaussians is not None:
            depth_range = _auto_depth_range(self._gaussians.means, w2c)
        depth_range = depth_range or (NEAR_PLANE, 1.0)
        if mode == "depth":
            self.last_depth_range = (float(depth_range[0]), float(depth_range[1]))
        with self._current():
            if (width, height) == (self.width, self.height):
                texture, fbo = self._color_target, self._fbo_color
            else:
                texture, fbo = self._small_target(width, height)
            self._draw(w2c, K, mode_id, fbo, background, depth_range, viewport=(width, height), interactive=interactive)
            return _to_uint8(self._read(texture)[..., :3])

    def render_layers(self, w2c: Any, K: Any, background: Sequence[float] = (0.0, 0.0, 0.0)) -> RenderLayers:
        """Float rgb / alpha / accumulated depth of one view (the engine renderer's outputs)."""
        w2c, K = _camera_arrays(w2c, K)
        with self._current():
            self._draw(w2c, K, RENDER_MODES["rgb"], self._fbo_layers, background, (NEAR_PLANE, 1.0))
            color = self._read(self._color_target)
            depth = self._read(self._depth_target)
        return RenderLayers(rgb=color[..., :3].copy(), alpha=color[..., 3:4].copy(), depth=depth[..., :1].copy())


# ----------------------------------------------------------------------------------------------
# Fallback through the engine renderer
# ----------------------------------------------------------------------------------------------
def _engine_backend() -> str:
    """The numba "cpu" backend when present; the brute-force "reference" one otherwise (small scenes only)."""
    return "cpu" if importlib.util.find_spec("sparseags.render.cpu") is not None else "reference"


class EngineFallbackView:
    """Same API as :class:`SplatView`, rendering through ``sparseags.render.render_gaussians``.

    Used when no GL context can be made. Modes: "rgb" and "alpha" are the engine's outputs; "depth"
    colour-maps the mean depth (accumulated depth / alpha) and composites it with alpha (the GLSL view
    composites per-splat colours instead, so soft edges differ slightly); "centres" paints dots back to
    front; "ellipsoids" renders with the opacity raised to ``0.99 exp(k^2 / 2)`` so that
    ``min(0.99, o g)`` saturates exactly inside each k-sigma ellipse (no rim shading).
    """

    def __init__(
        self,
        width: int,
        height: int,
        point_radius: float = 1.5,
        ellipse_sigma: float = 2.0,
        ellipse_min_opacity: float = 0.1,
        backend: str | None = None,
    ) -> None:
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"EngineFallbackView: width and height must be positive, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.point_radius = float(point_radius)
        self.ellipse_sigma = float(ellipse_sigma)
        self.ellipse_min_opacity = float(ellipse_min_opacity)
        self.backend = backend or _engine_backend()
        self.sort_count = 0  # the engine sorts internally every frame; kept for API parity
        self.color_update_count = 0
        self.last_timings: dict[str, float] = {}
        self._gaussians: _Gaussians | None = None
        self._lut = turbo_lut()
        self.last_depth_range: tuple[float, float] | None = None

    @property
    def num_gaussians(self) -> int:
        return 0 if self._gaussians is None else self._gaussians.count

    @property
    def renderer_name(self) -> str:
        return f"engine ({self.backend})"

    def resize(self, width: int, height: int) -> None:
        """Render at `width` x `height` from now on."""
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"EngineFallbackView.resize: width and height must be positive, got {width}x{height}")
        self.width, self.height = int(width), int(height)

    def release(self) -> None:
        self._gaussians = None

    def __enter__(self) -> "EngineFallbackView":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def set_gaussians(
        self, means: Any, quats: Any, scales: Any, opacities: Any, sh: Any, sh_degree: int | None = None
    ) -> None:
        """Same contract as :meth:`SplatView.set_gaussians`."""
        self._gaussians = _validate_gaussians(means, quats, scales, opacities, sh, sh_degree)

    def _render_engine(
        self,
        w2c: np.ndarray,
        K: np.ndarray,
        background: Sequence[float],
        opacities: Tensor | None = None,
        size: tuple[int, int] | None = None,
    ) -> RenderLayers:
        from sparseags.render import render_gaussians

        g = self._gaussians
        width, height = size or (self.width, self.height)
        start = time.perf_counter()
        if g is None or g.count == 0:
            blank = np.zeros((height, width, 1), np.float32)
            rgb = np.broadcast_to(np.asarray(background, np.float32), (height, width, 3)).copy()
            return RenderLayers(rgb=rgb, alpha=blank, depth=blank.copy())
        device, dtype = g.means.device, g.means.dtype
        with torch.no_grad():
            out = render_gaussians(
                g.means,
                g.quats,
                g.scales,
                g.opacities if opacities is None else opacities,
                g.sh,
                torch.as_tensor(w2c, dtype=dtype, device=device)[None],
                torch.as_tensor(K, dtype=dtype, device=device)[None],
                width,
                height,
                sh_degree=g.sh_degree,
                background=torch.as_tensor(background, dtype=dtype, device=device),
                backend=self.backend,
            )
        self.color_update_count += 1
        self.last_timings = {"draw_ms": 1e3 * (time.perf_counter() - start)}
        return RenderLayers(
            rgb=out.rgb[0].cpu().numpy(), alpha=out.alpha[0].cpu().numpy(), depth=out.depth[0].cpu().numpy()
        )

    def _render_centres(
        self, w2c: np.ndarray, K: np.ndarray, background: Sequence[float], size: tuple[int, int] | None = None
    ) -> np.ndarray:
        g = self._gaussians
        width, height = size or (self.width, self.height)
        image = np.broadcast_to(np.asarray(background, np.float32), (height, width, 3)).copy()
        if g is None or g.count == 0:
            return image
        viewmat = torch.as_tensor(w2c, dtype=g.means.dtype, device=g.means.device)[None]
        colors = sh_to_colors(g.sh, g.means, viewmat, g.sh_degree)[0].cpu().numpy()
        means = g.means.cpu().double().numpy()
        cam = means @ w2c[:3, :3].T + w2c[:3, 3]
        front = cam[:, 2] >= NEAR_PLANE
        cam, colors = cam[front], colors[front]
        order = np.argsort(-cam[:, 2], kind="stable")  # back to front: nearer dots overwrite farther ones
        u = K[0, 0] * cam[order, 0] / cam[order, 2] + K[0, 2]
        v = K[1, 1] * cam[order, 1] / cam[order, 2] + K[1, 2]
        reach = int(math.ceil(self.point_radius))
        pixels, ranks = [], []
        for row_off in range(-reach, reach + 1):
            for col_off in range(-reach, reach + 1):
                # A dot covers the pixel centres within point_radius of the mean per axis, as the GL quad does.
                cols = np.floor(u + col_off).astype(np.int64)
                rows = np.floor(v + row_off).astype(np.int64)
                inside = (
                    (np.abs(cols + 0.5 - u) < self.point_radius)
                    & (np.abs(rows + 0.5 - v) < self.point_radius)
                    & (cols >= 0)
                    & (cols < width)
                    & (rows >= 0)
                    & (rows < height)
                )
                pixels.append((rows * width + cols)[inside])
                ranks.append(np.flatnonzero(inside))  # position in back-to-front order
        pixels, ranks = np.concatenate(pixels), np.concatenate(ranks)
        by_rank = np.argsort(-ranks, kind="stable")  # nearest first, so np.unique keeps the nearest dot
        unique_pixels, first = np.unique(pixels[by_rank], return_index=True)
        image.reshape(-1, 3)[unique_pixels] = colors[order[ranks[by_rank][first]]]
        return image

    def render(
        self,
        w2c: Any,
        K: Any,
        mode: str = "rgb",
        background: Sequence[float] = (1.0, 1.0, 1.0),
        depth_range: tuple[float, float] | None = None,
        size: tuple[int, int] | None = None,
        interactive: bool = False,
    ) -> np.ndarray:
        """Same contract as :meth:`SplatView.render` (``interactive`` changes nothing here: the engine
        renderer has no cheaper path than a smaller ``size``)."""
        _check_mode(mode)
        w2c, K = _camera_arrays(w2c, K)
        size = None if size is None else (int(size[0]), int(size[1]))
        if size is not None and (size[0] <= 0 or size[1] <= 0):
            raise ValueError(f"render: size must be positive, got {size}")
        if mode == "rgb":
            return _to_uint8(self._render_engine(w2c, K, background, size=size).rgb)
        if mode == "alpha":
            return _to_uint8(np.repeat(self._render_engine(w2c, K, (0.0, 0.0, 0.0), size=size).alpha, 3, axis=-1))
        if mode == "depth":
            layers = self._render_engine(w2c, K, (0.0, 0.0, 0.0), size=size)
            if depth_range is None:
                depth_range = _auto_depth_range(self._gaussians.means, w2c) if self.num_gaussians else (NEAR_PLANE, 1.0)
            self.last_depth_range = (float(depth_range[0]), float(depth_range[1]))
            mean_depth = layers.depth / np.maximum(layers.alpha, 1e-8)
            t = (mean_depth[..., 0] - depth_range[0]) / max(depth_range[1] - depth_range[0], 1e-12)
            rgb = _apply_lut(t, self._lut) * layers.alpha + (1.0 - layers.alpha) * np.asarray(background, np.float32)
            return _to_uint8(rgb)
        if mode == "centres":
            return _to_uint8(self._render_centres(w2c, K, background, size=size))
        g = self._gaussians
        if g is None:
            return _to_uint8(self._render_engine(w2c, K, background, size=size).rgb)
        saturating = 0.99 * math.exp(0.5 * self.ellipse_sigma**2)
        opacities = torch.where(
            g.opacities >= self.ellipse_min_opacity,
            torch.full_like(g.opacities, saturating),
            torch.zeros_like(g.opacities),
        )
        return _to_uint8(self._render_engine(w2c, K, background, opacities, size=size).rgb)

    def render_layers(self, w2c: Any, K: Any, background: Sequence[float] = (0.0, 0.0, 0.0)) -> RenderLayers:
        """Same contract as :meth:`SplatView.render_layers`."""
        w2c, K = _camera_arrays(w2c, K)
        return self._render_engine(w2c, K, background)


# ----------------------------------------------------------------------------------------------
# Progressive rendering: low resolution while the camera moves, full resolution once it stops
# ----------------------------------------------------------------------------------------------
def scale_intrinsics(K: Any, size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """K [3, 3] of a ``size = (w, h)`` image for a ``new_size`` one: row 0 times w'/w, row 1 times h'/h."""
    scaled = np.array(K, dtype=np.float64, copy=True)
    scaled[0] *= new_size[0] / size[0]
    scaled[1] *= new_size[1] / size[1]
    return scaled


@dataclass
class ProgressiveFrame:
    """One frame drawn by :class:`ProgressiveRenderer`."""

    image: np.ndarray  # uint8 [h, w, 3]
    full: bool  # drawn at the view's full size (else a quick low-resolution frame)
    render_ms: float


class ProgressiveRenderer:
    """Draws a renderer's frames progressively (the nerfstudio / gsplat viewers' scheme).

    Call :meth:`frame` once per UI frame with the current camera: while the camera moves (it changed
    less than ``policy.settle_s`` ago) each new camera gets a quick frame at ``1 / policy.divisor`` of the
    size (``render(..., interactive=True)``); once the camera has been still that long, the full-size
    frame is drawn once. Returns None when the image on display is still current. ``progressive=False``
    draws every new camera at full size (the old behaviour, kept for comparison in the benchmark).
    """

    def __init__(self, renderer: Any, policy: Any = None, progressive: bool = True) -> None:
        from gui.orbit import ProgressivePolicy

        self.renderer = renderer
        self.policy = policy if policy is not None else ProgressivePolicy()
        self.progressive = bool(progressive)
        self._camera_key: Optional[tuple] = None
        self._drawn_key: Optional[tuple] = None
        self._drawn_full = False
        self.last_frame: Optional[ProgressiveFrame] = None

    def invalidate(self) -> None:
        """Draw again at the next call (e.g. after new Gaussians were uploaded)."""
        self._drawn_key = None

    def frame(
        self,
        w2c: Any,
        K: Any,
        mode: str = "rgb",
        background: Sequence[float] = (1.0, 1.0, 1.0),
        content_key: Any = None,
    ) -> Optional[ProgressiveFrame]:
        """The frame to show now, or None (nothing changed). w2c [4, 4], K [3, 3] for the full size."""
        w2c, K = _camera_arrays(w2c, K)
        camera_key = (w2c.tobytes(), K.tobytes())
        if self._camera_key is not None and camera_key != self._camera_key:
            self.policy.moved()
        self._camera_key = camera_key
        key = (camera_key, content_key, mode, tuple(float(c) for c in background))
        quick = self.progressive and self.policy.moving()
        if key == self._drawn_key and (quick or self._drawn_full):
            return None
        width, height = self.renderer.width, self.renderer.height
        start = time.perf_counter()
        if quick:
            size = self.policy.interactive_size(width, height)
            image = self.renderer.render(
                w2c,
                scale_intrinsics(K, (width, height), size),
                mode=mode,
                background=background,
                size=size,
                interactive=True,
            )
        else:
            image = self.renderer.render(w2c, K, mode=mode, background=background)
        milliseconds = 1e3 * (time.perf_counter() - start)
        if quick:
            self.policy.record(milliseconds)
        self._drawn_key, self._drawn_full = key, not quick
        self.last_frame = ProgressiveFrame(image=image, full=not quick, render_ms=milliseconds)
        return self.last_frame


def make_orbit_renderer(width: int, height: int, prefer: str = "glsl", **kwargs: Any) -> SplatView | EngineFallbackView:
    """The GLSL view when a GL 3.3 context can be made, else the engine renderer (one-line warning).

    prefer: "glsl" (try GL first) or "engine" (always the fallback). ``kwargs`` go to the chosen class
    (``point_radius``, ``ellipse_sigma``, ``ellipse_min_opacity``, and ``resort_angle_deg`` for GLSL).
    """
    if prefer not in ("glsl", "engine"):
        raise ValueError(f"make_orbit_renderer: prefer must be 'glsl' or 'engine', got {prefer!r}")
    if prefer == "glsl":
        try:
            return SplatView(width, height, **kwargs)
        except GLUnavailableError as err:
            logger.warning("orbit view: GLSL renderer unavailable (%s); using the engine renderer", err)
    kwargs.pop("resort_angle_deg", None)
    return EngineFallbackView(width, height, **kwargs)
