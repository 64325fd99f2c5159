"""Every program meets bad flags, bad values and a broken config file with a clear
message, in the real tool's style where one exists, the right exit code and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SMI_LAUNCHER

PROGRAMS = {
    "fakehw": [sys.executable, "-m", "fakehw"],
    "fake-train": [sys.executable, "-m", "fakehw.train"],
    "fake-nvidia-smi": [sys.executable, str(SMI_LAUNCHER)],
    "fake-gpustat": [sys.executable, "-m", "fakehw.gpustat"],
    "fake-nvitop": [sys.executable, "-m", "fakehw.nvitop"],
}


def run(program: str, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if config is not None:
        env["FAKEHW_CONFIG"] = str(config)
    return subprocess.run(
        [*PROGRAMS[program], *args],
        env=env, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def broken_config(tmp_path: Path) -> Path:
    path = tmp_path / "fakehw.toml"
    path.write_text("[cluster\nnodes = 2\n")  # unclosed table header
    return path


# (program, arguments, exit code, where the reason is printed)
BROKEN_CONFIG_CASES = [
    ("fakehw", ["daemon", "start"], 1, "stderr"),
    ("fakehw", ["demo", "--detach"], 1, "stderr"),
    ("fakehw", ["exporter", "--listen", "127.0.0.1:0"], 1, "stderr"),
    ("fake-train", ["--seed", "1"], 1, "stderr"),
    ("fake-nvidia-smi", [], 9, "stderr"),
    ("fake-nvidia-smi", ["--query-gpu=name", "--format=csv"], 9, "stderr"),
    ("fake-gpustat", [], 1, "stderr"),
    ("fake-nvitop", ["-1"], 1, "stderr"),
]


@pytest.mark.parametrize(("program", "args", "code", "stream"), BROKEN_CONFIG_CASES)
def test_broken_config_file_is_named_with_the_toml_error(
    broken_config: Path, program: str, args: list[str], code: int, stream: str
) -> None:
    result = run(program, *args, config=broken_config)
    assert result.returncode == code, (result.stdout, result.stderr)
    said = getattr(result, stream)
    assert f"config file {broken_config} is not valid TOML" in said
    assert "line 1" in said  # where the mistake is
    assert "Traceback" not in result.stdout + result.stderr


def test_config_with_a_bad_value_names_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "fakehw.toml"
    config.write_text('[cluster]\ngpu_model = "RTX 9090"\n')
    result = run("fakehw", "daemon", "start", config=config)
    assert result.returncode == 1
    assert "RTX 9090" in result.stderr and "fakehw models" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_config_file_named_by_the_environment(tmp_path: Path) -> None:
    result = run("fake-train", "--seed", "1", config=tmp_path / "absent.toml")
    assert result.returncode == 1
    assert "absent.toml (from FAKEHW_CONFIG) does not exist" in result.stderr


# (program, arguments, exit code, text the message contains)
BAD_FLAG_CASES = [
    ("fakehw", ["daemon", "start", "--bogus"], 2, "unrecognized arguments: --bogus"),
    ("fakehw", ["daemon", "start", "--gpus-per-node", "0"], 2, "--gpus-per-node must be between"),
    ("fakehw", ["daemon", "start", "--tcp", "host:notaport"], 2, "--tcp"),
    ("fakehw", ["inject", "melt"], 2, "invalid choice: 'melt'"),
    ("fakehw", ["exporter", "--listen", "nowhere"], 2, "--listen"),
    ("fake-train", ["--gpus", "-3"], 2, "-3 must be at least 1"),
    ("fake-train", ["--model", "nope"], 2, "unknown model 'nope'"),
    ("fake-train", ["--inject", "thermal@"], 2, "--inject"),
    ("fake-gpustat", ["--interval", "abc"], 2, "invalid float value: 'abc'"),
    ("fake-nvitop", ["--bogus"], 2, "unrecognized arguments: --bogus"),
    ("fake-nvitop", ["--interval=-1"], 2, "invalid positive float value"),
]


@pytest.mark.parametrize(("program", "args", "code", "message"), BAD_FLAG_CASES)
def test_bad_flags_and_values(program: str, args: list[str], code: int, message: str) -> None:
    result = run(program, *args)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
