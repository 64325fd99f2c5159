"""The real processes behind attached records: who they are, and when fakehw may signal one.

A PID names a process only until it exits; the kernel then hands the number to
the next program. So fakehw knows a process by its PID *and* its start time
(psutil's ``create_time``): both are recorded when a process is attached,
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

# psutil adds the boot time, read in whole seconds from /proc/stat (which a clock
# adjustment can move by one), to the process's start ticks: two readings of one
# process by two daemons may differ by up to a second. A PID reused by another
# program within a second of the first one's start is not a case that occurs.
START_TIME_TOLERANCE_S = 1.0


def start_time(pid: int) -> float | None:
    """When ``pid`` started, or ``None`` if no such live process (a zombie counts as gone)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(process.create_time())
    except (psutil.Error, ProcessLookupError, ValueError):
        return None


def is_same_process(pid: int, recorded_start: float | None) -> bool:
    """Whether ``pid`` is still the process that started at ``recorded_start``."""
    if recorded_start is None:
        return False
    now = start_time(pid)
    return now is not None and abs(now - recorded_start) <= START_TIME_TOLERANCE_S


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
