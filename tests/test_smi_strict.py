"""fake-nvidia-smi held to nvidia-smi 580 where a review found it lax or wrong.

- Loop intervals longer than a daemon subscription goes (``-l 3601``, ``-lms 3600001``,
  ``dmon -d 3601``) loop as the real tool does instead of blaming the driver.
- Numbers on the command line are ASCII digits only: ``-i ٣`` selects no GPU.
- ``topo`` writes the real tool's underline codes to a pipe as to a terminal.
"""

from __future__ import annotations

import datetime
import itertools
import os
import pty
import re
import selectors
import signal
import statistics
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import REAL, SMI_LAUNCHER, Node, node_fixture, wait_for

INVALID = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n\n"
NO_DEVICES = "No devices were found\n"


h100x4 = node_fixture("h100x4", "h100", 4, "Four idle H100s.")


def capture_bytes(path: str) -> list[bytes]:
    """A real capture's output lines, without its "$ command" and "[exit N]" annotations."""
    lines = (REAL / path).read_bytes().split(b"\n")
    assert lines[0].startswith(b"$ ") and lines[-2].startswith(b"[exit ") and lines[-1] == b""
    return lines[1:-2]


def start(
    args: list[str], env: dict[str, str], program: list[str] | None = None
) -> subprocess.Popen[bytes]:
    command = program or [sys.executable, str(SMI_LAUNCHER)]
    return subprocess.Popen([*command, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0)  # fmt: skip


def output_until(
    process: subprocess.Popen[bytes], done: Callable[[str], bool], timeout: float = 30
) -> str:
    """What ``process`` writes to stdout until ``done(text)``; the test fails if it ends first."""
    assert process.stdout is not None and process.stderr is not None
    fd = process.stdout.fileno()
    text = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not done(text.decode()):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                process.kill()
                pytest.fail(f"not done within {timeout} s; it wrote {text!r}")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                code = process.wait()
                pytest.fail(f"it ended (exit {code}): {text!r} {process.stderr.read()!r}")
            text += chunk
    return text.decode()


def lines(count: int) -> Callable[[str], bool]:
    return lambda text: text.count("\n") >= count


def table_done(text: str) -> bool:
    return "No running processes found" in text and text.endswith("-+\n")


def stop(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    """SIGTERM, as a user's `kill`: the exit code and what it said on stderr."""
    assert process.stderr is not None
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=10)
    return code, process.stderr.read().decode()


# ------------------------------------------------------------ loop intervals
@pytest.mark.parametrize(
    ("args", "frame_done"),
    [
        (["-l", "3601"], table_done),
        (["-lms", "3600001"], table_done),
        (["--query-gpu=index,power.draw", "--format=csv,noheader", "-l", "3601"], lines(4)),
        (["dmon", "-d", "3601"], lines(2 + 4)),
    ],
    ids=["l-3601", "lms-3600001", "query-l-3601", "dmon-d-3601"],
)
def test_loop_longer_than_an_hour_runs_instead_of_blaming_the_driver(
    h100x4: Node, args: list[str], frame_done: Callable[[str], bool]
) -> None:
    # nvidia-smi documents no upper bound for -l, -lms or dmon -d (help.txt, dmon_help.txt).
    process = start(args, h100x4.env)
    first = output_until(process, frame_done)
    assert "NVIDIA driver" not in first
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=1.0)  # it keeps running, waiting for the next frame ...
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert not selector.select(0)  # ... an hour away: not a second one at once
    code, said = stop(process)
    assert (code, said) == (143, "")


DAEMON_WITH_SHORT_SUBSCRIPTIONS = (
    "import sys, fakehw.service.protocol as p; p.MAX_SUBSCRIBE_INTERVAL_MS = 200\n"
    "from fakehw.tools.cli import main; sys.exit(main(sys.argv[1:]))"
)
SMI_WITH_SHORT_SUBSCRIPTIONS = (
    "import sys, fakehw.service.protocol as p; p.MAX_SUBSCRIBE_INTERVAL_MS = 200\n"
    "from fakehw.smi.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture
def daemon_with_short_subscriptions(isolated_environment: Path) -> Iterator[Path]:
    """A daemon (and its protocol) whose subscriptions go up to 200 ms instead of an hour:
    what happens beyond the longest subscription can then be watched in seconds."""
    from fakehw.service.client import Client, DaemonUnavailable, RequestFailed

    daemon = subprocess.Popen(
        [sys.executable, "-c", DAEMON_WITH_SHORT_SUBSCRIPTIONS, "daemon", "start",
         "--foreground", "--gpu-model", "h100", "--gpus-per-node", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def connect() -> Client | None:
        try:
            return Client.connect(root=str(isolated_environment), autostart=False)
        except DaemonUnavailable:
            return None

    client = wait_for(connect, timeout=30)
    assert client is not None
    with client, pytest.raises(RequestFailed):
        client.request("subscribe", interval_ms=500)  # the premise: 500 ms is too long
    yield isolated_environment
    daemon.terminate()
    daemon.wait(timeout=10)


def test_loop_beyond_the_longest_subscription_keeps_the_asked_cadence(
    daemon_with_short_subscriptions: Path,
) -> None:
    program = [sys.executable, "-c", SMI_WITH_SHORT_SUBSCRIPTIONS]
    args = ["--query-gpu=timestamp", "--format=csv,noheader", "-lms", "500"]
    process = start(args, dict(os.environ), program)
    out = output_until(process, lines(7))
    code, said = stop(process)
    assert (code, said) == (143, "")
    stamps = [datetime.datetime.strptime(line, "%Y/%m/%d %H:%M:%S.%f") for line in out.splitlines()]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    # 500 ms, give or take the daemon's 100 ms tick: not the 200 ms a clamped subscription
    # would give, and not 500 ms plus the time each frame takes (no drift).
    assert 0.4 <= statistics.median(gaps) <= 0.6, gaps
    assert min(gaps) > 0.25, gaps
    assert 0.45 <= (stamps[-1] - stamps[0]).total_seconds() / len(gaps) <= 0.6, gaps


# ------------------------------------------------------- ASCII digits only
@pytest.mark.parametrize(
    "args",
    [
        ["-i", "٣"],  # ARABIC-INDIC DIGIT THREE
        ["--id=٣"],
        ["-i", "３"],  # FULLWIDTH DIGIT THREE
        ["-i", "³"],  # SUPERSCRIPT THREE: isdigit(), yet int() refuses it
        ["-i", "0,٣"],
        ["-i", "٣", "--query-gpu=index", "--format=csv,noheader"],
        ["-L", "-i", "٣"],
        ["dmon", "-i", "٣", "-c", "1"],
        ["nvlink", "-s", "-i", "٣"],
        ["-i", "9" * 5000],  # more digits than int() converts
    ],
)
def test_non_ascii_digit_selects_no_gpu(h100x4: Node, args: list[str]) -> None:
    real = (REAL / "h100/static/i9.txt").read_text().splitlines()[1:-1]  # a missing -i 9
    result = h100x4.smi(*args, timeout=20)
    assert (result.stdout.splitlines(), result.returncode, result.stderr) == (real, 6, "")


def test_bus_id_in_non_ascii_digits_selects_no_gpu(h100x4: Node) -> None:
    bus = h100x4.smi("--query-gpu=pci.bus_id", "--format=csv,noheader", "-i", "1").stdout.strip()
    assert h100x4.smi("--query-gpu=index", "--format=csv,noheader", "-i", bus).stdout == "1\n"
    arabic = bus.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    result = h100x4.smi("--query-gpu=index", "--format=csv,noheader", "-i", arabic)
    assert (result.stdout, result.returncode) == (NO_DEVICES, 6)


@pytest.mark.parametrize(
    ("args", "stdout", "code"),
    [
        (["-lms", "٣"], INVALID, 2),
        (["-lms", "³"], INVALID, 2),
        (["-lms=٣"], INVALID, 2),
        # -l takes an optional number; what is not one is the next option, as "-l abc" is
        (
            ["-l", "٣"],
            "ERROR: Option ٣ is not recognized. Please run 'nvidia-smi -h' for help.\n\n",
            255,
        ),
        (["-l=٣"], INVALID, 2),
        (["dmon", "-d", "٣", "-c", "1"], INVALID, 2),
        (["dmon", "-c", "٣"], INVALID, 2),
        (["dmon", "-c", "³"], INVALID, 2),
        (["pmon", "-d", "٣", "-c", "1"], INVALID, 2),
        (["pmon", "-c", "３"], INVALID, 2),
    ],
)
def test_non_ascii_digit_is_not_a_count_or_an_interval(
    h100: Node, args: list[str], stdout: str, code: int
) -> None:
    result = h100.smi(*args, timeout=10)
    assert (result.stdout, result.returncode, result.stderr) == (stdout, code, "")


@pytest.mark.parametrize(
    "args",
    [
        ["-l", "1" + "0" * 30],
        ["-lms", "1" + "0" * 30],
        ["-lms", "9" * 5000],
        ["dmon", "-d", "1" + "0" * 30],
        ["dmon", "-c", "9" * 5000],
        ["pmon", "-c", "9" * 5000],
    ],
)
def test_huge_interval_or_count_is_an_invalid_argument(h100: Node, args: list[str]) -> None:
    result = h100.smi(*args, timeout=10)
    assert (result.stdout, result.returncode, result.stderr) == (INVALID, 2, "")


# ------------------------------------------------------------------- topo
def matrix_matches(real: list[bytes], fake: list[bytes], gpus: int) -> None:
    """Byte for byte, but for each row's CPU Affinity: the fake host has other CPUs."""
    assert len(fake) == len(real)
    for real_line, fake_line in zip(real, fake, strict=True):
        if fake_line.startswith(b"GPU"):
            real_cells, fake_cells = real_line.split(b"\t"), fake_line.split(b"\t")
            assert re.fullmatch(rb"\d+-\d+(,\d+-\d+)*", fake_cells[gpus + 1])
            real_cells[gpus + 1] = fake_cells[gpus + 1]
            real_line = b"\t".join(real_cells)
        assert fake_line == real_line


def smi_bytes(node: Node, *args: str) -> bytes:
    result = subprocess.run([sys.executable, str(SMI_LAUNCHER), *args], env=node.env,
                            capture_output=True, timeout=30, check=False)  # fmt: skip
    assert (result.returncode, result.stderr) == (0, b"")
    return result.stdout


def test_topo_matrix_to_a_pipe_has_the_real_underline_codes(h100: Node, h200x2: Node) -> None:
    for node, folder, gpus in ((h100, "h100", 1), (h200x2, "h200x2", 2)):
        real = capture_bytes(f"{folder}/static/topo_m.txt")
        matrix_matches(real, smi_bytes(node, "topo", "-m").split(b"\n")[:-1], gpus)
    p2p = capture_bytes("h200x2/static/topo_p2p.txt")
    assert smi_bytes(h200x2, "topo", "-p2p", "n").split(b"\n")[:-1] == p2p


def on_a_terminal(node: Node, *args: str) -> bytes:
    """What the program writes to a terminal (output post-processing off: bytes as written)."""
    leader, follower = pty.openpty()
    mode = termios.tcgetattr(follower)
    mode[1] &= ~termios.OPOST
    termios.tcsetattr(follower, termios.TCSANOW, mode)
    process = subprocess.Popen(
        [sys.executable, str(SMI_LAUNCHER), *args],
        env=node.env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    out = b""
    try:
        while chunk := os.read(leader, 1 << 16):
            out += chunk
    except OSError:  # EIO: the terminal's last writer closed it
        pass
    finally:
        os.close(leader)
    assert process.wait(timeout=30) == 0
    return out


def test_topo_writes_the_same_bytes_to_a_terminal_and_to_a_pipe(h200x2: Node) -> None:
    for args in (["topo", "-m"], ["topo", "-mp"], ["topo", "-p2p", "n"]):
        assert on_a_terminal(h200x2, *args) == smi_bytes(h200x2, *args), args
