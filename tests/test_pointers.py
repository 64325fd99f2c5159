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
