"""6-DoF Zero123 score distillation (SparseAGS stage 1) on diffusers parts loaded from local folders.

Conventions
-----------
* Cameras are **OpenGL camera-to-world** 4x4 matrices (``c2w_gl``; +x right, +y up, looks down -z),
  as in kiui's ``orbit_camera``; convert engine poses with :func:`sparseags.cameras.w2c_to_c2w_gl`.
* Focal lengths are in **256-pixel units** (pixels of a 256x256 image), whatever the render size.
* Condition images are ``[V, 3, 256, 256]`` RGB in [0, 1] on a white background.
* Latents: the condition latents are the *unscaled* VAE latents (Zero123 concatenates them to the
  noisy latent, 8 input channels); the rendered image's latents are scaled by ``scaling_factor``.

The 18-d camera vector of a (target, condition) pair is ``[flatten(inv(c2w_target) @ c2w_cond)
(16 values, row-major, last row included), log(f_target / fx_cond), log(f_target / fy_cond)]`` where
``f_target`` is the target's **fx only**: the official code builds it as ``np.array(fx, fy)``, which
numpy reads as ``np.array(fx, dtype=fy)``, a scalar; we reproduce that.

Multi-view SDS (one UNet call, batch 2V = [cond_v, uncond_v] per view; uncond = zero context *after*
the projection and zero condition latent): ``eps_v = eps_u + s (eps_c - eps_u)``, ``eps = mean_v eps_v``,
``grad = (1 - alphas_cumprod[t]) (eps - noise)`` with non-finite entries zeroed, and
``loss = 0.5 * sum((latents - stopgrad(latents - grad))^2)``, so ``d loss / d latents = grad``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .ckpt_6dof import CAMERA_EMBEDDING_DIM, LoadReport, apply_6dof_weights, read_state_dict
from .weights import PriorWeightsError, check_weights

if TYPE_CHECKING:
    from .projection import CLIPCameraProjection

CONDITION_SIZE = 256  # Zero123 works on 256x256 images (32x32 latents)


@dataclass
class ClipInput:
    """How CLIP wants its input, read from ``feature_extractor/preprocessor_config.json``."""

    size: int  # square crop side (224 for ViT-L/14)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass
class Zero123Parts:
    """The modules of a zero123-xl-diffusers folder, float32 on the CPU."""

    unet: Any  # diffusers UNet2DConditionModel, in_channels 8
    vae: Any  # diffusers AutoencoderKL
    image_encoder: Any  # transformers CLIPVisionModelWithProjection
    clip_input: ClipInput
    scheduler: Any  # diffusers DDIMScheduler
    base_projection: "CLIPCameraProjection | None"  # zero123-xl's 4-d projection (replaced by the 6-DoF one)


@dataclass
class ViewConditions:
    """Per condition view, cached by :meth:`Zero123Guidance.set_conditions`."""

    clip_embeds: Tensor  # [V, D] CLIP image embeddings
    latents: Tensor  # [V, 4, 32, 32] unscaled VAE latents
    c2w_gl: Tensor  # [V, 4, 4] float64, current poses
    focals: Tensor  # [V, 2] float64 (fx, fy) in 256-px units


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Silence the libraries' progress bars and advice while loading; restore their verbosity afterwards."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
        transformers_logging.enable_progress_bar()


def _load_part(loader: Any, folder: Path, what: str, **kwargs: Any) -> Any:
    try:
        with _quiet_loading():
            return loader.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except (OSError, ValueError, TypeError, KeyError, json.JSONDecodeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PriorWeightsError(f"{folder}: cannot load the {what} ({reason})") from None


def load_zero123_parts(model_dir: str | Path) -> Zero123Parts:
    """Load a diffusers-format zero123-xl folder (no network: ``local_files_only`` everywhere)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from .projection import CLIPCameraProjection

    model_dir = Path(model_dir)
    try:
        json.loads((model_dir / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise PriorWeightsError(f"{model_dir / 'model_index.json'}: not readable JSON ({type(err).__name__})") from None
    unet = _load_part(UNet2DConditionModel, model_dir / "unet", "UNet")
    if unet.config.in_channels != 8:
        raise PriorWeightsError(f"{model_dir / 'unet'}: in_channels is {unet.config.in_channels}, Zero123 needs 8")
    vae = _load_part(AutoencoderKL, model_dir / "vae", "VAE")
    image_encoder = _load_part(CLIPVisionModelWithProjection, model_dir / "image_encoder", "CLIP image encoder")
    processor = _load_part(CLIPImageProcessor, model_dir / "feature_extractor", "CLIP feature extractor")
    scheduler = _load_part(DDIMScheduler, model_dir / "scheduler", "scheduler")
    width = unet.config.cross_attention_dim
    if image_encoder.config.projection_dim != width:
        raise PriorWeightsError(
            f"{model_dir}: CLIP projection_dim {image_encoder.config.projection_dim} "
            f"differs from the UNet cross_attention_dim {width}"
        )
    base_projection = None
    if (model_dir / "clip_camera_projection" / "config.json").is_file():
        base_projection = _load_part(CLIPCameraProjection, model_dir / "clip_camera_projection", "camera projection")
        if base_projection.config.embedding_dim != width:
            raise PriorWeightsError(
                f"{model_dir / 'clip_camera_projection'}: embedding_dim "
                f"{base_projection.config.embedding_dim} differs from the UNet width {width}"
            )
    crop = processor.crop_size  # {"height", "width"} (a SizeDict in transformers 5) or an int
    size = crop if isinstance(crop, int) else crop["height"]
    clip_input = ClipInput(size=int(size), mean=tuple(processor.image_mean), std=tuple(processor.image_std))
    return Zero123Parts(unet, vae, image_encoder, clip_input, scheduler, base_projection)


def _randn(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Standard normal samples drawn on the generator's device (so a CPU generator drives CUDA runs too)."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source, dtype=torch.float32).to(device, dtype)


def guided_noise_per_view(eps: Tensor, guidance_scale: float) -> Tensor:
    """Classifier-free guidance per view: eps [2V, ...] ordered [cond_0, uncond_0, cond_1, ...] -> [V, ...]."""
    eps = eps.unflatten(0, (eps.shape[0] // 2, 2))
    cond, uncond = eps[:, 0], eps[:, 1]
    return uncond + guidance_scale * (cond - uncond)


def sds_gradient(eps_views: Tensor, noise: Tensor, w: float) -> tuple[Tensor, int]:
    """``w * (mean_v eps_v - noise)`` with non-finite entries set to 0; also the number of entries zeroed.

    eps_views: [V, C, h, w]; noise: [1, C, h, w] -> grad [1, C, h, w]. Every view weighs the same.
    """
    grad = w * (eps_views.mean(dim=0, keepdim=True) - noise)
    finite = torch.isfinite(grad)
    return torch.where(finite, grad, torch.zeros_like(grad)), int((~finite).sum())


class Zero123Guidance:
    """The 6-DoF Zero123 prior: condition caching, camera embeddings and the multi-view SDS loss."""

    def __init__(
        self,
        unet: Any,
        vae: Any,
        image_encoder: Any,
        clip_input: ClipInput,
        projection: "CLIPCameraProjection",
        scheduler: Any,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        guidance_scale: float = 5.0,
        t_range: tuple[float, float] = (0.02, 0.98),
        anneal_timestep: bool = True,
    ):
        self.device = torch.device(device)
        # fp16 on CUDA like the official code; fp32 on the CPU (fp16 CPU kernels are slow or missing).
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        with _quiet_loading():  # diffusers advises on .to(dtype) casts; all our modules are cast alike
            self.unet, self.vae, self.image_encoder, self.projection = (
                module.to(self.device, self.dtype).eval().requires_grad_(False)
                for module in (unet, vae, image_encoder, projection)
            )
        self.clip_input = clip_input
        self.scheduler = scheduler
        self.guidance_scale = float(guidance_scale)
        self.anneal_timestep = bool(anneal_timestep)
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.min_step = int(self.num_train_timesteps * t_range[0])
        self.max_step = int(self.num_train_timesteps * t_range[1])
        self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device, torch.float32)  # [T]
        self.scaling_factor = float(vae.config.scaling_factor)
        self.conditions: ViewConditions | None = None
        self.load_report: LoadReport | None = None

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        ckpt_6dof: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        strict: bool = True,
        trust_pickle: bool = False,
        **kwargs: Any,
    ) -> "Zero123Guidance":
        """zero123-xl-diffusers folder + SparseAGS 6-DoF checkpoint -> guidance on `device`.

        Missing or incomplete weights raise :class:`PriorWeightsError` (one line naming what to
        download and where); `kwargs` go to the constructor (guidance_scale, t_range, anneal_timestep).
        """
        model_dir, ckpt_6dof = check_weights(model_dir, ckpt_6dof)
        parts = load_zero123_parts(model_dir)
        state_dict = read_state_dict(ckpt_6dof, trust_pickle=trust_pickle)
        projection, report = apply_6dof_weights(parts.unet, state_dict, source=str(ckpt_6dof), strict=strict)
        del state_dict
        guidance = cls(
            parts.unet,
            parts.vae,
            parts.image_encoder,
            parts.clip_input,
            projection,
            parts.scheduler,
            device=device,
            dtype=dtype,
            **kwargs,
        )
        guidance.load_report = report
        return guidance

    # ----------------------------------------------------------------------------------------------
    # conditions

    def _clip_pixels(self, images: Tensor) -> Tensor:
        """[V, 3, 256, 256] in [0, 1] -> CLIP input [V, 3, S, S] (bicubic resize, then normalise).

        The official code goes through PIL (uint8, bicubic) and the CLIPImageProcessor; for a square
        input that is resize + normalise, done here in float without the 8-bit rounding.
        """
        size = self.clip_input.size
        pixels = F.interpolate(images, (size, size), mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(self.clip_input.mean, device=images.device, dtype=images.dtype)[:, None, None]
        std = torch.tensor(self.clip_input.std, device=images.device, dtype=images.dtype)[:, None, None]
        return (pixels.clamp(0.0, 1.0) - mean) / std

    @torch.no_grad()
    def encode_conditions(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """CLIP embeddings [V, D] and unscaled VAE latents [V, 4, 32, 32] of white-background images.

        The official code takes a posterior *sample* of the latents; with ``generator=None`` we take
        the posterior mode (mean) instead, so the conditions are deterministic.
        """
        images = images.to(self.device, self.dtype)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"condition images must be [V, 3, H, W], got {list(images.shape)}")
        images = F.interpolate(images, (CONDITION_SIZE, CONDITION_SIZE), mode="bilinear", align_corners=False)
        clip_embeds = self.image_encoder(pixel_values=self._clip_pixels(images)).image_embeds  # [V, D]
        posterior = self.vae.encode(images * 2.0 - 1.0).latent_dist
        latents = posterior.mode() if generator is None else posterior.sample(generator=generator)
        return clip_embeds, latents

    def set_conditions(
        self, images: Tensor, c2w_gl: Tensor, focals: Tensor, generator: torch.Generator | None = None
    ) -> None:
        """Encode and cache the condition views: images [V, 3, 256, 256], c2w_gl [V, 4, 4], focals [V, 2]."""
        clip_embeds, latents = self.encode_conditions(images, generator)
        c2w_gl, focals = self._check_poses(c2w_gl, focals, images.shape[0])
        self.conditions = ViewConditions(clip_embeds, latents, c2w_gl, focals)

    def update_poses(self, c2w_gl: Tensor, focals: Tensor | None = None) -> None:
        """Replace the cached condition poses (and focals); the image encodings are kept."""
        cond = self._require_conditions()
        focals = cond.focals if focals is None else focals
        cond.c2w_gl, cond.focals = self._check_poses(c2w_gl, focals, cond.latents.shape[0])

    def _check_poses(self, c2w_gl: Tensor, focals: Tensor, num_views: int) -> tuple[Tensor, Tensor]:
        c2w_gl = torch.as_tensor(c2w_gl).detach().to(self.device, torch.float64)
        focals = torch.as_tensor(focals).detach().to(self.device, torch.float64)
        if c2w_gl.shape != (num_views, 4, 4) or focals.shape != (num_views, 2):
            raise ValueError(
                f"expected c2w_gl [{num_views}, 4, 4] and focals [{num_views}, 2], "
                f"got {list(c2w_gl.shape)} and {list(focals.shape)}"
            )
        return c2w_gl, focals

    def _require_conditions(self) -> ViewConditions:
        if self.conditions is None:
            raise RuntimeError("Zero123Guidance: call set_conditions() before using the prior")
        return self.conditions

    # ----------------------------------------------------------------------------------------------
    # camera embedding

    @staticmethod
    def camera_embedding(target_c2w_gl: Tensor, cond_c2w_gl: Tensor, target_focal: Any, cond_focals: Tensor) -> Tensor:
        """18-d 6-DoF camera vectors, float64: [V, 18] for a [4, 4] target, [B, V, 18] for [B, 4, 4].

        ``[flatten(inv(target) @ cond) (row-major, 16), log(f_t / fx_cond), log(f_t / fy_cond)]``.
        `target_focal` is a scalar (or [B]) or an (fx, fy) pair (or [B, 2]); only fx is used (the
        official ``np.array(fx, fy)`` quirk). `cond_focals` is [V, 2].
        """
        target = torch.as_tensor(target_c2w_gl, dtype=torch.float64)
        cond = torch.as_tensor(cond_c2w_gl, dtype=torch.float64, device=target.device)
        cond_focals = torch.as_tensor(cond_focals, dtype=torch.float64, device=target.device)
        focal = torch.as_tensor(target_focal, dtype=torch.float64, device=target.device)
        batch_ndim = target.ndim - 2
        if focal.ndim == batch_ndim + 1 and focal.shape[-1] == 2:
            focal = focal[..., 0]  # (fx, fy) -> fx, as np.array(fx, fy) does
        relative = torch.linalg.inv(target)[..., None, :, :] @ cond  # [..., V, 4, 4]: cond camera -> target camera
        log_ratios = torch.log(focal[..., None, None] / cond_focals)  # [..., V, 2]
        return torch.cat([relative.flatten(-2), log_ratios], dim=-1)

    # ----------------------------------------------------------------------------------------------
    # SDS

    def timestep(self, step_ratio: float | None, generator: torch.Generator | None = None) -> int:
        """Annealed ``round((1 - s) * T)`` clipped to [min_step, max_step], or uniform when not annealing."""
        if self.anneal_timestep and step_ratio is not None:
            return int(np.clip(np.round((1.0 - step_ratio) * self.num_train_timesteps), self.min_step, self.max_step))
        source = generator.device if generator is not None else torch.device("cpu")
        return int(torch.randint(self.min_step, self.max_step + 1, (1,), generator=generator, device=source))

    def encode_render(self, rendered: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """[1, 3, H, W] in [0, 1] -> scaled latents [1, 4, 32, 32] (posterior sample; differentiable)."""
        images = F.interpolate(
            rendered.to(self.device, self.dtype), (CONDITION_SIZE, CONDITION_SIZE), mode="bilinear", align_corners=False
        )
        posterior = self.vae.encode(images * 2.0 - 1.0).latent_dist
        return posterior.sample(generator=generator) * self.scaling_factor

    def sds_loss(
        self,
        rendered: Tensor,
        target_c2w_gl: Tensor,
        target_focal: Any,
        step_ratio: float | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict]:
        """Multi-view SDS of one rendered novel view against all cached condition views.

        rendered: [1, 3, H, W] in [0, 1] (any H, W; resized to 256); target_c2w_gl: [4, 4];
        target_focal: fx (or (fx, fy)) in 256-px units. Returns ``(loss, info)`` with a float32 scalar
        loss whose gradient w.r.t. the latents is ``grad``; info: t, w, eps_norms (per view, after
        CFG, before averaging), grad_norm, nonfinite (entries zeroed).
        """
        cond = self._require_conditions()
        if rendered.ndim != 4 or rendered.shape[:2] != (1, 3):
            raise ValueError(f"rendered must be [1, 3, H, W], got {list(rendered.shape)}")
        latents = self.encode_render(rendered, generator)  # [1, 4, h, w]
        t = self.timestep(step_ratio, generator)
        w = 1.0 - self.alphas_cumprod[t]
        num_views = cond.latents.shape[0]
        with torch.no_grad():
            noise = _randn(tuple(latents.shape), generator, self.device, self.dtype)
            t_batch = torch.full((2 * num_views,), t, device=self.device, dtype=torch.long)
            noisy = self.scheduler.add_noise(latents.detach(), noise, t_batch[:1])
            target = torch.as_tensor(target_c2w_gl, dtype=torch.float64).to(self.device)
            camera = self.camera_embedding(target, cond.c2w_gl, target_focal, cond.focals)  # [V, 18]
            context = self.projection(torch.cat([cond.clip_embeds, camera.to(self.dtype)], dim=-1))  # [V, D]
            # Interleave per view: [cond_v, uncond_v]; uncond = zero context (after projection), zero latent.
            contexts = torch.stack([context, torch.zeros_like(context)], dim=1).flatten(0, 1)[:, None]  # [2V, 1, D]
            image_latents = torch.stack([cond.latents, torch.zeros_like(cond.latents)], dim=1).flatten(0, 1)
            unet_input = torch.cat([noisy.expand(2 * num_views, -1, -1, -1), image_latents], dim=1)  # [2V, 8, h, w]
            eps = self.unet(unet_input, t_batch, encoder_hidden_states=contexts).sample.float()  # [2V, 4, h, w]
            eps_views = guided_noise_per_view(eps, self.guidance_scale)  # [V, 4, h, w]
            grad, nonfinite = sds_gradient(eps_views, noise.float(), float(w))  # [1, 4, h, w]
        latents = latents.float()
        target = (latents - grad).detach()
        loss = 0.5 * ((latents - target) ** 2).sum()
        info = {
            "t": t,
            "w": float(w),
            "eps_norms": eps_views.flatten(1).norm(dim=1).tolist(),
            "grad_norm": float(grad.norm()),
            "nonfinite": nonfinite,
            "num_views": num_views,
        }
        return loss, info


__all__ = [
    "CAMERA_EMBEDDING_DIM",
    "ClipInput",
    "PriorWeightsError",
    "ViewConditions",
    "Zero123Guidance",
    "Zero123Parts",
    "guided_noise_per_view",
    "load_zero123_parts",
    "sds_gradient",
]
