"""Tests for sparseags.cameras: conventions, projection, SO(3)/SE(3), orbit cameras, Umeyama.

Property-based (hypothesis draws a seed, a dtype and a batch shape; the tensors come from numpy's
generator), with independent references: scipy's Rotation, hand-written PyTorch3D/OpenGL projection
formulas, and a numerical integral for the SE(3) left Jacobian.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from sparseags import cameras as cam

SETTINGS = settings(deadline=None, max_examples=30)
DTYPES = st.sampled_from([torch.float32, torch.float64])
SEEDS = st.integers(0, 2**32 - 1)
BATCHES = st.sampled_from([(), (1,), (4,), (2, 3)])


def tol(dtype: torch.dtype, scale: float = 1.0) -> dict:
    return {"atol": scale * (2e-5 if dtype == torch.float32 else 1e-10), "rtol": 0.0}


def random_rotations(rng: np.random.Generator, batch: tuple, dtype: torch.dtype) -> torch.Tensor:
    n = int(np.prod(batch)) if batch else 1
    mats = Rotation.random(n, random_state=rng.integers(2**31)).as_matrix()
    return torch.as_tensor(mats, dtype=dtype).reshape(*batch, 3, 3)


def random_w2c(rng: np.random.Generator, batch: tuple, dtype: torch.dtype) -> torch.Tensor:
    """OpenCV w2c whose camera sees the unit ball around the origin (depth 3..5)."""
    R = random_rotations(rng, batch, dtype)
    t = torch.as_tensor(rng.uniform(-0.3, 0.3, (*batch, 3)), dtype=dtype)
    t[..., 2] = torch.as_tensor(rng.uniform(3.0, 5.0, batch), dtype=dtype)
    w2c = torch.zeros(*batch, 4, 4, dtype=dtype)
    w2c[..., :3, :3], w2c[..., :3, 3], w2c[..., 3, 3] = R, t, 1.0
    return w2c


def random_K(rng: np.random.Generator, batch: tuple, dtype: torch.dtype) -> torch.Tensor:
    f = rng.uniform(150, 400, (*batch, 2))
    c = rng.uniform(100, 156, (*batch, 2))
    return cam.intrinsics_matrix(
        *(torch.as_tensor(a, dtype=dtype) for a in (f[..., 0], f[..., 1], c[..., 0], c[..., 1]))
    )


def assert_rigid(M: torch.Tensor) -> None:
    dtype = M.dtype
    R = M[..., :3, :3]
    eye = torch.eye(3, dtype=dtype).expand_as(R)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye, **tol(dtype, 10))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(R.shape[:-2], dtype=dtype), **tol(dtype, 10))
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=dtype).expand(*M.shape[:-2], 4)
    torch.testing.assert_close(M[..., 3, :], bottom)


# ------------------------------------------------------------------------------------------------
# Convention round trips
# ------------------------------------------------------------------------------------------------
@SETTINGS
@given(seed=SEEDS, dtype=DTYPES, batch=BATCHES)
def test_round_trips_between_all_conventions(seed, dtype, batch):
    rng = np.random.default_rng(seed)
    R = random_rotations(rng, batch, dtype)
    T = torch.as_tensor(rng.normal(size=(*batch, 3)), dtype=dtype)

    w2c = cam.p3d_to_w2c(R, T)
    assert w2c.shape == (*batch, 4, 4) and w2c.dtype == dtype
    assert_rigid(w2c)
    R_back, T_back = cam.w2c_to_p3d(w2c)
    torch.testing.assert_close(R_back, R, **tol(dtype))
    torch.testing.assert_close(T_back, T, **tol(dtype))

    c2w_gl = cam.w2c_to_c2w_gl(w2c)
    assert_rigid(c2w_gl)
    torch.testing.assert_close(cam.c2w_gl_to_w2c(c2w_gl), w2c, **tol(dtype))
    # P3D -> GL -> P3D through both edges.
    R2, T2 = cam.w2c_to_p3d(cam.c2w_gl_to_w2c(cam.w2c_to_c2w_gl(cam.p3d_to_w2c(R, T))))
    torch.testing.assert_close(R2, R, **tol(dtype))
    torch.testing.assert_close(T2, T, **tol(dtype))

    # All three agree on the camera centre: P3D C = -T @ R^T, GL translation column, w2c formula.
    C_p3d = -(T[..., None, :] @ R.transpose(-1, -2))[..., 0, :]
    torch.testing.assert_close(cam.camera_centers(w2c), C_p3d, **tol(dtype))
    torch.testing.assert_close(c2w_gl[..., :3, 3], C_p3d, **tol(dtype))
    torch.testing.assert_close(cam.rigid_inverse(w2c) @ w2c, torch.eye(4, dtype=dtype).expand_as(w2c), **tol(dtype))


def test_bench_readme_formula_by_hand():
    """R_cv = diag(-1,-1,1) @ R.T, t_cv = diag(-1,-1,1) @ T, written out element by element."""
    R = Rotation.from_euler("xyz", [20.0, -35.0, 50.0], degrees=True).as_matrix()
    T = np.array([0.1, -0.2, 1.9])
    expected_R = np.array([[-R[0, 0], -R[1, 0], -R[2, 0]], [-R[0, 1], -R[1, 1], -R[2, 1]], [R[0, 2], R[1, 2], R[2, 2]]])
    expected_t = np.array([-0.1, 0.2, 1.9])
    w2c = cam.p3d_to_w2c(R, T)  # numpy in, torch out
    assert isinstance(w2c, torch.Tensor) and w2c.dtype == torch.float64
    np.testing.assert_allclose(w2c[:3, :3].numpy(), expected_R, atol=1e-15)
    np.testing.assert_allclose(w2c[:3, 3].numpy(), expected_t, atol=1e-15)
    np.testing.assert_allclose(w2c[3].numpy(), [0, 0, 0, 1])
    # The camera looks along +z in both conventions and the centre is C = -T @ R.T.
    np.testing.assert_allclose(cam.camera_centers(w2c).numpy(), -T @ R.T, atol=1e-14)


def test_gl_axes_are_flipped_cv_axes():
    """A GL camera's +x is the CV +x, its +y is CV -y (up), its +z is CV -z (backwards)."""
    w2c = cam.p3d_to_w2c(Rotation.from_rotvec([0.3, -0.5, 0.2]).as_matrix(), [0.2, 0.1, 2.0])
    c2w_cv = cam.rigid_inverse(w2c)
    c2w_gl = cam.w2c_to_c2w_gl(w2c)
    torch.testing.assert_close(c2w_gl[:3, 0], c2w_cv[:3, 0])
    torch.testing.assert_close(c2w_gl[:3, 1], -c2w_cv[:3, 1])
    torch.testing.assert_close(c2w_gl[:3, 2], -c2w_cv[:3, 2])


# ------------------------------------------------------------------------------------------------
# Projection: the same points land on the same pixels in all three conventions
# ------------------------------------------------------------------------------------------------
@SETTINGS
@given(seed=SEEDS, dtype=DTYPES, batch=st.sampled_from([(), (3,)]))
def test_projection_agrees_across_conventions(seed, dtype, batch):
    rng = np.random.default_rng(seed)
    width, height = 256, 192
    w2c = random_w2c(rng, batch, dtype)
    K = random_K(rng, batch, dtype)
    points = torch.as_tensor(rng.uniform(-0.8, 0.8, (*batch, 50, 3)), dtype=dtype)
    fx, fy, cx, cy = (K[..., 0, 0, None], K[..., 1, 1, None], K[..., 0, 2, None], K[..., 1, 2, None])

    # (a) PyTorch3D row-vector formula from the bench README.
    R, T = cam.w2c_to_p3d(w2c)
    Xc = points @ R + T[..., None, :]
    uv_p3d = torch.stack([cx - fx * Xc[..., 0] / Xc[..., 2], cy - fy * Xc[..., 1] / Xc[..., 2]], -1)

    # (b) OpenCV w2c + K.
    uv_cv, z = cam.project_points(points, w2c, K)
    torch.testing.assert_close(uv_cv, uv_p3d, **tol(dtype, 100))
    torch.testing.assert_close(z, Xc[..., 2], **tol(dtype))
    assert bool((z > 0).all())

    # (c) GL c2w with an OpenGL projection matrix, then the viewport transform.
    c2w_gl = cam.w2c_to_c2w_gl(w2c)
    view_gl = torch.linalg.inv(c2w_gl)
    homog = torch.cat([points, torch.ones_like(points[..., :1])], -1)
    X_gl = homog @ view_gl.transpose(-1, -2)
    assert bool((X_gl[..., 2] < 0).all()), "GL cameras look down -z"
    clip = X_gl @ cam.gl_projection_matrix(K, width, height).transpose(-1, -2)
    ndc = clip[..., :3] / clip[..., 3:]
    uv_gl = torch.stack([(ndc[..., 0] + 1) * width / 2, (1 - ndc[..., 1]) * height / 2], -1)
    torch.testing.assert_close(uv_gl, uv_p3d, **tol(dtype, 100))

    # Same with the nvdiffrast matrix of SparseAGS (docs/reference/sparseags.md, y flipped so
    # that ndc_y grows downwards), built by hand here.
    P = torch.zeros(*batch, 4, 4, dtype=dtype)
    P[..., 0, 0] = 2 * fx[..., 0] / width
    P[..., 1, 1] = -2 * fy[..., 0] / height
    P[..., 0, 2] = -(2 * cx[..., 0] / width - 1)
    P[..., 1, 2] = -(2 * cy[..., 0] / height - 1)
    P[..., 2, 2], P[..., 2, 3], P[..., 3, 2] = -1.0, -0.02, -1.0
    clip_nv = X_gl @ P.transpose(-1, -2)
    ndc_nv = clip_nv[..., :2] / clip_nv[..., 3:]
    uv_nv = torch.stack([(ndc_nv[..., 0] + 1) * width / 2, (ndc_nv[..., 1] + 1) * height / 2], -1)
    torch.testing.assert_close(uv_nv, uv_p3d, **tol(dtype, 100))
    # Depth: ndc_z in [-1, 1] and increasing with distance.
    assert bool((ndc[..., 2].abs() <= 1).all())


def test_projection_hand_example():
    """Identity camera: a point right of and below the axis lands right of and below the centre."""
    K = cam.intrinsics_matrix(100.0, 120.0, 64.0, 48.0)
    uv, z = cam.project_points(torch.tensor([[0.5, 0.25, 2.0]]), torch.eye(4), K)
    torch.testing.assert_close(uv, torch.tensor([[64.0 + 25.0, 48.0 + 15.0]]))
    torch.testing.assert_close(z, torch.tensor([2.0]))


@SETTINGS
@given(seed=SEEDS, dtype=DTYPES, sx=st.floats(0.25, 4.0), sy=st.floats(0.25, 4.0))
def test_scale_intrinsics_scales_pixels(seed, dtype, sx, sy):
    rng = np.random.default_rng(seed)
    w2c, K = random_w2c(rng, (2,), dtype), random_K(rng, (2,), dtype)
    points = torch.as_tensor(rng.uniform(-0.5, 0.5, (2, 20, 3)), dtype=dtype)
    uv, _ = cam.project_points(points, w2c, K)
    uv_scaled, _ = cam.project_points(points, w2c, cam.scale_intrinsics(K, sx, sy))
    expected = uv * torch.tensor([sx, sy], dtype=dtype)
    torch.testing.assert_close(uv_scaled, expected, **tol(dtype, 100))


def test_scale_intrinsics_keeps_image_centre_and_corner():
    """Corner-origin pixels: 256 -> 512 maps the centre 128 to 256 (not 256.5) and K[2] is unchanged."""
    K = cam.intrinsics_matrix(200.0, 200.0, 128.0, 128.0)
    K2 = cam.scale_intrinsics(K, 2.0, 0.5)
    torch.testing.assert_close(K2, torch.tensor([[400.0, 0, 256], [0, 100, 64], [0, 0, 1]]))


def test_intrinsics_batching_and_focal_from_fov():
    K = cam.intrinsics_matrix(torch.tensor([100.0, 200.0]), 150.0, 64.0, torch.tensor([[30.0], [40.0]]))
    assert K.shape == (2, 2, 3, 3)
    assert K[1, 0, 1, 2] == 40.0 and K[0, 1, 0, 0] == 200.0 and K[1, 1, 2, 2] == 1.0
    torch.testing.assert_close(cam.focal_from_fov(90.0, 256), torch.tensor(128.0))


# ------------------------------------------------------------------------------------------------
# SO(3) / SE(3)
# ------------------------------------------------------------------------------------------------
@SETTINGS
@given(seed=SEEDS, dtype=DTYPES, batch=BATCHES)
def test_so3_exp_matches_scipy_and_log_inverts(seed, dtype, batch):
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=(*batch, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    phi = axis * rng.uniform(0.0, math.pi - 1e-3, (*batch, 1))
    R = cam.so3_exp(torch.as_tensor(phi, dtype=dtype))
    expected = Rotation.from_rotvec(phi.reshape(-1, 3)).as_matrix().reshape(*batch, 3, 3)
    torch.testing.assert_close(R, torch.as_tensor(expected, dtype=dtype), **tol(dtype, 10))
    torch.testing.assert_close(cam.so3_log(R), torch.as_tensor(phi, dtype=dtype), **tol(dtype, 100))


@pytest.mark.parametrize("angle", [0.0, 1e-12, 1e-7, 1e-4, 0.05, 0.1, 0.1001, 1.0, 3.0, math.pi - 1e-6, math.pi])
def test_so3_and_se3_log_exact_near_zero_and_pi(angle):
    dtype = torch.float64
    axis = torch.tensor([0.3, -0.8, 0.52], dtype=dtype)
    axis = axis / axis.norm()
    phi = axis * angle
    R = cam.so3_exp(phi)
    expected = torch.as_tensor(Rotation.from_rotvec(phi.numpy()).as_matrix())
    torch.testing.assert_close(R, expected, atol=1e-14, rtol=0)
    log = cam.so3_log(R)
    torch.testing.assert_close(cam.so3_exp(log), R, atol=1e-14, rtol=0)
    if angle < math.pi:
        torch.testing.assert_close(log, phi, atol=1e-9 if angle > 3 else 1e-15, rtol=0)
    else:  # at exactly pi, phi and -phi are the same rotation
        assert abs(log.norm().item() - math.pi) < 1e-12
        assert min((log - phi).abs().max().item(), (log + phi).abs().max().item()) < 1e-12
    xi = torch.cat([torch.tensor([0.4, -1.2, 0.7], dtype=dtype), phi])
    T = cam.se3_exp(xi)
    torch.testing.assert_close(cam.se3_exp(cam.se3_log(T)), T, atol=1e-12, rtol=0)
    if angle < math.pi:
        torch.testing.assert_close(cam.se3_log(T), xi, atol=1e-8 if angle > 3 else 1e-14, rtol=0)


def test_so3_log_at_pi_float32():
    for axis in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.0, 0.8]):
        phi = torch.tensor(axis) * math.pi
        R = cam.so3_exp(phi)
        log = cam.so3_log(R)
        assert abs(log.norm().item() - math.pi) < 1e-5
        torch.testing.assert_close(cam.so3_exp(log), R, atol=1e-6, rtol=0)


def left_jacobian_by_integration(phi: torch.Tensor, steps: int = 2001) -> torch.Tensor:
    """J_l(phi) = int_0^1 exp(s phi^) ds, Simpson's rule (an independent reference)."""
    s = torch.linspace(0, 1, steps, dtype=phi.dtype)
    mats = cam.so3_exp(s[:, None] * phi)
    weights = torch.ones(steps, dtype=phi.dtype)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return (weights[:, None, None] * mats).sum(0) / (3 * (steps - 1))


@pytest.mark.parametrize("phi", [[0.0, 0.0, 0.0], [1e-5, -2e-5, 3e-6], [0.3, -0.2, 0.1], [1.5, 1.0, -2.0]])
def test_se3_exp_translation_is_left_jacobian_times_rho(phi):
    phi = torch.tensor(phi, dtype=torch.float64)
    rho = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    T = cam.se3_exp(torch.cat([rho, phi]))
    torch.testing.assert_close(T[:3, :3], cam.so3_exp(phi))
    torch.testing.assert_close(T[:3, 3], left_jacobian_by_integration(phi) @ rho, atol=1e-12, rtol=0)


@SETTINGS
@given(seed=SEEDS, dtype=DTYPES, batch=BATCHES)
def test_se3_group_axioms_and_log_exp(seed, dtype, batch):
    rng = np.random.default_rng(seed)

    def random_xi():
        xi = rng.normal(size=(*batch, 6))
        xi[..., 3:] *= rng.uniform(0, 2.8, (*batch, 1)) / np.linalg.norm(xi[..., 3:], axis=-1, keepdims=True)
        return torch.as_tensor(xi, dtype=dtype)

    a, b, c = random_xi(), random_xi(), random_xi()
    A, B, C = cam.se3_exp(a), cam.se3_exp(b), cam.se3_exp(c)
    eye = torch.eye(4, dtype=dtype).expand_as(A)
    # identity
    torch.testing.assert_close(cam.se3_exp(torch.zeros_like(a)), eye)
    torch.testing.assert_close(A @ eye, A)
    # inverse: exp(-xi) is the group inverse, and equals the rigid inverse
    torch.testing.assert_close(A @ cam.se3_exp(-a), eye, **tol(dtype, 10))
    torch.testing.assert_close(cam.se3_exp(-a), cam.rigid_inverse(A), **tol(dtype, 10))
    # closure and associativity
    assert_rigid(A @ B)
    torch.testing.assert_close((A @ B) @ C, A @ (B @ C), **tol(dtype, 50))
    # log(exp(xi)) = xi for |phi| < pi, and exp(log(T)) = T for products too
    torch.testing.assert_close(cam.se3_log(A), a, **tol(dtype, 200))
    torch.testing.assert_close(cam.se3_exp(cam.se3_log(A @ B)), A @ B, **tol(dtype, 200))
    assert cam.se3_log(A).dtype == dtype


def test_se3_gradients_finite_at_zero():
    zero6 = torch.zeros(2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cam.se3_exp, (zero6,))
    assert torch.autograd.gradcheck(lambda x: cam.se3_log(cam.se3_exp(x)), (zero6,))
    assert torch.autograd.gradcheck(cam.so3_exp, (torch.zeros(3, dtype=torch.float64, requires_grad=True),))
    # Small but nonzero and around the Taylor switch.
    for scale in (1e-9, 0.0999, 0.1001, 1.0):
        xi = (torch.tensor([0.1, 0.2, -0.3, 1.0, -2.0, 0.5], dtype=torch.float64) * scale).requires_grad_()
        assert torch.autograd.gradcheck(cam.se3_exp, (xi,))
    # float32: one SparseAGS-style step from xi = 0 gives finite, nonzero gradients.
    xi = torch.zeros(6, requires_grad=True)
    w2c = cam.apply_pose_delta(torch.eye(4), xi)
    (w2c[:3, 3].sum() + w2c[0, 1]).backward()
    assert torch.isfinite(xi.grad).all() and xi.grad.abs().sum() > 0


def test_apply_pose_delta_acts_in_world_frame():
    w2c_init = cam.p3d_to_w2c(Rotation.from_rotvec([0.1, 0.7, -0.3]).as_matrix(), [0.1, 0.2, 2.0])
    xi = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.3, 0.0], dtype=torch.float64)
    w2c = cam.apply_pose_delta(w2c_init, xi, side="world")
    torch.testing.assert_close(w2c, w2c_init @ cam.se3_exp(xi))
    # Right-multiplying by [[R, 0], [0, 1]] rotates the world: the camera centre becomes R^T C.
    R = cam.so3_exp(xi[3:])
    torch.testing.assert_close(cam.camera_centers(w2c), R.T @ cam.camera_centers(w2c_init))
    # Pure translation xi moves the camera centre by -rho.
    rho = torch.tensor([0.2, -0.1, 0.05], dtype=torch.float64)
    w2c_t = cam.apply_pose_delta(w2c_init, torch.cat([rho, torch.zeros(3, dtype=torch.float64)]), side="world")
    torch.testing.assert_close(cam.camera_centers(w2c_t), cam.camera_centers(w2c_init) - rho)


def test_apply_pose_delta_acts_in_camera_frame_by_default():
    w2c_init = cam.p3d_to_w2c(Rotation.from_rotvec([0.1, 0.7, -0.3]).as_matrix(), [0.1, 0.2, 2.0])
    xi = torch.tensor([0.1, -0.2, 0.05, 0.2, 0.3, -0.1], dtype=torch.float64)
    w2c = cam.apply_pose_delta(w2c_init, xi)
    assert torch.equal(w2c, cam.se3_exp(xi) @ w2c_init)  # the exact expression Reconstruction used before
    assert torch.equal(w2c, cam.apply_pose_delta(w2c_init, xi, side="camera"))
    # A pure rotation turns the camera about its own centre: the centre stays, the axes turn by R.
    rot = torch.cat([torch.zeros(3, dtype=torch.float64), xi[3:]])
    w2c_r = cam.apply_pose_delta(w2c_init, rot)
    torch.testing.assert_close(cam.camera_centers(w2c_r), cam.camera_centers(w2c_init))
    torch.testing.assert_close(w2c_r[:3, :3], cam.so3_exp(xi[3:]) @ w2c_init[:3, :3])
    with pytest.raises(ValueError, match="side"):
        cam.apply_pose_delta(w2c_init, xi, side="left")


@SETTINGS
@given(seed=SEEDS, dtype=DTYPES)
def test_rotation_angle_deg(seed, dtype):
    rng = np.random.default_rng(seed)
    R1 = random_rotations(rng, (5,), dtype)
    angles = torch.as_tensor(rng.uniform(0, 180, 5), dtype=dtype)
    axis = torch.nn.functional.normalize(torch.as_tensor(rng.normal(size=(5, 3)), dtype=dtype), dim=-1)
    R2 = R1 @ cam.so3_exp(axis * torch.deg2rad(angles)[:, None])
    torch.testing.assert_close(
        cam.rotation_angle_deg(R1, R2), angles, atol=2e-3 if dtype == torch.float32 else 1e-9, rtol=0
    )
    torch.testing.assert_close(
        cam.rotation_angle_deg(R2, R1), angles, atol=2e-3 if dtype == torch.float32 else 1e-9, rtol=0
    )


def test_rotation_angle_deg_extremes():
    eye = torch.eye(3, dtype=torch.float64)
    assert cam.rotation_angle_deg(eye, eye).item() == 0.0
    flip_y = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64))
    assert abs(cam.rotation_angle_deg(eye, flip_y).item() - 180.0) < 1e-12
    tiny = cam.so3_exp(torch.tensor([0.0, 0.0, 1e-9], dtype=torch.float64))
    assert abs(cam.rotation_angle_deg(eye, tiny).item() - math.degrees(1e-9)) < 1e-15


# ------------------------------------------------------------------------------------------------
# Quaternions
# ------------------------------------------------------------------------------------------------
@SETTINGS
@given(seed=SEEDS, dtype=DTYPES, batch=BATCHES)
def test_quaternions_wxyz_match_scipy(seed, dtype, batch):
    rng = np.random.default_rng(seed)
    R = random_rotations(rng, batch, dtype)
    q = cam.rotmat_to_quat_wxyz(R)
    assert q.shape == (*batch, 4)
    assert bool((q[..., 0] >= 0).all())
    xyzw = Rotation.from_matrix(R.reshape(-1, 3, 3).double().numpy()).as_quat()
    xyzw *= np.sign(xyzw[:, 3:4] + (xyzw[:, 3:4] == 0))
    expected = torch.as_tensor(np.concatenate([xyzw[:, 3:], xyzw[:, :3]], -1), dtype=dtype).reshape(*batch, 4)
    torch.testing.assert_close(q, expected, **tol(dtype, 10))
    torch.testing.assert_close(cam.quat_wxyz_to_rotmat(q), R, **tol(dtype, 10))
    # Unnormalised quaternions describe the same rotation.
    torch.testing.assert_close(cam.quat_wxyz_to_rotmat(3.0 * q), R, **tol(dtype, 10))


def test_quaternion_hand_example():
    """90 deg about +z: wxyz = (cos 45, 0, 0, sin 45), maps +x to +y."""
    q = torch.tensor([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)], dtype=torch.float64)
    R = cam.quat_wxyz_to_rotmat(q)
    torch.testing.assert_close(
        R @ torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(
        cam.rotmat_to_quat_wxyz(torch.diag(torch.tensor([1.0, -1.0, -1.0]))), torch.tensor([0.0, 1.0, 0.0, 0.0])
    )


# ------------------------------------------------------------------------------------------------
# Orbit cameras
# ------------------------------------------------------------------------------------------------
def test_orbit_camera_sign_facts():
    above = cam.orbit_camera(-30.0, 0.0, 2.0)
    assert above[1, 3] > 0.99, "negative elevation puts the camera above (+y)"
    torch.testing.assert_close(above[:3, 3], torch.tensor([0.0, 1.0, math.sqrt(3.0)]))
    below = cam.orbit_camera(30.0, 0.0, 2.0)
    assert below[1, 3] < -0.99
    side = cam.orbit_camera(0.0, 90.0, 3.0)
    torch.testing.assert_close(side[:3, 3], torch.tensor([3.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    front = cam.orbit_camera(0.0, 0.0, 3.0)
    torch.testing.assert_close(front[:3, 3], torch.tensor([0.0, 0.0, 3.0]))
    # Azimuth 0, elevation 0 is the identity orientation: camera on +z looking down -z, y up.
    torch.testing.assert_close(front[:3, :3], torch.eye(3))


@SETTINGS
@given(elev=st.floats(-85, 85), azim=st.floats(-179, 179), radius=st.floats(0.5, 5.0), seed=SEEDS, dtype=DTYPES)
def test_orbit_camera_looks_at_target_and_round_trips(elev, azim, radius, seed, dtype):
    target = torch.as_tensor(np.random.default_rng(seed).uniform(-0.3, 0.3, 3), dtype=dtype)
    c2w = cam.orbit_camera(elev, azim, radius, target, dtype=dtype)
    assert c2w.dtype == dtype
    assert_rigid(c2w)
    view_dir = -c2w[:3, 2]  # GL cameras look down -z
    to_target = torch.nn.functional.normalize(target - c2w[:3, 3], dim=0)
    torch.testing.assert_close(view_dir, to_target, **tol(dtype, 10))
    assert c2w[1, 1] > 0, "no roll: the camera's up vector points up in the world"
    assert abs(c2w[1, 0]) < 1e-5, "no roll: the camera's right vector is horizontal"
    # Through the OpenCV w2c the target projects onto the principal point, in front of the camera.
    K = cam.intrinsics_matrix(200.0, 200.0, 128.0, 100.0).to(dtype)
    uv, z = cam.project_points(target[None], cam.c2w_gl_to_w2c(c2w), K)
    torch.testing.assert_close(uv[0], torch.tensor([128.0, 100.0], dtype=dtype), atol=1e-3, rtol=0)
    assert z.item() == pytest.approx(radius, rel=1e-4)
    e, a, r = cam.undo_orbit_camera(c2w, target)
    assert e.item() == pytest.approx(elev, abs=1e-3)
    assert a.item() == pytest.approx(azim, abs=1e-3)
    assert r.item() == pytest.approx(radius, rel=1e-5)


def test_orbit_camera_broadcasts_and_handles_poles():
    c2w = cam.orbit_camera(torch.tensor([[-20.0], [10.0]]), torch.tensor([0.0, 45.0, 90.0]), 2.0)
    assert c2w.shape == (2, 3, 4, 4)
    e, a, r = cam.undo_orbit_camera(c2w)
    torch.testing.assert_close(e, torch.tensor([[-20.0] * 3, [10.0] * 3]), atol=1e-4, rtol=0)
    torch.testing.assert_close(a, torch.tensor([[0.0, 45.0, 90.0]] * 2), atol=1e-4, rtol=0)
    torch.testing.assert_close(r, torch.full((2, 3), 2.0))
    for elevation in (-90.0, 90.0):
        pole = cam.orbit_camera(elevation, 0.0, 2.0)
        assert torch.isfinite(pole).all()
        assert_rigid(pole)
        torch.testing.assert_close(pole[:3, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6, rtol=0)
        torch.testing.assert_close(-pole[:3, 2], -pole[:3, 3] / 2.0, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------
# Umeyama
# ------------------------------------------------------------------------------------------------
@SETTINGS
@given(seed=SEEDS, dtype=DTYPES, n=st.integers(3, 20))
def test_umeyama_recovers_similarity(seed, dtype, n):
    rng = np.random.default_rng(seed)
    src = torch.as_tensor(rng.normal(size=(n, 3)), dtype=dtype)
    R = random_rotations(rng, (), dtype)
    s = float(rng.uniform(0.2, 5.0))
    t = torch.as_tensor(rng.normal(size=3) * 3, dtype=dtype)
    dst = s * src @ R.T + t
    s_est, R_est, t_est = cam.umeyama(src, dst)
    scale = 1e3 if dtype == torch.float32 else 1e5
    torch.testing.assert_close(s_est, torch.tensor(s, dtype=dtype), **tol(dtype, scale))
    torch.testing.assert_close(R_est, R, **tol(dtype, scale))
    torch.testing.assert_close(t_est, t, **tol(dtype, scale))
    # Rigid only.
    s1, R1, t1 = cam.umeyama(src, src @ R.T + t, with_scale=False)
    assert s1.item() == 1.0
    torch.testing.assert_close(R1, R, **tol(dtype, scale))
    torch.testing.assert_close(t1, t, **tol(dtype, scale))


def test_umeyama_never_returns_a_reflection_and_batches():
    rng = np.random.default_rng(0)
    src = torch.as_tensor(rng.normal(size=(10, 3)))
    mirrored = src * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    _, R, _ = cam.umeyama(src, mirrored)
    assert torch.linalg.det(R).item() == pytest.approx(1.0)
    batch_src = torch.as_tensor(rng.normal(size=(4, 8, 3)))
    s, R, t = cam.umeyama(batch_src, 2.0 * batch_src + 1.0)
    assert s.shape == (4,) and R.shape == (4, 3, 3) and t.shape == (4, 3)
    torch.testing.assert_close(s, torch.full((4,), 2.0, dtype=torch.float64))
    torch.testing.assert_close(R, torch.eye(3, dtype=torch.float64).expand(4, 3, 3))
    with pytest.raises(ValueError, match="umeyama"):
        cam.umeyama(src, src[:5])


def test_numpy_inputs_return_tensors_and_keep_dtype():
    w2c = cam.p3d_to_w2c(np.eye(3, dtype=np.float32), np.zeros(3, dtype=np.float32))
    assert isinstance(w2c, torch.Tensor) and w2c.dtype == torch.float32
    uv, z = cam.project_points(np.zeros((1, 3)) + [0, 0, 1], np.eye(4), np.eye(3))
    assert isinstance(uv, torch.Tensor) and uv.dtype == torch.float64
    assert cam.so3_exp(torch.zeros(3, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(0)
    xi = torch.as_tensor(rng.normal(size=(8, 6)))
    w2c = random_w2c(rng, (8,), torch.float64)
    K = random_K(rng, (8,), torch.float64)
    points = torch.as_tensor(rng.uniform(-0.5, 0.5, (8, 10, 3)))
    device = torch.device("cuda")
    torch.testing.assert_close(cam.se3_exp(xi.to(device)).cpu(), cam.se3_exp(xi))
    torch.testing.assert_close(cam.se3_log(cam.se3_exp(xi.to(device))).cpu(), cam.se3_log(cam.se3_exp(xi)))
    uv_gpu, _ = cam.project_points(points.to(device), w2c.to(device), K.to(device))
    torch.testing.assert_close(uv_gpu.cpu(), cam.project_points(points, w2c, K)[0])
    c2w = cam.orbit_camera(-30.0, 45.0, 2.0, device=device)
    assert c2w.device.type == "cuda"
    torch.testing.assert_close(cam.w2c_to_c2w_gl(w2c.to(device)).cpu(), cam.w2c_to_c2w_gl(w2c))
