"""The NVML snapshot in shared memory: one file per node that the daemon rewrites
each tick and ``libnvidia-ml.so.1`` (``fakehw/nvml/native/``) maps read-only.

A program that loads the library asks the daemon once, at ``nvmlInit``, to publish
its node (the ``publish`` operation, docs/protocol.md); from then on every call reads
the mapped file, with no round trip. The file is

* a header (``HEADER``): magic ``FHWNVML1``, the layout version, the sizes of its
  parts, a sequence number, the daemon's tick and time, the node, its GPU and process
  counts, the driver's version strings;
* ``gpu_count`` GPU records (``GPU``), each the GPU's readings and its model's
  constants, in index order;
* ``process_count`` process records (``PROCESS``), the processes on the node's GPUs.

All numbers are little-endian, each field at its natural alignment (the fields of a
part are ordered 8-byte, then 4-byte, then text: ``packed_fields``), strings
NUL-padded. A seqlock keeps readers from a half-written snapshot: the writer makes
``sequence`` odd, writes, then makes it even again; a reader copies what it needs
between two readings of an even, unchanged ``sequence`` and retries otherwise.

The C header the library compiles against, ``fakehw_snapshot.h``, is generated from
the tables below (``c_header``); a test keeps it in step. A new field goes at the end
of its part's table and raises ``LAYOUT_VERSION``; a reader refuses a version it does
not know (the library answers ``NVML_ERROR_LIB_RM_VERSION_MISMATCH``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fakehw.contract.config import MAX_GPUS_PER_NODE
from fakehw.contract.limits import MAX_PROCESSES_PER_GPU

MAGIC = b"FHWNVML1"
LAYOUT_VERSION = 4
# room for every process the daemon allows on the largest node (64 per GPU on 16 GPUs)
MAX_PROCESSES_PER_NODE = MAX_PROCESSES_PER_GPU * MAX_GPUS_PER_NODE
MIB = 1 << 20

# struct codes -> C types
C_TYPES = {"Q": "uint64_t", "q": "int64_t", "d": "double", "I": "uint32_t", "i": "int32_t"}


@dataclass(frozen=True)
class Field:
    name: str
    code: str  # a struct code: Q q d I i, or "Ns" (N bytes of text)
    doc: str

    @property
    def size(self) -> int:
        return struct.calcsize("<" + self.code)

    @property
    def rank(self) -> int:
        """Where the field goes: the magic first, 8-byte numbers, 4-byte ones, text."""
        if self.name == "magic":
            return -1
        return 2 if self.code.endswith("s") else (0 if self.size == 8 else 1)


def packed_fields(fields: tuple[Field, ...]) -> tuple[Field, ...]:
    return tuple(sorted(fields, key=lambda f: f.rank))  # stable: the table's order within


HEADER = packed_fields((
    Field("magic", "8s", "FHWNVML1"),
    Field("layout_version", "I", "LAYOUT_VERSION"),
    Field("header_size", "I", "bytes of this header"),
    Field("gpu_record_size", "I", "bytes of each GPU record"),
    Field("process_record_size", "I", "bytes of each process record"),
    Field("max_processes", "I", "process records the file has room for"),
    Field("sequence", "Q", "seqlock: odd while the daemon writes"),
    Field("tick", "Q", "the model's tick this snapshot is of"),
    Field("time", "d", "the model's time, seconds since the epoch"),
    Field("node_index", "I", "the node"),
    Field("gpu_count", "I", "GPU records that follow"),
    Field("process_count", "I", "process records after the GPUs"),
    Field("daemon_pid", "I", "the daemon that writes the file"),
    Field("closed", "I", "1: its daemon has stopped, no more updates (ask the next one)"),
    Field("cuda_version", "I", "the driver's CUDA version, 1000 x major + 10 x minor"),
    Field("driver_version", "32s", "e.g. 580.159.04"),
    Field("nvml_version", "32s", "e.g. 13.580.159.04"),
    Field("hostname", "64s", "the node's hostname"),
))  # fmt: skip

GPU = packed_fields((
    Field("energy_mj", "Q", "energy since the driver loaded, mJ"),
    Field("memory_total_bytes", "Q", "framebuffer memory"),
    Field("memory_reserved_bytes", "Q", "the driver's reservation"),
    Field("memory_used_bytes", "Q", "in use by processes"),
    Field("bar1_total_bytes", "Q", "BAR1 aperture"),
    Field("bar1_used_bytes", "Q", "BAR1 in use"),
    Field("clocks_event_reasons", "Q", "nvmlClocksEventReasons bits"),
    Field("event_sw_power_cap_us", "Q", "time spent capped by software power"),
    Field("event_sync_boost_us", "Q", "time held by sync boost"),
    Field("event_sw_thermal_us", "Q", "time in software thermal slowdown"),
    Field("event_hw_thermal_us", "Q", "time in hardware thermal slowdown"),
    Field("event_hw_power_brake_us", "Q", "time braked by the hardware power brake"),
    Field("nvlink_tx_kib_total", "Q", "NVLink data sent since load, KiB"),
    Field("nvlink_rx_kib_total", "Q", "NVLink data received since load, KiB"),
    Field("pdi", "Q", "the GPU's platform data identifier"),
    Field("ecc_volatile_dram_corrected", "Q", ""),
    Field("ecc_volatile_dram_uncorrected", "Q", ""),
    Field("ecc_volatile_sram_corrected", "Q", ""),
    Field("ecc_volatile_sram_uncorrected", "Q", ""),
    Field("ecc_aggregate_dram_corrected", "Q", ""),
    Field("ecc_aggregate_dram_uncorrected", "Q", ""),
    Field("ecc_aggregate_sram_corrected", "Q", ""),
    Field("ecc_aggregate_sram_uncorrected", "Q", ""),
    Field("index", "I", "the GPU's index on its node"),
    Field("minor_number", "I", "/dev/nvidiaN"),
    Field("module_id", "I", ""),
    Field("board_id", "I", ""),
    Field("pci_domain", "I", ""),
    Field("pci_bus", "I", ""),
    Field("pci_device", "I", ""),
    Field("pci_device_id", "I", "PCI device id and vendor, as nvmlPciInfo_t has it"),
    Field("pci_subsystem_id", "I", ""),
    Field("lost", "I", "1: fallen off the bus (XID 79)"),
    Field("pstate", "I", "performance state, 0 for P0"),
    Field("persistence_mode", "I", "1: persistence mode on (nvidia-smi -pm)"),
    Field("temperature_gpu_c", "i", ""),
    Field("temperature_memory_c", "i", ""),
    Field("power_draw_mw", "I", "power.draw as the driver reports it"),
    Field("power_instant_mw", "I", "power.draw.instant"),
    Field("power_limit_mw", "I", "the enforced limit"),
    Field("power_default_mw", "I", ""),
    Field("power_min_mw", "I", ""),
    Field("power_max_mw", "I", ""),
    Field("memory_power_mw", "I", "the memory's share of the board's power"),
    Field("utilization_gpu_pct", "I", ""),
    Field("utilization_memory_pct", "I", ""),
    Field("clock_sm_mhz", "I", "graphics and SM clock"),
    Field("clock_memory_mhz", "I", ""),
    Field("clock_video_mhz", "I", ""),
    Field("clock_sm_max_mhz", "I", ""),
    Field("clock_sm_idle_mhz", "I", ""),
    Field("clock_step_mhz", "I", "the SM clock's step between supported clocks"),
    Field("clock_memory_max_mhz", "I", ""),
    Field("clock_memory_min_mhz", "I", ""),
    Field("clock_video_max_mhz", "I", ""),
    Field("pcie_tx_kbps", "I", ""),
    Field("pcie_rx_kbps", "I", ""),
    Field("pcie_gen_current", "I", ""),
    Field("pcie_width_current", "I", ""),
    Field("pcie_gen_max", "I", ""),
    Field("pcie_width_max", "I", ""),
    Field("nvlink_tx_kbps", "I", ""),
    Field("nvlink_rx_kbps", "I", ""),
    Field("nvlink_count", "I", "NVLinks of the GPU"),
    Field("xid_count", "I", "XIDs since load"),
    Field("last_xid", "I", "the latest XID, 0 for none"),
    Field("architecture", "I", "nvmlDeviceArchitecture_t"),
    Field("cc_major", "I", "CUDA compute capability"),
    Field("cc_minor", "I", ""),
    Field("cuda_cores", "I", ""),
    Field("sm_count", "I", ""),
    Field("memory_bus_width_bits", "I", ""),
    Field("fan_count", "I", "0: passively cooled"),
    Field("temp_shutdown_c", "I", ""),
    Field("temp_slowdown_c", "I", ""),
    Field("temp_max_operating_c", "I", ""),
    Field("temp_memory_max_c", "I", ""),
    Field("remapped_rows_banks", "I", ""),
    Field("tlimit_base_c", "I", "the temperature the margin (T.Limit) counts down to; 0: none"),
    Field("numa_node", "I", "the host's NUMA node the GPU hangs off"),
    Field("nvlink_topology", "I", "0: no NVLink, 1: every pair (NVSwitch), 2: bridged pairs"),
    Field("uuid", "96s", "GPU-xxxxxxxx-..."),
    Field("serial", "32s", ""),
    Field("bus_id", "32s", "00000000:18:00.0"),
    Field("name", "96s", "NVIDIA H100 80GB HBM3"),
    Field("vbios_version", "32s", ""),
    Field("board_part_number", "32s", ""),
    Field("gpu_part_number", "32s", ""),
    Field("inforom_image", "32s", ""),
    Field("inforom_oem", "16s", ""),
    Field("inforom_ecc", "16s", ""),
))  # fmt: skip

PROCESS = packed_fields((
    Field("used_memory_bytes", "Q", ""),
    Field("pid", "I", ""),
    Field("gpu_index", "I", "the GPU it runs on, by index"),
    Field("sm_util_pct", "I", ""),
    Field("mem_util_pct", "I", ""),
    Field("name", "256s", "the process's name, as nvidia-smi shows it (NUL-terminated)"),
))  # fmt: skip

ARCHITECTURES = {"Ampere": 7, "Hopper": 9, "Blackwell": 10}  # nvmlDeviceArchitecture_t


def _format(fields: tuple[Field, ...]) -> struct.Struct:
    codes = "".join(f.code for f in fields)
    size = struct.calcsize("<" + codes)
    return struct.Struct("<" + codes + "x" * (-size % 8))  # each part a multiple of 8


HEADER_STRUCT, GPU_STRUCT, PROCESS_STRUCT = _format(HEADER), _format(GPU), _format(PROCESS)


def file_size(gpus: int) -> int:
    processes = MAX_PROCESSES_PER_NODE * PROCESS_STRUCT.size
    return HEADER_STRUCT.size + gpus * GPU_STRUCT.size + processes


def _text(value: object) -> bytes:
    return str(value).encode()


def _cuda(version: str) -> int:
    major, _, minor = version.partition(".")
    return int(major) * 1000 + int(minor or 0) * 10


GPU_VALUES: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], object]] = {
    "memory_total_bytes": lambda g, m: g["memory_total_mib"] * MIB,
    "memory_reserved_bytes": lambda g, m: g["memory_reserved_mib"] * MIB,
    "memory_used_bytes": lambda g, m: g["memory_used_mib"] * MIB,
    "bar1_total_bytes": lambda g, m: m["bar1_total_mib"] * MIB,
    "bar1_used_bytes": lambda g, m: g["bar1_used_mib"] * MIB,
    "event_sw_power_cap_us": lambda g, m: g["clocks_event_counters_us"]["sw_power_cap"],
    "event_sync_boost_us": lambda g, m: g["clocks_event_counters_us"]["sync_boost"],
    "event_sw_thermal_us": lambda g, m: g["clocks_event_counters_us"]["sw_thermal_slowdown"],
    "event_hw_thermal_us": lambda g, m: g["clocks_event_counters_us"]["hw_thermal_slowdown"],
    "event_hw_power_brake_us": lambda g, m: g["clocks_event_counters_us"][
        "hw_power_brake_slowdown"
    ],
    "lost": lambda g, m: int(bool(g.get("lost"))),
    "persistence_mode": lambda g, m: int(bool(g["persistence_mode"])),
    "pstate": lambda g, m: int(str(g["pstate"]).removeprefix("P")),
    "power_default_mw": lambda g, m: round(m["power_default_w"] * 1000),
    "power_min_mw": lambda g, m: round(m["power_min_w"] * 1000),
    "power_max_mw": lambda g, m: round(m["power_max_w"] * 1000),
    "clock_sm_max_mhz": lambda g, m: m["sm_clock_max_mhz"],
    "clock_sm_idle_mhz": lambda g, m: m["sm_clock_idle_mhz"],
    "clock_step_mhz": lambda g, m: m["clock_step_mhz"],
    "clock_memory_max_mhz": lambda g, m: m["mem_clock_max_mhz"],
    "clock_memory_min_mhz": lambda g, m: m["mem_clock_min_mhz"],
    "clock_video_max_mhz": lambda g, m: m["video_clock_max_mhz"],
    "architecture": lambda g, m: ARCHITECTURES[m["architecture"]],
    "cc_major": lambda g, m: int(m["compute_capability"].split(".")[0]),
    "cc_minor": lambda g, m: int(m["compute_capability"].split(".")[1]),
    "name": lambda g, m: _text(m["name"]),
    "tlimit_base_c": lambda g, m: m["tlimit"]["base_c"] if m["tlimit"] else 0,  # an A100: none
}
MODEL_KEYS = {
    "pci_device_id", "pci_subsystem_id", "pcie_gen_max", "pcie_width_max", "nvlink_count",
    "cuda_cores", "sm_count", "memory_bus_width_bits", "fan_count", "temp_shutdown_c",
    "temp_slowdown_c", "temp_max_operating_c", "temp_memory_max_c", "remapped_rows_banks",
    "vbios_version", "board_part_number", "gpu_part_number", "inforom_image", "inforom_oem",
    "inforom_ecc",
}  # fmt: skip


NVLINK_TOPOLOGIES = {"all": 1, "pairs": 2}


def _gpu_value(field: Field, gpu: Mapping[str, Any], model: Mapping[str, Any],
               host: Mapping[str, Any]) -> object:  # fmt: skip
    compute = GPU_VALUES.get(field.name)
    if field.name == "numa_node":
        value: object = host["gpu_numa_node"][gpu["index"]]
    elif field.name == "nvlink_topology":
        value = NVLINK_TOPOLOGIES.get(model["nvlink_topology"], 0) if model["nvlink_count"] else 0
    elif compute is not None:
        value = compute(gpu, model)
    elif field.name.startswith("ecc_"):
        value = gpu["ecc"][field.name.removeprefix("ecc_")]
    else:
        value = (model if field.name in MODEL_KEYS else gpu)[field.name]
    return _text(value) if field.code.endswith("s") and not isinstance(value, bytes) else value


def _pack(layout: struct.Struct, fields: tuple[Field, ...], values: list[object]) -> bytes:
    """A record; each text cut to whole characters one byte short of its field, so that
    a C reader always finds its NUL (the magic is eight bytes, no text)."""
    fitted: list[object] = []
    for field, value in zip(fields, values, strict=True):
        if field.code.endswith("s") and field.name != "magic" and isinstance(value, bytes):
            room = int(field.code[:-1]) - 1
            value = value[:room].decode("utf-8", "ignore").encode()
        fitted.append(value)
    return layout.pack(*fitted)


def pack_node(snapshot: Mapping[str, Any], node: Mapping[str, Any], sequence: int,
              daemon_pid: int) -> bytes:  # fmt: skip
    """The file's contents for ``node`` (a node of the daemon's ``snapshot``)."""
    models = snapshot["models"]
    processes = node["processes"][:MAX_PROCESSES_PER_NODE]
    header = {
        "magic": MAGIC,
        "layout_version": LAYOUT_VERSION,
        "header_size": HEADER_STRUCT.size,
        "gpu_record_size": GPU_STRUCT.size,
        "process_record_size": PROCESS_STRUCT.size,
        "max_processes": MAX_PROCESSES_PER_NODE,
        "sequence": sequence,
        "tick": snapshot["tick"],
        "time": snapshot["time"],
        "node_index": node["index"],
        "gpu_count": len(node["gpus"]),
        "process_count": len(processes),
        "daemon_pid": daemon_pid,
        "closed": 0,
        "cuda_version": _cuda(snapshot["cuda_version"]),
        "driver_version": _text(snapshot["driver_version"]),
        "nvml_version": _text(snapshot["nvml_version"]),
        "hostname": _text(node["hostname"]),
    }
    parts = [_pack(HEADER_STRUCT, HEADER, [header[f.name] for f in HEADER])]
    for gpu in node["gpus"]:
        model = models[gpu["model"]]
        parts.append(_pack(GPU_STRUCT, GPU, [_gpu_value(f, gpu, model, node["host"]) for f in GPU]))
    for process in processes:
        values = {
            "used_memory_bytes": process["used_memory_mib"] * MIB,
            "pid": process["pid"],
            "gpu_index": process["gpu_index"],
            "sm_util_pct": process.get("sm_util_pct", 0),
            "mem_util_pct": process.get("mem_util_pct", 0),
            "name": _text(process["name"]),
        }
        parts.append(_pack(PROCESS_STRUCT, PROCESS, [values[f.name] for f in PROCESS]))
    return b"".join(parts)


def field_offset(name: str) -> int:
    """Where a header field lies in the file (the writer's seqlock and close mark)."""
    offset = 0
    for f in HEADER:
        if f.name == name:
            return offset
        offset += f.size
    raise KeyError(name)


def unpack(data: bytes) -> dict[str, Any]:
    """A file's contents as dictionaries (a reader's view: tests, tools)."""

    def record(fields: tuple[Field, ...], layout: struct.Struct, offset: int) -> dict[str, Any]:
        values = layout.unpack_from(data, offset)
        return {
            f.name: v.rstrip(b"\0").decode() if isinstance(v, bytes) else v
            for f, v in zip(fields, values, strict=False)
        }

    header = record(HEADER, HEADER_STRUCT, 0)
    if header["magic"] != MAGIC.decode() or header["layout_version"] != LAYOUT_VERSION:
        raise ValueError("not a fakehw NVML snapshot of this layout")
    offset = HEADER_STRUCT.size
    gpus = []
    for _ in range(header["gpu_count"]):
        gpus.append(record(GPU, GPU_STRUCT, offset))
        offset += GPU_STRUCT.size
    processes = []
    for _ in range(header["process_count"]):
        processes.append(record(PROCESS, PROCESS_STRUCT, offset))
        offset += PROCESS_STRUCT.size
    return {"header": header, "gpus": gpus, "processes": processes}


def c_header() -> str:
    """``fakehw_snapshot.h``: the layout as C structs, with its sizes asserted."""

    def struct_text(name: str, fields: tuple[Field, ...], layout: struct.Struct) -> list[str]:
        lines = [f"typedef struct {name} {{"]
        used = 0
        for f in fields:
            if f.code.endswith("s"):
                line = f"    char {f.name}[{f.size}];"
            else:
                line = f"    {C_TYPES[f.code]} {f.name};"
            lines.append(line + (f"  /* {f.doc} */" if f.doc else ""))
            used += f.size
        if layout.size > used:
            lines.append(f"    char _pad[{layout.size - used}];")
        size = f"sizeof({name}) == {layout.size}"
        lines += [f"}} {name};", f'_Static_assert({size}, "{name} layout");', ""]
        return lines

    lines = [
        "/* Generated by fakehw/contract/nvmlshm.py (c_header): do not edit. */",
        "#ifndef FAKEHW_SNAPSHOT_H",
        "#define FAKEHW_SNAPSHOT_H",
        "#include <stdint.h>",
        "",
        f'#define FAKEHW_SNAPSHOT_MAGIC "{MAGIC.decode()}"',
        f"#define FAKEHW_SNAPSHOT_LAYOUT {LAYOUT_VERSION}",
        f"#define FAKEHW_SNAPSHOT_MAX_PROCESSES {MAX_PROCESSES_PER_NODE}",
        "",
        *struct_text("fakehw_header_t", HEADER, HEADER_STRUCT),
        *struct_text("fakehw_gpu_t", GPU, GPU_STRUCT),
        *struct_text("fakehw_process_t", PROCESS, PROCESS_STRUCT),
        "#endif",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m fakehw.contract.nvmlshm: regenerate the C header
    import pathlib

    target = pathlib.Path(__file__).parents[1] / "nvml" / "native" / "fakehw_snapshot.h"
    target.write_text(c_header())
    print(f"wrote {target}")
