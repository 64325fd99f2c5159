"""What a GPU is asked to do: the phases of an LLM job, and schedules of them.

A phase is a *demand*, not a result: how much of the time kernels run
(``activity``: what utilization.gpu measures), how power-hungry they are per
unit of activity (``intensity``, 1.0 = dense training at full clock), how busy
the memory controller is, and how much the job moves over PCIe and NVLink.
``fakehw.devices`` turns demands into power, clocks and temperatures.

Memory activity is in the H100 SXM's units (``memory_demand_scale`` converts it for
another part: the same job keeps a part with more bandwidth less busy, a slower part's
bytes arrive more slowly). The figures are read off the real H100 run
(``tests/real/h100/load/trace.csv``):
training keeps utilization.gpu at 98-100 % and utilization.memory cycling
50-65 % with the step rhythm (~1.17 s here); evaluation is forward-only at
100 % with memory steady near 50 % and a little more power per clock; a rank
writing a checkpoint shows 1-5 % (copy kernels) at context power; a rank
waiting in a barrier spins an NCCL kernel: ~100 % utilization at near-idle power.
The H200 run (``tests/real/h200/load/``) adds the regimes below the power cap: light
training of small kernels (73 % utilization, 443 W at the top clock), a memory-bound
elementwise pass (100 % of both utilizations, 480 W), and a spin wait (100 %
utilization at 124 W, no more than a context).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fakehw.specs import GpuSpec

# Shape of utilization.memory within one training cycle, six equal slices
# (the trace samples it as 50, 52, 55, 61, 62, 60 % before falling back).
TRAIN_MEMORY_CYCLE = (0.50, 0.52, 0.55, 0.61, 0.62, 0.60)
# Work intensity within the same cycle: a short lull at the optimizer step,
# where the SM clock jumps by ~150 MHz on the trace.
TRAIN_INTENSITY_CYCLE = (0.86, 1.0, 1.0, 1.0, 1.0, 1.0)
DEFAULT_CYCLE_S = 1.17
MAX_PHASE_S = 365 * 86400.0  # a schedule's phase lasts at most a year
# The part the memory activities below were measured on (tests/real/h100/load/).
REFERENCE_BANDWIDTH_GBS = 3350.0
REFERENCE_BF16_TFLOPS = 989.4


def memory_demand_scale(spec: GpuSpec) -> float:
    """A phase's memory activity on ``spec`` relative to the H100 SXM it is given for:
    the same bytes per FLOP at this part's FLOP rate, over its bandwidth (the H200's
    4.8 TB/s: 0.70, as its trace shows 42 % against the H100's 57 % in training)."""
    return (spec.bf16_dense_tflops / REFERENCE_BF16_TFLOPS) * (
        REFERENCE_BANDWIDTH_GBS / spec.memory_bandwidth_gbs
    )


@dataclass(frozen=True)
class KernelMix:
    """What a phase's kernels keep busy, as shares of the GPU's cycles while they run:
    DCGM's profiling fields (DCGM_FI_PROF_*). Scaled by the phase's activity; the memory
    interface's share (DRAM_ACTIVE) is its memory activity. Typical of each kind of work
    on Hopper (a bf16 transformer step near 40 % MFU keeps the tensor pipes about half
    busy), not read off a capture: none of ../real/ records the profiling fields."""

    sm_active: float  # an SM has at least one warp
    sm_occupancy: float  # resident warps over the SM's maximum
    tensor_active: float  # the tensor (HMMA) pipes
    fp64_active: float
    fp32_active: float
    fp16_active: float


IDLE_KERNELS = KernelMix(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
KERNEL_FIELDS = ("sm_active", "sm_occupancy", "tensor_active", "fp64_active", "fp32_active",
                 "fp16_active")  # fmt: skip
KERNEL_PIPES = ("tensor_active", "fp64_active", "fp32_active", "fp16_active")  # follow the work


@dataclass(frozen=True)
class PhaseProfile:
    """Demand of one phase on each GPU of the process."""

    name: str
    description: str
    has_context: bool
    activity: float  # fraction of time with a kernel running
    intensity: float  # dynamic power per unit of activity (1.0 = dense training)
    intensity_jitter: float  # standard deviation of fast fluctuations, relative
    memory_activity: float  # utilization.memory as a fraction
    memory_activity_jitter: float
    cycled: bool  # follows the training-step rhythm
    stall_rate_hz: float  # short input stalls that dent utilization.gpu
    pcie_rx_mb_s: float
    pcie_tx_mb_s: float
    nvlink_share: float  # share of the NVLink bandwidth used when the job spans GPUs
    allocation_rate_mib_s: float  # how fast memory grows toward this phase's target
    activity_while_allocating: float  # copy kernels while memory is still arriving
    kernels: KernelMix = IDLE_KERNELS


_PROFILES = (
    PhaseProfile(
        name="context",
        description="a process holds a CUDA context and does no work",
        has_context=True,
        activity=0.0,
        intensity=0.0,
        intensity_jitter=0.0,
        memory_activity=0.0,
        memory_activity_jitter=0.0,
        cycled=False,
        stall_rate_hz=0.0,
        pcie_rx_mb_s=0.5,
        pcie_tx_mb_s=0.9,
        nvlink_share=0.0,
        allocation_rate_mib_s=60000.0,
        activity_while_allocating=0.0,
    ),
    PhaseProfile(
        name="load",
        description="weights and optimizer state arrive from host memory",
        has_context=True,
        activity=0.0,
        intensity=0.08,
        intensity_jitter=0.3,
        memory_activity=0.0,
        memory_activity_jitter=0.0,
        cycled=False,
        stall_rate_hz=0.0,
        pcie_rx_mb_s=0.0,
        pcie_tx_mb_s=2.0,
        nvlink_share=0.0,
        allocation_rate_mib_s=5600.0,
        activity_while_allocating=0.1,
        kernels=KernelMix(0.30, 0.05, 0.0, 0.0, 0.02, 0.0),  # copy kernels while the weights arrive
    ),
    PhaseProfile(
        name="train",
        description="forward, backward and optimizer steps",
        has_context=True,
        activity=1.0,
        intensity=1.05,
        intensity_jitter=0.035,
        memory_activity=0.565,
        memory_activity_jitter=0.015,
        cycled=True,
        stall_rate_hz=0.05,
        pcie_rx_mb_s=45.0,
        pcie_tx_mb_s=12.0,
        nvlink_share=0.12,
        allocation_rate_mib_s=60000.0,
        activity_while_allocating=0.3,
        kernels=KernelMix(0.96, 0.28, 0.52, 0.0, 0.12, 0.03),  # GEMMs: tensor pipes about half busy
    ),
    PhaseProfile(
        name="eval",
        description="forward passes over the validation set",
        has_context=True,
        activity=1.0,
        intensity=1.12,
        intensity_jitter=0.025,
        memory_activity=0.496,
        memory_activity_jitter=0.007,
        cycled=False,
        stall_rate_hz=0.0,
        pcie_rx_mb_s=20.0,
        pcie_tx_mb_s=2.0,
        nvlink_share=0.01,
        allocation_rate_mib_s=60000.0,
        activity_while_allocating=0.3,
        kernels=KernelMix(0.97, 0.30, 0.58, 0.0, 0.08, 0.02),  # forward GEMMs only
    ),
    PhaseProfile(
        name="checkpoint",
        description="this rank writes the checkpoint: copies to host, GPU nearly idle",
        has_context=True,
        activity=0.035,
        intensity=0.03,
        intensity_jitter=0.3,
        memory_activity=0.0,
        memory_activity_jitter=0.0,
        cycled=False,
        stall_rate_hz=0.0,
        pcie_rx_mb_s=1.0,
        pcie_tx_mb_s=740.0,
        nvlink_share=0.0,
        allocation_rate_mib_s=60000.0,
        activity_while_allocating=0.035,
        kernels=KernelMix(0.10, 0.03, 0.0, 0.0, 0.01, 0.0),  # device-to-host copies
    ),
    PhaseProfile(
        name="light",
        description="training of small kernels, a small batch or a small LoRA: launches leave "
        "the SMs idle a quarter of the time and the GPU below its power cap at its top clock",
        has_context=True,
        activity=0.73,  # h200: utilization.gpu 73 %
        intensity=0.59,  # h200: 443 W at 1980 MHz
        intensity_jitter=0.18,  # h200: power.draw.instant scatters +-80 W, never to the cap
        memory_activity=0.725,  # h200: 50.6 % of its 4.8 TB/s
        memory_activity_jitter=0.03,
        cycled=False,
        stall_rate_hz=0.0,
        pcie_rx_mb_s=12.0,
        pcie_tx_mb_s=3.0,
        nvlink_share=0.03,
        allocation_rate_mib_s=60000.0,
        activity_while_allocating=0.3,
        kernels=KernelMix(0.55, 0.12, 0.20, 0.0, 0.06, 0.02),  # small GEMMs that leave SMs empty
    ),
    PhaseProfile(
        name="membound",
        description="memory-bound kernels, elementwise passes over large tensors: memory "
        "saturated, SMs waiting on it, below the power cap",
        has_context=True,
        activity=1.0,  # h200: utilization.gpu 100 %
        intensity=0.49,  # h200: 480 W at 1980 MHz
        intensity_jitter=0.008,  # h200: +-2.5 W
        memory_activity=1.43,  # saturates: h200 utilization.memory 100 %
        memory_activity_jitter=0.0,
        cycled=False,
        stall_rate_hz=0.0,
        pcie_rx_mb_s=0.5,
        pcie_tx_mb_s=0.9,
        nvlink_share=0.0,
        allocation_rate_mib_s=60000.0,
        activity_while_allocating=1.0,
        # elementwise passes: every SM full, no tensor work
        kernels=KernelMix(0.98, 0.75, 0.0, 0.0, 0.06, 0.04),
    ),
    PhaseProfile(
        name="spin",
        description="a kernel that spins, as NCCL's does while a rank waits in a barrier: "
        "100 % utilization at a context's power",
        has_context=True,
        activity=1.0,  # h200: utilization.gpu 100 %, utilization.memory 0-1 %
        intensity=0.0,  # h200: 124.4 W against 123.3 W with a context alone
        intensity_jitter=0.0,
        memory_activity=0.0,
        memory_activity_jitter=0.0,
        cycled=False,
        stall_rate_hz=0.0,
        pcie_rx_mb_s=0.5,
        pcie_tx_mb_s=0.9,
        nvlink_share=0.0005,
        allocation_rate_mib_s=60000.0,
        activity_while_allocating=1.0,
        # NCCL's spinning kernel: the SMs of its channels, a warp each
        kernels=KernelMix(0.24, 0.008, 0.0, 0.0, 0.0, 0.0),
    ),
    PhaseProfile(
        name="free",
        description="the process is alive but released its memory to the allocator's floor",
        has_context=True,
        activity=0.0,
        intensity=0.0,
        intensity_jitter=0.0,
        memory_activity=0.0,
        memory_activity_jitter=0.0,
        cycled=False,
        stall_rate_hz=0.0,
        pcie_rx_mb_s=0.5,
        pcie_tx_mb_s=0.9,
        nvlink_share=0.0,
        allocation_rate_mib_s=60000.0,
        activity_while_allocating=0.0,
    ),
)
# A rank that waits in a collective (while another saves, or for a peer that died)
# spins NCCL's kernel: the spin phase under the name fake-train and schedules use.
_BARRIER = replace(
    next(p for p in _PROFILES if p.name == "spin"),
    name="barrier",
    description="waits in a collective while another rank saves: NCCL's kernel spins, as in spin",
)
PHASES: dict[str, PhaseProfile] = {p.name: p for p in (*_PROFILES, _BARRIER)}

# ``idle`` is not a process phase: it means no process on the GPU at all.
SCHEDULE_PHASES = ("idle", *PHASES)
PHASE_NAMES = tuple(PHASES)


class ScheduleError(ValueError):
    """A schedule file that cannot be used, with a message saying why."""


@dataclass(frozen=True)
class ScheduledPhase:
    phase: str
    seconds: float
    memory_mib: int | None = None


@dataclass(frozen=True)
class Schedule:
    """Phases every GPU follows, in order (the ``fakehw simulate`` input)."""

    phases: tuple[ScheduledPhase, ...]
    start: float | None = None  # unix time of the first sample, if the file fixes it

    @property
    def duration_s(self) -> float:
        return sum(p.seconds for p in self.phases)

    def phase_at(self, elapsed_s: float) -> tuple[int, ScheduledPhase]:
        """Index and entry of the phase running ``elapsed_s`` into the schedule."""
        boundary = 0.0
        for index, entry in enumerate(self.phases):
            boundary += entry.seconds
            if elapsed_s < boundary:
                return index, entry
        return len(self.phases) - 1, self.phases[-1]

    @classmethod
    def from_file(cls, path: Path) -> Schedule:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScheduleError(f"cannot read schedule {path}: {exc.strerror}") from exc
        except UnicodeDecodeError:
            raise ScheduleError(f"schedule {path} is not a JSON text file (not UTF-8)") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScheduleError(
                f"schedule {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                f"{exc.msg})"
            ) from exc
        except (ValueError, RecursionError):  # a 5000-digit number, nesting 100000 deep
            raise ScheduleError(f"schedule {path} is not a schedule (not plain JSON)") from None
        return cls.from_json(data, source=str(path))

    @classmethod
    def from_json(cls, data: Any, source: str = "schedule") -> Schedule:
        if not isinstance(data, Mapping) or "phases" not in data:
            raise ScheduleError(
                f'{source}: expected an object with a "phases" list, e.g. '
                '{"phases": [{"phase": "idle", "seconds": 20}]}'
            )
        unknown_keys = set(data) - {"phases", "start"}
        if unknown_keys:
            raise ScheduleError(f"{source}: unknown key(s) {', '.join(sorted(unknown_keys))}")
        raw_phases = data["phases"]
        if not isinstance(raw_phases, Sequence) or isinstance(raw_phases, str) or not raw_phases:
            raise ScheduleError(f'{source}: "phases" must be a non-empty list')
        phases = tuple(
            _parse_phase(item, f"{source}: phase {n + 1}") for n, item in enumerate(raw_phases)
        )
        start = data.get("start")
        if start is not None:
            if isinstance(start, bool) or not isinstance(start, int | float):
                raise ScheduleError(f'{source}: "start" must be a unix time in seconds')
            start = float(start)
            check_start_time(start, sum(p.seconds for p in phases), f'{source}: "start"')
        return cls(phases=phases, start=start)


# nvidia-smi's timestamps have four-digit years: the last second it can print.
LAST_UNIX_TIME = 253402300799.0  # 9999-12-31 23:59:59 UTC


def check_start_time(start: float, duration_s: float, what: str) -> None:
    """A run must start after 1970 and end before the year 10000."""
    if not (math.isfinite(start) and start >= 0 and start + duration_s <= LAST_UNIX_TIME):
        raise ScheduleError(
            f"{what} must be a unix time from 0 (1970) to {LAST_UNIX_TIME - duration_s:.0f}, "
            f"so that the run ends before the year 10000; got {start!r}"
        )


def _parse_phase(item: Any, where: str) -> ScheduledPhase:
    if not isinstance(item, Mapping):
        raise ScheduleError(f'{where}: expected an object like {{"phase": "train", "seconds": 60}}')
    unknown = set(item) - {"phase", "seconds", "memory_mib"}
    if unknown:
        raise ScheduleError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    phase = item.get("phase")
    if phase not in SCHEDULE_PHASES:
        raise ScheduleError(f"{where}: phase {phase!r} is not one of {', '.join(SCHEDULE_PHASES)}")
    seconds = item.get("seconds")
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or not 0 < seconds <= MAX_PHASE_S
    ):
        raise ScheduleError(
            f'{where}: "seconds" must be a positive number of at most {MAX_PHASE_S:.0f} (a year)'
        )
    memory = item.get("memory_mib")
    if memory is not None:
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
            raise ScheduleError(f'{where}: "memory_mib" must be a whole number of MiB >= 0')
        if phase == "idle":
            raise ScheduleError(f'{where}: an idle GPU has no process to hold "memory_mib"')
    return ScheduledPhase(phase=phase, seconds=float(seconds), memory_mib=memory)
