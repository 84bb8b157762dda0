"""The CLIP + camera projection of Zero123: one linear layer from [CLIP embedding, camera vector] to a context token.

The public ``ashawkey/zero123-xl-diffusers`` folder stores it under ``clip_camera_projection/`` as a
diffusers ``ModelMixin`` with config ``{"embedding_dim": 768, "additional_embeddings": 4}`` and one
parameter pair ``proj.weight [768, 772]``, ``proj.bias [768]``. This class reproduces that layout, so
``from_pretrained`` reads the public folder and ``save_pretrained`` writes a compatible one. The 6-DoF
fine-tune uses the same class with ``additional_embeddings = 18``.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor


class CLIPCameraProjection(ModelMixin, ConfigMixin):
    """``proj: Linear(embedding_dim + additional_embeddings -> embedding_dim)``.

    Zero123-XL: 768 + 4 (elevation, sin/cos azimuth, radius); SparseAGS 6-DoF: 768 + 18
    (flattened relative pose + two log focal ratios).
    """

    @register_to_config
    def __init__(self, embedding_dim: int = 768, additional_embeddings: int = 4):
        super().__init__()
        self.proj = torch.nn.Linear(embedding_dim + additional_embeddings, embedding_dim)

    def forward(self, embedding: Tensor) -> Tensor:
        """[..., embedding_dim + additional_embeddings] -> [..., embedding_dim]."""
        return self.proj(embedding)
