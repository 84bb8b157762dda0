"""Randomly initialised Zero123 models with the real class layout (tests and benchmarks; no downloads).

:func:`write_random_zero123` writes a folder in the ``zero123-xl-diffusers`` layout and
:func:`random_6dof_state_dict` an ldm-style 6-DoF checkpoint whose keys follow the real naming
(attention blocks generated from the UNet through the inverse of our key map, plus non-attention keys
that must *not* be loaded). Both go through the production loading code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .ckpt_6dof import (
    CAMERA_EMBEDDING_DIM,
    CC_PROJECTION_BIAS,
    CC_PROJECTION_WEIGHT,
    LDM_UNET_PREFIX,
    SD1_DOWN_BLOCK_TYPES,
    SD1_LAYERS_PER_BLOCK,
    SD1_UP_BLOCK_TYPES,
    ldm_attention_key_map,
)
from .projection import CLIPCameraProjection


@dataclass(frozen=True)
class Zero123Spec:
    """Sizes of a random Zero123 (SD-1.x block structure: 3 cross-attention down blocks + 1 plain)."""

    unet_channels: tuple[int, int, int, int] = (16, 16, 32, 32)
    unet_groups: int = 8
    width: int = 16  # cross_attention_dim = CLIP projection_dim = projection embedding_dim
    attention_head_dim: int = 4
    vae_channels: tuple[int, int, int, int] = (8, 8, 16, 16)
    vae_groups: int = 8
    vae_layers: int = 1
    clip_hidden: int = 16
    clip_layers: int = 1
    clip_heads: int = 2
    clip_image_size: int = 32
    clip_patch: int = 8


TINY = Zero123Spec()
# SD-1.x / zero123-xl sizes (UNet ~860 M parameters, VAE ~84 M); CLIP stays small since it only
# encodes the condition images once.
FULL = Zero123Spec(
    unet_channels=(320, 640, 1280, 1280),
    unet_groups=32,
    width=768,
    attention_head_dim=8,
    vae_channels=(128, 256, 512, 512),
    vae_groups=32,
    vae_layers=2,
)


def make_unet(spec: Zero123Spec):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32,
        in_channels=8,
        out_channels=4,
        layers_per_block=SD1_LAYERS_PER_BLOCK,
        block_out_channels=spec.unet_channels,
        down_block_types=SD1_DOWN_BLOCK_TYPES,
        up_block_types=SD1_UP_BLOCK_TYPES,
        cross_attention_dim=spec.width,
        attention_head_dim=spec.attention_head_dim,
        norm_num_groups=spec.unet_groups,
    )


def make_vae(spec: Zero123Spec):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=spec.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=spec.vae_layers,
        norm_num_groups=spec.vae_groups,
        sample_size=256,
        scaling_factor=0.18215,
    )


def make_image_encoder(spec: Zero123Spec):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=spec.clip_hidden,
        intermediate_size=2 * spec.clip_hidden,
        num_hidden_layers=spec.clip_layers,
        num_attention_heads=spec.clip_heads,
        image_size=spec.clip_image_size,
        patch_size=spec.clip_patch,
        projection_dim=spec.width,
    )
    return CLIPVisionModelWithProjection(config)


def make_image_processor(spec: Zero123Spec):
    from transformers import CLIPImageProcessor

    side = spec.clip_image_size
    return CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})


def make_scheduler():
    """Stable Diffusion 1.x's DDIM schedule (the one zero123-xl ships)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


MODEL_INDEX = {
    "_class_name": "Zero123Pipeline",
    "clip_camera_projection": ["zero123", "CLIPCameraProjection"],
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def write_random_zero123(model_dir: str | Path, spec: Zero123Spec = TINY, seed: int = 0) -> Path:
    """Write a random zero123-xl-diffusers-layout folder (every part saved with save_pretrained)."""
    model_dir = Path(model_dir)
    torch.manual_seed(seed)
    model_dir.mkdir(parents=True, exist_ok=True)
    make_unet(spec).save_pretrained(model_dir / "unet")
    make_vae(spec).save_pretrained(model_dir / "vae")
    make_image_encoder(spec).save_pretrained(model_dir / "image_encoder")
    make_image_processor(spec).save_pretrained(model_dir / "feature_extractor")
    make_scheduler().save_pretrained(model_dir / "scheduler")
    CLIPCameraProjection(embedding_dim=spec.width, additional_embeddings=4).save_pretrained(
        model_dir / "clip_camera_projection"
    )
    (model_dir / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2), encoding="utf-8")
    return model_dir


def random_6dof_state_dict(unet: torch.nn.Module, seed: int = 1) -> dict[str, Tensor]:
    """An ldm-style 6-DoF state dict for `unet`: random attention blocks, cc_projection and decoys.

    Decoys (which a correct loader ignores): ResNet weights of input/middle/output blocks at the
    same ldm names the real checkpoint uses, the ldm time embedding, and first/cond-stage keys.
    """
    generator = torch.Generator().manual_seed(seed)
    state = unet.state_dict()
    ckpt = {
        ldm_key: torch.randn(state[key].shape, generator=generator)
        for ldm_key, key in ldm_attention_key_map(unet).items()
    }
    width = unet.config.cross_attention_dim
    ckpt[CC_PROJECTION_WEIGHT] = torch.randn(width, width + CAMERA_EMBEDDING_DIM, generator=generator)
    ckpt[CC_PROJECTION_BIAS] = torch.randn(width, generator=generator)
    decoys = {
        "input_blocks.1.0.in_layers.2.weight": state["down_blocks.0.resnets.0.conv1.weight"].shape,
        "middle_block.0.in_layers.2.weight": state["mid_block.resnets.0.conv1.weight"].shape,
        "output_blocks.3.0.in_layers.2.weight": state["up_blocks.1.resnets.0.conv1.weight"].shape,
        "time_embed.0.weight": state["time_embedding.linear_1.weight"].shape,
    }
    for name, shape in decoys.items():
        ckpt[LDM_UNET_PREFIX + name] = torch.randn(shape, generator=generator)
    ckpt["first_stage_model.encoder.conv_in.weight"] = torch.randn(8, 3, 3, 3, generator=generator)
    ckpt["cond_stage_model.model.visual.proj"] = torch.randn(4, 4, generator=generator)
    return ckpt


def write_random_6dof_ckpt(path: str | Path, unet: torch.nn.Module, seed: int = 1) -> Path:
    """Save :func:`random_6dof_state_dict` as a Lightning-style ``{"state_dict": ..., "global_step": ...}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": random_6dof_state_dict(unet, seed), "global_step": 23000, "epoch": 0}, path)
    return path
