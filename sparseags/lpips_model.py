"""LPIPS (Zhang et al., CVPR 2018) with offline backbone weights.

The metric is the official ``lpips`` package's :class:`lpips.LPIPS` (v0.1). Its linear heads ship inside
the package; only the ImageNet backbone (VGG16 or AlexNet conv features) has to come from disk, and
it is never downloaded. Backbone weights are looked up in this order:

1. ``<weights_dir>/vgg16_features.pth`` (or ``alexnet_features.pth``): a plain ``dict[str, Tensor]``
   keyed like ``torchvision.models.vgg16().features`` (``0.weight``, ``0.bias``, ``2.weight``, ...).
   A relative ``weights_dir`` is resolved against the repository root (the folder that holds
   ``main.py`` and ``sparseags/``), not the current directory, so the CLI and the GUI find the same files.
2. torchvision's download cache, ``torch.hub.get_dir()/checkpoints/vgg16-397923af.pth`` (or
   ``alexnet-owt-7be5be79.pth``); ``torch.hub.get_dir()`` honours ``TORCH_HOME`` and defaults to
   ``~/.cache/torch/hub``. Only the ``features.*`` entries are used.
3. Otherwise :class:`LpipsWeightsError`, whose one-sentence message says which file to put where.

Images are float RGB in [0, 1]; :class:`LpipsMetric` maps them to the [-1, 1] the network expects,
unless ``official_01_inputs`` reproduces SparseAGS's quirk of feeding [0, 1] directly.
"""

from __future__ import annotations

import os
import pickle
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lpips
import numpy as np
import torch
from torch import Tensor

from sparseags.errors import UserError

if TYPE_CHECKING:
    from sparseags.config import LpipsConfig

# The folder holding main.py and sparseags/; relative weight folders are resolved against it.
REPO_ROOT = Path(__file__).resolve().parent.parent


class LpipsWeightsError(UserError, RuntimeError):
    """LPIPS backbone weights are missing or unreadable; the message is one line naming the file."""


@dataclass(frozen=True)
class _BackboneFiles:
    label: str  # for messages, e.g. "LPIPS-VGG"
    offline_name: str  # file in weights_dir, keyed like torchvision's `.features`
    torchvision_name: str  # file in torchvision's hub cache, keyed like the full torchvision model


_BACKBONES: dict[str, _BackboneFiles] = {
    "vgg": _BackboneFiles("LPIPS-VGG", "vgg16_features.pth", "vgg16-397923af.pth"),
    "alex": _BackboneFiles("LPIPS-Alex", "alexnet_features.pth", "alexnet-owt-7be5be79.pth"),
}

# Where the message for missing weights suggests putting them when no folder was given (= LpipsConfig's default).
_DEFAULT_WEIGHTS_DIR = "../shared/weights/lpips"

# Process-wide cache: (net, device, backbone file) -> eval-mode lpips.LPIPS with frozen parameters.
_MODEL_CACHE: dict[tuple[str, str, str], lpips.LPIPS] = {}
_MODEL_CACHE_LOCK = threading.Lock()


def resolve_weights_dir(weights_dir: str | os.PathLike | None) -> Path | None:
    """The folder to search for offline weights; None or "" means "none" (torchvision cache only).

    ``~`` is expanded; a relative path is taken relative to :data:`REPO_ROOT`, not the cwd.
    """
    if weights_dir is None or str(weights_dir) == "":
        return None
    path = Path(weights_dir).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def torchvision_checkpoint_dir() -> Path:
    """torchvision's download cache (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_backbone_weights(net: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """The backbone weight file :func:`load_lpips` would use, following the module's resolution order.

    Raises :class:`LpipsWeightsError` if neither the offline file nor torchvision's cached file exists.
    """
    files = _backbone_files(net)
    offline_dir = resolve_weights_dir(weights_dir)
    if offline_dir is not None and (offline_dir / files.offline_name).is_file():
        return offline_dir / files.offline_name
    cached = torchvision_checkpoint_dir() / files.torchvision_name
    if cached.is_file():
        return cached
    where = offline_dir if offline_dir is not None else resolve_weights_dir(_DEFAULT_WEIGHTS_DIR)
    where = Path(os.path.normpath(where))
    raise LpipsWeightsError(
        f"{files.label} backbone weights not found: put {files.offline_name} in {where} "
        f"(see checkpoints/README.md) or torchvision's {files.torchvision_name} in {cached.parent}"
    )


class LpipsMetric:
    """A loaded LPIPS network plus the input convention; call it on two image batches.

    ``metric(img0, img1)`` takes ``[B, 3, H, W]`` or ``[H, W, 3]`` float images (torch or numpy) in
    [0, 1] and returns ``[B]`` distances (``[1]`` for a single image) on the model's device.
    By default it runs under ``torch.no_grad``; ``differentiable=True`` keeps the graph so it can
    serve as a loss (the network's own parameters are frozen, gradients flow to the images only).
    """

    def __init__(self, model: lpips.LPIPS, official_01_inputs: bool = False) -> None:
        self.model = model
        self.official_01_inputs = official_01_inputs

    @property
    def net(self) -> str:
        return self.model.pnet_type

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def with_inputs(self, official_01_inputs: bool) -> "LpipsMetric":
        """The same network (shared, not copied) with another input convention."""
        return LpipsMetric(self.model, official_01_inputs)

    def __call__(self, img0: Tensor | np.ndarray, img1: Tensor | np.ndarray, differentiable: bool = False) -> Tensor:
        x0 = self._as_nchw(img0, "img0")  # [B, 3, H, W]
        x1 = self._as_nchw(img1, "img1")  # [B, 3, H, W]
        if x0.shape != x1.shape:
            raise ValueError(f"LPIPS inputs differ in shape: {tuple(x0.shape)} vs {tuple(x1.shape)}")
        if not self.official_01_inputs:
            x0, x1 = x0 * 2.0 - 1.0, x1 * 2.0 - 1.0
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            dist = self.model(x0, x1)  # [B, 1, 1, 1]
        return dist.reshape(-1)  # [B]

    def _as_nchw(self, img: Tensor | np.ndarray, name: str) -> Tensor:
        x = torch.as_tensor(img).to(device=self.device, dtype=torch.float32)
        if x.ndim == 3 and x.shape[-1] == 3:
            x = x.permute(2, 0, 1).unsqueeze(0)  # [H, W, 3] -> [1, 3, H, W]
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS {name} must be [B, 3, H, W] or [H, W, 3], got {tuple(x.shape)}")
        return x


def load_lpips(
    net: str = "vgg",
    weights_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    official_01_inputs: bool = False,
) -> LpipsMetric:
    """LPIPS v0.1 with `net` ("vgg" or "alex") on `device`, backbone from disk (never downloaded).

    The network is built once per (net, device, weight file) and shared by every returned metric.
    Raises :class:`LpipsWeightsError` when the weights are missing, unreadable or do not fit.
    """
    source = find_backbone_weights(net, weights_dir)
    device = torch.device(device)
    key = (net, str(device), str(source))
    with _MODEL_CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = _build_model(net, source).to(device)
            _MODEL_CACHE[key] = model
    return LpipsMetric(model, official_01_inputs)


def lpips_from_config(cfg: "LpipsConfig", device: str | torch.device = "cpu") -> LpipsMetric:
    """:func:`load_lpips` with the fields of a :class:`sparseags.config.LpipsConfig`."""
    return load_lpips(cfg.net, cfg.weights_dir, device, cfg.official_01_inputs)


def clear_lpips_cache() -> None:
    """Forget every cached network (frees memory; the next :func:`load_lpips` rebuilds)."""
    with _MODEL_CACHE_LOCK:
        _MODEL_CACHE.clear()


def _backbone_files(net: str) -> _BackboneFiles:
    if net not in _BACKBONES:
        raise ValueError(f"unknown LPIPS net {net!r} (expected one of {sorted(_BACKBONES)})")
    return _BACKBONES[net]


def _build_model(net: str, source: Path) -> lpips.LPIPS:
    features = _read_feature_state_dict(source)
    # The lpips package would otherwise fetch the ImageNet backbone through torchvision (a download);
    # we ask for a randomly initialised trunk and overwrite every backbone tensor below.
    want_torchvision_download = False
    with warnings.catch_warnings():
        # lpips still passes torchvision's deprecated `pretrained=` argument.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not want_torchvision_download, verbose=False)
    _load_backbone(model, features, source)
    model.eval()
    model.requires_grad_(False)
    return model


def _read_feature_state_dict(source: Path) -> dict[str, Tensor]:
    """Backbone tensors keyed like torchvision's ``.features`` (``"0.weight"``), from either file layout."""
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise LpipsWeightsError(f"{source}: cannot read LPIPS backbone weights ({err.__class__.__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise LpipsWeightsError(f"{source}: expected a dict of tensors (a torch state dict)")
    if any(k.startswith("features.") for k in state):
        # torchvision's full-model checkpoint: keep the conv trunk, drop the classifier.
        return {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    return dict(state)


def _load_backbone(model: lpips.LPIPS, features: dict[str, Tensor], source: Path) -> None:
    """Load torchvision-indexed `features` into the lpips slices (which keep torchvision's indices), strictly."""
    used: set[str] = set()
    for name in ("slice1", "slice2", "slice3", "slice4", "slice5"):
        sl = getattr(model.net, name)
        part = {k: v for k, v in features.items() if k.split(".")[0] in sl._modules}
        try:
            sl.load_state_dict(part, strict=True)
        except RuntimeError as err:
            first_line = str(err).strip().splitlines()[-1].strip()
            raise LpipsWeightsError(f"{source}: backbone weights do not fit {name} of LPIPS-{model.pnet_type} ({first_line})") from None
        used.update(part)
    unused = sorted(set(features) - used)
    if unused:
        raise LpipsWeightsError(f"{source}: unexpected backbone keys for LPIPS-{model.pnet_type}: {', '.join(unused[:4])}")
