"""``fakehw exporter``: the fake cluster as NVIDIA's DCGM exporter shows it to Prometheus.

Every GPU of every node, with the DCGM exporter's metric names, types, help
texts (its ``default-counters.csv``) and labels: ``gpu``, ``UUID``,
``pci_bus_id``, ``device`` (``nvidia0``...), ``modelName``, the host label and
``DCGM_FI_DRIVER_VERSION``. The host label was ``Hostname`` in dcgm-exporter
until May 2026 and is ``hostname`` since; ``--host-label`` picks it (default
``hostname``; ``both`` serves both, for dashboards of either age).

The metrics are prometheus_client families, collected from one daemon
snapshot per scrape (so all figures of a scrape are of one instant). They
are written out the way dcgm-exporter writes them (``# TYPE`` lines name the
metric itself, counters carry no ``_total`` suffix, integers print as
integers), which prometheus_client's own writer would change.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.core import CollectorRegistry, Metric

from fakehw.client import Client, DaemonUnavailable

DEFAULT_LISTEN = "127.0.0.1:9400"  # dcgm-exporter's port; loopback unless asked
HOST_LABELS = ("hostname", "Hostname", "both")

# name, type, help (dcgm-exporter etc/default-counters.csv), value from a GPU record
METRICS: tuple[tuple[str, str, str, Any], ...] = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).",
     lambda g: g["clock_sm_mhz"]),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).",
     lambda g: g["clock_memory_mhz"]),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).",
     lambda g: g["temperature_memory_c"]),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).",
     lambda g: g["temperature_gpu_c"]),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).",
     lambda g: round(g["power_draw_mw"] / 1000, 3)),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter",
     "Total energy consumption since boot (in mJ).", lambda g: g["energy_mj"]),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries.",
     lambda g: 0),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).",
     lambda g: g["utilization_gpu_pct"]),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).",
     lambda g: g["utilization_memory_pct"]),
    ("DCGM_FI_DEV_ENC_UTIL", "gauge", "Encoder utilization (in %).", lambda g: 0),
    ("DCGM_FI_DEV_DEC_UTIL", "gauge", "Decoder utilization (in %).", lambda g: 0),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.",
     lambda g: g["last_xid"]),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).",
     lambda g: g["memory_total_mib"] - g["memory_reserved_mib"] - g["memory_used_mib"]),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).",
     lambda g: g["memory_used_mib"]),
    ("DCGM_FI_DEV_FB_RESERVED", "gauge", "Framebuffer memory reserved (in MiB).",
     lambda g: g["memory_reserved_mib"]),
    ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "counter",
     "Total number of NVLink bandwidth counters for all lanes",
     lambda g: g["nvlink_tx_kib_total"] + g["nvlink_rx_kib_total"]),
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter",
     "Number of remapped rows for uncorrectable errors", lambda g: 0),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter",
     "Number of remapped rows for correctable errors", lambda g: 0),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed",
     lambda g: 0),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active.",
     lambda g: round(g["utilization_gpu_pct"] / 100 * 0.97, 6)),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge",
     "Ratio of cycles the tensor (HMMA) pipe is active.",
     lambda g: round(g["utilization_gpu_pct"] / 100 * 0.46 * g["clock_sm_mhz"] / 1980, 6)),
    ("DCGM_FI_PROF_DRAM_ACTIVE", "gauge",
     "Ratio of cycles the device memory interface is active sending or receiving data.",
     lambda g: round(g["utilization_memory_pct"] / 100, 6)),
    ("DCGM_FI_PROF_PCIE_TX_BYTES", "counter",
     "The rate of data transmitted over the PCIe bus - including both protocol headers and "
     "data payloads - in bytes per second.", lambda g: g["pcie_tx_kbps"] * 1000),
    ("DCGM_FI_PROF_PCIE_RX_BYTES", "counter",
     "The rate of data received over the PCIe bus - including both protocol headers and "
     "data payloads - in bytes per second.", lambda g: g["pcie_rx_kbps"] * 1000),
)  # fmt: skip


class DcgmCollector:
    """A prometheus_client collector: one family per DCGM field, every GPU a sample."""

    def __init__(self, host_label: str = "hostname") -> None:
        if host_label not in HOST_LABELS:
            raise ValueError(f"host label must be one of {', '.join(HOST_LABELS)}")
        self.host_label = host_label
        self._client: Client | None = None
        self._lock = threading.Lock()

    def _snapshot(self) -> Any:
        with self._lock:
            for attempt in (1, 2):  # reconnect once if the daemon was restarted
                try:
                    if self._client is None:
                        self._client = Client.connect(client_name="fakehw-exporter")
                    return self._client.snapshot()
                except DaemonUnavailable:
                    if self._client is not None:
                        self._client.close()
                    self._client = None
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def labels(self, snapshot: Any, node: Any, gpu: Any) -> dict[str, str]:
        labels = {
            "gpu": str(gpu["index"]),
            "UUID": gpu["uuid"],
            "pci_bus_id": gpu["bus_id"],
            "device": f"nvidia{gpu['index']}",
            "modelName": snapshot["models"][gpu["model"]]["name"],
        }
        if self.host_label in ("Hostname", "both"):
            labels["Hostname"] = node["hostname"]
        if self.host_label in ("hostname", "both"):
            labels["hostname"] = node["hostname"]
        labels["DCGM_FI_DRIVER_VERSION"] = snapshot["driver_version"]
        return labels

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        rows = [
            (self.labels(snapshot, node, gpu), gpu)
            for node in snapshot["nodes"]
            for gpu in node["gpus"]
        ]
        for name, kind, documentation, read in METRICS:
            family = Metric(name, documentation, kind)
            for labels, gpu in rows:
                # a GPU off the bus (XID 79) answers nothing but its last XID
                if gpu.get("lost") and name != "DCGM_FI_DEV_XID_ERRORS":
                    continue
                family.add_sample(name, labels, read(gpu))
            yield family

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format as dcgm-exporter writes it."""
    out: list[str] = []
    for family in registry.collect():
        name = family.samples[0].name if family.samples else family.name
        out.append(f"# HELP {name} {family.documentation}")
        out.append(f"# TYPE {name} {family.type}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
            out.append(f"{sample.name}{{{labels}}} {_number(sample.value)}")
    return ("\n".join(out) + "\n").encode()


def serve(listen: str, host_label: str) -> ThreadingHTTPServer:
    """An HTTP server with ``/metrics`` (and a pointer to it at ``/``), not yet running."""
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"--listen {listen!r} is not HOST:PORT (example: {DEFAULT_LISTEN})")
    collector = DcgmCollector(host_label)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/metrics":
                try:
                    body, status = exposition(registry), 200
                except DaemonUnavailable as exc:
                    body, status = f"fakehw daemon unavailable: {exc}\n".encode(), 503
                content_type = "text/plain; version=0.0.4; charset=utf-8"
            else:
                body, status = b"fakehw DCGM-style exporter: metrics at /metrics\n", 200
                content_type = "text/plain; charset=utf-8"
                if self.path != "/":
                    body, status = b"not found\n", 404
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would flood the terminal

    server = ThreadingHTTPServer((host.strip("[]"), int(port_text)), Handler)
    server.daemon_threads = True
    return server
