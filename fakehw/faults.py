"""What each injected fault does to a GPU, and which faults a GPU has.

The fault names are the contract's (``fakehw.contract.snapshot``: ``GPU_FAULTS``,
``CLEAR_FAULTS``); their effects live in the cluster's arrays, where the tick
(``fakehw.devices``) and the records (``fakehw.publish``) read them:

- ``thermal``: the cooling path fails (``fault_heat_w``): the die heats to its
  slowdown temperature and the clocks throttle;
- ``power-brake``: the chassis asks for less power (``fault_brake``): clocks held
  near their floor;
- ``ecc``: ``count`` corrected single-bit errors;
- ``ecc-uncorrectable``: a double-bit error (XID 48);
- ``xid79``: the GPU falls off the bus (``lost``);
- ``clear``: all undone, as after a reset: the volatile error counts start again
  from zero, the aggregate ones keep every error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fakehw.contract import snapshot as records
from fakehw.contract.limits import MAX_ECC_COUNT
from fakehw.processes import ClusterError

if TYPE_CHECKING:
    from fakehw.devices import Cluster

LOST_COOLING_W = 600.0  # a failed cooling path, as this much extra heat in the thermal model


def inject(cluster: Cluster, gpu: int, fault: str, count: int = 1) -> None:
    """Apply ``fault`` to GPU ``gpu`` (a global index the caller has checked)."""
    c = cluster
    if fault == "thermal":
        c.fault_heat_w[gpu] = LOST_COOLING_W
    elif fault == "power-brake":
        c.fault_brake[gpu] = True
    elif fault == "ecc":
        if not 1 <= count <= MAX_ECC_COUNT:
            raise ClusterError(f"count must be from 1 to {MAX_ECC_COUNT}")
        c.ecc_volatile[gpu] += count
    elif fault == "ecc-uncorrectable":
        c.ecc_uncorrected[gpu] += 1
        c.ecc_uncorrected_volatile[gpu] += 1
        _xid(c, gpu, 48)
    elif fault == "xid79":
        c.lost[gpu] = True
        _xid(c, gpu, 79)
    elif fault == records.CLEAR_FAULTS:  # a GPU reset: volatile counts go to the aggregate ones
        c.fault_heat_w[gpu] = 0.0
        c.fault_brake[gpu] = False
        c.lost[gpu] = False
        c.ecc_history[gpu] += c.ecc_volatile[gpu]
        c.ecc_volatile[gpu] = 0
        c.ecc_uncorrected_volatile[gpu] = 0
    else:
        raise ClusterError(
            f"unknown fault {fault!r}; faults: {', '.join(records.GPU_FAULTS)}, "
            f"{records.CLEAR_FAULTS}"
        )


def _xid(cluster: Cluster, gpu: int, code: int) -> None:
    cluster.xid_count[gpu] += 1
    cluster.last_xid[gpu] = code


def active(cluster: Cluster, gpu: int) -> list[str]:
    """The faults GPU ``gpu`` has now, in the contract's order."""
    found = []
    if cluster.fault_heat_w[gpu] > 0:
        found.append("thermal")
    if cluster.fault_brake[gpu]:
        found.append("power-brake")
    if cluster.ecc_uncorrected_volatile[gpu]:
        found.append("ecc-uncorrectable")
    if cluster.lost[gpu]:
        found.append("xid79")
    return found
