"""How fakehw's programs end on a signal.

SIGTERM and SIGHUP (the terminal went away: a tmux pane or an ssh session
closed) raise :class:`Terminated` in the main thread. It unwinds through the
program's ``finally`` blocks like Ctrl-C does, so the terminal is restored,
fake-train's ranks leave their GPUs and temporary files go; the program then
exits 128 + the signal number, as a shell expects of a process a signal ended.
"""

from __future__ import annotations

from fakehw import TYPE_CHECKING

if TYPE_CHECKING:
    import signal
    from types import FrameType
else:
    # ``_signal``, the C module under ``signal``: the same calls without the enums that
    # ``signal`` builds as it loads, which a one-shot viewer's start-up would pay for.
    import _signal as signal

EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130: Ctrl-C
_NAMES: dict[int, str] = {
    signal.SIGINT: "SIGINT",
    signal.SIGTERM: "SIGTERM",
    signal.SIGHUP: "SIGHUP",
}


class Terminated(BaseException):
    """A termination signal arrived; a BaseException so ``except Exception`` lets it pass."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(_NAMES.get(signum, f"signal {signum}"))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


def raise_on_termination() -> None:
    """From now on SIGTERM and SIGHUP raise :class:`Terminated` in the main thread."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_terminated)


def ignore_termination() -> None:
    """While cleaning up: a second signal must not cut the clean-up short."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
