"""The Zero123 prior as a reconstruction hook, and the ``prior.enabled = "auto"`` decision.

Hook protocol (sparseags/recon.py): ``hook.loss(recon, step, step_ratio, generator) -> Tensor | None``
is added to the reconstruction loss; ``hook.stats() -> dict`` is shown by the debugger. From `recon`
the hook uses ``recon.render(w2c [C, 4, 4], K [C, 3, 3], width, height, background) -> RenderOutput``,
``recon.current_w2c() -> [V, 4, 4]`` (OpenCV), ``recon.scene`` (images, masks, K, ids, resolution)
and ``recon.flags`` ([V], 1 = inlier; only inliers condition the prior).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sparseags.cameras import w2c_to_c2w_gl
from sparseags.config import Config, PriorConfig

from .sampling import REFERENCE_SIZE, NovelView, NovelViewSampler
from .weights import PriorWeightsError, weights_problem
from .zero123 import CONDITION_SIZE, ViewConditions, Zero123Guidance


def prior_status(cfg: PriorConfig, device: str | torch.device) -> tuple[bool, str]:
    """Whether the prior runs, and a one-line reason for the log.

    ``enabled: false`` -> off. ``"auto"`` -> on only with complete weights and a CUDA device (on the
    CPU one SDS step of the full model takes minutes). ``true`` -> on, also on the CPU; missing
    weights then raise :class:`PriorWeightsError` (the user asked for the prior explicitly).
    """
    if cfg.enabled is False:
        return False, "prior off (prior.enabled=false)"
    problem = weights_problem(cfg.model_dir, cfg.ckpt_6dof)
    on_gpu = torch.device(device).type == "cuda"
    if cfg.enabled is True:
        if problem is not None:
            raise PriorWeightsError(problem)
        return True, "prior on (prior.enabled=true)" + ("" if on_gpu else "; on the CPU, expect minutes per SDS step")
    if problem is not None:
        return False, f"prior off (auto): {problem}"
    if not on_gpu:
        return False, "prior off (auto): weights found but no GPU; set prior.enabled=true to run it on the CPU anyway"
    return True, "prior on (auto): weights found and a GPU is present"


def load_guidance(cfg: PriorConfig, device: str | torch.device) -> Zero123Guidance:
    """The guidance named by `cfg` (weights, CFG scale, timestep range and annealing)."""
    return Zero123Guidance.from_pretrained(
        cfg.model_dir,
        cfg.ckpt_6dof,
        device,
        guidance_scale=cfg.guidance_scale,
        t_range=tuple(cfg.t_range),
        anneal_timestep=cfg.anneal_timestep,
    )


def _as_numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)


class Zero123PriorHook:
    """Adds ``weight * SDS`` of a sampled novel view, conditioned on the current inlier views."""

    def __init__(self, guidance: Zero123Guidance, cfg: PriorConfig, sampler: NovelViewSampler | None = None):
        self.guidance = guidance
        self.cfg = cfg
        self.sampler = sampler or NovelViewSampler(cfg.resolution_schedule, cfg.invert_bg_prob, cfg.max_framing_tries)
        self._inliers: tuple[int, ...] | None = None  # views whose images are encoded in `guidance`
        self._conditions: ViewConditions | None = None  # the encodings this hook set
        self._stats: dict = {}

    @classmethod
    def from_config(cls, cfg: PriorConfig, device: str | torch.device) -> "Zero123PriorHook":
        """Load the weights named by `cfg` (raises :class:`PriorWeightsError` when they are missing)."""
        return cls(load_guidance(cfg, device), cfg)

    def _condition_images(self, scene: Any, inliers: np.ndarray) -> Tensor:
        """White-background inlier images [V, 3, 256, 256] in [0, 1]."""
        images = torch.as_tensor(_as_numpy(scene.white_background_images())[inliers], dtype=torch.float32)
        images = images.permute(0, 3, 1, 2)  # [V, 3, H, W]
        if images.shape[-2:] != (CONDITION_SIZE, CONDITION_SIZE):
            images = F.interpolate(
                images, (CONDITION_SIZE, CONDITION_SIZE), mode="bilinear", align_corners=False, antialias=True
            )
        return images

    @staticmethod
    def _condition_focals(scene: Any, inliers: np.ndarray) -> Tensor:
        """(fx, fy) [V, 2] of the inlier views in 256-px units."""
        K = torch.as_tensor(_as_numpy(scene.K)[inliers], dtype=torch.float64)
        return torch.stack([K[:, 0, 0], K[:, 1, 1]], dim=-1) * (REFERENCE_SIZE / scene.resolution)

    def _condition_inputs(self, recon: Any, inliers: np.ndarray) -> tuple[Tensor, Tensor]:
        """Inlier images [V, 3, 256, 256] (white background) and focals [V, 2] in 256-px units.

        From ``recon.targets_at(256)`` (white-background images, masks, K at 256 px) when the
        reconstruction has it, else from ``recon.scene``.
        """
        if hasattr(recon, "targets_at"):
            images, _, K = recon.targets_at(CONDITION_SIZE)
            index = torch.as_tensor(inliers, dtype=torch.long, device=images.device)
            focals = torch.stack([K[index, 0, 0], K[index, 1, 1]], dim=-1).to(torch.float64)
            return images[index].permute(0, 3, 1, 2).float(), focals
        return self._condition_images(recon.scene, inliers), self._condition_focals(recon.scene, inliers)

    def _refresh_conditions(self, recon: Any, w2c_all: Tensor, inliers: np.ndarray) -> Tensor:
        """Condition poses [V, 4, 4] (GL c2w, detached); re-encodes the images only when the inlier set changes.

        The guidance may be shared by several hooks (one per reconstruction round), so the cached
        encodings are reused only if they are still the ones this hook set.
        """
        w2c = w2c_all.detach()[torch.as_tensor(inliers, dtype=torch.long, device=w2c_all.device)]
        c2w_gl = w2c_to_c2w_gl(w2c.to(torch.float64))
        key = tuple(int(i) for i in inliers)
        if key != self._inliers or self.guidance.conditions is not self._conditions:
            images, focals = self._condition_inputs(recon, inliers)
            self.guidance.set_conditions(images, c2w_gl, focals)
            self._inliers, self._conditions = key, self.guidance.conditions
        else:
            self.guidance.update_poses(c2w_gl)
        return c2w_gl

    def loss(self, recon: Any, step: int, step_ratio: float, generator: torch.Generator | None) -> Tensor | None:
        """``weight * SDS`` for this step, or None (off-step, no inliers, or an empty novel view)."""
        if step % max(1, self.cfg.every_n_steps) != 0:
            return None
        inliers = np.flatnonzero(_as_numpy(recon.flags) > 0)
        if len(inliers) == 0:
            self._stats = {"skipped": "no inlier views"}
            return None
        w2c_all = recon.current_w2c()  # [V, 4, 4]
        c2w_gl = self._refresh_conditions(recon, w2c_all, inliers)
        dtype, device = w2c_all.dtype, w2c_all.device

        def render(w2c: Tensor, K: Tensor, width: int, height: int, background: Tensor):
            return recon.render(
                w2c.to(device, dtype)[None], K.to(device, dtype)[None], width, height, background.to(device, dtype)
            )

        view = self.sampler.sample(c2w_gl, self.guidance.conditions.focals, step_ratio, generator, render)
        if view.empty:
            self._stats = self._view_stats(view) | {"skipped": "empty novel view"}
            return None
        output = (
            view.render
            if view.render is not None
            else render(view.w2c, view.K(), view.resolution, view.resolution, view.background)
        )
        rendered = output.rgb[0].permute(2, 0, 1)[None]  # [1, 3, H, W]
        loss, info = self.guidance.sds_loss(rendered, view.c2w_gl, view.focal[0], step_ratio, generator)
        weighted = self.cfg.weight * loss
        self._stats = self._view_stats(view) | info | {"loss": float(weighted.detach())}
        return weighted.to(dtype)

    @staticmethod
    def _view_stats(view: NovelView) -> dict:
        return {
            "elevation_deg": view.elevation_deg,
            "azimuth_deg": view.azimuth_deg,
            "radius": view.radius,
            "resolution": view.resolution,
            "background": "black" if float(view.background.sum()) == 0.0 else "white",
            "fx": view.focal[0],
            "principal_point": view.principal_point,
            "framing_passes": view.framing_passes,
            "framed": view.framed,
        }

    def state_dict(self) -> dict:
        """What an exact resume needs: the principal-point pool (the image encodings are recomputed)."""
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])

    def stats(self) -> dict:
        """Last step's numbers, keys prefixed ``prior_`` (they are merged into the reconstruction's step event).

        prior_t, prior_w, prior_eps_norms (per inlier view, after CFG), prior_grad_norm, prior_nonfinite,
        prior_loss (weighted), the novel camera (prior_elevation_deg, prior_azimuth_deg, prior_radius,
        prior_resolution, prior_background, prior_fx, prior_principal_point), framing (prior_framing_passes,
        prior_framed), prior_skipped when the step was skipped, and prior_pp_pool [2, 8, 2].
        """
        stats = dict(self._stats) | {"pp_pool": self.sampler.pool.table.tolist()}
        return {f"prior_{key}": value for key, value in stats.items()}


def make_prior_hook_factory(
    cfg: Config, scene: Any, device: str | torch.device
) -> tuple[Callable[[], Zero123PriorHook] | None, str]:
    """``(factory, notice)`` for the pipeline: a factory of fresh hooks (one per reconstruction) or None.

    The notice is :func:`prior_status`'s one-line reason. The weights are loaded once, on the first
    call of the factory, and shared by all hooks (each hook has its own principal-point pool).
    `scene` is accepted for the pipeline's signature; the hook reads the scene from the reconstruction.
    """
    enabled, notice = prior_status(cfg.prior, device)
    if not enabled:
        return None, notice
    loaded: list[Zero123Guidance] = []

    def factory() -> Zero123PriorHook:
        if not loaded:
            loaded.append(load_guidance(cfg.prior, device))
        return Zero123PriorHook(loaded[0], cfg.prior)

    return factory, notice
