"""Runs each in-process debugger-window test module in its own pytest process (see tests/conftest.py).

One DearPyGui window per process is what the product does; several windows built and destroyed in one
process crash DearPyGui. The child runs are full pytest runs: their failures, with the last lines of
their output, fail the matching test here; without a display their window tests skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import WINDOW_TEST_MODULES

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("module", WINDOW_TEST_MODULES)
def test_window_module_in_its_own_process(module: str) -> None:
    env = dict(os.environ, SPARSEAGS_WINDOW_TESTS="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(TESTS / module)],
        cwd=TESTS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    summary = (result.stdout + result.stderr).strip().splitlines()
    print(f"{module}: {summary[-1] if summary else 'no output'}")
    assert result.returncode == 0, "\n".join(summary[-60:])
