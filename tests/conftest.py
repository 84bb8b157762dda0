"""Shared test setup: the same thread policy as main.py (set before torch is imported)."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Under pytest-xdist (the README's `-n 2`) the workers run side by side, one per core: each gets one torch /
# numba thread (inherited by its subprocesses), as `main.py eval --jobs` does, instead of two pools of two
# threads that would wait on each other at every barrier.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[_name] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Tests never reach outside the clone for LPIPS backbones: only lpips.weights_dir (checkpoints/lpips) and
# torchvision's cache, never ../shared, torchvision's download or the package index (tests of those fake them).
# Set before anything runs, so subprocesses (main.py, window tests) inherit it.
os.environ["SPARSEAGS_LPIPS_SOURCES"] = "dir,hub"
# On-disk caches (learned-match pairs) go to a folder of this test session, never the user's ~/.cache, and
# start empty, so no test depends on what an earlier session measured.
if "SPARSEAGS_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["SPARSEAGS_CACHE_DIR"] = tempfile.mkdtemp(prefix="sparseags-test-cache-")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """With ``--dist loadgroup`` (README): one xdist group per test file, so a worker builds a module's
    fixtures once, and one per window module run by tests/test_gui_windows.py, so those subprocesses
    spread over the workers. The slowest groups (the window modules, listed first) start first."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        group = item.nodeid.split("::")[0]
        module = getattr(getattr(item, "callspec", None), "params", {}).get("module")
        if group.endswith("test_gui_windows.py") and module:
            group = f"window-{module}"
        item.add_marker(pytest.mark.xdist_group(group))
    if XDIST_WORKER is not None or config.pluginmanager.hasplugin("xdist"):
        items.sort(key=lambda item: 0 if "test_gui_windows.py" in item.nodeid else 1)


def pytest_configure(config):
    # CUDA-only tests carry @pytest.mark.cuda (beside their skipif): `pytest -m cuda` runs just them,
    # e.g. from scripts/gpu_check.sh on a machine with a GPU.
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one); select with -m cuda")
    # Tests that need the real LPIPS backbones skip, with the reason, when they are not in checkpoints/lpips or
    # torchvision's cache; `python -m sparseags.lpips_model --net alex vgg` fetches them.
    config.addinivalue_line(
        "markers", "real_weights: needs the real LPIPS backbones (skipped, with the reason, without)"
    )


@pytest.fixture(scope="session")
def random_alex():
    """LPIPS-Alex with a randomly initialised trunk (seed 0) and the package's linear heads: no files, no download.

    Built under a forked RNG, so the global torch seed of the test that first asks for it is left alone.
    """
    import warnings

    import lpips
    import torch

    from sparseags.lpips_model import LpipsMetric

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(0)
        warnings.simplefilter("ignore", UserWarning)  # lpips passes torchvision's deprecated `pretrained=`
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    return LpipsMetric(model.eval().requires_grad_(False))


@pytest.fixture(scope="session")
def random_alex_weights_dir(tmp_path_factory):
    """A folder for ``lpips.weights_dir`` holding a randomly initialised (seed 0) ``alexnet_features.pth``.

    For subprocess runs of main.py, which load LPIPS through the normal loader: no real weights, no download.
    """
    import torch
    import torchvision

    folder = tmp_path_factory.mktemp("lpips_random")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        features = torchvision.models.alexnet(weights=None).features.state_dict()
    torch.save(features, folder / "alexnet_features.pth")
    return folder


@pytest.fixture(scope="session")
def real_alex():
    """LPIPS-Alex with the real backbone when it is present locally (never fetched in tests); skips otherwise."""
    from sparseags.lpips_model import DEFAULT_WEIGHTS_DIR, LpipsWeightsError, load_lpips

    try:
        return load_lpips("alex", DEFAULT_WEIGHTS_DIR)
    except LpipsWeightsError as err:
        pytest.skip(f"real LPIPS weights absent ({err}); `python -m sparseags.lpips_model --net alex vgg` fetches them")


# Modules that build the DearPyGui window in-process. DearPyGui can crash (segfault) when a later module builds
# a second window in the same process, so `pytest tests` runs each of them in its own process through
# tests/test_gui_windows.py, which sets SPARSEAGS_WINDOW_TESTS=1 for the child run.
WINDOW_TEST_MODULES = [
    "test_gui_app.py",
    "test_gui_decisions.py",
    "test_gui_import.py",
    "test_gui_orbit.py",
    "test_gui_panels.py",
    "test_gui_runs.py",
]
collect_ignore = [] if os.environ.get("SPARSEAGS_WINDOW_TESTS") else list(WINDOW_TEST_MODULES)
