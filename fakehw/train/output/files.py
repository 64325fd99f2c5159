"""Writing a run's files: small ones with their real contents, large binary ones
(weights, optimizer states) as sparse files of the size the log states.

A sparse file's size costs no disk: ``truncate`` extends it without writing a block
(``st_blocks`` stays near 0). On a file system that would allocate them anyway
(some network and FUSE file systems do), the first such file is taken back and no
more are written: the log still states their sizes, and the writer says so once.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Files = list[tuple[str, int]]

# A sparse file this large that holds more than this share of its size on disk was
# allocated after all: no more large ones are written.
SPARSE_FROM_BYTES = 1 << 20
ALLOCATED_SHARE = 0.5


def disk_bytes(path: Path) -> int:
    """What a file really uses on disk (its blocks), not its apparent size."""
    return path.stat().st_blocks * 512


@dataclass
class FileWriter:
    """Writes files under a run's output directory, and knows whether its file system
    keeps sparse files."""

    root: Path
    notify: Callable[[str], None]  # one line for the console
    sparse_ok: bool | None = None  # None: not known until the first sparse file

    def write_text(self, path: Path, text: str) -> int:
        return self.write_bytes(path, text.encode())

    def write_bytes(self, path: Path, data: bytes) -> int:
        """Write ``data`` to ``path`` whole: to a temporary name, then renamed, so a
        reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        partial.replace(path)
        return len(data)

    def write_sparse(self, path: Path, size: int, head: bytes = b"") -> bool:
        """A file of ``size`` bytes that uses no disk beyond ``head`` (its first bytes: a
        safetensors header); False if the file system would allocate it (then nothing is
        written, and the console is told once)."""
        if self.sparse_ok is False and size >= SPARSE_FROM_BYTES:
            return False  # small ones cost little even where the zeros are allocated
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as file:
            file.write(head)
            file.truncate(size)
        if self.sparse_ok is None and size >= SPARSE_FROM_BYTES:
            self.sparse_ok = disk_bytes(path) < len(head) + ALLOCATED_SHARE * size
            if not self.sparse_ok:
                path.unlink()
                self.notify(
                    f"{self.root} is on a file system that allocates sparse files: the "
                    "weight and optimizer files are not written (the log and run.json give "
                    "their sizes)"
                )
                return False
        return True

    def write_files(
        self,
        directory: Path,
        files: Files,
        contents: dict[str, bytes],
        heads: dict[str, bytes] | None = None,
    ) -> Files:
        """The files of one directory: those in ``contents`` with their contents, the
        others sparse (after their ``heads``, if any). Returns the files with the sizes
        written."""
        heads = heads or {}
        written: Files = []
        for name, size in files:
            target = directory / name
            if name in contents:
                written.append((name, self.write_bytes(target, contents[name])))
            else:  # binary state (weights, optimizer, RNG, scheduler): zeros, sparse
                self.write_sparse(target, size, heads.get(name, b""))
                written.append((name, size))
        return written

    def remove_tree(self, directory: Path) -> None:
        """Delete a directory this writer made (a rotated checkpoint)."""
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class Entry:
    """A file (or symlink) under a run's root: its relative path and what it takes."""

    path: str
    bytes: int  # apparent size
    on_disk: int  # its blocks
    link: bool


def entries(root: Path) -> list[Entry]:
    """Everything under ``root`` but directories, by path, symlinks not followed."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            full = os.path.join(folder, name)
            stat = os.lstat(full)
            found.append(Entry(os.path.relpath(full, root), stat.st_size,
                               stat.st_blocks * 512, os.path.islink(full)))  # fmt: skip
    return sorted(found, key=lambda entry: entry.path)


def usage(listed: list[Entry]) -> tuple[int, int, int]:
    """(entries, apparent bytes, bytes on disk) of a listing."""
    return (len(listed), sum(e.bytes for e in listed), sum(e.on_disk for e in listed))
