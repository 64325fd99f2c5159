"""``fakehw simulate`` as a user runs it: schedules in, nvidia-smi CSV out."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REAL, fakehw

from fakehw.workload import Schedule, ScheduleError

DESIGN_SCHEDULE = {
    "start": 1795357948.919,
    "phases": [
        {"phase": "idle", "seconds": 20},
        {"phase": "load", "seconds": 13.6, "memory_mib": 34363},
        {"phase": "train", "seconds": 120, "memory_mib": 46617},
        {"phase": "checkpoint", "seconds": 22},
        {"phase": "eval", "seconds": 15},
        {"phase": "train", "seconds": 45},
        {"phase": "free", "seconds": 45, "memory_mib": 897},
    ],
}


@pytest.fixture
def schedule_file(tmp_path: Path) -> Path:
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(DESIGN_SCHEDULE))
    return path


def test_default_output_is_the_nounits_csv_of_nvidia_smi(schedule_file: Path) -> None:
    result = fakehw("simulate", "--schedule", str(schedule_file))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "timestamp, index, pstate, temperature.gpu, temperature.memory, power.draw [W], "
        "utilization.gpu [%], utilization.memory [%], memory.used [MiB], "
        "clocks.current.sm [MHz], clocks.current.memory [MHz]"
    )
    assert len(lines) == 1 + 2807  # samples at 0, 0.1, ... 280.6 s
    row = re.compile(
        r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{3}, 0, P0, "
        r"\d+, \d+, \d+\.\d\d, \d+, \d+, \d+, \d+, 2619"
    )
    assert all(row.fullmatch(line) for line in lines[1:])
    assert lines[1].startswith("2026/11/22 14:32:28.919, 0, P0")  # the schedule's start (UTC)
    assert lines[2].startswith("2026/11/22 14:32:29.019")
    # The real trace has the same columns, minus index and fan.speed:
    real = (REAL / "h100/load/trace.csv").read_text().splitlines()[1]
    assert len(real.split(", ")) == len(lines[1].split(", "))


def test_phases_show_in_the_csv(schedule_file: Path) -> None:
    result = fakehw("simulate", "--schedule", str(schedule_file), "--interval-ms", "1000")
    rows = [line.split(", ") for line in result.stdout.splitlines()[1:]]
    memory = [int(r[8]) for r in rows]
    util = [int(r[6]) for r in rows]
    assert memory[0] == 0 and memory[100] == 46617 and memory[-1] == 897
    assert util[100] == 100 and util[165] <= 5  # training, then the checkpoint


def test_several_gpus_custom_fields_and_formats(schedule_file: Path) -> None:
    result = fakehw(
        "simulate", "--schedule", str(schedule_file), "--gpus", "2", "--interval-ms", "5000",
        "--gpu-model", "NVIDIA H200", "--query-gpu", "index,name,memory.total,power.draw",
        "--format", "csv,noheader",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("0, NVIDIA H200, 143771 MiB, ")
    assert lines[1].startswith("1, NVIDIA H200, 143771 MiB, ")
    assert len(lines) == 2 * (280 // 5 + 1)
    assert all(line.endswith(" W") for line in lines)


def test_same_seed_same_output_other_seed_other_output(schedule_file: Path) -> None:
    args = ("simulate", "--schedule", str(schedule_file), "--interval-ms", "500")
    first = fakehw(*args, "--seed", "7").stdout
    assert first == fakehw(*args, "--seed", "7").stdout
    assert first != fakehw(*args, "--seed", "8").stdout


def test_output_survives_a_closed_pipe(schedule_file: Path) -> None:
    command = f"{sys.executable} -m fakehw simulate --schedule {schedule_file} | head -3"
    result = subprocess.run(
        command, shell=True, capture_output=True, text=True, timeout=60, check=False
    )
    assert len(result.stdout.splitlines()) == 3
    assert "Traceback" not in result.stderr and "Broken pipe" not in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{nope", "not valid JSON (line 1, column 2"),
        ("[]", 'expected an object with a "phases" list'),
        ('{"phases": []}', '"phases" must be a non-empty list'),
        ('{"phases": [{"phase": "sleep", "seconds": 3}]}', "phase 'sleep' is not one of"),
        ('{"phases": [{"phase": "train", "seconds": -3}]}', '"seconds" must be a positive'),
        ('{"phases": [{"phase": "train"}]}', '"seconds" must be a positive'),
        ('{"phases": [{"phase": "idle", "seconds": 3, "memory_mib": 5}]}', "an idle GPU"),
        ('{"phases": [{"phase": "train", "seconds": 3, "memory_mib": 1.5}]}', "whole number"),
        ('{"phases": [{"phase": "train", "seconds": 3, "mem": 5}]}', "unknown key(s) mem"),
        ('{"phases": [{"phase": "train", "seconds": 3}], "start": "now"}', '"start" must be'),
    ],
)
def test_bad_schedules_are_explained(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ScheduleError, match=re.escape(message)):
        Schedule.from_file(path)
    result = fakehw("simulate", "--schedule", str(path))
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (("--schedule", "/nonexistent.json"), "cannot read schedule /nonexistent.json", 2),
        (("--query-gpu", "index,bogus.field"), 'Field "bogus.field" is not a valid field', 2),
        (("--format", "xml"), '"xml" is not a valid format', 2),
        (("--gpus", "0"), "--gpus must be between 1 and 16", 2),
        (("--interval-ms", "0"), "--interval-ms must be between", 2),
        (("--gpu-model", "v100"), "unknown GPU model 'v100'", 2),
        (("--gpus", "two"), "invalid int value: 'two'", 2),
    ],
)
def test_bad_arguments_are_explained(
    schedule_file: Path, args: tuple[str, ...], message: str, code: int
) -> None:
    full = ("simulate", "--schedule", str(schedule_file), *args)
    result = fakehw(*full)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_explains_schedules() -> None:
    result = fakehw("simulate", "--help")
    assert result.returncode == 0
    for word in ("--schedule", "--gpu-model", "--query-gpu", "--seed", "memory_mib", "barrier"):
        assert word in result.stdout
