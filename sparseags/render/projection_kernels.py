"""Numba EWA projection + SH colour with an explicit backward (cpu backend).

Mirrors `projection.py` / `sh.py` (the torch versions, used by the reference backend) operation for
operation, so both backends see the same screen-space Gaussians. The backward is the chain rule
written out by hand: conic -> 2D covariance -> J W M -> (W, t, mean, rotation, scale, quaternion),
plus view-dependent SH -> direction -> (mean, camera centre = -Wᵀ t). It includes the gradient
through W inside the covariance and through the camera centre in the SH direction.

Arrays may be float32 or float64; arithmetic is float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .projection import EPS2D, FOV_CLAMP_MARGIN, MAX_RADIUS, NEAR_PLANE
from .sh import SH_C0, SH_C1, SH_C2, SH_C3

C2_0, C2_1, C2_2, C2_3, C2_4 = SH_C2
C3_0, C3_1, C3_2, C3_3, C3_4, C3_5, C3_6 = SH_C3
GRAD_CHUNKS = 64  # Gaussian chunks in the backward; each owns a partial viewmat gradient


@njit(cache=True, inline="always")
def _quat_rotmat(quats, g, rot):
    """Writes R(q/|q|) of Gaussian g into rot [3, 3]; returns (w, x, y, z) normalised and |q|."""
    w = np.float64(quats[g, 0])
    x = np.float64(quats[g, 1])
    y = np.float64(quats[g, 2])
    z = np.float64(quats[g, 3])
    norm = max(math.sqrt(w * w + x * x + y * y + z * z), 1e-12)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    rot[0, 0] = 1.0 - 2.0 * (y * y + z * z)
    rot[0, 1] = 2.0 * (x * y - w * z)
    rot[0, 2] = 2.0 * (x * z + w * y)
    rot[1, 0] = 2.0 * (x * y + w * z)
    rot[1, 1] = 1.0 - 2.0 * (x * x + z * z)
    rot[1, 2] = 2.0 * (y * z - w * x)
    rot[2, 0] = 2.0 * (x * z - w * y)
    rot[2, 1] = 2.0 * (y * z + w * x)
    rot[2, 2] = 1.0 - 2.0 * (x * x + y * y)
    return w, x, y, z, norm


@njit(cache=True, inline="always")
def _sh_basis(x, y, z, degree, basis):
    """3DGS real SH basis at unit direction (x, y, z) into basis[:(degree + 1)²]."""
    basis[0] = SH_C0
    if degree >= 1:
        basis[1] = -SH_C1 * y
        basis[2] = SH_C1 * z
        basis[3] = -SH_C1 * x
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        basis[4] = C2_0 * x * y
        basis[5] = C2_1 * y * z
        basis[6] = C2_2 * (2.0 * zz - xx - yy)
        basis[7] = C2_3 * x * z
        basis[8] = C2_4 * (xx - yy)
    if degree >= 3:
        xx, yy, zz = x * x, y * y, z * z
        basis[9] = C3_0 * y * (3.0 * xx - yy)
        basis[10] = C3_1 * x * y * z
        basis[11] = C3_2 * y * (4.0 * zz - xx - yy)
        basis[12] = C3_3 * z * (2.0 * zz - 3.0 * xx - 3.0 * yy)
        basis[13] = C3_4 * x * (4.0 * zz - xx - yy)
        basis[14] = C3_5 * z * (xx - yy)
        basis[15] = C3_6 * x * (xx - 3.0 * yy)


@njit(cache=True, inline="always")
def _sh_basis_vjp(x, y, z, degree, weights):
    """Σ_k weights[k] ∂basis_k/∂(x, y, z) (direction treated as a free 3-vector)."""
    gx = 0.0
    gy = 0.0
    gz = 0.0
    if degree >= 1:
        gy -= SH_C1 * weights[1]
        gz += SH_C1 * weights[2]
        gx -= SH_C1 * weights[3]
    if degree >= 2:
        gx += C2_0 * y * weights[4]
        gy += C2_0 * x * weights[4]
        gy += C2_1 * z * weights[5]
        gz += C2_1 * y * weights[5]
        gx += -2.0 * C2_2 * x * weights[6]
        gy += -2.0 * C2_2 * y * weights[6]
        gz += 4.0 * C2_2 * z * weights[6]
        gx += C2_3 * z * weights[7]
        gz += C2_3 * x * weights[7]
        gx += 2.0 * C2_4 * x * weights[8]
        gy += -2.0 * C2_4 * y * weights[8]
    if degree >= 3:
        xx, yy, zz = x * x, y * y, z * z
        gx += 6.0 * C3_0 * x * y * weights[9]
        gy += C3_0 * (3.0 * xx - 3.0 * yy) * weights[9]
        gx += C3_1 * y * z * weights[10]
        gy += C3_1 * x * z * weights[10]
        gz += C3_1 * x * y * weights[10]
        gx += -2.0 * C3_2 * x * y * weights[11]
        gy += C3_2 * (4.0 * zz - xx - 3.0 * yy) * weights[11]
        gz += 8.0 * C3_2 * y * z * weights[11]
        gx += -6.0 * C3_3 * x * z * weights[12]
        gy += -6.0 * C3_3 * y * z * weights[12]
        gz += C3_3 * (6.0 * zz - 3.0 * xx - 3.0 * yy) * weights[12]
        gx += C3_4 * (4.0 * zz - 3.0 * xx - yy) * weights[13]
        gy += -2.0 * C3_4 * x * y * weights[13]
        gz += 8.0 * C3_4 * x * z * weights[13]
        gx += 2.0 * C3_5 * x * z * weights[14]
        gy += -2.0 * C3_5 * y * z * weights[14]
        gz += C3_5 * (xx - yy) * weights[14]
        gx += C3_6 * (3.0 * xx - 3.0 * yy) * weights[15]
        gy += -6.0 * C3_6 * x * y * weights[15]
    return gx, gy, gz


@njit(cache=True, inline="always")
def _camera_centre(viewmats, cam):
    """-Wᵀ t of camera `cam`."""
    cx = 0.0
    cy = 0.0
    cz = 0.0
    for i in range(3):
        t_i = np.float64(viewmats[cam, i, 3])
        cx -= np.float64(viewmats[cam, i, 0]) * t_i
        cy -= np.float64(viewmats[cam, i, 1]) * t_i
        cz -= np.float64(viewmats[cam, i, 2]) * t_i
    return cx, cy, cz


@njit(cache=True, inline="always")
def _fov_limits(Ks, cam, width, height):
    fx = np.float64(Ks[cam, 0, 0])
    fy = np.float64(Ks[cam, 1, 1])
    cx = np.float64(Ks[cam, 0, 2])
    cy = np.float64(Ks[cam, 1, 2])
    lim_x_pos = (width - cx) / fx + FOV_CLAMP_MARGIN * 0.5 * width / fx
    lim_x_neg = cx / fx + FOV_CLAMP_MARGIN * 0.5 * width / fx
    lim_y_pos = (height - cy) / fy + FOV_CLAMP_MARGIN * 0.5 * height / fy
    lim_y_neg = cy / fy + FOV_CLAMP_MARGIN * 0.5 * height / fy
    return fx, fy, cx, cy, lim_x_pos, lim_x_neg, lim_y_pos, lim_y_neg


@njit(parallel=True, cache=True, nogil=True)
def project_forward(means, quats, scales, sh, viewmats, Ks, width, height, degree):
    """Screen-space Gaussians and colours for every (camera, Gaussian).

    Returns means2d [C, N, 2], conics [C, N, 3], depths [C, N], colors [C, N, 3], radii int32 [C, N].
    """
    num_cameras = viewmats.shape[0]
    num = means.shape[0]
    dtype = means.dtype
    means2d = np.zeros((num_cameras, num, 2), dtype=dtype)
    conics = np.zeros((num_cameras, num, 3), dtype=dtype)
    depths = np.zeros((num_cameras, num), dtype=dtype)
    colors = np.zeros((num_cameras, num, 3), dtype=dtype)
    radii = np.zeros((num_cameras, num), dtype=np.int32)
    num_coeffs = (degree + 1) * (degree + 1)
    for job in prange(num_cameras * num):
        cam = job // num
        g = job % num
        rot = np.empty((3, 3), dtype=np.float64)
        cam_m = np.empty((3, 3), dtype=np.float64)
        basis = np.zeros(16, dtype=np.float64)
        _quat_rotmat(quats, g, rot)
        mean_cam = np.empty(3, dtype=np.float64)
        for i in range(3):
            acc = np.float64(viewmats[cam, i, 3])
            for j in range(3):
                acc += np.float64(viewmats[cam, i, j]) * np.float64(means[g, j])
            mean_cam[i] = acc
            for k in range(3):  # (W R diag(s))[i, k]
                acc = 0.0
                for j in range(3):
                    acc += np.float64(viewmats[cam, i, j]) * rot[j, k]
                cam_m[i, k] = acc * np.float64(scales[g, k])
        x, y, z = mean_cam[0], mean_cam[1], mean_cam[2]
        depths[cam, g] = z

        # Colour is needed even for culled Gaussians' slots only as a placeholder; compute always.
        ccx, ccy, ccz = _camera_centre(viewmats, cam)
        dir_x = np.float64(means[g, 0]) - ccx
        dir_y = np.float64(means[g, 1]) - ccy
        dir_z = np.float64(means[g, 2]) - ccz
        dir_norm = max(math.sqrt(dir_x * dir_x + dir_y * dir_y + dir_z * dir_z), 1e-12)
        _sh_basis(dir_x / dir_norm, dir_y / dir_norm, dir_z / dir_norm, degree, basis)
        for ch in range(3):
            acc = 0.5
            for k in range(num_coeffs):
                acc += basis[k] * np.float64(sh[g, k, ch])
            colors[cam, g, ch] = max(acc, 0.0)

        if not z >= NEAR_PLANE:
            continue
        fx, fy, cx, cy, lxp, lxn, lyp, lyn = _fov_limits(Ks, cam, width, height)
        x_over_z = max(min(x / z, lxp), -lxn)
        y_over_z = max(min(y / z, lyp), -lyn)
        cov_a = EPS2D
        cov_b = 0.0
        cov_c = EPS2D
        for k in range(3):
            row_u = fx / z * (cam_m[0, k] - x_over_z * cam_m[2, k])
            row_v = fy / z * (cam_m[1, k] - y_over_z * cam_m[2, k])
            cov_a += row_u * row_u
            cov_b += row_u * row_v
            cov_c += row_v * row_v
        det = cov_a * cov_c - cov_b * cov_b
        u = fx * x / z + cx
        v = fy * y / z + cy
        means2d[cam, g, 0] = u
        means2d[cam, g, 1] = v
        if not det > 0.0:
            continue
        conics[cam, g, 0] = cov_c / det
        conics[cam, g, 1] = -cov_b / det
        conics[cam, g, 2] = cov_a / det
        half_gap = 0.5 * (cov_a - cov_c)
        largest_eig = 0.5 * (cov_a + cov_c) + math.sqrt(half_gap * half_gap + cov_b * cov_b)
        radius = math.ceil(3.0 * math.sqrt(largest_eig))
        if not (math.isfinite(radius) and math.isfinite(u) and math.isfinite(v)):
            continue
        radius = min(radius, MAX_RADIUS)
        if u + radius > 0 and u - radius < width and v + radius > 0 and v - radius < height and radius > 0:
            radii[cam, g] = np.int32(radius)
    return means2d, conics, depths, colors, radii


@njit(parallel=True, cache=True, nogil=True)
def project_backward(
    means, quats, scales, sh, viewmats, Ks, width, height, degree, radii, v_means2d, v_conics, v_depths, v_colors
):
    """Vector-Jacobian product of `project_forward` (culled Gaussians receive no gradient).

    Returns v_means [N, 3], v_quats [N, 4], v_scales [N, 3], v_sh [N, K, 3] (float64) and
    v_viewmats [C, 4, 4] (the last row is zero).
    """
    num_cameras = viewmats.shape[0]
    num = means.shape[0]
    num_coeffs = (degree + 1) * (degree + 1)
    v_means = np.zeros((num, 3), dtype=np.float64)
    v_quats = np.zeros((num, 4), dtype=np.float64)
    v_scales = np.zeros((num, 3), dtype=np.float64)
    v_sh = np.zeros(sh.shape, dtype=np.float64)
    num_chunks = min(GRAD_CHUNKS, max(num, 1))
    chunk_viewmats = np.zeros((num_chunks, num_cameras, 3, 4), dtype=np.float64)
    for chunk in prange(num_chunks):
        rot = np.empty((3, 3), dtype=np.float64)
        cam_m = np.empty((3, 3), dtype=np.float64)
        v_cam_m = np.empty((3, 3), dtype=np.float64)
        v_rot = np.empty((3, 3), dtype=np.float64)
        basis = np.zeros(16, dtype=np.float64)
        weights = np.zeros(16, dtype=np.float64)
        mean = np.empty(3, dtype=np.float64)
        mean_cam = np.empty(3, dtype=np.float64)
        v_mean_cam = np.empty(3, dtype=np.float64)
        row_u = np.empty(3, dtype=np.float64)
        row_v = np.empty(3, dtype=np.float64)
        for g in range(chunk * num // num_chunks, (chunk + 1) * num // num_chunks):
            qw, qx, qy, qz, qnorm = _quat_rotmat(quats, g, rot)
            for j in range(3):
                mean[j] = np.float64(means[g, j])
            v_rot[:, :] = 0.0
            for cam in range(num_cameras):
                if radii[cam, g] <= 0:
                    continue
                view = viewmats[cam]
                acc_grad = chunk_viewmats[chunk, cam]
                for i in range(3):
                    acc = np.float64(view[i, 3])
                    for j in range(3):
                        acc += np.float64(view[i, j]) * mean[j]
                    mean_cam[i] = acc
                    for k in range(3):
                        acc = 0.0
                        for j in range(3):
                            acc += np.float64(view[i, j]) * rot[j, k]
                        cam_m[i, k] = acc * np.float64(scales[g, k])
                x, y, z = mean_cam[0], mean_cam[1], mean_cam[2]
                fx, fy, cx, cy, lxp, lxn, lyp, lyn = _fov_limits(Ks, cam, width, height)
                raw_xz = x / z
                raw_yz = y / z
                x_over_z = max(min(raw_xz, lxp), -lxn)
                y_over_z = max(min(raw_yz, lyp), -lyn)
                cov_a = EPS2D
                cov_b = 0.0
                cov_c = EPS2D
                for k in range(3):
                    row_u[k] = fx / z * (cam_m[0, k] - x_over_z * cam_m[2, k])
                    row_v[k] = fy / z * (cam_m[1, k] - y_over_z * cam_m[2, k])
                    cov_a += row_u[k] * row_u[k]
                    cov_b += row_u[k] * row_v[k]
                    cov_c += row_v[k] * row_v[k]
                det = cov_a * cov_c - cov_b * cov_b

                # conic = (c, -b, a) / det
                g_con0 = np.float64(v_conics[cam, g, 0])
                g_con1 = np.float64(v_conics[cam, g, 1])
                g_con2 = np.float64(v_conics[cam, g, 2])
                g_det = -(g_con0 * cov_c - g_con1 * cov_b + g_con2 * cov_a) / (det * det)
                g_cov_a = g_con2 / det + g_det * cov_c
                g_cov_b = -g_con1 / det - 2.0 * g_det * cov_b
                g_cov_c = g_con0 / det + g_det * cov_a

                v_x = 0.0
                v_y = 0.0
                v_z = np.float64(v_depths[cam, g])
                g_xz = 0.0
                g_yz = 0.0
                for k in range(3):
                    g_row_u = 2.0 * g_cov_a * row_u[k] + g_cov_b * row_v[k]
                    g_row_v = 2.0 * g_cov_c * row_v[k] + g_cov_b * row_u[k]
                    # row_u = fx/z (M0 - xz M2), row_v = fy/z (M1 - yz M2)
                    v_cam_m[0, k] = fx / z * g_row_u
                    v_cam_m[1, k] = fy / z * g_row_v
                    v_cam_m[2, k] = -fx / z * x_over_z * g_row_u - fy / z * y_over_z * g_row_v
                    g_xz -= fx / z * g_row_u * cam_m[2, k]
                    g_yz -= fy / z * g_row_v * cam_m[2, k]
                    v_z -= (g_row_u * row_u[k] + g_row_v * row_v[k]) / z
                if -lxn < raw_xz < lxp:
                    v_x += g_xz / z
                    v_z -= g_xz * raw_xz / z
                if -lyn < raw_yz < lyp:
                    v_y += g_yz / z
                    v_z -= g_yz * raw_yz / z
                # u = fx x / z + cx, v = fy y / z + cy
                g_u = np.float64(v_means2d[cam, g, 0])
                g_v = np.float64(v_means2d[cam, g, 1])
                v_x += g_u * fx / z
                v_y += g_v * fy / z
                v_z -= (g_u * fx * x + g_v * fy * y) / (z * z)
                v_mean_cam[0] = v_x
                v_mean_cam[1] = v_y
                v_mean_cam[2] = v_z

                # cam_m = W R diag(s); mean_cam = W mean + t
                for i in range(3):
                    for j in range(3):
                        acc = v_mean_cam[i] * mean[j]
                        for k in range(3):
                            acc += v_cam_m[i, k] * rot[j, k] * np.float64(scales[g, k])
                        acc_grad[i, j] += acc
                    acc_grad[i, 3] += v_mean_cam[i]
                for j in range(3):
                    acc = 0.0
                    for i in range(3):
                        acc += np.float64(view[i, j]) * v_mean_cam[i]
                    v_means[g, j] += acc
                    for k in range(3):
                        v_m_jk = 0.0  # (Wᵀ v_cam_m)[j, k]
                        for i in range(3):
                            v_m_jk += np.float64(view[i, j]) * v_cam_m[i, k]
                        v_scales[g, k] += v_m_jk * rot[j, k]
                        v_rot[j, k] += v_m_jk * np.float64(scales[g, k])

                # colour = max(Σ basis sh + 0.5, 0), basis at normalize(mean - (-Wᵀ t))
                ccx, ccy, ccz = _camera_centre(viewmats, cam)
                dir_x = mean[0] - ccx
                dir_y = mean[1] - ccy
                dir_z = mean[2] - ccz
                dir_norm = max(math.sqrt(dir_x * dir_x + dir_y * dir_y + dir_z * dir_z), 1e-12)
                ux, uy, uz = dir_x / dir_norm, dir_y / dir_norm, dir_z / dir_norm
                _sh_basis(ux, uy, uz, degree, basis)
                for k in range(num_coeffs):
                    weights[k] = 0.0
                for ch in range(3):
                    raw = 0.5
                    for k in range(num_coeffs):
                        raw += basis[k] * np.float64(sh[g, k, ch])
                    if raw < 0.0:
                        continue
                    g_raw = np.float64(v_colors[cam, g, ch])
                    for k in range(num_coeffs):
                        v_sh[g, k, ch] += basis[k] * g_raw
                        weights[k] += np.float64(sh[g, k, ch]) * g_raw
                if degree > 0:
                    g_ux, g_uy, g_uz = _sh_basis_vjp(ux, uy, uz, degree, weights)
                    radial = ux * g_ux + uy * g_uy + uz * g_uz
                    g_dx = (g_ux - ux * radial) / dir_norm
                    g_dy = (g_uy - uy * radial) / dir_norm
                    g_dz = (g_uz - uz * radial) / dir_norm
                    v_means[g, 0] += g_dx
                    v_means[g, 1] += g_dy
                    v_means[g, 2] += g_dz
                    # centre = -Wᵀ t and d(dir)/d(centre) = -1: v_centre = -g_d
                    for i in range(3):
                        t_i = np.float64(view[i, 3])
                        acc_grad[i, 0] += t_i * g_dx
                        acc_grad[i, 1] += t_i * g_dy
                        acc_grad[i, 2] += t_i * g_dz
                        acc_grad[i, 3] += (
                            np.float64(view[i, 0]) * g_dx
                            + np.float64(view[i, 1]) * g_dy
                            + np.float64(view[i, 2]) * g_dz
                        )

            # R(q̂) -> q̂ -> q (normalisation)
            gw = 2.0 * (
                -qz * v_rot[0, 1]
                + qy * v_rot[0, 2]
                + qz * v_rot[1, 0]
                - qx * v_rot[1, 2]
                - qy * v_rot[2, 0]
                + qx * v_rot[2, 1]
            )
            gx = 2.0 * (
                qy * v_rot[0, 1]
                + qz * v_rot[0, 2]
                + qy * v_rot[1, 0]
                - 2.0 * qx * v_rot[1, 1]
                - qw * v_rot[1, 2]
                + qz * v_rot[2, 0]
                + qw * v_rot[2, 1]
                - 2.0 * qx * v_rot[2, 2]
            )
            gy = 2.0 * (
                -2.0 * qy * v_rot[0, 0]
                + qx * v_rot[0, 1]
                + qw * v_rot[0, 2]
                + qx * v_rot[1, 0]
                + qz * v_rot[1, 2]
                - qw * v_rot[2, 0]
                + qz * v_rot[2, 1]
                - 2.0 * qy * v_rot[2, 2]
            )
            gz = 2.0 * (
                -2.0 * qz * v_rot[0, 0]
                - qw * v_rot[0, 1]
                + qx * v_rot[0, 2]
                + qw * v_rot[1, 0]
                - 2.0 * qz * v_rot[1, 1]
                + qy * v_rot[1, 2]
                + qx * v_rot[2, 0]
                + qy * v_rot[2, 1]
            )
            radial = qw * gw + qx * gx + qy * gy + qz * gz
            v_quats[g, 0] = (gw - qw * radial) / qnorm
            v_quats[g, 1] = (gx - qx * radial) / qnorm
            v_quats[g, 2] = (gy - qy * radial) / qnorm
            v_quats[g, 3] = (gz - qz * radial) / qnorm
    v_viewmats = np.zeros((num_cameras, 4, 4), dtype=np.float64)
    for chunk in range(num_chunks):
        v_viewmats[:, :3, :] += chunk_viewmats[chunk]
    return v_means, v_quats, v_scales, v_sh, v_viewmats
