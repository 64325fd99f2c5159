"""The cluster's state as a client reads it: quantized as NVML returns it, in the
snapshot's plain records (``fakehw.contract.snapshot``).

The model (``fakehw.devices``) keeps floats; what a client sees is rounded once per
tick, when someone looks: a daemon nobody watches skips the work, and since the
sensor noise was drawn during the tick, looking never changes the story. Nothing
here advances the model or draws a random number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fakehw import specs
from fakehw.contract import snapshot as records
from fakehw.contract import versions
from fakehw.thermal import FloatArray, memory_dynamic_power_w

if TYPE_CHECKING:
    from fakehw.devices import Cluster

SENSOR_NOISE_C = 0.3
# pmon on the real H100 and H200: sm 99 % while the device reads 100 %;
# mem 44-56 % while the device reads 50-57 %.
PROCESS_SM_SHARE = 0.995
PROCESS_MEMORY_SHARE = 0.9


class Publisher:
    """Reads one cluster and builds its snapshots and summaries."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._tick = -1  # the tick the reported_* arrays were quantized at

    def stale(self) -> None:
        """The state changed outside a tick (a fault, a restore): quantize it again."""
        self._tick = -1

    def _ensure_published(self) -> None:
        """Quantize the state to what NVML returns, at most once per tick.

        Done when someone looks (a daemon nobody watches skips it); the sensor
        noise was drawn during the tick, so looking never changes the story.
        """
        c = self.cluster
        if self._tick == c.tick:
            return
        self._tick = c.tick
        average_w, instant_w, sensor_noise = c.raw_readings
        spec = c.spec
        die_c = c.die_temp_c() + SENSOR_NOISE_C * sensor_noise[0]
        memory_c = c.memory_temp_c() + SENSOR_NOISE_C * sensor_noise[1]
        self.reported_die_c = np.rint(die_c).astype(np.int64)
        self.reported_memory_c = np.rint(memory_c).astype(np.int64)
        self.reported_power_mw = np.rint(average_w * 1000.0).astype(np.int64)
        self.reported_instant_mw = np.rint(instant_w * 1000.0).astype(np.int64)
        memory_power = spec.memory_power_idle_w + memory_dynamic_power_w(
            spec, c.memory_activity, c.memory_clock_share()
        )
        self.reported_memory_power_mw = np.rint(memory_power * 1000.0).astype(np.int64)
        self.reported_sm_mhz = np.rint(c.sm_clock_mhz).astype(np.int64)
        video = np.where(c.has_context, spec.video_clock_max_mhz, spec.video_clock_idle_mhz)
        self.reported_video_mhz = video.astype(np.int64)
        self.reported_pcie_kbps = np.rint(c.pcie_kbps).astype(np.int64)
        self.reported_nvlink_kbps = np.rint(c.nvlink_kbps).astype(np.int64)

    def snapshot(self, nodes: Sequence[int], detail: bool = False) -> records.Snapshot:
        """The current state of ``nodes`` as plain records (``Cluster.snapshot``)."""
        c = self.cluster
        self._ensure_published()
        spec = c.spec
        return {
            "protocol": 1,
            "tick": c.tick,
            "time": c.time,
            "driver_version": versions.DRIVER_VERSION,
            "cuda_version": versions.CUDA_VERSION,
            "nvml_version": versions.NVML_VERSION,
            "cluster": c.config.to_json(),
            "models": {spec.key: specs.model_record(spec)},
            "nodes": [self._node_record(node, detail) for node in nodes],
        }

    def summary(self) -> records.ClusterSummary:
        """A few figures per GPU for the whole cluster, as columns (a few bytes a GPU):
        what a cluster-wide view draws where a full snapshot would be megabytes."""
        c = self.cluster
        self._ensure_published()
        processes = np.bincount(c.slots.gpu, minlength=c.gpu_count)
        columns: dict[str, list[int]] = {
            "utilization_gpu_pct": c.util_gpu_pct.tolist(),
            "temperature_gpu_c": self.reported_die_c.tolist(),
            "memory_used_mib": c.memory_used_mib.tolist(),
            "power_draw_mw": self.reported_power_mw.tolist(),
            "power_limit_mw": np.rint(c.power_limit_w * 1000.0).astype(np.int64).tolist(),
            "clock_sm_mhz": self.reported_sm_mhz.tolist(),
            "lost": c.lost.astype(np.int64).tolist(),
            "processes": processes.tolist(),
        }
        return {
            "protocol": 1,
            "tick": c.tick,
            "time": c.time,
            "cluster": c.config.to_json(),
            "model_name": c.spec.name,
            "memory_total_mib": c.spec.memory_total_mib,
            "gpus_per_node": c.gpus_per_node,
            "hostnames": list(c.hostnames),
            "columns": columns,
        }

    def _node_record(self, node: int, detail: bool = False) -> records.NodeRecord:
        c = self.cluster
        spec = c.spec
        lo, hi = node * c.gpus_per_node, (node + 1) * c.gpus_per_node
        section = slice(lo, hi)

        def ints(array: npt.NDArray[np.int64]) -> list[int]:
            values: list[int] = array[section].tolist()
            return values

        die, mem = ints(self.reported_die_c), ints(self.reported_memory_c)
        power, instant = ints(self.reported_power_mw), ints(self.reported_instant_mw)
        limit = np.rint(c.power_limit_w[section] * 1000.0).astype(np.int64).tolist()
        memory_power = ints(self.reported_memory_power_mw)
        energy = np.rint(c.energy_j[section] * 1000.0).astype(np.int64).tolist()
        util_gpu, util_mem = ints(c.util_gpu_pct), ints(c.util_mem_pct)
        used = ints(c.memory_used_mib)
        sm, video = ints(self.reported_sm_mhz), ints(self.reported_video_mhz)
        memory_clock = np.rint(c.memory_clock_mhz[section]).astype(np.int64).tolist()
        persistence = c.persistence_mode[section].tolist()
        kernels = np.round(c.kernel_activity[:, section], 4).tolist()  # KERNEL_FIELDS' order
        dram = np.round(c.memory_activity[section], 4).tolist()
        engine = np.round(c.activity[section], 4).tolist()
        reasons = ints(c.clocks_event_reasons)
        counters = np.rint(c.counters_us[:, section]).astype(np.int64).tolist()
        pcie_tx, pcie_rx = self.reported_pcie_kbps[:, section].tolist()
        nv_tx, nv_rx = self.reported_nvlink_kbps[:, section].tolist()
        nv_tx_total, nv_rx_total = np.rint(c.nvlink_kib_total[:, section]).astype(np.int64).tolist()
        ecc_volatile, ecc_history = ints(c.ecc_volatile), ints(c.ecc_history)
        xid_count, last_xid = ints(c.xid_count), ints(c.last_xid)
        ecc_uncorrected = ints(c.ecc_uncorrected)
        ecc_uncorrected_volatile = ints(c.ecc_uncorrected_volatile)
        lost = c.lost[section].tolist()
        faults = [c.faults_of(g) for g in range(lo, hi)]
        gpus: list[records.GpuRecord] = []
        for k, ident in enumerate(c.identities[lo:hi]):
            gpus.append(
                {
                    "index": ident.local_index,
                    "global_index": ident.global_index,
                    "model": spec.key,
                    "uuid": ident.uuid,
                    "serial": ident.serial,
                    "bus_id": ident.bus_id,
                    "pci_domain": ident.pci_domain,
                    "pci_bus": ident.pci_bus,
                    "pci_device": ident.pci_device,
                    "minor_number": ident.local_index,
                    "module_id": ident.module_id,
                    "board_id": ident.board_id,
                    "pdi": ident.pdi,
                    "pstate": "P0",
                    "persistence_mode": persistence[k],
                    "temperature_gpu_c": die[k],
                    "temperature_memory_c": mem[k],
                    "power_draw_mw": power[k],
                    "power_instant_mw": instant[k],
                    "power_limit_mw": limit[k],
                    "memory_power_mw": memory_power[k],
                    "energy_mj": energy[k],
                    "utilization_gpu_pct": util_gpu[k],
                    "utilization_memory_pct": util_mem[k],
                    "memory_total_mib": spec.memory_total_mib,
                    "memory_reserved_mib": spec.memory_reserved_mib,
                    "memory_used_mib": used[k],
                    "bar1_used_mib": used[k] + 1,
                    "clock_sm_mhz": sm[k],
                    "clock_memory_mhz": memory_clock[k],
                    "clock_video_mhz": video[k],
                    "clocks_event_reasons": reasons[k],
                    "clocks_event_counters_us": {
                        name: counters[c][k] for c, name in enumerate(records.COUNTER_NAMES)
                    },
                    "pcie_tx_kbps": pcie_tx[k],
                    "pcie_rx_kbps": pcie_rx[k],
                    "pcie_gen_current": spec.pcie_gen_max,
                    "pcie_width_current": spec.pcie_width_max,
                    "nvlink_tx_kbps": nv_tx[k],
                    "nvlink_rx_kbps": nv_rx[k],
                    "nvlink_tx_kib_total": nv_tx_total[k],
                    "nvlink_rx_kib_total": nv_rx_total[k],
                    "profile": {
                        "gr_engine_active": engine[k],
                        "sm_active": kernels[0][k],
                        "sm_occupancy": kernels[1][k],
                        "tensor_active": kernels[2][k],
                        "fp64_active": kernels[3][k],
                        "fp32_active": kernels[4][k],
                        "fp16_active": kernels[5][k],
                        "dram_active": dram[k],
                    },
                    "ecc": {
                        "volatile_dram_corrected": ecc_volatile[k],
                        "volatile_dram_uncorrected": ecc_uncorrected_volatile[k],
                        "volatile_sram_corrected": 0,
                        "volatile_sram_uncorrected": 0,
                        "aggregate_dram_corrected": ecc_history[k] + ecc_volatile[k],
                        "aggregate_dram_uncorrected": ecc_uncorrected[k],
                        "aggregate_sram_corrected": 0,
                        "aggregate_sram_uncorrected": 0,
                    },
                    "xid_count": xid_count[k],
                    "last_xid": last_xid[k],
                    "lost": lost[k],
                    "faults": faults[k],
                }
            )
        if detail:
            for record, samples in zip(gpus, self._samples(section), strict=True):
                record["samples"] = samples
        return {
            "index": node,
            "hostname": c.hostnames[node],
            "host": self._host_record(node),
            "gpus": gpus,
            "processes": self._process_records(lo, hi),
        }

    def _host_record(self, node: int) -> records.HostRecord:
        c = self.cluster
        host = c.spec.host
        numa = [min(i // host.gpus_per_numa, host.cpu_sockets - 1) for i in range(c.gpus_per_node)]
        cores = host.cores_per_socket
        threads = host.cpu_sockets * cores

        def affinity(socket: int) -> str:
            first = socket * cores
            ranges = [f"{first}-{first + cores - 1}"]
            if host.threads_per_core > 1:
                ranges.append(f"{threads + first}-{threads + first + cores - 1}")
            return ",".join(ranges)

        return {
            "product": host.product,
            "cpu_model": host.cpu_model,
            "logical_cpus": host.logical_cpus,
            "cpu_sockets": host.cpu_sockets,
            "memory_gib": host.memory_gib,
            "gpu_numa_node": numa,
            "gpu_cpu_affinity": [affinity(s) for s in numa],
            **c.host_load.record(node),  # type: ignore[typeddict-item]
        }

    def _process_records(self, lo: int, hi: int) -> list[records.ProcessRecord]:
        c = self.cluster
        on_node = (c.slots.gpu >= lo) & (c.slots.gpu < hi)
        rows: list[records.ProcessRecord] = []
        for slot in np.flatnonzero(on_node).tolist():
            pid = int(c.slots.pid[slot])
            process = c.processes[pid]
            gpu = int(c.slots.gpu[slot])
            sharing = max(1, int(c.slots.processes_per_gpu[gpu]))
            rows.append(
                {
                    "pid": pid,
                    "name": process.name,
                    "user": process.user,
                    "gpu_index": gpu - lo,
                    "gpu_uuid": c.identities[gpu].uuid,
                    "used_memory_mib": round(float(c.slots.used_mib[slot])),
                    "type": "C",
                    "phase": process.phase,
                    "host_process": process.is_host_process,
                    # Process samples count kernel time a little short of the
                    # device's (pmon shows 99 % on a saturated GPU, memory lower).
                    "sm_util_pct": int(c.util_gpu_pct[gpu] * PROCESS_SM_SHARE) // sharing,
                    "mem_util_pct": int(c.util_mem_pct[gpu] * PROCESS_MEMORY_SHARE) // sharing,
                }
            )
        rows.sort(key=lambda r: (r["gpu_index"], r["pid"]))
        return rows

    def _samples(self, section: slice) -> list[dict[str, list[float]]]:
        """Per GPU: [duration s, count, max, min, avg] of each sample buffer."""
        c = self.cluster

        def stats(values: npt.NDArray[np.float64], times: FloatArray) -> list[list[float]]:
            kept = ~np.isnan(times)
            count = int(kept.sum())
            if count == 0:
                return [[0.0, 0, 0.0, 0.0, 0.0] for _ in range(values.shape[1])]
            span = float(np.nanmax(times) - np.nanmin(times))
            rows = values[kept]
            return [
                [span, count, float(hi), float(lo), float(mean)]
                for hi, lo, mean in zip(
                    rows.max(axis=0), rows.min(axis=0), rows.mean(axis=0), strict=True
                )
            ]

        util_times = c.util_history_times
        gpu = stats(c.util_history[:, 0, section].astype(np.float64), util_times)
        memory = stats(c.util_history[:, 1, section].astype(np.float64), util_times)
        power = stats(
            c.power_history[:, section].astype(np.float64) * 1000.0, c.power_history_times
        )
        return [
            {"gpu_util": g, "memory_util": m, "power_mw": p}
            for g, m, p in zip(gpu, memory, power, strict=True)
        ]
