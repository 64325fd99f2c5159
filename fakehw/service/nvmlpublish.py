"""The NVML snapshot files (``fakehw.contract.nvmlshm``): the daemon rewrites one per
node each tick, for as long as a process that asked for it (``publish``) lives.

A lease is a process known by its PID and start time (``pidwatch``), so a PID the
kernel hands to another program holds no lease. With no lease left, a node's file is
no longer written (a process that maps it later asks again). The daemon's stop marks
every file closed, so a reader asks the next daemon instead of reading a frozen one.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import threading
import time
from typing import TYPE_CHECKING

from fakehw.contract import nvmlshm
from fakehw.service import pidwatch

if TYPE_CHECKING:
    from fakehw.service.simulator import Simulator

LEASE_CHECK_S = 1.0  # how often the leases' processes are checked
SEQUENCE_AT = nvmlshm.field_offset("sequence")
CLOSED_AT = nvmlshm.field_offset("closed")


class _NodeFile:
    """One node's mapped file, and the processes it is written for."""

    def __init__(self, path: str, size: int) -> None:
        fd = os.open(path + ".new", os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, size)
            self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        os.replace(path + ".new", path)  # a reader opens a whole file, never a growing one
        self.path = path
        self.size = size
        self.sequence = 0
        self.leases: dict[int, float] = {}  # pid -> its start time

    def write(self, data: bytes) -> None:
        """The seqlock: odd while the body changes, even once it is whole."""
        mapped = self.map
        self.sequence += 2
        struct.pack_into("<Q", mapped, SEQUENCE_AT, self.sequence - 1)
        mapped[:SEQUENCE_AT] = data[:SEQUENCE_AT]
        mapped[SEQUENCE_AT + 8 : len(data)] = data[SEQUENCE_AT + 8 :]
        struct.pack_into("<Q", mapped, SEQUENCE_AT, self.sequence)

    def close(self) -> None:
        struct.pack_into("<I", self.map, CLOSED_AT, 1)
        self.map.close()


class NvmlPublisher:
    def __init__(self, simulator: Simulator, directory: str) -> None:
        self.simulator = simulator
        self.directory = directory
        self._files: dict[int, _NodeFile] = {}
        self._lock = threading.Lock()
        self._checked_at = 0.0

    def path_of(self, node: int) -> str:
        return os.path.join(self.directory, f"node-{node}.snap")

    def lease(self, node: int, pid: int) -> str:
        """Publish ``node`` for process ``pid`` (``ValueError`` if there is none);
        returns the file's path, already written."""
        started = pidwatch.start_time(pid)
        if started is None:
            raise ValueError(f"no process {pid}")
        with self._lock:
            node_file = self._files.get(node)
            if node_file is None:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                gpus = len(self.simulator.cluster.snapshot([node])["nodes"][0]["gpus"])
                node_file = _NodeFile(self.path_of(node), nvmlshm.file_size(gpus))
                self._files[node] = node_file
            node_file.leases[pid] = started
            self._write(node, node_file)
        return node_file.path

    @property
    def leased(self) -> bool:
        """Whether some process still reads a file (the daemon is then not idle)."""
        return any(f.leases for f in self._files.values())

    def publish(self) -> None:
        """After a tick: every leased node's file rewritten (called by the model thread)."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked_at >= LEASE_CHECK_S:
                self._checked_at = now
                for node_file in self._files.values():
                    for pid, started in list(node_file.leases.items()):
                        if not pidwatch.is_same_process(pid, started):
                            del node_file.leases[pid]
            for node, node_file in self._files.items():
                if node_file.leases:
                    self._write(node, node_file)

    def _write(self, node: int, node_file: _NodeFile) -> None:
        with self.simulator.lock:
            snapshot = self.simulator.cluster.snapshot([node])
        data = nvmlshm.pack_node(snapshot, snapshot["nodes"][0], node_file.sequence + 2,
                                 os.getpid())  # fmt: skip
        node_file.write(data)

    def close(self) -> None:
        """The daemon stops: every file marked closed, its readers ask the next one."""
        with self._lock:
            for node_file in self._files.values():
                with contextlib.suppress(ValueError, OSError):
                    node_file.close()
            self._files.clear()
