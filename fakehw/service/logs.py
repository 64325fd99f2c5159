"""The daemon's log: private, rotated, and never flooded by one repeated warning."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time

from fakehw.service.runtime import RuntimePaths, open_private

# The same warning (a refused stranger, a full disk) is logged at most once per
# this many seconds, with a count of the ones left out: a flood cannot fill the disk.
LOG_REPEAT_S = 10.0
LOG_MAX_BYTES = 1 << 20  # daemon.log is rotated beyond this (one old file kept)


class Throttle:
    """Logs one warning per key and period, then how many were left out."""

    def __init__(self, logger: logging.Logger, period_s: float = LOG_REPEAT_S) -> None:
        self.logger = logger
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, key, message, *args)

    def log(self, level: int, key: str, message: str, *args: object,
            exc_info: bool = False) -> None:  # fmt: skip
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return
        dropped = self._dropped.pop(key, 0)
        self._last[key] = now
        if dropped:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, dropped, now - last if last is not None else 0.0)
        self.logger.log(level, message, *args, exc_info=exc_info)


def configure_logging(paths: RuntimePaths, foreground: bool) -> None:
    """Log to stderr (``--foreground``) or to ``daemon.log``: private (0600, no symlink
    followed), rotated beyond 1 MiB with one old file kept."""
    handler: logging.Handler
    if foreground:
        handler = logging.StreamHandler(sys.stderr)
    else:
        os.close(open_private(paths.log_file, os.O_WRONLY | os.O_APPEND))
        handler = logging.handlers.RotatingFileHandler(
            paths.log_file, maxBytes=LOG_MAX_BYTES, backupCount=1
        )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("fakehw")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
