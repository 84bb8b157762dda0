"""The SparseAGS 6-DoF Zero123 fine-tune: key mapping from its ldm checkpoint onto a diffusers UNet.

``zero123_6dof_23k.ckpt`` is a PyTorch-Lightning / ldm checkpoint: ``{"state_dict": {...}}`` with the
UNet under ``model.diffusion_model.*`` (ldm names) and the camera projection as
``cc_projection.weight [768, 786]`` / ``cc_projection.bias [768]``. Like the official code we copy
only the attention (SpatialTransformer) sub-blocks of the UNet; ResNets and convolutions keep the
zero123-xl values, and the projection is replaced by ``Linear(768 + 18 -> 768)``.

ldm numbers its blocks flat; with ``L = layers_per_block``:

* ``input_blocks.{1 + i(L+1) + j}.1.``  <->  ``down_blocks.{i}.attentions.{j}.``  (j < L)
* ``middle_block.1.``                    <->  ``mid_block.attentions.0.``
* ``output_blocks.{i(L+1) + j}.1.``      <->  ``up_blocks.{i}.attentions.{j}.``    (j <= L)

For SD-1.x (L = 2, cross-attention in down blocks 0-2 and up blocks 1-3) that is exactly the 16
blocks ``input_blocks.{1,2,4,5,7,8}``, ``middle_block``, ``output_blocks.{3..11}``. Inside a block the
SD-1.x SpatialTransformer and diffusers' Transformer2DModel use the same names (``norm``,
``proj_in``, ``transformer_blocks.N.{norm1,attn1,norm2,attn2,norm3,ff.net.0.proj,ff.net.2}``,
``attnK.{to_q,to_k,to_v,to_out.0}``, ``proj_out``), which is why diffusers' own conversion script
(``renew_attention_paths``) leaves them unchanged; only the block prefix is rewritten.

Run ``python -m sparseags.prior.convert_ckpt SRC.ckpt DST.safetensors --trust-pickle`` once to extract
the used subset of a checkpoint that ``torch.load(weights_only=True)`` refuses (see :func:`read_state_dict`).
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from ..atomic import atomic_output
from .weights import PriorWeightsError

if TYPE_CHECKING:
    from .projection import CLIPCameraProjection

LDM_UNET_PREFIX = "model.diffusion_model."
CC_PROJECTION_WEIGHT = "cc_projection.weight"
CC_PROJECTION_BIAS = "cc_projection.bias"
# Dimensions of the 6-DoF camera vector: 16 (flattened 4x4 relative pose) + 2 (log focal ratios).
CAMERA_EMBEDDING_DIM = 18

SD1_LAYERS_PER_BLOCK = 2
SD1_DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
SD1_UP_BLOCK_TYPES = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3


def attention_block_prefixes(
    layers_per_block: int,
    down_block_types: Sequence[str],
    up_block_types: Sequence[str],
    mid_has_attention: bool = True,
) -> list[tuple[str, str]]:
    """``[(ldm prefix, diffusers prefix)]`` of every attention block, ldm without ``model.diffusion_model.``."""
    if not isinstance(layers_per_block, int):
        raise PriorWeightsError(f"UNet layers_per_block={layers_per_block!r}: only one int for all blocks is supported")
    stride = layers_per_block + 1  # ldm: L ResNet+attention layers, then a down-sampler (its own index)
    pairs = []
    for i, kind in enumerate(down_block_types):
        if "CrossAttn" in kind:
            pairs += [
                (f"input_blocks.{1 + i * stride + j}.1.", f"down_blocks.{i}.attentions.{j}.")
                for j in range(layers_per_block)
            ]
    if mid_has_attention:
        pairs.append(("middle_block.1.", "mid_block.attentions.0."))
    for i, kind in enumerate(up_block_types):
        if "CrossAttn" in kind:
            pairs += [(f"output_blocks.{i * stride + j}.1.", f"up_blocks.{i}.attentions.{j}.") for j in range(stride)]
    return pairs


def unet_attention_prefixes(unet: torch.nn.Module) -> list[tuple[str, str]]:
    """:func:`attention_block_prefixes` for a diffusers ``UNet2DConditionModel``."""
    config = unet.config
    mid_type = config.get("mid_block_type") or "UNetMidBlock2DCrossAttn"
    return attention_block_prefixes(
        config["layers_per_block"],
        config["down_block_types"],
        config["up_block_types"],
        mid_has_attention="CrossAttn" in mid_type,
    )


def ldm_attention_key_map(unet: torch.nn.Module) -> dict[str, str]:
    """``{ldm checkpoint key: diffusers UNet key}`` for every parameter/buffer of the UNet's attention blocks.

    Built from the UNet's own state-dict keys, so it covers exactly what the UNet has; the ldm key is
    ``model.diffusion_model.`` + the ldm block prefix + the (identical) inner name.
    """
    prefixes = unet_attention_prefixes(unet)
    key_map = {}
    for key in unet.state_dict():
        for ldm_prefix, diffusers_prefix in prefixes:
            if key.startswith(diffusers_prefix):
                key_map[LDM_UNET_PREFIX + ldm_prefix + key[len(diffusers_prefix) :]] = key
                break
    return key_map


def is_ldm_attention_key(key: str, prefixes: Iterable[tuple[str, str]]) -> bool:
    return any(key.startswith(LDM_UNET_PREFIX + ldm_prefix) for ldm_prefix, _ in prefixes)


# --------------------------------------------------------------------------------------------------
# reading


def read_state_dict(path: str | Path, trust_pickle: bool = False) -> dict[str, Tensor]:
    """The flat tensor dict of a ``.ckpt`` (``obj["state_dict"]`` or the object itself) or ``.safetensors``.

    ``.ckpt`` files are read with ``torch.load(weights_only=True)``, which refuses arbitrary pickled
    objects; a Lightning checkpoint that stores such objects needs ``trust_pickle=True`` (only for
    files from a source you trust, since unpickling can run code) or a one-off extraction with
    ``python -m sparseags.prior.convert_ckpt``.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = _torch_load(path, weights_only=not trust_pickle)
    except pickle.UnpicklingError:
        raise PriorWeightsError(
            f"{path}: torch.load(weights_only=True) refused a pickled object; if you trust the file run "
            f"'python -m sparseags.prior.convert_ckpt {path} {path.with_suffix('.safetensors')} --trust-pickle' "
            "and point prior.ckpt_6dof at the .safetensors file"
        ) from None
    except (RuntimeError, OSError, EOFError) as err:
        raise PriorWeightsError(f"{path}: not a readable torch checkpoint ({str(err).splitlines()[0]})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PriorWeightsError(f"{path}: expected a dict of tensors (or one under 'state_dict')")
    return dict(state)


def _torch_load(path: Path, weights_only: bool) -> object:
    """torch.load on the CPU, memory-mapped when the file is in the zip format (multi-GB checkpoints)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=weights_only)


@dataclass
class LoadReport:
    """What :func:`apply_6dof_weights` did."""

    blocks: list[tuple[str, str]]  # (ldm prefix, diffusers prefix) of every attention block
    loaded_keys: int  # UNet tensors overwritten from the checkpoint
    ignored_keys: int  # checkpoint tensors outside the attention subset and cc_projection (not loaded)
    unexpected_keys: list[str] = field(default_factory=list)  # in an attention block, but not in the UNet


def _first(keys: Sequence[str], count: int = 3) -> str:
    shown = ", ".join(keys[:count])
    return shown + (f" (+{len(keys) - count} more)" if len(keys) > count else "")


def apply_6dof_weights(
    unet: torch.nn.Module, state_dict: Mapping[str, Tensor], source: str = "checkpoint", strict: bool = True
) -> tuple["CLIPCameraProjection", LoadReport]:
    """Copy the attention blocks of an ldm state dict into `unet` (in place); build the 6-DoF projection.

    Checks (our own, not ``load_state_dict(strict=False)``): every attention key of the UNet must be
    in the checkpoint with the same shape; checkpoint keys inside an attention block that the UNet
    lacks are *unexpected* (an error when `strict`, else a warning). The projection must be
    ``[D, D + 18]`` with ``D`` the UNet's cross-attention width. Returns the new projection (float32,
    CPU) and a :class:`LoadReport`.
    """
    key_map = ldm_attention_key_map(unet)
    prefixes = unet_attention_prefixes(unet)
    unet_state = unet.state_dict()
    missing = [k for k in key_map if k not in state_dict]
    if missing:
        raise PriorWeightsError(f"{source}: {len(missing)} UNet attention keys missing, e.g. {_first(missing)}")
    mismatched = [
        f"{k} {list(state_dict[k].shape)} vs {list(unet_state[v].shape)}"
        for k, v in key_map.items()
        if state_dict[k].shape != unet_state[v].shape
    ]
    if mismatched:
        raise PriorWeightsError(f"{source}: attention shapes differ from the UNet: {_first(mismatched, 2)}")
    unexpected = sorted(k for k in state_dict if is_ldm_attention_key(k, prefixes) and k not in key_map)
    if unexpected and strict:
        raise PriorWeightsError(f"{source}: {len(unexpected)} unexpected attention keys, e.g. {_first(unexpected)}")
    if unexpected:
        warnings.warn(
            f"{source}: ignoring {len(unexpected)} unexpected attention keys, e.g. {_first(unexpected)}", stacklevel=2
        )

    mapped = {diffusers_key: state_dict[ldm_key] for ldm_key, diffusers_key in key_map.items()}
    result = unet.load_state_dict(mapped, strict=False)
    if result.unexpected_keys:  # cannot happen: every mapped key comes from unet.state_dict()
        raise PriorWeightsError(f"{source}: UNet rejected keys {_first(result.unexpected_keys)}")

    projection = build_6dof_projection(state_dict, unet.config["cross_attention_dim"], source)
    used = len(key_map) + 2 + len(unexpected)
    report = LoadReport(
        blocks=prefixes, loaded_keys=len(key_map), ignored_keys=len(state_dict) - used, unexpected_keys=unexpected
    )
    return projection, report


def build_6dof_projection(
    state_dict: Mapping[str, Tensor], embedding_dim: int, source: str = "checkpoint"
) -> "CLIPCameraProjection":
    """``CLIPCameraProjection(embedding_dim, 18)`` holding the checkpoint's ``cc_projection``."""
    from .projection import CLIPCameraProjection  # imports diffusers (seconds), so only when loading

    if CC_PROJECTION_WEIGHT not in state_dict or CC_PROJECTION_BIAS not in state_dict:
        raise PriorWeightsError(
            f"{source}: no {CC_PROJECTION_WEIGHT} / {CC_PROJECTION_BIAS} (not a 6-DoF Zero123 checkpoint)"
        )
    weight, bias = state_dict[CC_PROJECTION_WEIGHT], state_dict[CC_PROJECTION_BIAS]
    expected = (embedding_dim, embedding_dim + CAMERA_EMBEDDING_DIM)
    if tuple(weight.shape) != expected or tuple(bias.shape) != (embedding_dim,):
        raise PriorWeightsError(
            f"{source}: cc_projection is {list(weight.shape)}, expected {list(expected)} "
            f"(CLIP width {embedding_dim} + {CAMERA_EMBEDDING_DIM} camera values)"
        )
    projection = CLIPCameraProjection(embedding_dim=embedding_dim, additional_embeddings=CAMERA_EMBEDDING_DIM)
    projection.proj.load_state_dict({"weight": weight.float(), "bias": bias.float()})
    return projection


# --------------------------------------------------------------------------------------------------
# one-off extraction of the used subset (small, safe to load)


def extract_used_weights(
    state_dict: Mapping[str, Tensor], prefixes: Sequence[tuple[str, str]] | None = None
) -> dict[str, Tensor]:
    """The checkpoint tensors the prior uses: SD-1.x attention blocks (ldm names) and ``cc_projection``."""
    if prefixes is None:
        prefixes = attention_block_prefixes(SD1_LAYERS_PER_BLOCK, SD1_DOWN_BLOCK_TYPES, SD1_UP_BLOCK_TYPES)
    keep = {CC_PROJECTION_WEIGHT, CC_PROJECTION_BIAS}
    return {k: v.contiguous() for k, v in state_dict.items() if k in keep or is_ldm_attention_key(k, prefixes)}


def save_safetensors_atomic(tensors: Mapping[str, Tensor], path: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_output(path) as tmp:
        save_file(dict(tensors), str(tmp))
    return path
