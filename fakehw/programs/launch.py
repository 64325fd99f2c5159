"""The programs' entry points (console scripts, ``python -m``, ``bin/``).

Ctrl-C while a program is still starting — importing its modules, before its
own ``except KeyboardInterrupt`` is in place — ends it quietly with 130, as
Ctrl-C ends any program, instead of a Python traceback; so does a Ctrl-C (or
a SIGTERM the program turned into ``Terminated``) that gets past the program's
own handling. Nothing has touched the terminal while starting, and ``finally``
blocks restore it after: there is nothing left to restore.

Where the output goes is handled here too, once for every program:

- A standard descriptor (0, 1, 2) closed when the program starts (``prog 1>&-``)
  gets /dev/null first of all, so that no socket or file opened later takes its
  number and receives what was meant for the terminal. A closed standard input
  reads as empty; a closed standard output still refuses every write (EBADF, as
  the closed descriptor would: /dev/null opened read-only), so the program says
  it could not write its output; what is written to a closed standard error is
  discarded.
- A write to standard output (or to a file opened with :func:`open_output`) that
  fails ends the program with one line, ``PROG: cannot write the output: No
  space left on device``, and exit status 1; a reader that went away (``| head``)
  ends it silently with 141, as SIGPIPE ends a C program.
- The terminal going away under a live view (a closed window: reads see the end
  of input, writes EIO) ends the program quietly with 129, as SIGHUP does,
  writing nothing more to where the terminal was.

Imports only modules the interpreter has loaded before any program runs
(``errno``, ``io``, ``os``, ``_signal``, ``sys``) and ``fakehw.programs.signals``.
"""

from __future__ import annotations

import errno
import io
import os
import sys

from fakehw import TYPE_CHECKING

if TYPE_CHECKING:
    import signal
    from types import FrameType
    from typing import TextIO

    from _typeshed import ReadableBuffer
else:
    import _signal as signal  # the C module under ``signal`` (see fakehw.programs.signals)

PROGRAMS = {
    "fakehw": "fakehw.tools.cli",
    "fake-nvidia-smi": "fakehw.smi.cli",
    "fake-train": "fakehw.train.cli",
    "fake-gpustat": "fakehw.gpustat.cli",
    "fake-nvitop": "fakehw.nvitop.cli",
    "fake-dcgmi": "fakehw.dcgmi.cli",
}
# fake-train refuses a closed standard output or error itself before it starts anything
# (fakehw.train.cli.closed_output), and finds them as Python leaves them: None.
REFUSE_CLOSED_OUTPUT = frozenset({"fake-train"})

EXIT_OUTPUT_FAILED = 1
EXIT_HANGUP = 128 + signal.SIGHUP  # 129: the terminal went away
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141: the reader went away
STDOUT_LABEL = "the output"


class OutputFile(io.FileIO):
    """A file a program's output goes to, which remembers the error its last failed write
    raised: so that error, when it ends the program, can be told from any other OSError."""

    def __init__(self, file: int | str, label: str) -> None:
        super().__init__(file, "w", closefd=not isinstance(file, int))
        self.label = label  # what the message calls it: "the output", or a file name
        self.is_stdout = file == 1
        self.failure: OSError | None = None
        _outputs.append(self)

    def write(self, data: ReadableBuffer, /) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            self.failure = exc
            raise


_outputs: list[OutputFile] = []


def _text_writer(raw: OutputFile, like: TextIO | None = None) -> io.TextIOWrapper:
    """``raw`` buffered and encoded as ``open()`` does, or with the settings of ``like``."""
    try:
        size = os.fstat(raw.fileno()).st_blksize
    except OSError:
        size = 0
    buffered = io.BufferedWriter(raw, size if size > 1 else io.DEFAULT_BUFFER_SIZE)
    if like is None:
        return io.TextIOWrapper(buffered)
    return io.TextIOWrapper(buffered, encoding=like.encoding, errors=like.errors, newline="\n",
                            line_buffering=bool(like.line_buffering),
                            write_through=getattr(like, "write_through", False))  # fmt: skip


def open_output(path: str) -> TextIO:
    """``open(path, "w")`` for a program's output (``fake-nvidia-smi -f FILE``): a write that
    fails ends the program as one to standard output does ("cannot write FILE: ...")."""
    return _text_writer(OutputFile(path, label=path))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _fill_closed_descriptors() -> set[int]:
    """Open /dev/null on each standard descriptor that is closed; returns those filled."""
    filled = set()
    for fd in (0, 1, 2):
        if _is_open(fd):
            continue
        # read-only for standard output: writing it fails with EBADF, as on the closed one
        flags = os.O_WRONLY if fd == 2 else os.O_RDONLY
        opened = os.open(os.devnull, flags)  # the lowest free number: fd
        if opened != fd:
            os.dup2(opened, fd)
            os.close(opened)
        os.set_inheritable(fd, True)  # what the program starts finds it open too
        filled.add(fd)
    return filled


def _set_up_standard_streams(program: str) -> None:
    """Standard streams for closed descriptors, and a standard output whose failed write
    :func:`_failed_output` recognises."""
    filled = _fill_closed_descriptors()
    # (the process's own standard streams: open for as long as it runs)
    if 0 in filled and sys.stdin is None:
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
    keep_closed = program in REFUSE_CLOSED_OUTPUT
    if 2 in filled and sys.stderr is None and not keep_closed:  # buffered as Python's own
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
    if sys.stdout is not None or (1 in filled and not keep_closed):
        sys.stdout = _text_writer(OutputFile(1, label=STDOUT_LABEL), like=sys.stdout)


def _failed_output(exc: OSError) -> OutputFile | None:
    """The output whose write raised ``exc``, if a write of an output did."""
    for output in _outputs:
        if output.failure is exc:
            return output
    return None


def _discard_output(fds: tuple[int, ...]) -> None:
    """Point ``fds`` at /dev/null, so the interpreter's last flush of what is still buffered
    for them succeeds (no "Exception ignored ...") and writes nowhere."""
    import contextlib

    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in fds:
            os.dup2(devnull, fd)
        os.close(devnull)


def _cannot_write(program: str, output: OutputFile, exc: OSError) -> int:
    """End the program whose write to ``output`` failed with ``exc``."""
    if output.is_stdout:
        _discard_output((1,))
    if isinstance(exc, BrokenPipeError):
        return EXIT_BROKEN_PIPE  # `| head`: the reader has what it wanted
    if sys.stderr is not None:
        try:
            sys.stderr.write(f"{program}: cannot write {output.label}: {exc.strerror}\n")
            sys.stderr.flush()
        except OSError:
            pass
    return EXIT_OUTPUT_FAILED


def _hung_up(exc: BaseException) -> int:
    """The terminal went away: end without a word (there is no one to read it)."""
    from fakehw.programs.signals import Terminated

    _discard_output((1, 2))
    context = exc.__context__
    return context.exit_code if isinstance(context, Terminated) else EXIT_HANGUP


def _interrupted_while_starting(signum: int, frame: FrameType | None) -> None:
    os._exit(128 + signum)


def run(program: str) -> int:
    """Import ``program``'s module under a quiet Ctrl-C, then run its ``main``."""
    signal.signal(signal.SIGINT, _interrupted_while_starting)  # before anything else
    _set_up_standard_streams(program)
    import importlib

    from fakehw.programs.signals import EXIT_INTERRUPTED, Terminated

    main = importlib.import_module(PROGRAMS[program]).main
    try:
        try:
            # inside the try: a Ctrl-C the moment the handler changes is still caught
            signal.signal(signal.SIGINT, signal.default_int_handler)
            code: int = main()
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
        except Terminated as exc:
            code = exc.exit_code
        if sys.stdout is not None:
            sys.stdout.flush()  # here, where a failure is still the program's to report
    except EOFError as exc:
        return _hung_up(exc)
    except OSError as exc:
        if exc.errno == errno.EIO:
            return _hung_up(exc)
        output = _failed_output(exc)
        if output is None:
            raise
        return _cannot_write(program, output, exc)
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


def fake_dcgmi() -> int:
    return run("fake-dcgmi")
