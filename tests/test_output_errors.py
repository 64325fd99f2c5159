"""Where the output goes wrong: a full disk, a closed descriptor, a reader that went away,
a terminal that closed. Every program says so in one line (or, for a reader gone, says
nothing and ends as SIGPIPE ends a C program), never with a traceback."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import PROGRAMS, wait_for

# (program, arguments): each writes a screenful to standard output and exits
ONE_SHOT = [
    ("fake-nvidia-smi", []),
    ("fake-nvidia-smi", ["-q"]),
    ("fake-nvidia-smi", ["--query-gpu=index,name", "--format=csv"]),
    ("fake-gpustat", []),
    ("fake-nvitop", ["-1"]),
    ("fakehw", ["daemon", "status"]),
    ("fake-dcgmi", ["discovery", "-l"]),
]


def run(program: str, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PROGRAMS[program], *args], text=True, timeout=60, check=False,
        stdin=subprocess.DEVNULL, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip


@pytest.mark.parametrize(("program", "args"), ONE_SHOT)
def test_a_full_disk_is_one_line_and_exit_1(
    runtime_dir: Path, program: str, args: list[str]
) -> None:
    with open("/dev/full", "w") as full:
        result = run(program, args, stdout=full, stderr=subprocess.PIPE)
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"{program}: cannot write the output: No space left on device\n"


@pytest.mark.parametrize(("program", "args"), ONE_SHOT)
def test_a_closed_standard_output_is_one_line_and_exit_1(
    runtime_dir: Path, program: str, args: list[str]
) -> None:
    command = " ".join(f"'{word}'" for word in [*PROGRAMS[program], *args])
    result = subprocess.run(
        ["sh", "-c", f"{command} 1>&-"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"{program}: cannot write the output: Bad file descriptor\n"


@pytest.mark.parametrize(("program", "args"), ONE_SHOT)
def test_a_reader_that_goes_away_ends_the_program_silently_as_sigpipe_does(
    runtime_dir: Path, program: str, args: list[str]
) -> None:
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read: the first write fails with EPIPE
    try:
        result = run(program, args, stdout=writer, stderr=subprocess.PIPE)
    finally:
        os.close(writer)
    assert result.returncode == 128 + signal.SIGPIPE
    assert result.stderr == ""


def test_nvidia_smi_file_option_on_a_full_disk_names_the_file(runtime_dir: Path) -> None:
    result = run("fake-nvidia-smi", ["-f", "/dev/full"], capture_output=True)
    assert result.returncode == 1
    assert result.stderr == "fake-nvidia-smi: cannot write /dev/full: No space left on device\n"
    assert result.stdout == ""


def test_a_closed_standard_output_never_reaches_a_socket_opened_later(runtime_dir: Path) -> None:
    """With fd 1 closed, the daemon's socket would get number 1, and the program's report
    would go to the daemon as a request. It goes nowhere: /dev/null holds the number."""
    run("fakehw", ["daemon", "start"], capture_output=True)
    log = runtime_dir / "daemon.log"
    before = log.read_text()
    command = " ".join(f"'{word}'" for word in [*PROGRAMS["fake-nvidia-smi"], "-L"])
    result = subprocess.run(["sh", "-c", f"{command} 1>&-"], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 1
    status = run("fakehw", ["daemon", "status"], capture_output=True)
    assert status.returncode == 0, status.stderr  # the daemon answers as before
    assert "GPU 0" not in log.read_text()[len(before) :]


@pytest.mark.parametrize(
    ("program", "args", "message"),
    [
        ("fake-train", ["--gpus", "\u0668"], "argument --gpus: '\u0668' is not a whole number"),
        ("fake-train", ["--seed", "\uff11"], "argument --seed: '\uff11' is not a whole number"),
        ("fake-train", ["--exit-after-time", "\u0669m"], "is not a duration"),
        ("fakehw", ["daemon", "start", "--nodes", "\u0668"], "invalid int value: '\u0668'"),
        ("fakehw", ["daemon", "start", "--tick-hz", "1_0"], "invalid float value: '1_0'"),
        ("fakehw", ["demo", "--gpus", "\u0668"], "invalid int value: '\u0668'"),
        ("fake-nvitop", ["--only", "\u0660"], "invalid int value: '\u0660'"),
        ("fake-nvitop", ["--interval", "\u0661"], "argument --interval"),
        ("fake-gpustat", ["--interval", "\u0661"], "invalid float value: '\u0661'"),
    ],
)
def test_numbers_in_other_scripts_are_refused_not_read_as_digits(
    runtime_dir: Path, program: str, args: list[str], message: str
) -> None:
    """int('٨') is 8 in Python; on a command line it is not a number anyone typed."""
    result = run(program, args, capture_output=True)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (runtime_dir / "daemon.pid").exists()  # refused before anything started


@pytest.mark.parametrize(
    ("program", "args"), [("fake-nvitop", []), ("fake-gpustat", ["-i", "0.2"])]
)
def test_a_terminal_that_closes_under_a_live_view_ends_it_as_a_hangup(
    runtime_dir: Path, program: str, args: list[str], tmp_path: Path
) -> None:
    """Closing the window: the view ends with 129 (as SIGHUP ends a program), writes no
    traceback, and leaves the daemon it talked to serving."""
    errors = tmp_path / "stderr"
    pid, master = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal, as a window's shell
        os.environ["TERM"] = "xterm"
        os.environ["COLUMNS"], os.environ["LINES"] = "120", "40"
        fd = os.open(errors, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 2)
        os.execv(PROGRAMS[program][0], [*PROGRAMS[program], *args])
    screen = b""
    deadline = time.monotonic() + 30
    while len(screen) < 2000 and time.monotonic() < deadline:
        try:
            screen += os.read(master, 65536)
        except OSError:
            break
    assert len(screen) >= 2000, screen  # the live view is up
    os.close(master)  # the window closes
    code = wait_for(lambda: _exit_status(pid), timeout=15)
    assert code[0] == 129
    assert "Traceback" not in errors.read_text()
    status = run("fakehw", ["daemon", "status"], capture_output=True)
    assert status.returncode == 0, status.stderr


def _exit_status(pid: int) -> tuple[int] | None:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done == 0:
        return None
    code = os.waitstatus_to_exitcode(status)  # -N when signal N ended it
    return (code if code >= 0 else 128 - code,)  # as a shell reports either
