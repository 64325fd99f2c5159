"""What the fake host engine answers for a DCGM field of one GPU, by field id: the
exporter's fields (``fakehw.dcgm.fields``) and the GPU's identity, limits and static
properties that ``dcgmi dmon -e`` can ask for too. ``None`` is DCGM's blank value
(``dmon`` prints ``N/A``): a field the fake GPUs do not model, or any field of a GPU
that has fallen off the bus but its XID.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fakehw.contract.snapshot import RemappedRows, cuda_driver_version, tlimit_margin_c
from fakehw.dcgm.fields import ANSWERS_WHEN_LOST, BY_ID, FIELDS

Value = int | float | str


@dataclass(frozen=True)
class Subject:
    """One GPU as the host engine sees it: its record, its model's data sheet, and the
    snapshot it was read from (the driver's versions, the node's GPU count)."""

    gpu: Mapping[str, Any]
    model: Mapping[str, Any]
    snapshot: Mapping[str, Any]
    node_gpu_count: int


def _compute_capability(subject: Subject) -> int:
    """The major version in the upper 32 bits, the minor in the lower."""
    major, _, minor = str(subject.model["compute_capability"]).partition(".")
    return int(major) << 32 | int(minor or 0)


def _banks(subject: Subject) -> tuple[int, int]:
    """The row remapper's banks at "Max" and at "High" (as nvidia-smi -q)."""
    histogram = RemappedRows(subject.gpu["ecc"]).bank_histogram
    return histogram(int(subject.model["remapped_rows_banks"]))


def _model(key: str) -> Callable[[Subject], Value]:
    return lambda s: s.model[key]


def _gpu(key: str) -> Callable[[Subject], Value]:
    return lambda s: s.gpu[key]


# fmt: off
_STATIC: dict[int, Callable[[Subject], Value | None]] = {
    1: lambda s: s.snapshot["driver_version"],
    2: lambda s: s.snapshot["nvml_version"],
    4: lambda s: s.node_gpu_count,
    5: lambda s: cuda_driver_version(str(s.snapshot["cuda_version"])),
    50: _model("name"),
    52: _gpu("index"),
    53: _gpu("serial"),
    54: _gpu("uuid"),
    55: _gpu("minor_number"),
    57: _gpu("bus_id"),
    58: _model("pci_device_id"),
    59: _model("pci_subsystem_id"),
    65: lambda s: 0,  # compute mode: Default
    66: lambda s: int(s.gpu["persistence_mode"]),
    67: lambda s: 0,  # MIG mode: disabled
    63: _compute_capability,
    80: _model("inforom_ecc"),
    82: _model("inforom_image"),
    85: _model("vbios_version"),
    90: _model("bar1_total_mib"),
    92: _gpu("bar1_used_mib"),
    93: lambda s: s.model["bar1_total_mib"] - s.gpu["bar1_used_mib"],
    102: _gpu("clock_video_mhz"),
    110: _model("sm_clock_max_mhz"),  # application clocks: the defaults, the maxima
    111: _model("mem_clock_max_mhz"),
    112: _gpu("clocks_event_reasons"),
    113: _model("sm_clock_max_mhz"),
    114: _model("mem_clock_max_mhz"),
    115: _model("video_clock_max_mhz"),
    151: _model("temp_memory_max_c"),
    152: _model("temp_max_operating_c"),
    158: _model("temp_slowdown_c"),
    159: _model("temp_shutdown_c"),
    160: lambda s: s.gpu["power_limit_mw"] / 1000,
    161: _model("power_min_w"),
    162: _model("power_max_w"),
    163: _model("power_default_w"),
    164: lambda s: s.gpu["power_limit_mw"] / 1000,
    153: lambda s: tlimit_margin_c(s.model, s.gpu),
    190: lambda s: int(str(s.gpu["pstate"]).removeprefix("P")),
    235: _model("pcie_gen_max"),
    236: _model("pcie_width_max"),
    237: _gpu("pcie_gen_current"),
    238: _gpu("pcie_width_current"),
    242: lambda s: s.gpu["clocks_event_counters_us"]["sync_boost"] * 1000,  # ns
    300: lambda s: 1,  # ECC mode: enabled, as on every datacenter GPU
    301: lambda s: 1,  # the pending mode: enabled too (nvidia-smi's ECC Mode Pending)
    # the row remapper (nvmlDeviceGetRemappedRows, its bank histogram), as nvidia-smi -q
    385: lambda s: _banks(s)[0],
    386: lambda s: _banks(s)[1],
    387: lambda s: 0,
    388: lambda s: 0,
    389: lambda s: 0,
    396: lambda s: int(RemappedRows(s.gpu["ecc"]).pending),  # (393-395: the exporter's)
}
# fmt: on
_XID_FIELD = FIELDS[ANSWERS_WHEN_LOST].field_id


def answered() -> frozenset[int]:
    """The field ids the fake GPUs answer with a value (when not lost)."""
    return frozenset(BY_ID) | frozenset(_STATIC)


def field_value(field_id: int, subject: Subject) -> Value | None:
    """Field ``field_id`` of the subject GPU, or None where DCGM would have a blank."""
    if subject.gpu["lost"] and field_id != _XID_FIELD:
        return None
    static = _STATIC.get(field_id)
    if static is not None:
        return static(subject)
    field = BY_ID.get(field_id)
    if field is None:
        return None
    return field.read(subject.gpu)
