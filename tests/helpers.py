"""Helpers for tests: run the CLI, poll for a condition, find the real captures."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import psutil
import pytest

REAL = Path(__file__).resolve().parent / "real"
SMI_LAUNCHER = Path(__file__).resolve().parents[1] / "bin" / "fake-nvidia-smi"
# each program as a user runs it, through this interpreter
PROGRAMS = {
    "fakehw": [sys.executable, "-m", "fakehw"],
    "fake-train": [sys.executable, "-m", "fakehw.train"],
    "fake-nvidia-smi": [sys.executable, str(SMI_LAUNCHER)],
    "fake-gpustat": [sys.executable, "-m", "fakehw.gpustat"],
    "fake-nvitop": [sys.executable, "-m", "fakehw.nvitop"],
    "fake-dcgmi": [sys.executable, "-m", "fakehw.dcgmi"],
}
T = TypeVar("T")
R = TypeVar("R")


class Records:
    """The records of a fake-train metrics JSONL: steps (no ``event`` key) and events."""

    def __init__(self, records: list[dict[str, object]]) -> None:
        self.records = records

    @classmethod
    def read(cls, path: Path) -> list[dict[str, object]]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    @property
    def steps(self) -> list[dict[str, object]]:
        return [r for r in self.records if "event" not in r]

    def events(self, kind: str) -> list[dict[str, object]]:
        return [r for r in self.records if r.get("event") == kind]


class TrainRuns(Generic[R]):
    """fake-train runs of one test module on one daemon of its own, each played once
    and kept (same arguments, same run): ``make(runs, args, index)`` plays one."""

    def __init__(self, base: Path, make: Callable[[TrainRuns[R], tuple[str, ...], int], R]) -> None:
        self.base = base
        self.make = make
        self.done: dict[tuple[str, ...], R] = {}

    def env(self) -> dict[str, str]:
        return {**os.environ, "FAKEHW_RUNTIME_DIR": str(self.base / "rt")}

    def __call__(self, *args: str) -> R:
        if args not in self.done:
            self.done[args] = self.make(self, args, len(self.done))
        return self.done[args]

    def play(self, *args: str) -> subprocess.CompletedProcess[str]:
        """fake-train with ``args``, which must succeed."""
        result = subprocess.run([*PROGRAMS["fake-train"], *args], capture_output=True,
                                text=True, timeout=300, check=False, env=self.env(),
                                stdin=subprocess.DEVNULL)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    def stop(self) -> None:
        subprocess.run([*PROGRAMS["fakehw"], "daemon", "stop"], env=self.env(),
                       capture_output=True, timeout=30, check=False)  # fmt: skip


class LoggedRun(Records):
    """A fake-train run: what it printed and the records of its metrics JSONL."""

    def __init__(self, stdout: str, records: list[dict[str, object]]) -> None:
        super().__init__(records)
        self.stdout = stdout


def logged_runs(prefix: str, *fixed: str) -> Iterator[TrainRuns[LoggedRun]]:
    """A test module's runs, each with ``fixed`` arguments and a metrics JSONL, on a
    daemon of the module's own (a module-scoped fixture's body)."""

    def play(runs: TrainRuns[LoggedRun], args: tuple[str, ...], index: int) -> LoggedRun:
        metrics = runs.base / f"m{index}.jsonl"
        result = runs.play(*fixed, *args, "--metrics-jsonl", str(metrics))
        return LoggedRun(result.stdout, Records.read(metrics))

    played = TrainRuns(Path(tempfile.mkdtemp(prefix=prefix)), play)
    yield played
    played.stop()


def run_program(program: str, *args: str, timeout: float = 60,
                **kwargs: object) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run one of ``PROGRAMS`` as a user would, its output captured as text."""
    return subprocess.run(
        [*PROGRAMS[program], *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def fakehw(*args: str, timeout: float = 60, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the ``fakehw`` command as a user would (via this interpreter)."""
    return run_program("fakehw", *args, timeout=timeout, **kwargs)


@contextlib.contextmanager
def training(log: Path, speed_factor: float) -> Iterator[subprocess.Popen[bytes]]:
    """fake-train on 8 GPUs (seed 3) in the background, its output in ``log``, once it has
    logged a step; ended with SIGTERM afterwards."""
    with open(log, "w") as out:
        train = subprocess.Popen(
            [*PROGRAMS["fake-train"], "--gpus", "8", "--seed", "3",
             "--speed-factor", str(speed_factor)], stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: "│ loss" in log.read_text(), timeout=60)
        yield train
    finally:
        if train.poll() is None:
            train.send_signal(signal.SIGTERM)
            train.wait(timeout=30)


def node_fixture(name: str, model: str, gpus: int, doc: str) -> Callable[[], Iterator[Node]]:
    """A module-scoped fixture ``name``: one idle node of ``gpus`` ``model`` GPUs."""

    def node() -> Iterator[Node]:
        machine = Node(model, gpus)
        yield machine
        machine.close()

    node.__doc__ = doc
    return pytest.fixture(scope="module", name=name)(node)


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.05) -> T:
    """Poll until ``predicate()`` is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Node:
    """A private daemon with one node, and a way to run fake-nvidia-smi on it."""

    def __init__(self, model: str, gpus: int, nodes: int = 1) -> None:
        self.runtime = tempfile.mkdtemp(prefix="fhw-node-")
        self.env = {**os.environ, "FAKEHW_RUNTIME_DIR": self.runtime, "TZ": "UTC"}
        self.children: list[subprocess.Popen[bytes]] = []
        started = subprocess.run(
            [sys.executable, "-m", "fakehw", "daemon", "start", "--gpu-model", model,
             "--gpus-per-node", str(gpus), "--nodes", str(nodes)],
            env=self.env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr

    def smi(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(SMI_LAUNCHER), *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def tool(
        self, module: str, *args: str, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m MODULE ARGS`` (a fakehw viewer) against this node."""
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def run_process(self, name: str, gpu: int, memory_mib: int, phase: str = "train") -> int:
        from fakehw.service.client import Client

        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        self.children.append(child)
        with Client.connect(root=self.runtime, autostart=False) as client:
            client.request("attach", pid=child.pid, name=name, gpus=[gpu], job="golden",
                           memory_plan={phase: memory_mib}, phase=phase)  # fmt: skip
        return child.pid

    def training_on(self, memory_by_gpu: dict[int, int]) -> Node:
        """A ``python3`` training on each GPU named, holding that many MiB, at full power."""
        for gpu, memory_mib in memory_by_gpu.items():
            self.run_process("python3", gpu, memory_mib)
        self.wait_busy_gpus(list(memory_by_gpu))
        return self

    def wait_busy_gpus(self, indexes: list[int]) -> None:
        """Wait until the GPUs listed train at full power."""

        def busy() -> bool:
            result = self.smi(
                "--query-gpu=index,utilization.gpu,power.draw", "--format=csv,noheader,nounits"
            )
            rows = {int(r[0]): r for r in (line.split(", ") for line in result.stdout.splitlines())}
            return all(rows[i][1] == "100" and float(rows[i][2]) > 600 for i in indexes)

        wait_for(busy, timeout=15, interval=0.2)

    def wait_busy(self, gpus: int) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            result = self.smi(
                "--query-gpu=utilization.gpu,power.draw", "--format=csv,noheader,nounits"
            )
            rows = [line.split(", ") for line in result.stdout.splitlines()]
            if len(rows) == gpus and all(r[0] == "100" and float(r[1]) > 600 for r in rows):
                return
            time.sleep(0.2)
        pytest.fail("the fake GPUs did not get busy")

    def close(self) -> None:
        for child in self.children:
            child.kill()
            child.wait()
        subprocess.run([sys.executable, "-m", "fakehw", "daemon", "stop"], env=self.env,
                       capture_output=True, check=False)  # fmt: skip
