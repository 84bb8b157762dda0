"""Numba kernels of the tile rasteriser (cpu backend): binning, forward, backward, reduction.

Layout: C cameras, N Gaussians, 16×16-pixel tiles. A camera-tile "job" owns a contiguous slice of
the intersection list `isect_ids` (Gaussian indices, front to back), delimited by `tile_offsets`.
Jobs run in parallel (`prange` over camera × tile); each job writes only its own pixels and its own
slice of the per-intersection gradient buffer, so there are no races and no float atomics, and the
final per-Gaussian reduction runs in a fixed order, which keeps the gradients bitwise deterministic.

All kernels accept float32 or float64 arrays (one compiled specialisation each, cached on disk)
and do their arithmetic in float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .constants import MAX_ALPHA, MAX_MAHALANOBIS_HALF, MIN_ALPHA, MIN_TRANSMITTANCE, TILE_SIZE

TILE_PIXELS = TILE_SIZE * TILE_SIZE
NUM_GRAD = 10  # per-intersection gradient: mean2d (2), conic (3), colour (3), opacity, depth
NUM_FEATURES = 5  # composited features: rgb, 1 (alpha), depth
# Rect margin in pixels: the 3σ extent is computed from the inverse of the conic, so rounding can
# differ from the per-pixel test by ~1e-7 px; a tiny margin keeps every touched pixel in the rect.
RECT_MARGIN = 1e-3
# LLVM fast-math flags for the raster kernels: fused multiply-adds, reciprocals and approximate libm calls
# are allowed, but not reassociation (the sums keep their order, so results stay deterministic) and not
# the no-NaN / no-inf assumptions (a degenerate Gaussian must not turn into undefined behaviour).
SAFE_FASTMATH = {"contract", "arcp", "afn", "nsz"}


@njit(cache=True, nogil=True)
def pixel_rects(means2d, conics, radii, width, height):
    """Inclusive pixel ranges [x0, x1] × [y0, y1] whose centres can lie inside each 3σ ellipse.

    The ellipse ½dᵀΣ⁻¹d ≤ 4.5 spans ±3·sqrt(Σxx) in x and ±3·sqrt(Σyy) in y (tighter than the
    circular radius for elongated Gaussians). Empty rects have x0 > x1. Returns int32 [C, N, 4].
    """
    num_cameras, num = radii.shape
    rects = np.empty((num_cameras, num, 4), dtype=np.int32)
    for job in range(num_cameras * num):
        cam = job // num
        g = job % num
        rects[cam, g, 0] = 1
        rects[cam, g, 1] = 0
        rects[cam, g, 2] = 1
        rects[cam, g, 3] = 0
        if radii[cam, g] <= 0:
            continue
        a = np.float64(conics[cam, g, 0])
        b = np.float64(conics[cam, g, 1])
        c = np.float64(conics[cam, g, 2])
        det = a * c - b * b
        if not det > 0.0:
            continue
        radius = np.float64(radii[cam, g])
        extent_x = min(3.0 * math.sqrt(c / det), radius) + RECT_MARGIN
        extent_y = min(3.0 * math.sqrt(a / det), radius) + RECT_MARGIN
        mx = np.float64(means2d[cam, g, 0])
        my = np.float64(means2d[cam, g, 1])
        # Pixel j is centred at j + 0.5: j ∈ [mx - e - 0.5, mx + e - 0.5].
        x0 = max(math.ceil(mx - extent_x - 0.5), 0.0)
        x1 = min(math.floor(mx + extent_x - 0.5), width - 1.0)
        y0 = max(math.ceil(my - extent_y - 0.5), 0.0)
        y1 = min(math.floor(my + extent_y - 0.5), height - 1.0)
        if x0 <= x1 and y0 <= y1:
            rects[cam, g, 0] = np.int32(x0)
            rects[cam, g, 1] = np.int32(x1)
            rects[cam, g, 2] = np.int32(y0)
            rects[cam, g, 3] = np.int32(y1)
    return rects


@njit(cache=True, nogil=True)
def bin_tiles(rects, depth_order, tiles_x, tiles_y):
    """Per camera-tile lists of Gaussians, front to back (a counting sort over depth-sorted ids).

    rects: int32 [C, N, 4]; depth_order: int64 [C, N], Gaussian ids by increasing view-space z.
    Returns tile_offsets int64 [C·T + 1] and isect_ids int32 [total]; job j = c·T + tile owns
    isect_ids[tile_offsets[j]:tile_offsets[j + 1]].
    """
    num_cameras, num = depth_order.shape
    num_tiles = tiles_x * tiles_y
    counts = np.zeros(num_cameras * num_tiles + 1, dtype=np.int64)
    for cam in range(num_cameras):
        base = cam * num_tiles + 1
        for g in range(num):
            if rects[cam, g, 0] > rects[cam, g, 1]:
                continue
            for ty in range(rects[cam, g, 2] // TILE_SIZE, rects[cam, g, 3] // TILE_SIZE + 1):
                for tx in range(rects[cam, g, 0] // TILE_SIZE, rects[cam, g, 1] // TILE_SIZE + 1):
                    counts[base + ty * tiles_x + tx] += 1
    tile_offsets = np.cumsum(counts)
    isect_ids = np.empty(tile_offsets[-1], dtype=np.int32)
    for cam in range(num_cameras):
        cursor = tile_offsets[cam * num_tiles : (cam + 1) * num_tiles].copy()
        for k in range(num):
            g = depth_order[cam, k]
            if rects[cam, g, 0] > rects[cam, g, 1]:
                continue
            for ty in range(rects[cam, g, 2] // TILE_SIZE, rects[cam, g, 3] // TILE_SIZE + 1):
                for tx in range(rects[cam, g, 0] // TILE_SIZE, rects[cam, g, 1] // TILE_SIZE + 1):
                    tile = ty * tiles_x + tx
                    isect_ids[cursor[tile]] = g
                    cursor[tile] += 1
    return tile_offsets, isect_ids


@njit(cache=True, inline="always", fastmath=SAFE_FASTMATH)
def _sigma_limit(opacity):
    """Largest ½dᵀΣ⁻¹d a composited fragment can have: the 3σ ellipse, or where o·e^-σ hits 1/255.

    Used only to pre-clip pixel spans (with a margin); the per-pixel test stays the exact rule.
    """
    if opacity * 255.0 <= 1e-30:
        return 0.0
    return min(MAX_MAHALANOBIS_HALF, math.log(opacity * 255.0) + 1e-5)


@njit(cache=True, inline="always", fastmath=SAFE_FASTMATH)
def _row_span(dy, mx, a, b, c, sigma_limit, x0, x1):
    """Pixel columns [lo, hi] of row offset dy (= row centre - mean y) where ½dᵀΣ⁻¹d ≤ sigma_limit.

    Solves a·dx² + 2b·dy·dx + c·dy² − 2·limit ≤ 0 for dx = px + 0.5 − mx, widened by a small margin
    and clipped to [x0, x1]; lo > hi when the row misses the ellipse.
    """
    disc = b * b * dy * dy - a * (c * dy * dy - 2.0 * sigma_limit)
    if disc < 0.0:
        return 1, 0
    root = math.sqrt(disc)
    centre = mx - 0.5 - b * dy / a
    lo = max(x0, np.int64(math.ceil(centre - root / a - RECT_MARGIN)))
    hi = min(x1, np.int64(math.floor(centre + root / a + RECT_MARGIN)))
    return lo, hi


@njit(cache=True, inline="always", fastmath=SAFE_FASTMATH)
def _row_start(lo, dy, mx, a, b, c):
    """Incremental evaluation of g = exp(-σ) along a row, σ(dx) = ½(a dx² + c dy²) + b dx dy.

    Stepping dx -> dx + 1 adds Δ = a dx + a/2 + b dy to σ, and Δ itself grows by a, so
    g(dx + 1) = g(dx)·exp(-Δ) and exp(-Δ) is multiplied by exp(-a): three exps per row instead of
    one per pixel. Forward and backward run the identical sequence, so they make identical
    per-pixel decisions. Returns (σ, Δ, g, exp(-Δ)) at column `lo`.
    """
    dx = lo + 0.5 - mx
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    step = a * dx + 0.5 * a + b * dy
    return sigma, step, math.exp(-sigma), math.exp(-step)


@njit(cache=True, inline="always", fastmath=SAFE_FASTMATH)
def _alpha(sigma, gauss, opacity):
    """Alpha of one fragment, or -1 when skipped (outside the 3σ ellipse or below 1/255)."""
    if sigma > MAX_MAHALANOBIS_HALF:
        return -1.0
    alpha = min(MAX_ALPHA, opacity * gauss)
    if alpha < MIN_ALPHA:
        return -1.0
    return alpha


@njit(parallel=True, cache=True, nogil=True, fastmath=SAFE_FASTMATH)
def rasterize_forward(
    means2d, conics, colors, opacities, depths, backgrounds, rects, tile_offsets, isect_ids, width, height, tiles_x
):
    """Front-to-back compositing per camera-tile job.

    Returns rgb [C, H, W, 3], alpha [C, H, W], depth [C, H, W] (Σ w z), final transmittance
    [C, H, W] (float64) and n_used [C, H, W] int32 = 1 + position (in the tile list) of the last
    composited fragment, which bounds the backward traversal.
    """
    num_cameras = means2d.shape[0]
    num_tiles = (tile_offsets.shape[0] - 1) // num_cameras
    dtype = means2d.dtype
    out_rgb = np.empty((num_cameras, height, width, 3), dtype=dtype)
    out_alpha = np.empty((num_cameras, height, width), dtype=dtype)
    out_depth = np.empty((num_cameras, height, width), dtype=dtype)
    out_t = np.empty((num_cameras, height, width), dtype=np.float64)
    out_used = np.empty((num_cameras, height, width), dtype=np.int32)
    for job in prange(num_cameras * num_tiles):
        cam = job // num_tiles
        tile = job % num_tiles
        px0 = (tile % tiles_x) * TILE_SIZE
        py0 = (tile // tiles_x) * TILE_SIZE
        px1 = min(px0 + TILE_SIZE, width) - 1
        py1 = min(py0 + TILE_SIZE, height) - 1
        trans = np.ones(TILE_PIXELS, dtype=np.float64)
        acc_r = np.zeros(TILE_PIXELS, dtype=np.float64)
        acc_g = np.zeros(TILE_PIXELS, dtype=np.float64)
        acc_b = np.zeros(TILE_PIXELS, dtype=np.float64)
        acc_w = np.zeros(TILE_PIXELS, dtype=np.float64)
        acc_z = np.zeros(TILE_PIXELS, dtype=np.float64)
        used = np.zeros(TILE_PIXELS, dtype=np.int32)
        done = np.zeros(TILE_PIXELS, dtype=np.bool_)
        # Pixels still compositing, per tile row and in all: a row whose pixels have all stopped is
        # skipped before its span and exps are computed (on an opaque object most rows stop long
        # before the tile's list ends), and the tile stops when none is left.
        row_alive = np.full(TILE_SIZE, px1 - px0 + 1, dtype=np.int64)
        alive = (px1 - px0 + 1) * (py1 - py0 + 1)
        start = tile_offsets[job]
        for e in range(start, tile_offsets[job + 1]):
            g = isect_ids[e]
            x0 = max(rects[cam, g, 0], px0)
            x1 = min(rects[cam, g, 1], px1)
            y0 = max(rects[cam, g, 2], py0)
            y1 = min(rects[cam, g, 3], py1)
            mx = np.float64(means2d[cam, g, 0])
            my = np.float64(means2d[cam, g, 1])
            a = np.float64(conics[cam, g, 0])
            b = np.float64(conics[cam, g, 1])
            c = np.float64(conics[cam, g, 2])
            opacity = np.float64(opacities[g])
            red = np.float64(colors[cam, g, 0])
            green = np.float64(colors[cam, g, 1])
            blue = np.float64(colors[cam, g, 2])
            z = np.float64(depths[cam, g])
            sigma_limit = _sigma_limit(opacity)
            step_growth = math.exp(-a)
            for py in range(y0, y1 + 1):
                if row_alive[py - py0] == 0:
                    continue
                dy = py + 0.5 - my
                row = (py - py0) * TILE_SIZE - px0
                lo, hi = _row_span(dy, mx, a, b, c, sigma_limit, x0, x1)
                if lo > hi:
                    continue
                sigma, step, gauss, ratio = _row_start(lo, dy, mx, a, b, c)
                for px in range(lo, hi + 1):
                    sigma_px = sigma
                    gauss_px = gauss
                    sigma += step
                    step += a
                    gauss *= ratio
                    ratio *= step_growth
                    p = row + px
                    if done[p]:
                        continue
                    alpha = _alpha(sigma_px, gauss_px, opacity)
                    if alpha < 0.0:
                        continue
                    next_t = trans[p] * (1.0 - alpha)
                    if next_t < MIN_TRANSMITTANCE:
                        done[p] = True
                        alive -= 1
                        row_alive[py - py0] -= 1
                        continue
                    weight = alpha * trans[p]
                    acc_r[p] += weight * red
                    acc_g[p] += weight * green
                    acc_b[p] += weight * blue
                    acc_w[p] += weight
                    acc_z[p] += weight * z
                    trans[p] = next_t
                    used[p] = e - start + 1
            if alive == 0:
                break
        for py in range(py0, py1 + 1):
            for px in range(px0, px1 + 1):
                p = (py - py0) * TILE_SIZE + px - px0
                out_rgb[cam, py, px, 0] = acc_r[p] + trans[p] * backgrounds[cam, 0]
                out_rgb[cam, py, px, 1] = acc_g[p] + trans[p] * backgrounds[cam, 1]
                out_rgb[cam, py, px, 2] = acc_b[p] + trans[p] * backgrounds[cam, 2]
                out_alpha[cam, py, px] = acc_w[p]
                out_depth[cam, py, px] = acc_z[p]
                out_t[cam, py, px] = trans[p]
                out_used[cam, py, px] = used[p]
    return out_rgb, out_alpha, out_depth, out_t, out_used


@njit(parallel=True, cache=True, nogil=True, fastmath=SAFE_FASTMATH)
def rasterize_backward(
    means2d,
    conics,
    colors,
    opacities,
    depths,
    backgrounds,
    rects,
    tile_offsets,
    isect_ids,
    final_t,
    n_used,
    grad_rgb,
    grad_alpha,
    grad_depth,
    width,
    height,
    tiles_x,
):
    """Back-to-front traversal (as the 3DGS CUDA backward): per-intersection gradients [total, 10].

    Per pixel, T is recovered from the final transmittance by T ← T / (1 − α) (α ≤ 0.99 keeps this
    stable) and S = Σ_{behind} f w + T_final·bg is the suffix sum, so for features f = (rgb, 1, z):
    ∂out/∂αᵢ = Tᵢ fᵢ − S/(1 − αᵢ). Gradient columns: d mean2d (x, y), d conic (a, b, c),
    d colour (r, g, b), d opacity, d depth.
    """
    num_cameras = means2d.shape[0]
    num_tiles = (tile_offsets.shape[0] - 1) // num_cameras
    isect_grads = np.zeros((isect_ids.shape[0], NUM_GRAD), dtype=means2d.dtype)
    for job in prange(num_cameras * num_tiles):
        cam = job // num_tiles
        tile = job % num_tiles
        px0 = (tile % tiles_x) * TILE_SIZE
        py0 = (tile // tiles_x) * TILE_SIZE
        px1 = min(px0 + TILE_SIZE, width) - 1
        py1 = min(py0 + TILE_SIZE, height) - 1
        trans = np.empty(TILE_PIXELS, dtype=np.float64)
        # suffix_dot = S · grad_out, S = Σ_{behind} f w + T_final (bg, 0, 0): a scalar per pixel
        # is all the backward needs, since ∂L/∂αᵢ = Tᵢ (fᵢ · grad_out) − (S · grad_out)/(1 − αᵢ).
        suffix_dot = np.empty(TILE_PIXELS, dtype=np.float64)
        grad_out = np.zeros((TILE_PIXELS, NUM_FEATURES), dtype=np.float64)
        used = np.zeros(TILE_PIXELS, dtype=np.int32)
        # The longest list prefix any pixel of a tile row composited: a fragment at or beyond it
        # touches nothing in that row, so the row is skipped before its span and exps.
        row_used = np.zeros(TILE_SIZE, dtype=np.int32)
        max_used = 0
        for py in range(py0, py1 + 1):
            for px in range(px0, px1 + 1):
                p = (py - py0) * TILE_SIZE + px - px0
                trans[p] = final_t[cam, py, px]
                used[p] = n_used[cam, py, px]
                row_used[py - py0] = max(row_used[py - py0], used[p])
                max_used = max(max_used, used[p])
                dot_bg = 0.0
                for ch in range(3):
                    grad_out[p, ch] = grad_rgb[cam, py, px, ch]
                    dot_bg += backgrounds[cam, ch] * grad_out[p, ch]
                grad_out[p, 3] = grad_alpha[cam, py, px]
                grad_out[p, 4] = grad_depth[cam, py, px]
                suffix_dot[p] = trans[p] * dot_bg
        start = tile_offsets[job]
        for e in range(start + max_used - 1, start - 1, -1):
            g = isect_ids[e]
            x0 = max(rects[cam, g, 0], px0)
            x1 = min(rects[cam, g, 1], px1)
            y0 = max(rects[cam, g, 2], py0)
            y1 = min(rects[cam, g, 3], py1)
            mx = np.float64(means2d[cam, g, 0])
            my = np.float64(means2d[cam, g, 1])
            a = np.float64(conics[cam, g, 0])
            b = np.float64(conics[cam, g, 1])
            c = np.float64(conics[cam, g, 2])
            opacity = np.float64(opacities[g])
            red = np.float64(colors[cam, g, 0])
            green = np.float64(colors[cam, g, 1])
            blue = np.float64(colors[cam, g, 2])
            z = np.float64(depths[cam, g])
            rank = e - start
            sigma_limit = _sigma_limit(opacity)
            step_growth = math.exp(-a)
            g_mx = 0.0
            g_my = 0.0
            g_a = 0.0
            g_b = 0.0
            g_c = 0.0
            g_r = 0.0
            g_g = 0.0
            g_bl = 0.0
            g_o = 0.0
            g_z = 0.0
            for py in range(y0, y1 + 1):
                if rank >= row_used[py - py0]:
                    continue
                dy = py + 0.5 - my
                row = (py - py0) * TILE_SIZE - px0
                lo, hi = _row_span(dy, mx, a, b, c, sigma_limit, x0, x1)
                if lo > hi:
                    continue
                sigma, step, gauss, ratio = _row_start(lo, dy, mx, a, b, c)
                for px in range(lo, hi + 1):
                    sigma_px = sigma
                    gauss_px = gauss
                    sigma += step
                    step += a
                    gauss *= ratio
                    ratio *= step_growth
                    p = row + px
                    if rank >= used[p]:
                        continue
                    dx = px + 0.5 - mx
                    alpha = _alpha(sigma_px, gauss_px, opacity)
                    if alpha < 0.0:
                        continue
                    inv_one_minus = 1.0 / (1.0 - alpha)
                    trans[p] *= inv_one_minus
                    weight = alpha * trans[p]
                    go_r = grad_out[p, 0]
                    go_g = grad_out[p, 1]
                    go_b = grad_out[p, 2]
                    go_z = grad_out[p, 4]
                    feature_dot = red * go_r + green * go_g + blue * go_b + grad_out[p, 3] + z * go_z
                    d_alpha = trans[p] * feature_dot - suffix_dot[p] * inv_one_minus
                    suffix_dot[p] += weight * feature_dot
                    g_r += weight * go_r
                    g_g += weight * go_g
                    g_bl += weight * go_b
                    g_z += weight * go_z
                    if opacity * gauss_px <= MAX_ALPHA:  # clamped alpha has zero gradient
                        g_o += gauss_px * d_alpha
                        d_sigma = -alpha * d_alpha
                        g_a += 0.5 * dx * dx * d_sigma
                        g_b += dx * dy * d_sigma
                        g_c += 0.5 * dy * dy * d_sigma
                        # sigma depends on the mean through d = pixel - mean.
                        g_mx -= (a * dx + b * dy) * d_sigma
                        g_my -= (b * dx + c * dy) * d_sigma
            isect_grads[e, 0] = g_mx
            isect_grads[e, 1] = g_my
            isect_grads[e, 2] = g_a
            isect_grads[e, 3] = g_b
            isect_grads[e, 4] = g_c
            isect_grads[e, 5] = g_r
            isect_grads[e, 6] = g_g
            isect_grads[e, 7] = g_bl
            isect_grads[e, 8] = g_o
            isect_grads[e, 9] = g_z
    return isect_grads


@njit(cache=True, nogil=True)
def reduce_isect_grads(isect_grads, isect_ids, tile_offsets, num_cameras, num):
    """Sum per-intersection gradients into per-(camera, Gaussian) gradients [C, N, 10] (fixed order)."""
    grads = np.zeros((num_cameras, num, NUM_GRAD), dtype=np.float64)
    num_tiles = (tile_offsets.shape[0] - 1) // num_cameras
    for cam in range(num_cameras):
        for e in range(tile_offsets[cam * num_tiles], tile_offsets[(cam + 1) * num_tiles]):
            g = isect_ids[e]
            for k in range(NUM_GRAD):
                grads[cam, g, k] += isect_grads[e, k]
    return grads
