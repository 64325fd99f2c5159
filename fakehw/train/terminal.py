"""The terminal fake-train writes to: colours, width, and one live status line.

Colours and the live line are for terminals only: written to a pipe or a file
the output is plain text, one line per event (``FORCE_COLOR`` and ``NO_COLOR``
are honoured). ``close()`` leaves the terminal as it found it: status line
cleared, cursor shown, attributes reset. It runs on every exit path.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from typing import TextIO

RESET = "\x1b[0m"
STYLES = {
    "bold": "\x1b[1m",
    "dim": "\x1b[2m",
    "red": "\x1b[31m",
    "green": "\x1b[32m",
    "yellow": "\x1b[33m",
    "blue": "\x1b[34m",
    "magenta": "\x1b[35m",
    "cyan": "\x1b[36m",
    "gray": "\x1b[90m",
}
HIDE_CURSOR, SHOW_CURSOR, CLEAR_LINE = "\x1b[?25l", "\x1b[?25h", "\r\x1b[2K"
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class OutputError(RuntimeError):
    """The log cannot be written (``1</dev/null``: a descriptor not open for writing;
    a terminal gone: EIO). A reader that went away stays a ``BrokenPipeError``."""


def visible_len(text: str) -> int:
    """Characters a terminal shows for ``text`` (colour codes take no room)."""
    return len(ESCAPE.sub("", text))


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` visible characters (colour codes kept, not
    counted): a live line that wrapped could not be redrawn in place."""
    out, shown, pos = [], 0, 0
    for match in ESCAPE.finditer(text):
        chunk = text[pos : match.start()]
        out.append(chunk[: max(0, width - shown)])
        shown += len(chunk)
        out.append(match.group())
        pos = match.end()
    out.append(text[pos:][: max(0, width - shown)])
    return "".join(out)


class Terminal:
    def __init__(self, stream: TextIO | None = None, color: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        if color is None:
            color = self.tty and not os.environ.get("NO_COLOR")
            if os.environ.get("FORCE_COLOR"):
                color = True
        self.color = color
        self._status = ""
        self._cursor_hidden = False

    @property
    def width(self) -> int:
        if not self.tty:
            return int(os.environ.get("COLUMNS", "120"))
        return max(40, shutil.get_terminal_size((120, 40)).columns)

    def paint(self, text: str, *styles: str) -> str:
        if not self.color or not styles:
            return text
        return "".join(STYLES[s] for s in styles) + text + RESET

    def line(self, text: str = "") -> None:
        """Print a log line; the live status line, if any, is redrawn under it."""
        if self._status:
            self._write(CLEAR_LINE, text + "\n", self._status)
        else:
            self._write(text + "\n")

    def _write(self, *parts: str) -> None:
        try:
            for part in parts:
                self.stream.write(part)
            self.stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write the log: {exc.strerror or exc}") from None

    def write(self, text: str) -> None:
        """Raw output, as a progress bar draws itself (no newline, no status redraw)."""
        self._write(text)

    def lines(self, texts: list[str]) -> None:
        for text in texts:
            self.line(text)

    def status(self, text: str) -> None:
        """Show (on a terminal) or drop (elsewhere) a line that updates in place."""
        if not self.tty:
            return
        hide = "" if self._cursor_hidden else HIDE_CURSOR
        self._cursor_hidden = True
        self._status = fit(text, self.width - 1)
        self._write(hide + CLEAR_LINE + self._status)

    def clear_status(self) -> None:
        if self._status:
            self._status = ""
            self._write(CLEAR_LINE)

    def close(self) -> None:
        """Restore the terminal: no status line, cursor visible, attributes reset."""
        try:
            self.clear_status()
            if self.tty:
                self.stream.write(RESET + SHOW_CURSOR)
            self.stream.flush()
        except (OSError, OutputError, ValueError):
            pass  # the reader or the terminal is gone (a closed pipe, a closed pane: EIO)
