"""Every pointer in the code and the docs leads somewhere in this repository: a path a
docstring, comment or page names exists (globs match something), the captures are
cited where they are (``tests/real/``), and a ``fakehw COMMAND`` they mention is one
the command has."""

from __future__ import annotations

import ast
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


# a module, or a name in one, as code and pages cite it: ``fakehw.service.ops.TCP_OPS``
# (double backticks in docstrings; single ones count in the Markdown pages)
MODULE = re.compile(r"``(fakehw(?:\.[A-Za-z_][A-Za-z0-9_]*)+)|(?<!`)`(fakehw(?:\.[A-Za-z_]\w*)+)`")


def _defined(tree: ast.Module, name: str) -> ast.AST | None:
    """The top-level definition of ``name`` in a module (class, function, assignment, import)."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name == name:
                return node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return node
        elif isinstance(node, ast.Import | ast.ImportFrom) and any(
            (alias.asname or alias.name.split(".")[0]) == name for alias in node.names
        ):
            return node
    return None


def module_citations() -> list[tuple[str, str]]:
    found = []
    for source in [s for s in SOURCES if s != Path(__file__).resolve()]:
        for match in MODULE.finditer(source.read_text(errors="replace")):
            name = match.group(1) or match.group(2)
            if match.group(2) and source.suffix != ".md":
                continue  # single backticks are Markdown's; in code they are prose
            found.append((str(source.relative_to(ROOT)), name.rstrip(".")))
    return found


@pytest.mark.parametrize(("source", "name"), sorted(set(module_citations())))
def test_a_cited_module_exists(source: str, name: str) -> None:
    """A dotted name resolves to a module of the repo, then to what it defines (a class's
    methods and attributes too)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        path = (
            base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        )
        if not path.is_file():
            continue
        rest = parts[cut:]
        if not rest:
            return
        node = _defined(ast.parse(path.read_text()), rest[0])
        assert node is not None, f"{source} cites {name}: {rest[0]} is not in {path.name}"
        if len(rest) > 1:
            assert isinstance(node, ast.ClassDef), f"{source} cites {name}"
            names = {n.name for n in ast.walk(node) if isinstance(n, ast.FunctionDef)}
            names |= {t.attr for t in ast.walk(node) if isinstance(t, ast.Attribute)}
            names |= {t.id for t in ast.walk(node) if isinstance(t, ast.Name)}
            assert rest[1] in names, f"{source} cites {name}: {rest[1]} is not in {rest[0]}"
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
