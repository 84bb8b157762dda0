"""Orbit view: the live Gaussians from the orbit camera, with camera frusta and trajectories drawn over the image.

Mouse (kiui / DreamGaussian): left drag orbits, the wheel zooms, right or middle drag pans (the scene follows
the pointer: :meth:`gui.orbit.OrbitCamera.pan_pixels`); only while the pointer is over the view (a drag that
starts in the view keeps going when it leaves it). A left click (a press and release that moved less than
``CLICK_PIXELS``) on a frustum selects that view and snaps the orbit camera to it
(:func:`gui.orbit.pick_segment`).

The image comes from :func:`gui.splat_view.make_orbit_renderer` (GLSL offscreen, or the engine renderer
when no GL context can be made) through :class:`gui.splat_view.ProgressiveRenderer`: while the camera moves,
quick frames at a fraction of the size (shown stretched), and the full-size frame once it has been still for
a moment; nothing is drawn while nothing changed.

Frusta are 2D lines on a DearPyGui drawlist layer, projected with the orbit camera
(:mod:`gui.panels.cameras`): initial poses grey, current poses green (inlier) / red (outlier), ground
truth blue (mapped into the estimated frame by a similarity fitted on the inliers); a frustum whose apex is
at the orbit camera (the view it is snapped to) is not drawn (:func:`gui.orbit.frusta_at_camera`). The
camera trajectories of the active reconstruction (``Reconstruction.camera_tracks``, the camera centre after
every step) are amber polylines from a hollow dot (the start). A legend names the colours; in depth mode a
colour bar gives the near / far depths of the colour map. "Fit all" (on scene load, the button, the script
action ``fit_all``) frames every drawn frustum, the trajectories and the Gaussians
(:func:`gui.orbit.fit_all_view`).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Optional

import dearpygui.dearpygui as dpg
import numpy as np

from gui.engine import EngineView
from gui.handles import RawTexture, Text
from gui.orbit import OrbitCamera, ProgressivePolicy, frusta_at_camera, pick_segment, project_points
from gui.panels.cameras import FRUSTUM_COLOURS, FrustumSet, frustum_segments, project_segments
from gui.splat_view import ProgressiveRenderer, make_orbit_renderer, turbo_lut
from gui.state import RENDER_MODES

if TYPE_CHECKING:
    from gui.port import WindowPort

__all__ = ["OrbitViewPanel", "LEGEND_ENTRIES", "TRACK_COLOUR"]

INITIAL_ELEVATION_DEG = -25.0  # kiui sign: camera above the object
INITIAL_AZIMUTH_DEG = 35.0
INITIAL_DISTANCE_FACTOR = 2.0  # orbit radius / mean input-camera distance, before "fit all"
MIN_FOVY_DEG = 50.0  # the inputs' field of view, widened to at least this for the overview
FIT_MARGIN = 0.1  # fraction of the half field of view left free around "fit all"
GAUSSIAN_FIT_QUANTILE = 0.995  # "fit all" frames the Gaussians within this quantile of distance from their centre
CLICK_PIXELS = 3.0  # a left press and release closer than this is a click (pick a frustum), not a drag
PICK_TOLERANCE = 6.0  # pixels from a frustum line that still pick it
HIDE_AT_CAMERA = 0.25  # frusta whose apex is within this fraction of the frustum depth of the eye are not drawn
TRACK_COLOUR = (255, 176, 32, 230)
TRACK_REFRESH_S = 0.5  # while the engine runs, trajectories are fetched at most this often
COLORBAR_STEPS = 48
PANEL_BG = (24, 26, 32, 200)
# legend: (key, label); key "current" shows the inlier and outlier colours side by side, "track" a dot at
# the start of its line (trajectories start at a hollow dot)
LEGEND_ENTRIES = (
    ("initial", "initial"),
    ("current", "current inlier / outlier"),
    ("gt", "ground truth"),
    ("track", "trajectory"),
)
LEGEND_CHAR_PX = 5.6  # mean advance of the 13 px legend font (DejaVu Sans), when DearPyGui cannot measure


def _text_width(text: str, size: float) -> float:
    """Width in pixels of `text` drawn at `size` px with the window's font (an estimate before the first frame)."""
    try:
        measured = dpg.get_text_size(text)
    except Exception:  # no font atlas yet
        measured = None
    if measured and measured[0] > 0 and measured[1] > 0:
        return float(measured[0]) * size / float(measured[1])  # the height is the font size
    return LEGEND_CHAR_PX * len(text)


class OrbitViewPanel:
    """The 3D view and its options (render mode, frusta / trajectory toggles, snap / fit / reset buttons)."""

    def __init__(self, app: "WindowPort", parent: int | str, size: int) -> None:
        self.app = app
        self.size = int(size)
        self.camera = OrbitCamera(self.size, self.size)
        self.renderer = make_orbit_renderer(self.size, self.size, prefer=app.cfg.gui.orbit_renderer)
        self.progressive = ProgressiveRenderer(self.renderer, ProgressivePolicy())
        self.texture = RawTexture(app.textures, self.size, self.size, fill=1.0)
        self._quick_textures: dict[tuple[int, int], RawTexture] = {}
        self.shown_texture = self.texture.tag
        self.last_frame_full = True
        with dpg.drawlist(width=self.size, height=self.size, parent=parent) as drawlist:
            self.image = dpg.draw_image(self.texture.tag, (0, 0), (self.size, self.size))
            self.layer = dpg.add_draw_layer()  # frusta and trajectories
            self.legend_layer = dpg.add_draw_layer()
            self.colorbar_layer = dpg.add_draw_layer(show=False)
        self.drawlist = drawlist
        self._build_colorbar()
        with dpg.group(horizontal=True, parent=parent):
            dpg.add_text("mode")
            self.mode_combo = dpg.add_combo(
                list(RENDER_MODES), default_value=app.ui.render_mode, width=100, callback=lambda s, a: self.set_mode(a)
            )
            self.toggles = {
                "show_initial": dpg.add_checkbox(label="initial", default_value=True, callback=self._toggled),
                "show_current": dpg.add_checkbox(label="current", default_value=True, callback=self._toggled),
                "show_gt": dpg.add_checkbox(label="GT", default_value=True, callback=self._toggled),
                "show_tracks": dpg.add_checkbox(label="tracks", default_value=True, callback=self._toggled),
            }
        with dpg.group(horizontal=True, parent=parent):
            dpg.add_button(label="Snap to selected view", callback=lambda: self.snap_to(app.ui.selected_view))
            self.fit_button = dpg.add_button(label="Fit all", callback=lambda: self.fit_all())
            dpg.add_button(label="Reset camera", callback=self.reset_camera)
        self.info = Text(f"renderer: {self.renderer.renderer_name}", parent=parent)
        self.show_tracks = True
        self.legend_items: dict[str, list] = {}
        self.has_gt = True
        self._legend_key: tuple = ()
        self._placed = False
        self._frustum_depth = 0.3
        self._gaussians_version = -1
        self._frusta_key: tuple = ()
        self._drag_button: Optional[int] = None
        self._last_mouse: Optional[tuple] = None
        self._press_at: Optional[tuple] = None
        self._press_moved = 0.0
        self._view: Optional[EngineView] = None
        self._pick_targets: list[tuple[int, np.ndarray]] = []  # (view index, projected segments [S, 2, 2])
        self.hidden_views: list[int] = []  # frusta not drawn because they sit at the orbit camera
        self.tracks: Optional[np.ndarray] = None  # [T, V, 3] camera centres over the steps
        self._tracks_key: Any = None
        self._tracks_taken_at = 0.0
        self._tracks_version = 0

    # ------------------------------------------------------------------------------------------
    # camera
    def place_camera(self, view: EngineView) -> None:
        """Default camera: from above at the default angles, then "fit all"."""
        centre = np.asarray(view.centre, float)
        centres = np.linalg.inv(view.w2c_initial)[:, :3, 3]
        distance = float(np.linalg.norm(centres - centre, axis=1).mean()) if len(centres) else 2.5
        self.camera.center = centre.copy()
        self.camera.radius = max(distance, 1e-3) * INITIAL_DISTANCE_FACTOR
        self._frustum_depth = 0.15 * max(distance, 1e-3)  # world units: frusta keep their size when zooming
        input_fovy = 2.0 * math.atan(0.5 * view.image_size / float(view.K[0, 1, 1]))
        self.camera.fovy = max(input_fovy, math.radians(MIN_FOVY_DEG))
        self.camera.from_angle(INITIAL_ELEVATION_DEG, INITIAL_AZIMUTH_DEG)
        self._placed = True
        self.fit_all(view)

    def reset_camera(self) -> None:
        if self._view is not None:
            self.place_camera(self._view)

    def fit_points(self, view: EngineView) -> np.ndarray:
        """[N, 3] world points "fit all" frames: every vertex of the frusta drawn now, the trajectories
        when shown, and the Gaussians' means within the GAUSSIAN_FIT_QUANTILE of distance from their centre."""
        points = []
        for family in self._frustum_sets(view):
            for index in range(len(family.w2c)):
                points.append(
                    frustum_segments(
                        family.w2c[index], view.K[index], view.image_size, view.image_size, self._frustum_depth
                    ).reshape(-1, 3)
                )
        if self.show_tracks and self.tracks is not None and self.tracks.shape[1] == len(view.ids):
            points.append(self.tracks.reshape(-1, 3))
        if view.gaussians is not None and len(view.gaussians["means"]):
            means = np.asarray(view.gaussians["means"], dtype=np.float64)
            distance = np.linalg.norm(means - np.asarray(view.centre, float), axis=1)
            points.append(means[distance <= np.quantile(distance, GAUSSIAN_FIT_QUANTILE)])
        return np.concatenate(points) if points else np.zeros((0, 3))

    def fit_all(self, view: Optional[EngineView] = None) -> None:
        """Keep the viewing direction; move the look-at point and radius so that every frustum drawn, the
        trajectories and the Gaussians are in the image (look-at point at the Gaussians' centre depth)."""
        view = view if view is not None else self._view
        if view is None:
            return
        points = self.fit_points(view)
        if len(points) == 0:
            return
        self.camera.fit_all(points, margin=FIT_MARGIN, pivot=np.asarray(view.centre, float))

    def snap_to(self, index: int) -> None:
        view = self._view
        if view is None or not 0 <= index < len(view.ids):
            return
        self.camera.snap_to(view.w2c_current[index], view.K[index], view.image_size, view.image_size)

    def set_mode(self, mode: str) -> None:
        self.app.ui.set_render_mode(mode)
        dpg.set_value(self.mode_combo, mode)

    def _toggled(self) -> None:
        for name, item in self.toggles.items():
            if name == "show_tracks":
                self.show_tracks = bool(dpg.get_value(item))
            else:
                setattr(self.app.ui, name, bool(dpg.get_value(item)))

    def set_toggle(self, name: str, value: bool) -> None:
        if name == "show_tracks":
            self.show_tracks = bool(value)
        else:
            setattr(self.app.ui, name, bool(value))
        dpg.set_value(self.toggles[name], bool(value))

    # ------------------------------------------------------------------------------------------
    # input (called every frame from the main loop)
    def _local_mouse(self) -> tuple[float, float]:
        x, y = dpg.get_mouse_pos(local=False)
        x0, y0 = dpg.get_item_rect_min(self.drawlist)
        return float(x - x0), float(y - y0)

    def handle_mouse(self) -> None:
        hovered = dpg.is_item_hovered(self.drawlist)
        position = tuple(dpg.get_mouse_pos(local=False))
        buttons = (dpg.mvMouseButton_Left, dpg.mvMouseButton_Right, dpg.mvMouseButton_Middle)
        if self._drag_button is None:
            for button in buttons:
                if hovered and dpg.is_mouse_button_down(button):
                    self._drag_button, self._last_mouse = button, position
                    self._press_at, self._press_moved = position, 0.0
                    break
            return
        if not dpg.is_mouse_button_down(self._drag_button):
            if self._drag_button == dpg.mvMouseButton_Left and self._press_moved < CLICK_PIXELS:
                self.click(*self._local_mouse())
            self._drag_button, self._last_mouse, self._press_at = None, None, None
            return
        dx, dy = position[0] - self._last_mouse[0], position[1] - self._last_mouse[1]
        self._last_mouse = position
        self._press_moved = max(
            self._press_moved, math.hypot(position[0] - self._press_at[0], position[1] - self._press_at[1])
        )
        if dx == 0 and dy == 0:
            return
        if self._drag_button == dpg.mvMouseButton_Left:
            self.camera.orbit(dx, dy)
        else:
            self.camera.pan_pixels(dx, dy)  # the scene follows the pointer at the look-at depth

    def pick(self, u: float, v: float) -> Optional[int]:
        """The view whose drawn frustum is within PICK_TOLERANCE pixels of (u, v) in the view (current
        poses first, then ground truth, then initial), or None."""
        if not self._pick_targets:
            return None
        choice = pick_segment((u, v), [segments for _, segments in self._pick_targets], PICK_TOLERANCE)
        return None if choice is None else self._pick_targets[choice][0]

    def click(self, u: float, v: float) -> Optional[int]:
        """A left click at (u, v) view pixels: select and snap to the frustum there (if any)."""
        index = self.pick(u, v)
        if index is not None:
            self.app.select_view(index, snap=True)
            self.app.report(f"view {self._view.ids[index] if self._view is not None else index} selected", False)
        return index

    def on_wheel(self, delta: float) -> None:
        if dpg.is_item_hovered(self.drawlist):
            self.camera.scale(delta)

    # ------------------------------------------------------------------------------------------
    def update(self, view: Optional[EngineView]) -> None:
        """Draw a new frame when needed (progressively); redraw frusta when the camera or the poses changed."""
        if view is None:
            return
        self._view = view
        if not self._placed:  # a new scene: the trajectories on hand belong to the previous one
            self.tracks, self._tracks_key = None, None
        self._update_tracks(view)
        if not self._placed:
            self.place_camera(view)
        if view.gaussians_version != self._gaussians_version and view.gaussians is not None:
            g = view.gaussians
            start = time.perf_counter()
            self.renderer.set_gaussians(g["means"], g["quats"], g["scales"], g["opacities"], g["sh"], g["sh_degree"])
            self.app.timing.add("upload_ms", 1000.0 * (time.perf_counter() - start))
            self._gaussians_version = view.gaussians_version
        w2c, K = self.camera.w2c(), self.camera.K()
        mode = self.app.ui.render_mode
        frame = self.progressive.frame(
            w2c, K, mode=mode, background=(1.0, 1.0, 1.0), content_key=self._gaussians_version
        )
        if frame is not None:
            self._show(frame.image, frame.full)
            self.app.timing.add("render_ms", frame.render_ms)
            self._update_colorbar(mode)
        self._update_gt_toggle(view)
        ui = self.app.ui
        frusta_key = (
            (w2c.tobytes(), K.tobytes()),
            view.version,
            ui.selected_view,
            ui.show_initial,
            ui.show_current,
            ui.show_gt,
            self.show_tracks,
            self._tracks_version,
        )
        if frusta_key != self._frusta_key:
            self._draw_frusta(view, w2c, K)
            self._frusta_key = frusta_key
        legend_key = (self.has_gt, self.show_tracks)
        if legend_key != self._legend_key:
            self._draw_legend()
            self._legend_key = legend_key

    def _show(self, image: np.ndarray, full: bool) -> None:
        """Put a frame on display: full-size frames in the main texture, quick ones in a texture of their
        own size that the drawlist stretches over the view."""
        if full:
            texture = self.texture
        else:
            shape = (int(image.shape[1]), int(image.shape[0]))
            texture = self._quick_textures.get(shape)
            if texture is None:
                texture = self._quick_textures[shape] = RawTexture(self.app.textures, shape[0], shape[1], fill=1.0)
        texture.set(image)
        if texture.tag != self.shown_texture:
            dpg.configure_item(self.image, texture_tag=texture.tag)
            self.shown_texture = texture.tag
        self.last_frame_full = bool(full)

    @property
    def refined(self) -> bool:
        """The full-size frame of the current camera is on display."""
        return self.last_frame_full and not self.progressive.policy.moving()

    # ------------------------------------------------------------------------------------------
    def _update_gt_toggle(self, view: EngineView) -> None:
        has_gt = view.w2c_gt_in_frame is not None
        if has_gt != self.has_gt:
            dpg.configure_item(self.toggles["show_gt"], show=has_gt)
            self.has_gt = has_gt

    def _update_tracks(self, view: EngineView) -> None:
        """Take the trajectories of the published view when the reconstruction moved on (rate-limited while
        it runs, so the lines are not redrawn on every frame)."""
        if not self.show_tracks or view.gaussians_version == self._tracks_key:
            return
        now = time.perf_counter()
        if view.busy and now - self._tracks_taken_at < TRACK_REFRESH_S:
            return
        self._tracks_key, self._tracks_taken_at = view.gaussians_version, now
        self.tracks = view.camera_tracks
        self._tracks_version += 1

    def _frustum_sets(self, view: EngineView) -> list[FrustumSet]:
        ui = self.app.ui
        sets = []
        count = len(view.ids)
        if ui.show_initial:
            sets.append(FrustumSet("initial", view.w2c_initial, [FRUSTUM_COLOURS["initial"]] * count))
        if ui.show_gt and view.w2c_gt_in_frame is not None:
            sets.append(FrustumSet("gt", view.w2c_gt_in_frame, [FRUSTUM_COLOURS["gt"]] * count))
        if ui.show_current:
            colours = [FRUSTUM_COLOURS["inlier" if f else "outlier"] for f in view.flags]
            sets.append(FrustumSet("current", view.w2c_current, colours))
        return sets

    def _draw_frusta(self, view: EngineView, w2c: np.ndarray, K: np.ndarray) -> None:
        dpg.delete_item(self.layer, children_only=True)
        depth = self._frustum_depth
        campos = -w2c[:3, :3].T @ w2c[:3, 3]
        limit = 8 * self.size
        if self.show_tracks and self.tracks is not None and self.tracks.shape[1] == len(view.ids):
            self._draw_tracks(w2c, K)
        picks: dict[str, list] = {}
        hidden: set[int] = set()
        for family in self._frustum_sets(view):
            apexes = np.linalg.inv(family.w2c)[:, :3, 3]
            at_camera = frusta_at_camera(apexes, campos, HIDE_AT_CAMERA * depth)
            for index, (pose, colour) in enumerate(zip(family.w2c, family.colours)):
                if at_camera[index]:
                    hidden.add(index)
                    continue
                segments = frustum_segments(pose, view.K[index], view.image_size, view.image_size, depth)
                points, _ = project_segments(segments, w2c, K)
                points = points[np.all(np.abs(points) <= limit, axis=(1, 2))]  # nearly at the camera plane
                picks.setdefault(family.name, []).append((index, points))
                thickness = 3.0 if index == self.app.ui.selected_view else 1.5
                for (u0, v0), (u1, v1) in points:
                    dpg.draw_line((u0, v0), (u1, v1), color=colour, thickness=thickness, parent=self.layer)
                if len(points) and family.name == "current":
                    label_at = points[0][0]  # the apex
                    if 0 <= label_at[0] < self.size and 0 <= label_at[1] < self.size:
                        dpg.draw_text(
                            (label_at[0] + 3, label_at[1] - 14),
                            view.ids[index],
                            color=colour,
                            size=13,
                            parent=self.layer,
                        )
        self.hidden_views = sorted(hidden)
        self._pick_targets = [target for name in ("current", "gt", "initial") for target in picks.get(name, [])]

    def _draw_tracks(self, w2c: np.ndarray, K: np.ndarray) -> None:
        """One polyline per view through its camera centres (one DearPyGui item per unbroken run: points
        behind the camera or far off-screen break the line), a hollow dot at the start."""
        tracks = self.tracks
        limit = 8 * self.size
        for index in range(tracks.shape[1]):
            centres = tracks[:, index]
            if len(centres) < 2 or np.allclose(centres, centres[0]):
                continue
            uv, z = project_points(centres, w2c, K)
            good = (z > 1e-2) & np.all(np.abs(uv) <= limit, axis=1)
            run: list = []
            for point, ok in zip(uv, good):
                if ok:
                    run.append((float(point[0]), float(point[1])))
                    continue
                if len(run) > 1:
                    dpg.draw_polyline(run, color=TRACK_COLOUR, thickness=2.5, parent=self.layer)
                run = []
            if len(run) > 1:
                dpg.draw_polyline(run, color=TRACK_COLOUR, thickness=2.5, parent=self.layer)
            if good[0]:
                dpg.draw_circle(tuple(uv[0]), 3.5, color=TRACK_COLOUR, thickness=1.5, parent=self.layer)

    # ------------------------------------------------------------------------------------------
    # legend and colour bar
    def _draw_legend(self) -> None:
        """Rows along the bottom edge (one, or more when the view is narrow) naming the colours of the drawn
        families (ground truth only when the scene has it, the trajectory only when shown)."""
        dpg.delete_item(self.legend_layer, children_only=True)
        entries = [
            (key, label)
            for key, label in LEGEND_ENTRIES
            if (key != "gt" or self.has_gt) and (key != "track" or self.show_tracks)
        ]
        swatch, gap, height = 20, 12, 20
        widths = [swatch + 5 + _text_width(label, 13) for _, label in entries]
        # entries fill rows greedily, so a narrow view (a small window) wraps the legend instead of cutting it
        rows: list[list[int]] = [[]]
        for k, width in enumerate(widths):
            row = rows[-1]
            used = sum(widths[i] for i in row) + gap * len(row) + 12
            if row and used + width > self.size - 8:
                rows.append([k])
            else:
                row.append(k)
        self.legend_items = {}
        for r, row in enumerate(rows):
            total = sum(widths[i] for i in row) + gap * (len(row) - 1) + 12
            x0, y0 = 4, self.size - (len(rows) - r) * (height + 2) - 2
            dpg.draw_rectangle(
                (x0, y0),
                (x0 + total, y0 + height),
                color=(0, 0, 0, 0),
                fill=PANEL_BG,
                rounding=4,
                parent=self.legend_layer,
            )
            x, y = x0 + 6, y0 + height / 2
            for k in row:
                key, label = entries[k]
                self.legend_items[key] = self._legend_entry(key, label, x, y, swatch)
                x += widths[k] + gap

    def _legend_entry(self, key: str, label: str, x: float, y: float, swatch: int) -> list:
        """The swatch (one colour per family member) and the label of one legend entry at (x, y)."""
        if key == "current":
            colours = [FRUSTUM_COLOURS["inlier"], FRUSTUM_COLOURS["outlier"]]
        elif key == "track":
            colours = [TRACK_COLOUR]
        else:
            colours = [FRUSTUM_COLOURS[key]]
        items = []
        part = swatch / len(colours)
        for k, colour in enumerate(colours):
            items.append(
                dpg.draw_line(
                    (x + k * part, y),
                    (x + (k + 1) * part - (2 if len(colours) > 1 else 0), y),
                    color=colour,
                    thickness=3.0,
                    parent=self.legend_layer,
                )
            )
        if key == "track":
            items.append(
                dpg.draw_circle((x, y), 3.5, color=TRACK_COLOUR, fill=PANEL_BG, thickness=1.5, parent=self.legend_layer)
            )
        items.append(
            dpg.draw_text((x + swatch + 5, y - 8), label, color=(235, 235, 235, 255), size=13, parent=self.legend_layer)
        )
        return items

    def _build_colorbar(self) -> None:
        """Vertical turbo bar at the right edge with the near (top) and far (bottom) depths."""
        lut = turbo_lut(COLORBAR_STEPS)
        x1 = self.size - 8
        x0 = x1 - 14
        top, bottom = 28, max(60, self.size // 2)
        dpg.draw_rectangle(
            (x0 - 74, top - 22),
            (x1 + 4, bottom + 22),
            color=(0, 0, 0, 0),
            fill=PANEL_BG,
            rounding=4,
            parent=self.colorbar_layer,
        )
        step = (bottom - top) / COLORBAR_STEPS
        for k, colour in enumerate(lut):
            rgba = tuple(int(round(255 * c)) for c in colour) + (255,)
            dpg.draw_rectangle(
                (x0, top + k * step),
                (x1, top + (k + 1) * step + 0.5),
                color=rgba,
                fill=rgba,
                parent=self.colorbar_layer,
            )
        self.colorbar_near = dpg.draw_text(
            (x0 - 70, top - 18), "near", color=(235, 235, 235, 255), size=13, parent=self.colorbar_layer
        )
        self.colorbar_far = dpg.draw_text(
            (x0 - 70, bottom + 4), "far", color=(235, 235, 235, 255), size=13, parent=self.colorbar_layer
        )
        dpg.draw_text(
            (x0 - 70, 0.5 * (top + bottom) - 7),
            "depth",
            color=(235, 235, 235, 255),
            size=13,
            parent=self.colorbar_layer,
        )
        self.depth_range: Optional[tuple[float, float]] = None

    def _update_colorbar(self, mode: str) -> None:
        depth_range = getattr(self.renderer, "last_depth_range", None)
        show = mode == "depth" and depth_range is not None
        dpg.configure_item(self.colorbar_layer, show=show)
        if show and depth_range != self.depth_range:
            dpg.configure_item(self.colorbar_near, text=f"near {depth_range[0]:.2f}")
            dpg.configure_item(self.colorbar_far, text=f"far {depth_range[1]:.2f}")
            self.depth_range = depth_range

    @property
    def colorbar_shown(self) -> bool:
        return bool(dpg.get_item_configuration(self.colorbar_layer).get("show", False))

    def resize(self, size: int) -> None:
        """Follow the window: render, show and draw at a new square `size` (the orbit camera's pose is kept).

        The renderer's targets, the texture, the drawing area, the legend and the depth colour bar are
        remade, and the frame and the frusta are drawn again at the next update.
        """
        size = int(size)
        if size <= 0:
            raise ValueError(f"orbit view: size must be positive, got {size}")
        if size == self.size:
            return
        self.size = size
        self.camera.width = self.camera.height = size
        self.renderer.resize(size, size)
        self.progressive.invalidate()
        old = [self.texture.tag] + [t.tag for t in self._quick_textures.values()]
        self.texture = RawTexture(self.app.textures, size, size, fill=1.0)
        self._quick_textures = {}
        dpg.configure_item(self.drawlist, width=size, height=size)
        dpg.configure_item(self.image, texture_tag=self.texture.tag, pmax=(size, size))
        self.shown_texture = self.texture.tag
        for tag in old:
            dpg.delete_item(tag)
        dpg.delete_item(self.colorbar_layer, children_only=True)
        self._build_colorbar()
        self._frusta_key = self._legend_key = None

    def release(self) -> None:
        self.renderer.release()
