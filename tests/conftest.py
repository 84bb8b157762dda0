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
