"""Mesh extraction from 3D Gaussians (DreamGaussian / SparseAGS stage 2 geometry) and GLB export.

Pipeline (docs/reference/sparseags.md section 7):

1. :func:`gaussian_density_grid` samples ``density(x) = sum_i o_i exp(-1/2 d^T Sigma_i^-1 d)``, ``d = x - mu_i``,
   on a regular grid, block by block, evaluating in each block only the Gaussians near it (the official
   truncation - centres within 1.5 of 16 blocks per axis - tightened to 4 sigma, see the function).
2. :func:`extract_mesh` runs marching cubes at ``density_thresh`` (0.5 in SparseAGS), maps the vertices back
   to world coordinates, cleans the mesh with trimesh (instead of pymeshlab: merge vertices, drop degenerate
   and duplicate faces, keep the large connected components) and colours the vertices from the Gaussians.

Gaussians arrive *activated*: ``means [N, 3]`` world, ``quats [N, 4]`` WXYZ, ``scales [N, 3]`` linear
standard deviations, ``opacities [N]`` in [0, 1], ``colors [N, 3]`` RGB in [0, 1].  Inputs may be torch
tensors or numpy arrays.  No remeshing, decimation or UV texture baking is done: the mesh carries vertex
colours, which glTF viewers display directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes
from torch import Tensor

from sparseags.cameras import quat_wxyz_to_rotmat
from sparseags.errors import UserError
from sparseags.export import atomic_write_bytes

__all__ = [
    "MeshError",
    "official_grid_bounds",
    "gaussian_density_grid",
    "extract_mesh",
    "vertex_colors_from_gaussians",
    "export_glb",
]

# Official constants (DreamGaussian GaussianModel.extract_fields / SparseAGS).
_MIN_OPACITY = 0.005
_BBOX_FILL = 0.9  # the centres' bbox is normalised to [-0.9, 0.9] inside the [-1, 1] grid
_COLOR_CHUNK = 65536  # vertices per batch when colouring


class MeshError(UserError, ValueError):
    """Mesh extraction or export failed for a reason the user can act on (one line)."""


def _as_tensor(value: Any, name: str, shape_tail: tuple[int, ...], device: torch.device | None) -> Tensor:
    tensor = value.detach() if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    tensor = tensor.to(device=device, dtype=torch.float32)
    if tensor.ndim != 1 + len(shape_tail) or tuple(tensor.shape[1:]) != shape_tail:
        tail = "".join(f", {s}" for s in shape_tail)
        raise MeshError(f"{name} has shape {list(tensor.shape)}, expected [N{tail}]")
    if not torch.isfinite(tensor).all():
        raise MeshError(f"{name} contains NaN or infinite values")
    return tensor


def _inverse_sqrt_covariances(quats: Tensor, scales: Tensor) -> Tensor:
    """``W_i = S_i^-1 R_i^T`` [N, 3, 3], so that ``d^T Sigma_i^-1 d = |W_i d|^2`` for ``Sigma = R S S R^T``.

    Working with ``W d`` (a difference, then squares) instead of the expanded quadratic form keeps the
    precision for very thin Gaussians in float32.
    """
    rotations = quat_wxyz_to_rotmat(quats)  # [N, 3, 3]
    inv_scales = 1.0 / scales.clamp_min(1e-12)  # [N, 3]
    return inv_scales[:, :, None] * rotations.transpose(-1, -2)


def official_grid_bounds(means: Any) -> tuple[np.ndarray, np.ndarray]:
    """The official grid cube ``(grid_min [3], grid_max [3])`` for Gaussian centres ``means [N, 3]``.

    The centres' bounding box is scaled uniformly into [-0.9, 0.9] of a [-1, 1] grid, i.e. the grid is a
    cube centred on the bbox centre with half-side ``max_extent / 1.8``.  A degenerate bbox (one point)
    gets a half-side of 1e-3 world units so that the grid is still well defined.
    """
    points = means.detach().cpu().numpy() if isinstance(means, Tensor) else np.asarray(means)
    points = points.astype(np.float64).reshape(-1, 3)
    if len(points) == 0:
        raise MeshError("no Gaussians to bound (after dropping opacity <= 0.005)")
    low, high = points.min(0), points.max(0)
    center = 0.5 * (low + high)
    half = max(float((high - low).max()) / (2.0 * _BBOX_FILL), 1e-3)
    return center - half, center + half


def _block_ranges(resolution: int, block_size: int) -> list[np.ndarray]:
    """Grid indices of each block along one axis: contiguous runs of ``block_size`` (the last may be shorter)."""
    return [np.arange(start, min(start + block_size, resolution)) for start in range(0, resolution, block_size)]


def gaussian_density_grid(
    means: Any,
    quats: Any,
    scales: Any,
    opacities: Any,
    resolution: int = 128,
    bounds: tuple[Any, Any] | None = None,
    chunk: int = 4096,
    *,
    block_size: int = 8,
    relax_ratio: float = 1.5,
    sigma_cutoff: float = 4.0,
    min_opacity: float = _MIN_OPACITY,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the Gaussians' density on a ``resolution^3`` grid: ``(density [R, R, R] float32, grid_min [3], grid_max [3])``.

    ``density[i, j, k]`` is ``sum_i o_i exp(-1/2 d^T Sigma_i^-1 d)`` at the world point
    ``grid_min + (i, j, k) * (grid_max - grid_min) / (R - 1)`` (the corners are grid points, like
    ``torch.linspace``).  Gaussians with opacity <= ``min_opacity`` are dropped first.  ``bounds=None`` uses
    :func:`official_grid_bounds` of the remaining centres; else ``bounds = (grid_min [3], grid_max [3])``.

    Truncation.  The official code splits the grid into 16 blocks per axis and evaluates in each block the
    Gaussians whose centres lie within ``relax_ratio`` (1.5) block sizes of it, so every Gaussian closer than
    ``relax = 1.5 * extent / 16`` (per axis) to a grid point is counted.  We keep that guarantee but also
    skip a Gaussian beyond ``sigma_cutoff`` of its largest standard deviation (it adds less than
    ``o * exp(-cutoff^2 / 2)`` = 3e-4 o at 4 sigma), and use smaller blocks of ``block_size^3`` points: a
    Gaussian is evaluated on a block when its centre is within ``min(relax, sigma_cutoff * max_scale)`` of
    the block's box on every axis.  That evaluates several times fewer point-Gaussian pairs than the
    official blocks for the same density up to that bound.

    Each block is one GEMM of point monomials with per-Gaussian quadratic-form coefficients (at most
    ``chunk`` Gaussians at a time, ~4 * block_size^3 * chunk bytes), in float32 on ``device`` (default: the
    device of ``means`` if it is a tensor, else the CPU), in coordinates relative to the block centre.
    """
    if resolution < 2:
        raise MeshError(f"grid resolution must be >= 2, got {resolution}")
    if block_size < 1 or chunk < 1:
        raise MeshError(f"block_size and chunk must be >= 1, got {block_size} and {chunk}")
    if device is None:
        device = means.device if isinstance(means, Tensor) else torch.device("cpu")
    device = torch.device(device)
    means_t = _as_tensor(means, "means", (3,), device)
    quats_t = _as_tensor(quats, "quats", (4,), device)
    scales_t = _as_tensor(scales, "scales", (3,), device)
    opacities_t = _as_tensor(opacities, "opacities", (), device).reshape(-1)
    count = len(means_t)
    if not (len(quats_t) == len(scales_t) == len(opacities_t) == count):
        raise MeshError(
            f"Gaussian counts differ: means {count}, quats {len(quats_t)}, scales {len(scales_t)}, "
            f"opacities {len(opacities_t)}"
        )

    keep = opacities_t > min_opacity
    means_t, quats_t, scales_t, opacities_t = means_t[keep], quats_t[keep], scales_t[keep], opacities_t[keep]
    if bounds is None:
        grid_min, grid_max = official_grid_bounds(means_t)
    else:
        grid_min = np.asarray(bounds[0], dtype=np.float64).reshape(3)
        grid_max = np.asarray(bounds[1], dtype=np.float64).reshape(3)
        if not np.all(grid_max > grid_min):
            raise MeshError(f"grid bounds must satisfy min < max, got {grid_min.tolist()} and {grid_max.tolist()}")

    density = torch.zeros(resolution, resolution, resolution, dtype=torch.float32, device=device)
    if len(means_t) == 0:
        return density.cpu().numpy(), grid_min, grid_max

    axes = [np.linspace(grid_min[d], grid_max[d], resolution) for d in range(3)]  # float64, exact corners
    official_relax = torch.as_tensor(relax_ratio * (grid_max - grid_min) / 16.0, device=device)  # [3]
    support = sigma_cutoff * scales_t.abs().amax(-1).double()  # [G]
    reach = torch.minimum(support[:, None], official_relax[None, :])  # [G, 3] world units per axis
    whiten = _inverse_sqrt_covariances(quats_t, scales_t)  # [G, 3, 3]
    means64 = means_t.double()
    blocks = _block_ranges(resolution, block_size)

    def near(indices: Tensor, axis: int, block: np.ndarray) -> Tensor:
        values, margin = means64[indices, axis], reach[indices, axis]
        inside = (values + margin >= axes[axis][block[0]]) & (values - margin <= axes[axis][block[-1]])
        return indices[inside]

    everything = torch.arange(len(means_t), device=device)
    for bx in blocks:
        in_x = near(everything, 0, bx)
        if len(in_x) == 0:
            continue
        for by in blocks:
            in_xy = near(in_x, 1, by)
            if len(in_xy) == 0:
                continue
            for bz in blocks:
                selected = near(in_xy, 2, bz)
                if len(selected) == 0:
                    continue
                block = (bx, by, bz)
                density[bx[0] : bx[-1] + 1, by[0] : by[-1] + 1, bz[0] : bz[-1] + 1] = _block_density(
                    block, axes, selected, means64, whiten, opacities_t, chunk
                )
    return density.cpu().numpy(), grid_min, grid_max


def _quadratic_coefficients(whiten: Tensor, mu_local: Tensor) -> Tensor:
    """Coefficients [10, G] with ``d^T A d = features(x) @ coeffs`` for ``A = W^T W``, ``d = x - mu``.

    ``features(x) = [x^2, y^2, z^2, xy, xz, yz, x, y, z, 1]`` (see :func:`_quadratic_features`), so that the
    Mahalanobis distances of all points to all Gaussians of a block are one GEMM.  Coordinates are relative
    to the block centre (small numbers), which keeps the cancellation error of the expanded form small.
    """
    A = whiten.transpose(-1, -2) @ whiten  # [G, 3, 3] inverse covariances
    A_mu = (A @ mu_local[:, :, None])[..., 0]  # [G, 3]
    constant = (A_mu * mu_local).sum(-1)  # [G] = mu^T A mu
    return torch.stack(
        [
            A[:, 0, 0],
            A[:, 1, 1],
            A[:, 2, 2],
            2 * A[:, 0, 1],
            2 * A[:, 0, 2],
            2 * A[:, 1, 2],
            -2 * A_mu[:, 0],
            -2 * A_mu[:, 1],
            -2 * A_mu[:, 2],
            constant,
        ],
        dim=0,
    )


def _quadratic_features(points: Tensor) -> Tensor:
    """[P, 3] -> [P, 10] monomials up to degree 2 (the order of :func:`_quadratic_coefficients`)."""
    x, y, z = points.unbind(-1)
    return torch.stack([x * x, y * y, z * z, x * y, x * z, y * z, x, y, z, torch.ones_like(x)], dim=-1)


def _block_density(
    block: tuple[np.ndarray, np.ndarray, np.ndarray],
    axes: list[np.ndarray],
    selected: Tensor,
    means64: Tensor,
    whiten: Tensor,
    opacities: Tensor,
    chunk: int,
) -> Tensor:
    """Density on one block's points [bx, by, bz] from the ``selected`` Gaussians."""
    device = means64.device
    coords = [axes[d][block[d]] for d in range(3)]
    center = np.array([0.5 * (c[0] + c[-1]) for c in coords])  # [3]
    local = [torch.as_tensor(c - center[d], dtype=torch.float32, device=device) for d, c in enumerate(coords)]
    points = torch.stack(torch.meshgrid(*local, indexing="ij"), dim=-1).reshape(-1, 3)  # [P, 3]
    features = _quadratic_features(points)  # [P, 10]
    total = torch.zeros(len(points), dtype=torch.float32, device=device)
    center_t = torch.as_tensor(center, dtype=torch.float64, device=device)
    for start in range(0, len(selected), chunk):
        ids = selected[start : start + chunk]
        mu_local = (means64[ids] - center_t).float()  # [G, 3]
        mahalanobis = features @ _quadratic_coefficients(whiten[ids], mu_local)  # [P, G]
        # Rounding can make a distance a hair below 0 at a centre; clamp so no weight exceeds the opacity.
        total += torch.exp(mahalanobis.mul_(-0.5).clamp_max_(0.0)) @ opacities[ids]
    return total.reshape(len(block[0]), len(block[1]), len(block[2]))


def _largest_components(mesh: trimesh.Trimesh, min_faces: int, ratio: float = 0.2) -> trimesh.Trimesh:
    """Keep components with >= ``ratio`` x the largest's face count and >= ``min_faces`` faces (the largest
    component is always kept, so a small but valid surface is not deleted entirely)."""
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    sizes = np.bincount(labels)
    largest = int(sizes.max())
    keep_labels = (sizes >= ratio * largest) & (sizes >= min_faces)
    keep_labels[np.argmax(sizes)] = True
    mesh.update_faces(keep_labels[labels])
    mesh.remove_unreferenced_vertices()
    return mesh


def vertex_colors_from_gaussians(
    vertices: np.ndarray,
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    neighbours: int = 8,
) -> np.ndarray:
    """Colours [V, 3] in [0, 1] for mesh ``vertices [V, 3]``.

    Among the ``neighbours`` Gaussians with the nearest centres (cKDTree), each weighs
    ``o_i exp(-1/2 d^T Sigma_i^-1 d)``, its density contribution at the vertex, so the colour is the
    density-weighted mean of the Gaussians that make the surface there.  A vertex that none of them
    reaches (all weights ~0) takes the nearest Gaussian's colour.
    """
    k = min(neighbours, len(means))
    tree = cKDTree(means.cpu().numpy().astype(np.float64))
    _, nearest = tree.query(vertices, k=k)
    nearest = np.asarray(nearest).reshape(len(vertices), k)  # [V, k], sorted by distance
    mixed = np.empty((len(vertices), 3))
    for start in range(0, len(vertices), _COLOR_CHUNK):  # bounded memory: [chunk, k, 3, 3] float64
        stop = start + _COLOR_CHUNK
        ids = torch.as_tensor(nearest[start:stop], device=means.device)
        whiten = _inverse_sqrt_covariances(quats[ids], scales[ids]).double()  # [v, k, 3, 3]
        points = torch.as_tensor(vertices[start:stop], dtype=torch.float64, device=means.device)
        diff = points[:, None] - means[ids].double()  # [v, k, 3]
        mahalanobis = torch.einsum("vkij,vkj->vki", whiten, diff).square().sum(-1)  # [v, k]
        weights = opacities[ids].double() * torch.exp(-0.5 * mahalanobis)  # [v, k]
        unreached = weights.sum(-1) < 1e-12
        weights[unreached] = 0.0
        weights[unreached, 0] = 1.0  # column 0 is the nearest centre
        blend = (weights[..., None] * colors[ids].double()).sum(1) / weights.sum(-1, keepdim=True)
        mixed[start:stop] = blend.clamp(0.0, 1.0).cpu().numpy()
    return mixed


def extract_mesh(
    means: Any,
    quats: Any,
    scales: Any,
    opacities: Any,
    colors: Any,
    resolution: int = 128,
    density_thresh: float = 0.5,
    keep_largest: bool = True,
    min_component_faces: int = 64,
    *,
    bounds: tuple[Any, Any] | None = None,
    color_neighbours: int = 8,
    device: torch.device | str | None = None,
) -> trimesh.Trimesh:
    """Marching-cubes mesh of the Gaussians' density at ``density_thresh``, with vertex colours.

    The density grid is :func:`gaussian_density_grid` (official bounds unless ``bounds`` is given); it is
    padded with one layer of zeros so that surfaces cut by the grid boundary are closed.  Faces are wound
    counter-clockwise seen from outside (normals point to lower density).  Cleanup: merge vertices, drop
    degenerate and duplicate faces and unreferenced vertices; with ``keep_largest``, keep the connected
    components with >= 20% of the largest's faces and >= ``min_component_faces`` faces.  Colours: see
    :func:`vertex_colors_from_gaussians` (stored as RGBA uint8 ``mesh.visual.vertex_colors``).

    Raises :class:`MeshError` when no grid value exceeds the threshold.
    """
    if not density_thresh > 0.0:
        raise MeshError(f"density_thresh must be > 0, got {density_thresh}")
    if device is None:
        device = means.device if isinstance(means, Tensor) else torch.device("cpu")
    means_t = _as_tensor(means, "means", (3,), device)
    quats_t = _as_tensor(quats, "quats", (4,), device)
    scales_t = _as_tensor(scales, "scales", (3,), device)
    opacities_t = _as_tensor(opacities, "opacities", (), device).reshape(-1)
    colors_t = _as_tensor(colors, "colors", (3,), device)
    if len(colors_t) != len(means_t):
        raise MeshError(f"colors has {len(colors_t)} rows for {len(means_t)} Gaussians")
    density, grid_min, grid_max = gaussian_density_grid(
        means_t, quats_t, scales_t, opacities_t, resolution, bounds, device=device
    )
    peak = float(density.max())
    if not peak > density_thresh:
        raise MeshError(
            f"no surface at threshold {density_thresh}: the density grid peaks at {peak:.4g} "
            "(lower the threshold or check the Gaussians' opacities)"
        )

    padded = np.pad(density, 1, mode="constant", constant_values=0.0)
    # "descent": the object is where the density is high.  skimage then winds the faces clockwise seen from
    # outside (its returned normals do point outwards); trimesh and glTF expect counter-clockwise: reverse.
    vertices, faces, _, _ = marching_cubes(padded, level=density_thresh, gradient_direction="descent")
    faces = np.ascontiguousarray(faces[:, ::-1])
    spacing = (grid_max - grid_min) / (resolution - 1)
    world = grid_min + (vertices.astype(np.float64) - 1.0) * spacing

    mesh = trimesh.Trimesh(vertices=world, faces=faces, process=False)
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.update_faces(mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    if len(mesh.faces) == 0:
        raise MeshError(f"no surface at threshold {density_thresh}: marching cubes produced only degenerate faces")
    if keep_largest:
        mesh = _largest_components(mesh, min_component_faces)

    keep = opacities_t > _MIN_OPACITY  # the Gaussians the density grid used
    rgb = vertex_colors_from_gaussians(
        np.asarray(mesh.vertices),
        means_t[keep],
        quats_t[keep],
        scales_t[keep],
        opacities_t[keep],
        colors_t[keep],
        color_neighbours,
    )
    rgba = np.concatenate([np.round(rgb * 255.0), np.full((len(rgb), 1), 255.0)], axis=1).astype(np.uint8)
    mesh.visual = trimesh.visual.ColorVisuals(mesh=mesh, vertex_colors=rgba)
    return mesh


def export_glb(mesh: trimesh.Trimesh, path: str | os.PathLike) -> Path:
    """Write ``mesh`` (with its vertex colours) as binary glTF, atomically. Returns the path."""
    path = Path(path)
    if len(mesh.faces) == 0:
        raise MeshError(f"{path}: cannot export an empty mesh")
    data = mesh.export(file_type="glb")
    atomic_write_bytes(path, data)
    return path
