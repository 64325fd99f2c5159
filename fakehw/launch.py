"""The programs' entry points (console scripts, ``python -m``, ``bin/``).

Ctrl-C while a program is still starting — importing its modules, before its
own ``except KeyboardInterrupt`` is in place — ends it quietly with 130, as
Ctrl-C ends any program, instead of a Python traceback. Nothing has touched
the terminal by then, so there is nothing to restore. Imports only ``signal``.
"""

from __future__ import annotations

import signal

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from types import FrameType

PROGRAMS = {
    "fakehw": "fakehw.cli",
    "fake-nvidia-smi": "fakehw.smi.cli",
    "fake-train": "fakehw.train.cli",
    "fake-gpustat": "fakehw.gpustat.cli",
    "fake-nvitop": "fakehw.nvitop.cli",
}


def _interrupted_while_starting(signum: int, frame: FrameType | None) -> None:
    import os

    os._exit(128 + signum)


def run(program: str) -> int:
    """Import ``program``'s module under a quiet Ctrl-C, then run its ``main``."""
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    import importlib

    main = importlib.import_module(PROGRAMS[program]).main
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code: int = main()
    return code


def fakehw() -> int:
    return run("fakehw")


def fake_nvidia_smi() -> int:
    return run("fake-nvidia-smi")


def fake_train() -> int:
    return run("fake-train")


def fake_gpustat() -> int:
    return run("fake-gpustat")


def fake_nvitop() -> int:
    return run("fake-nvitop")
