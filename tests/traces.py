"""A real GPU trace (``nvidia-smi --query-gpu=... -lms 100``) and the model run on the
same schedule, side by side, for the calibration tests (test_calibration*.py)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fakehw.contract.config import ClusterConfig
from fakehw.tools.simulate import SimulationRequest, samples
from fakehw.workload import Schedule

# trace.csv's columns, by the header nvidia-smi writes (the H100 trace names fewer)
COLUMNS = {
    "die": "temperature.gpu",
    "hbm": "temperature.memory",
    "power": "power.draw [W]",
    "instant": "power.draw.instant [W]",
    "util": "utilization.gpu [%]",
    "mem_util": "utilization.memory [%]",
    "memory": "memory.used [MiB]",
    "sm": "clocks.current.sm [MHz]",
    "reasons": "clocks_event_reasons.active",
}


@dataclass
class Run:
    t: np.ndarray  # seconds since the trace's first sample
    die: np.ndarray
    hbm: np.ndarray
    power: np.ndarray  # power.draw: the 1 s average
    instant: np.ndarray  # power.draw.instant (the H100 trace has none: NaN)
    util: np.ndarray
    mem_util: np.ndarray
    memory: np.ndarray
    sm: np.ndarray
    reasons: np.ndarray  # clocks_event_reasons.active (the H100 trace has none: -1)

    def window(self, start: float, end: float) -> Run:
        keep = (self.t >= start) & (self.t < end)
        return Run(*(getattr(self, f.name)[keep] for f in fields(self)))

    def at(self, when: float) -> int:
        return int(np.argmin(np.abs(self.t - when)))


def _stamp(text: str) -> float:
    return datetime.strptime(text.strip(), "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def load_trace(path: Path) -> tuple[float, Run]:
    """The trace's first timestamp (unix seconds) and its samples."""
    with path.open() as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader)]
        rows = list(reader)
    stamps = np.array([_stamp(r[0]) for r in rows])

    def column(name: str) -> np.ndarray:
        if name not in header:
            return np.full(len(rows), -1.0 if name == COLUMNS["reasons"] else np.nan)
        k = header.index(name)
        return np.array([float(int(r[k], 16)) if "0x" in r[k] else float(r[k]) for r in rows])

    t0 = float(stamps[0])
    return t0, Run(stamps - t0, *(column(name) for name in COLUMNS.values()))


def phase_marks(log: Path) -> dict[str, float]:
    """The ``PHASE <unix time> <name>`` lines of a run's train.log, by name."""
    marks = {}
    for line in log.read_text().splitlines():
        if line.startswith("PHASE "):
            _, stamp, name, *_ = line.split()
            marks[name] = float(stamp)
    return marks


def simulate(schedule: Schedule, gpu_model: str, seed: int, gpus: int = 1, gpu: int = 0) -> Run:
    """GPU ``gpu`` of a node of ``gpus`` on ``schedule``, sampled every 100 ms as
    trace.csv is, with the schedule's start as time zero."""
    config = ClusterConfig(gpu_model=gpu_model, nodes=1, gpus_per_node=gpus, seed=seed)
    assert schedule.start is not None
    rows = []
    for snap in samples(SimulationRequest(schedule, config, 100)):
        g = snap["nodes"][0]["gpus"][gpu]
        rows.append((
            snap["time"] - schedule.start, g["temperature_gpu_c"], g["temperature_memory_c"],
            g["power_draw_mw"] / 1000, g["power_instant_mw"] / 1000, g["utilization_gpu_pct"],
            g["utilization_memory_pct"], g["memory_used_mib"], g["clock_sm_mhz"],
            g["clocks_event_reasons"],
        ))  # fmt: skip
    table = np.array(rows, dtype=float)
    return Run(*(table[:, i] for i in range(table.shape[1])))


def rms(real: Run, model: Run, column: str) -> float:
    """RMS difference of a column over the instants both have."""
    common = np.intersect1d(np.round(real.t, 1), np.round(model.t, 1))
    a = np.interp(common, real.t, getattr(real, column))
    b = np.interp(common, model.t, getattr(model, column))
    return float(np.sqrt(np.mean((a - b) ** 2)))
