"""The rooms of the house and the doors between them, read from the import graph
(every ``import`` of every module, at any depth of the code, by its AST).

A module's room is its path (see ``room``):

- physics, the top of the package (``fakehw/devices.py``, ``fakehw/thermal.py`` ...:
  numpy, the model of the GPUs), imports only physics and the contract;
- the contract (``fakehw/contract/``, and ``fakehw/specs.py`` where the design names
  it) imports only the contract: everyone may lean on it;
- ``fakehw/programs/`` (entry points, signals, argument types) imports only itself and
  the contract: every program loads it first;
- the service (``fakehw/service/``: daemon, protocol, client) serves the physics and
  imports no view, tool or training log;
- the views (fake-nvidia-smi, fake-gpustat, fake-nvitop, the NVML layer and what they
  share in ``fakehw/views/``) and the training log import no physics and no numpy,
  and neither does anything they import; only the tools may import anything;
- numpy is imported by physics only.

The AST sees ``import`` statements; ``programs/launch.py`` loads each program's module
by its name (``importlib``), which is the one way programs/ reaches the other rooms.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fakehw"
VIEW_PACKAGES = ("smi", "gpustat", "nvitop", "nvml", "dcgm", "dcgmi", "views")
# what each room may import besides itself
MAY_IMPORT = {
    "physics": {"contract"},
    "contract": set(),
    "programs": {"contract"},
    "service": {"physics", "contract"},
    "views": {"contract", "programs", "service"},
    "train": {"contract", "programs", "service"},
    "tools": {"physics", "contract", "programs", "service", "views", "train"},
}
VIEW_ENTRY_POINTS = ["fakehw.smi.cli", "fakehw.gpustat.cli", "fakehw.nvitop.cli",
                     "fakehw.nvitop.app", "fakehw.nvml.library", "fakehw.nvml.hook",
                     "fakehw.dcgmi.cli"]  # fmt: skip


def room(name: str) -> str:
    """The room of module ``name``, from its path alone."""
    parts = name.split(".")
    if name in ("fakehw", "fakehw.specs"):
        return "contract"
    if len(parts) == 2 and not (PACKAGE / parts[1]).is_dir():
        return "physics"
    return "views" if parts[1] in VIEW_PACKAGES else parts[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# (``__main__.py`` files are the ``python -m`` doors, three lines each into programs/launch.py)
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


def test_every_module_has_a_known_room() -> None:
    assert {room(name) for name in MODULES} == set(MAY_IMPORT)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_imports_only_what_its_room_may(name: str) -> None:
    allowed = MAY_IMPORT[room(name)] | {room(name)}
    wrong = {found for found in ours(name) if room(found) not in allowed}
    assert not wrong, f"{name} ({room(name)}) imports {sorted(wrong)}"


# a viewer that lives with the tools, being a subcommand: Prometheus's view of the cluster
VIEWERS_AMONG_THE_TOOLS = ["fakehw.tools.exporter"]


@pytest.mark.parametrize(
    "name",
    sorted(m for m in MODULES if room(m) in ("views", "train")) + VIEWERS_AMONG_THE_TOOLS,
)
def test_views_and_the_training_log_reach_no_physics(name: str) -> None:
    reached = {found for found in reach(name) if room(found) == "physics"}
    assert not reached, reached


def test_viewers_reach_the_daemon_through_one_source() -> None:
    """One seam to the daemon (as gpustat has one to the driver): ``views/source.py``."""
    through_client = {name for name in MODULES if room(name) == "views"
                      and "fakehw.service.client" in imports(name)}  # fmt: skip
    assert through_client == {"fakehw.views.source"}, through_client


def test_numpy_is_physics_only() -> None:
    users = {name for name in MODULES if any(m.split(".")[0] == "numpy" for m in imports(name))}
    assert {room(name) for name in users} == {"physics"}, users


@pytest.mark.parametrize("entry", VIEW_ENTRY_POINTS)
def test_a_viewer_starts_without_numpy_or_the_physics(entry: str) -> None:
    """What really loads when a viewer starts (the AST walk above, checked in a process)."""
    code = (
        f"import sys, {entry}\n"
        "loaded = [m for m in sys.modules if m == 'numpy' or m in "
        f"{sorted(m for m in MODULES if room(m) == 'physics')!r}]\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)  # fmt: skip
    assert result.stdout.strip() == "[]", result.stdout


ONE_SHOT = {"table": [], "query": ["--query-gpu=index,power.draw", "--format=csv"], "list": ["-L"]}


def _loaded(argv: list[str], env: dict[str, str]) -> set[str]:
    """The modules ``python -S argv`` loads (no site: what the program itself loads)."""
    result = subprocess.run([sys.executable, "-S", "-X", "importtime", *argv], env=env,
                            capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    rows = [
        line.split("|") for line in result.stderr.splitlines() if line.startswith("import time:")
    ]
    return {row[2].strip() for row in rows[1:] if len(row) == 3}  # the header row aside


@pytest.mark.parametrize("command", list(ONE_SHOT))
def test_a_one_shot_nvidia_smi_loads_only_what_startup_allows(
    runtime_dir: Path, command: str
) -> None:
    """``fakehw.programs.startup`` owns the one-shot path's imports; this holds them."""
    from fakehw.programs.startup import ONE_SHOT_ROOMS, ONE_SHOT_STDLIB

    env = {**__import__("os").environ, "PYTHONPATH": str(PACKAGE.parent)}
    assert subprocess.run([sys.executable, "-m", "fakehw", "daemon", "start"], env=env,
                          capture_output=True, check=False).returncode == 0  # fmt: skip
    floor = _loaded(["-c", f"import site, {', '.join(ONE_SHOT_STDLIB)}"], env)
    loaded = _loaded([str(PACKAGE.parent / "bin" / "fake-nvidia-smi"), *ONE_SHOT[command]], env)
    ours = {m for m in loaded if m == "fakehw" or m.startswith("fakehw.")}
    assert loaded - ours - floor == set(), "standard library beyond fakehw.programs.startup"
    wrong = {m for m in ours if m not in ("fakehw", "fakehw.service")
             and not m.startswith(ONE_SHOT_ROOMS)}  # fmt: skip
    assert not wrong, wrong
