"""Tests for sparseags.mesh: the Gaussian density grid, marching-cubes extraction, cleanup, colours, GLB."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from sparseags.mesh import MeshError, export_glb, extract_mesh, gaussian_density_grid, official_grid_bounds

IDENTITY_QUAT = (1.0, 0.0, 0.0, 0.0)


def brute_force_density(points: np.ndarray, means, quats, scales, opacities, reach=None) -> np.ndarray:
    """sum_i o_i exp(-1/2 d^T Sigma_i^-1 d) in float64 with scipy rotations (an independent reference).

    With ``reach [G]``, Gaussian i only counts at points within ``reach[i]`` of its centre on every axis.
    """
    from scipy.spatial.transform import Rotation

    quats = np.asarray(quats, dtype=np.float64)
    rotations = Rotation.from_quat(quats[:, [1, 2, 3, 0]]).as_matrix()  # scipy is xyzw
    scales = np.asarray(scales, dtype=np.float64)
    covariances = rotations @ (scales[:, :, None] ** 2 * rotations.transpose(0, 2, 1))
    inverse = np.linalg.inv(covariances)  # [G, 3, 3]
    diff = points[:, None, :] - np.asarray(means, dtype=np.float64)[None]  # [P, G, 3]
    weights = np.exp(-0.5 * np.einsum("pgi,gij,pgj->pg", diff, inverse, diff))
    if reach is not None:
        weights = weights * (np.abs(diff) <= np.asarray(reach)[None, :, None]).all(-1)
    return weights @ np.asarray(opacities, dtype=np.float64)


def sphere_cloud(count: int, radius: float, sigma: float, seed: int = 0):
    """Isotropic Gaussians on a sphere surface; colour red on +x, blue on -x."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    means = radius * directions
    quats = np.tile(IDENTITY_QUAT, (count, 1))
    scales = np.full((count, 3), sigma)
    opacities = np.full(count, 0.9)
    colors = np.where(directions[:, :1] > 0, [[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]])
    return means, quats, scales, opacities, colors


def test_single_gaussian_density_at_centre_equals_opacity():
    centre = np.array([[0.1, -0.2, 0.3]])
    bounds = (centre[0] - 0.5, centre[0] + 0.5)  # odd resolution: the centre is the middle grid point
    density, grid_min, grid_max = gaussian_density_grid(
        centre, [IDENTITY_QUAT], [[0.05, 0.05, 0.05]], [0.7], resolution=21, bounds=bounds
    )
    assert density.shape == (21, 21, 21) and density.dtype == np.float32
    np.testing.assert_allclose(grid_min, bounds[0])
    np.testing.assert_allclose(grid_max, bounds[1])
    assert density[10, 10, 10] == pytest.approx(0.7, abs=1e-5)
    assert density.argmax() == np.ravel_multi_index((10, 10, 10), density.shape)
    # One grid step (0.05 = 1 sigma) along x: exp(-1/2).
    assert density[11, 10, 10] == pytest.approx(0.7 * math.exp(-0.5), rel=1e-4)


def test_rotated_anisotropic_gaussian_axes():
    # Long axis (0.2) along local x, rotated +90 deg about z: the long axis must end up along world +y.
    half = math.sqrt(0.5)
    density, _, _ = gaussian_density_grid(
        [[0.0, 0.0, 0.0]],
        [[half, 0.0, 0.0, half]],
        [[0.2, 0.05, 0.05]],
        [1.0],
        resolution=9,
        bounds=((-0.4,) * 3, (0.4,) * 3),
    )
    # Grid spacing 0.1, index 4 is the origin: (0, 0.2, 0) is one long sigma away, (0.2, 0, 0) four short ones.
    assert density[4, 6, 4] == pytest.approx(math.exp(-0.5), rel=1e-4)
    assert density[6, 4, 4] == pytest.approx(math.exp(-8.0), rel=1e-3)


def test_density_grid_matches_brute_force_with_official_bounds():
    rng = np.random.default_rng(3)
    count = 150
    means = rng.uniform(-0.4, 0.4, (count, 3))
    quats = rng.normal(size=(count, 4))
    scales = rng.uniform(0.02, 0.08, (count, 3))
    scales[10:70] = rng.uniform(0.005, 0.015, (60, 3))  # small ones: not cut by the official relax
    opacities = rng.uniform(0.0, 1.0, count)
    opacities[:10] = 0.001  # dropped (<= 0.005)
    density, grid_min, grid_max = gaussian_density_grid(
        torch.as_tensor(means),
        torch.as_tensor(quats),
        torch.as_tensor(scales),
        torch.as_tensor(opacities),
        resolution=20,
    )
    kept = opacities > 0.005
    expected_min, expected_max = official_grid_bounds(means[kept])
    np.testing.assert_allclose(grid_min, expected_min)
    np.testing.assert_allclose(grid_max, expected_max)
    # Official framing: the centres' bbox fills [-0.9, 0.9] of the [-1, 1] cube along its longest side.
    extent = means[kept].max(0) - means[kept].min(0)
    assert (grid_max - grid_min).max() == pytest.approx(extent.max() / 0.9)
    axes = [np.linspace(grid_min[d], grid_max[d], 20) for d in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    gaussians = (means[kept], quats[kept], scales[kept], opacities[kept])
    full = brute_force_density(points, *gaussians).reshape(density.shape)
    # Guaranteed: every Gaussian within min(1.5 official blocks, 4 sigma_max) of a point on all axes is counted
    # (the official truncation; blocks may add more, never beyond the full sum).
    official_relax = 1.5 * (grid_max - grid_min).max() / 16
    reach = np.minimum(official_relax, 4.0 * scales[kept].max(1))
    truncated = brute_force_density(points, *gaussians, reach=reach).reshape(density.shape)
    assert np.all(density >= truncated - 1e-5)
    assert np.all(density <= full + 1e-5)
    assert np.abs(density - full).max() < 0.5  # big Gaussians (sigma ~ relax) are cut, as in the official code
    assert full.max() > 1.0
    # Where all Gaussians are small, the 4-sigma truncation is invisible.
    small = scales[kept].max(1) < 0.25 * official_relax
    small_only = brute_force_density(points, *(g[small] for g in gaussians)).reshape(density.shape)
    assert small.sum() >= 50
    small_density, _, _ = gaussian_density_grid(
        means[kept][small],
        quats[kept][small],
        scales[kept][small],
        opacities[kept][small],
        resolution=20,
        bounds=(grid_min, grid_max),
    )
    assert np.abs(small_density - small_only).max() < 2e-3


def test_extract_mesh_of_sphere_cloud(tmp_path):
    radius = 0.5
    means, quats, scales, opacities, colors = sphere_cloud(3000, radius, sigma=0.015)
    mesh = extract_mesh(means, quats, scales, opacities, colors, resolution=64)
    norms = np.linalg.norm(mesh.vertices, axis=1)
    # A thin shell: inner and outer surfaces ~1.3 sigma either side of the sphere.
    assert np.abs(norms - radius).mean() < 0.03
    assert norms.min() > radius - 0.06 and norms.max() < radius + 0.06
    assert mesh.is_watertight and mesh.is_winding_consistent
    # Outward winding: the shell's signed volume is positive (it would be negative with flipped faces).
    assert mesh.volume > 0
    assert len(mesh.faces) > 5000
    # Colours follow the Gaussians: red on +x, blue on -x.
    rgba = mesh.visual.vertex_colors
    assert rgba.shape == (len(mesh.vertices), 4) and rgba.dtype == np.uint8
    right, left = mesh.vertices[:, 0] > 0.2, mesh.vertices[:, 0] < -0.2
    assert (rgba[right, 0].astype(int) - rgba[right, 2]).min() > 200
    assert (rgba[left, 2].astype(int) - rgba[left, 0]).min() > 200

    path = export_glb(mesh, tmp_path / "sub" / "sphere.glb")
    assert path.is_file() and not list(path.parent.glob(".*tmp*"))
    loaded = trimesh.load(path, force="mesh")
    assert len(loaded.vertices) == len(mesh.vertices)
    assert len(loaded.faces) == len(mesh.faces)
    np.testing.assert_allclose(loaded.vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(loaded.visual.vertex_colors, rgba)


def test_keep_largest_drops_small_components():
    # A big blob at the origin and a small one to the side.
    means = [[0.0, 0.0, 0.0], [0.7, 0.0, 0.0]]
    quats = [IDENTITY_QUAT, IDENTITY_QUAT]
    scales = [[0.1, 0.1, 0.1], [0.04, 0.04, 0.04]]
    opacities = [1.0, 1.0]
    colors = [[0.2, 0.4, 0.6], [0.9, 0.9, 0.1]]
    bounds = ((-1.0,) * 3, (1.0,) * 3)
    both = extract_mesh(means, quats, scales, opacities, colors, resolution=48, bounds=bounds, keep_largest=False)
    largest = extract_mesh(means, quats, scales, opacities, colors, resolution=48, bounds=bounds)
    assert len(both.split(only_watertight=False)) == 2
    assert len(largest.split(only_watertight=False)) == 1
    assert np.linalg.norm(largest.vertices, axis=1).max() < 0.5  # the small blob (at x = 0.7) is gone
    # Isosurface of a single Gaussian at 0.5: a sphere of radius sigma * sqrt(2 ln 2).
    np.testing.assert_allclose(
        np.linalg.norm(largest.vertices, axis=1).mean(), 0.1 * math.sqrt(2 * math.log(2)), rtol=0.03
    )
    np.testing.assert_array_equal(np.unique(largest.visual.vertex_colors[:, :3], axis=0), [[51, 102, 153]])


def test_no_surface_raises_mesh_error():
    with pytest.raises(MeshError, match="no surface at threshold 0.5"):
        extract_mesh(
            [[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]],
            [IDENTITY_QUAT] * 2,
            [[0.05] * 3] * 2,
            [0.3, 0.3],
            [[1.0, 1.0, 1.0]] * 2,
            resolution=16,
        )
    with pytest.raises(MeshError, match="no Gaussians"):
        extract_mesh([[0.0, 0.0, 0.0]], [IDENTITY_QUAT], [[0.05] * 3], [0.001], [[1.0, 1.0, 1.0]], resolution=16)


def test_bad_shapes_raise_mesh_error():
    with pytest.raises(MeshError, match=r"quats has shape \[1, 3\]"):
        gaussian_density_grid([[0.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]], [[0.1] * 3], [1.0], resolution=8)
    with pytest.raises(MeshError, match="counts differ"):
        gaussian_density_grid([[0.0, 0.0, 0.0]] * 2, [IDENTITY_QUAT], [[0.1] * 3], [1.0], resolution=8)
    with pytest.raises(MeshError, match="NaN"):
        gaussian_density_grid([[np.nan, 0.0, 0.0]], [IDENTITY_QUAT], [[0.1] * 3], [1.0], resolution=8)
