"""Every pointer in the code and the docs leads somewhere in this repository: a path a
docstring, comment or page names exists (globs match something), the captures are
cited where they are (``tests/real/``), and a ``fakehw COMMAND`` they mention is one
the command has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fakehw.tools.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    *sorted((ROOT / "fakehw").rglob("*.py")),
    *sorted((ROOT / "bench").glob("*.py")),
    *sorted((ROOT / "tests").glob("*.py")),
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "README.md",
]
# a path in quotes or backticks, from one of the repository's top directories
PATH = re.compile(r"[`'\"]((?:tests|docs|bench|fakehw|bin|\.ci)/[A-Za-z0-9_./*-]*[A-Za-z0-9_/*])")
COMMAND = re.compile(r"``fakehw ([a-z][a-z-]+)")


def cited(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    found = []
    for source in SOURCES:
        if source == Path(__file__).resolve():
            continue
        for match in pattern.finditer(source.read_text(errors="replace")):
            found.append((str(source.relative_to(ROOT)), match.group(1)))
    return found


@pytest.mark.parametrize(("source", "path"), sorted(set(cited(PATH))))
def test_a_cited_path_exists(source: str, path: str) -> None:
    if "*" in path:
        assert list(ROOT.glob(path)), f"{source} cites {path}: nothing matches"
    else:
        assert (ROOT / path).exists(), f"{source} cites {path}, which is not in the repo"


def test_the_captures_are_cited_where_they_live() -> None:
    outside = [source for source in SOURCES if "shared/real" in source.read_text()]
    assert [s for s in outside if s != Path(__file__).resolve()] == []


def test_a_cited_fakehw_command_exists() -> None:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if a.dest == "command"]
    commands = set(subparsers.choices)  # type: ignore[union-attr]
    missing = [(source, name) for source, name in cited(COMMAND) if name not in commands]
    assert missing == []


# a module named in double backticks: ``fakehw.service.ops``, ``fakehw.devices.Cluster``
MODULE = re.compile(r"``(fakehw(?:\.[a-z_]+)+)")


@pytest.mark.parametrize(("source", "name"), sorted(set(cited(MODULE))))
def test_a_cited_module_exists(source: str, name: str) -> None:
    """A dotted name resolves to a module, or to something a module defines."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            if cut < len(parts):  # an attribute of that module: defined in its text
                text = (base.with_suffix(".py") if base.with_suffix(".py").is_file()
                        else base / "__init__.py").read_text()  # fmt: skip
                assert re.search(rf"\b{parts[cut]}\b", text), f"{source} cites {name}"
            return
    raise AssertionError(f"{source} cites {name}, which is no module of the repo")


def test_the_readme_architecture_table_is_the_tree() -> None:
    """Each row of the README's table names paths of one room, and together the rows
    cover every module of the package once: a reader can check one against the other."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from test_layers import MODULES, room

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Architecture") : readme.index("## How real is it")]
    rows = re.findall(r"^\| (\w+) \| (.+?) \| .+ \|$", table, re.MULTILINE)
    covered: dict[str, str] = {}
    for row_room, paths in rows[1:]:  # the header row aside
        for path in re.findall(r"`(fakehw/[^`]*)`", paths):
            assert (ROOT / path).exists(), path
            prefix = path.removesuffix(".py").removesuffix("/").replace("/", ".")
            for name in MODULES:
                if name == prefix or (name.startswith(prefix + ".") and path.endswith("/")):
                    assert name not in covered, f"{name} is in two rows"
                    assert room(name) == row_room, (
                        f"{name} is {room(name)}, the table says {row_room}"
                    )
                    covered[name] = path
    missing = sorted(set(MODULES) - set(covered) - {"fakehw"})
    assert missing == [], f"the README's table does not say where these live: {missing}"
