"""The generative prior: 6-DoF Zero123 score distillation (SDS) with diffusers, from local checkpoints.

* :mod:`.zero123` -- :class:`Zero123Guidance` (loading, condition caching, 18-d camera embedding, SDS);
* :mod:`.ckpt_6dof` -- the ldm -> diffusers key map of the 6-DoF fine-tune's attention blocks;
* :mod:`.sampling` -- :class:`NovelViewSampler` (novel cameras with bounded auto-framing);
* :mod:`.hook` -- :class:`Zero123PriorHook` for the reconstruction and :func:`prior_status`;
* :mod:`.synthetic` -- random models with the real layout (tests, benchmarks).

Heavy imports (diffusers, transformers) happen inside the functions that need them.
"""

from .ckpt_6dof import LoadReport, apply_6dof_weights, attention_block_prefixes, ldm_attention_key_map
from .hook import Zero123PriorHook, make_prior_hook_factory, prior_status
from .sampling import NovelView, NovelViewSampler, PrincipalPointPool
from .weights import PriorWeightsError, check_weights, weights_problem
from .zero123 import Zero123Guidance


def __getattr__(name: str):
    # CLIPCameraProjection subclasses diffusers' ModelMixin; import diffusers only when it is asked for.
    if name == "CLIPCameraProjection":
        from .projection import CLIPCameraProjection

        return CLIPCameraProjection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CLIPCameraProjection",
    "LoadReport",
    "NovelView",
    "NovelViewSampler",
    "PrincipalPointPool",
    "PriorWeightsError",
    "Zero123Guidance",
    "Zero123PriorHook",
    "apply_6dof_weights",
    "attention_block_prefixes",
    "check_weights",
    "ldm_attention_key_map",
    "make_prior_hook_factory",
    "prior_status",
    "weights_problem",
]
