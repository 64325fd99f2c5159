"""The real processes behind attached records: who they are, and when fakehw may signal one.

A PID names a process only until it exits; the kernel then hands the number to
the next program. So fakehw knows a process by its PID *and* its start time
(the kernel's start tick): both are recorded when a process is attached,
saved with the daemon's state, and compared before the PID is trusted again —
to notice that a process ended, to restore one after a daemon restart, and
above all before a signal is sent (``fakehw inject rank-crash``).

A record whose PID is not its own watched process (a rank on another,
imaginary node, watched through its launcher) stands for a process elsewhere:
it is never signalled, only detached.
"""

from __future__ import annotations

import os
import signal

import psutil

# A start time is the kernel's start tick of the process (``/proc/<pid>/stat``, in
# 1/100 s) plus the boot time, which this process reads once: every reading of one
# process by one daemon is the same number, and two processes given the same PID
# within one tick cannot be (the PID would have to go round the whole PID space).
# A daemon restored from a previous one's state reads the boot time afresh, which a
# clock step may have moved: the saved start times are compared within
# ``RESTORE_TOLERANCE_S`` once, then replaced by this daemon's exact readings.
SAME_READING_TOLERANCE_S = 0.005
RESTORE_TOLERANCE_S = 1.0
_PROC = "/proc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_boot_time: float | None = None


def _boot_time_s() -> float:
    global _boot_time
    if _boot_time is None:
        _boot_time = float(psutil.boot_time())
    return _boot_time


def _read_proc(pid: int, name: str) -> str | None:
    try:
        with open(f"{_PROC}/{pid}/{name}", encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or ``None`` if there is no
    such live process: gone, a zombie, or a thread rather than a process (a thread's
    ID opens ``/proc/<tid>`` too, and a signal sent to it ends its whole process)."""
    if not os.path.isdir(_PROC):  # not Linux: psutil's reading
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return float(process.create_time())
        except (psutil.Error, ProcessLookupError, ValueError):
            return None
    if pid <= 0 or thread_group_of(pid) != pid:
        return None
    stat = _read_proc(pid, "stat")
    if stat is None:
        return None
    # After the command name in parentheses (which may hold anything): field 3 on.
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19]) / CLOCK_TICKS + _boot_time_s()


def thread_group_of(pid: int) -> int | None:
    """The process a task ID belongs to (itself, for a process; None if none)."""
    status = _read_proc(pid, "status")
    if status is None:
        return None
    for line in status.splitlines():
        if line.startswith("Tgid:"):
            return int(line.split()[1])
    return None


def is_same_process(
    pid: int, recorded_start: float | None, tolerance_s: float = SAME_READING_TOLERANCE_S
) -> bool:
    """Whether ``pid`` is still the process that started at ``recorded_start``."""
    if recorded_start is None:
        return False
    now = start_time(pid)
    return now is not None and abs(now - recorded_start) <= tolerance_s


def pid_namespace(pid: int | str = "self") -> str | None:
    """The PID namespace a process lives in (``pid:[4026531836]``), None if unknown."""
    try:
        return os.readlink(f"{_PROC}/{pid}/ns/pid")
    except OSError:
        return None


def owner_name(pid: int) -> str:
    try:
        return str(psutil.Process(pid).username())
    except (psutil.Error, KeyError):
        return "root"


class NotOurs(RuntimeError):
    """A process fakehw may not signal; the message says why."""


def kill_verified(pid: int, recorded_start: float | None) -> None:
    """SIGKILL ``pid`` only if it is provably the process recorded: same start time,
    same user as this one, and neither init nor this process. Raise ``NotOurs``."""
    if pid <= 1 or pid == os.getpid():
        raise NotOurs(f"pid {pid} is not a process fakehw may signal")
    group = thread_group_of(pid)
    if group is not None and group != pid:
        raise NotOurs(f"{pid} is a thread of process {group}, not a process")
    try:
        process = psutil.Process(pid)
        uid = process.uids().real
    except (psutil.Error, ProcessLookupError):
        raise NotOurs(f"pid {pid} is gone") from None
    if not is_same_process(pid, recorded_start):
        raise NotOurs(f"pid {pid} is now another process (its start time differs)")
    if uid != os.getuid():
        raise NotOurs(f"pid {pid} belongs to uid {uid}, not to you")
    try:
        # psutil checks once more that the PID has not been reused since we looked.
        process.send_signal(signal.SIGKILL)
    except psutil.NoSuchProcess:
        raise NotOurs(f"pid {pid} is gone") from None
    except psutil.AccessDenied:
        raise NotOurs(f"not allowed to signal pid {pid}") from None
