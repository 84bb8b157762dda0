"""Camera frusta for the orbit view: world-space wireframes projected to 2D segments.

Conventions (docs/ARCHITECTURE.md): cameras are OpenCV world-to-camera ``w2c [4, 4]`` (+x right, +y down,
+z forward) with pixel intrinsics ``K [3, 3]``; the orbit view is another such camera. A frustum is the
apex (camera centre), the four image corners back-projected to ``depth`` world units along +z, and a
small triangle on the *top* image edge (image row 0) so an upside-down camera is visible at a glance.

The drawing itself (DearPyGui drawlist) lives in :mod:`gui.panels.orbit_view`; everything here is numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FRUSTUM_COLOURS", "FrustumSet", "frustum_segments", "project_segments"]

# RGBA 0-255: initial (grey), current inlier (green), current outlier (red), ground truth (blue).
FRUSTUM_COLOURS = {
    "initial": (160, 160, 160, 255),
    "inlier": (60, 220, 90, 255),
    "outlier": (240, 70, 60, 255),
    "gt": (80, 150, 255, 255),
}


@dataclass(frozen=True)
class FrustumSet:
    """One family of frusta to draw: poses [V, 4, 4] OpenCV w2c, one RGBA colour per view."""

    name: str
    w2c: np.ndarray  # [V, 4, 4]
    colours: list  # V tuples (r, g, b, a)


def frustum_segments(w2c: np.ndarray, K: np.ndarray, width: float, height: float, depth: float) -> np.ndarray:
    """World-space wireframe of one camera: [11, 2, 3] segments (4 apex edges, 4 rim edges, 3 top marker).

    w2c [4, 4] OpenCV world-to-camera; K [3, 3] pixels for a ``width x height`` image; depth in world units.
    """
    w2c = np.asarray(w2c, dtype=np.float64)
    K_inv = np.linalg.inv(np.asarray(K, dtype=np.float64))
    pixels = np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]])  # TL, TR, BR, BL
    rays = (K_inv @ np.c_[pixels, np.ones(4)].T).T  # [4, 3] with z = 1
    corners_cam = rays * depth
    # Top marker: a triangle above the top edge (smaller y = up in OpenCV), apex at 25 % of the image height.
    top_y = rays[0, 1] * depth
    lift = 0.25 * (rays[3, 1] - rays[0, 1]) * depth
    marker_cam = np.array(
        [
            [0.6 * corners_cam[0, 0], top_y, depth],
            [0.6 * corners_cam[1, 0], top_y, depth],
            [0.5 * (corners_cam[0, 0] + corners_cam[1, 0]), top_y - lift, depth],
        ]
    )
    c2w = np.linalg.inv(w2c)
    to_world = lambda p: p @ c2w[:3, :3].T + c2w[:3, 3]  # noqa: E731 - [n, 3] camera -> world
    apex = c2w[:3, 3]
    corners, marker = to_world(corners_cam), to_world(marker_cam)
    segments = [(apex, c) for c in corners]
    segments += [(corners[i], corners[(i + 1) % 4]) for i in range(4)]
    segments += [(marker[i], marker[(i + 1) % 3]) for i in range(3)]
    return np.asarray(segments)


def project_segments(
    segments: np.ndarray, w2c_view: np.ndarray, K_view: np.ndarray, near: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """Project world segments [S, 2, 3] into the view camera, clipped at the near plane z = near.

    Returns ``(points [M, 2, 2] pixels (u, v), kept [M] indices into segments)``; segments wholly behind
    the camera are dropped, segments crossing the near plane are cut there.
    """
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2, 3)
    w2c_view = np.asarray(w2c_view, dtype=np.float64)
    cam = segments @ w2c_view[:3, :3].T + w2c_view[:3, 3]  # [S, 2, 3]
    z0, z1 = cam[:, 0, 2], cam[:, 1, 2]
    keep = (z0 > near) | (z1 > near)
    cam, index = cam[keep].copy(), np.flatnonzero(keep)
    for end in (0, 1):
        other = 1 - end
        behind = cam[:, end, 2] <= near
        if np.any(behind):
            a, b = cam[behind, end], cam[behind, other]
            t = (near - a[:, 2]) / (b[:, 2] - a[:, 2])
            cam[behind, end] = a + t[:, None] * (b - a)
    K_view = np.asarray(K_view, dtype=np.float64)
    u = K_view[0, 0] * cam[..., 0] / cam[..., 2] + K_view[0, 2]
    v = K_view[1, 1] * cam[..., 1] / cam[..., 2] + K_view[1, 2]
    return np.stack([u, v], axis=-1), index
