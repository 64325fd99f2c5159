"""fake-gpustat against the real gpustat 1.1.1 captures and against the daemon."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from helpers import REAL, Node, wait_for

from fakehw.gpustat import render

LINE = re.compile(
    r"\[(?P<index>\d+)\] (?P<name>.+?) \|(?P<temp>[ \d]{3,})°C, (?P<util>[ \d]{3,}) % \| "
    r"(?P<used>[ \d]{5,}) / (?P<total>[ \d]{5,}) MB \|(?P<procs>.*)$"
)
PROC = re.compile(r" (?P<user>[^:( ]+):(?P<command>[^/( ]+)/(?P<pid>\d+)\((?P<mem>\d+)M\)")


def _captured(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith(("$", "[exit"))]


def _parse(lines: list[str]) -> tuple[str, datetime, str, list[dict[str, object]]]:
    """The values a real capture shows, as gpustat's entries."""
    host, rest = lines[0].split(maxsplit=1)
    when, driver = rest.rsplit("  ", 1)
    gpus = []
    for line in lines[1:]:
        m = LINE.match(line)
        assert m, line
        procs = [
            {
                "username": p["user"],
                "command": p["command"],
                "pid": int(p["pid"]),
                "gpu_memory_usage": int(p["mem"]),
            }
            for p in PROC.finditer(m["procs"])
        ]
        gpus.append(
            {
                "index": int(m["index"]),
                "name": m["name"].strip(),
                "temperature.gpu": int(m["temp"]),
                "fan.speed": None,
                "utilization.gpu": int(m["util"]),
                "utilization.enc": 0,
                "utilization.dec": 0,
                "power.draw": 0,
                "enforced.power.limit": 700,
                "memory.used": int(m["used"]),
                "memory.total": int(m["total"]),
                "processes": procs,
            }
        )
    return host, datetime.strptime(when.strip(), "%a %b %d %H:%M:%S %Y"), driver, gpus


@pytest.mark.parametrize(
    ("capture", "options"),
    [
        ("h100/static/gpustat_idle.txt", render.Options()),
        ("h200x2/static/gpustat_idle.txt", render.Options()),
        (
            "h100/load/gpustat_busy.txt",
            render.Options(show_cmd=True, show_user=True, show_pid=True),
        ),
        (
            "h200x2/load/gpustat_busy.txt",
            render.Options(show_cmd=True, show_user=True, show_pid=True),
        ),
    ],
)
def test_layout_is_byte_for_byte_the_real_one(capture: str, options: render.Options) -> None:
    lines = _captured(REAL / capture)
    host, when, driver, gpus = _parse(lines)
    assert render.formatted(host, when, driver, gpus, options) == "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "capture",
    ["h100/static/gpustat_json_idle.txt", "h200x2/load/gpustat_json_busy.txt"],
)
def test_json_is_written_as_gpustat_writes_it(capture: str) -> None:
    text = "\n".join(_captured(REAL / capture)) + "\n"
    document = json.loads(text)
    when = datetime.fromisoformat(document["query_time"])
    again = render.as_json(document["hostname"], when, document["driver_version"], document["gpus"])
    assert again == text


def test_colours_are_gpustats() -> None:
    gpu = {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "temperature.gpu": 68,
        "fan.speed": None,
        "utilization.gpu": 100,
        "utilization.enc": 0,
        "utilization.dec": 0,
        "power.draw": 690,
        "enforced.power.limit": 700,
        "memory.used": 46616,
        "memory.total": 81559,
        "processes": [],
    }
    line = render.gpu_line(gpu, render.Options(color=True, gpuname_width=21))
    assert line.startswith("\x1b[36m[0]\x1b[m \x1b[34mNVIDIA H100 80GB HBM3\x1b[m |")
    assert "\x1b[1m\x1b[31m 68°C\x1b[m" in line  # hot: bold red
    assert "\x1b[1m\x1b[32m100 %\x1b[m" in line  # busy: bold green


# --------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def training_node() -> Iterator[Node]:
    node = Node("h100", 4)
    node.run_process(sys.executable, 1, 30000)
    node.wait_busy_gpus([1])
    yield node
    node.close()


def test_fake_gpustat_reads_the_daemon(training_node: Node) -> None:
    result = training_node.tool("fakehw.gpustat", "-cup")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(
        r"dgx-h100-01 {13}  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}  580\.159\.04", lines[0]
    )
    assert len(lines) == 5
    rows = [LINE.match(line) for line in lines[1:]]
    assert all(rows)
    pid = training_node.children[0].pid
    busy = rows[1]
    assert busy is not None and int(busy["util"]) == 100
    proc = PROC.search(busy["procs"])
    assert proc and int(proc["pid"]) == pid and proc["command"] == os.path.basename(sys.executable)
    assert int(proc["mem"]) == 30000
    # the same numbers as fake-nvidia-smi gives for that GPU
    smi = training_node.smi("-i", "1", "--query-gpu=memory.used", "--format=csv,noheader,nounits")
    assert abs(int(busy["used"]) - int(smi.stdout)) <= 0  # memory is flat while training


def test_json_and_gpu_selection(training_node: Node) -> None:
    result = training_node.tool("fakehw.gpustat", "--json", "--id", "1,3")
    document = json.loads(result.stdout)
    assert [g["index"] for g in document["gpus"]] == [1, 3]
    keys = list(
        json.loads("\n".join(_captured(REAL / "h200x2/load/gpustat_json_busy.txt")))["gpus"][0]
    )
    assert list(document["gpus"][0]) == keys
    proc = document["gpus"][0]["processes"][0]
    assert proc["pid"] == training_node.children[0].pid
    assert proc["full_command"][0] == sys.executable
    assert proc["cpu_memory_usage"] > 0


def test_options_full_power_and_all(training_node: Node) -> None:
    full = training_node.tool("fakehw.gpustat", "-f", "--id", "1").stdout.splitlines()
    assert re.fullmatch(r" └─ +\d+ \( +\d+%, +\d+[KMG]?B\): .*python.*", full[2]), full
    power = training_node.tool("fakehw.gpustat", "-P").stdout.splitlines()[2]
    assert re.search(r"100 %,  [ \d]{3} / 700 W \|", power), power
    everything = training_node.tool("fakehw.gpustat", "-a", "--no-header").stdout.splitlines()
    assert re.search(
        r"°C,  \?\? %, +\d+ % \(E:   0 %  D:   0 %\),  [ \d]{3} / 700 W", everything[0]
    )


def test_errors_are_gpustats(training_node: Node) -> None:
    bad = training_node.tool("fakehw.gpustat", "--id", "7")
    assert bad.returncode == 1
    assert bad.stderr.startswith("Error on querying NVIDIA devices. Use --debug flag")
    both = training_node.tool("fakehw.gpustat", "--json", "-i", "1")
    assert both.returncode == 1
    assert "--json and --interval/-i can't be used together" in both.stderr
    version = training_node.tool("fakehw.gpustat", "--version")
    assert version.stdout.strip() == "gpustat 1.1.1"
    assert "\x1b" not in training_node.tool("fakehw.gpustat").stdout  # a pipe: no colour
    assert "\x1b[" in training_node.tool("fakehw.gpustat", "--color").stdout


def test_no_daemon_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "FAKEHW_RUNTIME_DIR": "/proc/no-such-dir"}
    result = subprocess.run(
        [sys.executable, "-m", "fakehw.gpustat"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "Error on querying NVIDIA devices" in result.stderr
    assert "Traceback" not in result.stderr


def test_watch_mode_redraws_and_restores_the_screen(training_node: Node, tmux) -> None:  # type: ignore[no-untyped-def]
    tmux(
        "send-keys",
        "-t",
        "t",
        f"FAKEHW_RUNTIME_DIR={training_node.runtime} {sys.executable} -m fakehw.gpustat "
        "-i 0.2; echo EXIT=$?",
        "Enter",
    )
    wait_for(lambda: tmux("display", "-p", "-t", "t", "#{alternate_on}").strip() == "1", timeout=20)
    screen = wait_for(
        lambda: "[3]" in (s := tmux("capture-pane", "-p", "-t", "t")) and s, timeout=20
    )
    assert screen.splitlines()[0].startswith("dgx-h100-01")
    tmux("send-keys", "-t", "t", "C-c")
    wait_for(lambda: re.search(r"^EXIT=0", tmux("capture-pane", "-p", "-t", "t"), re.M), timeout=20)
    assert tmux("display", "-p", "-t", "t", "#{alternate_on}").strip() == "0"
