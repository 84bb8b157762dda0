"""The procedural demo scene: an asymmetric textured object rendered with ground truth and noisy initial poses.

``make_demo_scene(out_dir)`` writes a complete scene in the bench layout (see ``bench/README.md`` and
:mod:`sparseags.scene`): input views, GT cameras, a ``dust3r_like`` initial-pose preset with one gross outlier
view, novel views, the GT mesh and ``meta.json``.

The object ("the house") is a union of trimesh primitives, +y up, bounding sphere of radius 0.5 about the
origin.  Every part has its own colour and most carry a solid texture computed from the 3D hit point, so
every viewpoint is identifiable:

* body: a box with a 3D checker whose hue runs from orange (-x) to magenta (+x), and a dark band low on the +z face;
* chimney: a red cylinder with white rings, tilted, on top towards -x/-z;
* nose: a yellow cone pointing out of the +z face, right of centre;
* knob: a blue sphere with a white cap on the +x side;
* fin: a thin green plate with diagonal stripes on the -x side.

Rendering follows the bench renderer: trimesh + embree ray casting, first hit, 2x2 samples per pixel,
alpha = coverage, RGB = mean colour of the covered samples (not premultiplied, background white), shading
``albedo * (0.55 + 0.45 * max(0, n . l))`` with a light fixed in the world (so appearance is view-consistent).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import trimesh
from PIL import Image

from sparseags import cameras
from sparseags.errors import UserError
from sparseags.scene import CameraRecord, cameras_to_json_text

__all__ = [
    "DemoObject",
    "DemoOutputError",
    "build_demo_object",
    "make_demo_scene",
    "look_at_w2c",
    "plain_solid_gaussians",
    "DEMO_NOISE",
]

GENERATOR = "sparseags.synth"
LIGHT_DIR = np.array([0.4, 1.0, 0.3]) / np.linalg.norm([0.4, 1.0, 0.3])  # world-fixed, from above
SUPERSAMPLE = 2  # samples per pixel along each axis

# Camera sampling, as for the bench (bench/README.md section 2); elevation positive = camera above.
ELEVATION_RANGE_DEG = (-10.0, 45.0)
DISTANCE_RANGE = (1.7, 2.2)
ROLL_RANGE_DEG = (-6.0, 6.0)
TARGET_OFFSET_MAX = 0.03
PRINCIPAL_JITTER_256 = 4.0  # pixels at 256 px, scaled with the resolution
INPUT_MIN_GAP_DEG = 25.0
NOVEL_MIN_GAP_DEG = 8.0

# The dust3r_like preset of the bench (section 4), plus the demo's single gross outlier.
DEMO_NOISE: dict[str, Any] = {
    "sigma_r_deg": 4.1,
    "sigma_t": 0.0334,  # x scene_scale
    "sigma_f": 0.05,
    "outlier_az_offset_deg": [120.0, 180.0],  # random sign; far enough to see the wrong side
    "outlier_el_offset_deg": 20.0,  # U(-20, 20), then clipped to the input elevation range
}


class DemoOutputError(UserError, FileExistsError):
    """The output folder exists and is not a demo scene, so it is left alone (one line, names the folder)."""


# ----------------------------------------------------------------------------------------------------------
# The object
# ----------------------------------------------------------------------------------------------------------


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float64) / 255.0


def _body_albedo(points: np.ndarray) -> np.ndarray:
    """3D checker (cells of 0.09) with a hue gradient along x and a dark band on the lower front."""
    t = np.clip((points[:, 0] + 0.3) / 0.6, 0.0, 1.0)[:, None]
    warm = (1.0 - t) * _rgb("#f08a24") + t * _rgb("#c2307a")
    cream = _rgb("#f4ead2")
    cells = np.floor(points / 0.09).astype(np.int64).sum(axis=1) % 2
    colour = np.where(cells[:, None] == 0, warm, cream)
    band = (points[:, 1] < -0.08) & (points[:, 1] > -0.14) & (points[:, 2] > 0.0)
    colour[band] = _rgb("#2b2b3a")
    return colour


def _ring_albedo(axis_origin: np.ndarray, axis_dir: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Red with white rings along the chimney's axis."""

    def albedo(points: np.ndarray) -> np.ndarray:
        along = (points - axis_origin) @ axis_dir
        rings = (np.floor(along / 0.05).astype(np.int64) % 2) == 0
        return np.where(rings[:, None], _rgb("#d62828"), _rgb("#fafafa"))

    return albedo


def _knob_albedo(centre: np.ndarray, radius: float) -> Callable[[np.ndarray], np.ndarray]:
    """Blue with a white cap facing +x, so the knob's own rotation is visible."""

    def albedo(points: np.ndarray) -> np.ndarray:
        cap = (points[:, 0] - centre[0]) > 0.55 * radius
        return np.where(cap[:, None], _rgb("#ffffff"), _rgb("#1d4ed8"))

    return albedo


def _fin_albedo(points: np.ndarray) -> np.ndarray:
    stripes = (np.floor((points[:, 1] + points[:, 2]) / 0.06).astype(np.int64) % 2) == 0
    return np.where(stripes[:, None], _rgb("#2a9d3a"), _rgb("#a7e08f"))


def _solid(colour: str) -> Callable[[np.ndarray], np.ndarray]:
    value = _rgb(colour)
    return lambda points: np.broadcast_to(value, points.shape).copy()


@dataclass
class _Part:
    name: str
    mesh: trimesh.Trimesh
    albedo: Callable[[np.ndarray], np.ndarray]  # world points [N, 3] (before normalisation) -> RGB [N, 3]
    smooth: bool  # interpolate vertex normals (curved parts) or use face normals (flat parts)


def _rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    return trimesh.transformations.rotation_matrix(math.radians(degrees), axis)


def _translate(offset: tuple[float, float, float]) -> np.ndarray:
    return trimesh.transformations.translation_matrix(offset)


def _demo_parts() -> list[_Part]:
    body = trimesh.creation.box(extents=(0.56, 0.30, 0.40))

    chimney_tilt = _rotation((0, 0, 1), 18.0)
    chimney_pose = _translate((-0.16, 0.25, -0.09)) @ chimney_tilt @ _rotation((1, 0, 0), -90.0)
    chimney = trimesh.creation.cylinder(radius=0.055, height=0.30, sections=48, transform=chimney_pose)
    chimney_axis = chimney_tilt[:3, :3] @ np.array([0.0, 1.0, 0.0])

    # trimesh cones point along +z from their base at z = 0.
    nose = trimesh.creation.cone(radius=0.085, height=0.22, sections=48, transform=_translate((0.12, 0.0, 0.19)))

    knob_centre = np.array([0.31, 0.04, 0.06])
    knob = trimesh.creation.icosphere(subdivisions=3, radius=0.09)
    knob.apply_translation(knob_centre)

    fin_pose = _translate((-0.30, 0.06, 0.04)) @ _rotation((1, 0, 0), 25.0)
    fin = trimesh.creation.box(extents=(0.025, 0.20, 0.30), transform=fin_pose)

    return [
        _Part("body", body, _body_albedo, smooth=False),
        _Part("chimney", chimney, _ring_albedo(np.array([-0.16, 0.25, -0.09]), chimney_axis), smooth=True),
        _Part("nose", nose, _solid("#f2c81b"), smooth=True),
        _Part("knob", knob, _knob_albedo(knob_centre, 0.09), smooth=True),
        _Part("fin", fin, _fin_albedo, smooth=False),
    ]


def _corner_normals(part: _Part) -> tuple[trimesh.Trimesh, np.ndarray]:
    """The part's mesh and per-face-corner normals ``[F, 3, 3]`` (smooth inside curved surfaces, sharp at creases)."""
    if not part.smooth:
        mesh = part.mesh
        return mesh, np.repeat(mesh.face_normals[:, None, :], 3, axis=1)
    # smooth_shade splits vertices along edges sharper than `angle`, so cylinder and cone rims stay crisp.
    mesh = trimesh.graph.smooth_shade(part.mesh, angle=math.radians(40.0), facet_minarea=None)
    return mesh, mesh.vertex_normals[mesh.faces]


class DemoObject:
    """The demo mesh with per-face part labels, shading normals and a ray-cast renderer.

    World frame: bounding-box centre at the origin, +y up, every vertex within radius 0.5 of the origin.
    """

    def __init__(self) -> None:
        parts = _demo_parts()
        meshes, normals, labels = [], [], []
        for index, part in enumerate(parts):
            mesh, corner_normals = _corner_normals(part)
            meshes.append(mesh)
            normals.append(corner_normals)
            labels.append(np.full(len(mesh.faces), index, dtype=np.int64))
        # A plain concatenation (no boolean union): first-hit ray casting only ever sees the outer surface.
        raw = trimesh.util.concatenate(meshes)
        centre = raw.bounds.mean(axis=0)
        scale = 0.5 / float(np.linalg.norm(raw.vertices - centre, axis=1).max())
        self._centre, self._scale = centre, scale  # world = (raw - centre) * scale
        self.parts = parts
        self.mesh = trimesh.Trimesh(vertices=(raw.vertices - centre) * scale, faces=raw.faces, process=False)
        self.face_part = np.concatenate(labels)  # [F] index into self.parts
        self.corner_normals = np.concatenate(normals)  # [F, 3, 3]
        self._intersector = trimesh.ray.ray_pyembree.RayMeshIntersector(self.mesh)

    def albedo(self, points: np.ndarray, face_part: np.ndarray) -> np.ndarray:
        """Albedo ``[N, 3]`` of world points ``[N, 3]`` lying on faces of the given parts ``[N]``."""
        raw_points = points / self._scale + self._centre  # the textures are defined before normalisation
        colour = np.ones((len(points), 3))
        for index, part in enumerate(self.parts):
            selected = face_part == index
            if np.any(selected):
                colour[selected] = part.albedo(raw_points[selected])
        return colour

    def export_mesh(self) -> trimesh.Trimesh:
        """The GT mesh with the albedo at each vertex as vertex colours (for viewers)."""
        vertex_part = np.zeros(len(self.mesh.vertices), dtype=np.int64)
        vertex_part[self.mesh.faces.reshape(-1)] = np.repeat(self.face_part, 3)
        colours = np.round(self.albedo(self.mesh.vertices, vertex_part) * 255).astype(np.uint8)
        alpha = np.full((len(colours), 1), 255, dtype=np.uint8)
        return trimesh.Trimesh(
            vertices=self.mesh.vertices,
            faces=self.mesh.faces,
            vertex_colors=np.concatenate([colours, alpha], axis=1),
            process=False,
        )

    def render(self, w2c: np.ndarray, K: np.ndarray, size: int) -> np.ndarray:
        """Render an RGBA uint8 image ``[size, size, 4]`` seen by OpenCV camera ``w2c [4, 4]``, ``K [3, 3]`` (pixels).

        Samples sit at ``(j + (s + 0.5) / SUPERSAMPLE, i + ...)`` in corner-origin pixel coordinates.
        """
        w2c = np.asarray(w2c, dtype=np.float64)
        K = np.asarray(K, dtype=np.float64)
        n = size * SUPERSAMPLE
        sample = (np.arange(n) + 0.5) / SUPERSAMPLE  # [n] pixel coordinates of the sub-samples
        u, v = np.meshgrid(sample, sample)  # [n, n], u along columns
        rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
        rotation = w2c[:3, :3]
        centre = -rotation.T @ w2c[:3, 3]
        directions = rays_cam.reshape(-1, 3) @ rotation  # rows: R^T d, camera -> world
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        origins = np.broadcast_to(centre, directions.shape)

        locations, ray_index, tri_index = self._intersector.intersects_location(
            origins, directions, multiple_hits=False
        )
        triangles = self.mesh.triangles[tri_index]  # [H, 3, 3]
        bary = trimesh.triangles.points_to_barycentric(triangles, locations)  # [H, 3]
        normals = np.einsum("hc,hcd->hd", bary, self.corner_normals[tri_index])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        # Face the camera: overlapping parts never show inner faces, but a grazing hit may get a back normal.
        facing_away = np.einsum("hd,hd->h", normals, directions[ray_index]) > 0
        normals[facing_away] *= -1.0
        shade = 0.55 + 0.45 * np.maximum(0.0, normals @ LIGHT_DIR)
        colour = self.albedo(locations, self.face_part[tri_index]) * shade[:, None]

        colour_sum = np.zeros((n * n, 3))
        hits = np.zeros(n * n)
        colour_sum[ray_index] = colour
        hits[ray_index] = 1.0
        # Pool the SUPERSAMPLE x SUPERSAMPLE sub-samples of each pixel.
        colour_sum = colour_sum.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).sum(axis=(1, 3))
        hits = hits.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).sum(axis=(1, 3))
        rgb = np.where(hits[..., None] > 0, colour_sum / np.maximum(hits, 1.0)[..., None], 1.0)
        alpha = hits / SUPERSAMPLE**2
        rgba = np.concatenate([rgb, alpha[..., None]], axis=-1)
        return np.round(np.clip(rgba, 0.0, 1.0) * 255.0).astype(np.uint8)


def build_demo_object() -> DemoObject:
    """The demo object (deterministic; about 3k faces)."""
    return DemoObject()


# ----------------------------------------------------------------------------------------------------------
# Cameras
# ----------------------------------------------------------------------------------------------------------


def look_at_w2c(centre: np.ndarray, target: np.ndarray, roll_deg: float = 0.0) -> np.ndarray:
    """OpenCV ``w2c [4, 4]`` of a camera at ``centre`` looking at ``target`` with world up +y, rolled about its axis.

    Positive roll turns the image content clockwise on screen (the camera's x axis towards its y axis).
    """
    c2w_gl = cameras.look_at_c2w_gl(np.asarray(centre, float), np.asarray(target, float))
    w2c = cameras.c2w_gl_to_w2c(c2w_gl).numpy()
    cos, sin = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    roll = np.array([[cos, -sin, 0.0, 0.0], [sin, cos, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    return roll @ w2c


def _orbit_centre(azimuth_deg: float, elevation_deg: float, distance: float, target: np.ndarray) -> np.ndarray:
    """Camera centre; bench sign: positive elevation = above, azimuth 0 on +z, 90 on +x."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return target + distance * np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])


def _input_azimuths(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` azimuths uniform on the circle conditioned on a minimum circular gap, sorted, in [0, 360).

    Uniform points conditioned on all gaps >= g have gaps g + (360 - count g) * Dirichlet(1, ..., 1).
    """
    gap = min(INPUT_MIN_GAP_DEG, 0.5 * 360.0 / count)
    spacings = gap + (360.0 - count * gap) * rng.dirichlet(np.ones(count))
    azimuths = (rng.uniform(0.0, 360.0) + np.concatenate([[0.0], np.cumsum(spacings[:-1])])) % 360.0
    return np.sort(azimuths)


def _novel_azimuths(rng: np.random.Generator, count: int, inputs: np.ndarray) -> np.ndarray:
    chosen: list[float] = []
    while len(chosen) < count:
        candidate = rng.uniform(0.0, 360.0)
        circular = np.abs((inputs - candidate + 180.0) % 360.0 - 180.0)
        if circular.min() >= NOVEL_MIN_GAP_DEG:
            chosen.append(candidate)
    return np.array(chosen)


@dataclass
class _ViewSample:
    azimuth_deg: float
    elevation_deg: float
    distance: float
    roll_deg: float
    target: np.ndarray  # [3]
    principal_point: np.ndarray  # [2] pixels at the scene resolution

    def w2c(self) -> np.ndarray:
        centre = _orbit_centre(self.azimuth_deg, self.elevation_deg, self.distance, self.target)
        return look_at_w2c(centre, self.target, self.roll_deg)

    def K(self, resolution: int) -> np.ndarray:
        # The bounding sphere (radius 0.5) spans about 80 % of the image.
        focal = 0.8 * (resolution / 2) / math.tan(math.asin(0.5 / self.distance))
        cx, cy = self.principal_point
        return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])

    def to_meta(self) -> dict[str, Any]:
        return {
            "azimuth_deg": float(self.azimuth_deg),
            "elevation_deg": float(self.elevation_deg),
            "distance": float(self.distance),
            "roll_deg": float(self.roll_deg),
            "target": [float(x) for x in self.target],
            "principal_point": [float(x) for x in self.principal_point],
        }


def _sample_view(rng: np.random.Generator, azimuth_deg: float, resolution: int) -> _ViewSample:
    elevation = rng.uniform(*ELEVATION_RANGE_DEG)
    distance = rng.uniform(*DISTANCE_RANGE)
    roll = rng.uniform(*ROLL_RANGE_DEG)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    target = direction * TARGET_OFFSET_MAX * rng.uniform() ** (1.0 / 3.0)  # uniform in the ball
    jitter = PRINCIPAL_JITTER_256 * resolution / 256.0
    principal = resolution / 2.0 + rng.uniform(-jitter, jitter, size=2)
    return _ViewSample(float(azimuth_deg), elevation, distance, roll, target, principal)


def _random_rotation(rng: np.random.Generator, sigma_deg: float) -> np.ndarray:
    """Rotation by |N(0, sigma)| degrees about a uniformly random axis."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(abs(rng.normal(0.0, sigma_deg)))
    return cameras.so3_exp(axis * angle).numpy()


def _perturb(
    rng: np.random.Generator, w2c: np.ndarray, K: np.ndarray, scene_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """dust3r_like noise: rotate about the camera's own centre, move the centre, scale the focal length."""
    rotation = w2c[:3, :3] @ _random_rotation(rng, DEMO_NOISE["sigma_r_deg"]).T  # world-frame turn of the camera
    centre = -w2c[:3, :3].T @ w2c[:3, 3] + rng.normal(0.0, DEMO_NOISE["sigma_t"] * scene_scale, size=3)
    noisy = np.eye(4)
    noisy[:3, :3] = rotation
    noisy[:3, 3] = -rotation @ centre
    K_noisy = K.copy()
    K_noisy[[0, 1], [0, 1]] *= 1.0 + rng.normal(0.0, DEMO_NOISE["sigma_f"])
    return noisy, K_noisy


def _outlier_view(rng: np.random.Generator, view: _ViewSample) -> tuple[_ViewSample, float, float]:
    """The same camera carried around the object: it still looks at the object but sees another side."""
    low, high = DEMO_NOISE["outlier_az_offset_deg"]
    az_offset = rng.uniform(low, high) * rng.choice([-1.0, 1.0])
    el_offset = rng.uniform(-DEMO_NOISE["outlier_el_offset_deg"], DEMO_NOISE["outlier_el_offset_deg"])
    # Stay within the input elevation range, so the outlier cannot be spotted from its elevation alone.
    elevation = float(np.clip(view.elevation_deg + el_offset, *ELEVATION_RANGE_DEG))
    moved = _ViewSample(
        azimuth_deg=(view.azimuth_deg + az_offset) % 360.0,
        elevation_deg=elevation,
        distance=view.distance,
        roll_deg=view.roll_deg,
        target=view.target,
        principal_point=view.principal_point,
    )
    return moved, float(az_offset), elevation - view.elevation_deg


# ----------------------------------------------------------------------------------------------------------
# Writing the scene
# ----------------------------------------------------------------------------------------------------------


def _write_png(path: Path, rgba: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, mode="RGBA").save(path, format="PNG")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _records(ids: list[str], w2cs: list[np.ndarray], Ks: list[np.ndarray], folder: str) -> list[CameraRecord]:
    return [
        CameraRecord(id=view_id, w2c=w2c, K=K, flag=1, filepath=f"{folder}/{view_id}.png")
        for view_id, w2c, K in zip(ids, w2cs, Ks)
    ]


def _build_scene(folder: Path, seed: int, n_views: int, n_novel: int, resolution: int) -> None:
    demo = build_demo_object()
    camera_rng = np.random.default_rng([seed, 0])
    noise_rng = np.random.default_rng([seed, 1])

    input_ids = [f"{i:03d}" for i in range(n_views)]
    azimuths = _input_azimuths(camera_rng, n_views)
    views = [_sample_view(camera_rng, azimuth, resolution) for azimuth in azimuths]
    novel_ids = [f"n{i:03d}" for i in range(n_novel)]
    novel_views = [_sample_view(camera_rng, a, resolution) for a in _novel_azimuths(camera_rng, n_novel, azimuths)]

    w2c_gt = [view.w2c() for view in views]
    K_gt = [view.K(resolution) for view in views]
    centres = np.stack([-w2c[:3, :3].T @ w2c[:3, 3] for w2c in w2c_gt])
    scene_scale = float(np.linalg.norm(centres - centres.mean(axis=0), axis=1).max())

    outlier_index = int(noise_rng.integers(n_views))
    w2c_init, K_init = [], []
    outlier_meta: dict[str, Any] = {}
    for index, (w2c, K) in enumerate(zip(w2c_gt, K_gt)):
        noisy_w2c, noisy_K = _perturb(noise_rng, w2c, K, scene_scale)
        if index == outlier_index:
            moved, az_offset, el_offset = _outlier_view(noise_rng, views[index])
            noisy_w2c = moved.w2c()
            outlier_meta = {"azimuth_offset_deg": az_offset, "elevation_offset_deg": el_offset}
        w2c_init.append(noisy_w2c)
        K_init.append(noisy_K)

    for view_id, w2c, K in zip(input_ids, w2c_gt, K_gt):
        _write_png(folder / "images" / f"{view_id}.png", demo.render(w2c, K, resolution))
    for view_id, view in zip(novel_ids, novel_views):
        rgba = demo.render(view.w2c(), view.K(resolution), resolution)
        _write_png(folder / "novel" / "images" / f"{view_id}.png", rgba)

    init_text = cameras_to_json_text(_records(input_ids, w2c_init, K_init, "images"))
    _write_text(folder / "cameras_gt.json", cameras_to_json_text(_records(input_ids, w2c_gt, K_gt, "images")))
    _write_text(folder / "init" / "dust3r_like.json", init_text)
    _write_text(folder / "cameras.json", init_text)  # what an estimator would hand over: all flags 1
    if n_novel:
        novel_w2c = [view.w2c() for view in novel_views]
        novel_K = [view.K(resolution) for view in novel_views]
        novel_records = _records(novel_ids, novel_w2c, novel_K, "images")
        _write_text(folder / "novel" / "cameras_gt.json", cameras_to_json_text(novel_records))
    demo.export_mesh().export(folder / "mesh.ply", file_type="ply", encoding="binary")

    meta = {
        "generator": GENERATOR,
        "format_version": 1,
        "seed": seed,
        "resolution": resolution,
        "world": "object bbox centre at the origin, +y up, bounding-sphere radius 0.5 (mesh.ply frame)",
        "object": {
            "parts": [part.name for part in demo.parts],
            "faces": int(len(demo.mesh.faces)),
            "vertices": int(len(demo.mesh.vertices)),
        },
        "render": {
            "engine": "trimesh + embree ray casting (sparseags/synth.py)",
            "supersampling": f"{SUPERSAMPLE}x{SUPERSAMPLE}",
            "shading": "albedo * (0.55 + 0.45 * max(0, n.l))",
            "light_dir_world": LIGHT_DIR.tolist(),
        },
        "camera_sampling": {
            "elevation_deg": list(ELEVATION_RANGE_DEG),
            "elevation_sign": "positive = camera above the object (C_y > 0)",
            "azimuth": "azimuth 0 = camera on +z, 90 = on +x",
            "distance": list(DISTANCE_RANGE),
            "roll_deg": list(ROLL_RANGE_DEG),
            "target_offset_max": TARGET_OFFSET_MAX,
            "input_min_gap_deg": min(INPUT_MIN_GAP_DEG, 0.5 * 360.0 / n_views),
            "novel_min_gap_deg": NOVEL_MIN_GAP_DEG,
            "focal": f"fx = fy = 0.8*{resolution / 2:g}/tan(asin(0.5/distance))",
        },
        "views": {view_id: view.to_meta() for view_id, view in zip(input_ids, views)},
        "novel_views": {view_id: view.to_meta() for view_id, view in zip(novel_ids, novel_views)},
        "scene_scale": scene_scale,
        "noise": {"dust3r_like": {**DEMO_NOISE, "outliers": [input_ids[outlier_index]], "outlier": outlier_meta}},
        "outlier": input_ids[outlier_index],
        "cameras_json_is": "init/dust3r_like.json (all flags 1)",
    }
    _write_text(folder / "meta.json", json.dumps(meta, indent=1) + "\n")


def _is_replaceable(out_dir: Path) -> bool:
    """An existing folder may be replaced only if it is empty or a scene this module made."""
    if not out_dir.exists():
        return True
    if not out_dir.is_dir():
        return False
    if not any(out_dir.iterdir()):
        return True
    try:
        meta = json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == GENERATOR


def make_demo_scene(
    out_dir: str | os.PathLike, seed: int = 0, n_views: int = 8, n_novel: int = 8, resolution: int = 256
) -> Path:
    """Generate the demo scene into ``out_dir`` and return its path.

    The scene is built in a hidden folder beside ``out_dir`` and renamed into place, so a failure never leaves
    a half-written scene and never destroys a previous one.  An existing ``out_dir`` is replaced only if it is
    empty or an earlier demo scene (``meta.json`` says ``generator: sparseags.synth``); otherwise
    DemoOutputError (a FileExistsError and a UserError).
    The output is byte-for-byte deterministic for given arguments.
    """
    if n_views < 3:
        raise ValueError(f"n_views must be >= 3 (one of them becomes the outlier), got {n_views}")
    if n_novel < 0:
        raise ValueError(f"n_novel must be >= 0, got {n_novel}")
    if resolution < 16:
        raise ValueError(f"resolution must be >= 16, got {resolution}")
    out_dir = Path(out_dir)
    if not _is_replaceable(out_dir):
        raise DemoOutputError(f"{out_dir}: exists and is not a demo scene; choose another --out or remove it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    building = out_dir.parent / f".{out_dir.name}.building-{os.getpid()}-{secrets.token_hex(4)}"
    building.mkdir()
    try:
        _build_scene(building, seed, n_views, n_novel, resolution)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise

    retired = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
    if out_dir.exists():
        os.replace(out_dir, retired)
    try:
        os.replace(building, out_dir)
    except BaseException:
        if retired.exists():
            os.replace(retired, out_dir)
        shutil.rmtree(building, ignore_errors=True)
        raise
    shutil.rmtree(retired, ignore_errors=True)
    return out_dir


def plain_solid_gaussians(shape: str, spacing: float = 0.05, grey: float = 0.45) -> dict[str, np.ndarray]:
    """Isotropic Gaussians on the surface of a uniformly grey solid centred at the origin, +y up: the
    symmetric objects of the pose-search tests.

    * ``"cylinder"``: radius 0.35, height 1.0; it looks the same from every azimuth (continuous symmetry).
    * ``"box"``: 0.6 x 1.0 x 0.36 (x, y, z); it looks the same after a half turn about y, not a quarter one.

    Returns ``{"means" [N, 3], "scales" [N, 3], "opacities" [N], "colours" [N, 3]}`` (float32), Gaussians about
    `spacing` apart with a scale of 0.8 x `spacing`, opacity 0.9.
    """
    if shape == "cylinder":
        radius, height = 0.35, 1.0
        around = max(8, int(round(2 * math.pi * radius / spacing)))
        rows = max(2, int(round(height / spacing)) + 1)
        angle = np.tile(np.arange(around) * (2 * math.pi / around), rows)
        y = np.repeat(np.linspace(-height / 2, height / 2, rows), around)
        side = np.stack([radius * np.cos(angle), y, radius * np.sin(angle)], axis=-1)
        caps = []
        for ring in np.arange(spacing, radius, spacing):
            count = max(6, int(round(2 * math.pi * ring / spacing)))
            a = np.arange(count) * (2 * math.pi / count)
            for cap_y in (-height / 2, height / 2):
                caps.append(np.stack([ring * np.cos(a), np.full(count, cap_y), ring * np.sin(a)], axis=-1))
        centres = np.array([[0.0, -height / 2, 0.0], [0.0, height / 2, 0.0]])
        means = np.concatenate([side, *caps, centres])
    elif shape == "box":
        half = np.array([0.3, 0.5, 0.18])
        faces = []
        for axis in range(3):
            u, v = [k for k in range(3) if k != axis]
            gu = np.linspace(-half[u], half[u], max(2, int(round(2 * half[u] / spacing)) + 1))
            gv = np.linspace(-half[v], half[v], max(2, int(round(2 * half[v] / spacing)) + 1))
            uu, vv = np.meshgrid(gu, gv, indexing="ij")
            for sign in (-1.0, 1.0):
                face = np.zeros((uu.size, 3))
                face[:, axis], face[:, u], face[:, v] = sign * half[axis], uu.ravel(), vv.ravel()
                faces.append(face)
        means = np.unique(np.round(np.concatenate(faces), 6), axis=0)  # edges are shared by two faces
    else:
        raise ValueError(f"plain_solid_gaussians: shape must be 'cylinder' or 'box', got {shape!r}")
    n = len(means)
    return {
        "means": means.astype(np.float32),
        "scales": np.full((n, 3), 0.8 * spacing, np.float32),
        "opacities": np.full(n, 0.9, np.float32),
        "colours": np.full((n, 3), grey, np.float32),
    }
