"""Every program meets bad flags, bad values and a broken config file with a clear
message, in the real tool's style where one exists, the right exit code and no traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import PROGRAMS


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
    ("fake-dcgmi", ["discovery", "-l"], 235, "stderr"),  # dcgmi's words on stdout, the reason here
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


# ------------------------------------------------------------- issue 12: more bad input
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'[cluster]\ngpu_model = "h100\xff"\n', "is not UTF-8 text"),
        (b"[cluster]\ngpu_model = 5\n", "gpu_model must be a model name"),
        (b'[cluster]\ngpu_model = ["h100"]\n', "gpu_model must be a model name"),
    ],
    ids=["not utf-8", "a number", "a list"],
)
def test_a_config_file_of_the_wrong_kind_is_named(
    tmp_path: Path, text: bytes, message: str
) -> None:
    config = tmp_path / "fakehw.toml"
    config.write_bytes(text)
    schedule = tmp_path / "schedule.json"
    schedule.write_text('{"phases": [{"phase": "train", "seconds": 1}]}')
    for program, args in (("fakehw", ["daemon", "start"]), ("fake-train", ["--seed", "1"]),
                          ("fakehw", ["simulate", "--schedule", str(schedule)])):  # fmt: skip
        result = run(program, *args, config=config)
        assert result.returncode == 1, (program, result.stderr)
        assert message in result.stderr and str(config) in result.stderr
        assert "Traceback" not in result.stderr


@pytest.fixture
def schedule(tmp_path: Path) -> Path:
    path = tmp_path / "schedule.json"
    path.write_text('{"phases": [{"phase": "train", "seconds": 1}]}')
    return path


@pytest.mark.parametrize(
    ("extra", "body", "message"),
    [
        ([], b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not a JSON text file"),
        ([], b'{"phases": [{"phase": "train", "seconds": 1}], "start": 1e17}', '"start" must be'),
        ([], b'{"phases": [{"phase": "train", "seconds": 1}], "start": -5}', '"start" must be'),
        ([], b'{"phases": [{"phase": "train", "seconds": 1e300}]}', '"seconds" must be'),
        ([], b'{"phases": [{"phase": "train", "seconds": 1, "memory_mib": 999999}]}',
         '"memory_mib" 999999 is more than'),
        ([], b'{"phases": [' + b"[" * 100000 + b"]" * 100000 + b"]}", "not plain JSON"),
        ([], b'{"phases": [{"phase": "train", "seconds": 1' + b"0" * 5000 + b"}]}",
         "not plain JSON"),
        (["--start", "nan"], None, "--start must be a unix time"),
        (["--start", "inf"], None, "--start must be a unix time"),
        (["--start", "1e300"], None, "--start must be a unix time"),
        (["--start=-1e10"], None, "--start must be a unix time"),
        (["--seed", "-1"], None, "--seed must be between 0 and"),
    ],
    ids=["binary file", "start 1e17", "start < 0", "seconds 1e300", "memory beyond the GPU",
         "nested 100000 deep", "5000 digits", "--start nan", "--start inf", "--start 1e300",
         "--start -1e10", "--seed -1"],
)  # fmt: skip
def test_simulate_refuses_what_it_cannot_play(
    schedule: Path, extra: list[str], body: bytes | None, message: str
) -> None:
    if body is not None:
        schedule.write_bytes(body)
    result = run("fakehw", "simulate", "--schedule", str(schedule), *extra)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


def test_simulate_prints_every_timestamp_of_a_run_in_the_last_year_nvidia_smi_can_print(
    schedule: Path,
) -> None:
    result = run("fakehw", "simulate", "--schedule", str(schedule), "--start", "253402300700",
                 "--query-gpu", "timestamp,power.draw", "--format", "csv,noheader")  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, *_, last = result.stdout.splitlines()
    assert first.startswith("9999/12/31 23:58:20.000, ") and last.startswith("9999/12/31 23:58:21")
    assert all(float(line.split(", ")[1].split()[0]) < 800 for line in result.stdout.splitlines())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inject", "ecc", "--count", "0"], "--count must be between 1 and 1000000"),
        (["inject", "thermal", "--gpu", "٣"], "invalid int value: '٣'"),
        (["daemon", "start", "--tcp-token-file", "/tmp"], "--tcp-token-file needs --tcp"),
        (["daemon", "start", "--tcp", "0", "--tcp-token-file", "/tmp"], "is not a regular file"),
        (["daemon", "start", "--tcp", "0", "--tcp-token-file", ""], "the token file name is empty"),
        (["daemon", "start", "--nodes", "٣"], "invalid int value: '٣'"),
    ],
    ids=["--count 0", "unicode digit --gpu", "token file without --tcp", "token file a directory",
         "token file ''", "unicode digit --nodes"],
)  # fmt: skip
def test_fakehw_flags_say_which_flag_is_wrong(args: list[str], message: str) -> None:
    result = run("fakehw", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("flags", [["--only", "3"], ["--pid", "1"], ["--user", "root"]])
def test_the_cluster_grid_refuses_filters_it_would_ignore(flags: list[str]) -> None:
    result = run("fake-nvitop", "--cluster", "-1", *flags)
    assert result.returncode == 2
    assert f"argument --cluster: not allowed with {flags[0]}" in result.stderr
