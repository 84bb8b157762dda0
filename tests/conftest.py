"""Shared test setup: the same thread policy as main.py (set before torch is imported)."""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pytest_configure(config):
    # CUDA-only tests carry @pytest.mark.cuda (beside their skipif): `pytest -m cuda` runs just them,
    # e.g. from scripts/gpu_check.sh on a machine with a GPU.
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one); select with -m cuda")


# Modules that build the DearPyGui window in-process. DearPyGui can crash (segfault) when a later module builds
# a second window in the same process, so `pytest tests` runs each of them in its own process through
# tests/test_gui_windows.py, which sets SPARSEAGS_WINDOW_TESTS=1 for the child run.
WINDOW_TEST_MODULES = ["test_gui_app.py", "test_gui_decisions.py", "test_gui_import.py", "test_gui_orbit.py",
                       "test_gui_panels.py"]
collect_ignore = [] if os.environ.get("SPARSEAGS_WINDOW_TESTS") else list(WINDOW_TEST_MODULES)
