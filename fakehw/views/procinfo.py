"""What the host knows of a GPU process: command line, CPU and memory, run time.

Real tools ask psutil about each PID the driver reports. The fake GPUs' ranks
are real processes (fake-train starts them), so psutil answers for them too;
for a record that stands for a process elsewhere (a rank on another fake node,
``host_process`` false: its PID may well be another program's here) the
daemon's record stands in: its name as the command, no CPU figures.
"""

from __future__ import annotations

import os
import time

from fakehw import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

    from fakehw.contract.snapshot import ProcessRecord


class HostProcess:
    """One GPU process as the host sees it (a plain class: viewers start fast)."""

    __slots__ = (
        "cmdline",
        "command",
        "cpu_percent",
        "local",
        "memory_bytes",
        "memory_percent",
        "pid",
        "started",
        "user",
    )  # fmt: skip

    def __init__(
        self, *, pid: int, user: str, command: str, cmdline: tuple[str, ...],
        cpu_percent: float, memory_percent: float, memory_bytes: int, started: float,
        local: bool,
    ) -> None:  # fmt: skip
        self.pid = pid
        self.user = user
        self.command = command  # the executable's base name, as ``ps -o comm``
        self.cmdline = cmdline
        self.cpu_percent = cpu_percent
        self.memory_percent = memory_percent
        self.memory_bytes = memory_bytes  # resident set
        self.started = started  # unix time
        self.local = local  # the PID exists on this machine

    @property
    def running_s(self) -> float:
        return max(0.0, time.time() - self.started)


class HostProcesses:
    """psutil handles kept between refreshes, so that CPU percentages are rates."""

    def __init__(self) -> None:
        self._handles: dict[int, psutil.Process] = {}

    def lookup(self, record: ProcessRecord) -> HostProcess:
        import psutil  # only when there are processes to describe

        pid = record["pid"]
        handle = self._handles.get(pid)
        try:
            if not record.get("host_process", True):
                raise psutil.NoSuchProcess(pid)  # not this machine's: the record stands in
            if handle is None:
                handle = self._handles[pid] = psutil.Process(pid)
                handle.cpu_percent()  # start the measurement
            with handle.oneshot():
                cmdline = tuple(handle.cmdline()) or (record["name"],)
                memory = handle.memory_info().rss
                return HostProcess(
                    pid=pid,
                    user=record["user"],
                    command=os.path.basename(cmdline[0]),
                    cmdline=cmdline,
                    cpu_percent=handle.cpu_percent(),
                    memory_percent=handle.memory_percent(),
                    memory_bytes=memory,
                    started=handle.create_time(),
                    local=True,
                )
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self._handles.pop(pid, None)
            return HostProcess(
                pid=pid,
                user=record["user"],
                command=os.path.basename(record["name"]),
                cmdline=(record["name"],),
                cpu_percent=0.0,
                memory_percent=0.0,
                memory_bytes=0,
                started=time.time(),
                local=False,
            )

    def forget_others(self, pids: set[int]) -> None:
        """Drop handles of processes no longer on the GPUs."""
        for pid in list(self._handles):
            if pid not in pids:
                del self._handles[pid]
