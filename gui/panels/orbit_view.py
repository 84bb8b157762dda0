"""Orbit view: the live Gaussians from the orbit camera, with camera frusta drawn over the image.

Mouse (kiui / DreamGaussian): left drag orbits, the wheel zooms, right or middle drag pans; only while
the pointer is over the view (a drag that starts in the view keeps going when it leaves it). The image
comes from :func:`gui.splat_view.make_orbit_renderer` (GLSL offscreen, or the engine renderer when no GL
context can be made) and is re-rendered only when the camera, the Gaussians, or the mode changed.
Frusta are 2D lines on a DearPyGui drawlist layer, projected with the orbit camera
(:mod:`gui.panels.cameras`): initial poses grey, current poses green (inlier) / red (outlier), ground
truth blue (mapped into the estimated frame by a similarity fitted on the inliers).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Optional

import dearpygui.dearpygui as dpg
import numpy as np

from gui.engine import EngineView
from gui.handles import RawTexture, Text
from gui.orbit import OrbitCamera
from gui.panels.cameras import FRUSTUM_COLOURS, FrustumSet, frustum_segments, project_segments
from gui.splat_view import make_orbit_renderer
from gui.state import RENDER_MODES

if TYPE_CHECKING:
    from gui.app import DebuggerApp

INITIAL_ELEVATION_DEG = -25.0  # kiui sign: camera above the object
INITIAL_AZIMUTH_DEG = 35.0
INITIAL_DISTANCE_FACTOR = 2.0  # orbit radius / mean input-camera distance, so the input frusta are in view
MIN_FOVY_DEG = 50.0  # the inputs' field of view, widened to at least this for the overview


class OrbitViewPanel:
    """The 3D view and its options (render mode, frusta toggles, snap / reset buttons)."""

    def __init__(self, app: "DebuggerApp", parent: int | str, size: int) -> None:
        self.app = app
        self.size = int(size)
        self.camera = OrbitCamera(self.size, self.size)
        self.renderer = make_orbit_renderer(self.size, self.size, prefer=app.cfg.gui.orbit_renderer)
        self.texture = RawTexture(app.textures, self.size, self.size, fill=1.0)
        with dpg.drawlist(width=self.size, height=self.size, parent=parent) as drawlist:
            dpg.draw_image(self.texture.tag, (0, 0), (self.size, self.size))
            self.layer = dpg.add_draw_layer()
        self.drawlist = drawlist
        with dpg.group(horizontal=True, parent=parent):
            dpg.add_text("mode")
            self.mode_combo = dpg.add_combo(list(RENDER_MODES), default_value=app.ui.render_mode, width=110,
                                            callback=lambda s, a: self.set_mode(a))
            self.toggles = {
                "show_initial": dpg.add_checkbox(label="initial", default_value=True, callback=self._toggled),
                "show_current": dpg.add_checkbox(label="current", default_value=True, callback=self._toggled),
                "show_gt": dpg.add_checkbox(label="ground truth", default_value=True, callback=self._toggled),
            }
        with dpg.group(horizontal=True, parent=parent):
            dpg.add_button(label="Snap to selected view", callback=lambda: self.snap_to(app.ui.selected_view))
            dpg.add_button(label="Reset camera", callback=self.reset_camera)
        self.info = Text(f"renderer: {self.renderer.renderer_name}", parent=parent)
        self._placed = False
        self._frustum_depth = 0.3
        self._gaussians_version = -1
        self._rendered_key: tuple = ()
        self._frusta_key: tuple = ()
        self._drag_button: Optional[int] = None
        self._last_mouse: Optional[tuple] = None
        self._view: Optional[EngineView] = None

    # ------------------------------------------------------------------------------------------
    # camera
    def place_camera(self, view: EngineView) -> None:
        """Default camera: looking at the Gaussians' centre from above, far enough to see the inputs."""
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

    def reset_camera(self) -> None:
        if self._view is not None:
            self.place_camera(self._view)

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
            setattr(self.app.ui, name, bool(dpg.get_value(item)))

    def set_toggle(self, name: str, value: bool) -> None:
        setattr(self.app.ui, name, bool(value))
        dpg.set_value(self.toggles[name], bool(value))

    # ------------------------------------------------------------------------------------------
    # input (called every frame from the main loop)
    def handle_mouse(self) -> None:
        hovered = dpg.is_item_hovered(self.drawlist)
        position = tuple(dpg.get_mouse_pos(local=False))
        buttons = (dpg.mvMouseButton_Left, dpg.mvMouseButton_Right, dpg.mvMouseButton_Middle)
        if self._drag_button is None:
            for button in buttons:
                if hovered and dpg.is_mouse_button_down(button):
                    self._drag_button, self._last_mouse = button, position
                    break
            return
        if not dpg.is_mouse_button_down(self._drag_button):
            self._drag_button, self._last_mouse = None, None
            return
        dx, dy = position[0] - self._last_mouse[0], position[1] - self._last_mouse[1]
        self._last_mouse = position
        if dx == 0 and dy == 0:
            return
        if self._drag_button == dpg.mvMouseButton_Left:
            self.camera.orbit(dx, dy)
        else:
            # pan speed scales with distance so the object follows the pointer at any zoom
            self.camera.pan(dx * self.camera.radius / 2.5, dy * self.camera.radius / 2.5)

    def on_wheel(self, delta: float) -> None:
        if dpg.is_item_hovered(self.drawlist):
            self.camera.scale(delta)

    # ------------------------------------------------------------------------------------------
    def update(self, view: Optional[EngineView]) -> None:
        """Re-render when needed; redraw frusta when the camera or the poses changed."""
        if view is None:
            return
        self._view = view
        if not self._placed:
            self.place_camera(view)
        if view.gaussians_version != self._gaussians_version and view.gaussians is not None:
            g = view.gaussians
            start = time.perf_counter()
            self.renderer.set_gaussians(g["means"], g["quats"], g["scales"], g["opacities"], g["sh"], g["sh_degree"])
            self.app.timing.add("upload_ms", 1000.0 * (time.perf_counter() - start))
            self._gaussians_version = view.gaussians_version
        w2c, K = self.camera.w2c(), self.camera.K()
        camera_key = (w2c.tobytes(), K.tobytes())
        key = (camera_key, self._gaussians_version, self.app.ui.render_mode)
        if key != self._rendered_key:
            start = time.perf_counter()
            image = self.renderer.render(w2c, K, mode=self.app.ui.render_mode, background=(1.0, 1.0, 1.0))
            self.texture.set(image)
            self.app.timing.add("render_ms", 1000.0 * (time.perf_counter() - start))
            self._rendered_key = key
        ui = self.app.ui
        frusta_key = (camera_key, view.version, ui.selected_view, ui.show_initial, ui.show_current, ui.show_gt)
        if frusta_key != self._frusta_key:
            self._draw_frusta(view, w2c, K)
            self._frusta_key = frusta_key

    def _frustum_sets(self, view: EngineView) -> list[FrustumSet]:
        ui = self.app.ui
        sets = []
        count = len(view.ids)
        if ui.show_initial:
            sets.append(FrustumSet("initial", view.w2c_initial, [FRUSTUM_COLOURS["initial"]] * count))
        if ui.show_gt and view.w2c_gt is not None:
            sets.append(FrustumSet("gt", view.w2c_gt, [FRUSTUM_COLOURS["gt"]] * count))
        if ui.show_current:
            colours = [FRUSTUM_COLOURS["inlier" if f else "outlier"] for f in view.flags]
            sets.append(FrustumSet("current", view.w2c_current, colours))
        return sets

    def _draw_frusta(self, view: EngineView, w2c: np.ndarray, K: np.ndarray) -> None:
        dpg.delete_item(self.layer, children_only=True)
        depth = self._frustum_depth
        for family in self._frustum_sets(view):
            for index, (pose, colour) in enumerate(zip(family.w2c, family.colours)):
                segments = frustum_segments(pose, view.K[index], view.image_size, view.image_size, depth)
                points, _ = project_segments(segments, w2c, K)
                thickness = 3.0 if index == self.app.ui.selected_view else 1.5
                for (u0, v0), (u1, v1) in points:
                    if max(abs(u0), abs(v0), abs(u1), abs(v1)) > 8 * self.size:
                        continue  # nearly at the camera plane: off-screen anyway
                    dpg.draw_line((u0, v0), (u1, v1), color=colour, thickness=thickness, parent=self.layer)
                if len(points) and family.name == "current":
                    label_at = points[0][0]  # the apex
                    if 0 <= label_at[0] < self.size and 0 <= label_at[1] < self.size:
                        dpg.draw_text((label_at[0] + 3, label_at[1] - 14), view.ids[index], color=colour, size=13,
                                      parent=self.layer)

    def release(self) -> None:
        self.renderer.release()
