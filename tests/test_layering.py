"""The layers of docs/ARCHITECTURE.md ("Layering rules"), enforced.

1. The engine (every module of ``sparseags``, subpackages included) imports nothing from the debugger: it
   imports with ``gui`` and ``dearpygui`` blocked.
2. The debugger's panels depend on the window's port (``gui/port.py``), never on the window itself
   (``gui.app``), so ``gui/`` has no import cycle through the panels.
3. Every steppable engine class has the members of :class:`sparseags.steppable.Steppable`.
"""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

BLOCKED = ("gui", "dearpygui")

# Runs in a fresh interpreter: a meta-path finder refuses the GUI packages before anything is imported, then
# every engine module is imported; prints one line per failure.
_IMPORT_ALL = textwrap.dedent("""
    import importlib, pkgutil, sys, traceback

    BLOCKED = {blocked!r}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"layering: the engine imported {{name!r}}")
            return None

    sys.meta_path.insert(0, Block())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]

    import sparseags

    failures, count = [], 0

    def onerror(name):
        failures.append(f"{{name}}: " + traceback.format_exc(limit=1).strip().splitlines()[-1])

    for info in pkgutil.walk_packages(sparseags.__path__, "sparseags.", onerror=onerror):
        count += 1
        try:
            importlib.import_module(info.name)
        except BaseException as err:
            failures.append(f"{{info.name}}: {{type(err).__name__}}: {{err}}")
    leaked = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
    if leaked:
        failures.append(f"blocked modules in sys.modules: {{leaked}}")
    print(f"imported {{count}} modules")
    for line in failures:
        print("FAIL", line)
""").format(blocked=BLOCKED)


def test_engine_imports_without_the_gui():
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    failures = [line[5:] for line in result.stdout.splitlines() if line.startswith("FAIL ")]
    assert not failures, "engine modules that need the GUI (or fail to import):\n" + "\n".join(failures)
    count = int(result.stdout.split("imported ", 1)[1].split()[0])
    assert count >= 25, result.stdout  # the walk really visited the package (and its subpackages)


def _imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file of `package`, TYPE_CHECKING blocks included."""
    parts = package.split(".")
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                module = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.append((node.lineno, module))
            names += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return names


def _gui_app_imports(folder: Path, package: str = "gui.panels") -> list[str]:
    """One line per import of gui.app in the modules of `folder` (the package `package`)."""
    found = {}
    for path in sorted(folder.glob("*.py")):
        for line, name in _imported_modules(path, package):
            if name == "gui.app" or name.startswith("gui.app."):
                found.setdefault((path.name, line), f"{path.name}:{line} imports {name}")
    return [found[key] for key in sorted(found)]


def test_import_scan_sees_every_form(tmp_path):
    (tmp_path / "probe.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gui.app import DebuggerApp\n"
        "from .. import app\nfrom ..app import run_app\nimport gui.app\nfrom gui import port\nfrom . import cameras\n"
    )
    found = _gui_app_imports(tmp_path)
    assert [f.split(" ")[0] for f in found] == ["probe.py:3", "probe.py:4", "probe.py:5", "probe.py:6"], found


def test_panels_do_not_import_the_window():
    found = _gui_app_imports(REPO / "gui" / "panels")
    assert not found, "panels must type against gui.port.WindowPort, not gui.app:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "module, name",
    [
        ("sparseags.recon", "Reconstruction"),
        ("sparseags.outliers", "LeaveOneOut"),
        ("sparseags.pose_search", "PoseSearch"),
        ("sparseags.pipeline", "Arbitration"),
        ("sparseags.pipeline", "Pipeline"),
    ],
)
def test_steppable_classes_have_the_protocol_members(module, name):
    import importlib

    from sparseags.steppable import Steppable

    cls = getattr(importlib.import_module(module), name)
    members = [m for m in ("done", "step", "snapshot", "state_dict", "load_state_dict") if m in dir(Steppable)]
    missing = [m for m in members if not hasattr(cls, m)]
    if name == "Arbitration":  # rebuilt by its owner: Arbitration.from_state(pipeline, state)
        missing = [m for m in missing if m != "load_state_dict"]
        missing += [] if hasattr(cls, "from_state") else ["from_state"]
    assert not missing, f"{module}.{name} lacks {missing}"
