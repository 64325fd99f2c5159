"""The rooms of the house and the doors between them, read from the import graph
(every ``import`` of every module, at any depth of the code, by its AST).

- physics (numpy: the model of the GPUs) imports only physics and the contract;
- the contract (specs, the snapshot schema and its names, identities, versions,
  settings) imports only the contract: everyone may lean on it;
- the views (fake-nvidia-smi, fake-gpustat, fake-nvitop, the NVML layer) import no
  physics and no numpy, and neither does anything they import;
- numpy is imported by physics only.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fakehw"
PHYSICS = {"fakehw.devices", "fakehw.thermal", "fakehw.workload", "fakehw.noise",
           "fakehw.hostload"}  # fmt: skip
CONTRACT = {"fakehw", "fakehw.specs", "fakehw.snapshot", "fakehw.identity", "fakehw.versions",
            "fakehw.config", "fakehw.tcpaddress"}  # fmt: skip
# A door still open, to be closed (issue "The house"): the simulator writes the physics'
# state as .npz.
NUMPY_OUTSIDE_PHYSICS = {"fakehw.simulator"}
VIEW_PACKAGES = ("fakehw.smi", "fakehw.gpustat", "fakehw.nvitop", "fakehw.nvml", "fakehw.views")
VIEW_ENTRY_POINTS = ["fakehw.smi.cli", "fakehw.gpustat.cli", "fakehw.nvitop.cli",
                     "fakehw.nvitop.app", "fakehw.nvml.library", "fakehw.nvml.hook"]  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__main__.py"}


@cache
def imports(name: str) -> frozenset[str]:
    """What ``name`` imports, wherever in the module (a function's body too)."""
    tree = ast.parse(MODULES[name].read_text())
    found = set()
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1],
                                 *([base] if base else [])])  # fmt: skip
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # a submodule, maybe
    return frozenset(found)


def ours(name: str) -> set[str]:
    """The package's modules ``name`` imports directly."""
    return {m for m in imports(name) if m in MODULES}


def reach(name: str) -> set[str]:
    """Every module of the package ``name`` imports, at any remove."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for found in ours(todo.pop()):
            if found not in seen:
                seen.add(found)
                todo.append(found)
    return seen


@pytest.mark.parametrize("name", sorted(PHYSICS))
def test_physics_imports_only_physics_and_the_contract(name: str) -> None:
    assert ours(name) <= PHYSICS | CONTRACT, ours(name) - PHYSICS - CONTRACT


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_the_contract_imports_only_itself(name: str) -> None:
    assert ours(name) <= CONTRACT, ours(name) - CONTRACT


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith(VIEW_PACKAGES)))
def test_a_view_reaches_no_physics(name: str) -> None:
    assert not reach(name) & PHYSICS, reach(name) & PHYSICS


def test_numpy_is_physics_only() -> None:
    users = {name for name in MODULES if any(m.split(".")[0] == "numpy" for m in imports(name))}
    assert users <= PHYSICS | NUMPY_OUTSIDE_PHYSICS, users - PHYSICS - NUMPY_OUTSIDE_PHYSICS


@pytest.mark.parametrize("entry", VIEW_ENTRY_POINTS)
def test_a_viewer_starts_without_numpy_or_the_physics(entry: str) -> None:
    """What really loads when a viewer starts (the AST walk above, checked in a process)."""
    code = (
        f"import sys, {entry}\n"
        "loaded = [m for m in sys.modules if m == 'numpy' or m in "
        f"{sorted(PHYSICS)!r}]\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)  # fmt: skip
    assert result.stdout.strip() == "[]", result.stdout
