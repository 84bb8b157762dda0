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


# -------------------------------------------------------------------------------------------------
# 4. no import cycle inside the engine (function-level imports included)


def _engine_import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the engine modules it imports anywhere in its body (``from x import y`` counts x and x.y)."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - (node.level - 1)] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
            for target in targets:
                # a package's __init__ re-exports its children: a child importing its own package is no cycle
                if target in modules and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_sees_a_function_level_cycle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import f\n")
    (package / "b.py").write_text("def f():\n    from .a import g\n")
    (package / "c.py").write_text("import pkg.a\n")
    assert _cycles(_engine_import_graph(package)) == [["pkg.a", "pkg.b"]]


def test_engine_has_no_import_cycle():
    assert _cycles(_engine_import_graph(REPO / "sparseags")) == []
