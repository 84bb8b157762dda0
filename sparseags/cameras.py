"""Camera conventions, SE(3)/SO(3) maps, alignment and projection.

Internal convention (see docs/ARCHITECTURE.md)
----------------------------------------------
* Extrinsics are **OpenCV world-to-camera** 4x4 matrices ``w2c`` with
  ``X_cam = w2c @ [X_world, 1]``; camera axes +x right, +y down, +z forward.
  This is gsplat's ``viewmats`` convention.
* Intrinsics ``K`` (3x3) are in pixels: ``u = fx*x/z + cx``, ``v = fy*y/z + cy``.
  The pixel origin is the top-left *corner* of the top-left pixel, so pixel (row i, col j)
  is centred at (j + 0.5, i + 0.5) and (W/2, H/2) is the exact image centre.

Edge conventions (converted only here)
--------------------------------------
* PyTorch3D ``R [3,3], T [3]`` (SparseAGS ``cameras.json``): row vectors,
  ``X_cam = X_world @ R + T``, camera +x left, +y up, +z forward. With ``D = diag(-1, -1, 1)``::

      w2c = [[D @ R.T, D @ T], [0, 0, 0, 1]]        R = (D @ w2c[:3, :3]).T,  T = D @ w2c[:3, 3]

  Projection: ``u = cx - fx*Xc/Zc``, ``v = cy - fy*Yc/Zc`` with ``(Xc, Yc, Zc) = X @ R + T``.
* OpenGL camera-to-world ``c2w_gl`` (kiui/DreamGaussian ``orbit_camera``, Zero123 relative pose,
  GLSL viewer): camera +x right, +y up, looks down -z::

      c2w_gl = inv(w2c) @ diag(1, -1, -1, 1)        w2c = inv(c2w_gl @ diag(1, -1, -1, 1))

* ``orbit_camera(elev, azim, r, target)`` (DreamGaussian convention)::

      campos = target + r * (cos(e) sin(a), -sin(e), cos(e) cos(a))

  i.e. **negative elevation puts the camera above** the object (+y), azimuth 0 is on +z, 90 deg on +x.
  The inverse is ``elev = -asin(y / r)``, ``azim = atan2(x, z)``.
* SE(3) perturbation (SparseAGS, liegroups convention): ``xi = [rho (3, translation), phi (3, rotation
  vector)]``, ``se3_exp(xi) = [[so3_exp(phi), J_l(phi) @ rho], [0, 1]]``. :func:`apply_pose_delta` is the
  one place the update is applied, on the side ``recon.pose_delta`` names: ``"camera"`` (the default)
  ``w2c = se3_exp(xi) @ w2c_init`` (the camera turns about its own centre and moves along its own axes),
  ``"world"`` (the official SparseAGS form) ``w2c = w2c_init @ se3_exp(xi)`` (the world moves about its
  origin).
* Quaternions are **WXYZ** everywhere.

Array handling
--------------
Every function is batched over leading dimensions, works in float32 and float64, is differentiable
and device-agnostic. Inputs may be torch tensors, numpy arrays, python scalars or sequences: they are
converted with ``torch.as_tensor`` and **torch tensors are returned**. Several inputs are promoted to
one float dtype, decided by the floating tensors/arrays among them (python scalars follow it; integers
alone give torch's default dtype), on the device of the first tensor input (see ``as_float_tensors``).
Angles are in radians except where a name ends in ``_deg``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "as_float_tensors",
    "p3d_to_w2c",
    "w2c_to_p3d",
    "rigid_inverse",
    "w2c_to_c2w_gl",
    "c2w_gl_to_w2c",
    "camera_centers",
    "look_at_c2w_gl",
    "orbit_camera",
    "undo_orbit_camera",
    "intrinsics_matrix",
    "scale_intrinsics",
    "focal_from_fov",
    "project_points",
    "gl_projection_matrix",
    "skew",
    "so3_exp",
    "so3_log",
    "se3_exp",
    "se3_log",
    "apply_pose_delta",
    "rotation_angle_deg",
    "umeyama",
    "quat_wxyz_to_rotmat",
    "rotmat_to_quat_wxyz",
]

# diag(-1, -1, 1): flips camera x and y between PyTorch3D (left, up) and OpenCV (right, down).
_P3D_FLIP = (-1.0, -1.0, 1.0)
# diag(1, -1, -1, 1): flips camera y and z between OpenCV (down, forward) and OpenGL (up, backward).
_GL_FLIP = (1.0, -1.0, -1.0, 1.0)

# Below these squared angles the closed forms lose precision (cancellation) or divide 0/0, so the
# Taylor series is used instead. With the number of terms kept, the truncation error is < 1e-15.
_SMALL_ANGLE_SQ = 1e-2
_SMALL_QUAT_VEC_SQ = 1e-6


# ----------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------
def as_float_tensors(
    *values: Any, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> tuple[Tensor, ...]:
    """Convert values (tensor, ndarray, scalar, sequence) to float tensors of one dtype and device.

    The dtype is ``dtype`` if given, else the promotion of the floating tensors and floating numpy
    arrays among the inputs (python scalars and sequences are "weak": converted straight to that
    dtype, so a python float does not get rounded to float32 first); with none of those it is torch's
    default dtype. The device is ``device`` if given, else that of the first tensor input.
    """
    if device is None:
        device = next((v.device for v in values if isinstance(v, Tensor)), torch.device("cpu"))
    if dtype is None:
        strong = [_float_dtype(v) for v in values]
        floating = [d for d in strong if d is not None]
        dtype = floating[0] if floating else torch.get_default_dtype()
        for d in floating[1:]:
            dtype = torch.promote_types(dtype, d)
    return tuple(torch.as_tensor(v, dtype=dtype, device=device) for v in values)


def _float_dtype(value: Any) -> torch.dtype | None:
    """The floating torch dtype carried by a tensor or numpy array, else None."""
    if isinstance(value, Tensor):
        return value.dtype if value.is_floating_point() else None
    if isinstance(value, (np.ndarray, np.generic)) and np.issubdtype(value.dtype, np.floating):
        return torch.from_numpy(np.zeros(0, dtype=value.dtype)).dtype
    return None


def _diag_like(signs: Sequence[float], ref: Tensor) -> Tensor:
    return torch.diag(torch.tensor(signs, dtype=ref.dtype, device=ref.device))


def _homogeneous(rotation: Tensor, translation: Tensor) -> Tensor:
    """[..., 3, 3], [..., 3] -> [..., 4, 4] rigid matrix (broadcast over leading dims)."""
    batch = torch.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
    top = torch.cat([rotation.expand(*batch, 3, 3), translation.expand(*batch, 3)[..., None]], dim=-1)
    bottom = torch.zeros(*batch, 1, 4, dtype=rotation.dtype, device=rotation.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


# ----------------------------------------------------------------------------------------------
# Convention conversions
# ----------------------------------------------------------------------------------------------
def p3d_to_w2c(R: Any, T: Any) -> Tensor:
    """PyTorch3D ``R [..., 3, 3]``, ``T [..., 3]`` (``X_cam = X_world @ R + T``) -> OpenCV w2c [..., 4, 4].

    ``w2c = [[D @ R^T, D @ T], [0, 1]]`` with ``D = diag(-1, -1, 1)``.
    """
    R, T = as_float_tensors(R, T)
    flip = _diag_like(_P3D_FLIP, R)
    return _homogeneous(flip @ R.transpose(-1, -2), (flip @ T[..., None])[..., 0])


def w2c_to_p3d(w2c: Any) -> tuple[Tensor, Tensor]:
    """OpenCV w2c [..., 4, 4] -> PyTorch3D ``(R [..., 3, 3], T [..., 3])``; inverse of :func:`p3d_to_w2c`."""
    (w2c,) = as_float_tensors(w2c)
    flip = _diag_like(_P3D_FLIP, w2c)
    R = (flip @ w2c[..., :3, :3]).transpose(-1, -2)
    T = (flip @ w2c[..., :3, 3:4])[..., 0]
    return R, T


def rigid_inverse(M: Any) -> Tensor:
    """Inverse of rigid 4x4 matrices [..., 4, 4]: ``[[R, t], [0, 1]]^-1 = [[R^T, -R^T t], [0, 1]]``."""
    (M,) = as_float_tensors(M)
    Rt = M[..., :3, :3].transpose(-1, -2)
    return _homogeneous(Rt, -(Rt @ M[..., :3, 3:4])[..., 0])


def w2c_to_c2w_gl(w2c: Any) -> Tensor:
    """OpenCV w2c [..., 4, 4] -> OpenGL camera-to-world [..., 4, 4]: ``inv(w2c) @ diag(1, -1, -1, 1)``."""
    (w2c,) = as_float_tensors(w2c)
    return rigid_inverse(w2c) @ _diag_like(_GL_FLIP, w2c)


def c2w_gl_to_w2c(c2w_gl: Any) -> Tensor:
    """OpenGL camera-to-world [..., 4, 4] -> OpenCV w2c [..., 4, 4]: ``inv(c2w_gl @ diag(1, -1, -1, 1))``."""
    (c2w_gl,) = as_float_tensors(c2w_gl)
    return rigid_inverse(c2w_gl @ _diag_like(_GL_FLIP, c2w_gl))


def camera_centers(w2c: Any) -> Tensor:
    """Camera centres in world coordinates [..., 3]: ``C = -R^T t`` for ``w2c = [[R, t], [0, 1]]``."""
    (w2c,) = as_float_tensors(w2c)
    return -(w2c[..., :3, :3].transpose(-1, -2) @ w2c[..., :3, 3:4])[..., 0]


# ----------------------------------------------------------------------------------------------
# Orbit cameras (kiui / DreamGaussian)
# ----------------------------------------------------------------------------------------------
def look_at_c2w_gl(campos: Any, target: Any, up: Any = (0.0, 1.0, 0.0)) -> Tensor:
    """OpenGL camera-to-world [..., 4, 4] of a camera at ``campos [..., 3]`` looking at ``target [..., 3]``.

    kiui/DreamGaussian ``look_at``: ``forward = normalize(campos - target)`` (the camera's +z, i.e. it
    looks down -z), ``right = normalize(cross(up, forward))``, ``up' = cross(forward, right)``; the
    rotation columns are ``[right, up', forward]`` and the translation is ``campos``.

    Where ``forward`` is parallel to ``up`` (straight above or below) kiui's ``right`` is undefined; we
    then use the limit of azimuth 0 for ``up = +y`` (right = +x): the fallback up vector is
    ``-sign(forward . up) * e`` with ``e`` the world axis (z, else x) least aligned with ``up``.
    """
    campos, target, up = as_float_tensors(campos, target, up)
    forward = F.normalize(campos - target, dim=-1)  # [..., 3]
    up = up.expand_as(forward) if up.dim() <= forward.dim() else up
    right_raw = torch.linalg.cross(up, forward, dim=-1)
    degenerate = right_raw.norm(dim=-1, keepdim=True) <= 1e-6 * up.norm(dim=-1, keepdim=True)
    axis_z = torch.tensor([0.0, 0.0, 1.0], dtype=up.dtype, device=up.device)
    axis_x = torch.tensor([1.0, 0.0, 0.0], dtype=up.dtype, device=up.device)
    up_is_z = F.normalize(up, dim=-1)[..., 2:3].abs() > 0.9
    helper = torch.where(up_is_z, axis_x, axis_z)
    sign = torch.where((forward * up).sum(-1, keepdim=True) >= 0, -1.0, 1.0).to(up.dtype)
    right_fallback = torch.linalg.cross(sign * helper, forward, dim=-1)
    right = F.normalize(torch.where(degenerate, right_fallback, right_raw), dim=-1)
    true_up = torch.linalg.cross(forward, right, dim=-1)
    rotation = torch.stack([right, true_up, forward], dim=-1)  # columns
    return _homogeneous(rotation, campos.expand_as(forward))


def orbit_camera(
    elevation_deg: Any,
    azimuth_deg: Any,
    radius: Any = 1.0,
    target: Any = (0.0, 0.0, 0.0),
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """DreamGaussian/kiui orbit camera -> OpenGL camera-to-world [..., 4, 4].

    ``campos = target + r * (cos(e) sin(a), -sin(e), cos(e) cos(a))``: **negative elevation = camera
    above the object** (+y), azimuth 0 on +z, 90 deg on +x; the camera looks at ``target`` with world
    up +y (see :func:`look_at_c2w_gl`). ``elevation_deg``, ``azimuth_deg``, ``radius`` broadcast;
    ``target`` is ``[..., 3]``.
    """
    elev, azim, radius, target = as_float_tensors(
        elevation_deg, azimuth_deg, radius, target, dtype=dtype, device=device
    )
    e, a = torch.deg2rad(elev), torch.deg2rad(azim)
    direction = torch.stack(torch.broadcast_tensors(e.cos() * a.sin(), -e.sin(), e.cos() * a.cos()), dim=-1)
    campos = target + radius[..., None] * direction
    return look_at_c2w_gl(campos, target.expand_as(campos))


def undo_orbit_camera(c2w_gl: Any, target: Any = (0.0, 0.0, 0.0)) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of :func:`orbit_camera`: ``(elevation_deg, azimuth_deg, radius)``, each [...].

    With ``(x, y, z) = campos - target``: ``r = |.|``, ``elev = -asin(y / r)``, ``azim = atan2(x, z)``
    (in (-180, 180]). Only the camera position is used; roll is ignored.
    """
    c2w_gl, target = as_float_tensors(c2w_gl, target)
    offset = c2w_gl[..., :3, 3] - target
    radius = offset.norm(dim=-1)
    sin_up = (offset[..., 1] / radius.clamp_min(torch.finfo(offset.dtype).tiny)).clamp(-1.0, 1.0)
    elev = -torch.rad2deg(torch.asin(sin_up))
    azim = torch.rad2deg(torch.atan2(offset[..., 0], offset[..., 2]))
    return elev, azim, radius


# ----------------------------------------------------------------------------------------------
# Intrinsics and projection
# ----------------------------------------------------------------------------------------------
def intrinsics_matrix(fx: Any, fy: Any, cx: Any, cy: Any) -> Tensor:
    """Pixel intrinsics ``K [..., 3, 3] = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (inputs broadcast)."""
    fx, fy, cx, cy = torch.broadcast_tensors(*as_float_tensors(fx, fy, cx, cy))
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [torch.stack([fx, zero, cx], -1), torch.stack([zero, fy, cy], -1), torch.stack([zero, zero, one], -1)]
    return torch.stack(rows, dim=-2)


def scale_intrinsics(K: Any, sx: Any, sy: Any) -> Tensor:
    """Intrinsics after resizing the image by ``sx = W'/W``, ``sy = H'/H``: row 0 of K times sx, row 1 times sy.

    With the corner-origin pixel convention a point at pixel (u, v) moves to (sx*u, sy*v), so the
    principal point scales linearly too (no half-pixel shift).
    """
    K, sx, sy = as_float_tensors(K, sx, sy)
    ones = torch.ones_like(sx * sy)
    row_scale = torch.stack(torch.broadcast_tensors(sx, sy, ones), dim=-1)  # [..., 3]
    return K * row_scale[..., :, None]


def focal_from_fov(fov_deg: Any, size: Any) -> Tensor:
    """Focal length in pixels for a full field of view ``fov_deg`` across ``size`` pixels: ``size / 2 / tan(fov / 2)``."""
    fov, size = as_float_tensors(fov_deg, size)
    return size / (2.0 * torch.tan(torch.deg2rad(fov) / 2.0))


def project_points(points: Any, w2c: Any, K: Any) -> tuple[Tensor, Tensor]:
    """Project world points ``[..., P, 3]`` with OpenCV ``w2c [..., 4, 4]`` and ``K [..., 3, 3]``.

    Returns ``uv [..., P, 2]`` in pixels (``u = fx*x/z + cx`` ...; no clipping, points behind the
    camera are projected as well) and the camera-space depth ``z [..., P]``.
    """
    points, w2c, K = as_float_tensors(points, w2c, K)
    cam = points @ w2c[..., :3, :3].transpose(-1, -2) + w2c[..., None, :3, 3]  # [..., P, 3]
    pix = cam @ K.transpose(-1, -2)  # [..., P, 3]
    z = cam[..., 2]
    return pix[..., :2] / z[..., None], z


def gl_projection_matrix(K: Any, width: int, height: int, znear: float = 0.01, zfar: float = 100.0) -> Tensor:
    """OpenGL projection [..., 4, 4] for GL camera coordinates, matching pixel intrinsics ``K``.

    For a GL camera point ``(x, y, z)`` (z < 0 in front) the clip coordinates ``P @ [x, y, z, 1]``
    divided by ``w = -z`` give NDC with ``ndc_x = 2u/W - 1`` and ``ndc_y = 1 - 2v/H`` (NDC +y is the
    image top, i.e. row 0 of the image; standard OpenGL framebuffers store that row last), and
    ``ndc_z`` in [-1, 1] from znear to zfar.
    """
    (K,) = as_float_tensors(K)
    fx, fy, cx, cy = K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]
    P = torch.zeros(*K.shape[:-2], 4, 4, dtype=K.dtype, device=K.device)
    P[..., 0, 0] = 2.0 * fx / width
    P[..., 0, 2] = 1.0 - 2.0 * cx / width
    P[..., 1, 1] = 2.0 * fy / height
    P[..., 1, 2] = 2.0 * cy / height - 1.0
    P[..., 2, 2] = -(zfar + znear) / (zfar - znear)
    P[..., 2, 3] = -2.0 * zfar * znear / (zfar - znear)
    P[..., 3, 2] = -1.0
    return P


# ----------------------------------------------------------------------------------------------
# SO(3) / SE(3)
# ----------------------------------------------------------------------------------------------
def skew(v: Any) -> Tensor:
    """Cross-product matrix [..., 3, 3] of ``v [..., 3]``: ``skew(v) @ w = cross(v, w)``."""
    (v,) = as_float_tensors(v)
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack(
        [torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1), torch.stack([-y, x, zero], -1)], dim=-2
    )


def _series(theta_sq: Tensor, coefficients: Sequence[float]) -> Tensor:
    """Evaluate sum_k c_k * theta^(2k) by Horner's rule."""
    result = torch.full_like(theta_sq, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        result = result * theta_sq + c
    return result


def _split_small(theta_sq: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Mask of small angles and a theta that is safe to differentiate (1 where small).

    Replacing theta^2 by 1 in the unused branch keeps sqrt and the divisions away from 0, so the
    gradient through torch.where stays finite at exactly zero.
    """
    small = theta_sq < threshold
    theta = torch.where(small, torch.ones_like(theta_sq), theta_sq).sqrt()
    return small, theta


def _so3_coefficients(theta_sq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A = sin(t)/t, B = (1 - cos t)/t^2, C = (t - sin t)/t^3, exact near 0."""
    small, theta = _split_small(theta_sq, _SMALL_ANGLE_SQ)
    a_series = _series(theta_sq, [1.0, -1 / 6, 1 / 120, -1 / 5040, 1 / 362880, -1 / 39916800])
    b_series = _series(theta_sq, [1 / 2, -1 / 24, 1 / 720, -1 / 40320, 1 / 3628800, -1 / 479001600])
    c_series = _series(theta_sq, [1 / 6, -1 / 120, 1 / 5040, -1 / 362880, 1 / 39916800])
    sin, half_sin = theta.sin(), (0.5 * theta).sin()
    a = torch.where(small, a_series, sin / theta)
    # 2 sin^2(t/2) avoids the cancellation of 1 - cos(t).
    b = torch.where(small, b_series, 2.0 * half_sin * half_sin / (theta * theta))
    c = torch.where(small, c_series, (theta - sin) / (theta * theta * theta))
    return a, b, c


def so3_exp(phi: Any) -> Tensor:
    """Rotation vector ``phi [..., 3]`` (axis * angle, radians) -> rotation matrix [..., 3, 3] (Rodrigues).

    ``R = I + A K + B K^2`` with ``K = skew(phi)``, ``A = sin t / t``, ``B = (1 - cos t) / t^2``.
    """
    (phi,) = as_float_tensors(phi)
    theta_sq = (phi * phi).sum(-1)[..., None, None]
    a, b, _ = _so3_coefficients(theta_sq)
    K = skew(phi)
    eye = torch.eye(3, dtype=phi.dtype, device=phi.device)
    return eye + a * K + b * (K @ K)


def so3_log(R: Any) -> Tensor:
    """Rotation matrix [..., 3, 3] -> rotation vector [..., 3] with angle in [0, pi].

    Goes through the unit quaternion (w >= 0), ``phi = 2 atan2(|v|, w) v / |v|``, which is accurate
    for all angles including pi (where ``w = 0``); near 0 a Taylor series of ``atan(x)/x`` is used.
    At exactly pi both ``phi`` and ``-phi`` are valid; the one with the largest component positive
    (from the quaternion extraction) is returned.
    """
    q = rotmat_to_quat_wxyz(R)
    w, vec = q[..., :1], q[..., 1:]
    n_sq = (vec * vec).sum(-1, keepdim=True)
    small, n = _split_small(n_sq, _SMALL_QUAT_VEC_SQ)
    # 2 atan2(n, w) / n = (2/w) * atan(x)/x with x = n/w; w ~ 1 on the small branch.
    x_sq = n_sq / (w * w).clamp_min(0.25)
    scale_series = 2.0 / w.clamp_min(0.5) * _series(x_sq, [1.0, -1 / 3, 1 / 5, -1 / 7])
    scale = torch.where(small, scale_series, 2.0 * torch.atan2(n, w) / n)
    return scale * vec


def se3_exp(xi: Any) -> Tensor:
    """Twist ``xi = [rho, phi]`` [..., 6] -> rigid transform [..., 4, 4] (liegroups / SparseAGS).

    ``T = [[so3_exp(phi), J_l(phi) @ rho], [0, 1]]`` with the left Jacobian
    ``J_l = I + B K + C K^2``, ``B = (1 - cos t)/t^2``, ``C = (t - sin t)/t^3``, ``K = skew(phi)``.
    Exact (Taylor) near ``phi = 0`` with finite gradients at exactly 0.
    """
    (xi,) = as_float_tensors(xi)
    rho, phi = xi[..., :3], xi[..., 3:]
    theta_sq = (phi * phi).sum(-1)[..., None, None]
    a, b, c = _so3_coefficients(theta_sq)
    K = skew(phi)
    K_sq = K @ K
    eye = torch.eye(3, dtype=xi.dtype, device=xi.device)
    rotation = eye + a * K + b * K_sq
    jacobian = eye + b * K + c * K_sq
    return _homogeneous(rotation, (jacobian @ rho[..., None])[..., 0])


def se3_log(T: Any) -> Tensor:
    """Rigid transform [..., 4, 4] -> twist ``xi = [rho, phi]`` [..., 6]; inverse of :func:`se3_exp`.

    ``phi = so3_log(R)``, ``rho = J_l(phi)^-1 t`` with ``J_l^-1 = I - K/2 + D K^2`` and
    ``D = (1 - (t/2) cot(t/2)) / t^2`` (finite up to and including t = pi; Taylor near 0).
    """
    (T,) = as_float_tensors(T)
    phi = so3_log(T[..., :3, :3])
    theta_sq = (phi * phi).sum(-1)[..., None, None]
    small, theta = _split_small(theta_sq, _SMALL_ANGLE_SQ)
    half = 0.5 * theta
    d_closed = (1.0 - half * half.cos() / half.sin()) / (theta * theta)
    d_series = _series(theta_sq, [1 / 12, 1 / 720, 1 / 30240, 1 / 1209600, 1 / 47900160])
    d = torch.where(small, d_series, d_closed)
    K = skew(phi)
    eye = torch.eye(3, dtype=T.dtype, device=T.device)
    jacobian_inv = eye - 0.5 * K + d * (K @ K)
    rho = (jacobian_inv @ T[..., :3, 3:4])[..., 0]
    return torch.cat([rho, phi], dim=-1)


POSE_DELTA_SIDES = ("camera", "world")


def apply_pose_delta(w2c_init: Any, xi: Any, side: str = "camera") -> Tensor:
    """Pose update ``w2c [..., 4, 4]`` of ``w2c_init [..., 4, 4]`` by the twist ``xi [..., 6]``.

    ``side="camera"`` (the default, ``recon.pose_delta: camera``): ``w2c = se3_exp(xi) @ w2c_init``; the
    perturbation acts in the camera's frame (a pure rotation turns the camera about its own centre).
    ``side="world"`` (official SparseAGS): ``w2c = w2c_init @ se3_exp(xi)``; it acts in the world frame
    (a pure rotation turns the world about its origin, moving the camera centre to ``R^T C``).
    Differentiable w.r.t. both inputs; tensors of one dtype and device are used as they are (no copy).
    """
    if side not in POSE_DELTA_SIDES:
        raise ValueError(f"apply_pose_delta: side must be one of {POSE_DELTA_SIDES}, got {side!r}")
    w2c_init, xi = as_float_tensors(w2c_init, xi)
    return se3_exp(xi) @ w2c_init if side == "camera" else w2c_init @ se3_exp(xi)


def rotation_angle_deg(R1: Any, R2: Any) -> Tensor:
    """Geodesic angle in degrees [...] between rotations ``R1, R2 [..., 3, 3]``: the angle of ``M = R1^T R2``.

    ``t = atan2(sin t, cos t)`` with ``sin t = |vee((M - M^T) / 2)|`` and ``cos t = (tr M - 1) / 2``
    clamped to [-1, 1]: unlike ``acos((tr M - 1) / 2)``, which loses half the digits near 0 and
    180 deg and has an infinite gradient there, this is accurate over the whole range [0, 180].
    """
    R1, R2 = as_float_tensors(R1, R2)
    M = R1.transpose(-1, -2) @ R2
    axial = torch.stack([M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]], -1)
    sin = 0.5 * torch.linalg.vector_norm(axial, dim=-1)
    cos = (0.5 * (M.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.atan2(sin, cos))


# ----------------------------------------------------------------------------------------------
# Alignment
# ----------------------------------------------------------------------------------------------
def umeyama(src: Any, dst: Any, with_scale: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Similarity ``(s [...], R [..., 3, 3], t [..., 3])`` minimising ``sum ||dst - (s R src + t)||^2``.

    Umeyama (1991) on point sets ``src, dst [..., N, 3]``: with the cross-covariance
    ``Sigma = (dst - mu_d)^T (src - mu_s) / N = U S V^T``, ``R = U diag(1, 1, det(U V^T)) V^T`` (the
    sign fix forbids reflections), ``s = tr(S D) / var(src)`` (1 if ``with_scale`` is False) and
    ``t = mu_d - s R mu_s``.
    """
    src, dst = as_float_tensors(src, dst)
    if src.shape[-2:] != dst.shape[-2:] or src.shape[-1] != 3:
        raise ValueError(f"umeyama: src {tuple(src.shape)} and dst {tuple(dst.shape)} must both be [..., N, 3]")
    mu_src, mu_dst = src.mean(-2), dst.mean(-2)
    src_c, dst_c = src - mu_src[..., None, :], dst - mu_dst[..., None, :]
    n = src.shape[-2]
    sigma = dst_c.transpose(-1, -2) @ src_c / n  # [..., 3, 3]
    U, S, Vh = torch.linalg.svd(sigma)
    sign = torch.sign(torch.linalg.det(U @ Vh))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    fix = torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], dim=-1)  # [..., 3]
    R = (U * fix[..., None, :]) @ Vh
    if with_scale:
        var_src = (src_c * src_c).sum((-1, -2)) / n
        s = (S * fix).sum(-1) / var_src
    else:
        s = torch.ones_like(sign)
    t = mu_dst - s[..., None] * (R @ mu_src[..., None])[..., 0]
    return s, R, t


# ----------------------------------------------------------------------------------------------
# Quaternions (WXYZ)
# ----------------------------------------------------------------------------------------------
def quat_wxyz_to_rotmat(q: Any) -> Tensor:
    """Quaternion ``[..., 4]`` (w, x, y, z; normalised here, need not be unit) -> rotation [..., 3, 3]."""
    (q,) = as_float_tensors(q)
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    rows = [
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ]
    return torch.stack(rows, dim=-2)


def rotmat_to_quat_wxyz(R: Any) -> Tensor:
    """Rotation [..., 3, 3] -> unit quaternion [..., 4] (w, x, y, z) with ``w >= 0``.

    Shepperd's method without square roots (as in roma): each of the four candidates below equals
    ``4 q_k q`` for one component ``q_k``; the one with the largest ``4 q_k^2`` (well conditioned)
    is picked and normalised.
    """
    (R,) = as_float_tensors(R)
    m = R
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    trace = m00 + m11 + m22
    candidates = torch.stack(
        [
            torch.stack([1 + trace, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
            torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
        ],
        dim=-2,
    )  # [..., 4 candidates, 4]
    choice = torch.stack([trace, m00, m11, m22], -1).argmax(-1)  # [...]
    index = choice[..., None, None].expand(*choice.shape, 1, 4)
    q = F.normalize(torch.gather(candidates, -2, index)[..., 0, :], dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)
