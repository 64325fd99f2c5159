"""fake-nvitop against the real nvitop 1.7.2 captures, and its live screen under tmux."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from helpers import REAL, Node, wait_for

from fakehw.nvitop import view

BOX = set("│╒═╕├┬┤╞╪╡╘╧╛┼╤─")
VALUE = re.compile(r"\d+:\d\d(:\d\d)?|\d+(\.\d+)?(GiB|MiB|KiB|B|W|C|%|MHz| days)?|MAX|N/A")


def _captured(name: str) -> list[str]:
    lines = (REAL / name).read_text().splitlines()
    return [line for line in lines if not line.startswith(("$ ", "[exit"))]


def _mask(line: str) -> str:
    """A line's layout: its words, with values, bars, names and commands blurred."""
    line = re.sub(r"[█▏▎▍▌▋▊▉]+", "", line)
    line = re.sub(r"[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.\d", "BUS-ID", line)
    line = re.sub(r"\w+@[\w.-]+ │", "USER@HOST │", line)
    line = re.sub(r"(\d+:\d\d)  \S.*? +│$", r"\1  COMMAND │", line)  # a process's command
    line = VALUE.sub("V", line)
    return re.sub(r"\s+", " ", line)


def assert_same_layout(fake: list[str], real: list[str]) -> None:
    assert len(fake) == len(real), "\n".join(fake)
    assert re.fullmatch(r"\w{3} \w{3} \d\d \d\d:\d\d:\d\d \d{4}", fake[0])
    for got, want in zip(fake[1:], real[1:], strict=True):
        assert len(got) == len(want), f"\n{got}\n{want}"
        boxes = [k for k, ch in enumerate(want) if ch in BOX]
        assert [k for k, ch in enumerate(got) if ch in BOX] == boxes, f"\n{got}\n{want}"
        assert _mask(got) == _mask(want), f"\n{got}\n{want}"


def once(node: Node, columns: int, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "fakehw.nvitop", "-1", *args],
        env={**node.env, "COLUMNS": str(columns)}, capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    if "--force-color" not in args:
        assert "\x1b" not in result.stdout  # a pipe gets no colour
    return result.stdout.splitlines()


def test_one_shot_idle_is_laid_out_as_nvitop(h100: Node) -> None:
    if h100.children:
        pytest.skip("needs the idle node first")
    assert_same_layout(once(h100, 79), _captured("h100/static/nvitop_idle.txt"))


def test_one_shot_busy_at_80_columns(busy_h100: Node, busy_h200x2: Node) -> None:
    assert_same_layout(once(busy_h100, 79), _captured("h100/load/nvitop_busy.txt"))
    assert_same_layout(once(busy_h200x2, 79), _captured("h200x2/load/nvitop_busy.txt"))


def test_one_shot_busy_at_120_columns_adds_bars(busy_h100: Node, busy_h200x2: Node) -> None:
    assert_same_layout(once(busy_h100, 120), _captured("h100/load/nvitop_busy_color.txt"))
    assert_same_layout(once(busy_h200x2, 120), _captured("h200x2/load/nvitop_busy_color.txt"))


def test_one_shot_shows_the_daemons_truth(busy_h100: Node) -> None:
    lines = once(busy_h100, 79)
    pid = busy_h100.children[0].pid
    row = next(line for line in lines if f" {pid} C " in line)
    assert "45.52GiB" in row  # 46608 MiB, as the daemon holds it
    assert re.search(r"│ N/A +\d\dC +P0 +\d{3}W / 700W │ +45.5\dGiB / 79.65GiB │ +\d+%", lines[8])
    # the host panel is the fake node's server, not this machine
    assert "root@dgx-h100-01" in "\n".join(lines) or "@dgx-h100-01" in "\n".join(lines)
    assert re.search(r"UPTIME: \d+\.\d days", lines[10])


def test_bar_chart_matches_nvitop() -> None:
    assert (
        view.bar_chart("MEM", 57.2, 38, "45.52GiB", True, " ")
        == ("MEM: ████████████████▋ 45.52GiB  57.2% "[:38])
    )
    assert (
        view.bar_chart("UTL", 100, 38, "@ 1755MHz", False, " ")
        == ("UTL: █████████████████████████████ MAX "[:38])
    )
    assert view.bytes2human(0) == "0B"
    assert view.bytes2human(52806 * view.MIB) == "51.57GiB"
    assert view.bytes2human(143771 * view.MIB) == "140.4GiB"
    assert view.timedelta2human(74) == "1:14"
    assert view.timedelta2human(3 * 86400 + 7200, rounded=True) == "3.1 days"


def test_colours_on_request(busy_h100: Node) -> None:
    lines = once(busy_h100, 79, "--force-color")
    text = "\n".join(lines)
    assert "\x1b[1m\x1b[36m[ CPU:" in text  # bold cyan CPU bar, as termcolor writes it
    assert "\x1b[31m" in text  # the busy GPU's row in red (heavy load)


def test_errors(tmp_path: object) -> None:
    env = {**os.environ, "FAKEHW_RUNTIME_DIR": "/proc/no-such-dir"}
    result = subprocess.run([sys.executable, "-m", "fakehw.nvitop", "-1"], env=env,
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("NVML ERROR:")
    assert "Traceback" not in result.stderr
    bad = subprocess.run([sys.executable, "-m", "fakehw.nvitop", "--interval", "0.1"],
                         capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert bad.returncode == 2 and "too short" in bad.stderr


# ------------------------------------------------------------- live screen
def _start(tmux, node: Node, *args: str) -> None:  # type: ignore[no-untyped-def]
    command = (f"FAKEHW_RUNTIME_DIR={node.runtime} {sys.executable} -m fakehw.nvitop "
               f"{' '.join(args)}; echo EXIT=$?")  # fmt: skip
    tmux("send-keys", "-t", "t", command, "Enter")


def _screen(tmux) -> str:  # type: ignore[no-untyped-def]
    return str(tmux("capture-pane", "-p", "-t", "t"))


def _exit_code(tmux) -> str:  # type: ignore[no-untyped-def]
    found = wait_for(lambda: re.search(r"^EXIT=(\d+)", _screen(tmux), re.M), timeout=20)
    return found.group(1)


def test_live_monitor_keys_help_and_quit(busy_h100: Node, tmux) -> None:  # type: ignore[no-untyped-def]
    _start(tmux, busy_h100)
    screen = wait_for(lambda: "(Press h for help or q to quit)" in (s := _screen(tmux)) and s,
                      timeout=30)  # fmt: skip
    pid = busy_h100.children[0].pid
    assert f" {pid} C " in screen
    assert tmux("display", "-p", "-t", "t", "#{alternate_on}").strip() == "1"
    tmux("send-keys", "-t", "t", "h")
    wait_for(lambda: "Device coloring rules by loading intensity" in _screen(tmux))
    tmux("send-keys", "-t", "t", "x")  # any key returns
    wait_for(lambda: "(Press h for help" in _screen(tmux))
    tmux("send-keys", "-t", "t", "c")  # compact mode: bars instead of graphs
    wait_for(lambda: "[ CPU:" in _screen(tmux))
    tmux("send-keys", "-t", "t", "Down")  # select the process: its GPU row stays, others dim
    tmux("send-keys", "-t", "t", ".")  # sort by PID: the column is marked
    tmux("send-keys", "-t", "t", "q")
    assert _exit_code(tmux) == "0"
    assert tmux("display", "-p", "-t", "t", "#{alternate_on}").strip() == "0"


def test_live_monitor_follows_a_resize(busy_h100: Node, tmux) -> None:  # type: ignore[no-untyped-def]
    _start(tmux, busy_h100)
    wait_for(lambda: "(Press h for help" in _screen(tmux), timeout=30)
    tmux("resize-window", "-t", "t", "-x", "130", "-y", "45")
    wait_for(lambda: "│ UTL: " in _screen(tmux), timeout=10)  # wide: bars appear right
    tmux("resize-window", "-t", "t", "-x", "85", "-y", "30")
    wait_for(lambda: "│ UTL: " not in _screen(tmux), timeout=10)
    tmux("send-keys", "-t", "t", "q")
    assert _exit_code(tmux) == "0"


def test_live_monitor_sigterm_restores_the_terminal(busy_h100: Node, tmux) -> None:  # type: ignore[no-untyped-def]
    _start(tmux, busy_h100)
    wait_for(lambda: "(Press h for help" in _screen(tmux), timeout=30)
    pane_pid = int(tmux("display", "-p", "-t", "t", "#{pane_pid}"))
    import psutil

    monitor = wait_for(lambda: [p for p in psutil.Process(pane_pid).children()
                                if "fakehw.nvitop" in " ".join(p.cmdline())])  # fmt: skip
    os.kill(monitor[0].pid, signal.SIGTERM)
    assert _exit_code(tmux) == "143"
    assert tmux("display", "-p", "-t", "t", "#{alternate_on}").strip() == "0"
    assert tmux("display", "-p", "-t", "t", "#{cursor_flag}").strip() == "1"


# ------------------------------------------------------------------- grid
def test_cluster_grid_of_64_gpus_fits_80_by_24() -> None:
    node = Node("h100", 8, nodes=8)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "fakehw.nvitop", "--cluster", "-1"],
            env={**node.env, "COLUMNS": "80"}, capture_output=True, text=True, timeout=30,
            check=False,
        )  # fmt: skip
        lines = result.stdout.splitlines()
        assert result.returncode == 0, result.stderr
        assert len(lines) <= 24
        assert all(len(line) <= 80 for line in lines)
        assert lines[0] == "64 x NVIDIA H100 80GB HBM3 on 8 nodes"
        assert re.match(r"busy 0/64 · temp mean \d+C max \d+C · power \d+\.\d kW", lines[1])
        cells = sum(len(re.findall(r"\d+%\s?\d+C", line)) for line in lines[4:])
        assert cells == 64
        assert sum(1 for line in lines if line.startswith("dgx-h100-0")) == 8
    finally:
        node.close()


def test_cluster_grid_of_1024_gpus_is_dense_and_scrolls(tmux) -> None:  # type: ignore[no-untyped-def]
    node = Node("h100", 8, nodes=128)
    try:
        tmux("resize-window", "-t", "t", "-x", "80", "-y", "24")
        _start(tmux, node, "--cluster")
        # the whole screen, not one caught half drawn: its last row of nodes is in
        screen = wait_for(lambda: "1024 x NVIDIA H100" in (s := _screen(tmux)) and "\n121 " in s
                          and s, timeout=30)  # fmt: skip
        assert "a block per node" in screen  # the dense layout: the detailed one cannot fit
        rows = [line for line in screen.splitlines() if re.match(r"\d{3} [·▁-█]", line)]
        assert len(rows) == 16 and rows[0].startswith("001 ") and rows[-1].startswith("121 ")
        assert all(len(line) <= 80 for line in screen.splitlines())
        tmux("send-keys", "-t", "t", "d")  # the detailed layout scrolls
        wait_for(lambda: "of 256 (arrows, PgUp/PgDn)" in _screen(tmux), timeout=10)
        tmux("send-keys", "-t", "t", "PageDown")
        wait_for(lambda: "rows 11-" in _screen(tmux), timeout=10)
        tmux("send-keys", "-t", "t", "q")
        assert _exit_code(tmux) == "0"
    finally:
        node.close()
