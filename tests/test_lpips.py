"""LPIPS with offline weights: reference values, weight resolution, input convention, gradients."""

from __future__ import annotations

import warnings
from pathlib import Path

import lpips
import numpy as np
import pytest
import torch

from sparseags.lpips_model import (
    REPO_ROOT,
    LpipsMetric,
    LpipsWeightsError,
    find_backbone_weights,
    load_lpips,
    resolve_weights_dir,
)

SHARED_LPIPS = REPO_ROOT.parent / "shared" / "weights" / "lpips"
needs_shared = pytest.mark.skipif(
    not (SHARED_LPIPS / "vgg16_features.pth").is_file(),
    reason=f"shared LPIPS weights not found at {SHARED_LPIPS}",
)

# d(ref, p0), d(ref, p1) from shared/weights/lpips/README.md (official lpips==0.1.4 values).
REFERENCE = {"alex": (0.7219, 0.1376), "vgg": (0.5686, 0.4217)}


def _reference_images() -> dict[str, torch.Tensor]:
    import imageio.v3 as iio

    folder = SHARED_LPIPS / "reference_images"
    return {
        name: torch.from_numpy(iio.imread(folder / f"ex_{name}.png")[..., :3].astype(np.float32) / 255.0)  # [H, W, 3]
        for name in ("ref", "p0", "p1")
    }


@pytest.fixture(scope="module")
def random_alex() -> LpipsMetric:
    """Randomly initialised AlexNet trunk with the package's linear heads (no files, no download)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    return LpipsMetric(model.eval().requires_grad_(False))


def _images(seed: int, batch: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, 3, size, size, generator=gen)
    b = (a + 0.3 * torch.rand(batch, 3, size, size, generator=gen)).clamp(0, 1)
    return a, b


@needs_shared
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_shared_weights_reproduce_reference_values(net: str) -> None:
    metric = load_lpips(net, SHARED_LPIPS)
    images = _reference_images()
    d0 = metric(images["ref"], images["p0"]).item()
    d1 = metric(images["ref"], images["p1"]).item()
    assert d0 == pytest.approx(REFERENCE[net][0], abs=1e-3)
    assert d1 == pytest.approx(REFERENCE[net][1], abs=1e-3)


@needs_shared
def test_torchvision_cache_is_used_when_weights_dir_lacks_the_file(tmp_path: Path, monkeypatch) -> None:
    # torchvision's full-model checkpoint layout: "features.*" plus a classifier that must be ignored.
    features = torch.load(SHARED_LPIPS / "alexnet_features.pth", map_location="cpu", weights_only=True)
    full = {f"features.{k}": v for k, v in features.items()}
    full["classifier.1.weight"] = torch.zeros(4096, 9216)
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(full, hub / "alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    assert find_backbone_weights("alex", tmp_path / "empty") == hub / "alexnet-owt-7be5be79.pth"
    assert find_backbone_weights("alex", SHARED_LPIPS) == SHARED_LPIPS / "alexnet_features.pth"  # offline first
    images = _reference_images()
    assert load_lpips("alex", None)(images["ref"], images["p1"]).item() == pytest.approx(REFERENCE["alex"][1], abs=1e-3)


@pytest.mark.parametrize("net, offline, cached", [("vgg", "vgg16_features.pth", "vgg16-397923af.pth"),
                                                   ("alex", "alexnet_features.pth", "alexnet-owt-7be5be79.pth")])
def test_missing_weights_raise_one_sentence(tmp_path: Path, monkeypatch, net: str, offline: str, cached: str) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(LpipsWeightsError) as info:
        load_lpips(net, tmp_path / "nothing_here")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"LPIPS-{'VGG' if net == 'vgg' else 'Alex'} backbone weights not found")
    assert f"put {offline} in {tmp_path / 'nothing_here'}" in message
    assert f"{cached} in {tmp_path / 'torch_home' / 'hub' / 'checkpoints'}" in message


def test_unreadable_or_mismatched_weights_name_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    (tmp_path / "alexnet_features.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(LpipsWeightsError, match="alexnet_features.pth: cannot read"):
        load_lpips("alex", tmp_path)
    torch.save({"0.weight": torch.zeros(64, 3, 3, 3), "0.bias": torch.zeros(64)}, tmp_path / "alexnet_features.pth")
    with pytest.raises(LpipsWeightsError, match="alexnet_features.pth: backbone weights do not fit slice1"):
        load_lpips("alex", tmp_path)


def test_relative_weights_dir_is_resolved_against_repo_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_weights_dir("../shared/weights/lpips") == REPO_ROOT / "../shared/weights/lpips"
    assert resolve_weights_dir(tmp_path) == tmp_path
    assert resolve_weights_dir("") is None and resolve_weights_dir(None) is None
    with pytest.raises(ValueError, match="unknown LPIPS net 'squeeze'"):
        find_backbone_weights("squeeze", None)


@needs_shared
def test_model_is_cached_per_net_and_device() -> None:
    first = load_lpips("alex", SHARED_LPIPS)
    second = load_lpips("alex", str(SHARED_LPIPS), official_01_inputs=True)
    assert first.model is second.model
    assert first.official_01_inputs is False and second.official_01_inputs is True


def test_input_range_flag_changes_the_value(random_alex: LpipsMetric) -> None:
    a, b = _images(1)
    scaled = random_alex(a, b)
    raw = random_alex.with_inputs(True)(a, b)
    assert scaled.shape == (2,)
    # [-1, 1] path == the package's own normalize=True; [0, 1] path == images fed unchanged.
    assert torch.allclose(scaled, random_alex.model(a, b, normalize=True).reshape(-1), atol=1e-6)
    assert torch.allclose(raw, random_alex.model(a, b).reshape(-1), atol=1e-6)
    assert (scaled - raw).abs().min() > 1e-4


def test_identical_images_give_zero_and_layouts_agree(random_alex: LpipsMetric) -> None:
    a, b = _images(2, batch=1)
    assert random_alex(a, a).abs().max() < 1e-6
    d_nchw = random_alex(a, b)
    d_hwc = random_alex(a[0].permute(1, 2, 0), b[0].permute(1, 2, 0).numpy())  # [H, W, 3], torch and numpy
    assert d_nchw.item() > 1e-4
    assert torch.allclose(d_nchw, d_hwc, atol=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        random_alex(a, b[..., :32])
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\] or \[H, W, 3\]"):
        random_alex(a[:, :2], b[:, :2])


def test_gradients_only_on_request(random_alex: LpipsMetric) -> None:
    a, b = _images(3)
    a.requires_grad_(True)
    assert random_alex(a, b).requires_grad is False
    loss = random_alex(a, b, differentiable=True).sum()
    loss.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert all(p.grad is None for p in random_alex.model.parameters())


def test_product_code_never_spells_random_trunk_flag() -> None:
    # The CI hook greps all of sparseags/; this checks the modules that build LPIPS.
    for path in (REPO_ROOT / "sparseags" / "lpips_model.py", REPO_ROOT / "sparseags" / "scoring.py"):
        assert "pnet_rand=True" not in path.read_text(encoding="utf-8"), path
