"""Headless diagnostic figures (PNG): per-view overlays, LPIPS bars and the pose-search heat map.

Figures are built on :class:`matplotlib.figure.Figure` with an explicit Agg canvas, never through pyplot,
so no global figure state or GUI backend is touched (safe inside the DearPyGui process and in threads).
Every figure has an exact pixel size given by its ``*_px`` arguments (the layout is placed in pixels, no
"tight" bounding box), and is written atomically.

Images are ``[V, H, W, 3]`` RGB, float in [0, 1] or uint8, as torch tensors or numpy arrays.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from sparseags.errors import UserError
from sparseags.export import atomic_output

__all__ = ["FigureError", "overlay_grid_png", "lpips_bars_png", "search_heatmap_png"]

INLIER_COLOR = "#2ca02c"  # green border / bar edge, as in SparseAGS vis.png
OUTLIER_COLOR = "#d62728"  # red
_BAR_INLIER = "#4c72b0"
_BAR_OUTLIER = "#b0b0b0"
_BAR_CANDIDATE = "#dd8452"


class FigureError(UserError, ValueError):
    """Inconsistent input to a figure (one line)."""


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------
def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _images(value: Any, name: str) -> np.ndarray:
    """[V, H, W, 3] float or uint8 -> float64 in [0, 1]."""
    array = _numpy(value)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise FigureError(f"{name} has shape {list(array.shape)}, expected [V, H, W, 3]")
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    return np.clip(array.astype(np.float64), 0.0, 1.0)


def _new_figure(width_px: int, height_px: int, dpi: int) -> Figure:
    """A figure of exactly ``width_px x height_px`` pixels on an Agg canvas."""
    if width_px < 16 or height_px < 16 or dpi < 10:
        raise FigureError(f"figure size {width_px} x {height_px} px at {dpi} dpi is too small")
    # A hair over the exact inch size: Agg truncates width * dpi to an int, and px / dpi * dpi may round down.
    figure = Figure(figsize=((width_px + 1e-3) / dpi, (height_px + 1e-3) / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _pixel_axes(figure: Figure, width_px: int, height_px: int, left: float, top: float, width: float, height: float):
    """Axes placed in pixels, measured from the top-left corner of the figure."""
    rect = (left / width_px, 1.0 - (top + height) / height_px, width / width_px, height / height_px)
    return figure.add_axes(rect)


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=figure.dpi)
    return path


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{float(value):.4g}"


def _view_index(candidate: int | str | None, ids: list[str]) -> int | None:
    if candidate is None:
        return None
    if isinstance(candidate, str):
        if candidate not in ids:
            raise FigureError(f"candidate {candidate!r} is not one of the view ids")
        return ids.index(candidate)
    index = int(candidate)
    if not 0 <= index < len(ids):
        raise FigureError(f"candidate index {index} is out of range for {len(ids)} views")
    return index


# ----------------------------------------------------------------------------------------------------------
# Per-view overlay grid (SparseAGS vis.png)
# ----------------------------------------------------------------------------------------------------------
def overlay_grid_png(
    path: str | os.PathLike,
    ids: Sequence[str],
    targets: Any,
    renders: Any,
    flags: Sequence[int],
    scores: Mapping[str, Sequence[float]] | None = None,
    *,
    cell_px: int = 160,
    dpi: int = 100,
) -> Path:
    """One column per view: input, render and ``|input - render|`` heat map, with the view id and scores
    above; the column's border is green for inliers (flag 1) and red for outliers (flag 0).

    The difference is the per-pixel mean over RGB of the absolute difference, on a colour scale shared by
    all views (inferno, 0 to the largest difference, written in the row label).  ``scores`` maps a name to
    one value per view (e.g. ``{"mse": [...], "lpips": [...], "psnr": [...]}``).

    Size: ``(label_px + V * cell_px) x (caption_px + 3 * cell_px)`` pixels with ``label_px = cell_px // 3``
    and ``caption_px = 14 * (2 + len(scores))`` at the default font size.
    """
    ids = [str(i) for i in ids]
    targets_np, renders_np = _images(targets, "targets"), _images(renders, "renders")
    flags = [int(f) for f in flags]
    scores = dict(scores or {})
    count = len(ids)
    if count == 0:
        raise FigureError("overlay grid needs at least one view")
    if targets_np.shape != renders_np.shape or len(targets_np) != count or len(flags) != count:
        raise FigureError(
            f"{count} ids, {len(flags)} flags, targets {list(targets_np.shape)} and renders "
            f"{list(renders_np.shape)} do not match"
        )
    for name, values in scores.items():
        if len(values) != count:
            raise FigureError(f"score {name!r} has {len(values)} values for {count} views")

    label_px, line_px, pad = cell_px // 3, 14, 4
    caption_px = line_px * (2 + len(scores))
    width_px, height_px = label_px + count * cell_px, caption_px + 3 * cell_px
    figure = _new_figure(width_px, height_px, dpi)
    difference = np.abs(targets_np - renders_np).mean(-1)  # [V, H, W]
    diff_max = max(float(difference.max()), 1e-6)

    rows = [
        ("input", targets_np, {}),
        ("render", renders_np, {}),
        (f"|diff|\n0-{diff_max:.2f}", difference, {"cmap": "inferno", "vmin": 0.0, "vmax": diff_max}),
    ]
    for row, (label, _, _) in enumerate(rows):
        figure.text(
            label_px / 2 / width_px,
            1.0 - (caption_px + (row + 0.5) * cell_px) / height_px,
            label,
            ha="center",
            va="center",
            fontsize=8,
        )
    for view in range(count):
        left = label_px + view * cell_px
        for row, (_, data, style) in enumerate(rows):
            axes = _pixel_axes(
                figure,
                width_px,
                height_px,
                left + pad,
                caption_px + row * cell_px + pad,
                cell_px - 2 * pad,
                cell_px - 2 * pad,
            )
            axes.imshow(data[view], interpolation="nearest", **style)
            axes.set_axis_off()
        status = "inlier" if flags[view] else "outlier"
        lines = [f"{ids[view]} ({status})"] + [f"{name} {_format(values[view])}" for name, values in scores.items()]
        figure.text(
            (left + cell_px / 2) / width_px,
            1.0 - (pad + 2) / height_px,
            "\n".join(lines),
            ha="center",
            va="top",
            fontsize=8,
            linespacing=1.2,
        )
        color = INLIER_COLOR if flags[view] else OUTLIER_COLOR
        # A 3 px line centred 2 px inside the column: it covers pixels 1..3 from each edge, never the neighbour's.
        border = Rectangle(
            ((left + 2) / width_px, 2 / height_px),
            (cell_px - 4) / width_px,
            (height_px - 4) / height_px,
            transform=figure.transFigure,
            fill=False,
            edgecolor=color,
            linewidth=3 * 72 / dpi,
        )
        figure.add_artist(border)
    return _save(figure, path)


# ----------------------------------------------------------------------------------------------------------
# LPIPS bars (leave-one-out outlier loop)
# ----------------------------------------------------------------------------------------------------------
def lpips_bars_png(
    path: str | os.PathLike,
    ids: Sequence[str],
    scores: Sequence[float],
    flags: Sequence[int],
    candidate: int | str | None = None,
    threshold: float | None = None,
    mean_before: float | None = None,
    mean_after: float | None = None,
    *,
    title: str = "per-view LPIPS (area-normalised)",
    width_px: int = 640,
    height_px: int = 360,
    dpi: int = 100,
) -> Path:
    """Bar chart of per-view scores: inliers blue, outliers grey and hatched, the ``candidate`` (index or id:
    the view proposed for removal) orange with a thick edge.

    ``mean_before`` (solid line) is the reference mean, ``mean_after`` (dashed) the mean after removing the
    candidate.  With ``threshold`` and ``mean_before`` the band ``[mean_before - threshold, mean_before]`` is
    shaded: SparseAGS accepts a removal only if the mean drops by at least ``threshold`` (0.05), i.e. below
    the band; with both means the title states the drop and the decision.  A ``threshold`` without
    ``mean_before`` is drawn as a dotted line at that score.
    """
    ids = [str(i) for i in ids]
    values = _numpy(scores).astype(np.float64).reshape(-1)
    flags = [int(f) for f in flags]
    if len(values) != len(ids) or len(flags) != len(ids) or not ids:
        raise FigureError(f"{len(ids)} ids, {len(values)} scores and {len(flags)} flags do not match (or are empty)")
    chosen = _view_index(candidate, ids)

    figure = _new_figure(width_px, height_px, dpi)
    axes = figure.add_axes((0.1, 0.16, 0.86, 0.72))
    colors = [_BAR_INLIER if f else _BAR_OUTLIER for f in flags]
    edges = [INLIER_COLOR if f else OUTLIER_COLOR for f in flags]
    widths = [1.0] * len(ids)
    if chosen is not None:
        colors[chosen], edges[chosen], widths[chosen] = _BAR_CANDIDATE, "black", 2.5
    bars = axes.bar(np.arange(len(ids)), np.nan_to_num(values), color=colors, edgecolor=edges, linewidth=widths)
    for bar, flag in zip(bars, flags):
        if not flag:
            bar.set_hatch("//")
    axes.set_xticks(np.arange(len(ids)), ids, rotation=45 if len(ids) > 10 else 0, fontsize=8)
    axes.set_ylabel("score (lower is better)", fontsize=9)
    axes.tick_params(axis="y", labelsize=8)

    if mean_before is not None:
        axes.axhline(mean_before, color="black", linewidth=1.2, label=f"mean before {mean_before:.4g}")
        if threshold is not None:
            axes.axhspan(
                mean_before - threshold, mean_before, color="grey", alpha=0.2, label=f"needed drop {threshold:.3g}"
            )
    elif threshold is not None:
        axes.axhline(threshold, color="black", linestyle=":", linewidth=1.2, label=f"threshold {threshold:.3g}")
    if mean_after is not None:
        axes.axhline(
            mean_after, color=_BAR_CANDIDATE, linestyle="--", linewidth=1.5, label=f"mean after {mean_after:.4g}"
        )
    if mean_before is not None or mean_after is not None or threshold is not None:
        axes.legend(fontsize=7, loc="upper right")

    heading = title
    if mean_before is not None and mean_after is not None:
        drop = mean_before - mean_after
        heading += f"\nmean drop {drop:.4g}"
        if threshold is not None:
            heading += " >= " if drop >= threshold else " < "
            heading += f"{threshold:.3g}: " + ("removal accepted" if drop >= threshold else "removal rejected")
    axes.set_title(heading, fontsize=9)
    return _save(figure, path)


# ----------------------------------------------------------------------------------------------------------
# Pose-search heat map
# ----------------------------------------------------------------------------------------------------------
def _cell_edges(centres: np.ndarray, name: str) -> np.ndarray:
    """Edges [n + 1] of cells centred on increasing ``centres [n]`` (midpoints; the ends mirror them)."""
    if centres.ndim != 1 or len(centres) == 0 or not np.all(np.isfinite(centres)):
        raise FigureError(f"{name} must be a non-empty 1D list of finite angles")
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    if not np.all(np.diff(centres) > 0):
        raise FigureError(f"{name} must be strictly increasing")
    middle = 0.5 * (centres[1:] + centres[:-1])
    return np.concatenate([[2 * centres[0] - middle[0]], middle, [2 * centres[-1] - middle[-1]]])


def search_heatmap_png(
    path: str | os.PathLike,
    elevations_deg: Any,
    azimuths_deg: Any,
    grid: Any,
    chosen: tuple[float, float] | None = None,
    truth: tuple[float, float] | None = None,
    current: tuple[float, float] | None = None,
    title: str = "pose search: best score per cell (lower is better)",
    *,
    score_label: str = "score",
    width_px: int = 640,
    height_px: int = 400,
    dpi: int = 100,
) -> Path:
    """Heat map of ``grid [E, A]`` (best score per elevation x azimuth cell, lower is better) with viridis and
    a colour bar; NaN cells (not evaluated yet) are left light grey.

    Markers, each ``(elevation_deg, azimuth_deg)`` in the same convention as the axes: ``chosen`` (white
    star), ``truth`` (red circle), ``current`` (cyan plus).  Azimuths of markers are wrapped by 360 degrees
    into the grid's azimuth range when the grid spans a full turn.
    """
    elevations = _numpy(elevations_deg).astype(np.float64).reshape(-1)
    azimuths = _numpy(azimuths_deg).astype(np.float64).reshape(-1)
    values = _numpy(grid).astype(np.float64)
    if values.shape != (len(elevations), len(azimuths)):
        raise FigureError(
            f"grid has shape {list(values.shape)}, expected [{len(elevations)}, {len(azimuths)}] "
            "(elevations x azimuths)"
        )
    elev_edges = _cell_edges(elevations, "elevations_deg")
    azim_edges = _cell_edges(azimuths, "azimuths_deg")
    full_turn = azim_edges[-1] - azim_edges[0] >= 360.0 - 1e-6

    figure = _new_figure(width_px, height_px, dpi)
    axes = figure.add_axes((0.1, 0.13, 0.7, 0.68))
    colorbar_axes = figure.add_axes((0.84, 0.13, 0.03, 0.68))
    masked = np.ma.masked_invalid(values)
    finite = values[np.isfinite(values)]
    norm = Normalize(vmin=float(finite.min()), vmax=float(finite.max())) if finite.size else Normalize(0.0, 1.0)
    axes.set_facecolor("#dddddd")
    mesh = axes.pcolormesh(azim_edges, elev_edges, masked, cmap="viridis", norm=norm, shading="flat")
    figure.colorbar(mesh, cax=colorbar_axes).set_label(score_label, fontsize=8)
    colorbar_axes.tick_params(labelsize=7)

    def place(marker: tuple[float, float] | None, style: dict[str, Any]) -> None:
        if marker is None:
            return
        elevation, azimuth = float(marker[0]), float(marker[1])
        if full_turn:
            azimuth = (azimuth - azim_edges[0]) % 360.0 + azim_edges[0]
        axes.plot([azimuth], [elevation], linestyle="none", **style)

    place(
        chosen,
        {"marker": "*", "markersize": 16, "markerfacecolor": "white", "markeredgecolor": "black", "label": "chosen"},
    )
    place(
        truth,
        {
            "marker": "o",
            "markersize": 12,
            "markerfacecolor": "none",
            "markeredgecolor": "red",
            "markeredgewidth": 2,
            "label": "truth",
        },
    )
    place(
        current,
        {"marker": "P", "markersize": 11, "markerfacecolor": "cyan", "markeredgecolor": "black", "label": "current"},
    )
    if any(m is not None for m in (chosen, truth, current)):
        # Above the plot, not on it: a legend inside would hide cells.
        axes.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    axes.set_xlim(azim_edges[0], azim_edges[-1])
    axes.set_ylim(elev_edges[0], elev_edges[-1])
    axes.set_xlabel("azimuth (deg)", fontsize=9)
    axes.set_ylabel("elevation (deg)", fontsize=9)
    axes.tick_params(labelsize=8)
    figure.text(0.5, 1.0 - 8.0 / height_px, title, ha="center", va="top", fontsize=9)
    return _save(figure, path)
