"""The programs' entry points (console scripts, ``python -m``, ``bin/``).

Ctrl-C while a program is still starting — importing its modules, before its
own ``except KeyboardInterrupt`` is in place — ends it quietly with 130, as
Ctrl-C ends any program, instead of a Python traceback; so does a Ctrl-C (or
a SIGTERM the program turned into ``Terminated``) that gets past the program's
own handling. Nothing has touched the terminal while starting, and ``finally``
blocks restore it after: there is nothing left to restore. Imports only
``signal`` and ``fakehw.signals``.
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

    from fakehw.signals import EXIT_INTERRUPTED, Terminated

    main = importlib.import_module(PROGRAMS[program]).main
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code: int = main()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Terminated as exc:
        return exc.exit_code
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
