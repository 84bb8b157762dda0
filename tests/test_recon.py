"""Reconstruction (SparseAGS stage 1) on tiny synthetic scenes rendered from known Gaussians."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseags.cameras import rotation_angle_deg, se3_exp
from sparseags.config import Config
from sparseags.gaussians import GaussianModel
from sparseags.recon import ReconError, Reconstruction, resolution_at, xyz_learning_rate
from sparseags.render import render_gaussians
from sparseags.render.synthetic import random_object_scene, ring_cameras
from sparseags.scene import Scene

BACKEND = "cpu"
NUM_VIEWS = 5


def _gt_scene(size: int, num: int = 150, seed: int = 1) -> tuple[Scene, GaussianModel]:
    """Render a random Gaussian object from a ring of cameras; return the Scene and the GT Gaussians."""
    gs = random_object_scene(
        num, sh_degree=0, radius=0.4, scale_range=(0.03, 0.08), opacity_range=(0.8, 1.0), seed=seed
    )
    w2c, K = ring_cameras(NUM_VIEWS, size, size, distance=2.0)
    out = render_gaussians(*gs.tensors(), w2c, K, size, size, background=torch.zeros(3), backend=BACKEND)
    alpha = out.alpha[..., 0]
    rgb = (out.rgb / alpha.clamp_min(1e-6)[..., None]).clamp(0.0, 1.0)  # un-premultiply (black background)
    scene = Scene(
        root=Path("synthetic"),
        ids=[f"{i:03d}" for i in range(NUM_VIEWS)],
        resolution=size,
        images=rgb.numpy(),
        masks=alpha.numpy(),
        K=K.double().numpy(),
        w2c_init=w2c.double().numpy(),
        flags=np.ones(NUM_VIEWS, dtype=np.int64),
        w2c_gt=w2c.double().numpy(),
    )
    gt = GaussianModel(gs.means, gs.quats, gs.scales.log(), torch.logit(gs.opacities), gs.sh[:, :1], gs.sh[:, 1:])
    return scene, gt


@pytest.fixture(scope="module")
def small() -> tuple[Scene, GaussianModel]:
    return _gt_scene(24, num=100)


@pytest.fixture(scope="module")
def medium() -> tuple[Scene, GaussianModel]:
    return _gt_scene(32)


def _config(size: int, **recon: object) -> Config:
    cfg = Config()
    cfg.render.backend = BACKEND
    cfg.recon.num_pts = 150
    cfg.recon.hull_grid = 24
    cfg.recon.resolution_schedule = [[0.0, size]]
    for key, value in recon.items():
        setattr(cfg.recon, key, value)
    return cfg


def _params(recon: Reconstruction) -> dict[str, torch.Tensor]:
    out = {name: p.detach().clone() for name, p in recon.gaussians.splats.items()}
    out["xi"] = recon.xi.detach().clone()
    return out


# ----------------------------------------------------------------------------------------------
# schedules
# ----------------------------------------------------------------------------------------------
def test_schedules():
    assert resolution_at([[0.0, 128], [0.5, 256]], 0.49) == 128
    assert resolution_at([[0.5, 256], [0.0, 128]], 0.5) == 256
    assert xyz_learning_rate(0, 500, 1e-2, 2e-4) == pytest.approx(1e-2)
    assert xyz_learning_rate(250, 500, 1e-2, 2e-4) == pytest.approx(math.sqrt(1e-2 * 2e-4))
    assert xyz_learning_rate(500, 500, 1e-2, 2e-4) == pytest.approx(2e-4)
    assert xyz_learning_rate(250, 500, 0.0, 0.0) == 0.0


# ----------------------------------------------------------------------------------------------
# optimisation
# ----------------------------------------------------------------------------------------------
def test_steps_reduce_the_loss_and_first_step_is_not_a_noop(small):
    scene, _ = small
    recon = Reconstruction(scene, _config(24, loss_warmup=True), iters=500)
    before = _params(recon)
    start = recon.snapshot()
    event = recon.step(1)
    assert event["step"] == 1 and event["loss"] > 0  # warm-up weight (0 + 1) / iters, not 0
    assert not torch.equal(recon.gaussians.splats["sh0"], before["sh0"])
    assert not torch.equal(recon.xi, before["xi"])
    recon.step(7)
    end = recon.snapshot()
    assert np.mean(end["mse"]) < 0.8 * np.mean(start["mse"])
    assert np.mean(end["mse_mask"]) < 0.8 * np.mean(start["mse_mask"])
    assert end["history"]["step"] == [float(i) for i in range(1, 9)]
    assert end["camera_tracks"].shape == (8, NUM_VIEWS, 4, 4)
    assert end["renders"].shape == (NUM_VIEWS, 24, 24, 3) and end["alphas"].shape == (NUM_VIEWS, 24, 24)


def test_pose_gradients_pull_a_perturbed_camera_back(medium):
    """Gaussians frozen at the truth, camera 2 rotated by ~4.5 deg: pose-only steps must undo it."""
    scene, gt = medium
    cfg = _config(
        32,
        loss_warmup=False,
        densify_from=10**6,
        lr_position_init=0.0,
        lr_position_final=0.0,
        lr_sh_dc=0.0,
        lr_sh_rest=0.0,
        lr_opacity=0.0,
        lr_scaling=0.0,
        lr_rotation=0.0,
        lr_camera=1e-2,
    )
    w2c_true = torch.as_tensor(scene.w2c_init, dtype=torch.float32)
    w2c_start = w2c_true.clone()
    w2c_start[2] = se3_exp(torch.tensor([0.02, -0.01, 0.0, 0.0, math.radians(4.0), math.radians(2.0)])) @ w2c_true[2]
    recon = Reconstruction(scene, cfg, w2c_init=w2c_start, gaussians=gt, iters=30)

    def errors() -> tuple[float, float]:
        w2c = recon.current_w2c().detach()
        rot = float(rotation_angle_deg(w2c[2, :3, :3], w2c_true[2, :3, :3]))
        return rot, float((w2c[2, :3, 3] - w2c_true[2, :3, 3]).norm())

    rot0, trans0 = errors()
    assert rot0 == pytest.approx(4.47, abs=0.05)
    first = recon.step(1)["loss"]
    last = recon.step(29)["loss"]
    rot1, trans1 = errors()
    assert recon.done
    assert rot1 < 0.5 * rot0, (rot0, rot1)
    assert trans1 < 0.5 * trans0, (trans0, trans1)
    assert last < 0.2 * first
    assert torch.equal(recon.gaussians.splats["means"], gt.splats["means"])  # frozen Gaussians
    # The unperturbed cameras stay close to the truth.
    others = recon.current_w2c().detach()[[0, 1, 3, 4]]
    assert float(rotation_angle_deg(others[:, :3, :3], w2c_true[[0, 1, 3, 4], :3, :3]).max()) < 1.0


def test_resume_from_checkpoint_is_exact(small):
    scene, _ = small
    # Densify at step 4 and sample 3 of 5 views per step: exercises shape changes and the generator.
    cfg = _config(24, densify_from=2, densify_interval=4, views_per_step=3, densify_grad_threshold=1e-4)
    straight = Reconstruction(scene, cfg, iters=6)
    straight.step(6)
    assert straight.snapshot()["last_densify"]["n_after"] > 150  # densification really happened

    first = Reconstruction(scene, cfg, iters=6)
    first.step(3)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = Reconstruction(scene, cfg, iters=6)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    resumed.step(3)

    a, b = _params(straight), _params(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    for group_a, group_b in zip(straight.optimizer.param_groups, resumed.optimizer.param_groups):
        state_a, state_b = straight.optimizer.state[group_a["params"][0]], resumed.optimizer.state[group_b["params"][0]]
        assert torch.equal(state_a["exp_avg"], state_b["exp_avg"]), group_a["name"]
        assert group_a["lr"] == group_b["lr"]
    assert straight.history == resumed.history
    assert torch.equal(torch.stack(straight.camera_tracks), torch.stack(resumed.camera_tracks))


def test_densify_keeps_optimizer_consistent_and_final_prune(small):
    scene, _ = small
    cfg = _config(24, densify_from=1, densify_interval=2, densify_grad_threshold=1e-4, max_gaussians=220)
    recon = Reconstruction(scene, cfg, iters=4)
    with torch.no_grad():
        recon.gaussians.splats["opacity_logits"][:10] = -8.0  # transparent: must be pruned
    event = recon.step(2)
    assert event["densify"] is not None and event["densify"]["n_pruned"] >= 10
    assert 150 < recon.gaussians.num_gaussians <= 220
    for group in recon.optimizer.param_groups:
        param = group["params"][0]
        if group["name"] != "cameras":
            assert param is recon.gaussians.splats[group["name"]]
        assert recon.optimizer.state[param]["exp_avg"].shape == param.shape
    with torch.no_grad():
        recon.gaussians.splats["log_scales"][:5] = math.log(0.2)  # > final_prune_max_scale (0.1)
    event = recon.step(5)
    assert recon.done and event["step"] == 4
    assert event["densify"]["n_final_pruned"] >= 5
    assert float(recon.gaussians.scales.detach().max()) <= 0.1
    assert recon.step(1)["step"] == 4  # done: no more work


# ----------------------------------------------------------------------------------------------
# outliers, pose overrides, hooks
# ----------------------------------------------------------------------------------------------
def test_outlier_views_do_not_influence_the_gaussians_but_render(small):
    scene, _ = small
    cfg = _config(24)
    flags = np.array([1, 1, 1, 0, 1])
    corrupted = Scene(**{**scene.__dict__})
    corrupted.images = scene.images.copy()
    corrupted.images[3] = np.random.default_rng(0).random(scene.images[3].shape, dtype=np.float32)
    corrupted.masks = scene.masks.copy()
    corrupted.masks[3] = 1.0 - scene.masks[3]
    runs = [Reconstruction(s, cfg, flags=flags, iters=20) for s in (scene, corrupted)]
    # Control: with view 3 an inlier, the same corruption must change the result.
    controls = [Reconstruction(s, cfg, iters=20) for s in (scene, corrupted)]
    for recon in (*runs, *controls):
        recon.step(3)
    a, b, c, d = (_params(r) for r in (*runs, *controls))
    for name in ("means", "sh0", "opacity_logits", "xi"):
        assert torch.equal(a[name], b[name]), name
    assert a["xi"].shape == (4, 6)
    assert not torch.equal(c["sh0"], d["sh0"])
    rgb, alpha = runs[0].render_views()
    assert rgb.shape == (NUM_VIEWS, 24, 24, 3)
    assert float(alpha[3].sum()) > 1.0  # the outlier is rendered
    assert torch.equal(runs[0].current_w2c()[3], runs[0].w2c_init[3])  # and keeps its initial pose
    snap = runs[0].snapshot()
    assert len(snap["mse"]) == NUM_VIEWS and list(snap["flags"]) == list(flags)


def test_set_view_pose_places_views(small):
    scene, _ = small
    recon = Reconstruction(scene, _config(24), flags=[1, 1, 1, 0, 1], iters=10)
    recon.step(1)
    target = torch.as_tensor(scene.w2c_init[0], dtype=torch.float32)
    recon.set_view_pose(3, target)  # outlier
    assert torch.equal(recon.current_w2c()[3], target)
    recon.set_view_pose(1, target)  # inlier: its twist restarts at 0
    assert torch.equal(recon.xi[1], torch.zeros(6))
    assert torch.allclose(recon.current_w2c()[1], target)
    assert torch.all(recon.optimizer.state[recon.xi]["exp_avg"][1] == 0)
    with pytest.raises(ReconError, match="out of range"):
        recon.set_view_pose(7, target)


class _NovelViewHook:
    """A toy prior: render an extra view and pull its alpha towards 0.5."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []

    def loss(self, recon, step, step_ratio, generator):
        self.calls.append((step, step_ratio))
        torch.rand(1, generator=generator)  # hooks draw from the reconstruction's generator
        w2c = recon.current_w2c()[:1]
        out = recon.render(w2c, torch.as_tensor(recon.targets_at(16)[2][:1]), 16, 16, torch.zeros(3))
        return ((out.alpha - 0.5) ** 2).mean()

    def stats(self):
        return {"prior_calls": len(self.calls)}


def test_prior_hook_is_called_on_schedule(small):
    scene, _ = small
    cfg = _config(24)
    cfg.prior.every_n_steps = 2
    hook = _NovelViewHook()
    recon = Reconstruction(scene, cfg, prior_hook=hook, iters=10)
    events = [recon.step(1) for _ in range(3)]
    assert [call[0] for call in hook.calls] == [0, 2]
    assert hook.calls[0][1] == pytest.approx(0.1)
    assert events[0]["loss_prior"] > 0 and events[1]["loss_prior"] == 0.0
    assert events[2]["prior_calls"] == 2
    assert isinstance(hook, __import__("sparseags.recon", fromlist=["PriorHook"]).PriorHook)


def test_bad_inputs_raise_one_line_errors(small):
    scene, _ = small
    with pytest.raises(ReconError, match="no inlier views"):
        Reconstruction(scene, _config(24), flags=np.zeros(NUM_VIEWS))
    with pytest.raises(ReconError, match="w2c_init must have shape"):
        Reconstruction(scene, _config(24), w2c_init=np.eye(4)[None])
