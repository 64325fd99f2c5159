"""``nvidia-smi topo`` and ``nvidia-smi nvlink``: how the GPUs of a node connect.

SXM parts on an NVSwitch baseboard reach every peer over all their links
(``NV18`` for H100/H200, ``NV12`` for A100); PCIe cards are bridged in pairs
(0-1, 2-3, ...) and otherwise talk over PCIe: ``NODE`` within a CPU socket,
``SYS`` across sockets. The real tool underlines the matrix headers with
terminal codes, to a terminal and to a pipe or file alike (its captures in
``tests/real/*/static/topo_*.txt`` hold them), and so does this one.
"""

from __future__ import annotations

from fakehw import TYPE_CHECKING
from fakehw.smi.common import model_of

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from fakehw.contract.snapshot import GpuRecord, NodeRecord, Snapshot

UNDERLINE, RESET = "\x1b[4m", "\x1b[0m"
MATRIX_LEGEND = """
Legend:

  X    = Self
  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)
  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node
  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)
  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)
  PIX  = Connection traversing at most a single PCIe bridge
  NV#  = Connection traversing a bonded set of # NVLinks
"""  # noqa: E501
P2P_LEGEND = """
Legend:

  X    = Self
  OK   = Status Ok
  CNS  = Chipset not supported
  GNS  = GPU not supported
  TNS  = Topology not supported
  NS   = Not supported
  U    = Unknown
"""
P2P_CAPABILITIES = {"r", "w", "n", "a", "p"}


def linked(snapshot: Snapshot, node: NodeRecord, a: GpuRecord, b: GpuRecord) -> bool:
    """Whether two GPUs of a node share NVLinks."""
    model = model_of(snapshot, a)
    if model["nvlink_count"] == 0 or len(node["gpus"]) < 2:
        return False
    if model["nvlink_topology"] == "all":
        return True
    return a["index"] // 2 == b["index"] // 2  # bridged pairs


def active_links(snapshot: Snapshot, node: NodeRecord, gpu: GpuRecord) -> int:
    """Links of ``gpu`` that reach a peer (0 on a single GPU or an unbridged card)."""
    if any(linked(snapshot, node, gpu, other) for other in node["gpus"] if other is not gpu):
        return int(model_of(snapshot, gpu)["nvlink_count"])
    return 0


def relation(
    snapshot: Snapshot, node: NodeRecord, a: GpuRecord, b: GpuRecord, pci_only: bool = False
) -> str:
    if a is b:
        return " X "
    if not pci_only and linked(snapshot, node, a, b):
        return f"NV{model_of(snapshot, a)['nvlink_count']}"
    numa = node["host"]["gpu_numa_node"]
    return "NODE" if numa[a["index"]] == numa[b["index"]] else "SYS"


def matrix(snapshot: Snapshot, node: NodeRecord, pci_only: bool = False) -> str:
    """``topo -m`` (``-mp``: PCIe paths only, NVLinks left out)."""
    gpus = node["gpus"]
    columns = [f"GPU{g['index']}" for g in gpus]
    names = "\t".join([*columns, "CPU Affinity", "NUMA Affinity", "GPU NUMA ID"])
    header = "\t" + UNDERLINE + names + RESET
    lines = [header]
    host = node["host"]
    for gpu in gpus:
        cells = [relation(snapshot, node, gpu, other, pci_only) for other in gpus]
        affinity = host["gpu_cpu_affinity"][gpu["index"]]
        numa = host["gpu_numa_node"][gpu["index"]]
        lines.append("\t".join([f"GPU{gpu['index']}", *cells, affinity, str(numa), "", "N/A"]))
    return "\n".join(lines) + "\n" + MATRIX_LEGEND


def p2p(snapshot: Snapshot, node: NodeRecord, capability: str) -> str:
    gpus = node["gpus"]
    lines = [" \t" + UNDERLINE + "".join(f"GPU{g['index']}\t" for g in gpus) + RESET]
    for gpu in gpus:
        cells = []
        for other in gpus:
            if other is gpu:
                cells.append("X")
            elif capability == "n":
                cells.append("OK" if linked(snapshot, node, gpu, other) else "NS")
            else:
                cells.append("OK")
        lines.append(f" GPU{gpu['index']}\t" + "".join(f"{c}\t" for c in cells))
    return "\n".join(lines) + "\n" + P2P_LEGEND


def _per_linked_gpu(
    snapshot: Snapshot,
    node: NodeRecord,
    gpus: list[GpuRecord],
    link_lines: Callable[[int, dict[str, Any]], list[str]],
) -> str:
    """``nvlink -s``/``-c``: a heading per GPU with NVLinks, then its lines per link."""
    lines = []
    for gpu in gpus:
        links = active_links(snapshot, node, gpu)
        if not links:
            continue
        model = model_of(snapshot, gpu)
        lines.append(f"GPU {gpu['index']}: {model['name']} (UUID: {gpu['uuid']})")
        for k in range(links):
            lines.extend(link_lines(k, model))
    return "".join(line + "\n" for line in lines)


def nvlink_status(snapshot: Snapshot, node: NodeRecord, gpus: list[GpuRecord]) -> str:
    def link(k: int, model: dict[str, Any]) -> list[str]:
        return [f"\t Link {k}: {model['nvlink_link_gbps']:.3f} GB/s"]

    return _per_linked_gpu(snapshot, node, gpus, link)


CAPABILITY_LINES = (
    "P2P is supported",
    "Access to system memory supported",
    "P2P atomics supported",
    "System memory atomics supported",
    "SLI is supported",
    "Link is supported",
)


def nvlink_capabilities(snapshot: Snapshot, node: NodeRecord, gpus: list[GpuRecord]) -> str:
    def link(k: int, model: dict[str, Any]) -> list[str]:
        return [f"\t Link {k}, {text}: true" for text in CAPABILITY_LINES]

    return _per_linked_gpu(snapshot, node, gpus, link)
