"""Helpers for tests: run the CLI, poll for a condition, find the real captures."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

REAL = Path(__file__).resolve().parent / "real"
T = TypeVar("T")


def fakehw(*args: str, timeout: float = 60, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the ``fakehw`` command as a user would (via this interpreter)."""
    return subprocess.run(
        [sys.executable, "-m", "fakehw", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.05) -> T:
    """Poll until ``predicate()`` is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
