"""Names and numbers that identify each fake GPU and node.

Deterministic: the same cluster settings and seed give the same UUIDs, serial
numbers, bus ids and hostnames on every run, so scripts and recordings can be
repeated. Formats follow the captures in ``tests/real/``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fakehw.specs import GpuSpec


@dataclass(frozen=True)
class GpuIdentity:
    node: int
    local_index: int
    global_index: int
    uuid: str
    serial: str
    pci_domain: int
    pci_bus: int
    pci_device: int
    module_id: int
    board_id: int
    pdi: int

    @property
    def bus_id(self) -> str:
        """``00000000:18:00.0``: domain, bus, device, function as nvidia-smi prints it."""
        return f"{self.pci_domain:08X}:{self.pci_bus:02X}:{self.pci_device:02X}.0"


def _digest(*parts: object) -> bytes:
    text = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(text.encode()).digest()


def hostname(prefix: str, node: int, nodes: int) -> str:
    """``dgx-h100-01``: one-based, zero-padded to at least two digits."""
    width = max(2, len(str(nodes)))
    return f"{prefix}{node + 1:0{width}d}"


def bus_numbers(spec: GpuSpec, gpus_per_node: int) -> list[int]:
    """PCI bus numbers of a node's GPUs: the server's own layout where it fits."""
    layout = list(spec.host.bus_numbers)
    if gpus_per_node <= len(layout):
        if gpus_per_node == len(layout):
            return layout
        # Fewer GPUs: take them spread over both CPU sockets, in order.
        step = len(layout) / gpus_per_node
        return [layout[int(i * step)] for i in range(gpus_per_node)]
    # More GPUs than the baseboard has: continue on further buses.
    extra = [0x01 + 0x10 * i for i in range(gpus_per_node - len(layout))]
    return sorted(set(layout + extra))[:gpus_per_node]


def gpu_identities(
    spec: GpuSpec, nodes: int, gpus_per_node: int, seed: int, hostname_prefix: str
) -> list[GpuIdentity]:
    buses = bus_numbers(spec, gpus_per_node)
    # Serial numbers on real boards share a prefix per production lot.
    lot = 1650000000000 + int.from_bytes(_digest("lot", spec.key, seed)[:4], "big") % 100000000
    identities = []
    for node in range(nodes):
        host = hostname(hostname_prefix, node, nodes)
        for local in range(gpus_per_node):
            digest = _digest("gpu", spec.key, seed, host, local)
            hexed = digest[:16].hex()
            uuid = f"GPU-{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:32]}"
            serial = str(lot + int.from_bytes(digest[16:20], "big") % 10000000)
            identities.append(
                GpuIdentity(
                    node=node,
                    local_index=local,
                    global_index=node * gpus_per_node + local,
                    uuid=uuid,
                    serial=serial,
                    pci_domain=0,
                    pci_bus=buses[local],
                    pci_device=0,
                    module_id=local + 1,
                    board_id=buses[local] << 8,
                    pdi=int.from_bytes(digest[20:28], "big"),
                )
            )
    return identities
