"""Ctrl-C and SIGTERM end every long-running program cleanly, on a real terminal (tmux):
the usual exit code, no traceback, the cursor shown and the alternate screen left."""

from __future__ import annotations

import re
import signal
import sys

import psutil
import pytest
from helpers import wait_for

TRAIN = ["-m", "fakehw.train", "--gpus", "8", "--model", "Llama-3.2-1B", "--speed-factor", "20"]

# name: (arguments to python, text on screen once it runs, exit code after Ctrl-C)
PROGRAMS = {
    "fake-nvidia-smi -l": (["-m", "fakehw.smi", "-l", "1"], "Driver Version", 130),
    "fake-nvidia-smi dmon": (["-m", "fakehw.smi", "dmon"], "# gpu", 130),
    "fake-gpustat -i": (["-m", "fakehw.gpustat", "-i", "0.5"], "NVIDIA H100", 0),  # as gpustat
    "fake-nvitop": (["-m", "fakehw.nvitop"], "(Press h for help", 130),
    "fake-nvitop --cluster": (["-m", "fakehw.nvitop", "--cluster"], "NVIDIA H100", 130),
    "fake-train": (TRAIN, "│ loss", 130),
    "fakehw exporter": (["-m", "fakehw", "exporter", "--listen", "127.0.0.1:0"], "/metrics", 130),
}


def screen(tmux) -> str:  # type: ignore[no-untyped-def]
    return str(tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "t"))


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
@pytest.mark.parametrize("program", list(PROGRAMS))
def test_a_signal_leaves_the_terminal_as_it_was(tmux, program: str, how: str) -> None:  # type: ignore[no-untyped-def]
    args, running, interrupted_code = PROGRAMS[program]
    tmux("send-keys", "-t", "t", f"{sys.executable} {' '.join(args)}; echo EXIT=$?", "Enter")
    wait_for(lambda: running in screen(tmux), timeout=60)
    if how == "ctrl-c":
        tmux("send-keys", "-t", "t", "C-c")
        expected = interrupted_code
    else:
        shell = psutil.Process(int(tmux("display", "-p", "-t", "t", "#{pane_pid}")))
        (child,) = [p for p in shell.children() if p.name().startswith("python")]
        child.send_signal(signal.SIGTERM)
        expected = 143
    found = wait_for(lambda: re.search(r"EXIT=(\d+)$", screen(tmux), re.MULTILINE), timeout=60)
    assert int(found.group(1)) == expected
    assert "Traceback" not in screen(tmux)
    assert tmux("display", "-p", "-t", "t", "#{alternate_on}").strip() == "0"
    assert tmux("display", "-p", "-t", "t", "#{cursor_flag}").strip() == "1"
