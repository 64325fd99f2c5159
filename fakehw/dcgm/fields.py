"""DCGM's fields, as the fake GPUs answer them: each field's id (``dcgm_fields.h``), its
name, and its value read from a GPU record of the snapshot.

One table for everything that speaks DCGM here: the exporter's metrics (chosen by a
dcgm-exporter counters file, ``fakehw.dcgm.counters``) and ``fake-dcgmi``'s field ids.
Values are what DCGM reports: MHz, C, W, mJ, %, MiB, and the profiling fields
(``DCGM_FI_PROF_*``) as ratios of cycles (0-1) or bytes per second.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fakehw.contract import snapshot as records

GpuReader = Callable[[Mapping[str, Any]], float]


@dataclass(frozen=True)
class DcgmField:
    name: str  # DCGM_FI_DEV_GPU_TEMP
    field_id: int  # dcgm_fields.h: 150
    read: GpuReader


def _profile(key: str) -> GpuReader:
    return lambda g: float(g["profile"][key])


def _kib_per_s_as_bytes(key: str) -> GpuReader:
    return lambda g: float(g[key]) * 1024


# fmt: off
_FIELDS = (
    DcgmField("DCGM_FI_DEV_SM_CLOCK", 100, lambda g: g["clock_sm_mhz"]),
    DcgmField("DCGM_FI_DEV_MEM_CLOCK", 101, lambda g: g["clock_memory_mhz"]),
    DcgmField("DCGM_FI_DEV_MEMORY_TEMP", 140, lambda g: g["temperature_memory_c"]),
    DcgmField("DCGM_FI_DEV_GPU_TEMP", 150, lambda g: g["temperature_gpu_c"]),
    DcgmField("DCGM_FI_DEV_POWER_USAGE", 155, lambda g: round(g["power_draw_mw"] / 1000, 3)),
    DcgmField("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 156, lambda g: g["energy_mj"]),
    DcgmField("DCGM_FI_DEV_POWER_USAGE_INSTANT", 157,
              lambda g: round(g["power_instant_mw"] / 1000, 3)),
    DcgmField("DCGM_FI_DEV_PCIE_TX_THROUGHPUT", 200, lambda g: g["pcie_tx_kbps"]),
    DcgmField("DCGM_FI_DEV_PCIE_RX_THROUGHPUT", 201, lambda g: g["pcie_rx_kbps"]),
    DcgmField("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", 202, lambda g: 0),
    DcgmField("DCGM_FI_DEV_GPU_UTIL", 203, lambda g: g["utilization_gpu_pct"]),
    DcgmField("DCGM_FI_DEV_MEM_COPY_UTIL", 204, lambda g: g["utilization_memory_pct"]),
    DcgmField("DCGM_FI_DEV_ENC_UTIL", 206, lambda g: 0),
    DcgmField("DCGM_FI_DEV_DEC_UTIL", 207, lambda g: 0),
    DcgmField("DCGM_FI_DEV_XID_ERRORS", 230, lambda g: g["last_xid"]),
    DcgmField("DCGM_FI_DEV_POWER_VIOLATION", 240,
              lambda g: g["clocks_event_counters_us"]["sw_power_cap"] * 1000),
    # time under any thermal slowdown: the two overlap, so at least the longer of them
    DcgmField("DCGM_FI_DEV_THERMAL_VIOLATION", 241,
              lambda g: max(g["clocks_event_counters_us"]["sw_thermal_slowdown"],
                            g["clocks_event_counters_us"]["hw_thermal_slowdown"]) * 1000),
    DcgmField("DCGM_FI_DEV_FB_TOTAL", 250, lambda g: g["memory_total_mib"]),
    DcgmField("DCGM_FI_DEV_FB_FREE", 251,
              lambda g: g["memory_total_mib"] - g["memory_reserved_mib"] - g["memory_used_mib"]),
    DcgmField("DCGM_FI_DEV_FB_USED", 252, lambda g: g["memory_used_mib"]),
    DcgmField("DCGM_FI_DEV_FB_RESERVED", 253, lambda g: g["memory_reserved_mib"]),
    DcgmField("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", 310,
              lambda g: g["ecc"]["volatile_dram_corrected"] + g["ecc"]["volatile_sram_corrected"]),
    DcgmField("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", 311,
              lambda g: g["ecc"]["volatile_dram_uncorrected"]
              + g["ecc"]["volatile_sram_uncorrected"]),
    DcgmField("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", 312,
              lambda g: g["ecc"]["aggregate_dram_corrected"]
              + g["ecc"]["aggregate_sram_corrected"]),
    DcgmField("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", 313,
              lambda g: g["ecc"]["aggregate_dram_uncorrected"]
              + g["ecc"]["aggregate_sram_uncorrected"]),
    DcgmField("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", 393,
              lambda g: records.RemappedRows(g["ecc"]).uncorrectable),
    DcgmField("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", 394,
              lambda g: records.RemappedRows(g["ecc"]).correctable),
    DcgmField("DCGM_FI_DEV_ROW_REMAP_FAILURE", 395,
              lambda g: int(records.RemappedRows(g["ecc"]).failure)),
    # the host engine's rate of the links' byte counters, KiB/s / 1000 (its "MB/s")
    DcgmField("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", 449,
              lambda g: (g["nvlink_tx_kbps"] + g["nvlink_rx_kbps"]) // 1000),
    DcgmField("DCGM_FI_DEV_VGPU_LICENSE_STATUS", 526, lambda g: 0),
    DcgmField("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 1001, _profile("gr_engine_active")),
    DcgmField("DCGM_FI_PROF_SM_ACTIVE", 1002, _profile("sm_active")),
    DcgmField("DCGM_FI_PROF_SM_OCCUPANCY", 1003, _profile("sm_occupancy")),
    DcgmField("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", 1004, _profile("tensor_active")),
    DcgmField("DCGM_FI_PROF_DRAM_ACTIVE", 1005, _profile("dram_active")),
    DcgmField("DCGM_FI_PROF_PIPE_FP64_ACTIVE", 1006, _profile("fp64_active")),
    DcgmField("DCGM_FI_PROF_PIPE_FP32_ACTIVE", 1007, _profile("fp32_active")),
    DcgmField("DCGM_FI_PROF_PIPE_FP16_ACTIVE", 1008, _profile("fp16_active")),
    DcgmField("DCGM_FI_PROF_PCIE_TX_BYTES", 1009, _kib_per_s_as_bytes("pcie_tx_kbps")),
    DcgmField("DCGM_FI_PROF_PCIE_RX_BYTES", 1010, _kib_per_s_as_bytes("pcie_rx_kbps")),
    DcgmField("DCGM_FI_PROF_NVLINK_TX_BYTES", 1011, _kib_per_s_as_bytes("nvlink_tx_kbps")),
    DcgmField("DCGM_FI_PROF_NVLINK_RX_BYTES", 1012, _kib_per_s_as_bytes("nvlink_rx_kbps")),
)
# fmt: on

FIELDS: dict[str, DcgmField] = {f.name: f for f in _FIELDS}
BY_ID: dict[int, DcgmField] = {f.field_id: f for f in _FIELDS}
# Static fields dcgm-exporter serves as labels on every metric, not as metrics.
LABEL_FIELDS = ("DCGM_FI_DRIVER_VERSION",)
ANSWERS_WHEN_LOST = "DCGM_FI_DEV_XID_ERRORS"  # a GPU off the bus (XID 79) answers only this
